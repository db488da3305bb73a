"""Data and shared checks of the a2 hidden tests.

Every call of a graded function goes through ``call``: it counts, in the worker, the library
functions that do the function's job (by their function objects: captured references, aliases and
other threads are counted too) and fails with a message naming them. The notebook lists them.
"""
import math

import torch
import torchvision.ops as tv

from autograder.client import RemoteObject
from autograder.hidden_tests.kit.calls import GradedCalls
from autograder.testing import assert_inputs_unchanged, assert_number, assert_tensor, describe, fail

GRADED = GradedCalls("a2_detection_basics")  # the forbidden calls: forbidden.toml
call = GRADED.call


def call_unchanged(student, name, *args, what=None, allow_alias=False):
    """Call ``name`` and fail if it changed a tensor of its arguments in place (at any depth: lists of
    dicts included) or, for tensor arguments, returned one of them itself. Returns the result."""
    label = what or name
    if name in GRADED.rules:  # a test of side effects gives no points to a function that delegates its job
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


# ----------------------------------------------------------------------------- pictures of failed box checks
# A failed check on boxes also shows them: the expected boxes (dashed) against the returned ones (solid), drawn here
# (autograder.feedback_figures; a malformed reply costs the picture, never more). The checks take the test's
# ``record_property`` (None: no picture).
def _differing(got, expected: torch.Tensor, rtol: float, atol: float) -> list[int]:
    """Rows of ``expected`` Tensor[N, D] where ``got`` (a plain tensor of the same shape) differs; [] otherwise."""
    if type(got) is not torch.Tensor or got.shape != expected.shape or got.is_complex() or expected.ndim != 2:
        return []
    close = torch.isclose(got.detach().double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True)
    return torch.where(~close.all(1))[0].tolist()


def check_boxes(record_property, got, expected: torch.Tensor, what: str, context: torch.Tensor, *, rtol: float, atol: float) -> None:
    """``assert_tensor(got, expected)`` of boxes Tensor[N, 4k] (k boxes per row of ``context`` Tensor[N, 4], e.g. the
    proposals they were decoded from); on failure, a picture of the first 3 boxes that differ over their ``context``."""
    from autograder.feedback_figures import BoxPanel, attach, box_comparison_figure
    from autograder.testing import GradingFailure

    try:
        assert_tensor(got, expected, what, rtol=rtol, atol=atol)
    except GradingFailure:
        if record_property is not None:
            k = max(expected.shape[-1] // 4, 1)
            rows = _differing(got, expected, rtol, atol)[:3]
            panels = []
            for r in rows:
                for j in range(k):
                    e, g = expected[r, 4 * j:4 * j + 4], got[r, 4 * j:4 * j + 4]
                    if not bool(torch.isclose(g.double(), e.double(), rtol=rtol, atol=atol, equal_nan=True).all()) and len(panels) < 3:
                        panels.append(BoxPanel(f"row {r}" + (f", box {j}" if k > 1 else ""), e[None], g[None], context=context[r:r + 1],
                                               context_labels=["proposal"], note=f"expected {[round(v, 2) for v in e.tolist()]}"))
            attach(record_property, box_comparison_figure(panels, caption=f"{what}: the expected boxes (dashed) and yours (solid) where "
                                                                         "they differ (the first 3), each over its proposal (grey)."))
        raise


def check_nms_pictured(record_property, got, expected: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, threshold: float, what: str) -> None:
    """``assert_tensor(got, expected)`` of the indices nms keeps; on failure, a picture around the (at most 3) highest
    scoring boxes kept by one and not the other: the kept boxes there, expected and returned, over the input boxes."""
    from autograder.feedback_figures import BoxPanel, attach, box_comparison_figure
    from autograder.testing import GradingFailure

    try:
        assert_tensor(got, expected, what)
    except GradingFailure:
        if record_property is not None and type(got) is torch.Tensor and got.ndim == 1 and not got.is_floating_point() \
                and not got.is_complex() and len(got) <= len(boxes) and (not len(got) or (int(got.min()) >= 0 and int(got.max()) < len(boxes))):
            kept, returned = set(expected.tolist()), set(got.long().tolist())
            panels = []
            for focus in sorted(kept ^ returned, key=lambda i: (-float(scores[i]), i))[:3]:
                near = torch.where(tv.box_iou(boxes[focus:focus + 1].double(), boxes.double())[0] > 0)[0]
                near = near[torch.argsort(scores[near], descending=True, stable=True)][:8].tolist()
                if focus not in near:
                    near = [focus] + near[:7]
                note = "expected kept, yours suppressed it" if focus in kept else "expected suppressed, yours kept it"
                panels.append(BoxPanel(f"around box {focus}", boxes[[i for i in near if i in kept]], boxes[[i for i in near if i in returned]],
                                       context=boxes[near], context_labels=[f"{i}: {float(scores[i]):.2f}" for i in near], note=f"box {focus}: {note}"))
            attach(record_property, box_comparison_figure(panels, caption=f"{what}, IoU threshold {threshold}: the boxes kept as expected (dashed) "
                                                                         "and by yours (solid) around the first boxes that differ; grey: the input "
                                                                         "boxes there, labelled index: score."))
        raise


def check_iou_pictured(record_property, got, expected: torch.Tensor, a: torch.Tensor, b: torch.Tensor, what: str, check=assert_tensor, **tol) -> None:
    """``check(got, expected, what)`` of an IoU matrix of boxes ``a`` x ``b``; on failure, a picture of the first (at most
    3) pairs whose IoU differs, with the expected and returned IoU."""
    from autograder.feedback_figures import BoxPanel, attach, box_comparison_figure
    from autograder.testing import GradingFailure

    try:
        check(got, expected, what, **tol)
    except GradingFailure:
        if record_property is not None:
            rows = _differing(got.reshape(-1, 1) if type(got) is torch.Tensor and got.shape == expected.shape else None,
                              expected.reshape(-1, 1), tol.get("rtol", 1e-5), tol.get("atol", 1e-6))
            panels = []
            for flat in [r for r in rows if not bool(expected.reshape(-1)[r].isnan())][:3]:
                i, j = divmod(flat, expected.shape[1])
                panels.append(BoxPanel(f"a[{i}] and b[{j}]", None, None, context=torch.stack([a[i], b[j]]).double(), context_labels=[f"a[{i}]", f"b[{j}]"],
                                       note=f"IoU expected {float(expected[i, j]):.4g}, yours {float(got[i, j]):.4g}"))
            attach(record_property, box_comparison_figure(panels, caption=f"{what}: the first pairs of boxes whose IoU differs from the expected."))
        raise
