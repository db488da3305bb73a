"""Part 4: nms and batched_nms against torchvision (24 points)."""
import pytest
import torch
import torchvision.ops as tv

from a2_helpers import NMS_WATCH, forbidden_nms_used, random_boxes
from autograder.testing import assert_tensor, fail


def check_nms(student, boxes, scores, thr, what):
    result = student.call("nms", boxes, scores, thr, count_ops=True, watch=NMS_WATCH)
    if forbidden_nms_used(result):
        fail("nms must not call torchvision's nms: write the greedy loop yourself")
    assert_tensor(result.value, tv.nms(boxes, scores, thr), f"kept indices, {what}")


@pytest.mark.points(6)
def test_nms_random_boxes(student):
    """same indices in the same order as torchvision for 1 to 800 random boxes and several thresholds"""
    g = torch.Generator().manual_seed(0)
    for n in (1, 7, 60, 800):
        boxes, scores = random_boxes(n, g, scale=300), torch.rand(n, generator=g)
        for thr in (0.25, 0.5, 0.7):
            check_nms(student, boxes, scores, thr, f"{n} boxes, threshold {thr}")


@pytest.mark.points(3)
def test_nms_tied_scores(student):
    """ties in score are broken as torchvision does (stable order: lower index first)"""
    g = torch.Generator().manual_seed(1)
    boxes = random_boxes(300, g, scale=150)
    scores = (torch.rand(300, generator=g) * 5).round() / 5
    check_nms(student, boxes, scores, 0.5, "scores with many ties")
    same = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [30, 30, 40, 40]])
    check_nms(student, same, torch.ones(4), 0.5, "all scores equal")


@pytest.mark.points(2)
def test_nms_iou_exactly_at_the_threshold(student):
    """a box whose IoU equals the threshold is kept (suppression needs IoU > threshold)"""
    boxes = torch.tensor([[0.0, 0, 2, 1], [0, 0, 1, 1], [0, 0, 4, 1], [10, 10, 11, 11]])  # IoU 0.5 and 0.5 with box 0
    check_nms(student, boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5, "IoU exactly 0.5 with threshold 0.5")
    check_nms(student, boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.25, "threshold 0.25")


@pytest.mark.points(2)
def test_nms_edge_cases(student):
    """no boxes, zero-area boxes, float64"""
    check_nms(student, torch.zeros(0, 4), torch.zeros(0), 0.5, "no boxes")
    degenerate = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 0]])
    check_nms(student, degenerate, torch.tensor([0.9, 0.8, 0.7, 0.6]), 0.5, "zero-area boxes")
    g = torch.Generator().manual_seed(2)
    b64, s64 = random_boxes(200, g, dtype=torch.float64), torch.rand(200, generator=g, dtype=torch.float64)
    check_nms(student, b64, s64, 0.4, "float64 boxes")


@pytest.mark.points(3)
def test_nms_many_boxes(student):
    """5000 boxes: correct and fast enough (vectorized inner step)"""
    g = torch.Generator().manual_seed(3)
    boxes, scores = random_boxes(5000, g, scale=1000), torch.rand(5000, generator=g)
    check_nms(student, boxes, scores, 0.5, "5000 boxes")


def check_batched(student, boxes, scores, idxs, thr, what):
    result = student.call("batched_nms", boxes, scores, idxs, thr, count_ops=True, watch=NMS_WATCH)
    if forbidden_nms_used(result):
        fail("batched_nms must not call torchvision's nms or batched_nms")
    got = result.value
    expected = tv.batched_nms(boxes, scores, idxs, thr)
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64 or got.ndim != 1:
        fail(f"batched_nms must return a 1-D int64 Tensor of indices ({what})")
    if sorted(got.tolist()) != sorted(expected.tolist()):
        missing, extra = set(expected.tolist()) - set(got.tolist()), set(got.tolist()) - set(expected.tolist())
        fail(f"batched_nms keeps a different set of boxes ({what}): missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}")
    if len(got) > 1 and not bool((scores[got][1:] <= scores[got][:-1]).all()):
        fail(f"batched_nms must return the kept indices sorted by decreasing score ({what})")


@pytest.mark.points(6)
def test_batched_nms(student):
    """same kept set as torchvision, sorted by score, for few and many boxes (integer coordinates)"""
    g = torch.Generator().manual_seed(4)
    for n, classes in ((1, 1), (50, 3), (600, 5), (1500, 10)):
        boxes = random_boxes(n, g, scale=300, integer=True)
        scores, idxs = torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)
        for thr in (0.3, 0.6):
            check_batched(student, boxes, scores, idxs, thr, f"{n} boxes in {classes} classes, threshold {thr}")
    same = torch.tensor([[0.0, 0, 10, 10]] * 4)
    check_batched(student, same, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 1, 0, 1]), 0.5, "identical boxes in two classes")


@pytest.mark.points(2)
def test_batched_nms_empty(student):
    """no boxes: an empty int64 tensor"""
    check_batched(student, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5, "no boxes")
