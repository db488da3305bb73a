"""Part 2: encode_boxes / decode_boxes against torchvision's BoxCoder (10 points)."""
import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from a2_helpers import random_boxes
from autograder.testing import assert_tensor

WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 4.0)]


@pytest.mark.points(4)
def test_encode_matches_boxcoder(student):
    """encode_boxes(reference, proposals, weights) equals BoxCoder.encode_single for several weights"""
    g = torch.Generator().manual_seed(0)
    ref, prop = random_boxes(40, g), random_boxes(40, g)
    for w in WEIGHTS:
        assert_tensor(student.encode_boxes(ref, prop, w), BoxCoder(w).encode_single(ref, prop), f"encode_boxes with weights {w}", rtol=1e-5, atol=1e-5)
    assert_tensor(student.encode_boxes(ref.double(), prop.double(), WEIGHTS[1]), BoxCoder(WEIGHTS[1]).encode_single(ref.double(), prop.double()), "encode_boxes in float64", rtol=1e-10, atol=1e-10)
    assert_tensor(student.encode_boxes(torch.zeros(0, 4), torch.zeros(0, 4), WEIGHTS[0]), torch.zeros(0, 4), "encode_boxes of no boxes")


@pytest.mark.points(4)
def test_decode_matches_boxcoder(student):
    """decode_boxes equals BoxCoder.decode_single: weights, clamp of large dw/dh, several boxes per proposal"""
    g = torch.Generator().manual_seed(1)
    prop = random_boxes(30, g)
    for w in WEIGHTS:
        codes = torch.randn(30, 4, generator=g) * 2
        assert_tensor(student.decode_boxes(codes, prop, w), BoxCoder(w).decode_single(codes, prop), f"decode_boxes with weights {w}", rtol=1e-5, atol=1e-4)
    big = torch.randn(30, 4, generator=g) * 2
    big[:, 2:] = 8.0  # exp(8) is clamped at log(1000 / 16)
    assert_tensor(student.decode_boxes(big, prop, WEIGHTS[0]), BoxCoder(WEIGHTS[0]).decode_single(big, prop), "decode_boxes with dw, dh above bbox_xform_clip", rtol=1e-5, atol=1e-3)
    clip = math.log(10.0)
    assert_tensor(student.decode_boxes(big, prop, WEIGHTS[0], clip), BoxCoder(WEIGHTS[0], bbox_xform_clip=clip).decode_single(big, prop), "decode_boxes with bbox_xform_clip=log(10)", rtol=1e-5, atol=1e-3)
    multi = torch.randn(30, 12, generator=g)
    assert_tensor(student.decode_boxes(multi, prop, WEIGHTS[1]), BoxCoder(WEIGHTS[1]).decode_single(multi, prop), "decode_boxes with 3 boxes per proposal (Tensor[N, 12])", rtol=1e-5, atol=1e-4)


@pytest.mark.points(2)
def test_round_trip(student):
    """decode_boxes(encode_boxes(g, p), p) gives g back to 1e-5 (relative), non-square boxes"""
    g = torch.Generator().manual_seed(2)
    ref, prop = random_boxes(50, g, scale=500).double(), random_boxes(50, g, scale=500).double()
    for w in WEIGHTS:
        back = student.decode_boxes(student.encode_boxes(ref, prop, w), prop, w)
        assert_tensor(back, ref, f"decode(encode(reference)) with weights {w}", rtol=1e-5, atol=1e-5)
