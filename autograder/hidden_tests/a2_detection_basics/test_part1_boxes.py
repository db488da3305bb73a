"""Part 1: box_convert, box_area, box_iou (12 points)."""
import pytest
import torch
import torchvision.ops as tv

from a2_helpers import random_boxes
from autograder.testing import assert_tensor, fail

FORMATS = ("xyxy", "xywh", "cxcywh")


@pytest.mark.points(4)
def test_box_convert_all_formats(student):
    """box_convert between every pair of formats equals torchvision (float32, float64, empty)"""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        boxes = random_boxes(37, g, dtype=dtype)
        for i in FORMATS:
            for o in FORMATS:
                src = tv.box_convert(boxes, "xyxy", i)
                assert_tensor(student.box_convert(src, i, o), tv.box_convert(src, i, o), f"box_convert(.., {i!r}, {o!r}) {dtype}", rtol=1e-6, atol=1e-4)
    empty = torch.zeros(0, 4)
    assert_tensor(student.box_convert(empty, "xyxy", "cxcywh"), tv.box_convert(empty, "xyxy", "cxcywh"), "box_convert of no boxes")


@pytest.mark.points(2)
def test_box_area(student):
    """box_area equals torchvision, zero-area boxes included"""
    g = torch.Generator().manual_seed(1)
    boxes = torch.cat([random_boxes(20, g), torch.tensor([[5.0, 5, 5, 9], [3, 3, 3, 3]])])
    assert_tensor(student.box_area(boxes), tv.box_area(boxes), "box_area", rtol=1e-6, atol=1e-5)
    assert_tensor(student.box_area(torch.zeros(0, 4)), torch.zeros(0), "box_area of no boxes")


@pytest.mark.points(4)
def test_box_iou_matches_torchvision(student):
    """box_iou on random, non-square, identical, disjoint, touching and degenerate boxes"""
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(31, g, scale=200), random_boxes(17, g, scale=200)
    assert_tensor(student.box_iou(a, b), tv.box_iou(a, b), "box_iou(random 31 x 17)", rtol=1e-5, atol=1e-6)
    special = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [10, 0, 20, 10], [20, 20, 30, 25], [2, 2, 2, 8], [0, 0, 0, 0]])
    assert_tensor(student.box_iou(special, special), tv.box_iou(special, special), "box_iou of special cases (identical, touching, zero-area -> nan)", rtol=1e-6, atol=1e-7)
    a64, b64 = a.double(), b.double()
    assert_tensor(student.box_iou(a64, b64), tv.box_iou(a64, b64), "box_iou in float64", rtol=1e-12, atol=1e-12)
    assert_tensor(student.box_iou(torch.zeros(0, 4), b), torch.zeros(0, 17), "box_iou with no boxes on one side")


@pytest.mark.points(2)
def test_box_iou_is_vectorized(student):
    """box_iou uses the same number of tensor operations for 10 and 200 boxes (no Python loop over boxes)"""
    g = torch.Generator().manual_seed(3)
    small = student.call("box_iou", random_boxes(10, g), random_boxes(10, g), count_ops=True)
    large = student.call("box_iou", random_boxes(200, g), random_boxes(150, g), count_ops=True)
    n_small, n_large = sum(small.ops.values()), sum(large.ops.values())
    if n_large > n_small:
        fail(f"box_iou ran {n_small} tensor operations for 10 boxes but {n_large} for 200: compute all pairs at once by broadcasting")
