"""Data and shared checks of the a3 hidden tests.

Every call of a graded function goes through ``call``: it counts, in the worker, the library
functions and operators that do the function's job and fails with a message naming them (the
notebook lists them)."""
import math

import torch

from autograder.client import RemoteObject, StudentError
from autograder.testing import assert_tensor, call_checked, describe, fail

_ROI = ["torchvision.ops.roi_align", "torchvision.ops.roi_pool", "torchvision.ops.RoIAlign.forward", "torchvision.ops.RoIPool.forward",
        "torchvision.ops.MultiScaleRoIAlign.forward", "torchvision.ops.poolers._multiscale_roi_align"]
_ROI_OPS = ["torchvision::roi_align", "torchvision::_roi_align_backward", "torchvision::roi_pool", "torchvision::_roi_pool_backward"]
_MATCHER = ["torchvision.models.detection._utils.Matcher.__call__", "torchvision.models.detection._utils.Matcher.set_low_quality_matches_"]
_SAMPLER = ["torchvision.models.detection._utils.BalancedPositiveNegativeSampler.__call__"]

# graded function -> (library functions it must not call, operators it must not run, what to do instead)
FORBIDDEN = {
    "roi_align": (_ROI, _ROI_OPS, "compute the sample points and interpolate them with tensor operations"),
    "roi_pool": (_ROI, _ROI_OPS, "compute the bins and take their maximum with tensor operations"),
    "generate_anchors": ([], [], ""),
    "match_anchors": (_MATCHER, [], "compare the IoUs with the thresholds yourself"),
    "sample_labels": (_SAMPLER, [], "draw the random permutations yourself"),
}


def call(student, name, *args, **kwargs):
    """``student.<name>(*args)`` in the worker; fails (no points) if it used a library function that does its job."""
    forbid, forbid_ops, hint = FORBIDDEN[name]
    return call_checked(student, name, *args, forbid=forbid, forbid_ops=forbid_ops, hint=hint, **kwargs).value


def student_vjp(student, name, inputs, grad_output, needs_grad):
    """(output, gradients) of ``student.<name>(*inputs)`` by autograd in the worker, watched like ``call``."""
    forbid, forbid_ops, hint = FORBIDDEN[name]
    fn, vjp = student.__getattr__(name).get(), student.helper("vjp").get()
    if not isinstance(vjp, RemoteObject):
        fail("the grader could not reach its helper 'vjp'")
    try:
        value = call_checked(vjp, "__call__", fn, list(inputs), grad_output, list(needs_grad), forbid=forbid, forbid_ops=forbid_ops, hint=hint,
                             label=name).value
    except StudentError:
        # a forbidden operator runs below autograd while it is watched, so its output has no gradient and
        # the backward pass fails first: name the forbidden call, which is the real reason
        call(student, name, *inputs)
        raise
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[1], list):
        fail(f"{name}: the grader could not run the backward pass")
    return value


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


def check_output(got, expected, what, dtype_tol=None):
    tol = dtype_tol or ({"rtol": 1e-5, "atol": 2e-5} if expected.dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-10})
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a Tensor{list(expected.shape)}, got {describe(got)}")
    assert_tensor(got, expected, what, **tol)


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


_DETECTION_MODELS = ["torchvision.models.detection.rpn.RegionProposalNetwork.forward", "torchvision.models.detection.rpn.RPNHead.forward",
                     "torchvision.models.detection.anchor_utils.AnchorGenerator.forward",
                     "torchvision.models.detection.roi_heads.RoIHeads.forward", "torchvision.models.detection.roi_heads.fastrcnn_loss",
                     "torchvision.models.detection.roi_heads.RoIHeads.postprocess_detections",
                     "torchvision.models.detection.roi_heads.RoIHeads.select_training_samples",
                     "torchvision.models.detection.faster_rcnn.TwoMLPHead.forward",
                     "torchvision.models.detection.faster_rcnn.FastRCNNPredictor.forward",
                     "torchvision.models.detection.generalized_rcnn.GeneralizedRCNN.forward"]
DETECTION_HINT = "build it from the earlier parts, torch and the allowed torchvision.ops functions"


def anchor_table(feature_sizes_list, strides, sizes, ratios) -> dict:
    """{key: Tensor[A, 4]} reference anchors for every set of feature sizes a test uses (sent to the worker)."""
    return {";".join(f"{int(h)}x{int(w)}" for h, w in fs): expected_anchors(fs, strides, sizes, ratios, dtype=torch.float64) for fs in feature_sizes_list}


def with_references(student, target, method, args, kwargs, table, what):
    """``target.<method>(*args, **kwargs)`` in the worker with the earlier parts' functions (generate_anchors,
    match_anchors, sample_labels, roi_align) bound to references, watched for torchvision's detection models."""
    fn = getattr(target, method) if method and method != "__call__" else target  # a module is called as itself
    if not isinstance(fn, RemoteObject):
        fn = fn.get()  # a function of the student's namespace
    helper = student.helper("call_with_references").get()
    if not isinstance(helper, RemoteObject):
        fail("the grader could not reach its helper 'call_with_references'")
    return call_checked(helper, "__call__", fn, list(args), dict(kwargs), table, forbid=_DETECTION_MODELS, hint=DETECTION_HINT, label=what).value


def check_forbidden(student, target, method, *args, what, **kwargs):
    """``target.<method>(*args)`` (a student function when target is ``student``) watched for torchvision's detection models."""
    return call_checked(target, method, *args, forbid=_DETECTION_MODELS, hint=DETECTION_HINT, label=what, **kwargs).value
