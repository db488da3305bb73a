"""Data and shared checks of the a2 hidden tests.

Every call of a graded function goes through ``call``: it counts, in the worker, the library
functions that do the function's job (by their function objects: captured references, aliases and
other threads are counted too) and fails with a message naming them. The notebook lists them.
"""
import math

import torch
import torchvision.ops as tv

from autograder.client import RemoteObject
from autograder.testing import assert_inputs_unchanged, assert_number, assert_tensor, call_checked, describe, fail

_BOX_CONVERT = ["torchvision.ops.boxes.box_convert"] + [
    f"torchvision.ops._box_convert.{f}" for f in ("_box_cxcywh_to_xyxy", "_box_xyxy_to_cxcywh", "_box_xywh_to_xyxy", "_box_xyxy_to_xywh")
] + ["torchvision.transforms.v2.functional._meta._convert_bounding_box_format"]
_BOX_IOU = [f"torchvision.ops.boxes.{f}" for f in ("box_iou", "_box_inter_union", "generalized_box_iou", "complete_box_iou", "distance_box_iou", "_box_diou_iou")]
_BOX_CODER = [f"torchvision.models.detection._utils.BoxCoder.{m}" for m in ("encode", "encode_single", "decode", "decode_single")] + [
    "torchvision.models.detection._utils.encode_boxes"]
_NMS = [f"torchvision.ops.boxes.{f}" for f in ("nms", "batched_nms", "_batched_nms_coordinate_trick", "_batched_nms_vanilla")]
_COCOEVAL = [f"pycocotools.cocoeval.COCOeval.{m}" for m in ("evaluate", "evaluateImg", "computeIoU", "accumulate")] + [
    f"faster_coco_eval.core.cocoeval.COCOeval.{m}" for m in ("evaluate", "evaluateImg", "computeIoU", "accumulate")] + [
    f"faster_coco_eval.core.faster_eval_api.COCOeval_faster.{m}" for m in ("evaluate", "accumulate")]

# graded function -> (library functions it must not call, operators it must not run, what to do instead)
FORBIDDEN = {
    "box_convert": (_BOX_CONVERT, [], "compute the new coordinates with tensor arithmetic"),
    "box_area": (["torchvision.ops.boxes.box_area"], [], "multiply the side lengths"),
    "box_iou": (_BOX_IOU, [], "broadcast boxes1[:, None] against boxes2[None, :]"),
    "encode_boxes": (_BOX_CODER, [], "write the (tx, ty, tw, th) formulas with tensor operations"),
    "decode_boxes": (_BOX_CODER, [], "invert the formulas with tensor operations"),
    "label_proposals": (["torchvision.models.detection._utils.Matcher.__call__"], [], "compare the best IoU with the thresholds"),
    "nms": (_NMS, ["torchvision::nms"], "write the greedy loop yourself"),
    "batched_nms": (_NMS, ["torchvision::nms"], "call your own nms"),
    "precision_recall": (_COCOEVAL, [], ""),
    "average_precision": (_COCOEVAL, [], "compute the precision envelope and sample it yourself"),
    "evaluate_detections": (_COCOEVAL, [], "match and accumulate yourself; pycocotools is for your own checks"),
    "proposals_from_segments": (["skimage.graph._graph_merge.merge_hierarchical"], [], "merge the regions with your own loop"),
}


def call(student, name, *args, timeout=None, **kwargs):
    """``student.<name>(*args)`` in the worker; fails (no points) if it used a library function that does its job."""
    forbid, forbid_ops, hint = FORBIDDEN[name]
    return call_checked(student, name, *args, forbid=forbid, forbid_ops=forbid_ops, hint=hint, timeout=timeout, **kwargs).value


def call_unchanged(student, name, *args, what=None, allow_alias=False):
    """Call ``name`` and fail if it changed a tensor of its arguments in place (at any depth: lists of
    dicts included) or, for tensor arguments, returned one of them itself. Returns the result."""
    label = what or name
    if name in FORBIDDEN:  # a test of side effects gives no points to a function that delegates its job
        call(student, name, *args)
    if all(isinstance(a, torch.Tensor) or not isinstance(a, (list, tuple, dict)) for a in args):
        return assert_inputs_unchanged(student, name, args, label, allow_alias=allow_alias)
    result, changed = student.helper("call_with_deep_snapshot")(student.__getattr__(name).get(), list(args))
    bad = [i for i, c in enumerate(changed) if c]
    if bad:
        fail(f"{label}: {name} changed its argument(s) {bad} in place; leave the caller's data alone (compute new tensors)")
    return result


def random_boxes(n, generator, scale=100.0, min_size=1.0, integer=False, dtype=torch.float32):
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale
    wh = min_size + torch.rand(n, 2, generator=generator, dtype=torch.float64) * scale / 2
    boxes = torch.cat([xy, xy + wh], dim=1)
    if integer:
        boxes = boxes.round()
    return boxes.to(dtype)


def near_threshold(iou, thresholds, eps=1e-6):
    """Boolean mask of IoUs within ``eps`` of any threshold (where float32 and float64 may disagree)."""
    near = torch.zeros_like(iou, dtype=torch.bool)
    for t in thresholds:
        near |= (iou - t).abs() < eps
    return near


def drop_near_ties(boxes, thresholds, *others):
    """Remove the boxes whose IoU with an earlier box is within 1e-6 of a threshold (random data must
    not hinge on float rounding). Returns the kept boxes and the same rows of ``others``."""
    b = boxes.double()
    drop = torch.zeros(len(b), dtype=torch.bool)
    for start in range(0, len(b), 512):
        iou = tv.box_iou(b[start:start + 512], b)
        near = near_threshold(iou, thresholds)
        rows = torch.arange(start, start + len(iou))[:, None]
        near &= torch.arange(len(b))[None, :] > rows  # pairs (i, j) with i < j: drop j
        drop |= near.any(0)
    keep = ~drop
    return (boxes[keep],) + tuple(o[keep] for o in others)


def assert_iou(actual, expected, what, **tol):
    """IoU matrices equal; the IoU of two zero-area boxes (0 / 0, NaN in torchvision) is not checked."""
    if isinstance(actual, torch.Tensor) and type(actual) is torch.Tensor and actual.shape == expected.shape:
        undefined = expected.isnan()
        if bool(undefined.any()):
            actual = torch.where(undefined, expected.to(actual.dtype), actual)
    assert_tensor(actual, expected, what, **tol)


def assert_plain_number(value, what):
    """A Python float / int (not a numpy or torch scalar) that is a number."""
    if isinstance(value, RemoteObject) or type(value) is bool or not isinstance(value, (int, float)) or isinstance(value, torch.Tensor):
        fail(f"{what}: expected a Python float, got {describe(value)} (convert it with float(...))")
    if math.isnan(float(value)):
        fail(f"{what}: got nan")
    return float(value)


def assert_number_like(value, expected, what, **tol):
    assert_plain_number(value, what)
    assert_number(value, expected, what, **tol)
