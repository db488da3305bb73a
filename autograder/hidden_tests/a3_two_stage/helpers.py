"""Data and shared checks of the a3 hidden tests.

Every call of a graded function goes through ``call`` (``kit.calls``): the worker counts the library functions
and operators that would do the function's job (``forbidden.toml``, as the notebook lists them)."""
import math

import torch

from autograder.client import RemoteObject
from autograder.hidden_tests.kit.calls import GradedCalls
from autograder.hidden_tests.kit.checks import check_output  # noqa: F401 - the part tests import it from here
from autograder.testing import assert_number, describe, fail

GRADED = GradedCalls("a3_two_stage")  # the forbidden calls: forbidden.toml
call, student_vjp, check_forbidden = GRADED.call, GRADED.vjp, GRADED.watched


def random_rois(k, n_images, map_hw, spatial_scale, generator, dtype=torch.float32):
    """Tensor[k, 5] RoIs in image pixels for a map of ``map_hw`` cells at ``spatial_scale``: most inside
    the image, some partly or wholly outside, small and large ones, a few inverted (x2 < x1)."""
    h, w = (s / spatial_scale for s in map_hw)
    size = torch.tensor([w, h], dtype=torch.float64)
    xy = (torch.rand(k, 2, generator=generator, dtype=torch.float64) * 1.5 - 0.25) * size
    wh = torch.rand(k, 2, generator=generator, dtype=torch.float64) ** 2 * 0.8 * size
    wh[: k // 10] *= -0.05  # inverted
    batch = torch.randint(0, n_images, (k, 1), generator=generator).double()
    return torch.cat([batch, xy, xy + wh], dim=1).to(dtype)


def as_list(rois, n_images):
    """The same RoIs as a list of Tensor[K_i, 4] (and the Tensor[K, 5] in that order)."""
    order = torch.argsort(rois[:, 0], stable=True)
    rois = rois[order]
    return [rois[rois[:, 0] == i, 1:] for i in range(n_images)], rois


def expected_anchors(feature_sizes, strides, sizes, ratios, dtype=torch.float32):
    """The formula, one anchor at a time: level, row i, column j, ratio, size."""
    out = []
    for (fh, fw), stride, level_sizes, level_ratios in zip(feature_sizes, strides, sizes, ratios):
        sh, sw = (stride, stride) if isinstance(stride, (int, float)) else stride
        for i in range(fh):
            for j in range(fw):
                cx, cy = (j + 0.5) * sw, (i + 0.5) * sh
                for r in level_ratios:
                    for s in level_sizes:
                        w, h = s / math.sqrt(r), s * math.sqrt(r)
                        out.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    return torch.tensor(out, dtype=torch.float64).reshape(-1, 4).to(dtype)


def anchor_table(feature_sizes_list, strides, sizes, ratios) -> dict:
    """{key: Tensor[A, 4]} reference anchors for every set of feature sizes a test uses (sent to the worker)."""
    return {";".join(f"{int(h)}x{int(w)}" for h, w in fs): expected_anchors(fs, strides, sizes, ratios, dtype=torch.float64) for fs in feature_sizes_list}


def with_references(student, target, method, args, kwargs, table, what):
    """``target.<method>(*args, **kwargs)`` in the worker with the earlier parts' functions (generate_anchors,
    match_anchors, sample_labels, roi_align) bound to references, watched for torchvision's detection models."""
    fn = getattr(target, method) if method and method != "__call__" else target  # a module is called as itself
    if not isinstance(fn, RemoteObject):
        fn = fn.get()  # a function of the student's namespace
    return GRADED.with_references(student, "call_with_references", fn, list(args), dict(kwargs), table, what=what)


def check_scalar_losses(got, want, names: tuple[str, ...], fn: str, case: str) -> None:
    """``got`` must be the tuple of scalar-tensor losses ``names``, equal to ``want`` up to float64 rounding."""
    if not isinstance(got, (tuple, list)) or len(got) != len(names):
        fail(f"{fn} must return ({', '.join(names)}), got {describe(got)}")
    for value, expected, name in zip(got, want, names):
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            fail(f"{fn}: {name} must be a scalar tensor, got {describe(value)}")
        assert_number(float(value), float(expected), f"{fn} {name} ({case})", rtol=1e-7, atol=1e-9)
