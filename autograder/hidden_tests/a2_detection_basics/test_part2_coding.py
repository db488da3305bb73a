"""Part 2: encode_boxes / decode_boxes against torchvision's BoxCoder."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from .helpers import call, call_unchanged, check_boxes, random_boxes
from autograder.testing import assert_tensor

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0)]


@pytest.mark.part("box_coding")
@pytest.mark.points(4)
def test_encode_matches_boxcoder(student):
    """encode_boxes(reference, proposals, weights) equals BoxCoder.encode_single for several weights; float64 stays float64; inputs unchanged"""
    g = torch.Generator().manual_seed(0)
    ref, prop = random_boxes(40, g), random_boxes(40, g)
    for w in WEIGHTS:
        assert_tensor(call(student, "encode_boxes", ref, prop, w), BoxCoder(w).encode_single(ref, prop), f"encode_boxes with weights {w}", rtol=1e-5, atol=1e-5)
    assert_tensor(call(student, "encode_boxes", ref.double(), prop.double(), WEIGHTS[1]), BoxCoder(WEIGHTS[1]).encode_single(ref.double(), prop.double()),
                  "encode_boxes of float64 boxes", rtol=1e-10, atol=1e-10)
    assert_tensor(call(student, "encode_boxes", torch.zeros(0, 4), torch.zeros(0, 4), WEIGHTS[0]), torch.zeros(0, 4), "encode_boxes of no boxes")
    call_unchanged(student, "encode_boxes", ref[:5], prop[:5], WEIGHTS[2])


@pytest.mark.part("box_coding")
@pytest.mark.points(4)
def test_decode_matches_boxcoder(student, record_property):
    """decode_boxes equals BoxCoder.decode_single: weights, dw = tw / ww clamped at bbox_xform_clip, several boxes per proposal, float64; inputs unchanged"""
    g = torch.Generator().manual_seed(1)
    prop = random_boxes(30, g)
    for w in WEIGHTS:
        codes = torch.randn(30, 4, generator=g) * 2
        check_boxes(record_property, call(student, "decode_boxes", codes, prop, w), BoxCoder(w).decode_single(codes, prop), f"decode_boxes with weights {w}",
                    prop, rtol=1e-5, atol=1e-4)
    big = torch.randn(30, 4, generator=g) * 2
    big[:, 2:] = 8.0  # exp(8) is clamped at log(1000 / 16)
    check_boxes(record_property, call(student, "decode_boxes", big, prop, WEIGHTS[0]), BoxCoder(WEIGHTS[0]).decode_single(big, prop), "decode_boxes with dw, dh above bbox_xform_clip", prop,
                rtol=1e-5, atol=1e-3)
    # with weights (10, 10, 5, 5): tw = 10 gives dw = 2 (not clamped), tw = 30 gives dw = 6 (clamped at 4.135)
    big[:15, 2:], big[15:, 2:] = 10.0, 30.0
    check_boxes(record_property, call(student, "decode_boxes", big, prop, WEIGHTS[1]), BoxCoder(WEIGHTS[1]).decode_single(big, prop),
                "decode_boxes with weights (10, 10, 5, 5) and large tw, th (the clamp applies to dw = tw / ww)", prop, rtol=1e-5, atol=1e-3)
    clip = math.log(10.0)
    check_boxes(record_property, call(student, "decode_boxes", big, prop, WEIGHTS[0], clip), BoxCoder(WEIGHTS[0], bbox_xform_clip=clip).decode_single(big, prop),
                "decode_boxes with bbox_xform_clip=log(10)", prop, rtol=1e-5, atol=1e-3)
    multi = torch.randn(30, 12, generator=g)
    check_boxes(record_property, call(student, "decode_boxes", multi, prop, WEIGHTS[1]), BoxCoder(WEIGHTS[1]).decode_single(multi, prop),
                "decode_boxes with 3 boxes per proposal (Tensor[N, 12])", prop, rtol=1e-5, atol=1e-4)
    codes64, prop64 = multi.double(), prop.double()
    check_boxes(record_property, call(student, "decode_boxes", codes64, prop64, WEIGHTS[2]), BoxCoder(WEIGHTS[2]).decode_single(codes64, prop64),
                "decode_boxes of float64 codes and boxes", prop64, rtol=1e-10, atol=1e-10)
    call_unchanged(student, "decode_boxes", multi[:4], prop[:4], WEIGHTS[1])


@pytest.mark.part("box_coding")
@pytest.mark.points(2)
def test_round_trip(student, record_property):
    """decode_boxes(encode_boxes(g, p), p) gives g back to 1e-5 (relative), non-square float64 boxes"""
    g = torch.Generator().manual_seed(2)
    ref, prop = random_boxes(50, g, scale=500).double(), random_boxes(50, g, scale=500).double()
    for w in WEIGHTS:
        back = call(student, "decode_boxes", call(student, "encode_boxes", ref, prop, w), prop, w)
        check_boxes(record_property, back, ref, f"decode_boxes(encode_boxes(reference)) with weights {w}", prop, rtol=1e-5, atol=1e-5)
