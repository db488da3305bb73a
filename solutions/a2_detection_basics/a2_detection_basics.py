# ---
# jupyter:
#   course:
#     assignment: a2_detection_basics
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 2 — Detection basics (Lecture 13)
#
# You build the toolbox every object detector relies on and check each piece against torchvision or
# pycocotools:
#
# 1. **Boxes** (12 points): `box_convert`, `box_area`, `box_iou`.
# 2. **Box coding** (10): `encode_boxes` / `decode_boxes`, the $(t_x, t_y, t_w, t_h)$ of R-CNN.
# 3. **Training labels** (8): `label_proposals` — positive, negative and neutral proposals.
# 4. **Non-maximum suppression** (24): `nms` and `batched_nms`, written with tensor operations.
# 5. **Evaluation** (30): `precision_recall`, `average_precision` and `evaluate_detections` (COCO mAP).
# 6. **Single-object detection** (11): `sliding_window_count`, `SingleObjectDetector`, `single_object_loss`.
# 7. **Region proposals** (5): `proposals_from_segments`.
#
# Conventions (the hidden tests check them):
#
# - boxes are `xyxy` float pixel coordinates (no "+1"), labels `1..C` with `0` = background;
# - empty inputs give empty outputs of the right shape;
# - a function's output has the dtype of its input (float64 boxes give float64 results) unless its
#   docstring says otherwise, and lives on the input's device;
# - your functions never modify their arguments in place and return new tensors, never an input itself.
#
# **Writing each function is the exercise**: a graded function that calls the library function doing
# the same job gets no points for that function, however it reaches it (an alias, a reference taken
# earlier, another thread). Each part lists what is not allowed. Use torchvision and pycocotools
# freely in your own checks and outside the graded functions.

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

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from lecture_utils import get_device, seed_everything

device = get_device()
seed_everything(0)
print("running on", device)

# %% [markdown]
# ## Part 1 — Boxes
#
# A box `(x1, y1, x2, y2)` can also be written `(x, y, w, h)` or by its centre `(cx, cy, w, h)`. The
# **intersection over union** of two boxes is the area of their intersection divided by the area of
# their union: 1 for identical boxes, 0 for disjoint ones. Compute all $N \times M$ IoUs at once by
# broadcasting `boxes1[:, None]` against `boxes2[None, :]` — no Python loop over boxes (the grader
# compares the tensor operations and the lines of your code run for few and for many boxes).
#
# Like torchvision: `box_area` is $(x_2 - x_1)(y_2 - y_1)$ with no `abs()` — an inverted box
# ($x_2 < x_1$) gets a negative area; `box_convert` returns a new tensor even when `in_fmt == out_fmt`.
# The IoU of two zero-area boxes is $0/0$ (torchvision returns `nan`); the grader does not check that case.
# **Dtypes**, graded as torchvision's: `box_area` and `box_iou` first *upcast* small types so that products do not
# overflow — `float16`/`bfloat16` boxes are computed in `float32`, signed integer boxes narrower than 32 bits
# (`int8`, `int16`) in `int32`; `float32`, `float64`, `int32` and `int64` stay as they are (the grader checks
# `int8`, `int16`, `float16` and `bfloat16`; not `uint8`, whose coordinate differences wrap around). `box_area` returns
# that dtype; `box_iou` returns floats (the intersection over the union of integer areas is a true division).
# The cell gives `_upcast(t)` for it: apply it to the boxes in `box_area` and to the intersection's
# `bottom_right - top_left` in `box_iou`, as torchvision does.
#
# Not allowed: `torchvision.ops.box_convert` (and its helpers in `torchvision.ops._box_convert`),
# `box_area`, `box_iou` (nor `generalized_box_iou` and relatives), and
# `torchvision.transforms.v2.functional.convert_bounding_box_format`.

# %% nbgrader={"grade": false, "grade_id": "box_ops", "locked": false, "schema_version": 3, "solution": true}
def box_convert(boxes, in_fmt, out_fmt):
    """Convert boxes Tensor[N, 4] between 'xyxy', 'xywh' and 'cxcywh' (like torchvision.ops.box_convert)."""
    ### BEGIN SOLUTION
    formats = ("xyxy", "xywh", "cxcywh")
    if in_fmt not in formats or out_fmt not in formats:
        raise ValueError(f"unsupported box format: {in_fmt!r} -> {out_fmt!r}; use one of {formats}")
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        c, d = c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return torch.stack((a, b, c, d), dim=-1)
    ### END SOLUTION


def _upcast(t):
    """Given (torchvision's rule): float16/bfloat16 -> float32, integers narrower than 32 bits -> int32, so that
    products do not overflow; float32, float64, int32 and int64 unchanged."""
    if t.is_floating_point():
        return t if t.dtype in (torch.float32, torch.float64) else t.float()
    return t if t.dtype in (torch.int32, torch.int64) else t.int()


def box_area(boxes):
    """Areas Tensor[N] of boxes Tensor[N, 4] in xyxy: (x2 - x1) * (y2 - y1), computed in _upcast(boxes)'s dtype."""
    ### BEGIN SOLUTION
    boxes = _upcast(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ### END SOLUTION



def box_iou(boxes1, boxes2):
    """IoU Tensor[N, M] between boxes1 Tensor[N, 4] and boxes2 Tensor[M, 4] (xyxy), without Python loops."""
    ### BEGIN SOLUTION
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = _upcast(bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)
    ### END SOLUTION

# %% tags=["check"]
import torchvision.ops as tv_ops

_b1 = torch.tensor([[0.0, 0, 10, 10], [5, 5, 15, 20]])
_b2 = torch.tensor([[0.0, 0, 10, 10], [10, 0, 20, 10], [2, 2, 4, 4]])
assert torch.allclose(box_iou(_b1, _b2), tv_ops.box_iou(_b1, _b2)), "box_iou: differs from torchvision.ops.box_iou"
assert box_iou(_b1.double(), _b2.double()).dtype == torch.float64, "box_iou: float64 boxes must give a float64 result"
for _i in ("xyxy", "xywh", "cxcywh"):
    for _o in ("xyxy", "xywh", "cxcywh"):
        _copy = _b1.clone()
        _out = box_convert(_b1, _i, _o)
        assert torch.allclose(_out, tv_ops.box_convert(_b1, _i, _o)), f"box_convert: {_i} -> {_o} differs from torchvision"
        assert torch.equal(_b1, _copy) and _out is not _b1, f"box_convert: {_i} -> {_o} must leave its input alone and return a new tensor"
        assert box_convert(_b1.double(), _i, _o).dtype == torch.float64, f"box_convert: {_i} -> {_o} of float64 boxes must be float64"
_inverted = torch.tensor([[10.0, 0, 4, 6]])
assert box_area(_inverted).tolist() == [-36.0], "box_area: an inverted box (x2 < x1) has a negative area, as in torchvision (no abs)"
_small = torch.tensor([[0, 0, 100, 90], [10, 20, 60, 80]], dtype=torch.int8)  # areas up to 9000: beyond int8
assert torch.equal(box_area(_small), tv_ops.box_area(_small)), "box_area: int8 boxes are computed in int32 (_upcast), as in torchvision"
assert torch.allclose(box_iou(_small, _small), tv_ops.box_iou(_small, _small)), "box_iou: int8 boxes must not overflow (_upcast)"
_half = _small.half() * 30  # areas up to 7.3 million: beyond float16's 65504
assert box_area(_half).dtype == torch.float32 and torch.isfinite(box_iou(_half, _half)).all(), "box_area/box_iou: float16 boxes are computed in float32"
print("boxes ✓")
# %% [markdown]
# ## Part 2 — Box coding
#
# R-CNN does not predict box corners directly: it predicts a transform of a proposal $P$ into the
# object's box $G$. With centres $x, y$ and sizes $w, h$:
#
# $$t_x = \frac{G_x - P_x}{P_w},\quad t_y = \frac{G_y - P_y}{P_h},\quad t_w = \log\frac{G_w}{P_w},\quad t_h = \log\frac{G_h}{P_h},$$
#
# each multiplied by a weight (`weights = (wx, wy, ww, wh)`, e.g. `(10, 10, 5, 5)` in Faster R-CNN).
# `decode_boxes` inverts it and accepts several boxes per proposal (`rel_codes` Tensor[N, 4k]). Like
# torchvision, it first divides each code by its weight, $d_w = t_w / w_w$ and $d_h = t_h / w_h$, then
# clamps $d_w, d_h$ (after the division) at `bbox_xform_clip` before the exponential:
# $G_w = P_w \exp(\min(d_w, \text{bbox\_xform\_clip}))$.
#
# Not allowed: torchvision's `BoxCoder` (`encode`, `encode_single`, `decode`, `decode_single`) and
# `torchvision.models.detection._utils.encode_boxes`.

# %% nbgrader={"grade": false, "grade_id": "box_coding", "locked": false, "schema_version": 3, "solution": true}
def encode_boxes(reference, proposals, weights=(1.0, 1.0, 1.0, 1.0)):
    """Targets (tx, ty, tw, th) Tensor[N, 4] that move proposals Tensor[N, 4] onto reference Tensor[N, 4] (torchvision BoxCoder.encode_single)."""
    ### BEGIN SOLUTION
    wx, wy, ww, wh = (float(w) for w in weights)
    ex_w = proposals[:, 2] - proposals[:, 0]
    ex_h = proposals[:, 3] - proposals[:, 1]
    ex_cx = proposals[:, 0] + 0.5 * ex_w
    ex_cy = proposals[:, 1] + 0.5 * ex_h
    gt_w = reference[:, 2] - reference[:, 0]
    gt_h = reference[:, 3] - reference[:, 1]
    gt_cx = reference[:, 0] + 0.5 * gt_w
    gt_cy = reference[:, 1] + 0.5 * gt_h
    dx = wx * (gt_cx - ex_cx) / ex_w
    dy = wy * (gt_cy - ex_cy) / ex_h
    dw = ww * torch.log(gt_w / ex_w)
    dh = wh * torch.log(gt_h / ex_h)
    return torch.stack((dx, dy, dw, dh), dim=1)
    ### END SOLUTION


def decode_boxes(rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16)):
    """Apply rel_codes Tensor[N, 4k] to boxes Tensor[N, 4]; returns Tensor[N, 4k] xyxy (torchvision BoxCoder.decode_single); dw = tw / ww and dh = th / wh are clamped at bbox_xform_clip."""
    ### BEGIN SOLUTION
    boxes = boxes.to(rel_codes.dtype)
    wx, wy, ww, wh = (float(w) for w in weights)
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx = rel_codes[:, 0::4] / wx
    dy = rel_codes[:, 1::4] / wy
    dw = (rel_codes[:, 2::4] / ww).clamp(max=bbox_xform_clip)
    dh = (rel_codes[:, 3::4] / wh).clamp(max=bbox_xform_clip)
    pred_cx = dx * widths[:, None] + ctr_x[:, None]
    pred_cy = dy * heights[:, None] + ctr_y[:, None]
    half_w = 0.5 * (torch.exp(dw) * widths[:, None])
    half_h = 0.5 * (torch.exp(dh) * heights[:, None])
    return torch.stack((pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h), dim=2).flatten(1)
    ### END SOLUTION

# %% tags=["check"]
from torchvision.models.detection._utils import BoxCoder

_p = torch.tensor([[10.0, 10, 50, 40], [0, 0, 8, 8]])
_g = torch.tensor([[12.0, 8, 56, 44], [1, 1, 7, 9]])
_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
assert torch.allclose(encode_boxes(_g, _p, (10.0, 10.0, 5.0, 5.0)), _coder.encode_single(_g, _p), atol=1e-6), "encode_boxes: differs from BoxCoder.encode_single"
assert torch.allclose(decode_boxes(encode_boxes(_g, _p, (10.0, 10.0, 5.0, 5.0)), _p, (10.0, 10.0, 5.0, 5.0)), _g, atol=1e-4), "decode_boxes: decode(encode(g)) should give g back"
_large = torch.tensor([[0.1, -0.2, 10.0, 30.0], [0.0, 0.0, 30.0, 10.0]])  # with ww = wh = 5: dw, dh = 2 (kept) or 6 (clamped at 4.135)
assert torch.allclose(decode_boxes(_large, _p, (10.0, 10.0, 5.0, 5.0)), _coder.decode_single(_large, _p), atol=1e-3), "decode_boxes: clamp dw = tw / ww (after dividing by the weight) at bbox_xform_clip"
assert encode_boxes(_g.double(), _p.double()).dtype == torch.float64 and decode_boxes(_large.double(), _p.double()).dtype == torch.float64, "encode_boxes / decode_boxes: float64 in, float64 out"
print("box coding ✓")
# %% [markdown]
# ## Part 3 — Training labels
#
# Each proposal gets the class of the ground-truth box it overlaps most if that IoU is at least
# `pos_iou` (positive), the background label 0 if its best IoU is below `neg_iou` (negative), and −1
# ("neutral", ignored in training) in between. Also return the index of the best-matching ground-truth
# box (the first one on ties); with no ground truth at all, every proposal is negative and the index is −1.
# Both outputs are int64. An IoU exactly equal to `pos_iou` is positive, exactly equal to `neg_iou` neutral.
#
# Not allowed: torchvision's `Matcher`.

# %% nbgrader={"grade": false, "grade_id": "labels", "locked": false, "schema_version": 3, "solution": true}
def label_proposals(proposals, gt_boxes, gt_labels, pos_iou=0.5, neg_iou=0.3):
    """R-CNN training labels: (labels Tensor[P] int64: gt class if IoU >= pos_iou, 0 if IoU < neg_iou, -1 otherwise; matched Tensor[P] int64: index of the best gt, -1 when there is none)."""
    ### BEGIN SOLUTION
    num = proposals.shape[0]
    if gt_boxes.shape[0] == 0:
        return (torch.zeros(num, dtype=torch.int64, device=proposals.device),
                torch.full((num,), -1, dtype=torch.int64, device=proposals.device))
    iou = box_iou(proposals, gt_boxes)
    matched = iou.argmax(dim=1)  # the first gt box on ties
    best_iou = iou.gather(1, matched[:, None])[:, 0]
    labels = gt_labels[matched].to(torch.int64)
    labels = torch.where(best_iou < pos_iou, torch.full_like(labels, -1), labels)
    labels = torch.where(best_iou < neg_iou, torch.zeros_like(labels), labels)
    return labels, matched
    ### END SOLUTION

# %% tags=["check"]
_lab, _m = label_proposals(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 6], [30, 30, 40, 40]]), torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([3]))
assert _lab.tolist() == [3, 3, 0] and _m.tolist() == [0, 0, 0], f"label_proposals: got labels {_lab.tolist()}, matched {_m.tolist()}; expected [3, 3, 0], [0, 0, 0]"
assert _lab.dtype == torch.int64 and _m.dtype == torch.int64, "label_proposals: both outputs must be int64"
# IoU exactly 0.5 (= pos_iou: positive) and exactly 0.25 (= neg_iou: neutral)
_lab, _m = label_proposals(torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 2.5]]), torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([3]), 0.5, 0.25)
assert _lab.tolist() == [3, -1], f"label_proposals: IoU == pos_iou is positive, IoU == neg_iou is neutral; got {_lab.tolist()}, expected [3, -1]"
print("labels ✓")
# %% [markdown]
# ## Part 4 — Non-maximum suppression
#
# NMS keeps the highest-scoring box, removes every remaining box whose IoU with it is **greater than**
# `iou_threshold`, and repeats. Your `nms` must return exactly torchvision's indices, in the same order:
# sort the scores in decreasing order with a **stable** sort (ties keep their original order), and
# vectorize the inner step (IoU of the kept box against all remaining boxes at once).
# A box whose IoU with a kept box is exactly `iou_threshold` is kept; the grader tests such ties with
# thresholds exact in binary (0.25, 0.5, 0.75), and its random boxes have no IoU within $10^{-6}$ of the
# threshold, so computing the IoU in float32 or float64 makes no difference.
#
# `batched_nms` runs NMS separately for each category in `idxs` — one `nms` call is enough if you
# first shift every category's boxes far away from the others (farther than the largest coordinate:
# images can be 1333 pixels wide) — and returns the kept indices (int64) sorted by decreasing score.
#
# Not allowed: `torchvision.ops.nms` / `batched_nms` (and their helpers) and the `torchvision::nms`
# operator (`torch.ops.torchvision.nms`).

# %% nbgrader={"grade": false, "grade_id": "nms", "locked": false, "schema_version": 3, "solution": true}
def nms(boxes, scores, iou_threshold):
    """Greedy NMS: indices Tensor[K] int64 of the kept boxes, highest score first, exactly as torchvision.ops.nms."""
    ### BEGIN SOLUTION
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = scores.sort(dim=0, descending=True, stable=True)[1]
    boxes = boxes[order]
    areas = box_area(boxes)
    alive = torch.ones(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = boxes[i + 1 :]
        top_left = torch.max(boxes[i, :2], rest[:, :2])
        bottom_right = torch.min(boxes[i, 2:], rest[:, 2:])
        wh = (bottom_right - top_left).clamp(min=0)
        inter = wh[:, 0] * wh[:, 1]
        iou = inter / (areas[i] + areas[i + 1 :] - inter)
        alive[i + 1 :] &= ~(iou.double() > iou_threshold)
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]
    ### END SOLUTION


def batched_nms(boxes, scores, idxs, iou_threshold):
    """NMS within each category idxs Tensor[N]: kept indices sorted by decreasing score."""
    ### BEGIN SOLUTION
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.numel() > 4000:  # many boxes: one NMS per class (as torchvision does on the CPU)
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            members = torch.where(idxs == class_id)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        keep = torch.where(keep_mask)[0]
    else:  # few boxes: shift each class far away from the others, then one NMS
        offsets = idxs.to(boxes) * (boxes.max() + 1)
        keep = nms(boxes + offsets[:, None], scores, iou_threshold)
    return keep[scores[keep].sort(descending=True, stable=True)[1]]
    ### END SOLUTION

# %% tags=["check"]
_g = torch.Generator().manual_seed(0)
_boxes = torch.rand(300, 4, generator=_g) * 100
_boxes[:, 2:] += _boxes[:, :2]
_scores = torch.rand(300, generator=_g)
assert torch.equal(nms(_boxes, _scores, 0.5), tv_ops.nms(_boxes, _scores, 0.5)), "nms: differs from torchvision.ops.nms"
# ties at the threshold: IoU(box 0, box 1) = IoU(box 0, box 2) = 0.5, IoU(box 1, box 2) = 0.25 -> nothing is suppressed at 0.5
_tied = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 4, 1]])
assert nms(_tied, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 1, 2], "nms: an IoU equal to the threshold does not suppress"
assert nms(_tied, torch.tensor([0.9, 0.8, 0.7]), 0.25).tolist() == [0], "nms: IoU 0.5 > 0.25 suppresses"
_idxs = torch.randint(0, 3, (300,), generator=_g)
_big = (_boxes * 6.665).round()  # integer coordinates up to 1333
_kept = batched_nms(_big, _scores, _idxs, 0.5)
assert _kept.dtype == torch.int64, "batched_nms: return int64 indices"
assert set(_kept.tolist()) == set(tv_ops.batched_nms(_big, _scores, _idxs, 0.5).tolist()), "batched_nms: keeps a different set of boxes than torchvision (boxes up to 1333 pixels)"
assert bool((_scores[_kept][1:] <= _scores[_kept][:-1]).all()), "batched_nms: return the kept indices sorted by decreasing score"
print("nms ✓")
# %% [markdown]
# Your NMS on a crowded example: many noisy detections around three objects, before and after.

# %%
import matplotlib.pyplot as plt
from lecture_utils.viz import draw_boxes

_g = torch.Generator().manual_seed(3)
_objects = torch.tensor([[20.0, 20, 70, 60], [60, 30, 110, 90], [130, 15, 180, 70]])
_noisy = (_objects.repeat_interleave(8, 0) + torch.randn(24, 4, generator=_g) * 5)
_noisy_scores = torch.rand(24, generator=_g)
_kept = nms(_noisy, _noisy_scores, 0.5)
_fig, _axes = plt.subplots(1, 2, figsize=(10, 3.5))
for _ax, _b, _title in ((_axes[0], _noisy, f"before: {len(_noisy)} boxes"), (_axes[1], _noisy[_kept], f"after NMS (IoU > 0.5): {len(_kept)} boxes")):
    _ax.set_xlim(0, 200), _ax.set_ylim(100, 0), _ax.set_title(_title), _ax.set_aspect("equal")
    draw_boxes(_ax, _b, linewidth=1)
plt.show()

# %% [markdown]
# ## Part 5 — Precision, recall and COCO mAP
#
# Sort the detections of one class by decreasing score. After the $k$-th detection,
# precision $= \mathrm{TP}_k / k$ and recall $= \mathrm{TP}_k / N_{gt}$. **Average precision** is the area
# under the precision–recall curve after replacing each precision by the best precision at that recall
# or higher (the envelope). Three conventions: `"coco101"` averages the envelope at the 101 recalls
# `np.linspace(0, 1, 101)` — exactly these values, as pycocotools (the first detection whose recall is
# ≥ each of them; 0 if never reached) —, `"voc11"` at $0, 0.1, \dots, 1$ (`np.arange(0, 1.1, 0.1)`),
# `"area"` integrates it exactly.
#
# `precision_recall` returns two float64 tensors; with `num_gt = 0` (then no detection is a true
# positive) the recall is all zeros. `average_precision` returns a Python `float` (not a tensor or a
# numpy number): 0.0 for no detections, and so 0.0 when `num_gt = 0`. Neither changes its inputs
# (compute the envelope on a copy).
#
# `evaluate_detections(preds, targets)` computes COCO's metric: for each class and each IoU threshold
# $0.5, 0.55, \dots, 0.95$, match detections to ground truth greedily in order of decreasing score
# (each ground-truth box at most once; among the free boxes with IoU ≥ threshold take the one with the
# **highest** IoU, not the first one), then average the 101-point AP over thresholds and over the classes
# that have ground truth. Details that matter to equal pycocotools:
#
# - at most `max_detections` (100) detections per image and class, the best-scoring ones;
# - IoU in float64 from `(x, y, w, h)` (float32 IoUs differ near the thresholds);
# - crowd boxes (`targets[i]["iscrowd"] == 1`) are ignored: a detection matched to one counts neither as
#   a true nor as a false positive, they can absorb several detections, a detection goes to a crowd
#   box only if no regular box is free, and the IoU with a crowd box is
#   *intersection / area of the detection*;
# - the area range is COCO's "all", $[0, 10^{10}]$: boxes of every size count;
# - a stable sort of all detections of a class by score (image order, then rank), and precision
#   $\mathrm{TP}/(\mathrm{TP}+\mathrm{FP}+\epsilon)$ with $\epsilon$ = `np.spacing(1)`;
# - `iou_thresholds` replaces COCO's ten thresholds for `AP`; `AP50` and `AP75` are still the AP at IoU
#   0.5 and 0.75.
#
# It returns Python floats: `{"AP": ..., "AP50": ..., "AP75": ..., "per_class": {class id (int): AP}}`,
# `per_class` having one entry per class with ground truth (−1 for a class whose boxes are all crowd);
# AP, AP50 and AP75 are −1 when no class has ground truth (as pycocotools). It leaves `preds` and
# `targets` unchanged.
#
# Not allowed: pycocotools' and faster_coco_eval's `COCOeval` (`evaluate`, `evaluateImg`,
# `computeIoU`, `accumulate`) in any of the three functions; use them to check your results.

# %% nbgrader={"grade": false, "grade_id": "ap", "locked": false, "schema_version": 3, "solution": true}
def precision_recall(scores, is_true_positive, num_gt):
    """Precision and recall Tensor[D] float64 after each detection, in order of decreasing score (ties: lower index first); recall 0 when num_gt == 0."""
    ### BEGIN SOLUTION
    order = scores.sort(descending=True, stable=True)[1]
    tp = is_true_positive[order].to(torch.float64).cumsum(0)
    ranks = torch.arange(1, len(order) + 1, dtype=torch.float64, device=scores.device)
    precision = tp / ranks
    recall = tp / num_gt if num_gt > 0 else torch.zeros_like(tp)
    return precision, recall
    ### END SOLUTION


def average_precision(precision, recall, method="coco101"):
    """Area under the precision-recall curve, a Python float: 'coco101' (101-point, COCO), 'voc11' (11-point, VOC2007) or 'area' (all points, VOC2010+); 0.0 without detections."""
    ### BEGIN SOLUTION
    precision, recall = precision.to(torch.float64), recall.to(torch.float64)
    if method not in ("coco101", "voc11", "area"):
        raise ValueError(f"unknown AP method {method!r}: use 'coco101', 'voc11' or 'area'")
    if precision.numel() == 0:
        return 0.0
    # precision envelope: the best precision at this recall or any higher recall
    envelope = precision.flip(0).cummax(0).values.flip(0)
    if method == "coco101":
        thresholds = torch.from_numpy(np.linspace(0.0, 1.0, 101)).to(recall)
        idx = torch.searchsorted(recall.contiguous(), thresholds, right=False)
        sampled = torch.where(idx < len(recall), envelope[idx.clamp(max=len(recall) - 1)], torch.zeros_like(thresholds))
        return float(sampled.mean())
    if method == "voc11":
        values = [float(precision[recall >= t].max()) if bool((recall >= t).any()) else 0.0 for t in np.arange(0.0, 1.1, 0.1)]
        return float(np.mean(values))
    r = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])
    p = torch.cat([precision.new_zeros(1), precision, precision.new_zeros(1)]).flip(0).cummax(0).values.flip(0)
    changes = torch.where(r[1:] != r[:-1])[0]
    return float(((r[changes + 1] - r[changes]) * p[changes + 1]).sum())
    ### END SOLUTION

# %% tags=["check"]
_tp = torch.tensor([True] * 35 + [False] + [True] * 10)  # 100 ground-truth boxes: the recall reaches 0.35, then stays there once
_p, _r = precision_recall(torch.linspace(1, 0, len(_tp), dtype=torch.float64), _tp, 100)
assert _p.dtype == torch.float64 and _r.dtype == torch.float64, "precision_recall: return float64 tensors"
_p_copy = _p.clone()
_ap = average_precision(_p, _r)
assert type(_ap) is float, f"average_precision: return a Python float, not {type(_ap).__name__}"
assert torch.equal(_p, _p_copy), "average_precision: compute the envelope on a copy; the caller's precision changed"
# the recall grid is np.linspace(0, 1, 101): its value 0.35000000000000003 is above the recall 35 / 100 = 0.35
assert abs(_ap - 0.4530779164873009) < 1e-12, f"average_precision: 'coco101' gives {_ap!r}, expected 0.4530779164873009 (recall grid np.linspace(0, 1, 101))"
_p0, _r0 = precision_recall(torch.tensor([0.9, 0.5], dtype=torch.float64), torch.tensor([False, False]), 0)
assert _r0.tolist() == [0.0, 0.0], "precision_recall: with num_gt = 0 the recall is 0"
assert average_precision(_p0, _r0) == 0.0 and average_precision(_p0[:0], _r0[:0]) == 0.0, "average_precision: 0.0 when num_gt = 0 and for no detections"
print("precision, recall, AP ✓")

# %% nbgrader={"grade": false, "grade_id": "evaluation", "locked": false, "schema_version": 3, "solution": true}
def evaluate_detections(preds, targets, iou_thresholds=None, max_detections=100):
    """COCO box AP of preds against targets (lists of dicts per image): {'AP', 'AP50', 'AP75': float, 'per_class': {class id: float}}, equal to pycocotools' COCOeval (area 'all', maxDets max_detections)."""
    ### BEGIN SOLUTION
    def _coco_iou(dt, gt, crowd):
        """IoU Tensor[..., D, G] computed exactly as pycocotools' bbIou (float64, xywh)."""
        dx, dy, dw, dh = dt.unbind(-1)
        gx, gy, gw, gh = gt.unbind(-1)
        w = torch.minimum(dx[..., :, None] + dw[..., :, None], gx[..., None, :] + gw[..., None, :]) - torch.maximum(dx[..., :, None], gx[..., None, :])
        h = torch.minimum(dy[..., :, None] + dh[..., :, None], gy[..., None, :] + gh[..., None, :]) - torch.maximum(dy[..., :, None], gy[..., None, :])
        inter = w * h
        d_area, g_area = (dw * dh)[..., :, None], (gw * gh)[..., None, :]
        union = torch.where(crowd[..., None, :], d_area.expand_as(inter), d_area + g_area - inter)
        return torch.where((w > 0) & (h > 0), inter / union, torch.zeros_like(inter))

    def _group_rank(keys: torch.Tensor) -> torch.Tensor:
        """Position of each element within its run of equal ``keys`` (keys sorted, Tensor[N] int64)."""
        if keys.numel() == 0:
            return keys.clone()
        starts = torch.ones_like(keys, dtype=torch.bool)
        starts[1:] = keys[1:] != keys[:-1]
        first = torch.cummax(torch.where(starts, torch.arange(len(keys)), torch.zeros_like(keys)), 0).values
        return torch.arange(len(keys)) - first

    def _lexsort(*keys: torch.Tensor) -> torch.Tensor:
        """Stable order sorting by keys[0], then keys[1], ... (like numpy.lexsort with reversed keys)."""
        order = torch.arange(len(keys[0]))
        for key in reversed(keys):
            order = order[key[order].sort(stable=True)[1]]
        return order

    coco_thresholds = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    thresholds = coco_thresholds if iou_thresholds is None else np.asarray(torch.as_tensor(iou_thresholds, dtype=torch.float64).cpu(), dtype=np.float64).reshape(-1)
    extra = [t for t in (0.5, 0.75) if not np.any(thresholds == t)]
    all_thr = torch.from_numpy(np.concatenate([thresholds, np.asarray(extra, dtype=np.float64)]))
    rec_thrs = torch.from_numpy(np.linspace(0.0, 1.0, 101))
    eps = float(np.spacing(1))
    T = len(all_thr)

    def cat(items, key, dtype, width=None):
        """Tensor[sum N_i] (or [sum N_i, width]) of items[i][key] for all images, on the CPU, in dtype."""
        parts = [x[key].reshape(-1, width) if width else x[key].reshape(-1) for x in items]
        return torch.cat(parts).detach().to("cpu", dtype) if parts else torch.zeros((0, width) if width else 0, dtype=dtype)

    def to_xywh(b):
        return torch.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], dim=1)

    # all detections and ground truth of all images, flattened, with their image index
    d_img = torch.arange(len(preds)).repeat_interleave(torch.tensor([len(p["labels"]) for p in preds], dtype=torch.int64))
    g_img = torch.arange(len(targets)).repeat_interleave(torch.tensor([len(t["labels"]) for t in targets], dtype=torch.int64))
    d_box, d_score, d_cls = to_xywh(cat(preds, "boxes", torch.float64, 4)), cat(preds, "scores", torch.float64), cat(preds, "labels", torch.int64)
    g_box, g_cls = to_xywh(cat(targets, "boxes", torch.float64, 4)), cat(targets, "labels", torch.int64)
    # area decides COCO's "ignore" for the area range; it defaults to the box area, as in COCO files
    g_area = g_box[:, 2] * g_box[:, 3]
    if any("area" in t for t in targets):
        given = torch.cat([t["area"].detach().to("cpu", torch.float64).reshape(-1) if "area" in t else torch.full((len(t["labels"]),), math.nan, dtype=torch.float64) for t in targets])
        g_area = torch.where(given.isnan(), g_area, given)
    if any("iscrowd" in t for t in targets):
        g_crowd = torch.cat([t["iscrowd"].detach().to("cpu", torch.int64).reshape(-1) if "iscrowd" in t else torch.zeros(len(t["labels"]), dtype=torch.int64) for t in targets]).bool()
    else:
        g_crowd = torch.zeros(len(g_cls), dtype=torch.bool)
    g_ign = g_crowd | (g_area < 0) | (g_area > 1e10)  # COCO's "all" area range is [0, 1e10]

    # detections: per (class, image), best score first (stable), at most max_detections
    n_img = max(len(preds), len(targets)) + 1  # class * n_img + image: one key per (class, image) pair
    order = _lexsort(d_cls * n_img + d_img, -d_score)
    d_box, d_score, d_cls, d_img = d_box[order], d_score[order], d_cls[order], d_img[order]
    d_rank = _group_rank(d_cls * n_img + d_img)
    keep = d_rank < max_detections
    d_box, d_score, d_cls, d_img, d_rank = d_box[keep], d_score[keep], d_cls[keep], d_img[keep], d_rank[keep]
    # ground truth: per (class, image), regular ones first, ignored ones last (stable)
    order = _lexsort(g_cls, g_img, g_ign.to(torch.int64))
    g_box, g_cls, g_img, g_crowd, g_ign = g_box[order], g_cls[order], g_img[order], g_crowd[order], g_ign[order]
    g_rank = _group_rank(g_cls * n_img + g_img)

    # (class, image) pairs, each with its ground truth in a padded row: Tensor[P, G, 4] and masks [P, G].
    # Slots: the pairs with ground truth first, by decreasing number of detections, so that the pairs
    # having a d-th detection are the first slots and step d of the matching works on a prefix of them.
    pair_keys, pair = torch.unique(torch.cat([d_cls * n_img + d_img, g_cls * n_img + g_img]), return_inverse=True)
    d_pair, g_pair, P = pair[: len(d_cls)], pair[len(d_cls) :], len(pair_keys)
    n_dt, n_gt = torch.bincount(d_pair, minlength=P), torch.bincount(g_pair, minlength=P)
    slot_of_pair = torch.empty(P, dtype=torch.int64)
    slot_of_pair[_lexsort((n_gt == 0).to(torch.int64), -n_dt)] = torch.arange(P)
    d_slot, g_slot = slot_of_pair[d_pair], slot_of_pair[g_pair]
    G = int(g_rank.max()) + 1 if len(g_rank) else 0
    p_box = torch.zeros(P, G, 4, dtype=torch.float64)
    p_valid, p_crowd, p_ign = (torch.zeros(P, G, dtype=torch.bool) for _ in range(3))
    p_box[g_slot, g_rank], p_valid[g_slot, g_rank], p_crowd[g_slot, g_rank], p_ign[g_slot, g_rank] = g_box, True, g_crowd, g_ign
    widest = torch.cummax(n_gt[slot_of_pair.argsort()], 0).values  # widest[s]: most ground truth in slots 0..s
    # detections that can match (their pair has ground truth), by rank then slot: the rank-d block holds
    # one detection for each of the slots 0 .. n_d - 1
    proc = torch.where(n_gt[d_pair] > 0)[0]
    proc = proc[torch.argsort(d_rank[proc] * P + d_slot[proc])]
    n_active = torch.bincount(d_rank[proc]).tolist()

    # COCO's greedy matching, one detection rank at a time for all pairs and thresholds at once
    thr = all_thr.clamp(max=1 - 1e-10)[None, :]  # [1, T]
    taken = torch.zeros(P, T, G, dtype=torch.bool)
    d_matched = torch.zeros(T, len(d_cls), dtype=torch.bool)
    d_ignored = torch.zeros(T, len(d_cls), dtype=torch.bool)
    start = 0
    for n in n_active:
        idx, start, width = proc[start : start + n], start + n, int(widest[n - 1])
        g_taken, crowd, ignore, g_valid = taken[:n, :, :width], p_crowd[:n, :width], p_ign[:n, :width], p_valid[:n, :width]
        iou = _coco_iou(d_box[idx, None], p_box[:n, :width], crowd)[:, 0]  # [n, width]
        # COCO's rule: walk the ground truth in order (ignored ones last) and keep the last one with the
        # highest IoU >= threshold that is still free (crowds never get used up); stop at the ignored
        # ones once a regular match exists.
        best_val = thr.expand(n, T).clone()
        best_idx = torch.full((n, T), -1, dtype=torch.int64)
        best_is_ignored = torch.zeros(n, T, dtype=torch.bool)
        has_regular = torch.zeros(n, T, dtype=torch.bool)
        for gi in range(width):
            iou_g = iou[:, gi, None]
            free = g_valid[:, gi, None] & (~g_taken[:, :, gi] | crowd[:, gi, None])
            take = free & (iou_g >= best_val) & ~(has_regular & ignore[:, gi, None])
            best_val = torch.where(take, iou_g, best_val)
            best_idx = torch.where(take, gi, best_idx)
            best_is_ignored = torch.where(take, ignore[:, gi, None], best_is_ignored)
            has_regular |= take & ~ignore[:, gi, None]
        found = best_idx >= 0
        rows, cols = torch.where(found)
        g_taken[rows, cols, best_idx[rows, cols]] = True
        d_matched[:, idx] = found.T
        d_ignored[:, idx] = (found & best_is_ignored).T
    d_area = d_box[:, 2] * d_box[:, 3]
    d_ignored |= ~d_matched & ((d_area < 0) | (d_area > 1e10))  # unmatched and outside the area range

    # accumulate: the detections of each class sorted by score (stable: image order, then rank), as COCO
    # concatenates them. The precision envelope only steps at true positives (between two of them
    # precision only falls), so COCO's 101-point precision needs the k-th true positive of each threshold
    # only: recall k / num_gt, precision k / (k + false positives before it + eps).
    order = _lexsort(d_cls, -d_score)
    d_cls, is_tp, counted = d_cls[order], (d_matched & ~d_ignored)[:, order], ~d_ignored[:, order]  # [T, N]
    classes, counts = torch.unique_consecutive(d_cls, return_counts=True)
    ends = counts.cumsum(0)
    segment = {c: (e - m, e) for c, m, e in zip(classes.tolist(), counts.tolist(), ends.tolist())}
    gt_classes = sorted(set(g_cls.tolist()))
    precision = torch.full((T, len(rec_thrs), len(gt_classes)), -1.0, dtype=torch.float64)
    for k, cls in enumerate(gt_classes):
        num_gt = int(((g_cls == cls) & ~g_ign).sum())
        if num_gt == 0:
            continue
        s, e = segment.get(cls, (0, 0))
        rows, cols = torch.where(is_tp[:, s:e])  # true positives, by threshold then score
        n_tp = torch.bincount(rows, minlength=T)
        before = torch.arange(len(rows)) - torch.repeat_interleave(n_tp.cumsum(0) - n_tp, n_tp)  # k - 1
        fp = counted[:, s:e].cumsum(1)[rows, cols] - (before + 1)  # counted detections up to the k-th TP, minus k
        tp = (before + 1).to(torch.float64)
        pr = torch.zeros(T, num_gt, dtype=torch.float64)  # [T, num_gt]: 0 for the recalls never reached
        pr[rows, before] = tp / (fp.to(torch.float64) + tp + eps)
        pr = pr.flip(1).cummax(1).values.flip(1)  # envelope: the best precision at this recall or higher
        rc = torch.arange(1, num_gt + 1, dtype=torch.float64) / num_gt  # recall at the k-th true positive, up to 1
        precision[:, :, k] = pr[:, torch.searchsorted(rc, rec_thrs, right=False)]  # first k reaching each recall

    def mean_ap(p):
        valid = p[p > -1]
        return float(valid.mean()) if valid.numel() else -1.0

    n = len(thresholds)
    index = {float(t): i for i, t in enumerate(all_thr.tolist())}
    return {
        "AP": mean_ap(precision[:n]),
        "AP50": mean_ap(precision[index[0.5]]),
        "AP75": mean_ap(precision[index[0.75]]),
        "per_class": {cls: mean_ap(precision[:n, :, k]) for k, cls in enumerate(gt_classes)},
    }
    ### END SOLUTION

# %% tags=["check"]
_preds = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}]
_targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}]
_r = evaluate_detections(_preds, _targets)
assert abs(_r["AP"] - 1.0) < 1e-6 and set(_r) >= {"AP", "AP50", "AP75", "per_class"}, f"evaluate_detections: got {_r}, expected AP 1.0"
assert all(type(_r[_k]) is float for _k in ("AP", "AP50", "AP75")), "evaluate_detections: AP, AP50 and AP75 must be Python floats"
assert list(_r["per_class"]) == [1] and abs(_r["per_class"][1] - 1.0) < 1e-6 and all(type(_k) is int and type(_v) is float for _k, _v in _r["per_class"].items()), \
    f"evaluate_detections: per_class must be {{class id (int): AP (float)}} for the classes with ground truth, got {_r['per_class']}"
# a crowd box absorbs the detection inside it: IoU = intersection / detection area = 1, neither true nor false positive
_crowd_targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 80, 80]]), "labels": torch.tensor([1, 1]), "iscrowd": torch.tensor([0, 1])}]
_crowd_preds = [{"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "scores": torch.tensor([0.8, 0.9]), "labels": torch.tensor([1, 1])}]
_r = evaluate_detections(_crowd_preds, _crowd_targets)
assert abs(_r["AP"] - 1.0) < 1e-6, f"evaluate_detections: the best detection lies inside a crowd box (IoU = 100 / 100): it is ignored, so AP = 1.0; got {_r['AP']}"
_r = evaluate_detections(_preds, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}])
assert _r["AP"] == -1.0 and _r["per_class"] == {}, f"evaluate_detections: without ground truth AP is -1 and per_class is empty, got {_r}"
print("evaluation ✓")
# %% [markdown]
# ## Part 6 — Single-object detection
#
# With one object per image, detection is classification plus regression: a CNN computes features,
# one head predicts the class scores (index 0 is the background class, unused here) and another the
# box, normalized to $[0, 1]$ by the image width and height. The multitask loss is
# $L = L_{cls} + \lambda L_{reg}$ with cross-entropy and the mean squared error.
#
# Sliding windows do not scale: an $h \times w$ window has $(W - w + 1)(H - h + 1)$ positions in an
# $H \times W$ image (0 if the window is larger than the image), and all sizes together give
# $\frac{H(H+1)}{2} \cdot \frac{W(W+1)}{2}$ windows. `sliding_window_count` returns a Python `int`
# (exact, also for huge counts — no floats).

# %% nbgrader={"grade": false, "grade_id": "single_object", "locked": false, "schema_version": 3, "solution": true}
def sliding_window_count(H, W, h=None, w=None):
    """Number of positions (a Python int) of an h x w window in an H x W image; without h, w: the number of windows of every size."""
    ### BEGIN SOLUTION
    if h is not None or w is not None:
        h, w = (H if h is None else h), (W if w is None else w)
        return max(W - w + 1, 0) * max(H - h + 1, 0)
    return (H * (H + 1) // 2) * (W * (W + 1) // 2)
    ### END SOLUTION


class SingleObjectDetector(nn.Module):
    """CNN features -> (class_logits Tensor[B, num_classes + 1] with 0 = background, boxes Tensor[B, 4] xyxy normalized to [0, 1])."""
    def __init__(self, num_classes: int = 3, width: int = 32) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        def block(c_in, c_out):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

        self.backbone = nn.Sequential(block(3, width), block(width, width), block(width, 2 * width), block(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(128, num_classes + 1)
        self.box_head = nn.Linear(128, 4)
        ### END SOLUTION

    def forward(self, images):
        ### BEGIN SOLUTION
        f = self.features(self.pool(self.backbone(images)))
        return self.classifier(f), torch.sigmoid(self.box_head(f))
        ### END SOLUTION


def single_object_loss(class_logits, box_pred, labels, box_targets, lam=1.0):
    """Multitask loss: cross-entropy of the class + lam * mean squared error of the normalized box."""
    ### BEGIN SOLUTION
    return F.cross_entropy(class_logits, labels) + lam * F.mse_loss(box_pred, box_targets)
    ### END SOLUTION

# %% tags=["check"]
assert sliding_window_count(4, 5) == 150 and sliding_window_count(4, 5, 2, 3) == 9, "sliding_window_count: expected 150 and 9"
assert type(sliding_window_count(600, 800)) is int and type(sliding_window_count(4, 5, 2, 3)) is int, "sliding_window_count: return a Python int"
with torch.no_grad():
    _logits, _pred = SingleObjectDetector(3)(torch.rand(2, 3, 64, 64))
assert _logits.shape == (2, 4) and _pred.shape == (2, 4), "SingleObjectDetector(3): expected class scores Tensor[2, 4] and boxes Tensor[2, 4]"
assert 0 <= float(_pred.min()) and float(_pred.max()) <= 1, "SingleObjectDetector: boxes must be normalized to [0, 1]"
print("single-object detector ✓")
# %% [markdown]
# Train it on one-object shapes images and look at its predictions.
#
# **How the grader scores your detector**: it trains a fresh `SingleObjectDetector(3)` with this
# cell's recipe — 400 Adam steps (lr $10^{-3}$) on batches of 32 one-object 64×64 shapes images,
# cross-entropy + mean squared error — then predicts 128 images it never trained on. It needs a
# classification accuracy ≥ 0.6 and a mean box IoU ≥ 0.55, and the score must come from the learned
# weights: with the trained weights shuffled, and with the weights as they were before training, accuracy
# and IoU must both be at least 0.15 lower (a hand-written rule that ignores the weights gets nothing). The
# grader renders its own training images, and renames the class ids of their labels by a secret permutation
# (never the identity; the evaluation's labels are renamed the same way): a network that learns from its
# data predicts the renamed ids, a rule that decides the class by itself does not. Its training boxes are moved
# the same way: shifted by half their size along both axes and scaled by 0.8 or 1.3 (the directions and the
# scale are secret; the evaluation's boxes move alike), so a network that regresses what it was taught follows
# them, and a rule that finds the object's outline does not. So take classes and boxes from the training
# targets only. The cell prints the same numbers on a validation set (true classes and boxes).

# %%
import copy

from lecture_utils.data import CLASSES, ShapesDataset
from lecture_utils.viz import draw_boxes, show_image
import matplotlib.pyplot as plt

S, STEPS = 64, 400  # the grader's recipe: 400 Adam steps
kw = dict(min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)
train_set, val_set = ShapesDataset(2048, S, seed=1, **kw), ShapesDataset(128, S, seed=2, **kw)


def make_batch(ds, idx):
    samples = [ds[i] for i in idx]
    images = torch.stack([image for image, _ in samples]).to(device)
    labels = torch.stack([target["labels"][0] for _, target in samples]).to(device)
    boxes = (torch.stack([target["boxes"][0] for _, target in samples]) / S).to(device)
    return images, labels, boxes


seed_everything(0)
model = SingleObjectDetector(3).to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
batches = [make_batch(train_set, range(i, i + 32)) for i in range(0, len(train_set), 32)]
losses = []
model.train()
for step in range(STEPS):
    images, labels, boxes = batches[step % len(batches)]
    logits, pred = model(images)
    loss = single_object_loss(logits, pred, labels, boxes)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())


def validation_scores(net, images, labels, boxes):
    """(accuracy, mean box IoU) on a validation batch, as the grader computes them."""
    net.eval()
    with torch.no_grad():
        logits, pred = net(images)
    accuracy = float((logits.argmax(1) == labels).double().mean())
    iou = torch.diag(tv_ops.box_iou(pred.double(), boxes.double())).nan_to_num(0.0)
    return accuracy, float(iou.mean())


val_images, val_labels, val_boxes = make_batch(val_set, range(len(val_set)))
accuracy, mean_iou = validation_scores(model, val_images, val_labels, val_boxes)
shuffled = copy.deepcopy(model)
with torch.no_grad():
    for p in shuffled.parameters():
        p.copy_(p.flatten()[torch.randperm(p.numel(), device=p.device)].reshape(p.shape))
shuffled_accuracy, shuffled_iou = validation_scores(shuffled, val_images, val_labels, val_boxes)
print(f"validation ({len(val_set)} images) after {STEPS} steps: accuracy {accuracy:.2f} (the grader needs >= 0.6), "
      f"mean IoU {mean_iou:.2f} (needs >= 0.55)")
print(f"with the trained weights shuffled: accuracy {shuffled_accuracy:.2f}, mean IoU {shuffled_iou:.2f} "
      f"(both must be at least 0.15 lower: the prediction must come from the learned weights)")

model.eval()
images, labels, boxes = val_images[:8], val_labels[:8], val_boxes[:8]
with torch.no_grad():
    logits, pred = model(images)
fig, axes = plt.subplots(1, 8, figsize=(16, 2.4))
for i, ax in enumerate(axes):
    show_image(images[i].cpu(), ax)
    draw_boxes(ax, boxes[i : i + 1].cpu() * S, color="white", linewidth=1)
    draw_boxes(ax, pred[i : i + 1].cpu() * S, [CLASSES[int(logits[i].argmax())]])
plt.suptitle("white: ground truth, green: prediction")
plt.show()

# %% [markdown]
# ## Part 7 — Region proposals
#
# Instead of all windows, propose a few hundred regions likely to contain objects. Selective search
# over-segments the image (`skimage.segmentation.felzenszwalb`), then repeatedly merges the two most
# similar *adjacent* regions — similar colour histograms, small combined size, and a merged box they
# fill well — until one region covers the whole image, and proposes the box of every region that ever
# exists: the initial segments and every merged region. Return the unique boxes, at most 2000 (if there
# are more, keep the 2000 largest); a region's box runs from its first pixel to one past its last,
# `(min x, min y, max x + 1, max y + 1)`.
#
# The grader checks the recall of your proposals on shapes images, and on images of flat-coloured
# stripes that the proposals are the regions of such a hierarchy: $n$ initial regions merged two at a
# time give $2n - 1$ regions, each merged one the union of two adjacent ones (a segmentation at several
# scales does not do that).
#
# Not allowed: skimage's `graph.merge_hierarchical` — `felzenszwalb` for the initial regions is the
# only library step; write the merging loop yourself.

# %% nbgrader={"grade": false, "grade_id": "proposals", "locked": false, "schema_version": 3, "solution": true}
def proposals_from_segments(image, scale=100.0, sigma=0.8, min_size=20):
    """Region proposals Tensor[K, 4] xyxy: a Felzenszwalb over-segmentation (skimage) merged hierarchically by colour, size and fill similarity; every region ever formed gives a box."""
    ### BEGIN SOLUTION
    from skimage.segmentation import felzenszwalb

    pixels = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    h, w = pixels.shape[:2]
    seg = felzenszwalb(pixels, scale=scale, sigma=sigma, min_size=min_size)
    n = int(seg.max()) + 1
    flat = seg.reshape(-1)
    size = np.bincount(flat, minlength=n).astype(np.float64)
    ys, xs = np.divmod(np.arange(h * w), w)
    box = np.stack([np.full(n, w), np.full(n, h), np.zeros(n), np.zeros(n)], axis=1).astype(np.float64)
    np.minimum.at(box[:, 0], flat, xs)
    np.minimum.at(box[:, 1], flat, ys)
    np.maximum.at(box[:, 2], flat, xs + 1)
    np.maximum.at(box[:, 3], flat, ys + 1)
    bins = np.minimum((pixels * 8).astype(np.int64), 7)  # 8 bins per channel
    hist = np.zeros((n, 24))
    for c in range(3):
        np.add.at(hist, (flat, c * 8 + bins[..., c].reshape(-1)), 1.0)
    hist /= hist.sum(1, keepdims=True)
    pairs = set()
    for a, b in ((seg[:, 1:], seg[:, :-1]), (seg[1:, :], seg[:-1, :])):
        diff = a != b
        for u, v in zip(a[diff].tolist(), b[diff].tolist()):
            pairs.add((min(u, v), max(u, v)))
    regions = {i: (size[i], box[i], hist[i]) for i in range(n)}
    image_area = float(h * w)

    def similarity(i, j):
        (si, bi, hi), (sj, bj, hj) = regions[i], regions[j]
        union = (max(bi[2], bj[2]) - min(bi[0], bj[0])) * (max(bi[3], bj[3]) - min(bi[1], bj[1]))
        return np.minimum(hi, hj).sum() + (1 - (si + sj) / image_area) + (1 - (union - si - sj) / image_area)

    neighbours = {i: set() for i in range(n)}
    for i, j in pairs:
        neighbours[i].add(j)
        neighbours[j].add(i)
    sims = {(i, j): similarity(i, j) for i, j in pairs}
    all_boxes = [box[i] for i in range(n)]
    next_id = n
    while sims:
        i, j = max(sims, key=sims.get)
        (si, bi, hi), (sj, bj, hj) = regions.pop(i), regions.pop(j)
        merged_box = np.array([min(bi[0], bj[0]), min(bi[1], bj[1]), max(bi[2], bj[2]), max(bi[3], bj[3])])
        regions[next_id] = (si + sj, merged_box, (si * hi + sj * hj) / (si + sj))
        all_boxes.append(merged_box)
        around = (neighbours.pop(i) | neighbours.pop(j)) - {i, j}
        sims = {k: v for k, v in sims.items() if i not in k and j not in k}
        neighbours[next_id] = around
        for k in around:
            neighbours[k] -= {i, j}
            neighbours[k].add(next_id)
            sims[(k, next_id)] = similarity(k, next_id)
        next_id += 1
    boxes = torch.unique(torch.tensor(np.stack(all_boxes), dtype=torch.float32), dim=0)
    if len(boxes) > 2000:  # keep the 2000 largest
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[areas.argsort(descending=True, stable=True)[:2000]]
    return boxes
    ### END SOLUTION

# %% tags=["check"]
from lecture_utils.data import ShapesDataset

_img, _t = ShapesDataset(1, (96, 128), seed=3)[0]
_props = proposals_from_segments(_img)
assert _props.ndim == 2 and _props.shape[1] == 4 and 0 < len(_props) <= 2000, "proposals_from_segments: return Tensor[K, 4] with 0 < K <= 2000"
print(f"{len(_props)} proposals; best IoU per object:", tv_ops.box_iou(_t["boxes"], _props).max(1).values)
# three vertical stripes: every region is a run of neighbouring columns; merged two at a time up to the whole image
_stripes = torch.zeros(3, 32, 48)
_stripes[0, :, :16], _stripes[1, :, 16:32], _stripes[2, :, 32:] = 0.9, 0.9, 0.9
_props = proposals_from_segments(_stripes)
assert [0.0, 0.0, 48.0, 32.0] in _props.tolist(), "proposals_from_segments: merge until one region covers the whole image, and propose its box"
_runs = sorted({(round(_b[0]), round(_b[2])) for _b in _props.tolist()})
_leaves = [_r for _r in _runs if not any(_o != _r and _r[0] <= _o[0] and _o[1] <= _r[1] for _o in _runs)]
assert len(_runs) == 2 * len(_leaves) - 1, f"proposals_from_segments: {len(_leaves)} initial regions merged two at a time give {2 * len(_leaves) - 1} regions, got {len(_runs)}"
# %% [markdown]
# The proposals that best cover each object of a shapes image:

# %%
_img, _t = ShapesDataset(1, (96, 128), seed=4)[0]
_props = proposals_from_segments(_img)
_best = tv_ops.box_iou(_t["boxes"], _props).argmax(1)
_fig, _ax = plt.subplots(figsize=(5, 4))
show_image(_img, _ax, title=f"{len(_props)} proposals; the best one per object")
draw_boxes(_ax, _props, color="white", linewidth=0.3)
draw_boxes(_ax, _props[_best], color="lime", linewidth=2)
plt.show()

# %% [markdown]
# ## Submit
#
# Save the notebook, then run the cell below. It checks the notebook, runs the visible checks in a fresh
# process, and writes `a2_detection_basics_submission.ipynb` (downloaded automatically in Colab).

# %%
from lecture_utils import submit

submit.export("a2_detection_basics.ipynb")
