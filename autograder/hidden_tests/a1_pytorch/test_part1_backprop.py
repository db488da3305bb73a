"""Part 1: manual_two_layer_step."""
import pytest
import torch

from autograder.testing import assert_inputs_unchanged, assert_tensor, fail

from .lesson import AUTOGRAD, AUTOGRAD_HINT, call_by_hand


def problem(n, d_in, h, d_out, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=dtype) for s in ((n, d_in), (n, d_out), (d_in, h), (h, d_out))]


def expected_step(x, y, w1, w2, lr):
    a1, a2 = w1.clone().requires_grad_(), w2.clone().requires_grad_()
    loss = (torch.relu(x.mm(a1)).mm(a2) - y).pow(2).sum()
    loss.backward()
    return loss.detach(), (w1 - lr * a1.grad), (w2 - lr * a2.grad)


def check_step(student, x, y, w1, w2, lr, tol):
    """The step must match autograd's and use no autograd itself (any test of the step fails otherwise)."""
    got = call_by_hand(student, "manual_two_layer_step", student.manual_two_layer_step.get(), [x, y, w1, w2, lr], AUTOGRAD, hint=AUTOGRAD_HINT)
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        fail(f"manual_two_layer_step must return (loss, new_w1, new_w2), got {type(got).__name__}")
    loss, nw1, nw2 = expected_step(x, y, w1, w2, lr)
    shape = f"N={x.shape[0]}, D_in={x.shape[1]}, H={w1.shape[1]}, D_out={w2.shape[1]}, {x.dtype}"
    got_loss = got[0]
    if isinstance(got_loss, torch.Tensor) and got_loss.numel() == 1:
        got_loss = got_loss.reshape(())
    assert_tensor(got_loss, loss, f"loss ({shape})", **tol)
    assert_tensor(got[1], nw1, f"new w1 ({shape})", **tol)
    assert_tensor(got[2], nw2, f"new w2 ({shape})", **tol)


@pytest.mark.part("manual_step")
@pytest.mark.points(5)
def test_manual_step_matches_autograd(student):
    """loss and updated weights equal autograd's (float64, several shapes)"""
    for seed, d in enumerate([(16, 10, 7, 3), (1, 4, 3, 2), (9, 1, 5, 1), (5, 6, 1, 4)]):
        check_step(student, *problem(*d, torch.float64, seed), lr=1e-3, tol=dict(rtol=1e-9, atol=1e-10))


@pytest.mark.part("manual_step")
@pytest.mark.points(3)
def test_manual_step_float32_and_learning_rates(student):
    """float32 inputs keep float32; lr = 0 leaves the weights unchanged; other learning rates"""
    x, y, w1, w2 = problem(32, 20, 12, 5, torch.float32, 7)
    for lr in (0.0, 1e-4, 3e-3):
        check_step(student, x, y, w1, w2, lr, tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.part("manual_step")
@pytest.mark.points(3)
def test_manual_step_dead_relu_units(student):
    """hidden units that are negative for every example get no gradient"""
    x, y, w1, w2 = problem(12, 6, 8, 3, torch.float64, 3)
    x = x.abs() + 0.1
    w1[:, :4] = -w1[:, :4].abs() - 0.1  # units 0..3 are dead for every (positive) input
    check_step(student, x, y, w1, w2, 1e-2, tol=dict(rtol=1e-9, atol=1e-10))


@pytest.mark.part("manual_step")
@pytest.mark.points(2)
def test_manual_step_uses_no_autograd(student):
    """the backward pass is written by hand: no autograd (in any form, from any thread) during the step"""
    x, y, w1, w2 = problem(8, 5, 4, 3, torch.float64, 11)
    check_step(student, x, y, w1, w2, 1e-2, tol=dict(rtol=1e-9, atol=1e-10))
    check_step(student, x.float(), y.float(), w1.float(), w2.float(), 1e-2, tol=dict(rtol=1e-4, atol=1e-4))


@pytest.mark.part("manual_step")
@pytest.mark.points(2)
def test_manual_step_leaves_inputs_unchanged(student):
    """returns new weight tensors; x, y, w1 and w2 are not modified in place (also for lr = 0)"""
    for lr in (1e-2, 0.0):
        x, y, w1, w2 = problem(6, 4, 5, 2, torch.float64, 13)
        check_step(student, x, y, w1, w2, lr, tol=dict(rtol=1e-9, atol=1e-10))
        assert_inputs_unchanged(student, "manual_two_layer_step", [x, y, w1, w2, lr], f"manual_two_layer_step(..., lr={lr})")
