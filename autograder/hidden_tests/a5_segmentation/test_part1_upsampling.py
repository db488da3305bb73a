"""Part 1: the five upsamplers against F.interpolate / F.max_unpool2d, values and gradients."""
import pytest
import torch
import torch.nn.functional as F

from autograder.testing import assert_inputs_unchanged, assert_vectorized

from .helpers import call, check_gradients, check_output

# (size, scale_factor) settings; every one is checked with non-square inputs of two shapes
RESIZES = [dict(scale_factor=2), dict(scale_factor=3), dict(scale_factor=(2, 3)), dict(scale_factor=1.5), dict(scale_factor=(1.7, 2.25)),
           dict(scale_factor=0.5), dict(scale_factor=0.6), dict(size=(11, 13)), dict(size=9), dict(size=(4, 17)), dict(size=(1, 5))]
SHAPES = [(2, 3, 5, 7), (1, 2, 6, 4)]


def inputs(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def show(kwargs):
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


def check_every_resize(student, mode, align, seed, float32_tolerance=(1e-5, 1e-6)):
    """``<mode>_upsample`` == F.interpolate(mode=mode) for every resize, both input shapes, float64 and float32."""
    for dtype in (torch.float64, torch.float32):
        tolerance = float32_tolerance if dtype == torch.float32 else (1e-9, 1e-12)
        for shape in SHAPES:
            x = inputs(shape, seed, dtype)
            for kwargs in RESIZES:
                what = f"{mode}_upsample(Tensor{list(shape)} {str(dtype)[6:]}, {show(kwargs)}, align_corners={align})"
                check_output(call(student, f"{mode}_upsample", x, align_corners=align, **kwargs),
                             F.interpolate(x, mode=mode, align_corners=align, **kwargs), what, *tolerance)


@pytest.mark.part("upsampling")
@pytest.mark.points(3)
def test_nearest_upsample_matches_interpolate(student):
    """== F.interpolate(mode="nearest") for integer, fractional, per-axis and shrinking scale factors and for sizes, float32 and float64"""
    for dtype in (torch.float64, torch.float32):
        for shape in SHAPES:
            x = inputs(shape, 0, dtype)
            for kwargs in RESIZES:
                what = f"nearest_upsample(Tensor{list(shape)} {str(dtype)[6:]}, {show(kwargs)})"
                check_output(call(student, "nearest_upsample", x, **kwargs), F.interpolate(x, mode="nearest", **kwargs), what, 0, 0)


@pytest.mark.part("upsampling")
@pytest.mark.points(4)
def test_bilinear_upsample_matches_interpolate(student):
    """== F.interpolate(mode="bilinear") with align_corners False and True, every resize, float32 and float64; gradients too"""
    for align in (False, True):
        check_every_resize(student, "bilinear", align, seed=1)
        for kwargs in (dict(scale_factor=2), dict(size=(7, 10)), dict(scale_factor=0.6)):
            x = inputs((2, 2, 4, 5), 2)
            check_gradients(student, "bilinear_upsample", [x, kwargs.get("size"), kwargs.get("scale_factor"), align], [True, False, False, False],
                            lambda t, size, scale, ac: F.interpolate(t, size=size, scale_factor=scale, mode="bilinear", align_corners=ac),
                            f"bilinear_upsample({show(kwargs)}, align_corners={align})")


@pytest.mark.part("upsampling")
@pytest.mark.points(3)
def test_bicubic_upsample_matches_interpolate(student):
    """== F.interpolate(mode="bicubic") with align_corners False and True (overshoot not clamped), every resize; gradients too"""
    for align in (False, True):
        check_every_resize(student, "bicubic", align, seed=3, float32_tolerance=(1e-5, 1e-5))  # 16 float32 products, summed in any order
        x = inputs((1, 2, 4, 6), 4)
        check_gradients(student, "bicubic_upsample", [x, None, 2.5, align], [True, False, False, False],
                        lambda t, size, scale, ac: F.interpolate(t, size=size, scale_factor=scale, mode="bicubic", align_corners=ac),
                        f"bicubic_upsample(scale_factor=2.5, align_corners={align})")


MAX_POOLS = [(2, None, 0, None), (3, 2, 1, None), ((2, 3), (2, 3), 0, "input"), (3, 3, 0, "input"), (2, 1, 0, None), ((3, 2), (2, 1), (1, 0), "input4")]


@pytest.mark.part("upsampling")
@pytest.mark.points(3)
def test_max_unpool2d_matches_torch(student):
    """== F.max_unpool2d with F.max_pool2d's indices: overlapping windows, padding, stride None, output_size as a pair and as a 4-sequence; gradients too"""
    for shape in ((2, 3, 8, 10), (1, 2, 7, 9)):
        x = inputs(shape, 5)
        for kernel, stride, padding, size in MAX_POOLS:
            pooled, idx = F.max_pool2d(x, kernel, stride, padding, return_indices=True)
            output_size = {None: None, "input": tuple(shape[-2:]), "input4": tuple(shape)}[size]
            what = f"max_unpool2d(kernel_size={kernel}, stride={stride}, padding={padding}, output_size={output_size}) on Tensor{list(pooled.shape)}"
            try:
                want = F.max_unpool2d(pooled, idx, kernel, stride, padding, output_size)
            except RuntimeError:  # the default size does not hold every index: the test gives the size then
                continue
            check_output(call(student, "max_unpool2d", pooled, idx, kernel, stride, padding, output_size), want, what, 0, 0)
    pooled, idx = F.max_pool2d(inputs((2, 2, 6, 9), 6), 3, 2, 1, return_indices=True)
    check_gradients(student, "max_unpool2d", [pooled, idx, 3, 2, 1, (6, 9)], [True, False, False, False, False, False],
                    lambda t, i, k, s, p, o: F.max_unpool2d(t, i, k, s, p, o), "max_unpool2d(kernel_size=3, stride=2, padding=1, output_size=(6, 9))")


@pytest.mark.part("upsampling")
@pytest.mark.points(1)
def test_bed_of_nails_unpool(student):
    """each value at the top-left of its s x s block, zeros elsewhere (== max unpooling to the top-left), for s = 2 and 3; gradients too"""
    for s in (2, 3):
        x = inputs((2, 3, 4, 5), 7)
        n, c, h, w = x.shape
        corner = (torch.arange(h)[:, None] * s * (w * s) + torch.arange(w)[None, :] * s).expand(n, c, h, w)
        want = F.max_unpool2d(x, corner, s, output_size=(h * s, w * s))
        check_output(call(student, "bed_of_nails_unpool", x, s), want, f"bed_of_nails_unpool(Tensor{list(x.shape)}, {s})", 0, 0)
        check_gradients(student, "bed_of_nails_unpool", [x, s], [True, False], lambda t, k: F.max_unpool2d(t, corner, k, output_size=(h * k, w * k)),
                        f"bed_of_nails_unpool(scale_factor={s})")


@pytest.mark.part("upsampling")
@pytest.mark.points(1)
def test_upsamplers_are_vectorized_and_leave_inputs_alone(student):
    """no Python loop over pixels (the same operations for a 4x5 and a 24x30 input); inputs not modified in place"""
    small, large = inputs((1, 2, 4, 5), 8), inputs((1, 2, 24, 30), 8)
    for name, extra in (("nearest_upsample", [None, 2]), ("bilinear_upsample", [None, 2, False]), ("bicubic_upsample", [None, 2, True]),
                        ("bed_of_nails_unpool", [2])):
        call(student, name, large, *extra)  # no library kernel doing the job
        assert_vectorized(student, name, [small, *extra], [large, *extra], ("a 4x5 input", "a 24x30 input"),
                          hint="index whole rows and columns at once; a loop over the 2 or 4 neighbours is fine")
        assert_inputs_unchanged(student, name, [large, *extra], name)
    pooled, idx = F.max_pool2d(large, 2, return_indices=True)
    small_pooled, small_idx = F.max_pool2d(small[..., :4, :4], 2, return_indices=True)
    call(student, "max_unpool2d", pooled, idx, 2)
    assert_vectorized(student, "max_unpool2d", [small_pooled, small_idx, 2], [pooled, idx, 2], ("a 2x2 input", "a 12x15 input"),
                      hint="scatter all values at once")
    assert_inputs_unchanged(student, "max_unpool2d", [pooled, idx, 2], "max_unpool2d")
