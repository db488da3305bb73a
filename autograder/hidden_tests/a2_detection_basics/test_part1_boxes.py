"""Part 1: box_convert, box_area, box_iou."""
import pytest
import torch
import torchvision.ops as tv

from .helpers import assert_iou, call, call_unchanged, check_iou_pictured, random_boxes
from autograder.testing import assert_tensor, assert_vectorized

FORMATS = ("xyxy", "xywh", "cxcywh")
# Boxes whose areas overflow their own dtype (int8 up to 127, float16 up to 65504): torchvision upcasts. Not uint8: a
# difference of two coordinates wraps around there before torchvision upcasts it.
SMALL_DTYPES = ((torch.int8, 80), (torch.int16, 3000), (torch.float16, 3000), (torch.bfloat16, 3000))


@pytest.mark.part("box_ops")
@pytest.mark.points(4)
def test_box_convert_all_formats(student):
    """box_convert between every pair of formats equals torchvision (float32, float64, empty); a new tensor, input unchanged"""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        boxes = random_boxes(37, g, dtype=dtype)
        for i in FORMATS:
            for o in FORMATS:
                src = tv.box_convert(boxes, "xyxy", i)
                assert_tensor(call(student, "box_convert", src, i, o), tv.box_convert(src, i, o), f"box_convert(.., {i!r}, {o!r}) of {dtype} boxes", rtol=1e-6, atol=1e-4)
    empty = torch.zeros(0, 4)
    assert_tensor(call(student, "box_convert", empty, "xyxy", "cxcywh"), tv.box_convert(empty, "xyxy", "cxcywh"), "box_convert of no boxes")
    boxes = random_boxes(5, g)
    for i, o in (("xywh", "xyxy"), ("xyxy", "cxcywh"), ("cxcywh", "xywh"), ("xyxy", "xyxy")):
        call_unchanged(student, "box_convert", boxes, i, o, what=f"box_convert(.., {i!r}, {o!r})")


@pytest.mark.part("box_ops")
@pytest.mark.points(2)
def test_box_area(student):
    """box_area equals torchvision: zero-area and inverted boxes (negative area, no abs), float64, empty, small dtypes upcast (int8 ... float16); input unchanged"""
    g = torch.Generator().manual_seed(1)
    boxes = torch.cat([random_boxes(20, g), torch.tensor([[5.0, 5, 5, 9], [3, 3, 3, 3], [10, 0, 4, 6], [0, 8, 5, 2.5]])])
    assert_tensor(call(student, "box_area", boxes), tv.box_area(boxes), "box_area (the last two boxes have x2 < x1 or y2 < y1)", rtol=1e-6, atol=1e-5)
    assert_tensor(call(student, "box_area", boxes.double()), tv.box_area(boxes.double()), "box_area of float64 boxes", rtol=1e-12, atol=1e-12)
    assert_tensor(call(student, "box_area", torch.zeros(0, 4)), torch.zeros(0), "box_area of no boxes")
    call_unchanged(student, "box_area", boxes)
    for dtype, scale in SMALL_DTYPES:  # upcast like torchvision: no overflow, float32 / int32 results
        small = random_boxes(12, g, scale=scale).to(dtype)
        assert_tensor(call(student, "box_area", small), tv.box_area(small), f"box_area of {str(dtype)[6:]} boxes (computed in {str(tv.box_area(small).dtype)[6:]})",
                      rtol=1e-6, atol=1e-3)


@pytest.mark.part("box_ops")
@pytest.mark.points(4)
def test_box_iou_matches_torchvision(student, record_property):
    """box_iou on random, non-square, identical, disjoint, touching and zero-area boxes; float64; small dtypes upcast; empty; inputs unchanged"""
    g = torch.Generator().manual_seed(2)
    a, b = random_boxes(31, g, scale=200), random_boxes(17, g, scale=200)
    check_iou_pictured(record_property, call(student, "box_iou", a, b), tv.box_iou(a, b), a, b, "box_iou(random 31 x 17 boxes)", rtol=1e-5, atol=1e-6)
    special = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [10, 0, 20, 10], [20, 20, 30, 25], [2, 2, 2, 8], [0, 0, 0, 0], [4, 4, 6, 12]])
    check_iou_pictured(record_property, call(student, "box_iou", special, special), tv.box_iou(special, special), special, special,
                       "box_iou of special cases (identical, touching, disjoint, zero-area against non-zero-area)", check=assert_iou, rtol=1e-6, atol=1e-7)
    a64, b64 = a.double(), b.double()
    check_iou_pictured(record_property, call(student, "box_iou", a64, b64), tv.box_iou(a64, b64), a64, b64, "box_iou of float64 boxes", rtol=1e-12, atol=1e-12)
    assert_tensor(call(student, "box_iou", torch.zeros(0, 4), b), torch.zeros(0, 17), "box_iou with no boxes on the first side")
    assert_tensor(call(student, "box_iou", a, torch.zeros(0, 4)), torch.zeros(31, 0), "box_iou with no boxes on the second side")
    call_unchanged(student, "box_iou", a[:6], b[:4])
    for dtype, scale in SMALL_DTYPES:
        sa, sb = random_boxes(9, g, scale=scale).to(dtype), random_boxes(7, g, scale=scale).to(dtype)
        assert_tensor(call(student, "box_iou", sa, sb), tv.box_iou(sa, sb), f"box_iou of {str(dtype)[6:]} boxes (computed in a wider type)",
                      rtol=1e-5, atol=1e-6)


@pytest.mark.part("box_ops")
@pytest.mark.points(2)
def test_box_iou_is_vectorized(student):
    """box_iou runs the same tensor operations and lines of your code for 3 x 2 and 40 x 30 boxes (no Python loop over boxes)"""
    g = torch.Generator().manual_seed(3)
    small, large = (random_boxes(3, g), random_boxes(2, g)), (random_boxes(40, g), random_boxes(30, g))
    assert_tensor(call(student, "box_iou", *large), tv.box_iou(*large), "box_iou(random 40 x 30 boxes)", rtol=1e-5, atol=1e-6)
    assert_vectorized(student, "box_iou", small, large, what=("3 x 2 boxes", "40 x 30 boxes"))
