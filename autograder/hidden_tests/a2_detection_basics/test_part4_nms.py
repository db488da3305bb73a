"""Part 4: nms and batched_nms against torchvision.

Random boxes have non-integer coordinates and no pair with an IoU within 1e-6 of the threshold, so
an NMS that computes and compares the IoU in float32 or in float64 gives the same answer; exact ties
use integer boxes and thresholds exact in float32 (0.25, 0.5, 0.75)."""
import pytest
import torch
import torchvision.ops as tv

from .helpers import call, call_unchanged, check_nms_pictured, drop_near_ties, random_boxes
from autograder.testing import assert_tensor, describe, fail


def check_nms(student, boxes, scores, thr, what, record_property=None):
    """nms keeps torchvision's indices; a failure shows the boxes kept around the first difference (with record_property)."""
    check_nms_pictured(record_property, call(student, "nms", boxes, scores, thr), tv.nms(boxes, scores, thr), boxes, scores, thr, f"nms: kept indices, {what}")


@pytest.mark.part("nms")
@pytest.mark.points(6)
def test_nms_random_boxes(student, record_property):
    """same indices in the same order as torchvision for 1 to 800 random boxes and several thresholds"""
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 60, 800):
        boxes, scores = random_boxes(n, g, scale=300), torch.rand(n, generator=g)
        for thr in (0.25, 0.5, 0.7):
            b, s = drop_near_ties(boxes, [thr], scores)
            check_nms(student, b, s, thr, f"{len(b)} boxes, threshold {thr}", record_property)


@pytest.mark.part("nms")
@pytest.mark.points(3)
def test_nms_tied_scores(student, record_property):
    """ties in score are broken as torchvision does (stable order: lower index first)"""
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(300, g, scale=150)
    scores = (torch.rand(300, generator=g) * 5).round() / 5
    boxes, scores = drop_near_ties(boxes, [0.5], scores)
    check_nms(student, boxes, scores, 0.5, "scores with many ties", record_property)
    same = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]])
    check_nms(student, same, torch.ones(4), 0.5, "all scores equal", record_property)


@pytest.mark.part("nms")
@pytest.mark.points(2)
def test_nms_iou_exactly_at_the_threshold(student, record_property):
    """a box whose IoU equals the threshold is kept (suppression needs IoU > threshold)"""
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 4, 1], [10, 10, 11, 11], [10, 10, 14, 11], [10, 10, 13, 11]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])  # IoU 0.5, 0.5, 0.25 with box 0 / 1; 0.25, 0.75 / 0.75 among 3, 4, 5
    for thr in (0.5, 0.25, 0.75):
        check_nms(student, boxes, scores, thr, f"IoU exactly {thr} with threshold {thr}", record_property)


@pytest.mark.part("nms")
@pytest.mark.points(2)
def test_nms_edge_cases(student, record_property):
    """no boxes, zero-area boxes, float64; int64 indices; inputs unchanged"""
    check_nms(student, torch.zeros(0, 4), torch.zeros(0), 0.5, "no boxes", record_property)
    degenerate = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 0]])
    check_nms(student, degenerate, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5, "zero-area boxes", record_property)
    g = torch.Generator().manual_seed(2)
    b64, s64 = drop_near_ties(random_boxes(200, g, dtype=torch.float64), [0.4], torch.rand(200, generator=g, dtype=torch.float64))
    check_nms(student, b64, s64, 0.4, "float64 boxes", record_property)
    call_unchanged(student, "nms", b64[:30], s64[:30], 0.4)


@pytest.mark.part("nms")
@pytest.mark.points(3)
def test_nms_many_boxes(student, record_property):
    """5000 boxes: correct and fast enough (vectorized inner step)"""
    g = torch.Generator().manual_seed(3)
    boxes, scores = drop_near_ties(random_boxes(5000, g, scale=1000), [0.5], torch.rand(5000, generator=g))
    check_nms(student, boxes, scores, 0.5, f"{len(boxes)} boxes", record_property)


def check_batched(student, boxes, scores, idxs, thr, what):
    got = call(student, "batched_nms", boxes, scores, idxs, thr)
    expected = tv.batched_nms(boxes, scores, idxs, thr)
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64 or got.ndim != 1:
        fail(f"batched_nms must return a 1-D int64 Tensor of indices ({what}), got {describe(got)}")
    if sorted(got.tolist()) != sorted(expected.tolist()):
        missing, extra = set(expected.tolist()) - set(got.tolist()), set(got.tolist()) - set(expected.tolist())
        fail(f"batched_nms keeps a different set of boxes ({what}): missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")
    if len(got) > 1 and not bool((scores[got][1:] <= scores[got][:-1]).all()):
        fail(f"batched_nms must return the kept indices sorted by decreasing score ({what})")


@pytest.mark.part("nms")
@pytest.mark.points(6)
def test_batched_nms(student):
    """same kept set as torchvision, sorted by score: few and many boxes, integer coordinates up to 1333"""
    g = torch.Generator().manual_seed(4)
    for n, classes, scale in ((1, 1, 300), (50, 3, 300), (600, 5, 300), (400, 6, 1000), (1500, 10, 300)):
        boxes = random_boxes(n, g, scale=scale, integer=True)
        if scale > 300:  # coordinates up to 1333 (Faster R-CNN resizes images to at most 1333 pixels)
            boxes = (boxes * 1.333).round().clamp(max=1333.0)
        scores, idxs = torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)
        for thr in (0.25, 0.5, 0.75):
            check_batched(student, boxes, scores, idxs, thr, f"{n} boxes in {classes} classes, largest coordinate {boxes.max().item():g}, threshold {thr}")
    same = torch.tensor([[0.0, 0, 10, 10]] * 4)
    check_batched(student, same, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 0, 1]), 0.5, "identical boxes in two classes")
    far = torch.tensor([[1200.0, 1200, 1333, 1333], [200, 200, 333, 333], [1210, 1205, 1333, 1333], [5, 5, 25, 25]])
    check_batched(student, far, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 1, 0]), 0.5, "boxes at both ends of a 1333 x 1333 image")


@pytest.mark.part("nms")
@pytest.mark.points(2)
def test_batched_nms_empty_and_inputs(student):
    """no boxes: an empty int64 tensor; the inputs are unchanged"""
    check_batched(student, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5, "no boxes")
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(40, g, scale=100, integer=True)
    call_unchanged(student, "batched_nms", boxes, torch.rand(40, generator=g), torch.randint(0, 3, (40,), generator=g), 0.5)
