"""Part 1: roi_pool and roi_align against torchvision, values and gradients."""
import pytest
import torch
import torchvision.ops as tv

from .helpers import GRADED, as_list, call, check_output, random_rois, student_vjp
from autograder.client import StudentError
from autograder.testing import assert_inputs_unchanged, assert_tensor, assert_vectorized, describe, fail, numerical_gradcheck

SCALES = (1.0, 0.5, 0.25, 1 / 16)


def feature_map(n, c, h, w, generator, dtype=torch.float32):
    return torch.randn(n, c, h, w, generator=generator, dtype=dtype)


@pytest.mark.part("roi_ops")
@pytest.mark.points(6)
def test_roi_align_matches_torchvision(student):
    """roi_align == torchvision: sampling_ratio 1, 2, 3 and adaptive (0, -1), aligned both ways, several spatial_scales, RoIs partly or wholly outside, non-square maps, float32 and float64; float16 within half precision"""
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for scale in SCALES:
            x = feature_map(2, 3, 11, 17, g, dtype)
            rois = random_rois(24, 2, (11, 17), scale, g, dtype)
            for ratio in (2, 0, -1, 1, 3):
                for aligned in (False, True):
                    for size in [((2, 3), 4)[(ratio + aligned) % 2]]:  # both sizes for every ratio, alternating with aligned
                        what = f"roi_align(Tensor[2, 3, 11, 17] {str(dtype)[6:]}, {len(rois)} RoIs, output_size={size}, spatial_scale={scale:g}, sampling_ratio={ratio}, aligned={aligned})"
                        check_output(call(student, "roi_align", x, rois, size, scale, ratio, aligned), tv.roi_align(x, rois, size, scale, ratio, aligned), what)
    # large RoIs with adaptive sampling: many samples per bin, different for each RoI
    x = feature_map(1, 2, 40, 24, g)
    rois = torch.tensor([[0, 0.0, 0.0, 24.0, 40.0], [0, 2.5, 3.5, 9.0, 37.0], [0, -30.0, -30.0, 60.0, 70.0], [0, 30.0, 50.0, 80.0, 90.0], [0, 5.0, 5.0, 5.5, 5.5]])
    for aligned in (False, True):
        check_output(call(student, "roi_align", x, rois, 3, 1.0, -1, aligned), tv.roi_align(x, rois, 3, 1.0, -1, aligned),
                     f"roi_align with large RoIs and adaptive sampling (aligned={aligned})")
        check_output(call(student, "roi_align", x, rois, (7, 5), 1.0, 0, aligned), tv.roi_align(x, rois, (7, 5), 1.0, 0, aligned),
                     f"roi_align with output_size (7, 5), adaptive sampling (aligned={aligned})")
    # half precision, as torchvision takes it (map and boxes float16): float16 out, within half precision's accuracy
    x16, rois16 = feature_map(2, 3, 11, 17, g).half(), random_rois(16, 2, (11, 17), 0.5, g).half()
    for ratio, aligned in ((2, False), (-1, True)):
        want = tv.roi_align(x16, rois16, (3, 4), 0.5, ratio, aligned)
        what = f"roi_align(Tensor[2, 3, 11, 17] float16, 16 RoIs float16, (3, 4), 0.5, sampling_ratio={ratio}, aligned={aligned})"
        try:
            got = call(student, "roi_align", x16, rois16, (3, 4), 0.5, ratio, aligned)
        except StudentError as exc:
            fail(f"{what} raised {str(exc).splitlines()[0][:160]}: compute half-precision maps in float32 and return float16")
        if not isinstance(got, torch.Tensor) or got.dtype != torch.float16 or got.shape != want.shape:
            fail(f"{what}: expected Tensor{list(want.shape)} float16, got {describe(got)}")
        assert_tensor(got.float(), want.float(), what, rtol=1e-2, atol=2e-2)


@pytest.mark.part("roi_ops")
@pytest.mark.points(2)
def test_roi_align_box_formats_and_empty(student):
    """boxes as a list of Tensor[K_i, 4] (an image without boxes included); no RoIs -> Tensor[0, C, h, w]; inputs unchanged"""
    g = torch.Generator().manual_seed(1)
    x = feature_map(3, 4, 8, 12, g)
    boxes, rois = as_list(random_rois(20, 2, (8, 12), 0.25, g), 3)  # image 2 has no boxes
    check_output(call(student, "roi_align", x, boxes, 3, 0.25, 2, True), tv.roi_align(x, rois, 3, 0.25, 2, True), "roi_align with boxes as a list of Tensor[K_i, 4]")
    check_output(call(student, "roi_align", x, boxes, (2, 5), 0.25, -1, False), tv.roi_align(x, rois, (2, 5), 0.25, -1, False), "roi_align with a list of boxes, adaptive sampling")
    empty = torch.zeros(0, 4)
    check_output(call(student, "roi_align", x, torch.zeros(0, 5), (2, 3)), torch.zeros(0, 4, 2, 3), "roi_align without RoIs (Tensor[0, 5])")
    check_output(call(student, "roi_align", x, [empty, empty, empty], 4, 0.5, 0, True), torch.zeros(0, 4, 4, 4), "roi_align without RoIs (a list of empty Tensor[0, 4])")
    x64 = x.double()
    check_output(call(student, "roi_align", x64, torch.zeros(0, 5, dtype=torch.float64), 2), torch.zeros(0, 4, 2, 2, dtype=torch.float64), "roi_align of a float64 map without RoIs")
    assert_inputs_unchanged(student, "roi_align", [x, rois, 2, 0.25, -1, True], "roi_align")


@pytest.mark.part("roi_ops")
@pytest.mark.points(4)
def test_roi_align_gradients(student):
    """roi_align's gradient (by autograd) == torchvision's, float32 and float64; float64 gradcheck against finite differences"""
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        x = feature_map(2, 3, 9, 14, g, dtype)
        for scale, ratio, aligned in ((0.5, 2, True), (0.25, -1, False), (1.0, 0, True), (1 / 16, 3, False)):
            rois = random_rois(16, 2, (9, 14), scale, g, dtype)
            expected_x = x.clone().requires_grad_()
            expected = tv.roi_align(expected_x, rois, (3, 2), scale, ratio, aligned)
            grad_out = torch.randn(expected.shape, generator=g, dtype=dtype)
            (want,) = torch.autograd.grad(expected, expected_x, grad_out)
            out, grads = student_vjp(student, "roi_align", [x, rois, (3, 2), scale, ratio, aligned], grad_out, [True, False, False, False, False, False])
            what = f"roi_align {str(dtype)[6:]} (spatial_scale={scale:g}, sampling_ratio={ratio}, aligned={aligned})"
            check_output(out, expected.detach(), what)
            if grads[0] is None:
                fail(f"{what}: no gradient reaches the input feature map (keep the computation differentiable)")
            tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10}
            assert_tensor(grads[0], want, f"gradient of {what} with respect to the input", **tol)
    # finite differences, float64, on a small map
    x = feature_map(1, 1, 4, 5, g, torch.float64)
    rois = torch.tensor([[0, 0.3, 0.6, 3.9, 2.7], [0, -0.8, 1.2, 2.1, 4.5], [0, 2.2, -1.0, 6.0, 1.4]], dtype=torch.float64)
    for ratio, aligned in ((-1, False),):  # adaptive; aligned=True is checked against torchvision above
        numerical_gradcheck(
            lambda inp: call(student, "roi_align", inp, rois, 2, 1.0, ratio, aligned),
            lambda inputs, g_out: student_vjp(student, "roi_align", [inputs[0], rois, 2, 1.0, ratio, aligned], g_out, [True] + [False] * 5)[1],
            [x], [0], f"roi_align (sampling_ratio={ratio}, aligned={aligned})")


@pytest.mark.part("roi_ops")
@pytest.mark.points(3)
def test_roi_pool_matches_torchvision(student):
    """roi_pool == torchvision: corners rounded half away from zero, several spatial_scales, RoIs outside the map, ties, both box formats, no RoIs"""
    g = torch.Generator().manual_seed(3)
    for dtype in (torch.float32, torch.float64):
        for scale in SCALES:
            x = feature_map(2, 3, 10, 15, g, dtype)
            rois = random_rois(30, 2, (10, 15), scale, g, dtype)
            for size in ((2, 3), 5, 1):
                check_output(call(student, "roi_pool", x, rois, size, scale), tv.roi_pool(x, rois, size, scale),
                             f"roi_pool(Tensor[2, 3, 10, 15] {str(dtype)[6:]}, {len(rois)} RoIs, output_size={size}, spatial_scale={scale:g})")
    x = torch.randint(0, 3, (1, 2, 9, 11), generator=g).float()  # many ties
    halves = torch.tensor([[0, 0.5, 1.5, 2.5, 6.5], [0, 3.5, 4.5, 8.5, 9.5], [0, -2.5, -3.5, 12.5, 11.5], [0, 2.5, 2.5, 2.5, 2.5], [0, 20.0, 20.0, 30.0, 30.0]])
    check_output(call(student, "roi_pool", x, halves, 3, 1.0), tv.roi_pool(x, halves, 3, 1.0), "roi_pool with corners at .5 (C's round: away from zero)")
    check_output(call(student, "roi_pool", x, halves, (4, 2), 2.0), tv.roi_pool(x, halves, (4, 2), 2.0), "roi_pool with spatial_scale 2")
    boxes, rois = as_list(random_rois(12, 2, (9, 11), 0.5, g), 2)
    x2 = feature_map(2, 2, 9, 11, g)
    check_output(call(student, "roi_pool", x2, boxes, 3, 0.5), tv.roi_pool(x2, rois, 3, 0.5), "roi_pool with boxes as a list of Tensor[K_i, 4]")
    check_output(call(student, "roi_pool", x2, torch.zeros(0, 5), (2, 3)), torch.zeros(0, 2, 2, 3), "roi_pool without RoIs")
    check_output(call(student, "roi_pool", x2, [torch.zeros(0, 4)] * 2, 2), torch.zeros(0, 2, 2, 2), "roi_pool without RoIs (list)")
    assert_inputs_unchanged(student, "roi_pool", [x2, rois, 2, 0.5], "roi_pool")


@pytest.mark.part("roi_ops")
@pytest.mark.points(2)
def test_roi_pool_gradients(student):
    """roi_pool's gradient == torchvision's: to the first maximum of each bin (also with ties), nothing from empty bins"""
    g = torch.Generator().manual_seed(4)
    cases = [(feature_map(2, 3, 9, 14, g), 0.5), (feature_map(2, 3, 9, 14, g, torch.float64), 0.25),
             (torch.randint(0, 3, (2, 3, 9, 14), generator=g).float(), 1.0)]
    for x, scale in cases:
        rois = random_rois(16, 2, (9, 14), scale, g, x.dtype)
        what = f"roi_pool {str(x.dtype)[6:]} (spatial_scale={scale:g}{', many ties' if scale == 1.0 else ''})"
        GRADED.check_gradients(student, "roi_pool", [x, rois, (3, 4), scale], [True, False, False, False], tv.roi_pool, what, g)


@pytest.mark.part("roi_ops")
@pytest.mark.points(3)
def test_roi_ops_are_vectorized(student):
    """no Python loop over RoIs: the same tensor operations and lines of code for 6 and for 300 RoIs (adaptive and fixed sampling)"""
    g = torch.Generator().manual_seed(5)
    x = feature_map(2, 4, 12, 16, g)
    few = random_rois(6, 2, (12, 16), 0.25, g)
    few[:, 0] = torch.tensor([0.0, 1, 0, 1, 0, 1])
    many = few.repeat(50, 1)
    for ratio in (-1, 2):
        assert_vectorized(student, "roi_align", [x, few, 3, 0.25, ratio, True], [x, many, 3, 0.25, ratio, True], ("6 RoIs", "300 RoIs"),
                          hint="sample all RoIs at once (the largest grid, masked)")
    assert_vectorized(student, "roi_pool", [x, few, 3, 0.25], [x, many, 3, 0.25], ("6 RoIs", "300 RoIs"), hint="pool all RoIs at once (the largest bin, masked)")
    boxes = [few[few[:, 0] == i, 1:] for i in range(2)]
    assert_vectorized(student, "roi_align", [x, boxes, 2, 0.25, 0, False], [x, [b.repeat(50, 1) for b in boxes], 2, 0.25, 0, False],
                      ("6 RoIs in a list", "300 RoIs in a list"), hint="sample all RoIs at once")
