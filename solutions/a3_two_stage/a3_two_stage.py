# ---
# jupyter:
#   course:
#     assignment: a3_two_stage
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 3 — Two-stage detectors (Lecture 14)
#
# You build the pieces of a two-stage detector — Faster R-CNN — and check each against torchvision:
#
# 1. **RoI Pool and RoI Align** (20 points): `roi_pool`, `roi_align`, the per-region feature crops of Fast R-CNN.
# 2. **Anchors** (15): `generate_anchors`, `match_anchors`, `sample_labels`, the training targets of the RPN.
#
# *(Draft: the FPN, the region proposal network, the complete `FasterRCNN` and its training come in the
# next parts.)*
#
# Conventions (the hidden tests check them):
#
# - boxes are `xyxy` float pixel coordinates (no "+1"), labels `1..C` with `0` = background;
# - empty inputs give empty outputs of the right shape;
# - your code works on any device (never hard-code `"cpu"`/`"cuda"`: use the inputs' `device`);
# - a function's output has the dtype of its input unless its docstring says otherwise;
# - your functions never modify their arguments in place.
#
# **Writing each function is the exercise**: `roi_pool` and `roi_align` may not call torchvision's
# `roi_pool` / `roi_align` (nor `MultiScaleRoIAlign`, nor the operators `torchvision::roi_align` /
# `torchvision::roi_pool` however they are reached); `match_anchors` may not use torchvision's `Matcher`
# and `sample_labels` not its `BalancedPositiveNegativeSampler`. Use them freely in your own checks.

# %% tags=["setup"]
# Setup: in Colab, install the course helpers (lecture_utils). Generated from lecture_utils/config.py.
import importlib.util, os, subprocess, sys

COURSE_PIP = "git+https://github.com/dl4cv-course/dl4cv-part3@main"
if ("google.colab" in sys.modules or "DL4CV_PIP_INSTALL" in os.environ) and importlib.util.find_spec("lecture_utils") is None:
    pip_args = os.environ.get("DL4CV_PIP_INSTALL", COURSE_PIP).split()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
    importlib.invalidate_caches()

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false} tags=["preamble"]
# Imports used by your code. The autograder runs this cell (as released) before your graded cells.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.ops import box_iou

from lecture_utils import get_device, seed_everything

device = get_device()
seed_everything(0)
print("running on", device)

# %% [markdown]
# ## Part 1 — RoI Pool and RoI Align
#
# Fast R-CNN runs the backbone **once** per image and cuts, for every region of interest (RoI), a
# fixed-size $h \times w$ grid of features out of the feature map. A box $(x_1, y_1, x_2, y_2)$ in image
# pixels lies at $(x_1 s, y_1 s, x_2 s, y_2 s)$ on a feature map of stride $1/s$ (`spatial_scale` $= s$,
# e.g. $1/16$).
#
# Both functions take the signature of their torchvision counterparts:
# `boxes` is a `Tensor[K, 5]` of rows `(batch_index, x1, y1, x2, y2)` or a list of `Tensor[K_i, 4]`
# (one per image of the batch), `output_size` an int or `(h, w)`; they return `Tensor[K, C, h, w]`
# (`Tensor[0, C, h, w]` for no RoIs) in the input's dtype. The helpers `_pair` and `_as_rois` below do the
# format conversions for you.
#
# **RoI Pool** snaps the box to the grid: its corners are rounded to cells,
# $x_1' = \operatorname{round}(x_1 s)$ (C's `round`, halves away from zero — `torch.round` rounds halves to
# even), the RoI is $W_r = \max(x_2' - x_1' + 1, 1)$ cells wide, and bin $j$ covers the cells
# $\lfloor j W_r / w \rfloor \le u - x_1' < \lceil (j + 1) W_r / w \rceil$, clipped to the map. Each output
# is the maximum of its bin (0 for an empty bin). With ties the gradient goes to the first maximum in
# row-major order, as torchvision's.
#
# **RoI Align** does not snap. With `aligned=True` the box is shifted by half a cell,
# $x_1 s - \tfrac12$ (a pixel's centre is at $+\tfrac12$); with `aligned=False` (the legacy default) it is
# not shifted, and the RoI is made at least $1 \times 1$. Bin $(p, q)$ has size
# $b_h \times b_w = \tfrac{H_r}{h} \times \tfrac{W_r}{w}$ and averages $g_h \times g_w$ bilinear samples at
#
# $$y = y_1 + p\, b_h + \frac{(i + \tfrac12)\, b_h}{g_h},\quad x = x_1 + q\, b_w + \frac{(j + \tfrac12)\, b_w}{g_w},
# \qquad 0 \le i < g_h,\ 0 \le j < g_w,$$
#
# with $g_h = g_w =$ `sampling_ratio` when it is positive, and **adaptive** otherwise:
# $g_h = \lceil b_h \rceil$, $g_w = \lceil b_w \rceil$ — a different number of samples for each RoI. Bilinear
# interpolation at $(y, x)$: a sample with $y < -1$, $y > H$, $x < -1$ or $x > W$ is 0; otherwise $y$ and $x$
# are clamped to $[0, H - 1]$ and $[0, W - 1]$ and
#
# $$f(y, x) = \sum_{r \in \{\lfloor y\rfloor, \lfloor y\rfloor + 1\}} \sum_{c \in \{\lfloor x\rfloor, \lfloor x\rfloor + 1\}}
# (1 - |y - r|)(1 - |x - c|)\, F[r, c].$$
#
# The output is the sum of the bin's samples divided by $\max(g_h g_w, 1)$.
#
# **Vectorize over RoIs** (the grader compares the tensor operations run for few and for many RoIs): with
# adaptive sampling, sample every RoI on the largest grid $\max_k g_h \times \max_k g_w$ and mask the samples
# beyond its own grid. Gradients come from autograd — no custom backward — and must equal torchvision's.
# `F.grid_sample` may do the bilinear interpolation for you once the coordinates are clamped and the
# outside samples masked (mind its normalized coordinates), or you gather the four neighbours yourself.

# %% nbgrader={"grade": false, "grade_id": "roi_ops", "locked": false, "schema_version": 3, "solution": true}
def _pair(output_size):
    """output_size int or (h, w) -> (h, w)."""
    if isinstance(output_size, int):
        return output_size, output_size
    h, w = output_size
    return int(h), int(w)


def _as_rois(boxes, input):
    """boxes Tensor[K, 5] or a list of Tensor[K_i, 4] -> Tensor[K, 5] (batch index, x1, y1, x2, y2) in input's dtype and device."""
    if isinstance(boxes, (list, tuple)):
        rows = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
        boxes = torch.cat(rows, dim=0) if rows else input.new_zeros((0, 5))
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"boxes must be Tensor[K, 5] or a list of Tensor[K_i, 4], got shape {list(boxes.shape)}")
    return boxes.to(device=input.device, dtype=input.dtype)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """Max over each bin of each RoI, like torchvision.ops.roi_pool: Tensor[K, C, h, w]."""
    ### BEGIN SOLUTION
    rois = _as_rois(boxes, input)
    out_h, out_w = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    if K == 0:
        return input.new_zeros((0, C, out_h, out_w))
    image_of_roi = rois[:, 0].long()

    def c_round(v):  # C's round(): halves away from zero
        return (torch.sign(v) * torch.floor(v.abs().double() + 0.5)).long()

    x1, y1, x2, y2 = (c_round(rois[:, i] * spatial_scale) for i in range(1, 5))
    cells_w, cells_h = (x2 - x1 + 1).clamp(min=1), (y2 - y1 + 1).clamp(min=1)

    def bin_edges(start, cells, n_bins, size):
        """First and one-past-last cell of every bin along one axis, clipped to the map: Tensor[K, n_bins] each."""
        per_bin = cells.to(input.dtype)[:, None] / n_bins
        j = torch.arange(n_bins, device=input.device, dtype=input.dtype)[None, :]
        lo = torch.floor(j * per_bin).long() + start[:, None]
        hi = torch.ceil((j + 1) * per_bin).long() + start[:, None]
        return lo.clamp(0, size), hi.clamp(0, size)

    h_lo, h_hi = bin_edges(y1, cells_h, out_h, H)
    w_lo, w_hi = bin_edges(x1, cells_w, out_w, W)
    span_h, span_w = max(int((h_hi - h_lo).max()), 1), max(int((w_hi - w_lo).max()), 1)
    rows = h_lo[..., None] + torch.arange(span_h, device=input.device)  # [K, h, span_h]: the largest bin for all
    cols = w_lo[..., None] + torch.arange(span_w, device=input.device)  # [K, w, span_w]
    inside = (rows < h_hi[..., None])[:, :, None, :, None] & (cols < w_hi[..., None])[:, None, :, None, :]
    cell = (image_of_roi[:, None] * H + rows.clamp(max=H - 1).reshape(K, -1))[:, :, None] * W + cols.clamp(max=W - 1).reshape(K, 1, -1)
    channels_last = input.permute(0, 2, 3, 1).reshape(N * H * W, C)
    window = channels_last[cell.reshape(-1)].reshape(K, out_h, span_h, out_w, span_w, C).permute(0, 5, 1, 3, 2, 4)
    window = window.masked_fill(~inside[:, None], float("-inf")).reshape(K, C, out_h, out_w, span_h * span_w)
    pooled = window.max(dim=-1).values  # max() sends the gradient to the first maximum (row-major)
    return pooled.masked_fill(~inside.flatten(-2).any(-1)[:, None], 0.0)
    ### END SOLUTION


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """Average of bilinear samples in each bin of each RoI, like torchvision.ops.roi_align: Tensor[K, C, h, w]."""
    ### BEGIN SOLUTION
    rois = _as_rois(boxes, input)
    out_h, out_w = _pair(output_size)
    N, C, H, W = input.shape
    K = rois.shape[0]
    if K == 0:
        return input.new_zeros((0, C, out_h, out_w))
    image_of_roi = rois[:, 0].long()
    shift = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - shift for i in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy: at least one cell
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_h, bin_w = roi_h / out_h, roi_w / out_w
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((K,), sampling_ratio, dtype=torch.long, device=input.device)
    else:  # adaptive: ceil(bin size) samples per side, per RoI
        grid_h, grid_w = torch.ceil(bin_h).long(), torch.ceil(bin_w).long()
    n_samples = (grid_h * grid_w).clamp(min=1).to(input.dtype)
    most_h, most_w = max(int(grid_h.max()), 1), max(int(grid_w.max()), 1)

    def sample_coords(start, bin_size, grid, n_bins, most, size):
        """grid_sample coordinates Tensor[K, n_bins * most] of the samples along one axis (far outside for those that do not count)."""
        p = torch.arange(n_bins, device=input.device, dtype=input.dtype)[None, :, None]
        i = torch.arange(most, device=input.device)[None, None, :]
        t = start[:, None, None] + p * bin_size[:, None, None] + ((i + 0.5) * bin_size[:, None, None]) / grid.to(input.dtype)[:, None, None]
        counts = (i < grid[:, None, None]) & (t >= -1.0) & (t <= size)
        t = t.clamp(min=0.0, max=size - 1)
        normalized = (2 * t + 1) / size - 1  # grid_sample's coordinates (align_corners=False)
        return normalized.masked_fill(~counts, -3.0).reshape(K, -1)  # -3: far outside, sampled as 0

    gy = sample_coords(y1, bin_h, grid_h, out_h, most_h, H)
    gx = sample_coords(x1, bin_w, grid_w, out_w, most_w, W)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)  # [K, h*most_h, w*most_w, (x, y)]
    # grid_sample samples image n with grid n: give each RoI a slot among the RoIs of its image
    per_image = torch.bincount(image_of_roi, minlength=N)
    order = torch.argsort(image_of_roi, stable=True)
    first_of_image = torch.cumsum(per_image, 0) - per_image
    slot = torch.empty_like(image_of_roi)
    slot[order] = torch.arange(K, device=input.device) - first_of_image[image_of_roi[order]]
    slots = int(per_image.max())
    grids = grid.new_zeros((N, slots) + grid.shape[1:])
    grids[image_of_roi, slot] = grid
    samples = F.grid_sample(input, grids.flatten(1, 2), mode="bilinear", padding_mode="zeros", align_corners=False)
    bin_sums = samples.reshape(N, C, slots, out_h, most_h, out_w, most_w).sum(dim=(4, 6))  # [N, C, slots, h, w]
    return bin_sums[image_of_roi, :, slot] / n_samples[:, None, None, None]
    ### END SOLUTION

# %% tags=["check"]
import torchvision.ops as tv_ops

_g = torch.Generator().manual_seed(0)
_feat = torch.randn(2, 3, 9, 13, generator=_g, dtype=torch.float64)
_rois = torch.tensor([[0, 3.2, 4.7, 40.1, 30.3], [1, -12.0, -5.0, 20.5, 9.5], [0, 150.0, 10.0, 190.0, 60.0], [1, 60.0, 40.0, 61.0, 41.0]], dtype=torch.float64)
for _scale in (0.25, 0.5):
    for _ratio in (2, 0, -1):
        for _aligned in (False, True):
            _got = roi_align(_feat, _rois, (2, 3), _scale, _ratio, _aligned)
            _want = tv_ops.roi_align(_feat, _rois, (2, 3), _scale, _ratio, _aligned)
            assert _got.shape == _want.shape and _got.dtype == _want.dtype, f"roi_align: expected {tuple(_want.shape)} {_want.dtype}, got {tuple(_got.shape)} {_got.dtype}"
            assert torch.allclose(_got, _want, atol=1e-10), f"roi_align differs from torchvision (spatial_scale={_scale}, sampling_ratio={_ratio}, aligned={_aligned})"
    assert torch.equal(roi_pool(_feat, _rois, 3, _scale), tv_ops.roi_pool(_feat, _rois, 3, _scale)), f"roi_pool differs from torchvision (spatial_scale={_scale})"
# the list-of-boxes format, gradients, and no RoIs at all
_as_list = [_rois[_rois[:, 0] == 0, 1:], _rois[_rois[:, 0] == 1, 1:]]
assert torch.allclose(roi_align(_feat, _as_list, 2, 0.5, 0, True), tv_ops.roi_align(_feat, _as_list, 2, 0.5, 0, True)), "roi_align: list of Tensor[K_i, 4] boxes"
_x1, _x2 = _feat.clone().requires_grad_(), _feat.clone().requires_grad_()
roi_align(_x1, _rois, 2, 0.5, -1, True).square().sum().backward()
tv_ops.roi_align(_x2, _rois, 2, 0.5, -1, True).square().sum().backward()
assert torch.allclose(_x1.grad, _x2.grad), "roi_align: the gradient differs from torchvision's"
assert roi_align(_feat, torch.zeros(0, 5, dtype=torch.float64), (2, 3)).shape == (0, 3, 2, 3), "roi_align: no RoIs -> Tensor[0, C, h, w]"
assert roi_pool(_feat, [torch.zeros(0, 4, dtype=torch.float64)] * 2, 4).shape == (0, 3, 4, 4), "roi_pool: no RoIs -> Tensor[0, C, h, w]"
print("RoI ops ✓")

# %% [markdown]
# RoI Pool against RoI Align on one small box: the max over snapped cells against the average of
# bilinear samples (the dots are the samples of `sampling_ratio=2`, `aligned=True`).

# %%
import matplotlib.pyplot as plt

_ramp = torch.arange(8.0)[None, :] + torch.arange(6.0)[:, None] * 0.5
_box = torch.tensor([[0, 1.3, 0.8, 5.6, 4.1]])
_fig, _axes = plt.subplots(1, 3, figsize=(11, 3))
_axes[0].imshow(_ramp, cmap="viridis", extent=(0, 8, 6, 0))
_axes[0].add_patch(plt.Rectangle((1.3, 0.8), 4.3, 3.3, fill=False, color="red", linewidth=2))
_bw, _bh = 4.3 / 2, 3.3 / 2
_sx = [1.3 - 0.5 + (_q + (_j + 0.5) / 2) * _bw + 0.5 for _q in range(2) for _j in range(2)]
_sy = [0.8 - 0.5 + (_p + (_i + 0.5) / 2) * _bh + 0.5 for _p in range(2) for _i in range(2)]
_axes[0].scatter([_x for _x in _sx for _ in _sy], [_y for _ in _sx for _y in _sy], s=10, color="white")
_axes[0].set_title("feature map, RoI and its samples")
_axes[1].imshow(roi_pool(_ramp[None, None], _box, 2)[0, 0], cmap="viridis", vmin=0, vmax=10)
_axes[1].set_title("roi_pool 2 x 2")
_axes[2].imshow(roi_align(_ramp[None, None], _box, 2, 1.0, 2, True)[0, 0], cmap="viridis", vmin=0, vmax=10)
_axes[2].set_title("roi_align 2 x 2 (aligned)")
plt.show()

# %% [markdown]
# ## Part 2 — Anchors and their training labels
#
# The region proposal network scores a fixed set of **anchors**: at every location $(i, j)$ of a
# feature map of stride $s$, one box per size $a$ and aspect ratio $r = h / w$, centred at
# $\big((j + \tfrac12) s_w,\ (i + \tfrac12) s_h\big)$, with the area $a^2$ kept:
#
# $$w = \frac{a}{\sqrt r},\qquad h = a \sqrt r,\qquad \text{box} = (c_x - \tfrac w2,\ c_y - \tfrac h2,\ c_x + \tfrac w2,\ c_y + \tfrac h2),$$
#
# with no rounding. `generate_anchors(feature_sizes, strides, sizes, aspect_ratios)` takes one entry per
# feature level: `feature_sizes[l] = (H_l, W_l)`, `strides[l]` an int or `(s_h, s_w)`, `sizes[l]` and
# `aspect_ratios[l]` sequences. **Order**: level by level; within a level, locations row by row
# (row $i$, then column $j$); at each location the ratios, and for each ratio the sizes (size varies
# fastest) — the order of torchvision's `AnchorGenerator`. It returns `Tensor[Σ_l H_l W_l R_l S_l, 4]`
# (float32 unless `dtype` says otherwise, on `device`). torchvision's `AnchorGenerator` differs in two ways:
# its centres are at $(j s_w, i s_h)$ (no half stride) and it rounds its base anchors to integers.
#
# `match_anchors(anchors, gt_boxes, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True)`
# gives each anchor the index of its best ground-truth box (IoU, the first box among equals) when that
# IoU is $\ge$ `high_threshold`, **−1** when it is $<$ `low_threshold`, **−2** in between — torchvision's
# `Matcher`. With `allow_low_quality_matches`, each ground-truth box also keeps the anchors with which it
# has its highest IoU (all of them when tied): such an anchor gets back its own best match (which may be
# another box, as in torchvision). No ground-truth box: every anchor is −1. Returns `Tensor[A]` int64.
#
# `sample_labels(labels, batch_size_per_image, positive_fraction, generator=None)` takes a list of label
# tensors (≥ 1 positive, 0 negative, −1 ignored) and picks per image at random at most
# `int(batch_size_per_image * positive_fraction)` positives and then negatives to fill the batch
# (fewer when there are not enough), like torchvision's `BalancedPositiveNegativeSampler`. It returns two
# lists of bool masks (positives, negatives) shaped like the labels. `generator` is a `torch.Generator`,
# an int seed or None (torch's global generator); the same seed gives the same choice.

# %% nbgrader={"grade": false, "grade_id": "anchors", "locked": false, "schema_version": 3, "solution": true}
BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def generate_anchors(feature_sizes, strides, sizes, aspect_ratios, dtype=torch.float32, device=None):
    """All anchors of all levels, Tensor[A, 4] xyxy, in the order stated above."""
    ### BEGIN SOLUTION
    per_level = []
    for (fh, fw), stride, level_sizes, ratios in zip(feature_sizes, strides, sizes, aspect_ratios, strict=True):
        step_h, step_w = (stride, stride) if isinstance(stride, (int, float)) else stride
        sqrt_r = torch.as_tensor(ratios, dtype=torch.float64, device=device).sqrt()
        side = torch.as_tensor(level_sizes, dtype=torch.float64, device=device)
        half_w = (side[None, :] / sqrt_r[:, None]).reshape(-1) / 2  # ratio-major, size fastest
        half_h = (side[None, :] * sqrt_r[:, None]).reshape(-1) / 2
        offsets = torch.stack([-half_w, -half_h, half_w, half_h], dim=1)
        cy = (torch.arange(int(fh), dtype=torch.float64, device=device) + 0.5) * step_h
        cx = (torch.arange(int(fw), dtype=torch.float64, device=device) + 0.5) * step_w
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centres = torch.stack([cx, cy, cx, cy], dim=-1).reshape(-1, 1, 4)
        per_level.append((centres + offsets[None]).reshape(-1, 4))
    if not per_level:
        return torch.zeros((0, 4), dtype=dtype, device=device)
    return torch.cat(per_level).to(dtype)
    ### END SOLUTION


def match_anchors(anchors, gt_boxes, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True):
    """Index of the matched gt box per anchor, or -1 (below low_threshold) / -2 (between): Tensor[A] int64."""
    ### BEGIN SOLUTION
    if low_threshold > high_threshold:
        raise ValueError("low_threshold must not exceed high_threshold")
    if len(gt_boxes) == 0 or len(anchors) == 0:
        return torch.full((len(anchors),), BELOW_LOW_THRESHOLD, dtype=torch.int64, device=anchors.device)
    quality = box_iou(gt_boxes, anchors)  # [G, A]
    best_quality, best_gt = quality.max(dim=0)  # first gt among equals
    matched = torch.where(best_quality >= high_threshold, best_gt, torch.full_like(best_gt, BETWEEN_THRESHOLDS))
    matched = torch.where(best_quality < low_threshold, torch.full_like(best_gt, BELOW_LOW_THRESHOLD), matched)
    if allow_low_quality_matches:
        top_for_each_gt = quality.max(dim=1, keepdim=True).values
        kept_anyway = (quality == top_for_each_gt).any(dim=0)
        matched = torch.where(kept_anyway, best_gt, matched)
    return matched
    ### END SOLUTION


def sample_labels(labels, batch_size_per_image, positive_fraction, generator=None):
    """Balanced random sample per image: (list of bool positive masks, list of bool negative masks)."""
    ### BEGIN SOLUTION
    if isinstance(generator, int):
        generator = torch.Generator().manual_seed(generator)
    chosen_pos, chosen_neg = [], []
    for per_image in labels:
        positives = torch.nonzero(per_image >= 1).flatten()
        negatives = torch.nonzero(per_image == 0).flatten()
        n_pos = min(positives.numel(), int(batch_size_per_image * positive_fraction))
        n_neg = min(negatives.numel(), batch_size_per_image - n_pos)
        # permutations drawn on the CPU: a CPU generator serves tensors on any device
        take_pos = positives[torch.randperm(positives.numel(), generator=generator)[:n_pos].to(per_image.device)]
        take_neg = negatives[torch.randperm(negatives.numel(), generator=generator)[:n_neg].to(per_image.device)]
        pos_mask = torch.zeros(per_image.shape, dtype=torch.bool, device=per_image.device)
        neg_mask = torch.zeros(per_image.shape, dtype=torch.bool, device=per_image.device)
        pos_mask[take_pos] = True
        neg_mask[take_neg] = True
        chosen_pos.append(pos_mask)
        chosen_neg.append(neg_mask)
    return chosen_pos, chosen_neg
    ### END SOLUTION

# %% tags=["check"]
from torchvision.models.detection._utils import Matcher

_a = generate_anchors([(2, 3)], [(8, 10)], [(16, 32)], [(0.5, 2.0)])
assert _a.shape == (2 * 3 * 2 * 2, 4) and _a.dtype == torch.float32, f"generate_anchors: expected Tensor[24, 4] float32, got {tuple(_a.shape)} {_a.dtype}"
_w, _h = _a[:, 2] - _a[:, 0], _a[:, 3] - _a[:, 1]
assert torch.allclose(_w * _h, torch.tensor([16.0**2, 32.0**2] * 12)), "generate_anchors: the area of an anchor is size ** 2"
assert torch.allclose(_h / _w, torch.tensor([0.5, 0.5, 2.0, 2.0] * 6)), "generate_anchors: aspect ratio = h / w; at each location the ratios, then the sizes"
assert torch.allclose((_a[::4, :2] + _a[::4, 2:]) / 2, torch.tensor([[5.0, 4], [15, 4], [25, 4], [5, 12], [15, 12], [25, 12]])), \
    "generate_anchors: centres at ((j + 0.5) * stride_w, (i + 0.5) * stride_h), row by row"
_gt = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
_anchors = torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 10], [20, 0, 30, 4], [50, 50, 60, 60], [22, 0, 30, 10]])
for _alq in (False, True):
    _want = Matcher(0.7, 0.3, _alq)(box_iou(_gt, _anchors))
    assert torch.equal(match_anchors(_anchors, _gt, 0.7, 0.3, _alq), _want), f"match_anchors differs from torchvision's Matcher (allow_low_quality_matches={_alq})"
assert match_anchors(_anchors, torch.zeros(0, 4)).tolist() == [-1] * 5, "match_anchors: without ground truth every anchor is -1"
_labels = torch.tensor([1] * 40 + [0] * 200 + [-1] * 30)
_pos, _neg = sample_labels([_labels, _labels[:20]], 64, 0.25, generator=torch.Generator().manual_seed(1))
assert [int(_m.sum()) for _m in _pos + _neg] == [16, 16, 48, 0], "sample_labels: at most int(64 * 0.25) positives, negatives fill the rest"
assert bool((_labels[_pos[0]] >= 1).all() and (_labels[_neg[0]] == 0).all()), "sample_labels: positives have labels >= 1, negatives 0"
assert torch.equal(sample_labels([_labels], 64, 0.25, 7)[0][0], sample_labels([_labels], 64, 0.25, 7)[0][0]), "sample_labels: the same seed gives the same sample"
print("anchors ✓")

# %% [markdown]
# The anchors of one location (3 ratios × 2 sizes) on a shapes image, the grid of anchor centres, and the
# anchors `match_anchors` makes positive for the objects (stride 16).

# %%
from lecture_utils.data import ShapesDataset
from lecture_utils.viz import draw_boxes, show_image

_img, _t = ShapesDataset(1, (96, 128), seed=5)[0]
_all = generate_anchors([(96 // 16, 128 // 16)], [16], [(24, 48)], [(0.5, 1.0, 2.0)])
_matched = match_anchors(_all, _t["boxes"], 0.6, 0.3)
_fig, _axes = plt.subplots(1, 2, figsize=(11, 4))
show_image(_img, _axes[0], title="the 6 anchors of one location, and all centres")
_centres = (_all[:, :2] + _all[:, 2:]) / 2
_axes[0].scatter(_centres[:, 0], _centres[:, 1], s=4, color="white")
_at = (3 * (128 // 16) + 4) * 6
draw_boxes(_axes[0], _all[_at:_at + 6], color="yellow", linewidth=1)
show_image(_img, _axes[1], title=f"{int((_matched >= 0).sum())} positive anchors (IoU >= 0.6 or best)")
draw_boxes(_axes[1], _t["boxes"], color="red", linewidth=2)
draw_boxes(_axes[1], _all[_matched >= 0], color="lime", linewidth=1)
plt.show()

# %% [markdown]
# ## Part 3 — Feature pyramid network
#
# One stride does not suit every object: a stride-16 map sees a 10-pixel triangle as less than one cell.
# A **feature pyramid network** (FPN, 特征金字塔网络) gives every level of the backbone the semantics of the
# deepest one. With backbone maps $C_1, \dots, C_L$ ordered from the finest (smallest stride) to the
# coarsest, each with its own number of channels:
#
# 1. a **lateral** 1×1 convolution brings every $C_l$ to `out_channels`: $L_l = \text{lateral}_l(C_l)$;
# 2. **top-down**, from the coarsest level: $M_L = L_L$ and
#    $M_l = L_l + \text{upsample}_\text{nearest}(M_{l+1})$ to the size of $L_l$ (nearest neighbour, to the
#    exact size of the finer map — a map of odd size does not halve exactly, so give `F.interpolate` a
#    `size`, not a scale factor);
# 3. an **output** 3×3 convolution (padding 1) on every merged map smooths the upsampling: $P_l = \text{output}_l(M_l)$.
#
# `FPN(in_channels_list, out_channels)` keeps the convolutions in two `nn.ModuleList`s named
# `lateral_convs` (`nn.Conv2d(c_l, out_channels, 1)`) and `output_convs`
# (`nn.Conv2d(out_channels, out_channels, 3, padding=1)`), both with biases, level $l$ at index $l$: the
# grader copies weights into them by these names. `forward(features)` takes a list of
# `Tensor[B, c_l, H_l, W_l]` (finest first) and returns the list of `Tensor[B, out_channels, H_l, W_l]` in
# the same order. It is `torchvision.ops.FeaturePyramidNetwork` without extra blocks; do not use that class
# (or its `forward`) here.

# %% nbgrader={"grade": false, "grade_id": "fpn", "locked": false, "schema_version": 3, "solution": true}
class FPN(nn.Module):
    """Lateral 1x1 convolutions, a nearest-neighbour top-down path, and 3x3 output convolutions."""

    def __init__(self, in_channels_list, out_channels):
        super().__init__()
        ### BEGIN SOLUTION
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels_list)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels_list)
        ### END SOLUTION

    def forward(self, features):
        """features: list of Tensor[B, c_l, H_l, W_l], finest first -> list of Tensor[B, out_channels, H_l, W_l]."""
        ### BEGIN SOLUTION
        merged = self.lateral_convs[-1](features[-1])
        outputs = [self.output_convs[-1](merged)]
        for level in range(len(features) - 2, -1, -1):
            lateral = self.lateral_convs[level](features[level])
            merged = lateral + F.interpolate(merged, size=lateral.shape[-2:], mode="nearest")
            outputs.insert(0, self.output_convs[level](merged))
        return outputs
        ### END SOLUTION

# %% tags=["check"]
from torchvision.ops import FeaturePyramidNetwork

_fpn = FPN([8, 16, 32], 12)
_tv = FeaturePyramidNetwork([8, 16, 32], 12)
_tv.load_state_dict({k.replace("lateral_convs", "inner_blocks").replace("output_convs", "layer_blocks").replace(".weight", ".0.weight").replace(".bias", ".0.bias"): v
                     for k, v in _fpn.state_dict().items()})
_maps = [torch.randn(2, 8, 15, 21), torch.randn(2, 16, 8, 11), torch.randn(2, 32, 4, 6)]
_outs, _want = _fpn(_maps), list(_tv({str(i): m for i, m in enumerate(_maps)}).values())
assert [tuple(o.shape) for o in _outs] == [(2, 12, 15, 21), (2, 12, 8, 11), (2, 12, 4, 6)], "FPN: one map per level, out_channels each, the level's size"
assert all(torch.allclose(o, w, atol=1e-5) for o, w in zip(_outs, _want)), "FPN differs from torchvision's FeaturePyramidNetwork with the same weights"
print("FPN ✓")

# %% [markdown]
# ## Submit
#
# Save the notebook, then run the cell below. It checks the notebook, runs the visible checks in a fresh
# process, and writes `a3_two_stage_submission.ipynb` (downloaded automatically in Colab).

# %%
from lecture_utils import submit

submit.export("a3_two_stage.ipynb")
