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
# You build a complete two-stage detector — Faster R-CNN — piece by piece, check each piece against
# torchvision, then train it on the shapes dataset:
#
# 1. **RoI Pool and RoI Align** (20 points): `roi_pool`, `roi_align`, the per-region feature crops of Fast R-CNN.
# 2. **Anchors** (15): `generate_anchors`, `match_anchors`, `sample_labels`, the training targets of the RPN.
# 3. **Feature pyramid network** (10): `FPN`.
# 4. **Region proposal network** (15): `RPNHead`, `rpn_losses`, `filter_proposals`, `RegionProposalNetwork`.
# 5. **Second stage** (20): `BoxHead`, `select_training_samples`, `fastrcnn_loss`, `postprocess_detections`.
# 6. **Faster R-CNN, trained** (20): `FasterRCNN`; the grader trains it and measures COCO AP50.
#
# The grader tests Parts 4 and 5 with reference versions of the Part 1–2 functions they call —
# `generate_anchors`, `match_anchors`, `sample_labels` and `roi_align` are replaced by correct ones in those
# tests (Parts 4–5 do not use `FPN`) — so a mistake in an earlier part costs its points once; Part 6 trains
# *your* detector, built from all your parts.
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
# Setup: installs the course helpers (lecture_utils) in Colab, once. Generated from lecture_utils/config.py.
import importlib, importlib.util, os, subprocess, sys

COURSE_PIP = "git+https://github.com/dl4cv-course/dl4cv-part3@main"
installed_from = None
if importlib.util.find_spec("lecture_utils") is None:
    if "google.colab" not in sys.modules and "DL4CV_PIP_INSTALL" not in os.environ:
        raise ModuleNotFoundError(f"lecture_utils is not installed in this Python: run `pip install {COURSE_PIP}`, then restart the kernel")
    pip_args = os.environ.get("DL4CV_PIP_INSTALL", COURSE_PIP).split()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
    importlib.invalidate_caches()
    installed_from = " ".join(pip_args)
import lecture_utils.colab

print(lecture_utils.colab.setup(installed_from))

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false} tags=["preamble"]
# Imports used by your code. The autograder runs this cell (as released) before your graded cells.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

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
# format conversions for you. Graded dtypes: `float32` and `float64`; for `roi_align` also `float16` (a map
# and boxes in half precision, as torchvision takes them): compute in `float32` and return `float16`
# (`grid_sample` wants its input and grid in one dtype), within half precision's accuracy of torchvision.
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
# interpolation at $(y, x)$: a sample with $y < -1$, $y > H$, $x < -1$ or $x > W$ is 0 (exactly $-1$ or
# exactly $H$ still counts); otherwise $y$ and $x$ are clamped to $[0, H - 1]$ and $[0, W - 1]$ and
#
# $$f(y, x) = \sum_{r \in \{\lfloor y\rfloor, \lfloor y\rfloor + 1\}} \sum_{c \in \{\lfloor x\rfloor, \lfloor x\rfloor + 1\}}
# (1 - |y - r|)(1 - |x - c|)\, F[r, c],$$
#
# where a neighbour beyond the last row ($\lfloor y \rfloor = H - 1$, so $r = H$) reads row $H - 1$ again — its
# weight is $1 - |y - H| = 0$ after clamping, so it does not matter which row you read, as long as you do
# not index out of bounds (the same for columns; torchvision sets the upper neighbour to the lower one).
#
# The output is the sum of the bin's samples divided by $\max(g_h g_w, 1)$.
#
# **Vectorize over RoIs** (the grader counts the tensor operations run for 6 RoIs and for 300 RoIs and
# expects the same count): no Python loop over RoIs. A loop over the $h \times w$ output bins is allowed (its
# length does not depend on the RoIs), though one batched computation is faster; a loop over the adaptive
# sample grid is not (its size depends on the largest RoI). With adaptive sampling, sample every RoI on the largest grid $\max_k g_h \times \max_k g_w$ and mask the samples
# beyond its own grid. Gradients come from autograd — no custom backward — and must equal torchvision's.
# `F.grid_sample` may do the bilinear interpolation for you once the coordinates are clamped and the
# outside samples masked (mind its normalized coordinates), or you gather the four neighbours yourself
# (`F.embedding_bag(indices, table, mode="sum", per_sample_weights=...)` adds up weighted rows of a table
# in one call: with the map's cells as the rows (channels last), one bag per output bin — fast).

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
    if input.dtype in (torch.float16, torch.bfloat16):  # sampled in float32, returned in the input's dtype
        return roi_align(input.float(), _as_rois(boxes, input).float(), output_size, spatial_scale, sampling_ratio, aligned).to(input.dtype)
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

    def taps(start, bin_size, grid, n_bins, size):
        """The rows (columns) of the map that each bin reads along one axis, with their weights: Tensor[K, n_bins, 2 * most] each
        (the two neighbours of each sample, samples on the largest grid; those that do not count weigh 0)."""
        most = max(int(grid.max()), 1)
        p = torch.arange(n_bins, device=input.device, dtype=input.dtype)[None, :, None]
        i = torch.arange(most, device=input.device)[None, None, :]
        per_side = grid.clamp(min=1).to(input.dtype)[:, None, None]
        t = start[:, None, None] + p * bin_size[:, None, None] + (i + 0.5) * bin_size[:, None, None] / per_side  # [K, n_bins, most]
        counts = (i < grid[:, None, None]) & (t >= -1.0) & (t <= size)  # samples beyond the border are 0
        t = t.clamp(min=0.0)
        low = t.floor().long().clamp(max=size - 1)
        frac = (t - low).clamp(max=1.0) * (low < size - 1)  # on the last row/column: all the weight on it
        weight = counts / per_side  # 1 / g per sample: the mean along this axis
        return torch.cat([low, (low + 1).clamp(max=size - 1)], -1), torch.cat([weight * (1 - frac), weight * frac], -1)

    rows, row_weights = taps(y1, bin_h, grid_h, out_h, H)  # [K, h, a]
    cols, col_weights = taps(x1, bin_w, grid_w, out_w, W)  # [K, w, b]
    # bin (k, p, q) = sum over its taps (j, i) of row_weights[k, p, j] * col_weights[k, q, i] * input[image, :, rows[k, p, j], cols[k, q, i]];
    # the 1 / (g_h g_w) of the mean is the product of the two axes' 1 / g
    cell = (image_of_roi[:, None, None, None, None] * H + rows[:, :, None, :, None]) * W + cols[:, None, :, None, :]  # [K, h, w, a, b]
    weight = row_weights[:, :, None, :, None] * col_weights[:, None, :, None, :]
    table = input.permute(0, 2, 3, 1).reshape(N * H * W, C)  # one row per map cell, channels last
    # F.embedding_bag sums the weighted table rows of each bag (here: each bin) in one call, the same as
    # (table[cell] * weight[..., None]).sum over the taps without the [K, h, w, a * b, C] intermediate
    bins = F.embedding_bag(cell.reshape(K * out_h * out_w, -1), table, mode="sum", per_sample_weights=weight.reshape(K * out_h * out_w, -1))
    return bins.reshape(K, out_h, out_w, C).permute(0, 3, 1, 2)
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
# `low_threshold > high_threshold` raises a `ValueError` (torchvision's `Matcher` refuses it too).
#
# `sample_labels(labels, batch_size_per_image, positive_fraction, generator=None)` takes a list of label
# tensors (≥ 1 positive, 0 negative, −1 ignored) and picks per image at random at most
# `int(batch_size_per_image * positive_fraction)` positives and then negatives to fill the batch
# (fewer when there are not enough), like torchvision's `BalancedPositiveNegativeSampler`. It returns two
# lists of bool masks (positives, negatives) shaped like the labels. `generator` is a `torch.Generator`,
# an int seed or None (torch's global generator); the same seed gives the same choice. An int seed makes a
# generator of its own (`torch.Generator().manual_seed(seed)`: the global generator is left alone); a
# `torch.Generator` is drawn from, so two calls with the same generator object pick differently. None of these
# functions modifies its arguments (the label tensors included).

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
# ## Part 4 — Region proposal network
#
# Faster R-CNN makes its own proposals. The **region proposal network** (RPN, 区域提议网络) slides a small
# network over every FPN level: a 3×3 convolution (padding 1) + ReLU shared by all levels, then two 1×1
# convolutions that predict, at every location, for each of its $A$ anchors an **objectness** logit
# ("is there an object?") and 4 box deltas $(t_x, t_y, t_w, t_h)$ that move the anchor onto the object.
#
# `RPNHead(in_channels, num_anchors)` keeps the layers as `conv` (3×3, `in_channels` → `in_channels`),
# `cls_logits` (1×1 → $A$) and `bbox_pred` (1×1 → $4A$), all with biases (the grader copies weights into
# them by these names); initialize the weights from $\mathcal N(0, 0.01^2)$ and the biases to 0.
# `forward(features)` takes the list of `Tensor[B, C, H_l, W_l]` and returns two lists:
# objectness `Tensor[B, A, H_l, W_l]` and deltas `Tensor[B, 4A, H_l, W_l]` (channel $4a + k$ is
# coordinate $k$ of anchor $a$). The helper `flatten_predictions` (given) puts them in the order of
# `generate_anchors`: `Tensor[B, N]` and `Tensor[B, N, 4]` with $N = \sum_l H_l W_l A$.
#
# **Training targets and losses.** Per image, `match_anchors` (thresholds 0.7 / 0.3, low-quality matches
# kept) labels each anchor 1 (matched), 0 (below 0.3) or −1 (in between, ignored); the target deltas
# of an anchor encode its matched box (`BoxCoder(weights=(1, 1, 1, 1))`, given in the imports; any value
# for the others, which the loss never reads — an image without objects may use zeros). `sample_labels` draws `batch_size_per_image` anchors per image. Over the sampled
# anchors $S$ of the whole batch, with positives $S^+$:
#
# $$L_\text{obj} = \frac{1}{|S|}\sum_{i \in S} \operatorname{BCE}(o_i, [i \in S^+]),\qquad
# L_\text{box} = \frac{1}{|S|}\sum_{i \in S^+} \sum_{k} \operatorname{smooth}_{\ell_1}^{\beta = 1/9}(t_{ik} - t^*_{ik}),$$
#
# `F.binary_cross_entropy_with_logits` (mean) and `F.smooth_l1_loss(..., beta=1/9, reduction="sum")`
# divided by $|S|$ — torchvision's formulas. `rpn_losses(objectness, deltas, labels, target_deltas, positive, negative)`
# takes them flattened over the batch (`Tensor[N]`, `Tensor[N, 4]`, `Tensor[N]`, `Tensor[N, 4]`, bool
# `Tensor[N]`, bool `Tensor[N]`) and returns `(loss_objectness, loss_box)`, two scalars; with nothing
# sampled both are 0 (still connected to the inputs' graph, so `backward()` works).
#
# **Proposals.** `RegionProposalNetwork(in_channels, strides, sizes, aspect_ratios, ...)` owns an
# `RPNHead` named `head` and, in `forward(features, image_sizes, targets=None)`:
#
# 1. runs the head and makes the anchors of the feature maps (`generate_anchors`, the level's stride);
# 2. decodes every anchor's deltas into a box (`BoxCoder.decode`, from *detached* deltas);
# 3. per image: on each level keeps the `pre_nms_top_n` highest objectness logits, takes
#    `sigmoid`, clips the boxes to the image (`image_sizes[i] = (h, w)`), drops boxes narrower or lower
#    than `min_size` and scores below `score_thresh` (a box exactly `min_size` wide or a score equal to
#    `score_thresh` is kept, torchvision's `>=`), runs NMS (`nms_thresh`) **separately per level**
#    (`batched_nms` with the level as index) and keeps the best `post_nms_top_n`, sorted by decreasing score;
# 4. in training (`self.training`), also computes the two losses with the matching and sampling above.
#
# Step 3 is the helper `filter_proposals` (its arguments are in its docstring), which the grader also tests on its own.
#
# It returns `(proposals, losses)`: a list of `Tensor[P_i, 4]` (detached) and a dict
# `{"loss_objectness", "loss_rpn_box_reg"}` in training, `{}` in eval. This is torchvision's
# `RegionProposalNetwork`; do not use it, its `RPNHead` or `AnchorGenerator`.

# %% nbgrader={"grade": false, "grade_id": "rpn", "locked": false, "schema_version": 3, "solution": true}
def flatten_predictions(objectness, deltas):
    """Lists of Tensor[B, A, H, W] and Tensor[B, 4A, H, W] -> Tensor[B, N] and Tensor[B, N, 4],
    anchors in generate_anchors' order (level, row, column, anchor)."""
    flat_obj, flat_deltas = [], []
    for obj, d in zip(objectness, deltas):
        B, A, H, W = obj.shape
        flat_obj.append(obj.permute(0, 2, 3, 1).reshape(B, -1))
        flat_deltas.append(d.reshape(B, A, 4, H, W).permute(0, 3, 4, 1, 2).reshape(B, -1, 4))
    return torch.cat(flat_obj, dim=1), torch.cat(flat_deltas, dim=1)


class RPNHead(nn.Module):
    """3x3 conv + ReLU, then per location num_anchors objectness logits and 4 * num_anchors deltas."""

    def __init__(self, in_channels, num_anchors):
        super().__init__()
        ### BEGIN SOLUTION
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.cls_logits, self.bbox_pred):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        ### END SOLUTION

    def forward(self, features):
        """list of Tensor[B, C, H_l, W_l] -> (list of Tensor[B, A, H_l, W_l], list of Tensor[B, 4A, H_l, W_l])."""
        ### BEGIN SOLUTION
        objectness, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            objectness.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return objectness, deltas
        ### END SOLUTION


def rpn_losses(objectness, deltas, labels, target_deltas, positive, negative):
    """(loss_objectness, loss_box) over the sampled anchors (positive | negative), torchvision's formulas."""
    ### BEGIN SOLUTION
    sampled = positive | negative
    n_sampled = int(sampled.sum())
    if n_sampled == 0:
        zero = objectness.sum() * 0.0 + deltas.sum() * 0.0
        return zero, zero
    loss_objectness = F.binary_cross_entropy_with_logits(objectness[sampled], positive[sampled].to(objectness.dtype))
    loss_box = F.smooth_l1_loss(deltas[positive], target_deltas[positive], beta=1 / 9, reduction="sum") / n_sampled
    return loss_objectness, loss_box
    ### END SOLUTION


def filter_proposals(boxes, objectness, image_sizes, per_level, pre_nms_top_n, post_nms_top_n, nms_thresh, min_size, score_thresh):
    """boxes Tensor[B, N, 4], objectness logits Tensor[B, N], per_level: anchors per level (sum N) ->
    list of Tensor[P_i, 4]: per level the pre_nms_top_n best, clipped, small and low-scoring boxes
    dropped, NMS per level, the post_nms_top_n best by decreasing score."""
    ### BEGIN SOLUTION
    level = torch.cat([torch.full((n,), i, dtype=torch.int64, device=boxes.device) for i, n in enumerate(per_level)])
    top, start = [], 0
    for scores in objectness.split(per_level, dim=1):
        top.append(scores.topk(min(pre_nms_top_n, scores.shape[1]), dim=1).indices + start)
        start += scores.shape[1]
    top = torch.cat(top, dim=1)  # [B, kept per image]
    proposals = []
    for i, (h, w) in enumerate(image_sizes):
        b = clip_boxes_to_image(boxes[i, top[i]], (int(h), int(w)))
        s, lv = torch.sigmoid(objectness[i, top[i]]), level[top[i]]
        keep = remove_small_boxes(b, min_size)
        b, s, lv = b[keep], s[keep], lv[keep]
        keep = torch.where(s >= score_thresh)[0]
        b, s, lv = b[keep], s[keep], lv[keep]
        proposals.append(b[batched_nms(b, s, lv, nms_thresh)[:post_nms_top_n]])
    return proposals
    ### END SOLUTION


class RegionProposalNetwork(nn.Module):
    """Anchors + RPNHead -> proposals per image (and the RPN's two losses in training)."""

    def __init__(self, in_channels, strides, sizes, aspect_ratios, pre_nms_top_n=1000, post_nms_top_n=1000,
                 nms_thresh=0.7, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                 positive_fraction=0.5, min_size=1e-3, score_thresh=0.0):
        super().__init__()
        ### BEGIN SOLUTION
        self.strides, self.sizes, self.aspect_ratios = list(strides), list(sizes), list(aspect_ratios)
        self.pre_nms_top_n, self.post_nms_top_n, self.nms_thresh = pre_nms_top_n, post_nms_top_n, nms_thresh
        self.fg_iou_thresh, self.bg_iou_thresh = fg_iou_thresh, bg_iou_thresh
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.min_size, self.score_thresh = min_size, score_thresh
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.head = RPNHead(in_channels, len(self.sizes[0]) * len(self.aspect_ratios[0]))
        ### END SOLUTION

    def forward(self, features, image_sizes, targets=None):
        """features: list of Tensor[B, C, H_l, W_l]; image_sizes: list of (h, w); targets: list of dicts with
        "boxes" Tensor[G_i, 4] (training) -> (list of Tensor[P_i, 4] proposals, dict of losses)."""
        ### BEGIN SOLUTION
        objectness, deltas = flatten_predictions(*self.head(features))
        anchors = generate_anchors([f.shape[-2:] for f in features], self.strides, self.sizes, self.aspect_ratios,
                                   dtype=deltas.dtype, device=deltas.device)
        B, N = objectness.shape
        boxes = self.box_coder.decode_single(deltas.detach().reshape(-1, 4), anchors.repeat(B, 1)).reshape(B, N, 4)
        per_level = [h * w * len(s) * len(r) for (h, w), s, r in zip([f.shape[-2:] for f in features], self.sizes, self.aspect_ratios)]
        proposals = filter_proposals(boxes, objectness.detach(), image_sizes, per_level, self.pre_nms_top_n,
                                     self.post_nms_top_n, self.nms_thresh, self.min_size, self.score_thresh)
        if not self.training:
            return proposals, {}
        if targets is None:
            raise ValueError("RegionProposalNetwork needs targets in training mode")
        labels, target_deltas = [], []
        for target in targets:
            matched = match_anchors(anchors, target["boxes"], self.fg_iou_thresh, self.bg_iou_thresh, True)
            label = (matched >= 0).to(anchors.dtype)
            label[matched == BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
            if len(target["boxes"]) == 0:
                target_deltas.append(torch.zeros_like(anchors))
            else:
                target_deltas.append(self.box_coder.encode_single(target["boxes"][matched.clamp(min=0)].to(anchors.dtype), anchors))
        positive, negative = sample_labels(labels, self.batch_size_per_image, self.positive_fraction)
        loss_objectness, loss_box = rpn_losses(objectness.reshape(-1), deltas.reshape(-1, 4), torch.cat(labels),
                                               torch.cat(target_deltas), torch.cat(positive), torch.cat(negative))
        return proposals, {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_box}
        ### END SOLUTION

# %% tags=["check"]
from collections import OrderedDict

from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TvRPN, RPNHead as TvRPNHead

torch.manual_seed(0)
_head = RPNHead(8, 6)
_tv_head = TvRPNHead(8, 6)
_tv_head.load_state_dict({("conv.0.0." + k[5:] if k.startswith("conv.") else k): v for k, v in _head.state_dict().items()})
_maps = [torch.randn(2, 8, 12, 16), torch.randn(2, 8, 6, 8)]
_obj, _del = _head(_maps)
assert [tuple(o.shape) for o in _obj] == [(2, 6, 12, 16), (2, 6, 6, 8)] and [tuple(d.shape) for d in _del] == [(2, 24, 12, 16), (2, 24, 6, 8)], \
    "RPNHead: objectness Tensor[B, A, H, W] and deltas Tensor[B, 4A, H, W] per level"
assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_obj + _del, sum(map(list, _tv_head(_maps)), []))), "RPNHead differs from torchvision's with the same weights"
_o, _d = torch.randn(10), torch.randn(10, 4)
_none = torch.zeros(10, dtype=torch.bool)
assert all(float(v) == 0.0 for v in rpn_losses(_o, _d, torch.zeros(10), torch.zeros(10, 4), _none, _none)), "rpn_losses: nothing sampled gives two zeros"

# The whole RPN against torchvision's, same head weights, same anchors (the course's, not AnchorGenerator's);
# every labelled anchor sampled (batch_size_per_image huge, positive_fraction 1) so that the losses are deterministic.
_sizes, _ratios, _strides = ((16, 24), (32, 48)), ((0.5, 1.0, 2.0),) * 2, (4, 8)
_rpn = RegionProposalNetwork(8, _strides, _sizes, _ratios, pre_nms_top_n=50, post_nms_top_n=30, batch_size_per_image=10**6, positive_fraction=1.0)
_rpn.head.load_state_dict(_head.state_dict())


class _FixedAnchors(nn.Module):
    def forward(self, image_list, feature_maps):
        return [generate_anchors([f.shape[-2:] for f in feature_maps], _strides, _sizes, _ratios)] * len(image_list.image_sizes)

    def num_anchors_per_location(self):
        return [6, 6]


_tv_rpn = TvRPN(_FixedAnchors(), _tv_head, 0.7, 0.3, 10**6, 1.0, dict(training=50, testing=50), dict(training=30, testing=30), 0.7)
_image_sizes = [(45, 60), (48, 64)]
_images = ImageList(torch.zeros(2, 3, 48, 64), _image_sizes)
_targets = [{"boxes": torch.tensor([[5.0, 5, 30, 25], [20, 10, 50, 40]]), "labels": torch.tensor([1, 2])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
for _mode in ("eval", "train"):
    getattr(_rpn, _mode)(), getattr(_tv_rpn, _mode)()
    _got = _rpn(_maps, _image_sizes, _targets if _mode == "train" else None)
    _want = _tv_rpn(_images, OrderedDict(a=_maps[0], b=_maps[1]), _targets if _mode == "train" else None)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(_got[0], _want[0])) and [len(p) for p in _got[0]] == [len(p) for p in _want[0]], \
        f"RegionProposalNetwork ({_mode}): proposals differ from torchvision's"
    assert set(_got[1]) == set(_want[1]) and all(abs(_got[1][k].item() - _want[1][k].item()) < 1e-5 for k in _want[1]), \
        f"RegionProposalNetwork ({_mode}): losses {_got[1]} differ from torchvision's {_want[1]}"
print("RPN ✓")

# %% [markdown]
# ## Part 5 — The second stage: Fast R-CNN heads
#
# The second stage classifies every proposal and refines its box **per class**. RoI Align cuts a
# $C \times 7 \times 7$ feature crop per proposal; `BoxHead(in_channels, resolution, representation_size, num_classes)`
# flattens it and applies `fc6` (→ `representation_size`) + ReLU, `fc7` + ReLU, then two linear layers:
# `cls_score` (→ `num_classes` logits, class 0 = background) and `bbox_pred` (→ `4 * num_classes`:
# one set of deltas per class, columns $4c \dots 4c+3$ for class $c$). `num_classes` counts the background
# (torchvision's convention: `len(CLASSES)` = 4 for the shapes). `forward(x: Tensor[K, C, r, r])` returns
# `(class_logits Tensor[K, num_classes], box_regression Tensor[K, 4 * num_classes])`. Use PyTorch's default
# initialization; the grader copies weights into `fc6`, `fc7`, `cls_score`, `bbox_pred` by name.
#
# **Training samples.** `select_training_samples(proposals, targets, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
# batch_size_per_image=512, positive_fraction=0.25, generator=None)`, per image:
#
# 1. appends the ground-truth boxes to the proposals (so every object has at least one perfect proposal);
# 2. matches them with `match_anchors(..., fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)`;
#    the label of a proposal is its box's class (`targets[i]["labels"]`, int64 ≥ 1) when matched, 0 when
#    below `bg_iou_thresh`, −1 in between (never sampled); an image without objects has only 0s;
# 3. samples with `sample_labels(labels, batch_size_per_image, positive_fraction, generator)` (passing `generator` on);
# 4. encodes each sampled proposal's matched box with `BoxCoder(weights=(10, 10, 5, 5))` (any value for
#    the negatives: the loss ignores them).
#
# It returns three lists (one entry per image, the sampled proposals only, in any order, the same order in
# all three): boxes `Tensor[S_i, 4]`, labels `Tensor[S_i]` int64, regression targets `Tensor[S_i, 4]`. It builds new
# lists: the caller's `proposals` list, its tensors and the targets stay as they were.
#
# **Loss.** `fastrcnn_loss(class_logits, box_regression, labels, regression_targets)` (all concatenated over
# the batch, $K \ge 1$ rows) returns `(loss_classifier, loss_box_reg)`: cross-entropy over all rows, and the
# smooth-$\ell_1$ ($\beta = 1/9$, summed) between the targets and **the deltas of the row's own class**, over
# the rows with label $> 0$ only, divided by $K$ (all rows) — torchvision's `fastrcnn_loss`.
#
# **Detections.** `postprocess_detections(class_logits, box_regression, proposals, image_sizes, score_thresh=0.05,
# nms_thresh=0.5, detections_per_img=100)`: decodes every class's deltas on its proposal
# (`BoxCoder((10, 10, 5, 5))`), takes the softmax over classes, and per image: clips the boxes to the image,
# drops the background column, makes one candidate per (proposal, class), keeps the scores
# **strictly above** `score_thresh` and the boxes at least 0.01 wide and high, runs NMS per class
# (`batched_nms` with the class as index) and keeps the `detections_per_img` best. It returns one dict per
# image: `{"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64}`, sorted by decreasing
# score. (`proposals` is a list of `Tensor[P_i, 4]`; the rows of `class_logits` follow them image by image.)
#
# Do not use torchvision's `RoIHeads`, `fastrcnn_loss`, `TwoMLPHead` or `FastRCNNPredictor` here.

# %% nbgrader={"grade": false, "grade_id": "roi_heads", "locked": false, "schema_version": 3, "solution": true}
class BoxHead(nn.Module):
    """Two fully connected layers, then class logits and class-specific box deltas."""

    def __init__(self, in_channels, resolution, representation_size, num_classes):
        super().__init__()
        ### BEGIN SOLUTION
        self.fc6 = nn.Linear(in_channels * resolution * resolution, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.cls_score = nn.Linear(representation_size, num_classes)
        self.bbox_pred = nn.Linear(representation_size, 4 * num_classes)
        ### END SOLUTION

    def forward(self, x):
        """Tensor[K, C, r, r] -> (Tensor[K, num_classes], Tensor[K, 4 * num_classes])."""
        ### BEGIN SOLUTION
        x = F.relu(self.fc6(x.flatten(1)))
        x = F.relu(self.fc7(x))
        return self.cls_score(x), self.bbox_pred(x)
        ### END SOLUTION


def select_training_samples(proposals, targets, fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=512,
                            positive_fraction=0.25, generator=None):
    """-> (list of Tensor[S_i, 4] sampled proposals, list of Tensor[S_i] int64 labels, list of Tensor[S_i, 4] targets)."""
    ### BEGIN SOLUTION
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    all_boxes, all_labels, all_matched = [], [], []
    for boxes, target in zip(proposals, targets):
        gt_boxes = target["boxes"].to(boxes.dtype)
        boxes = torch.cat([boxes, gt_boxes])
        matched = match_anchors(boxes, gt_boxes, fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        if len(gt_boxes) == 0:
            labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
            matched_boxes = boxes
        else:
            labels = target["labels"].to(torch.int64)[matched.clamp(min=0)]
            labels[matched == BELOW_LOW_THRESHOLD] = 0
            labels[matched == BETWEEN_THRESHOLDS] = -1
            matched_boxes = gt_boxes[matched.clamp(min=0)]
        all_boxes.append(boxes), all_labels.append(labels), all_matched.append(matched_boxes)
    positive, negative = sample_labels(all_labels, batch_size_per_image, positive_fraction, generator)
    out_boxes, out_labels, out_targets = [], [], []
    for boxes, labels, matched_boxes, pos, neg in zip(all_boxes, all_labels, all_matched, positive, negative):
        keep = torch.where(pos | neg)[0]
        out_boxes.append(boxes[keep])
        out_labels.append(labels[keep])
        out_targets.append(coder.encode_single(matched_boxes[keep], boxes[keep]))
    return out_boxes, out_labels, out_targets
    ### END SOLUTION


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets):
    """(cross-entropy, smooth-L1 of the own class's deltas over the positives / K), torchvision's formulas."""
    ### BEGIN SOLUTION
    loss_classifier = F.cross_entropy(class_logits, labels)
    positive = torch.where(labels > 0)[0]
    per_class = box_regression.reshape(len(labels), -1, 4)
    loss_box = F.smooth_l1_loss(per_class[positive, labels[positive]], regression_targets[positive], beta=1 / 9, reduction="sum")
    return loss_classifier, loss_box / labels.numel()
    ### END SOLUTION


def postprocess_detections(class_logits, box_regression, proposals, image_sizes, score_thresh=0.05, nms_thresh=0.5,
                           detections_per_img=100):
    """-> list of {"boxes": Tensor[D, 4], "scores": Tensor[D], "labels": Tensor[D] int64} per image, best first."""
    ### BEGIN SOLUTION
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
    num_classes = class_logits.shape[-1]
    counts = [len(p) for p in proposals]
    if sum(counts) == 0:
        boxes_all = box_regression.new_zeros((0, num_classes, 4))
    else:
        boxes_all = coder.decode_single(box_regression.reshape(-1, 4), torch.cat(proposals).repeat_interleave(num_classes, dim=0))
    boxes_all = boxes_all.reshape(-1, num_classes, 4)
    scores_all = F.softmax(class_logits, dim=-1)
    detections = []
    for boxes, scores, (h, w) in zip(boxes_all.split(counts), scores_all.split(counts), image_sizes):
        boxes = clip_boxes_to_image(boxes, (int(h), int(w)))[:, 1:].reshape(-1, 4)
        labels = torch.arange(num_classes, device=scores.device).expand_as(scores)[:, 1:].reshape(-1)
        scores = scores[:, 1:].reshape(-1)
        keep = torch.where(scores > score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, 1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_thresh)[:detections_per_img]
        detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return detections
    ### END SOLUTION

# %% tags=["check"]
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss as tv_fastrcnn_loss

torch.manual_seed(0)
_bh = BoxHead(4, 7, 32, 4)
_x = torch.randn(5, 4, 7, 7)
_mlp, _pred = TwoMLPHead(4 * 49, 32), FastRCNNPredictor(32, 4)
_mlp.load_state_dict({k: v for k, v in _bh.state_dict().items() if k.startswith("fc")})
_pred.load_state_dict({k: v for k, v in _bh.state_dict().items() if not k.startswith("fc")})
assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(_bh(_x), _pred(_mlp(_x)))), "BoxHead differs from TwoMLPHead + FastRCNNPredictor"
_logits, _reg, _labels, _tg = torch.randn(12, 4), torch.randn(12, 16), torch.tensor([0, 1, 2, 3] * 3), torch.randn(12, 4)
assert all(torch.allclose(a, b) for a, b in zip(fastrcnn_loss(_logits, _reg, _labels, _tg), tv_fastrcnn_loss(_logits, _reg, [_labels], [_tg]))), \
    "fastrcnn_loss differs from torchvision's (the box loss uses each row's own class's deltas, / all rows)"
_heads = RoIHeads(None, None, None, 0.5, 0.5, 10**6, 1.0, (10.0, 10.0, 5.0, 5.0), 0.05, 0.5, 100)
_props = [torch.tensor([[4.0, 6, 28, 24], [0, 0, 20, 20], [22, 8, 52, 44], [30, 30, 60, 44]]), torch.tensor([[3.0, 3, 30, 30]])]
_boxes, _labs, _regs = select_training_samples(_props, _targets, batch_size_per_image=10**6, positive_fraction=1.0)
_want_boxes, _, _want_labels, _ = _heads.select_training_samples([p.clone() for p in _props], _targets)
assert [sorted(l.tolist()) for l in _labs] == [sorted(l.tolist()) for l in _want_labels] and _labs[0].dtype == torch.int64, \
    "select_training_samples: labels differ from torchvision's (ground truth added, matched at 0.5, class ids / 0)"
_props = [torch.tensor([[4.0, 6, 28, 24], [0, 0, 20, 20], [22, 8, 52, 44], [30, 30, 60, 44], [-5, 2, 10, 60], [1, 1, 2, 3], [10, 12, 30, 30], [40, 5, 70, 25]]),
          torch.tensor([[1.0, 1, 20, 30], [5, 5, 38, 39], [2, 3, 12, 14], [20, 0, 40, 22]])]
_dets = postprocess_detections(_logits * 3, _reg, _props, [(50, 60), (40, 40)])
_want = _heads.postprocess_detections(_logits * 3, _reg, _props, [(50, 60), (40, 40)])
assert isinstance(_dets, list) and len(_dets) == 2 and all(set(d) >= {"boxes", "scores", "labels"} for d in _dets), "postprocess_detections: one dict per image"
for _d, _b, _s, _l in zip(_dets, *_want):
    assert _d["labels"].dtype == torch.int64 and torch.equal(_d["labels"], _l), "postprocess_detections: labels (int64) differ from torchvision's"
    assert torch.allclose(_d["scores"], _s) and torch.allclose(_d["boxes"], _b, atol=1e-4), "postprocess_detections: boxes or scores differ from torchvision's (best first)"
print("second stage ✓")

# %% [markdown]
# ## Part 6 — Faster R-CNN, trained
#
# Now assemble the detector. The backbone is given (the cell below, not graded): a small CNN whose
# three stages give maps of strides 4, 8 and 16. `FasterRCNN(num_classes)` (background included:
# `len(CLASSES)`) builds, with these names:
#
# - `backbone = SmallBackbone()` and `fpn = FPN(SmallBackbone.out_channels, 64)` (Part 3);
# - `rpn = RegionProposalNetwork(64, strides=(4, 8, 16), sizes=((16, 24), (32, 48), (64, 96)), aspect_ratios=((0.5, 1.0, 2.0),) * 3,
#   pre_nms_top_n=500, post_nms_top_n=200)` (Part 4);
# - `box_head = BoxHead(64, 7, 256, num_classes)` (Part 5).
#
# `forward(images, targets=None)` takes a list of `Tensor[3, H_i, W_i]` (values in $[0, 1]$, sizes may
# differ) or a `Tensor[B, 3, H, W]`, and `targets`, one dict per image with `"boxes"` `Tensor[G_i, 4]`
# (xyxy pixels, $G_i$ may be 0) and `"labels"` `Tensor[G_i]` int64:
#
# 1. normalizes the images ($(x - 0.5) / 0.25$) and pads them with zeros at the bottom and right into one
#    batch whose height and width are multiples of 16; `image_sizes` keeps each image's own $(H_i, W_i)$;
# 2. backbone → FPN → RPN proposals (and the RPN losses in training);
# 3. in training, `select_training_samples(proposals, targets, batch_size_per_image=64)`;
# 4. RoI Align, 7×7, on **one FPN level per box**: level $\ell = \lfloor 1 + \log_2(\sqrt{wh} / 64)\rfloor$
#    clipped to $\{0, 1, 2\}$ (so every box under 64 pixels — all the shapes — reads the finest, stride-4 map, and a
#    64-pixel box the stride-8 map; with 32 instead of 64, the shapes of 32–56 pixels would read the stride-8 map and
#    the detector would tell the classes apart more slowly), `spatial_scale = 1 / stride`,
#    `sampling_ratio=1`, `aligned=True` — your `roi_align` (the helper `multilevel_roi_align` is given);
# 5. the box head; in training `fastrcnn_loss`, in eval `postprocess_detections`.
#
# In training (`model.train()`) it returns the dict of the **four losses**
# `{"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}` (scalars); in eval a list
# with one `{"boxes", "scores", "labels"}` dict per image (boxes in the image's own pixels). Do not use
# torchvision's detection models (`FasterRCNN`, `GeneralizedRCNN`, `RoIHeads`, `RegionProposalNetwork`, ...).
#
# **The grader trains it** (12 of the 20 points). It calls `FasterRCNN(len(CLASSES))` and trains it with
# the recipe of `train_detector` below — AdamW (weight decay $10^{-4}$), one-cycle learning rate up to
# $4\cdot10^{-3}$, 300 steps of 12 rendered 128×128 images with 1–3 objects, on one CPU thread (about
# 1–2 minutes for the reference: about 0.25 s per step on one thread of a 2-core machine with other work on the
# other core, 300 steps ≈ 75 s; keep your step time under about 0.6 s, or on a busy grading machine the training
# runs out of its 270 s — the training cell below prints your time) — then sends 64 new images it generated
# itself and computes **COCO AP50** of your detections (pycocotools) in its own process. The bar is
# **AP50 ≥ 0.65**; the reference solution reaches 0.73–0.85 (mean 0.79) over nine training sets and class
# renamings. The detections must come from what the network learned: with its trained weights
# shuffled, the same model must lose at least 0.2 AP50, or the test gives no points.
#
# **The grader renames the classes.** Its training images and their targets are rendered in the grader, and the
# class ids of its training targets are renamed by a secret permutation (never the identity: circles may be
# labelled 3 and triangles 1, say); the evaluation's ground truth is renamed the same way. A network that learns
# from its training data predicts the renamed ids and scores as it would on the true ones; code that decides the
# class by itself (from colours or shape measurements, or a fixed table) does not. So nothing in your model may
# depend on which shape a class id stands for: take the classes from the training targets only. The grader also
# scores your trained detections against the shapes' **true** classes: AP50 against the renamed classes must be at
# least 0.2 above that (a network that learned is about 0.5 above; detections that offer every box under every
# class match both alike and get no points).

# %% nbgrader={"grade": false, "grade_id": "backbone", "locked": true, "schema_version": 3, "solution": false} tags=["preamble"]
# Given, not graded (the grader runs this cell as released).
class SmallBackbone(nn.Module):
    """A small CNN: images Tensor[B, 3, H, W] -> [Tensor[B, 32, H/4, W/4], Tensor[B, 64, H/8, W/8], Tensor[B, 128, H/16, W/16]]."""

    out_channels = (32, 64, 128)
    strides = (4, 8, 16)

    def __init__(self):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.stage1 = nn.Sequential(block(3, 16, 2), block(16, 32, 2))     # stride 4
        self.stage2 = nn.Sequential(block(32, 64, 2), block(64, 64, 1))    # stride 8
        self.stage3 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))  # stride 16

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]

# %% nbgrader={"grade": false, "grade_id": "faster_rcnn", "locked": false, "schema_version": 3, "solution": true}
def multilevel_roi_align(features, boxes, strides, output_size=7, canonical_size=64.0, canonical_level=1):
    """features: list of Tensor[B, C, H_l, W_l]; boxes: list of Tensor[K_i, 4] (one per image) ->
    Tensor[sum K_i, C, output_size, output_size], each box read on level floor(canonical_level + log2(sqrt(wh) / canonical_size))."""
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
    area = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).clamp(min=1e-6)
    level = torch.floor(canonical_level + torch.log2(area.sqrt() / canonical_size) + 1e-6).clamp(0, len(features) - 1).long()
    out = features[0].new_zeros((len(rois), features[0].shape[1], output_size, output_size))
    for l, (feature, stride) in enumerate(zip(features, strides)):
        idx = torch.where(level == l)[0]
        if len(idx):
            out[idx] = roi_align(feature, rois[idx], output_size, spatial_scale=1.0 / stride, sampling_ratio=1, aligned=True)
    return out


class FasterRCNN(nn.Module):
    """SmallBackbone + FPN + RPN + RoI Align + BoxHead: losses in training, detections in eval."""

    def __init__(self, num_classes):
        super().__init__()
        ### BEGIN SOLUTION
        self.num_classes = num_classes
        self.backbone = SmallBackbone()
        self.fpn = FPN(SmallBackbone.out_channels, 64)
        self.rpn = RegionProposalNetwork(64, strides=SmallBackbone.strides, sizes=((16, 24), (32, 48), (64, 96)),
                                         aspect_ratios=((0.5, 1.0, 2.0),) * 3, pre_nms_top_n=500, post_nms_top_n=200)
        self.box_head = BoxHead(64, 7, 256, num_classes)
        ### END SOLUTION

    def forward(self, images, targets=None):
        """list of Tensor[3, H_i, W_i] (or Tensor[B, 3, H, W]) [+ targets] -> dict of 4 losses (train) / list of detections (eval)."""
        ### BEGIN SOLUTION
        if self.training and targets is None:
            raise ValueError("FasterRCNN needs targets in training mode")
        image_sizes = [tuple(im.shape[-2:]) for im in images]
        height = math.ceil(max(h for h, _ in image_sizes) / 16) * 16
        width = math.ceil(max(w for _, w in image_sizes) / 16) * 16
        batch = images[0].new_zeros((len(images), 3, height, width))
        for i, im in enumerate(images):
            batch[i, :, : im.shape[-2], : im.shape[-1]] = (im - 0.5) / 0.25
        features = self.fpn(self.backbone(batch))
        proposals, losses = self.rpn(features, image_sizes, targets)
        if self.training:
            proposals, labels, regression_targets = select_training_samples(proposals, targets, batch_size_per_image=64)
        class_logits, box_regression = self.box_head(multilevel_roi_align(features, proposals, SmallBackbone.strides))
        if not self.training:
            return postprocess_detections(class_logits, box_regression, proposals, image_sizes)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, torch.cat(labels), torch.cat(regression_targets))
        return {**losses, "loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        ### END SOLUTION

# %% tags=["check"]
from lecture_utils.data import CLASSES, ShapesDataset

torch.manual_seed(0)
_model = FasterRCNN(len(CLASSES))
_img, _t = ShapesDataset(1, (96, 128), seed=3, min_objects=2, max_objects=3)[0]
_empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
_model.train()
_losses = _model([_img, torch.rand(3, 80, 72)], [_t, _empty])
assert isinstance(_losses, dict) and set(_losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}, \
    f"FasterRCNN in training mode returns the four losses, got {type(_losses).__name__}"
assert all(v.ndim == 0 and torch.isfinite(v) for v in _losses.values()), "each loss is a finite scalar"
sum(_losses.values()).backward()
_model.eval()
with torch.no_grad():
    _dets = _model([_img, torch.rand(3, 80, 72)])
assert len(_dets) == 2 and all(set(d) >= {"boxes", "scores", "labels"} for d in _dets), "FasterRCNN in eval mode returns one dict per image"
assert all(d["labels"].dtype == torch.int64 and len(d["boxes"]) <= 100 for d in _dets), "labels int64, at most 100 detections per image"
assert all(float(torch.cat([_d["boxes"][:, 2], torch.zeros(1)]).max()) <= _w and float(torch.cat([_d["boxes"][:, 3], torch.zeros(1)]).max()) <= _h
           for _d, (_h, _w) in zip(_dets, [(96, 128), (80, 72)])), "boxes are clipped to their own image"
print("FasterRCNN ✓")

# %% [markdown]
# ### Training
#
# The cell below is the grader's recipe: the same data, optimizer, schedule and number of steps
# (`STEPS = 300`, about 1–3 minutes on a laptop CPU). On a GPU it trains longer (`STEPS = 2000`) — better
# detections to look at, but the grader's number is the CPU one. The metric is the grader's too:
# COCO AP50 with pycocotools on 64 new images.

# %%
import contextlib
import io
import time

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm.auto import tqdm

from lecture_utils.viz import plot_losses

STEPS = 300 if device.type == "cpu" else 2000  # the grader: 300 steps on one CPU thread
SHAPES = dict(min_objects=1, max_objects=3)


def coco_ap(detections, targets):
    """COCO box AP and AP50 (pycocotools, area 'all', 100 detections) of detections vs targets (lists of dicts per image)."""
    images = [{"id": i, "width": 128, "height": 128} for i in range(len(targets))]
    anns = [{"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
            for i, t in enumerate(targets) for (x1, y1, x2, y2), c in zip(t["boxes"].tolist(), t["labels"].tolist())]
    for k, ann in enumerate(anns, start=1):  # unique ids from 1 (pycocotools reads id 0 as "no match")
        ann["id"] = k
    dets = [{"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(s)}
            for i, d in enumerate(detections) for (x1, y1, x2, y2), s, c in zip(d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist())]
    if not dets:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, len(CLASSES))]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def train_detector(model, steps=STEPS, batch_size=12, lr=4e-3, seed=0):
    """The grader's recipe: AdamW, one-cycle learning rate, 1536 rendered 128x128 shapes images (1-3 objects)."""
    torch.manual_seed(seed)
    data = ShapesDataset(1536, 128, seed=seed + 100, **SHAPES)
    items = [data[i] for i in range(len(data))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = {k: [] for k in ("loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg")}
    model.train()
    for step in tqdm(range(steps), desc="training Faster R-CNN"):
        batch = items[(step * batch_size) % len(items):][:batch_size]
        losses = model([im.to(device) for im, _ in batch], [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for _, t in batch])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        schedule.step()
        for k, v in losses.items():
            history[k].append(float(v))
    return history


model = FasterRCNN(len(CLASSES)).to(device)
start = time.perf_counter()
history = train_detector(model)
print(f"{STEPS} steps in {time.perf_counter() - start:.0f} s")
val = ShapesDataset(64, 128, seed=2, **SHAPES)
val_items = [val[i] for i in range(len(val))]
model.eval()
with torch.no_grad():
    detections = [{k: v.cpu() for k, v in d.items()} for s in range(0, 64, 16) for d in model([im.to(device) for im, _ in val_items[s:s + 16]])]
ap, ap50 = coco_ap(detections, [t for _, t in val_items])
print(f"validation (64 new images): COCO AP50 {ap50:.3f} (the grader needs >= 0.65), AP {ap:.3f}")
plot_losses(history, title="Faster R-CNN: the four losses")
plt.show()

# %% [markdown]
# Detections (score ≥ 0.5, yellow, with class and score) against the ground truth (white) on validation images:

# %%
fig, axes = plt.subplots(2, 3, figsize=(6.8, 4.8), layout="constrained")
for ax, (image, target), d in zip(axes.flat, val_items, detections):
    keep = d["scores"] >= 0.5
    show_image(image, ax)
    draw_boxes(ax, target["boxes"], color="white", linewidth=1)
    draw_boxes(ax, d["boxes"][keep], [f"{CLASSES[c]} {s:.2f}" for c, s in zip(d["labels"][keep].tolist(), d["scores"][keep].tolist())], color="yellow", linewidth=1.5)
plt.show()

# %% [markdown]
# What the trained RPN proposes on one validation image: its 30 best anchors decoded (before NMS), and
# the proposals that survive NMS and reach the second stage.

# %%
image = val_items[0][0].to(device)
with torch.no_grad():
    features = model.fpn(model.backbone(((image - 0.5) / 0.25)[None]))
    objectness, deltas = flatten_predictions(*model.rpn.head(features))
    anchors = generate_anchors([f.shape[-2:] for f in features], model.rpn.strides, model.rpn.sizes, model.rpn.aspect_ratios, device=device)
    decoded = model.rpn.box_coder.decode_single(deltas[0], anchors)
    proposals, _ = model.rpn(features, [tuple(image.shape[-2:])])
best = objectness[0].topk(30).indices
fig, axes = plt.subplots(1, 2, figsize=(6.8, 3.6), layout="constrained")
show_image(image.cpu(), axes[0], title="30 best anchors, decoded\n(before NMS)")
draw_boxes(axes[0], decoded[best].cpu(), color="cyan", linewidth=1)
show_image(image.cpu(), axes[1], title=f"the 10 best of {len(proposals[0])} proposals\nafter NMS")
draw_boxes(axes[1], proposals[0][:10].cpu(), color="orange", linewidth=1)
plt.show()

# %% [markdown]
# ## Submit
#
# Save the notebook, then run the cell below. It checks the notebook, runs the visible checks in a fresh
# process, and writes `a3_two_stage_submission.ipynb` (downloaded automatically in Colab).

# %%
from lecture_utils import submit

submit.export("a3_two_stage.ipynb")
