"""Shared checks of the a5 hidden tests.

Every call of a graded function goes through ``call`` (or ``student_vjp`` for gradients): it watches, in the
worker, the library functions that would do the function's job and fails with a message naming them (the
notebook lists them)."""
import torch

from autograder.client import RemoteObject, StudentError
from autograder.testing import assert_tensor, call_checked, describe, fail

_RESAMPLING = ["torch.nn.functional.interpolate", "torch.nn.functional.upsample", "torch.nn.functional.upsample_bilinear",
               "torch.nn.functional.upsample_nearest", "torch.nn.functional.grid_sample", "torch.nn.functional.affine_grid",
               "torch.nn.functional.max_unpool2d", "torch.nn.modules.upsampling.Upsample.forward",
               "torch.nn.modules.pooling.MaxUnpool2d.forward"]
_RESAMPLING_OPS = ["aten::upsample_nearest2d", "aten::upsample_bilinear2d", "aten::upsample_bicubic2d", "aten::_upsample_nearest_exact2d",
                   "aten::_upsample_bilinear2d_aa", "aten::_upsample_bicubic2d_aa", "aten::max_unpool2d", "aten::grid_sampler_2d"]
_TRANSPOSED = ["torch.nn.functional.conv_transpose1d", "torch.nn.functional.conv_transpose2d", "torch.nn.functional.conv_transpose3d",
               "torch.nn.modules.conv.ConvTranspose2d.forward", "torch.nn.modules.conv.ConvTranspose1d.forward", "torch.nn.grad.conv2d_input",
               "torch.nn.grad.conv2d_weight"]
_AUTOGRAD = ["torch.autograd.grad", "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian", "torch.func.vjp", "torch.func.jacrev"]
_DETECTION = "torchvision.models.detection."
_MASK_HELPERS = [_DETECTION + p for p in ("roi_heads.project_masks_on_boxes", "roi_heads.maskrcnn_loss", "roi_heads.maskrcnn_inference",
                                          "roi_heads.paste_masks_in_image", "roi_heads.paste_mask_in_image", "roi_heads.expand_masks",
                                          "roi_heads.expand_boxes", "transform.paste_masks_in_image")]
_KEYPOINT_HELPERS = [_DETECTION + p for p in ("roi_heads.keypoints_to_heatmap", "roi_heads.heatmaps_to_keypoints",
                                              "roi_heads.keypointrcnn_loss", "roi_heads.keypointrcnn_inference")]
_COCO = ["pycocotools.mask.iou", "pycocotools._mask.iou"]

# graded function -> (library functions it must not call, operators it must not run, what to do instead)
_UPSAMPLE_HINT = "compute the source coordinates and mix the neighbours yourself (indexing, gather, arithmetic)"
FORBIDDEN = {
    "nearest_upsample": (_RESAMPLING, _RESAMPLING_OPS, _UPSAMPLE_HINT),
    "bed_of_nails_unpool": (_RESAMPLING, _RESAMPLING_OPS, "write the values into a zero tensor"),
    "max_unpool2d": (_RESAMPLING, _RESAMPLING_OPS, "scatter the values to their indices in a zero tensor"),
    "bilinear_upsample": (_RESAMPLING, _RESAMPLING_OPS, _UPSAMPLE_HINT),
    "bicubic_upsample": (_RESAMPLING, _RESAMPLING_OPS, _UPSAMPLE_HINT),
    "conv_transpose2d": (_TRANSPOSED + _AUTOGRAD, [], "add the kernel copies into place (a matrix product and F.fold, or a loop over the kernel taps)"),
    "conv2d_matrix": (_TRANSPOSED, [], "convolve unit images with F.conv2d, or fill C entry by entry"),
    "mean_iou": ([], [], ""),
    "mask_iou": (_COCO, [], "count the intersections with one matrix product"),
    "project_masks_on_boxes": (_MASK_HELPERS, [], "RoI Align (torchvision.ops.roi_align) of the matched masks"),
    "maskrcnn_loss": (_MASK_HELPERS, [], "your project_masks_on_boxes and F.binary_cross_entropy_with_logits"),
    "paste_masks_in_image": (_MASK_HELPERS, [], "follow the four steps of the notebook"),
    "panoptic_merge": ([], [], ""),
    "keypoints_to_heatmap": (_KEYPOINT_HELPERS, [], "follow the notebook's formula"),
    "heatmaps_to_keypoints": (_KEYPOINT_HELPERS, [], "follow the notebook's steps"),
}
MASK_HEAD_FORBIDDEN = ["torchvision.models.detection.mask_rcnn.MaskRCNNPredictor.__init__", "torchvision.models.detection.mask_rcnn.MaskRCNNHeads.__init__"]


# Operators that do Parts 1-2's job, seen in the calling thread at any dispatch level (inference mode and
# below-autograd calls included; 1-D/3-D variants and backward kernels too): prefixes of their names.
_RESAMPLING_KERNELS = ("aten::upsample", "aten::_upsample", "aten::max_unpool", "aten::grid_sampler")
_TRANSPOSED_KERNELS = ("aten::convolution(transposed)", "aten::convolution_backward", "aten::conv_transpose", "aten::slow_conv_transpose",
                       "aten::mkldnn_convolution_transpose")
DISPATCH_FORBIDDEN = {name: _RESAMPLING_KERNELS for name in ("nearest_upsample", "bed_of_nails_unpool", "max_unpool2d", "bilinear_upsample",
                                                             "bicubic_upsample")}
DISPATCH_FORBIDDEN.update({name: _TRANSPOSED_KERNELS + _RESAMPLING_KERNELS for name in ("conv_transpose2d", "conv2d_matrix")})


def _check_dispatched(name, ops, during_backward=False):
    """Fail when a watched operator ran during ``name`` (the grader's own backward pass may run convolution_backward)."""
    prefixes = DISPATCH_FORBIDDEN.get(name, ())
    if during_backward:
        prefixes = tuple(p for p in prefixes if p != "aten::convolution_backward")
    used = sorted(op for op, n in (ops or {}).items() if n and op.startswith(prefixes))
    if used:
        fail(f"{name} must not run PyTorch's own kernels for this ({', '.join(used)}): writing it is the exercise ({FORBIDDEN[name][2]})")


def call(student, name, *args, **kwargs):
    """``student.<name>(*args)`` in the worker; fails (no points) if it used a library function that does its job."""
    forbid, forbid_ops, hint = FORBIDDEN[name]
    result = call_checked(student, name, *args, forbid=forbid, forbid_ops=forbid_ops, hint=hint, count_ops=name in DISPATCH_FORBIDDEN, **kwargs)
    _check_dispatched(name, result.ops)
    return result.value


def student_vjp(student, name, inputs, grad_output, needs_grad):
    """(output, gradients) of ``student.<name>(*inputs)`` by autograd in the worker, watched like ``call`` (the
    grader's own backward pass uses autograd, so autograd itself is not watched here; ``call`` watches it)."""
    forbid, forbid_ops, hint = FORBIDDEN[name]
    forbid = [f for f in forbid if f not in _AUTOGRAD]
    fn, vjp = student.__getattr__(name).get(), student.helper("vjp").get()
    if not isinstance(vjp, RemoteObject):
        fail("the grader could not reach its helper 'vjp'")
    try:
        result = call_checked(vjp, "__call__", fn, list(inputs), grad_output, list(needs_grad), forbid=forbid, forbid_ops=forbid_ops, hint=hint,
                              label=name, count_ops=name in DISPATCH_FORBIDDEN)
        _check_dispatched(name, result.ops, during_backward=True)
        value = result.value
    except StudentError:
        call(student, name, *inputs)  # name a forbidden call if there is one (the real reason)
        raise
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[1], list):
        fail(f"{name}: the grader could not run the backward pass")
    return value


def check_output(got, expected, what, rtol=None, atol=None, check_dtype=True):
    """A Tensor of ``expected``'s shape and dtype, close in value (float32 / float64 tolerances by default)."""
    if rtol is None:
        rtol, atol = (1e-5, 1e-6) if expected.dtype != torch.float64 else (1e-9, 1e-12)
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a Tensor{list(expected.shape)}, got {describe(got)}")
    assert_tensor(got, expected, what, rtol=rtol, atol=atol, check_dtype=check_dtype)


def check_gradients(student, name, inputs, needs_grad, reference, what, grad_seed=0):
    """Gradients of ``student.<name>(*inputs)`` (autograd in the worker) == those of ``reference(*inputs)`` for a
    random output gradient, for every input marked in ``needs_grad``."""
    leaves = [x.detach().clone().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and m else x for x, m in zip(inputs, needs_grad)]
    want = reference(*leaves)
    g = torch.Generator().manual_seed(grad_seed)
    grad_out = torch.randn(want.shape, generator=g, dtype=want.dtype)
    wrt = [x for x, m in zip(leaves, needs_grad) if m]
    want_grads = torch.autograd.grad(want, wrt, grad_out)
    out, grads = student_vjp(student, name, inputs, grad_out, needs_grad)
    check_output(out, want.detach(), what)
    got = [gr for gr, m in zip(grads, needs_grad) if m]
    for k, (gr, w) in enumerate(zip(got, want_grads)):
        if gr is None:
            fail(f"{what}: no gradient reaches argument {[i for i, m in enumerate(needs_grad) if m][k]} (keep the computation differentiable)")
        check_output(gr, w, f"gradient of {what} with respect to argument {[i for i, m in enumerate(needs_grad) if m][k]}")
