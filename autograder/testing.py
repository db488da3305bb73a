"""Assertions for hidden tests: messages that tell the student what is wrong, not the answer's code."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from autograder.client import RemoteObject


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
