"""What a1's graded functions may not call, as the notebook states it, and the checks that enforce it.

The worker counts calls of the *function objects* named here (captured references, aliases and
other threads included), so each list names the functions that really run, down to the one every
public entry point goes through (``torch.autograd.graph._engine_run_backward`` for reverse-mode
autograd, ``make_dual`` for forward mode, the functional ``sgd`` / ``adam`` kernels for torch.optim).
"""
from __future__ import annotations

import torch

from autograder.client import RemoteObject, StudentError
from autograder.testing import GradingFailure, call_checked, fail

# Reverse mode: Tensor.backward, torch.autograd.backward/grad, torch.autograd.functional.*,
# torch.func.grad/vjp/jacrev all end in _engine_run_backward; forward mode (torch.func.jvp/jacfwd,
# torch.autograd.forward_ad) in make_dual. The public names make the message readable.
AUTOGRAD = [
    "torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad",
    "torch.autograd.graph._engine_run_backward", "torch.autograd.forward_ad.make_dual",
]
AUTOGRAD_HINT = "no autograd: compute the gradients yourself with the chain rule"


# Every way to run torch's SGD or Adam: the classes (AdamW's step is Adam's; ASGD with lambd=0 is plain
# SGD), their functional forms (torch.optim._functional.* are the same objects; adamw calls adam) and
# the single-tensor / foreach / fused kernels they dispatch to. The other optimizers cannot reproduce
# SGD with momentum or Adam. Each path costs the worker a little on every watched call: keep it short.
TORCH_OPTIM = ["torch.optim.SGD.step", "torch.optim.Adam.step", "torch.optim.ASGD.step",
               "torch.optim.sgd.sgd", "torch.optim.adam.adam", "torch.optim.adamw.adamw", "torch.optim.asgd.asgd"] + [
    f"torch.optim.{m}.{kind}_{m}" for m in ("sgd", "adam", "asgd") for kind in ("_single_tensor", "_multi_tensor", "_fused") if (m, kind) != ("asgd", "_fused")
]
TORCH_OPTIM_OPS = ["aten::_fused_sgd_", "aten::_fused_adam_", "aten::_fused_adamw_"]
OPTIM_HINT = "it must implement the update itself with tensor operations, not call torch.optim optimizers or their functional forms"

FIT = ["lecture_utils.train.fit"]
FIT_HINT = "write the loop yourself: zero_grad, forward, loss, backward, step"

# Per autograd Function: (forbidden Python functions, forbidden operators, hint).
FUNCTION_RULES = {
    "Sigmoid": (AUTOGRAD, ["aten::sigmoid_backward"],
                "forward may use torch.sigmoid; backward computes grad_output * out * (1 - out) itself, without autograd"),
    "LinearFunction": (AUTOGRAD, [], "backward computes the gradients with matrix products, without autograd"),
    "SmoothL1Function": (
        AUTOGRAD + ["torch.nn.functional.smooth_l1_loss", "torch.nn.functional.huber_loss"],
        ["aten::smooth_l1_loss", "aten::smooth_l1_loss_backward", "aten::huber_loss", "aten::huber_loss_backward"],
        "write both passes with elementary tensor operations: no F.smooth_l1_loss / F.huber_loss, no autograd",
    ),
}


def call_helper_checked(student, helper: str, label: str, *args, forbid=(), forbid_ops=(), hint: str = ""):
    """``call_checked`` on a grader helper that runs the student's code; the message names ``label``."""
    fn = student.helper(helper).get()
    if not isinstance(fn, RemoteObject):
        fail(f"the grader could not reach its helper {helper!r}")
    try:
        return call_checked(fn, "__call__", *args, forbid=forbid, forbid_ops=forbid_ops, hint=hint)
    except GradingFailure as exc:
        message = str(exc)
        raise GradingFailure(label + message[len("__call__"):] if message.startswith("__call__") else message) from None


def call_by_hand(student, label: str, fn, args, forbid, forbid_ops=(), hint: str = ""):
    """Call the worker object ``fn(*args)`` watching for the forbidden calls, and for the autograd
    engine running in this thread at all (its C++ entry point has no Python function to watch).
    Returns fn's result."""
    result = call_helper_checked(student, "call_watching_autograd_engine", label, fn, list(args), forbid=forbid, forbid_ops=forbid_ops, hint=hint)
    value = result.value
    if not isinstance(value, tuple) or len(value) != 2 or not isinstance(value[1], list):
        fail(f"{label}: the grader could not run it")
    if value[1]:
        engine_ops = ", ".join(str(op) for op in value[1][:6])
        fail(f"{label} must not use autograd, but the autograd engine ran {engine_ops} inside it" + (f" ({hint})" if hint else ""))
    return value[0]


def check_function_by_hand(student, name: str, inputs, needs_grad, grad_outputs) -> None:
    """Run ``name``'s forward (inputs requiring grad), then its backward directly on the real ctx,
    each watched for the calls its rules forbid (the autograd engine is not involved in running
    them, so any use of it is the student's). A pass that raises is left to the tests to report."""
    forbid, forbid_ops, hint = FUNCTION_RULES[name]
    try:
        forward = call_by_hand(student, f"{name}.forward", student.helper("function_forward").get(),
                               [student.__getattr__(name).get(), list(inputs), list(needs_grad)], forbid, forbid_ops, hint)
    except StudentError:
        return
    ctx = forward[1] if isinstance(forward, tuple) and len(forward) == 2 else None
    if not isinstance(ctx, RemoteObject):
        return
    try:
        call_by_hand(student, f"{name}.backward", student.__getattr__(f"{name}.backward").get(), [ctx, *grad_outputs], forbid, forbid_ops, hint)
    except StudentError:
        return


def check_function_leaves_inputs(student, name: str, inputs, needs_grad, grad_outputs) -> None:
    """Neither pass of ``name`` may modify its inputs or ``grad_output`` in place."""
    report = student.helper("function_mutations")(student.__getattr__(name).get(), list(inputs), list(needs_grad), list(grad_outputs))
    if not isinstance(report, dict) or not isinstance(report.get("inputs"), list) or not isinstance(report.get("grad_outputs"), list):
        fail(f"{name}: the grader could not run forward and backward")
    changed_in = [i for i, c in enumerate(report["inputs"]) if c is True]
    if changed_in:
        fail(f"{name}.forward modified its input(s) {changed_in} in place; compute new tensors and leave the caller's data alone")
    if any(c is True for c in report["grad_outputs"]):
        fail(f"{name}.backward modified grad_output in place; autograd may share that tensor with other branches, so compute a new one")
