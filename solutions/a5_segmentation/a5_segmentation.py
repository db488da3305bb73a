# ---
# jupyter:
#   course:
#     assignment: a5_segmentation
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 5 — Segmentation (Lecture 15)
#
# Detection draws a box around each object; segmentation labels pixels. A **semantic** segmentation network
# gives every pixel a class; an **instance** segmentation network (Mask R-CNN) gives every detected object
# its own mask; a **panoptic** segmentation gives every pixel both a class and, for countable objects, an
# instance id. All of them must turn small, deep feature maps back into full-resolution outputs, so you
# start with upsampling:
#
# 1. **Upsampling** (15 points): `nearest_upsample`, `bed_of_nails_unpool`, `max_unpool2d`,
#    `bilinear_upsample`, `bicubic_upsample`.
# 2. **Transposed convolution** (15): `conv_transpose2d` and `conv2d_matrix` — convolution as a matrix $C$,
#    transposed convolution as $C^\top$.
# 3. **FCN** (20): `mean_iou` and a fully convolutional network `FCN`, which the grader trains on shapes
#    semantic maps and scores by mIoU.
# 4. **Mask R-CNN** (35): `mask_iou`, `project_masks_on_boxes`, `MaskHead`, `maskrcnn_loss`,
#    `paste_masks_in_image`; the grader trains a Mask R-CNN whose mask branch is yours (the box part is
#    torchvision's) and scores its masks by COCO mask AP50.
# 5. **Panoptic merging and keypoints** (15): `panoptic_merge`, `keypoints_to_heatmap`,
#    `heatmaps_to_keypoints`.
#
# Conventions (the hidden tests check them):
#
# - images and feature maps are `Tensor[N, C, H, W]`; boxes are `xyxy` float pixel coordinates (no "+1"),
#   labels `1..C` with `0` = background; the tests use non-square sizes;
# - where a function has a PyTorch or torchvision counterpart (named in its part), it has the same
#   signature and defaults and must return the same values (float32: within $10^{-5}$ relative /
#   $10^{-6}$ absolute — bicubic $10^{-5}$ absolute —, float64: $10^{-9}$ / $10^{-12}$), the same shape and dtype, and — for the
#   differentiable ones — the same gradients by autograd;
# - empty inputs (no boxes, no masks) give empty outputs of the right shape;
# - your code works on any device (never hard-code `"cpu"`/`"cuda"`: use the inputs' `device`) and never
#   modifies its arguments in place.
#
# **Writing each function is the exercise.** Parts 1–2 may not call PyTorch's resampling or transposed
# convolutions (`F.interpolate`, `F.upsample*`, `nn.Upsample`, `F.grid_sample`, `F.max_unpool2d`,
# `nn.MaxUnpool2d`, `F.conv_transpose*`, `nn.ConvTranspose*`, `torch.nn.grad`, and no autograd tricks such
# as `torch.autograd.grad` to get a transpose); Parts 4–5 may not call torchvision's Mask/Keypoint R-CNN
# helpers (`torchvision.models.detection.roi_heads.*`, `...transform.paste_masks_in_image`,
# `MaskRCNNHeads`, `MaskRCNNPredictor`) nor `pycocotools`. The hidden tests detect these calls and say so.
# Everything else is allowed, and recommended where a part says so: indexing, `torch.gather`/`scatter`,
# `F.pad`, `F.unfold`/`F.fold`, `F.conv2d`, `torchvision.ops.roi_align`, and — from Part 3 on —
# `F.interpolate` and `nn.ConvTranspose2d` (you wrote them by then). Use the library functions freely in
# your own checks, as the visible checks below do.

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
from torchvision.ops import roi_align

from lecture_utils import get_device, seed_everything
from lecture_utils.data import CLASSES, NUM_KEYPOINTS, ShapesDataset

device = get_device()
seed_everything(0)
print("running on", device)

# %% [markdown]
# ## Part 1 — Upsampling
#
# An encoder halves the resolution several times; the decoder must undo it. The simplest upsamplers have
# no weights. All functions of this part take `input` `Tensor[N, C, H, W]` and return
# `Tensor[N, C, H_out, W_out]` in `input`'s dtype and device.
#
# **Output size.** As in `F.interpolate`, give either `size=(H_out, W_out)` (an `int` means a square size)
# or `scale_factor` (a number, or one per dimension $(s_h, s_w)$); then
# $H_\text{out} = \lfloor H \cdot s_h \rfloor$. Scale factors need not be integers, and they may be below 1.
#
# **Source coordinates.** Every output pixel $x_\text{out}$ (per axis) reads the input near a source
# coordinate computed with the **scale** $r$:
#
# - $r = 1 / s$ when `scale_factor` $s$ was given, and $r = H / H_\text{out}$ when `size` was given (these
#   differ when $H \cdot s$ is not an integer: PyTorch uses the factor you gave it);
# - with `align_corners=True` instead, $r = (H - 1) / (H_\text{out} - 1)$ (and $0$ when $H_\text{out} = 1$):
#   the corner pixels' *centres* of input and output coincide.
#
# | mode | source coordinate of output pixel $i$ |
# |---|---|
# | nearest | $\min(\lfloor i\,r \rfloor,\ H - 1)$ (the pixel itself) |
# | bilinear, `align_corners=False` | $\max\big(r\,(i + \tfrac12) - \tfrac12,\ 0\big)$ (pixel centres at $+\tfrac12$) |
# | bicubic, `align_corners=False` | $r\,(i + \tfrac12) - \tfrac12$ (no clamping) |
# | bilinear / bicubic, `align_corners=True` | $i\,r$ |
#
# **Nearest** copies the pixel at the source index (PyTorch computes $i\,r$ in float32; do the same, e.g.
# `torch.arange(H_out, dtype=torch.float32) * r`, for identical indices when $r$ is not exact).
#
# PyTorch takes two shortcuts that the table does not describe: when an axis's output size equals its input size
# it copies that axis (even for `scale_factor=1.1` on 7 pixels), and nearest uses $\lfloor i / 2 \rfloor$ when the
# output is exactly twice the input (even for `scale_factor=2.1` on 7 pixels). The hidden tests avoid factors that
# hit these shortcuts without being exactly 1 or 2; you need not reproduce them.
#
# **Bilinear** reads the two neighbours $x_0 = \lfloor x \rfloor$ and $x_1 = \min(x_0 + 1, H - 1)$ of the
# source coordinate $x$ on each axis and mixes them with $\lambda = x - x_0$:
# $(1 - \lambda)\,v_{x_0} + \lambda\,v_{x_1}$ — first along the width, then the height (or the other way:
# bilinear is separable).
#
# **Bicubic** mixes four neighbours $x_0 - 1, x_0, x_0 + 1, x_0 + 2$ (each index clamped to $[0, H - 1]$),
# with $t = x - x_0$ and the cubic convolution kernel of Keys with $A = -0.75$:
#
# $$w(d) = \begin{cases}(A + 2)|d|^3 - (A + 3)|d|^2 + 1 & |d| \le 1\\ A|d|^3 - 5A|d|^2 + 8A|d| - 4A & 1 < |d| < 2\\ 0 & \text{otherwise}\end{cases}$$
#
# giving the weights $w(t + 1), w(t), w(1 - t), w(2 - t)$. The weights sum to 1 but can be negative, so
# bicubic output can overshoot the input's range (PyTorch does not clamp it, neither should you).
#
# **Bed of nails** `bed_of_nails_unpool(input, scale_factor=2)` (an `int`) puts each input value at the
# top-left corner of its $s \times s$ output block and zeros elsewhere. **Max unpooling**
# `max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None)` is
# `F.max_unpool2d`: it puts each value back where `F.max_pool2d(..., return_indices=True)` found it —
# `indices` are flat positions $y \cdot W_\text{out} + x$ within each output channel — and zeros elsewhere.
# `kernel_size`, `stride` and `padding` are an `int` or a pair; `stride=None` means `kernel_size`; the
# output size is $(H - 1)\,s - 2p + k$ unless `output_size` is given (a pair $(H_\text{out}, W_\text{out})$, or a
# longer sequence whose last two entries are). With overlapping windows an input position may be the maximum
# of two windows: both copies carry the same value.
#
# The helpers `_output_size_and_scales`, `_source_positions`, `_linear_taps` and `_cubic_weights` are a suggested
# structure (the grader calls only the five functions).
#
# All five are differentiable by autograd (no custom backward needed): build them from indexing, `gather`,
# `scatter`, arithmetic. Loops over the (at most 4) neighbours or taps are fine; **loops over pixels are not**.

# %% nbgrader={"grade": false, "grade_id": "upsampling", "locked": false, "schema_version": 3, "solution": true}
def _pair(value):
    """An int or a pair -> a pair of ints (for sizes, kernels, strides)."""
    return (int(value), int(value)) if isinstance(value, (int, float)) else (int(value[0]), int(value[1]))


def _output_size_and_scales(input, size, scale_factor, align_corners):
    """((H_out, W_out), (r_h, r_w)): the output size and the scales of the table above."""
    ### BEGIN SOLUTION
    in_h, in_w = input.shape[-2:]
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor")
    if size is not None:
        out_h, out_w = _pair(size)
        scales = (in_h / out_h, in_w / out_w)
    else:
        s_h, s_w = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else tuple(scale_factor)
        out_h, out_w = int(math.floor(in_h * s_h)), int(math.floor(in_w * s_w))
        scales = (1.0 / s_h, 1.0 / s_w)
    if align_corners:
        scales = ((in_h - 1) / (out_h - 1) if out_h > 1 else 0.0, (in_w - 1) / (out_w - 1) if out_w > 1 else 0.0)
    return (out_h, out_w), scales
    ### END SOLUTION


def nearest_upsample(input, size=None, scale_factor=None):
    """Tensor[N, C, H, W] -> Tensor[N, C, H_out, W_out], == F.interpolate(mode="nearest")."""
    ### BEGIN SOLUTION
    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners=False)
    in_h, in_w = input.shape[-2:]
    rows = (torch.arange(out_h, dtype=torch.float32, device=input.device) * r_h).floor().long().clamp(max=in_h - 1)
    cols = (torch.arange(out_w, dtype=torch.float32, device=input.device) * r_w).floor().long().clamp(max=in_w - 1)
    return input[..., rows[:, None], cols[None, :]]
    ### END SOLUTION


def bed_of_nails_unpool(input, scale_factor=2):
    """Tensor[N, C, H, W] -> Tensor[N, C, s*H, s*W]: each value at the top-left of its s x s block, zeros elsewhere."""
    ### BEGIN SOLUTION
    s = int(scale_factor)
    n, c, h, w = input.shape
    out = input.new_zeros((n, c, h * s, w * s))
    out[..., ::s, ::s] = input  # autograd follows the copy into the fresh tensor
    return out
    ### END SOLUTION


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Tensor[N, C, H, W] + the indices of F.max_pool2d -> Tensor[N, C, H_out, W_out], == F.max_unpool2d."""
    ### BEGIN SOLUTION
    k_h, k_w = _pair(kernel_size)
    s_h, s_w = _pair(stride if stride is not None else kernel_size)
    p_h, p_w = _pair(padding)
    n, c, h, w = input.shape
    if output_size is not None:
        out_h, out_w = (int(v) for v in list(output_size)[-2:])
    else:
        out_h, out_w = (h - 1) * s_h - 2 * p_h + k_h, (w - 1) * s_w - 2 * p_w + k_w
    flat = input.new_zeros((n, c, out_h * out_w))
    flat = flat.scatter(2, indices.reshape(n, c, -1).long(), input.reshape(n, c, -1))
    return flat.reshape(n, c, out_h, out_w)
    ### END SOLUTION


def _linear_taps(positions, in_size):
    """Bilinear taps along one axis: (x0, x1, lam), with lam = x - x0 in positions' dtype."""
    ### BEGIN SOLUTION
    low = positions.floor()
    lam = positions - low
    x0 = low.long().clamp(0, in_size - 1)
    x1 = (x0 + 1).clamp(max=in_size - 1)
    return x0, x1, lam
    ### END SOLUTION


def _source_positions(out_size, scale, align_corners, clamp, dtype, device):
    """The source coordinate of every output pixel along one axis (the table above)."""
    ### BEGIN SOLUTION
    i = torch.arange(out_size, dtype=dtype, device=device)
    if align_corners:
        return i * scale
    x = scale * (i + 0.5) - 0.5
    return x.clamp(min=0) if clamp else x
    ### END SOLUTION


def bilinear_upsample(input, size=None, scale_factor=None, align_corners=False):
    """Tensor[N, C, H, W] -> Tensor[N, C, H_out, W_out], == F.interpolate(mode="bilinear", align_corners=...)."""
    ### BEGIN SOLUTION
    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners)
    in_h, in_w = input.shape[-2:]
    y0, y1, ly = _linear_taps(_source_positions(out_h, r_h, align_corners, True, input.dtype, input.device), in_h)
    x0, x1, lx = _linear_taps(_source_positions(out_w, r_w, align_corners, True, input.dtype, input.device), in_w)
    # linear along one axis = a matrix with two weights in each row (1 - lam and lam at the two neighbours): two small
    # matrices, [H_out, H] and [W_out, W], and two matrix products, much faster than gathering rows and columns
    rows = F.one_hot(y0, in_h) * (1 - ly)[:, None] + F.one_hot(y1, in_h) * ly[:, None]
    cols = F.one_hot(x0, in_w) * (1 - lx)[:, None] + F.one_hot(x1, in_w) * lx[:, None]
    return rows @ (input @ cols.t())  # the columns first: one large matrix product over all rows of all images
    ### END SOLUTION


def _cubic_weights(t, A=-0.75):
    """The four weights w(t + 1), w(t), w(1 - t), w(2 - t) of Keys' kernel, stacked: Tensor[4, L]."""
    ### BEGIN SOLUTION
    def near(d):  # |d| <= 1
        return ((A + 2) * d - (A + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((A * d - 5 * A) * d + 8 * A) * d - 4 * A

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)])
    ### END SOLUTION


def bicubic_upsample(input, size=None, scale_factor=None, align_corners=False):
    """Tensor[N, C, H, W] -> Tensor[N, C, H_out, W_out], == F.interpolate(mode="bicubic", align_corners=...)."""
    ### BEGIN SOLUTION
    (out_h, out_w), (r_h, r_w) = _output_size_and_scales(input, size, scale_factor, align_corners)
    in_h, in_w = input.shape[-2:]

    def taps(out_size, scale, in_size):
        x = _source_positions(out_size, scale, align_corners, False, input.dtype, input.device)
        low = x.floor()
        index = low.long()[None, :] + torch.arange(-1, 3, device=input.device)[:, None]  # [4, L]
        return index.clamp(0, in_size - 1), _cubic_weights(x - low)

    ys, wy = taps(out_h, r_h, in_h)
    xs, wx = taps(out_w, r_w, in_w)
    rows = sum(input[..., ys[k], :] * wy[k][:, None] for k in range(4))
    return sum(rows[..., xs[k]] * wx[k] for k in range(4))
    ### END SOLUTION

# %% tags=["check"]
_gen = torch.Generator().manual_seed(0)
_x = torch.randn(2, 3, 5, 7, generator=_gen, dtype=torch.float64)
for _kw in (dict(scale_factor=2), dict(scale_factor=(1.5, 2.5)), dict(size=(9, 11)), dict(size=(3, 4)), dict(scale_factor=0.7)):
    _want = F.interpolate(_x, mode="nearest", **_kw)
    _got = nearest_upsample(_x, **_kw)
    assert _got.shape == _want.shape and torch.equal(_got, _want), f"nearest_upsample(**{_kw}) differs from F.interpolate(mode='nearest')"
    for _mode, _fn in (("bilinear", bilinear_upsample), ("bicubic", bicubic_upsample)):
        for _ac in (False, True):
            _want = F.interpolate(_x, mode=_mode, align_corners=_ac, **_kw)
            _got = _fn(_x, align_corners=_ac, **_kw)
            assert _got.shape == _want.shape and _got.dtype == _want.dtype, f"{_fn.__name__}(**{_kw}, align_corners={_ac}): shape {tuple(_got.shape)} {_got.dtype}, expected {tuple(_want.shape)} {_want.dtype}"
            assert torch.allclose(_got, _want, rtol=1e-9, atol=1e-12), f"{_fn.__name__}(**{_kw}, align_corners={_ac}) differs from F.interpolate (max error {float((_got - _want).abs().max()):.2e})"
# max unpooling with the pooling's indices, overlapping windows, output_size, and bed of nails
for _k, _s, _p, _sizes in ((2, 2, 0, [(4, 6)]), (3, 2, 1, [None, (5, 7)]), ((2, 3), (2, 3), 0, [(5, 7), _x.shape])):
    # the indices point into the pooled input (5x7): when the default size (H-1)s - 2p + k differs, give output_size
    _pooled, _idx = F.max_pool2d(_x if _sizes[0] != (4, 6) else _x[..., :4, :6], _k, _s, _p, return_indices=True)
    for _os in _sizes:
        _want = F.max_unpool2d(_pooled, _idx, _k, _s, _p, output_size=_os)
        _got = max_unpool2d(_pooled, _idx, _k, _s, _p, output_size=_os)
        assert _got.shape == _want.shape and torch.equal(_got, _want), f"max_unpool2d(kernel_size={_k}, stride={_s}, padding={_p}, output_size={_os}) differs from F.max_unpool2d"
_nails = bed_of_nails_unpool(_x, 3)
assert _nails.shape == (2, 3, 15, 21) and torch.equal(_nails[..., ::3, ::3], _x) and _nails.abs().sum() == _x.abs().sum(), "bed_of_nails_unpool: each value at the top-left of its block, zeros elsewhere"
# differentiable: gradients flow back by autograd
_leaf = _x.clone().requires_grad_()
bilinear_upsample(_leaf, scale_factor=2).sum().backward()
assert _leaf.grad is not None and torch.allclose(_leaf.grad.sum(), torch.tensor(4.0 * _x.numel(), dtype=torch.float64)), "bilinear_upsample: every input value spreads total weight s_h * s_w"
print("upsampling ✓")

# %% [markdown]
# The five upsamplers on a 4×4 grid of numbers (×2) and on a real photograph (×4 from a 32×32 crop):
# nearest gives blocks, bed of nails and max unpooling give sparse maps that a following convolution must
# fill, bilinear is smooth, bicubic is sharper and overshoots at edges.

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np

_grid = torch.tensor([[1.0, 2, 6, 3], [3, 5, 2, 1], [1, 2, 2, 1], [7, 3, 4, 8]])[None, None]
_pooled, _idx = F.max_pool2d(F.interpolate(_grid, scale_factor=2, mode="nearest") + torch.rand(1, 1, 8, 8, generator=_gen) * 0.1, 2, return_indices=True)
_results = {"nearest": nearest_upsample(_grid, scale_factor=2), "bed of nails": bed_of_nails_unpool(_grid, 2),
            "max unpooling (to the maxima\nof an earlier 8×8 map)": max_unpool2d(_grid, _idx, 2), "bilinear": bilinear_upsample(_grid, scale_factor=2),
            "bicubic": bicubic_upsample(_grid, scale_factor=2)}
fig, axes = plt.subplots(2, 3, figsize=(6.8, 4.9), layout="constrained")
for ax, (title, grid) in zip(axes.flat, [("input", _grid)] + list(_results.items())):
    values = grid[0, 0]
    ax.imshow(values, cmap="viridis", vmin=-1, vmax=9)
    for (r, c), v in np.ndenumerate(values.numpy()):
        ax.text(c, r, f"{v:.1f}".rstrip("0").rstrip("."), ha="center", va="center", fontsize=6 if len(values) > 4 else 9, color="white")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% tags=["hide-input"]
from skimage import data as skimage_data

_photo = torch.from_numpy(skimage_data.astronaut()[30:94:2, 170:234:2].copy()).permute(2, 0, 1)[None].double() / 255  # a 32x32 crop of the face
_pooled, _idx = F.max_pool2d(bilinear_upsample(_photo, scale_factor=4), 4, return_indices=True)
_shown = {"input 32×32": _photo, "nearest ×4": nearest_upsample(_photo, scale_factor=4),
          "bed of nails ×4": bed_of_nails_unpool(_photo, 4), "max unpooling ×4": max_unpool2d(_pooled, _idx, 4),
          "bilinear ×4": bilinear_upsample(_photo, scale_factor=4), "bicubic ×4": bicubic_upsample(_photo, scale_factor=4)}
fig, axes = plt.subplots(2, 3, figsize=(6.8, 4.9), layout="constrained")
for ax, (title, image) in zip(axes.flat, _shown.items()):
    ax.imshow(image[0].permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Part 2 — Transposed convolution
#
# A learnable upsampler: each input value scales a copy of the kernel, and the copies are **added** into
# the output at a step of `stride`. In 1-D with input $(a, b)$, kernel $(x, y, z)$ and stride 2, the copies
# $(ax, ay, az)$ and $(bx, by, bz)$ start 2 apart and overlap in one place:
# $(ax,\ ay,\ az + bx,\ by,\ bz)$.
#
# `conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0)` is
# `F.conv_transpose2d` with `groups=1`, `dilation=1`: `input` `Tensor[N, C_in, H, W]`, `weight`
# `Tensor[C_in, C_out, k_h, k_w]` (note the order: input channels first), `bias` `Tensor[C_out]` or `None`;
# `stride`, `padding`, `output_padding` an `int` or a pair. Output value at $(o, y, x)$, with the "full"
# output before cropping:
#
# $$\text{full}[n, o, i s_h + u, j s_w + v] \mathrel{+}= \sum_c \text{input}[n, c, i, j]\ \text{weight}[c, o, u, v],$$
#
# then the output is the window of the full output that starts $p$ rows/columns in (`padding` $p$) and is
# `output_padding` rows/columns longer at the bottom/right than cropping $p$ from both ends would give: those extra
# rows are rows of the full output where it has them, and zeros beyond it (pad the full output with `output_padding`
# zeros at the bottom/right, then crop $p$ from the top/left and keep $H_\text{out}$ rows). So
# $H_\text{out} = (H - 1)\,s_h - 2p_h + k_h + \text{output\_padding}_h$ ($\text{output\_padding} < s$ or
# $< $ dilation in PyTorch; the tests keep it below the stride), plus the bias. One way: a matrix product
# gives all $C_\text{out} k_h k_w$ kernel copies of every input pixel at once, and `F.fold` adds them into
# place (`F.fold` is the adjoint of `F.unfold`; both are allowed). No loop over pixels; a loop over the
# $k_h k_w$ kernel taps is fine. A faster way: output row $s_h y + r$ only receives the kernel rows
# $r, r + s_h, r + 2s_h, \dots$, so each of the $s_h s_w$ output *phases* is an ordinary convolution (`F.conv2d`, allowed)
# of the input with every $s$-th kernel tap, flipped; interleave the phases.
#
# **Convolution as a matrix.** A convolution is linear in its input, so for one image of size
# $C_\text{in} \times H \times W$ there is a matrix $C$ with
# $\operatorname{vec}(\operatorname{conv}(x)) = C \operatorname{vec}(x)$ (`vec` = `reshape(-1)`, channel-major as PyTorch stores it).
# `conv2d_matrix(weight, input_size, stride=1, padding=0)` returns $C$:
# `Tensor[C_out H_out W_out, C_in H W]` in `weight`'s dtype, for `weight` `Tensor[C_out, C_in, k_h, k_w]`
# (bias-free `F.conv2d`), `input_size` $(H, W)$. Its transpose is the transposed convolution with the
# **same** weight tensor: $C^\top \operatorname{vec}(y)$ = `F.conv_transpose2d(y, weight, stride=stride, padding=padding)`
# (plus the `output_padding` that brings the size back to $H \times W$): that is where the name comes from,
# and why it is the gradient of a convolution. Hint: column $j$ of $C$ is the convolution of the $j$-th unit
# image.

# %% nbgrader={"grade": false, "grade_id": "transposed_conv", "locked": false, "schema_version": 3, "solution": true}
def _pair2(value):
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Tensor[N, C_in, H, W], weight Tensor[C_in, C_out, kH, kW] -> Tensor[N, C_out, H_out, W_out], == F.conv_transpose2d."""
    ### BEGIN SOLUTION
    (s_h, s_w), (p_h, p_w), (o_h, o_w) = _pair2(stride), _pair2(padding), _pair2(output_padding)
    n, c_in, h, w = input.shape
    _, c_out, k_h, k_w = weight.shape
    full_h, full_w = (h - 1) * s_h + k_h, (w - 1) * s_w + k_w
    # Output row s_h y + r receives kernel rows r, r + s_h, r + 2 s_h, ... from input rows y, y - 1, y - 2, ...: each of the
    # s_h s_w output phases (r, t) is an ordinary convolution of the input with the taps weight[..., r::s_h, t::s_w], flipped
    # (F.conv2d correlates). Zero taps fill the kernel up to q_h x q_w taps per phase.
    q_h, q_w = -(-k_h // s_h), -(-k_w // s_w)
    taps = F.pad(weight, (0, q_w * s_w - k_w, 0, q_h * s_h - k_h)).reshape(c_in, c_out, q_h, s_h, q_w, s_w)
    taps = taps.flip(2, 4).permute(1, 3, 5, 0, 2, 4).reshape(c_out * s_h * s_w, c_in, q_h, q_w)  # [(o, r, t), c, q_h, q_w]
    phases = F.conv2d(input, taps, padding=(q_h - 1, q_w - 1))  # [N, C_out*s_h*s_w, H + q_h - 1, W + q_w - 1]
    rows, cols = phases.shape[-2:]
    # interleave the phases: full[n, o, s_h y + r, s_w x + t] = phases[n, (o, r, t), y, x]; the zero taps' rows cut off
    full = phases.reshape(n, c_out, s_h, s_w, rows, cols).permute(0, 1, 4, 2, 5, 3).reshape(n, c_out, rows * s_h, cols * s_w)
    full = full[..., :full_h, :full_w]
    full = F.pad(full, (0, o_w, 0, o_h))
    out_h, out_w = full_h - 2 * p_h + o_h, full_w - 2 * p_w + o_w
    out = full[..., p_h:p_h + out_h, p_w:p_w + out_w]
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)
    ### END SOLUTION


def conv2d_matrix(weight, input_size, stride=1, padding=0):
    """weight Tensor[C_out, C_in, kH, kW], input_size (H, W) -> C Tensor[C_out*H_out*W_out, C_in*H*W] with
    conv2d(x).reshape(-1) == C @ x.reshape(-1) for one image x Tensor[C_in, H, W]."""
    ### BEGIN SOLUTION
    h, w = _pair2(input_size)
    c_in = weight.shape[1]
    units = torch.eye(c_in * h * w, dtype=weight.dtype, device=weight.device).reshape(-1, c_in, h, w)
    columns = F.conv2d(units, weight, stride=stride, padding=padding)  # column j: the convolution of unit image j
    return columns.reshape(c_in * h * w, -1).t().contiguous()
    ### END SOLUTION

# %% tags=["check"]
# the 1-D example of the text, as a 2-D input of height 1
_a, _b, _kx, _ky, _kz = 2.0, 3.0, 1.0, 10.0, 100.0
_out = conv_transpose2d(torch.tensor([[[[_a, _b]]]]), torch.tensor([[[[_kx, _ky, _kz]]]]), stride=(1, 2))
assert torch.equal(_out, torch.tensor([[[[_a * _kx, _a * _ky, _a * _kz + _b * _kx, _b * _ky, _b * _kz]]]])), f"the 1-D example: got {_out.flatten().tolist()}"
_x = torch.randn(2, 3, 5, 6, generator=_gen, dtype=torch.float64)
for _k, _s, _p, _op in (((3, 3), 1, 0, 0), ((3, 3), 2, 1, 1), ((2, 4), (2, 3), (0, 1), (1, 2)), ((4, 4), 2, 1, 0), ((1, 1), 1, 0, 0)):
    _w = torch.randn(3, 4, *_k, generator=_gen, dtype=torch.float64)
    _bias = torch.randn(4, generator=_gen, dtype=torch.float64)
    for _bb in (None, _bias):
        _want = F.conv_transpose2d(_x, _w, _bb, _s, _p, _op)
        _got = conv_transpose2d(_x, _w, _bb, _s, _p, _op)
        assert _got.shape == _want.shape, f"conv_transpose2d(kernel {_k}, stride={_s}, padding={_p}, output_padding={_op}): shape {tuple(_got.shape)}, expected {tuple(_want.shape)}"
        assert torch.allclose(_got, _want, rtol=1e-9, atol=1e-12), f"conv_transpose2d(kernel {_k}, stride={_s}, padding={_p}, output_padding={_op}) differs from F.conv_transpose2d"
_w = torch.randn(4, 3, 3, 2, generator=_gen, dtype=torch.float64)
for _s, _p in ((1, 0), (2, 1), ((2, 1), (1, 0))):
    _C = conv2d_matrix(_w, (5, 6), _s, _p)
    _y = F.conv2d(_x[0:1], _w, stride=_s, padding=_p)
    assert _C.shape == (_y.numel(), _x[0].numel()), f"conv2d_matrix(stride={_s}, padding={_p}): shape {tuple(_C.shape)}, expected {(_y.numel(), _x[0].numel())}"
    assert torch.allclose(_C @ _x[0].reshape(-1), _y.reshape(-1)), f"conv2d_matrix(stride={_s}, padding={_p}): C @ x is not the convolution"
    _g = torch.randn(_y.shape, generator=_gen, dtype=torch.float64)
    _op = [5 - F.conv_transpose2d(_g, _w, stride=_s, padding=_p).shape[-2], 6 - F.conv_transpose2d(_g, _w, stride=_s, padding=_p).shape[-1]]
    assert torch.allclose(_C.t() @ _g.reshape(-1), F.conv_transpose2d(_g, _w, stride=_s, padding=_p, output_padding=_op).reshape(-1)), "C.T @ y must be the transposed convolution"
print("transposed convolution ✓")

# %% [markdown]
# The matrix of a 3×3 convolution (one channel) of a 4×4 image, and of its transpose: each row of $C$ holds
# the kernel's 9 weights at the pixels one output reads; each row of $C^\top$ holds the weights one input
# pixel sends to the outputs. And the **checkerboard**: a stride-2 transposed convolution with a 3×3 kernel of
# ones, applied to an image of ones, adds 1, 2 or 4 kernel copies at different output pixels — an uneven
# pattern that a network must learn to cancel (kernels whose size is a multiple of the stride avoid it).

# %% tags=["hide-input"]
_k = torch.arange(1.0, 10.0).reshape(1, 1, 3, 3)
_C = conv2d_matrix(_k, (4, 4), padding=1)
fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.6), layout="constrained")
axes[0].imshow(_C, cmap="viridis")
axes[0].set_title("C: 16 outputs × 16 inputs", fontsize=9)
axes[1].imshow(_C.t(), cmap="viridis")
axes[1].set_title("Cᵀ: the transposed convolution", fontsize=9)
_check = conv_transpose2d(torch.ones(1, 1, 6, 6), torch.ones(1, 1, 3, 3), stride=2)
axes[2].imshow(_check[0, 0], cmap="magma")
axes[2].set_title("stride 2, kernel 3×3 of ones", fontsize=9)
for (r, c), v in np.ndenumerate(_check[0, 0].numpy()):
    axes[2].text(c, r, f"{v:.0f}", ha="center", va="center", fontsize=5, color="grey")
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([])
plt.show()

# %% [markdown]
# ## Part 3 — Semantic segmentation: FCN and mIoU
#
# **Mean IoU.** For class $c$, over all evaluated pixels,
# $\mathrm{IoU}_c = \frac{|\{\text{pred} = c\} \cap \{\text{target} = c\}|}{|\{\text{pred} = c\} \cup \{\text{target} = c\}|}$,
# and the mIoU averages it over the classes. Computed from the **confusion matrix**
# $M[t, p]$ = number of pixels with target $t$ predicted as $p$ ($K \times K$, one `torch.bincount` of
# $t K + p$): the intersection of class $c$ is $M[c, c]$, its union the row sum plus the column sum minus
# $M[c, c]$.
#
# `mean_iou(pred, target, num_classes, ignore_index=255)`: `pred` and `target` integer tensors of the same
# shape (`[H, W]` or `[N, H, W]`, any integer dtype — `uint8` maps of 20 classes too, so compute $tK + p$ in
# `int64`, not in the maps' own dtype, where it overflows; all images count together, as one big image) whose
# values are class ids $0..K-1$ (and, in `target` only, `ignore_index`), returns a 0-dimensional **float64** tensor.
#
# - pixels whose **target** is `ignore_index` are left out entirely (whatever their prediction); with
#   `ignore_index=None` every pixel counts;
# - a class that appears in **neither** the prediction nor the target (union 0) is **left out of the mean**
#   (it is not an IoU of 0, nor of 1);
# - if no class is left (no pixels), the result is `nan`;
# - `pred` and `target` are left as they were (mask out the ignored pixels in a copy, not in place).
#
# **FCN.** `FCN(num_classes)` is a fully convolutional network: `forward(images)` maps
# `Tensor[B, 3, H, W]` (values in $[0, 1]$; $H$ and $W$ multiples of 16, not necessarily equal) to logits
# `Tensor[B, num_classes, H, W]`. Downsample to a small map with strided convolutions (or pooling), then
# upsample back — transposed convolutions, or `F.interpolate` followed by a convolution — and add **skip
# connections** from the encoder's feature maps of the same resolution (concatenate or add), which bring
# back the detail the downsampling lost. Normalize the images inside `forward` (e.g. $(x - 0.5) / 0.25$).
# Batch normalization is welcome; in eval mode each image's output must not depend on the rest of the batch.
#
# The design matters more than it seems: with the fixed recipe, a network that is too thin, or too deep for 500
# steps, lands near the bar on one seed and well above it on another. What works (the reference, ~270k
# parameters): a stride-2 stem, three more stride-2 stages of two 3×3 conv–BN–ReLU each (widths 16, 32, 64, 64),
# and a decoder that doubles the resolution three times (2×2 transposed convolutions) and concatenates the
# encoder map of the same size before a 3×3 conv–BN–ReLU; logits at half resolution, upsampled bilinearly. The
# book's chapter 15 page "An FCN on the shapes images, and mIoU" trains a similar one. Try `train_segmenter(..., seed=1)` too.
#
# **The grader trains it** (12 of the 20 points) with `train_segmenter` below: cross-entropy, AdamW (weight
# decay $10^{-4}$), one-cycle learning rate up to $3 \cdot 10^{-3}$, 500 steps of 8 rendered 128×128 shapes
# images (1–4 objects), on one CPU thread (the reference FCN: about 0.09 s per step, 500 steps ≈ 45 s on one
# thread of a 2-core machine; yours must finish within 200 s, so keep it small). Then it sends 48 new images it generated
# itself, takes your predictions (`argmax` of the logits) and computes the mIoU over the 4 classes (background
# included) in its own process. The bar is **mIoU ≥ 0.65**; the reference reaches 0.78–0.89 on three
# seeds. With the trained weights shuffled, and with the weights as they were before training, the mIoU must be at
# least 0.2 lower, or the test gives no points: the predictions must come from what the network learned.
#
# **The grader renames the classes.** Its training images and their targets are rendered in the grader, and the
# class ids of its training targets are renamed by a secret permutation (never the identity: circles may be
# labelled 3 and triangles 1, say); the evaluation's ground truth is renamed the same way. A network that learns
# from its training data predicts the renamed ids and scores as it would on the true ones; code that decides the
# class by itself (from colours or shape measurements, or a fixed table) does not. So nothing in your model may
# depend on which shape a class id stands for: take the classes from the training targets only.

# %% nbgrader={"grade": false, "grade_id": "fcn", "locked": false, "schema_version": 3, "solution": true}
def mean_iou(pred, target, num_classes, ignore_index=255):
    """Mean IoU over the classes present in pred or target (pixels with target == ignore_index left out): Tensor[] float64."""
    ### BEGIN SOLUTION
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    confusion = torch.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    confusion = confusion[: num_classes * num_classes].reshape(num_classes, num_classes).double()
    intersection = confusion.diagonal()
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    if not bool(present.any()):
        return torch.tensor(float("nan"), dtype=torch.float64, device=pred.device)
    return (intersection[present] / union[present]).mean()
    ### END SOLUTION


class FCN(nn.Module):
    """Encoder-decoder with skip connections: Tensor[B, 3, H, W] -> logits Tensor[B, num_classes, H, W]."""

    def __init__(self, num_classes, width=16):
        super().__init__()
        ### BEGIN SOLUTION
        def conv_bn_relu(channels_in, channels_out, step=1):
            """3x3 convolution (stride ``step``), batch norm, ReLU."""
            return nn.Sequential(nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=step, padding=1, bias=False),
                                 nn.BatchNorm2d(channels_out), nn.ReLU(inplace=True))

        w = width
        self.stem = nn.Sequential(conv_bn_relu(3, w, 2), conv_bn_relu(w, w))                   # 1/2
        self.down1 = nn.Sequential(conv_bn_relu(w, 2 * w, 2), conv_bn_relu(2 * w, 2 * w))      # 1/4
        self.down2 = nn.Sequential(conv_bn_relu(2 * w, 4 * w, 2), conv_bn_relu(4 * w, 4 * w))  # 1/8
        self.down3 = nn.Sequential(conv_bn_relu(4 * w, 4 * w, 2), conv_bn_relu(4 * w, 4 * w))  # 1/16
        self.up3 = nn.ConvTranspose2d(4 * w, 4 * w, 2, stride=2)
        self.fuse3 = conv_bn_relu(8 * w, 4 * w)
        self.up2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, stride=2)
        self.fuse2 = conv_bn_relu(4 * w, 2 * w)
        self.up1 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.fuse1 = conv_bn_relu(2 * w, w)
        self.classifier = nn.Conv2d(w, num_classes, 1)
        ### END SOLUTION

    def forward(self, images):
        ### BEGIN SOLUTION
        x = (images - 0.5) / 0.25
        half = self.stem(x)
        quarter = self.down1(half)
        eighth = self.down2(quarter)
        sixteenth = self.down3(eighth)
        y = self.fuse3(torch.cat([self.up3(sixteenth), eighth], dim=1))
        y = self.fuse2(torch.cat([self.up2(y), quarter], dim=1))
        y = self.fuse1(torch.cat([self.up1(y), half], dim=1))
        return F.interpolate(self.classifier(y), size=images.shape[-2:], mode="bilinear", align_corners=False)
        ### END SOLUTION

# %% tags=["check"]
_pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
_target = torch.tensor([[0, 1, 2], [2, 255, 0]])
# class 0: 2/2, class 1: 1/2, class 2: 1/2 (the ignored pixel does not count); class 3 absent: left out
assert torch.isclose(mean_iou(_pred, _target, 4), torch.tensor((1 + 0.5 + 0.5) / 3, dtype=torch.float64)), f"mean_iou: got {mean_iou(_pred, _target, 4)}"
assert mean_iou(_pred, _target, 4).dtype == torch.float64 and mean_iou(_pred, _target, 4).ndim == 0, "mean_iou returns a 0-dim float64 tensor"
assert torch.isclose(mean_iou(_pred, _target.clamp(max=3), 4, ignore_index=None), torch.tensor((1 + 0.5 + 1 / 3 + 0) / 4, dtype=torch.float64)), "ignore_index=None: every pixel counts"
assert torch.isnan(mean_iou(_pred[:0], _target[:0], 4)), "no pixels: nan"
_model = FCN(len(CLASSES))
_logits = _model(torch.rand(2, 3, 96, 128))
assert _logits.shape == (2, len(CLASSES), 96, 128), f"FCN: expected logits [2, 4, 96, 128], got {tuple(_logits.shape)}"
_model.eval()
with torch.no_grad():
    _batch = torch.rand(3, 3, 64, 80)
    assert torch.allclose(_model(_batch)[:1], _model(_batch[:1]), atol=1e-5), "FCN in eval mode: an image's output must not depend on the rest of the batch"
print(f"mean_iou and FCN ✓  ({sum(p.numel() for p in _model.parameters()):,} parameters)")

# %% [markdown]
# ### Training
#
# The grader's recipe (`FCN_STEPS = 500` on a CPU; on a GPU 2000, for better maps to look at — the grader's number
# is the CPU one) and its metric, on 48 validation images.

# %%
import time

from tqdm.auto import tqdm

from lecture_utils.viz import plot_losses, show_image

if device.type == "cpu":
    torch.set_num_threads(1)  # as the grader: your printed training time compares with its budget
FCN_STEPS = 500 if device.type == "cpu" else 2000


def semantic_batches(n_images, batch_size, seed, image_size=128):
    """Lists of (images Tensor[B, 3, H, W], semantic maps Tensor[B, H, W]) from rendered shapes images."""
    data = ShapesDataset(n_images, image_size, seed=seed, min_objects=1, max_objects=4)
    items = [data[i] for i in range(n_images)]
    return [(torch.stack([im for im, _ in items[s:s + batch_size]]), torch.stack([t["semantic"] for _, t in items[s:s + batch_size]]))
            for s in range(0, n_images, batch_size)]


def train_segmenter(model, steps=FCN_STEPS, batch_size=8, lr=3e-3, seed=0):
    """The grader's recipe: cross-entropy, AdamW, one-cycle learning rate, 512 rendered 128x128 images."""
    torch.manual_seed(seed)
    batches = semantic_batches(512, batch_size, seed + 200)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = {"loss": []}
    model.train()
    for step in tqdm(range(steps), desc="training the FCN"):
        images, semantic = batches[step % len(batches)]
        loss = F.cross_entropy(model(images.to(device)), semantic.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        history["loss"].append(float(loss.detach()))
    return history


def segment(model, images, batch_size=16):
    """Predicted class maps Tensor[N, H, W] (argmax of the logits)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[s:s + batch_size].to(device)).argmax(1).cpu() for s in range(0, len(images), batch_size)])


torch.manual_seed(0)
fcn = FCN(len(CLASSES)).to(device)
start = time.perf_counter()
fcn_history = train_segmenter(fcn)
print(f"{FCN_STEPS} steps in {time.perf_counter() - start:.0f} s")
(val_images, val_semantic), = semantic_batches(48, 48, seed=3)
val_pred = segment(fcn, val_images)
print(f"validation (48 new images): mIoU {float(mean_iou(val_pred, val_semantic, len(CLASSES))):.3f} (the grader needs >= 0.65)")
plot_losses(fcn_history, title="FCN: cross-entropy")
plt.show()

# %% tags=["hide-input"]
from matplotlib.colors import ListedColormap

CLASS_COLOURS = ListedColormap(["#222222", "#e41a1c", "#377eb8", "#ffbf00"])
fig, axes = plt.subplots(3, 4, figsize=(6.8, 5.4), layout="constrained")
for col in range(4):
    show_image(val_images[col], axes[0, col])
    axes[1, col].imshow(val_semantic[col], cmap=CLASS_COLOURS, vmin=0, vmax=3, interpolation="nearest")
    axes[2, col].imshow(val_pred[col], cmap=CLASS_COLOURS, vmin=0, vmax=3, interpolation="nearest")
    for row in range(3):
        axes[row, col].axis("off")
for row, title in enumerate(("image", "ground truth", "FCN")):
    axes[row, 0].set_title(title, fontsize=9, loc="left")
plt.show()

# %% [markdown]
# ## Part 4 — Mask R-CNN
#
# Mask R-CNN is Faster R-CNN plus a third head: for every detected box it reads RoI Align features
# (14×14 here) and predicts a small **mask** (28×28) inside the box, one per class. You write the mask branch
# and its training targets; the box part (backbone, RPN, box head) is torchvision's.
#
# **`mask_iou(masks1, masks2)`**: `masks1` `Tensor[N, H, W]`, `masks2` `Tensor[M, H, W]` (bool or 0/1 of
# any dtype) → `Tensor[N, M]` float32, the IoU of every pair, as pycocotools' `mask.iou` computes it for
# non-crowd masks: a pair whose union is empty has IoU 0. Vectorized: flatten the masks and count all
# intersections with one matrix product — no Python loop over masks.
#
# **`project_masks_on_boxes(gt_masks, boxes, matched_idxs, M)`** (as torchvision's, in
# `roi_heads.py`): the training target of each positive proposal is its matched ground-truth mask cropped
# to the **proposal's** box and resized to $M \times M$ — exactly RoI Align (`torchvision.ops.roi_align`,
# `spatial_scale=1`, `sampling_ratio=-1`, `aligned=False`) of the float mask of object
# `matched_idxs[k]` over `boxes[k]`. `gt_masks` `Tensor[G, H, W]` (uint8 or float), `boxes` `Tensor[K, 4]`,
# `matched_idxs` `Tensor[K]` int64 → `Tensor[K, M, M]` in `boxes`' dtype, values in $[0, 1]$ (soft at the
# edges).
#
# **`MaskHead(in_channels, num_classes, hidden_channels=256, num_convs=4)`**: `num_convs` 3×3
# convolutions (padding 1, each followed by ReLU) with `hidden_channels` channels, a 2×2 transposed
# convolution of stride 2 (+ ReLU) that doubles the resolution, and a 1×1 convolution to `num_classes`
# channels: RoI features `Tensor[K, in_channels, S, S]` → mask logits `Tensor[K, num_classes, 2S, 2S]`. Keep
# PyTorch's default initialization (or any sensible one).
#
# **`maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs)`** (as torchvision's):
# per image $i$, `proposals[i]` `Tensor[K_i, 4]` positive proposals, `gt_masks[i]` `Tensor[G_i, H_i, W_i]`,
# `gt_labels[i]` `Tensor[G_i]`, `mask_matched_idxs[i]` `Tensor[K_i]` (which object each proposal matched);
# `mask_logits` `Tensor[sum K_i, C, M, M]` in the images' order. Each proposal's target is
# `project_masks_on_boxes(...)` of its object (with $M$ = the logits' size), and its loss is the binary
# cross-entropy **of the channel of its object's class only** (the other $C - 1$ masks get no gradient:
# classes do not compete for a pixel, the box head has already chosen the class), averaged over all
# $\sum K_i \cdot M^2$ pixels. Without any positive proposal the loss is `mask_logits.sum() * 0` (a zero
# that still has a gradient).
#
# **`paste_masks_in_image(masks, boxes, img_shape, padding=1)`** (as torchvision's, in `transform.py`):
# at test time a mask of $M \times M$ probabilities `masks` `Tensor[K, 1, M, M]` goes back into the image
# `img_shape` $(H, W)$ inside its box (`boxes` `Tensor[K, 4]`) → `Tensor[K, 1, H, W]`, zero outside the box.
# torchvision's steps, which you reproduce exactly:
#
# 1. pad each mask with `padding` zeros on every side ($M' = M + 2p$) and scale each box about its centre by
#    $M' / M$ (so the padded mask still covers it, and the mask fades out smoothly at the box border);
# 2. round the scaled box **towards zero** to integers (`.to(torch.int64)`): $(x_0, y_0, x_1, y_1)$;
# 3. resize the padded mask with **bilinear** interpolation (`align_corners=False`; you may use
#    `F.interpolate` now) to $h \times w$ with $w = \max(x_1 - x_0 + 1, 1)$, $h = \max(y_1 - y_0 + 1, 1)$
#    (this "+1" is torchvision's convention: the box covers pixels $x_0..x_1$ inclusive);
# 4. copy it into a zero image at rows $y_0..y_1$, columns $x_0..x_1$, cut at the image borders.
#
# Boxes overlap the image (a Mask R-CNN clips its boxes to the image; torchvision's version fails on a box that
# lies entirely right of or below it). A loop over the masks is fine here (torchvision loops too).

# %% nbgrader={"grade": false, "grade_id": "mask_rcnn", "locked": false, "schema_version": 3, "solution": true}
def mask_iou(masks1, masks2):
    """Tensor[N, H, W], Tensor[M, H, W] -> Tensor[N, M] float32 IoU (0 where the union is empty)."""
    ### BEGIN SOLUTION
    a = (masks1 != 0).flatten(1).float()
    b = (masks2 != 0).flatten(1).float()
    intersection = a @ b.t()
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))
    ### END SOLUTION


def project_masks_on_boxes(gt_masks, boxes, matched_idxs, M):
    """gt_masks Tensor[G, H, W], boxes Tensor[K, 4], matched_idxs Tensor[K] -> Tensor[K, M, M]: each matched mask cropped to its box."""
    ### BEGIN SOLUTION
    rois = torch.cat([matched_idxs.to(boxes)[:, None], boxes], dim=1)
    return roi_align(gt_masks[:, None].to(rois), rois, (M, M), spatial_scale=1.0)[:, 0]
    ### END SOLUTION


class MaskHead(nn.Module):
    """RoI features Tensor[K, in_channels, S, S] -> mask logits Tensor[K, num_classes, 2S, 2S]."""

    def __init__(self, in_channels, num_classes, hidden_channels=256, num_convs=4):
        super().__init__()
        ### BEGIN SOLUTION
        layers = []
        for i in range(num_convs):
            layers += [nn.Conv2d(in_channels if i == 0 else hidden_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True)]
        last = hidden_channels if num_convs else in_channels
        layers += [nn.ConvTranspose2d(last, hidden_channels, 2, stride=2), nn.ReLU(inplace=True), nn.Conv2d(hidden_channels, num_classes, 1)]
        self.layers = nn.Sequential(*layers)
        ### END SOLUTION

    def forward(self, features):
        ### BEGIN SOLUTION
        return self.layers(features)
        ### END SOLUTION


def maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs):
    """Binary cross-entropy of each positive proposal's mask of its object's class (a scalar tensor)."""
    ### BEGIN SOLUTION
    size = mask_logits.shape[-1]
    labels = torch.cat([labels_i[idx] for labels_i, idx in zip(gt_labels, mask_matched_idxs)])
    targets = torch.cat([project_masks_on_boxes(m, p, i, size) for m, p, i in zip(gt_masks, proposals, mask_matched_idxs)])
    if targets.numel() == 0:
        return mask_logits.sum() * 0
    own_class_logits = mask_logits[torch.arange(len(labels), device=labels.device), labels]  # [K, M, M]
    return F.binary_cross_entropy_with_logits(own_class_logits, targets)
    ### END SOLUTION


def paste_masks_in_image(masks, boxes, img_shape, padding=1):
    """masks Tensor[K, 1, M, M], boxes Tensor[K, 4], img_shape (H, W) -> Tensor[K, 1, H, W], each mask pasted in its box."""
    ### BEGIN SOLUTION
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    m = masks.shape[-1]
    padded = F.pad(masks, (padding,) * 4)
    scale = (m + 2 * padding) / m
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]) * 0.5 * scale
    expanded = torch.cat([centre - half, centre + half], dim=1).to(torch.int64)
    out = masks.new_zeros((len(masks), 1, im_h, im_w))
    for k, (x0, y0, x1, y1) in enumerate(expanded.tolist()):
        w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)
        resized = F.interpolate(padded[k:k + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        top, bottom, left, right = max(y0, 0), min(y1 + 1, im_h), max(x0, 0), min(x1 + 1, im_w)
        if bottom > top and right > left:
            out[k, 0, top:bottom, left:right] = resized[top - y0:bottom - y0, left - x0:right - x0]
    return out
    ### END SOLUTION

# %% tags=["check"]
import numpy as np
from pycocotools import mask as coco_mask
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection import transform as tv_transform

_gen = torch.Generator().manual_seed(1)
_sample = ShapesDataset(4, (96, 128), seed=5, min_objects=2, max_objects=4)
_target = _sample[0][1]
_masks = _target["masks"]
_others = torch.cat([_sample[1][1]["masks"], torch.zeros(1, 96, 128, dtype=torch.uint8)])  # the last one is empty
_rle = lambda m: coco_mask.encode(np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8)))
_want = torch.from_numpy(coco_mask.iou(_rle(_masks), _rle(_others), [0] * len(_others))).float()
_got = mask_iou(_masks, _others)
assert _got.shape == _want.shape and _got.dtype == torch.float32, f"mask_iou: expected Tensor{list(_want.shape)} float32, got {tuple(_got.shape)} {_got.dtype}"
assert torch.allclose(_got, _want, atol=1e-6), "mask_iou differs from pycocotools' mask.iou"
assert torch.equal(mask_iou(_others[-1:], _others[-1:]), torch.zeros(1, 1)), "two empty masks: IoU 0 (as pycocotools)"
assert mask_iou(_masks[:0], _others).shape == (0, len(_others)), "no masks: Tensor[0, M]"
_boxes = _target["boxes"] + torch.tensor([-3.0, 2.5, 4.0, -1.5])  # proposals: the objects' boxes, perturbed
_idx = torch.arange(len(_boxes)).flip(0) % len(_masks)
for _M in (28, 14):
    _want = tv_roi_heads.project_masks_on_boxes(_masks, _boxes, _idx, _M)
    assert torch.allclose(project_masks_on_boxes(_masks, _boxes, _idx, _M), _want, atol=1e-6), f"project_masks_on_boxes(M={_M}) differs from torchvision's"
_head = MaskHead(16, 4, hidden_channels=8, num_convs=2)
_logits = _head(torch.randn(5, 16, 14, 10))
assert _logits.shape == (5, 4, 28, 20), f"MaskHead: expected logits [5, 4, 28, 20], got {tuple(_logits.shape)}"
assert sum(isinstance(m, nn.ConvTranspose2d) for m in _head.modules()) == 1 and sum(isinstance(m, nn.Conv2d) for m in _head.modules()) == 3, \
    "MaskHead(16, 4, hidden_channels=8, num_convs=2): two 3x3 convolutions, one 2x2 transposed convolution, one 1x1 convolution"
_logits = torch.randn(len(_boxes) + 2, 4, 28, 28, generator=_gen)
_props = [_boxes, _sample[1][1]["boxes"][:2]]
_gts, _labels, _matched = [_masks, _sample[1][1]["masks"]], [_target["labels"], _sample[1][1]["labels"]], [_idx, torch.tensor([1, 0])]
assert torch.allclose(maskrcnn_loss(_logits, _props, _gts, _labels, _matched), tv_roi_heads.maskrcnn_loss(_logits, _props, _gts, _labels, _matched)), "maskrcnn_loss differs from torchvision's"
_leaf = _logits.clone().requires_grad_()
maskrcnn_loss(_leaf, _props, _gts, _labels, _matched).backward()
_chosen = torch.cat(_labels)[0:0].new_tensor([int(_target["labels"][i]) for i in _idx] + [int(_sample[1][1]["labels"][i]) for i in (1, 0)])
assert (_leaf.grad.abs().sum((2, 3)) > 0).sum(1).eq(1).all() and torch.equal(_leaf.grad.abs().sum((2, 3)).argmax(1), _chosen), "maskrcnn_loss: only the channel of each proposal's class gets a gradient"
_empty = [torch.zeros(0, 4)], [_masks], [_target["labels"]], [torch.zeros(0, dtype=torch.int64)]
assert maskrcnn_loss(torch.zeros(0, 4, 28, 28), *_empty).item() == 0, "no positive proposals: a zero loss"
_probs = torch.rand(4, 1, 28, 28, generator=_gen)
_pboxes = torch.tensor([[10.0, 12.0, 50.0, 40.0], [-5.0, 60.0, 30.5, 100.0], [100.2, 3.7, 127.9, 20.1], [60.0, 50.0, 60.4, 50.2]])
_want = tv_transform.paste_masks_in_image(_probs, _pboxes, (96, 128))
_got = paste_masks_in_image(_probs, _pboxes, (96, 128))
assert _got.shape == _want.shape and torch.allclose(_got, _want, atol=1e-6), "paste_masks_in_image differs from torchvision's"
assert paste_masks_in_image(_probs[:0], _pboxes[:0], (96, 128)).shape == (0, 1, 96, 128), "no masks: Tensor[0, 1, H, W]"
print("Mask R-CNN parts ✓")

# %% [markdown]
# One object's ground-truth mask, its 28×28 training target for a proposal that misses part of it, and a
# 28×28 mask pasted back into the image (bilinear, faded at the border by the padding):

# %% tags=["hide-input"]
_image, _t = _sample[0]
_proposal = _t["boxes"][:1] + torch.tensor([[6.0, -4.0, 8.0, 3.0]])
_crop = project_masks_on_boxes(_t["masks"], _proposal, torch.tensor([0]), 28)
_pasted = paste_masks_in_image(_crop[:, None], _proposal, _image.shape[-2:])
fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.4), layout="constrained")
show_image(_image, axes[0])
axes[0].imshow(np.ma.masked_equal(_t["masks"][0].numpy(), 0), alpha=0.5, cmap="autumn")
x0, y0, x1, y1 = _proposal[0].tolist()
axes[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="cyan"))
axes[0].set_title("ground truth, proposal", fontsize=9)
axes[1].imshow(_crop[0], cmap="gray", vmin=0, vmax=1)
axes[1].set_title("28×28 target", fontsize=9)
axes[2].imshow(_pasted[0, 0], cmap="gray", vmin=0, vmax=1)
axes[2].set_title("pasted back", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ### Mask R-CNN with your mask branch, trained
#
# The next cell (given, not graded) builds torchvision's `MaskRCNN` on the small backbone of Assignments 3–4
# (with torchvision's FPN, 64 channels) and its RPN and box head (32 sampled proposals per image, up to half of
# them positive: the positive ones are those your mask branch trains on), with `MaskHead(64, 4, hidden_channels=64,
# num_convs=2)` as the **whole** mask branch (`mask_predictor` is the identity). Inside
# `with your_mask_functions():` torchvision's Mask R-CNN calls **your** `maskrcnn_loss` in training and
# your `paste_masks_in_image` at inference (it swaps the two module-level functions it normally uses, and
# puts them back afterwards).
#
# **The grader trains it** (19 of the 35 points) with the recipe below — AdamW (weight decay $10^{-4}$),
# one-cycle learning rate up to $2 \cdot 10^{-3}$, 300 steps of 8 rendered 128×128 images with 1–3 objects,
# on one CPU thread (the reference: about 0.27 s per step, 300 steps ≈ 80 s on one thread of a 2-core machine;
# yours must finish within 240 s). Then, in its own process, it runs the trained box part on 48 new images it
# generated itself, gives your trained `MaskHead` (in eval mode) only the RoI features `[K, 64, 14, 14]` of the
# detections, takes each detection's class channel of your logits, pastes it with torchvision's
# `paste_masks_in_image` (yours is graded by its own test; they agree) and computes **COCO mask AP50**
# (pycocotools `segm`, masks thresholded at 0.5).
#
# **The grader changes the masks.** It renders the training images itself and keeps each training mask only
# inside a secret region of the object's box — its left, right, top or bottom third, or one of its four corner
# quarters (the same region for every object; the evaluation's masks are cut the same way). A head that learns
# from its training masks predicts that part of each object; a head that draws the object by a rule of its own
# (an ellipse in the box, say) matches almost none of them. So let the masks come from training only. The bar
# is **mask AP50 ≥ 0.35** on those masks; the reference reaches 0.47–0.58 over four regions (0.62–0.68 on whole
# masks, which this notebook trains on). With the mask head's trained weights shuffled (the mean of 5 shuffles)
# the mask AP50 must drop by at least 0.1, and the head as it was before training must score at least 0.05 less
# than after — the masks must come from what your head learned. The cell after training prints these numbers
# on its own validation images (whole masks).

# %% nbgrader={"grade": false, "grade_id": "mask_rcnn_model", "locked": true, "schema_version": 3, "solution": false} tags=["preamble"]
# Given, not graded (the grader builds the same model).
import contextlib
from collections import OrderedDict

import torchvision.models.detection.roi_heads as torchvision_roi_heads
import torchvision.models.detection.transform as torchvision_transform
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign


class SmallBackboneFPN(nn.Module):
    """The small CNN of Assignments 3-4 (strides 4, 8, 16) + torchvision's FPN: {"0", "1", "2"} maps of 64 channels."""

    out_channels = 64

    def __init__(self):
        super().__init__()

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.stage1 = nn.Sequential(block(3, 16, 2), block(16, 32, 2))
        self.stage2 = nn.Sequential(block(32, 64, 2), block(64, 64, 1))
        self.stage3 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))
        self.fpn = FeaturePyramidNetwork([32, 64, 128], 64)

    def forward(self, x):
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return self.fpn(OrderedDict([("0", c1), ("1", c2), ("2", self.stage3(c2))]))


def build_mask_rcnn(num_classes=len(CLASSES)):
    """torchvision's MaskRCNN on the small backbone whose whole mask branch is your MaskHead."""
    levels = ["0", "1", "2"]
    return MaskRCNN(SmallBackboneFPN(), num_classes=None, min_size=128, max_size=128, image_mean=[0.5] * 3, image_std=[0.25] * 3,
                    rpn_anchor_generator=AnchorGenerator(((16,), (32,), (64,)), ((0.5, 1.0, 2.0),) * 3),
                    rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100,
                    box_roi_pool=MultiScaleRoIAlign(levels, 7, 1), box_head=TwoMLPHead(64 * 49, 256),
                    box_predictor=FastRCNNPredictor(256, num_classes), box_batch_size_per_image=32, box_positive_fraction=0.5, box_detections_per_img=10,
                    mask_roi_pool=MultiScaleRoIAlign(levels, 14, 1), mask_head=MaskHead(64, num_classes, hidden_channels=64, num_convs=2),
                    mask_predictor=nn.Identity())


@contextlib.contextmanager
def your_mask_functions():
    """Inside the block, torchvision's Mask R-CNN calls your maskrcnn_loss and paste_masks_in_image."""
    saved = torchvision_roi_heads.maskrcnn_loss, torchvision_transform.paste_masks_in_image
    torchvision_roi_heads.maskrcnn_loss, torchvision_transform.paste_masks_in_image = maskrcnn_loss, paste_masks_in_image
    try:
        yield
    finally:
        torchvision_roi_heads.maskrcnn_loss, torchvision_transform.paste_masks_in_image = saved

# %%
import contextlib as _contextlib
import io

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

MASK_STEPS = 300 if device.type == "cpu" else 1500


def coco_mask_ap(detections, targets, size=(128, 128)):
    """COCO mask AP and AP50 (pycocotools 'segm', area 'all', 100 detections): detections with "masks" Bool[D, H, W]."""
    def rle(mask):
        code = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
        code["counts"] = code["counts"].decode()
        return code

    images = [{"id": i, "height": size[0], "width": size[1]} for i in range(len(targets))]
    anns = [{"id": 0, "image_id": i, "category_id": int(c), "segmentation": rle(m), "area": float(m.sum()), "iscrowd": 0}
            for i, t in enumerate(targets) for m, c in zip(t["masks"], t["labels"].tolist())]
    for k, ann in enumerate(anns, start=1):  # ids from 1 (pycocotools reads id 0 as "no match")
        ann["id"] = k
        ann["bbox"] = list(coco_mask.toBbox(ann["segmentation"]))
    dets = [{"image_id": i, "category_id": int(c), "segmentation": rle(m), "score": float(s)}
            for i, d in enumerate(detections) for m, s, c in zip(d["masks"], d["scores"].tolist(), d["labels"].tolist())]
    if not dets:
        return 0.0, 0.0
    with _contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, len(CLASSES))]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), "segm")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def train_mask_rcnn(model, steps=MASK_STEPS, batch_size=8, lr=2e-3, seed=0):
    """The grader's recipe: AdamW, one-cycle learning rate, 1024 rendered 128x128 shapes images (1-3 objects)."""
    torch.manual_seed(seed)
    data = ShapesDataset(1024, 128, seed=seed + 300, min_objects=1, max_objects=3)
    items = [data[i] for i in range(len(data))]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    history = {}
    model.train()
    with your_mask_functions():
        for step in tqdm(range(steps), desc="training Mask R-CNN"):
            batch = items[(step * batch_size) % len(items):][:batch_size]
            targets = [{k: t[k].to(device) for k in ("boxes", "labels", "masks")} for _, t in batch]
            losses = model([im.to(device) for im, _ in batch], targets)
            optimizer.zero_grad()
            sum(losses.values()).backward()
            optimizer.step()
            schedule.step()
            for k, v in losses.items():
                history.setdefault(k, []).append(float(v.detach()))
    return history


def detect_instances(model, images):
    """Detections with binary masks Bool[D, H, W] (probability >= 0.5), on the CPU."""
    model.eval()
    out = []
    with torch.no_grad(), your_mask_functions():
        for s in range(0, len(images), 16):
            for d in model([im.to(device) for im in images[s:s + 16]]):
                out.append({"boxes": d["boxes"].cpu(), "scores": d["scores"].cpu(), "labels": d["labels"].cpu(), "masks": d["masks"][:, 0].cpu() >= 0.5})
    return out


torch.manual_seed(0)
mask_rcnn = build_mask_rcnn().to(device)
initial_head = {k: v.clone() for k, v in mask_rcnn.roi_heads.mask_head.state_dict().items()}  # for the control below
start = time.perf_counter()
mask_history = train_mask_rcnn(mask_rcnn)
print(f"{MASK_STEPS} steps in {time.perf_counter() - start:.0f} s")
_val = ShapesDataset(48, 128, seed=4, min_objects=1, max_objects=3)
val_instances = [_val[i] for i in range(len(_val))]
instances = detect_instances(mask_rcnn, [im for im, _ in val_instances])
mask_ap, mask_ap50 = coco_mask_ap(instances, [t for _, t in val_instances])
print(f"validation (48 new images, whole masks): COCO mask AP50 {mask_ap50:.3f} (the reference: 0.62-0.68), mask AP {mask_ap:.3f}")


def shuffled_head_ap50(model, images, targets, shuffles=5):
    """The grader's control: the mean mask AP50 with the mask head's trained weights randomly permuted."""
    head = model.roi_heads.mask_head
    trained = {k: v.clone() for k, v in head.state_dict().items()}
    scores = []
    for seed in range(shuffles):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in head.parameters():
                p.copy_(p.reshape(-1)[torch.randperm(p.numel(), generator=g).to(p.device)].reshape(p.shape))
        scores.append(coco_mask_ap(detect_instances(model, images), targets)[1])
        head.load_state_dict(trained)
    return sum(scores) / len(scores)


control = shuffled_head_ap50(mask_rcnn, [im for im, _ in val_instances], [t for _, t in val_instances])
print(f"with the mask head's weights shuffled: mask AP50 {control:.3f} (mean of 5; the grader needs <= {mask_ap50 - 0.1:.3f}, "
      "0.1 below the trained model)")
trained_head = {k: v.clone() for k, v in mask_rcnn.roi_heads.mask_head.state_dict().items()}
mask_rcnn.roi_heads.mask_head.load_state_dict(initial_head)
initial_ap50 = coco_mask_ap(detect_instances(mask_rcnn, [im for im, _ in val_instances]), [t for _, t in val_instances])[1]
mask_rcnn.roi_heads.mask_head.load_state_dict(trained_head)
print(f"with the mask head's weights before training: mask AP50 {initial_ap50:.3f} (the grader needs <= {mask_ap50 - 0.05:.3f})")
plot_losses(mask_history, title="Mask R-CNN: the five losses")
plt.show()

# %% [markdown]
# Predicted masks (score ≥ 0.5, one colour per instance) next to the ground truth:

# %% tags=["hide-input"]
def instance_overlay(ax, image, masks, boxes=None, title=""):
    show_image(image, ax)
    colours = plt.get_cmap("tab10")
    overlay = np.zeros((*image.shape[-2:], 4))
    for k, m in enumerate(masks):
        overlay[m.numpy().astype(bool)] = (*colours(k % 10)[:3], 0.55)
    ax.imshow(overlay)
    if boxes is not None:
        for k, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colours(k % 10), linewidth=1))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


fig, axes = plt.subplots(2, 4, figsize=(6.8, 3.7), layout="constrained")
for col in range(4):
    image, target = val_instances[col]
    keep = instances[col]["scores"] >= 0.5
    instance_overlay(axes[0, col], image, target["masks"], title="ground truth" if col == 0 else "")
    instance_overlay(axes[1, col], image, instances[col]["masks"][keep], instances[col]["boxes"][keep], title="Mask R-CNN" if col == 0 else "")
plt.show()

# %% [markdown]
# ## Part 5 — Panoptic segmentation and keypoints
#
# **Panoptic merging.** A panoptic segmentation labels every pixel with a class and, for **things**
# (countable objects: our shapes), an instance: each pixel belongs to exactly one *segment*. Panoptic FPN
# builds it from two outputs — instance masks for the things and a semantic map for the **stuff**
# (amorphous regions: sky, road, our background) — with a simple greedy rule, which you write:
#
# `panoptic_merge(semantic, instances, thing_classes, score_threshold=0.5, overlap_threshold=0.5, stuff_area_limit=64)`
#
# - `semantic` `Tensor[H, W]` int64, a class per pixel; `instances` a dict with `"masks"` `Tensor[N, H, W]`
#   (bool, or probabilities: a pixel is in the mask when its value is ≥ 0.5), `"scores"` `Tensor[N]`,
#   `"labels"` `Tensor[N]`; `thing_classes` the classes that are things (e.g. `{1, 2, 3}`).
# - Returns `(panoptic, segments)`: `panoptic` `Tensor[H, W]` int64 of segment ids (0 = no segment) and
#   `segments` a list of dicts `{"id": int, "category_id": int, "isthing": bool, "area": int}`, one per
#   segment in the order they were made; ids are $1, 2, \dots$ in that order.
# 1. **Things first**, by decreasing score (equal scores: lower index first), skipping instances with a score
#    below `score_threshold`. An instance whose mask is empty is skipped. If more than `overlap_threshold` of its
#    mask is already taken by earlier segments (taken area / mask area $>$ threshold), it is skipped (a
#    duplicate); otherwise it gets a new id on the pixels of its mask that are still free (an instance left
#    with no free pixel is skipped), and `category_id` = its label.
# 2. **Then stuff**: for each class of `semantic` that is not a thing class, in increasing class order, the
#    free pixels of that class form one segment if there are at least `stuff_area_limit` of them.
#
# Pixels left over (thing-class pixels of the semantic map that no instance claimed, small stuff regions)
# keep id 0. No loops over pixels; loops over instances and classes are fine.
#
# **Keypoints as heatmaps.** Keypoint R-CNN predicts, per box and keypoint, an $M \times M$ heatmap over the
# box; training treats it as an $M^2$-way classification whose answer is the one cell holding the keypoint.
# Both functions are torchvision's (`roi_heads.py`); reproduce them exactly:
#
# `keypoints_to_heatmap(keypoints, rois, heatmap_size)`: `keypoints` `Tensor[K, P, 3]` $(x, y, v)$, `rois`
# `Tensor[K, 4]` → `(heatmaps, valid)`, both `Tensor[K, P]` int64. With $M$ = `heatmap_size` and a box
# $(x_0, y_0, x_1, y_1)$: the cell is $c_x = \lfloor (x - x_0)\,M / (x_1 - x_0) \rfloor$ (same for $y$), except
# that a keypoint exactly on the right (bottom) edge $x = x_1$ gets $c_x = M - 1$. It is **valid** when
# $0 \le c_x, c_y < M$ and $v > 0$; `heatmaps` holds the flat index $c_y M + c_x$ for valid keypoints and $0$
# otherwise, `valid` holds 1/0.
#
# `heatmaps_to_keypoints(maps, rois)`: `maps` `Tensor[K, P, M, M]` (scores), `rois` `Tensor[K, 4]` →
# `(keypoints, scores)`: `Tensor[K, P, 3]` float32 $(x, y, 1)$ and `Tensor[K, P]` float32. Per box: let
# $w = \max(x_1 - x_0, 1)$, $h = \max(y_1 - y_0, 1)$; resize the $P$ maps to $\lceil h \rceil \times \lceil w \rceil$
# with **bicubic** interpolation (`align_corners=False`; `F.interpolate` is fine); in each resized map take the
# first maximum in row-major order (`argmax` of the flattened map), at row $r$, column $c$; the keypoint is
# $x = x_0 + (c + \tfrac12)\,w / \lceil w \rceil$, $y = y_0 + (r + \tfrac12)\,h / \lceil h \rceil$ and its score the
# resized map's value there. A loop over boxes is fine (the resized size differs per box).

# %% nbgrader={"grade": false, "grade_id": "panoptic_keypoints", "locked": false, "schema_version": 3, "solution": true}
def panoptic_merge(semantic, instances, thing_classes, score_threshold=0.5, overlap_threshold=0.5, stuff_area_limit=64):
    """semantic Tensor[H, W], instances {"masks", "scores", "labels"} -> (panoptic Tensor[H, W] int64, segments list of dicts)."""
    ### BEGIN SOLUTION
    panoptic = torch.zeros(semantic.shape, dtype=torch.int64, device=semantic.device)
    segments = []
    masks = instances["masks"]
    masks = masks >= 0.5 if masks.is_floating_point() else masks.bool()
    scores, labels = instances["scores"], instances["labels"]
    order = torch.argsort(scores, descending=True, stable=True)
    for i in order.tolist():
        if float(scores[i]) < score_threshold:
            continue
        mask = masks[i]
        area = int(mask.sum())
        if area == 0:
            continue
        taken = int((mask & (panoptic > 0)).sum())
        if taken / area > overlap_threshold:
            continue
        mask = mask & (panoptic == 0)
        free = int(mask.sum())
        if free == 0:
            continue
        panoptic[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": int(labels[i]), "isthing": True, "area": free})
    things = {int(c) for c in thing_classes}
    for c in torch.unique(semantic).tolist():
        if c in things:
            continue
        mask = (semantic == c) & (panoptic == 0)
        area = int(mask.sum())
        if area < stuff_area_limit:
            continue
        panoptic[mask] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": int(c), "isthing": False, "area": area})
    return panoptic, segments
    ### END SOLUTION


def keypoints_to_heatmap(keypoints, rois, heatmap_size):
    """keypoints Tensor[K, P, 3], rois Tensor[K, 4] -> (flat heatmap index Tensor[K, P] int64, valid Tensor[K, P] int64)."""
    ### BEGIN SOLUTION
    x0, y0, x1, y1 = (rois[:, i:i + 1] for i in range(4))
    x, y = keypoints[..., 0], keypoints[..., 1]
    cx = ((x - x0) * (heatmap_size / (x1 - x0))).floor().long()
    cy = ((y - y0) * (heatmap_size / (y1 - y0))).floor().long()
    cx = torch.where(x == x1, torch.full_like(cx, heatmap_size - 1), cx)
    cy = torch.where(y == y1, torch.full_like(cy, heatmap_size - 1), cy)
    valid = ((cx >= 0) & (cy >= 0) & (cx < heatmap_size) & (cy < heatmap_size) & (keypoints[..., 2] > 0)).long()
    return (cy * heatmap_size + cx) * valid, valid
    ### END SOLUTION


def heatmaps_to_keypoints(maps, rois):
    """maps Tensor[K, P, M, M], rois Tensor[K, 4] -> (keypoints Tensor[K, P, 3] float32 (x, y, 1), scores Tensor[K, P] float32)."""
    ### BEGIN SOLUTION
    k, p = maps.shape[:2]
    keypoints = torch.zeros((k, p, 3), dtype=torch.float32, device=maps.device)
    scores = torch.zeros((k, p), dtype=torch.float32, device=maps.device)
    widths = (rois[:, 2] - rois[:, 0]).clamp(min=1)
    heights = (rois[:, 3] - rois[:, 1]).clamp(min=1)
    for i in range(k):
        w_ceil, h_ceil = int(widths[i].ceil()), int(heights[i].ceil())
        resized = F.interpolate(maps[i][:, None], size=(h_ceil, w_ceil), mode="bicubic", align_corners=False)[:, 0]
        best = resized.reshape(p, -1).argmax(dim=1)
        col, row = best % w_ceil, best // w_ceil
        keypoints[i, :, 0] = (col.float() + 0.5) * (widths[i] / w_ceil) + rois[i, 0]
        keypoints[i, :, 1] = (row.float() + 0.5) * (heights[i] / h_ceil) + rois[i, 1]
        keypoints[i, :, 2] = 1
        scores[i] = resized[torch.arange(p, device=maps.device), row, col]
    return keypoints, scores
    ### END SOLUTION

# %% tags=["check"]
from torchvision.models.detection import roi_heads as tv_roi_heads

_gen = torch.Generator().manual_seed(2)
_semantic = torch.zeros(6, 8, dtype=torch.int64)
_semantic[3:, :] = 4  # a second stuff class at the bottom
_semantic[1:3, 1:4] = 1
_inst_masks = torch.zeros(3, 6, 8, dtype=torch.bool)
_inst_masks[0, 1:3, 1:4] = True       # a circle
_inst_masks[1, 1:3, 2:4] = True       # a duplicate of it, lower score: 4 of its 4 pixels taken -> skipped
_inst_masks[2, 2:5, 5:8] = True       # a square, partly over the bottom stuff
_inst = {"masks": _inst_masks, "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 2])}
_pan, _segs = panoptic_merge(_semantic, _inst, thing_classes={1, 2, 3}, stuff_area_limit=4)
_want = torch.tensor([[3, 3, 3, 3, 3, 3, 3, 3],
                      [3, 1, 1, 1, 3, 3, 3, 3],
                      [3, 1, 1, 1, 3, 2, 2, 2],
                      [4, 4, 4, 4, 4, 2, 2, 2],
                      [4, 4, 4, 4, 4, 2, 2, 2],
                      [4, 4, 4, 4, 4, 4, 4, 4]])
assert torch.equal(_pan, _want), f"panoptic_merge: expected\n{_want}\ngot\n{_pan}"
assert _segs == [{"id": 1, "category_id": 1, "isthing": True, "area": 6}, {"id": 2, "category_id": 2, "isthing": True, "area": 9},
                 {"id": 3, "category_id": 0, "isthing": False, "area": 15}, {"id": 4, "category_id": 4, "isthing": False, "area": 18}], f"panoptic_merge segments: {_segs}"
_kp = torch.tensor([[[12.0, 20.0, 2], [40.0, 30.0, 1], [10.0, 20.0, 2], [41.0, 25.0, 2]], [[5.0, 5.0, 0], [8.0, 9.5, 2], [20.0, 5.0, 2], [6.0, 7.0, 1]]])
_rois = torch.tensor([[10.0, 18.0, 40.0, 34.0], [4.0, 4.0, 12.5, 9.5]])
for _m in (56, 7):
    _h, _v = keypoints_to_heatmap(_kp, _rois, _m)
    _th, _tv = tv_roi_heads.keypoints_to_heatmap(_kp, _rois, _m)
    assert torch.equal(_h, _th) and torch.equal(_v, _tv) and _h.dtype == torch.int64, f"keypoints_to_heatmap(heatmap_size={_m}) differs from torchvision's"
_maps = torch.randn(2, 4, 14, 14, generator=_gen)
_got, _want = heatmaps_to_keypoints(_maps, _rois), tv_roi_heads.heatmaps_to_keypoints(_maps, _rois)
assert all(torch.allclose(g, w, atol=1e-5) and g.dtype == w.dtype for g, w in zip(_got, _want)), "heatmaps_to_keypoints differs from torchvision's"
print("panoptic merge and keypoints ✓")

# %% [markdown]
# A panoptic segmentation of a validation image, from your Mask R-CNN's instances and your FCN's semantic map.
# The background is split into two "stuff" classes for the picture — *upper* (4) and *lower* (5) half — so that
# there is more than one stuff segment: every pixel gets one segment, each thing its own colour.

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 3, figsize=(6.8, 2.5), layout="constrained")
_image = val_instances[1][0]
_sem = segment(fcn, _image[None])[0]
_rows = torch.arange(_sem.shape[0])[:, None].expand_as(_sem)
_sem = torch.where(_sem == 0, torch.where(_rows < _sem.shape[0] // 2, 4, 5), _sem)  # background -> two stuff classes
_d = instances[1]
_pan, _segs = panoptic_merge(_sem, {"masks": _d["masks"], "scores": _d["scores"], "labels": _d["labels"]}, thing_classes={1, 2, 3})
show_image(_image, axes[0])
axes[0].set_title("image", fontsize=9)
axes[1].imshow(_sem, cmap=ListedColormap(["#222222", "#e41a1c", "#377eb8", "#ffbf00", "#9ecae1", "#a1d99b"]), vmin=0, vmax=5, interpolation="nearest")
axes[1].set_title("semantic (FCN), stuff split", fontsize=9)
_thing_colours = [(0.85, 0.1, 0.1), (1.0, 0.55, 0.0), (0.55, 0.0, 0.75), (0.0, 0.5, 0.2), (0.9, 0.8, 0.0)]  # saturated: things
_stuff_colours = {4: (0.8, 0.85, 0.95), 5: (0.85, 0.93, 0.82)}  # pale: stuff
_colours = np.zeros((*_pan.shape, 3))  # black: no segment
_things = [s for s in _segs if s["isthing"]]
for _s in _segs:
    _colours[(_pan == _s["id"]).numpy()] = _thing_colours[_things.index(_s) % 5] if _s["isthing"] else _stuff_colours.get(_s["category_id"], (0.8, 0.8, 0.8))
axes[2].imshow(_colours, interpolation="nearest")
axes[2].set_title(f"panoptic: {len(_things)} things, {len(_segs) - len(_things)} stuff", fontsize=9)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# Keypoints of the shapes dataset are polygon vertices (a square's 4 corners). Their 14×14 training heatmaps —
# one cell per vertex — and the keypoints that `heatmaps_to_keypoints` reads back from slightly blurred
# versions of them (white circles: the true vertices; red crosses: decoded, within a heatmap cell of them):

# %% tags=["hide-input"]
_candidates = [(im, t, k) for im, t in (ShapesDataset(40, 128, seed=9)[i] for i in range(40)) for k in range(len(t["labels"])) if int(t["labels"][k]) == 2]
_image, _t, _k = max(_candidates, key=lambda c: float(c[1]["masks"][c[2]].sum()))  # the most visible square
_kps = _t["keypoints"][_k:_k + 1]
_box = _t["boxes"][_k:_k + 1] + torch.tensor([-3.0, -3.0, 3.0, 3.0])  # a box with a margin: vertices on its edge stay inside
_flat, _valid = keypoints_to_heatmap(_kps, _box, 14)
_onehot = torch.zeros(1, NUM_KEYPOINTS, 14 * 14)
_onehot[0, torch.arange(NUM_KEYPOINTS), _flat[0]] = _valid[0].float()
_onehot = _onehot.reshape(1, NUM_KEYPOINTS, 14, 14)
_blurred = F.avg_pool2d(F.pad(_onehot, (1, 1, 1, 1)), 3, stride=1) + _onehot
_decoded, _ = heatmaps_to_keypoints(_blurred, _box)
fig, axes = plt.subplots(1, 5, figsize=(6.8, 1.9), layout="constrained")
show_image(_image, axes[0])
axes[0].scatter(_kps[0, :, 0], _kps[0, :, 1], s=60, facecolors="none", edgecolors="white", linewidths=1.5, label="truth")
axes[0].scatter(_decoded[0, :, 0], _decoded[0, :, 1], s=20, marker="x", c="red", linewidths=1.2, label="decoded")
axes[0].set_title("vertices", fontsize=8)
for j in range(NUM_KEYPOINTS):
    axes[j + 1].imshow(_onehot[0, j], cmap="magma")
    axes[j + 1].set_title(f"keypoint {j}", fontsize=8)
for ax in axes:
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Submit
#
# Save the notebook, then run the cell below. It checks the notebook, runs the visible checks in a fresh
# process, and writes `a5_segmentation_submission.ipynb` (downloaded automatically in Colab).

# %%
from lecture_utils import submit

submit.export("a5_segmentation.ipynb")
