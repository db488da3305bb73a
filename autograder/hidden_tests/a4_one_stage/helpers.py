"""Shared checks of the a4 hidden tests.

Every call of a graded function goes through ``call``: it counts, in the worker, the library
functions that do the function's job and fails with a message naming them (the notebook lists them)."""
import torch

from autograder.client import RemoteObject, StudentError
from autograder.testing import assert_tensor, call_checked, describe, fail

_FOCAL = ["torchvision.ops.sigmoid_focal_loss", "torchvision.ops.focal_loss.sigmoid_focal_loss"]

# graded function -> (library functions it must not call, operators it must not run, what to do instead)
FORBIDDEN = {
    "sigmoid_focal_loss": (_FOCAL, [], "combine torch.sigmoid and F.binary_cross_entropy_with_logits yourself"),
    "fcos_locations": ([], [], ""),
    "fcos_assign_targets": ([], [], ""),
    "fcos_get_deltas": ([], [], ""),
    "fcos_apply_deltas": ([], [], ""),
    "fcos_centerness": ([], [], ""),
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
        call(student, name, *inputs)  # name a forbidden call if there is one (the real reason)
        raise
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[1], list):
        fail(f"{name}: the grader could not run the backward pass")
    return value


def check_output(got, expected, what, rtol=None, atol=None):
    """A Tensor of ``expected``'s shape and dtype, close in value (float32 / float64 tolerances by default)."""
    if rtol is None:
        rtol, atol = (1e-5, 1e-6) if expected.dtype == torch.float32 else (1e-9, 1e-12)
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a Tensor{list(expected.shape)}, got {describe(got)}")
    assert_tensor(got, expected, what, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------- parts 3-5: the detector
_DETECTION_MODELS = ["torchvision.models.detection.fcos.FCOS.forward", "torchvision.models.detection.fcos.FCOSHead.forward",
                     "torchvision.models.detection.fcos.FCOSHead.compute_loss",
                     "torchvision.models.detection.fcos.FCOSClassificationHead.forward",
                     "torchvision.models.detection.fcos.FCOSRegressionHead.forward",
                     "torchvision.models.detection.fcos.FCOS.postprocess_detections",
                     "torchvision.models.detection.retinanet.RetinaNet.forward",
                     "torchvision.models.detection.retinanet.RetinaNetHead.forward",
                     "torchvision.models.detection.transform.GeneralizedRCNNTransform.forward"]
DETECTION_HINT = "build it from the earlier parts, torch and the allowed torchvision.ops functions"


def check_forbidden(student, target, method, *args, what, **kwargs):
    """``target.<method>(*args)`` (a student function when target is ``student``) watched for torchvision's detection models."""
    return call_checked(target, method, *args, forbid=_DETECTION_MODELS, hint=DETECTION_HINT, label=what, **kwargs).value


def with_references(student, helper_name, fn_name, helper_args, what):
    """The support helper ``helper_name(student.<fn_name>, *helper_args)`` in the worker: the student's function
    with the part 1-2 functions bound to references, watched for torchvision's detection models."""
    helper = student.helper(helper_name).get()
    if not isinstance(helper, RemoteObject):
        fail(f"the grader could not reach its helper {helper_name!r}")
    return call_checked(helper, "__call__", student.__getattr__(fn_name).get(), *helper_args, forbid=_DETECTION_MODELS, hint=DETECTION_HINT,
                        label=what).value
