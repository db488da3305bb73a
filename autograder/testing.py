"""Assertions for hidden tests: messages that tell the student what is wrong, not the answer's code.

Every comparison here fails on NaN or inf unless the expected value has NaN / the same inf at the
same place; use these helpers rather than ``==`` / ``<`` on values that came from the worker.
Shared checks of the lesson: ``call_checked`` (forbidden library calls and operators, counted in
every thread of the worker), ``assert_vectorized`` (no Python loop over boxes), ``assert_remote_module``
and ``assert_inputs_unchanged``.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from autograder.client import CallResult, RemoteObject


class GradingFailure(AssertionError):
    """A check on the student's result failed; the message is shown to the student."""


def fail(message: str) -> None:
    raise GradingFailure(message)


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, RemoteObject):
        return f"an object of type {value.remote_type}"
    return f"{type(value).__name__}"


def assert_tensor(actual, expected: torch.Tensor, what: str, *, rtol: float = 1e-5, atol: float = 1e-6, check_dtype: bool = True) -> None:
    """``actual`` must be a plain Tensor of ``expected``'s shape (and dtype) and close in value."""
    if not isinstance(actual, torch.Tensor) or type(actual) is not torch.Tensor:
        fail(f"{what}: expected a Tensor{list(expected.shape)}, got {describe(actual)}")
    if tuple(actual.shape) != tuple(expected.shape):
        fail(f"{what}: expected shape {list(expected.shape)}, got {list(actual.shape)}")
    if check_dtype and actual.dtype != expected.dtype:
        fail(f"{what}: expected dtype {expected.dtype}, got {actual.dtype}")
    a, e = actual.detach().to(torch.float64), expected.detach().to(torch.float64)
    if expected.dtype == torch.bool or not expected.is_floating_point():
        bad = a != e
    else:
        bad = ~torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if bool(bad.any()):
        idx = tuple(int(i) for i in bad.nonzero()[0])
        fail(
            f"{what}: {int(bad.sum())} of {bad.numel()} values differ (rtol={rtol:g}, atol={atol:g}); "
            f"first at index {list(idx)}: got {a[idx].item():.8g}, expected {e[idx].item():.8g}"
        )


def assert_number(actual, expected: float, what: str, *, rtol: float = 1e-6, atol: float = 1e-9, kind: type = float) -> None:
    """``actual`` must be a Python number (``kind``: float accepts int too) close to ``expected``.

    NaN equals NaN only when ``expected`` is NaN; inf equals the same inf only."""
    ok_types = (int, float) if kind is float else (kind,)
    if type(actual) is bool or not isinstance(actual, ok_types) or isinstance(actual, torch.Tensor):
        fail(f"{what}: expected a Python {kind.__name__}, got {describe(actual)}")
    a, e = float(actual), float(expected)
    if math.isnan(e) or math.isnan(a):
        if not (math.isnan(e) and math.isnan(a)):
            fail(f"{what}: got {a!r}, expected {e!r}")
        return
    if math.isinf(e) or math.isinf(a):
        if a != e:
            fail(f"{what}: got {a!r}, expected {e!r}")
        return
    if abs(a - e) > atol + rtol * abs(e):
        fail(f"{what}: got {a:.10g}, expected {e:.10g} (rtol={rtol:g}, atol={atol:g})")


def assert_at_least(value: float, bar: float, what: str) -> None:
    """A metric must reach ``bar``; NaN never does."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(float(value)) or float(value) < bar:
        fail(f"{what}: {value!r} is below the bar of {bar}")


def assert_none(value, what: str) -> None:
    if value is not None:
        fail(f"{what}: expected None, got {describe(value)}")


def assert_float_list(actual, expected: Sequence[float], what: str, *, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    if not isinstance(actual, (list, tuple)) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in actual):
        fail(f"{what}: expected a list of {len(expected)} Python floats, got {describe(actual)}" + (f" of {[describe(v) for v in actual][:3]}" if isinstance(actual, (list, tuple)) else ""))
    if len(actual) != len(expected):
        fail(f"{what}: expected {len(expected)} values, got {len(actual)}")
    assert_tensor(torch.tensor([float(v) for v in actual], dtype=torch.float64), torch.tensor(list(expected), dtype=torch.float64), what, rtol=rtol, atol=atol)


def assert_state_dict(actual, expected: dict[str, torch.Tensor], what: str, **tol) -> None:
    if not isinstance(actual, dict):
        fail(f"{what}: expected a state dict, got {describe(actual)}")
    if sorted(actual) != sorted(expected):
        fail(f"{what}: parameter names {sorted(actual)} differ from the expected {sorted(expected)}")
    for name in expected:
        assert_tensor(actual[name], expected[name], f"{what} [{name}]", **tol)


def numerical_gradcheck(
    forward: Callable[..., torch.Tensor],
    vjp: Callable[[list[torch.Tensor], torch.Tensor], list],
    inputs: list[torch.Tensor],
    wrt: Sequence[int],
    what: str,
    eps: float = 1e-6,
    atol: float = 1e-5,
    rtol: float = 1e-3,
) -> None:
    """``torch.autograd.gradcheck`` done from the outside, in float64, on a remote function.

    ``forward(*inputs)`` and ``vjp(inputs, grad_output) -> grads`` run in the worker; the
    Jacobian is built here column by column (central differences) and row by row (vector-Jacobian
    products with one-hot vectors), and the two are compared.
    """
    out = forward(*inputs)
    if not isinstance(out, torch.Tensor):
        fail(f"{what}: forward returned {describe(out)}, expected a Tensor")
    n_out = out.numel()
    for i in wrt:
        x = inputs[i]
        numeric = torch.zeros(x.numel(), n_out, dtype=torch.float64)
        for j in range(x.numel()):
            plus, minus = [t.clone() for t in inputs], [t.clone() for t in inputs]
            plus[i].view(-1)[j] += eps
            minus[i].view(-1)[j] -= eps
            numeric[j] = ((forward(*plus) - forward(*minus)) / (2 * eps)).reshape(-1).to(torch.float64)
        analytic = torch.zeros_like(numeric)
        for k in range(n_out):
            one_hot = torch.zeros(n_out, dtype=out.dtype)
            one_hot[k] = 1
            grads = vjp(inputs, one_hot.view_as(out))
            g = grads[i]
            if g is None:
                fail(f"{what}: backward returned no gradient for input {i}, which requires one")
            if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(x.shape):
                fail(f"{what}: gradient for input {i} should be a Tensor{list(x.shape)}, got {describe(g)}")
            analytic[:, k] = g.reshape(-1).to(torch.float64)
        if not torch.allclose(analytic, numeric, rtol=rtol, atol=atol):
            diff = (analytic - numeric).abs()
            j, k = divmod(int(diff.argmax()), n_out)
            fail(
                f"{what}: gradcheck failed for input {i}: analytic and numerical Jacobians differ; "
                f"d out[{k}] / d in[{j}]: analytic {analytic[j, k].item():.6g}, numerical {numeric[j, k].item():.6g}"
            )


# ----------------------------------------------------------------------------- checks of the lesson
def call_checked(target, name: str, *args, forbid: Sequence[str] = (), forbid_ops: Sequence[str] = (), hint: str = "",
                 count_ops: bool = False, count_lines: bool = False, timeout: float | None = None, label: str | None = None,
                 **kwargs) -> CallResult:
    """Call ``name`` (on the ``student`` proxy, or a method of a RemoteObject) and fail if it used
    a forbidden function (dotted path, however the student reached it) or operator (``torchvision::nms``,
    from any thread). ``hint`` says what to do instead; ``label`` names the call in that message when
    ``name`` is not what the student wrote (a grader helper's ``__call__`` running the student's code)."""
    if isinstance(target, RemoteObject):
        result = target.call_method(name, *args, count_ops=count_ops, count_lines=count_lines, watch=forbid, watch_ops=forbid_ops, **kwargs)
    else:
        result = target.call(name, *args, count_ops=count_ops, count_lines=count_lines, watch=forbid, watch_ops=forbid_ops, timeout=timeout, **kwargs)
    used = sorted(path for path, n in result.calls.items() if n)
    if used:
        fail(f"{label or name} must not use {', '.join(used)}: writing it is the exercise" + (f" ({hint})" if hint else ""))
    return result


def assert_vectorized(student, name: str, small_args: Sequence, large_args: Sequence, what: str, hint: str = "compute all pairs at once by broadcasting") -> None:
    """``name`` must run the same number of tensor operations and of lines of the student's own code
    for small and large inputs (a Python loop over elements shows up in one or the other)."""
    small = student.call(name, *small_args, count_ops=True, count_lines=True)
    large = student.call(name, *large_args, count_ops=True, count_lines=True)
    ops_small, ops_large = sum(small.ops.values()), sum(large.ops.values())
    if ops_large > ops_small:
        fail(f"{name} ran {ops_small} tensor operations for {what[0]} but {ops_large} for {what[1]}: {hint}")
    if large.lines > small.lines:
        fail(f"{name} executed {small.lines} lines of your code for {what[0]} but {large.lines} for {what[1]} "
             f"(a Python loop over the elements): {hint}")


def assert_remote_module(student, obj, what: str, class_path: str = "torch.nn.Module") -> None:
    """``obj`` (made in the worker) must be an instance of ``class_path``."""
    if not isinstance(obj, RemoteObject) or not student.helper("is_instance")(obj, class_path):
        fail(f"{what} must be a {class_path.rsplit('.', 1)[-1]}, got {describe(obj)}")


def assert_inputs_unchanged(student, name: str, args: Sequence, what: str, allow_alias: bool = False):
    """Call ``name(*args)`` in the worker; fail if it modified a tensor argument in place (or returned
    one of them, unless ``allow_alias``). Returns the result."""
    result, changed, aliased = student.helper("call_with_snapshot")(student.__getattr__(name).get(), list(args))
    bad = [i for i, c in enumerate(changed) if c]
    if bad:
        fail(f"{what}: {name} changed its argument(s) {bad} in place; compute a new tensor and leave the caller's data alone")
    if not allow_alias and any(aliased):
        fail(f"{what}: {name} returned its input tensor itself; return a new tensor (the caller's tensor must not change when the result does)")
    return result
