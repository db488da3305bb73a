"""Part 2: Sigmoid, LinearFunction, SmoothL1Function."""
import pytest
import torch
import torch.nn.functional as F

from autograder.testing import assert_none, assert_tensor, describe, fail, numerical_gradcheck

from .lesson import check_function_by_hand, check_function_leaves_inputs

F64 = dict(rtol=1e-9, atol=1e-10)


def rand(*shape, seed=0, dtype=torch.float64, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * scale


def small_problem(name):
    """(inputs, needs_grad, grad_outputs) on which a Function's two passes are watched."""
    if name == "Sigmoid":
        return [rand(5, seed=60)], [True], [rand(5, seed=61)]
    if name == "LinearFunction":
        return [rand(4, 3, seed=62), rand(2, 3, seed=63), rand(2, seed=64)], [True, True, True], [rand(4, 2, seed=65)]
    return [rand(6, seed=66, scale=2), rand(6, seed=67, scale=2), 0.7], [True, True, False], [rand(6, seed=68)]


def by_hand(student, name):
    """Every test of a Function starts here: writing forward and backward is the exercise, so a
    Function that calls autograd (or the library's own kernels) gets none of its points."""
    check_function_by_hand(student, name, *small_problem(name))


def leaves_inputs(student, name):
    by_hand(student, name)
    check_function_leaves_inputs(student, name, *small_problem(name))


def expected_grads(fn, inputs, grad_output, needs):
    xs = [x.clone().requires_grad_(m) if isinstance(x, torch.Tensor) else x for x, m in zip(inputs, needs)]
    out = fn(*xs)
    out.backward(grad_output)
    return out.detach(), [x.grad if m else None for x, m in zip(xs, needs)]


def remote_apply(student, name):
    return getattr(student, name).apply.get()  # the Function's apply, kept in the worker


def check_vjp(student, name, torch_fn, inputs, needs, what):
    apply = remote_apply(student, name)
    g = rand(*torch_fn(*inputs).shape, seed=99, dtype=inputs[0].dtype)
    out, grads = student.helper("vjp")(apply, list(inputs), g, list(needs))
    exp_out, exp_grads = expected_grads(torch_fn, inputs, g, needs)
    assert_tensor(out, exp_out, f"{what}: output", **F64)
    for i, (got, exp) in enumerate(zip(grads, exp_grads)):
        if exp is not None:
            if got is None:
                fail(f"{what}: no gradient reached input {i}")
            assert_tensor(got, exp, f"{what}: gradient of input {i}", **F64)


def gradcheck(student, name, inputs, wrt, what, extra=()):
    apply = remote_apply(student, name)
    vjp = student.helper("vjp")

    def forward(*xs):
        return apply(*xs, *extra)

    def grads(xs, g):
        full = list(xs) + list(extra)
        needs = [i in wrt for i in range(len(xs))] + [False] * len(extra)
        return vjp(apply, full, g, needs)[1]

    numerical_gradcheck(forward, grads, list(inputs), wrt, what)


# ----------------------------------------------------------------------------- Sigmoid (8)
@pytest.mark.part("sigmoid")
@pytest.mark.points(2)
def test_sigmoid_forward(student):
    """sigmoid(x) and Sigmoid.apply(x) equal torch.sigmoid, also for large |x| and empty input"""
    by_hand(student, "Sigmoid")
    for dtype, tol in ((torch.float64, F64), (torch.float32, dict(rtol=1e-5, atol=1e-7))):
        x = torch.cat([rand(50, seed=1, dtype=dtype) * 8, torch.tensor([-100.0, -30.0, 0.0, 30.0, 100.0], dtype=dtype)]).reshape(5, 11)
        assert_tensor(student.sigmoid(x), torch.sigmoid(x), f"sigmoid(x), {dtype}", **tol)
        assert_tensor(student.Sigmoid.apply(x), torch.sigmoid(x), f"Sigmoid.apply(x), {dtype}", **tol)
    empty = torch.zeros(0, 3)
    assert_tensor(student.sigmoid(empty), torch.sigmoid(empty), "sigmoid of an empty tensor")


@pytest.mark.part("sigmoid")
@pytest.mark.points(2)
def test_sigmoid_backward(student):
    """gradients through Sigmoid equal autograd's for torch.sigmoid"""
    by_hand(student, "Sigmoid")
    check_vjp(student, "Sigmoid", torch.sigmoid, [rand(4, 7, seed=2, scale=3)], [True], "Sigmoid")


@pytest.mark.part("sigmoid")
@pytest.mark.points(2)
def test_sigmoid_gradcheck(student):
    """Sigmoid passes gradcheck (float64)"""
    by_hand(student, "Sigmoid")
    gradcheck(student, "Sigmoid", [rand(3, 4, seed=3, scale=2)], [0], "Sigmoid")


@pytest.mark.part("sigmoid")
@pytest.mark.points(1)
def test_sigmoid_saves_for_backward(student):
    """Sigmoid stores what backward needs with ctx.save_for_backward"""
    by_hand(student, "Sigmoid")
    x = rand(6, seed=4)
    out, grads, n_saved = student.helper("function_backward")(student.Sigmoid.get(), [x], [True], [torch.ones(6, dtype=torch.float64)])
    if not n_saved:
        fail("Sigmoid.forward should save its output with ctx.save_for_backward(...)")
    assert_tensor(grads[0], torch.sigmoid(x) * (1 - torch.sigmoid(x)), "Sigmoid.backward(ctx, ones)", **F64)


@pytest.mark.part("sigmoid")
@pytest.mark.points(1)
def test_sigmoid_leaves_inputs_unchanged(student):
    """Sigmoid modifies neither its input (forward) nor grad_output (backward) in place"""
    leaves_inputs(student, "Sigmoid")


# ----------------------------------------------------------------------------- LinearFunction (12)
LINEAR_CASES = [((5, 3), 4, True), ((2, 4, 3), 6, True), ((3,), 2, True), ((7, 3), 5, False), ((0, 3), 2, True)]


@pytest.mark.part("linear_function")
@pytest.mark.points(2)
def test_linear_forward(student):
    """LinearFunction.apply equals F.linear: leading dims, 1-D input, no bias, empty batch, float32"""
    by_hand(student, "LinearFunction")
    for k, (shape, out_f, with_bias) in enumerate(LINEAR_CASES):
        for dtype, tol in ((torch.float64, F64), (torch.float32, dict(rtol=1e-5, atol=1e-5))):
            x, w = rand(*shape, seed=k, dtype=dtype), rand(out_f, shape[-1], seed=k + 10, dtype=dtype)
            args = [x, w] + ([rand(out_f, seed=k + 20, dtype=dtype)] if with_bias else [])
            assert_tensor(student.LinearFunction.apply(*args), F.linear(*args), f"LinearFunction.apply for x {list(shape)}, bias={with_bias}, {dtype}", **tol)


@pytest.mark.part("linear_function")
@pytest.mark.points(3)
def test_linear_backward(student):
    """gradients of x, weight and bias equal autograd's for F.linear (with leading dims)"""
    by_hand(student, "LinearFunction")
    for k, (shape, out_f, with_bias) in enumerate(LINEAR_CASES[:4]):
        args = [rand(*shape, seed=k), rand(out_f, shape[-1], seed=k + 10)] + ([rand(out_f, seed=k + 20)] if with_bias else [])
        check_vjp(student, "LinearFunction", F.linear, args, [True] * len(args), f"LinearFunction, x {list(shape)}, bias={with_bias}")


@pytest.mark.part("linear_function")
@pytest.mark.points(3)
def test_linear_needs_input_grad(student):
    """backward returns None exactly for the inputs that need no gradient"""
    by_hand(student, "LinearFunction")
    x, w, b = rand(4, 3, seed=5), rand(2, 3, seed=6), rand(2, seed=7)
    g = rand(4, 2, seed=8)
    exp = {"x": g @ w, "weight": g.t() @ x, "bias": g.sum(0)}
    for mask in ([True, False, False], [False, True, True], [False, False, True], [True, True, False]):
        _, grads, _ = student.helper("function_backward")(student.LinearFunction.get(), [x, w, b], mask, [g])
        if grads is None or len(grads) < 3:
            fail(f"LinearFunction.backward must return three gradients (x, weight, bias), got {describe(grads)}")
        for (name, expected), needed, got in zip(exp.items(), mask, grads):
            if needed:
                assert_tensor(got, expected, f"gradient of {name} when needs_input_grad={mask}", **F64)
            else:
                assert_none(got, f"gradient of {name} when needs_input_grad={mask}")
    _, grads, _ = student.helper("function_backward")(student.LinearFunction.get(), [x, w], [True, True], [g])
    assert_tensor(grads[0], exp["x"], "gradient of x without bias", **F64)
    assert_tensor(grads[1], exp["weight"], "gradient of weight without bias", **F64)
    if len(grads) > 2:
        assert_none(grads[2], "gradient of a bias that was not given")


@pytest.mark.part("linear_function")
@pytest.mark.points(3)
def test_linear_gradcheck(student):
    """LinearFunction passes gradcheck for x, weight and bias (float64, 3-D input)"""
    by_hand(student, "LinearFunction")
    gradcheck(student, "LinearFunction", [rand(2, 2, 3, seed=9), rand(2, 3, seed=10), rand(2, seed=11)], [0, 1, 2], "LinearFunction")


@pytest.mark.part("linear_function")
@pytest.mark.points(1)
def test_linear_leaves_inputs_unchanged(student):
    """LinearFunction modifies neither x, weight, bias (forward) nor grad_output (backward) in place"""
    leaves_inputs(student, "LinearFunction")


# ----------------------------------------------------------------------------- SmoothL1 (8)
def smooth_l1(x, t, beta=1.0):
    return F.smooth_l1_loss(x, t, reduction="none", beta=beta)


@pytest.mark.part("smooth_l1_function")
@pytest.mark.points(2)
def test_smooth_l1_forward(student):
    """values equal F.smooth_l1_loss(reduction='none') for several beta, beta = 0, |d| = beta, default beta"""
    by_hand(student, "SmoothL1Function")
    x, t = rand(6, 5, seed=12, scale=2), rand(6, 5, seed=13, scale=2)
    for beta in (1.0, 0.5, 2.0, 0.0, 1e-3):
        assert_tensor(student.SmoothL1Function.apply(x, t, beta), smooth_l1(x, t, beta), f"SmoothL1Function.apply(input, target, {beta})", **F64)
    assert_tensor(student.SmoothL1Function.apply(x, t), smooth_l1(x, t), "SmoothL1Function.apply(input, target) with the default beta", **F64)
    at_beta = torch.tensor([0.5, -0.5, 0.25, 0.0, 3.0], dtype=torch.float64)
    zeros = torch.zeros(5, dtype=torch.float64)
    assert_tensor(student.SmoothL1Function.apply(at_beta, zeros, 0.5), smooth_l1(at_beta, zeros, 0.5), "|input - target| equal to beta", **F64)
    x32, t32 = x.float(), t.float()
    assert_tensor(student.SmoothL1Function.apply(x32, t32, 0.7), smooth_l1(x32, t32, 0.7), "float32 input", rtol=1e-5, atol=1e-6)


def away_from_kinks(x, t, beta):
    d = x - t
    ok = ((d.abs() - beta).abs() > 1e-3) & (d.abs() > 1e-3)
    return torch.where(ok, x, x + 0.01)


@pytest.mark.part("smooth_l1_function")
@pytest.mark.points(3)
def test_smooth_l1_backward(student):
    """gradients reach both input and target and equal autograd's (beta > 0 and beta = 0)"""
    by_hand(student, "SmoothL1Function")
    for k, beta in enumerate((1.0, 0.3, 0.0)):
        x, t = rand(5, 4, seed=20 + k, scale=2), rand(5, 4, seed=30 + k, scale=2)
        x = away_from_kinks(x, t, beta)
        apply = remote_apply(student, "SmoothL1Function")
        g = rand(5, 4, seed=40 + k)
        out, grads = student.helper("vjp")(apply, [x, t, beta], g, [True, True, False])
        _, exp = expected_grads(lambda a, b: smooth_l1(a, b, beta), [x, t], g, [True, True])
        assert_tensor(out, smooth_l1(x, t, beta), f"SmoothL1 output, beta={beta}", **F64)
        for i, name in enumerate(("input", "target")):
            if grads[i] is None:
                fail(f"SmoothL1Function: no gradient reached {name} (beta={beta})")
            assert_tensor(grads[i], exp[i], f"SmoothL1Function gradient of {name}, beta={beta}", **F64)


@pytest.mark.part("smooth_l1_function")
@pytest.mark.points(2)
def test_smooth_l1_gradcheck(student):
    """SmoothL1Function passes gradcheck for input and target (float64)"""
    by_hand(student, "SmoothL1Function")
    x, t = rand(3, 3, seed=50, scale=2), rand(3, 3, seed=51, scale=2)
    gradcheck(student, "SmoothL1Function", [away_from_kinks(x, t, 0.7), t], [0, 1], "SmoothL1Function", extra=(0.7,))


@pytest.mark.part("smooth_l1_function")
@pytest.mark.points(1)
def test_smooth_l1_leaves_inputs_unchanged(student):
    """SmoothL1Function modifies neither input, target (forward) nor grad_output (backward) in place"""
    leaves_inputs(student, "SmoothL1Function")
