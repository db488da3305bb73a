"""Part 4: SGDMomentum and Adam against torch.optim, step by step.

The same gradient sequence is fed to the student's optimizer (in the worker) and to torch's
(here); gradients are set directly, or accumulated by real backward passes.
"""
import pytest
import torch

from autograder.testing import assert_state_dict, assert_tensor, call_checked, describe, fail

from .lesson import OPTIM_HINT, TORCH_OPTIM, TORCH_OPTIM_OPS

F64 = dict(rtol=1e-9, atol=1e-11)


def step_checked(student, cls_name, optimizer):
    """``optimizer.step()``, failing if it ran any torch.optim optimizer (from any thread, however reached)."""
    return call_checked(student, f"{cls_name}.step", optimizer, forbid=TORCH_OPTIM, forbid_ops=TORCH_OPTIM_OPS, hint=OPTIM_HINT)


def layers():
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)).double()
    return model


def remote_model(student, local):
    lib = student.lib
    remote = lib("torch.nn.Sequential")(lib("torch.nn.Linear")(4, 5), lib("torch.nn.Tanh")(), lib("torch.nn.Linear")(5, 3))
    remote.double()
    remote.load_state_dict({k: v.clone() for k, v in local.state_dict().items()})
    return remote


def make_groups(model, spec):
    """spec None: all parameters; else a list of (layer index, options) param groups."""
    if spec is None:
        return model.parameters()
    return [dict(params=model[i].parameters(), **opts) for i, opts in spec]


def grad_sequence(local, steps, seed, scale=1.0, drop=None):
    g = torch.Generator().manual_seed(seed)
    seq = []
    for t in range(steps):
        grads = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) * scale for n, p in local.named_parameters()}
        if drop is not None:
            for name in drop(t):
                grads[name] = None
        seq.append(grads)
    return seq


def run_both(student, cls_name, torch_cls, kwargs, steps=25, seed=0, groups=None, scale=1.0, drop=None):
    local = layers()
    remote = remote_model(student, local)
    ours = torch_cls(make_groups(local, groups), **kwargs)
    theirs = getattr(student, cls_name)(make_groups(remote, groups), **kwargs)
    for t, grads in enumerate(grad_sequence(local, steps, seed, scale, drop)):
        for name, p in local.named_parameters():
            p.grad = None if grads[name] is None else grads[name].clone()
        ours.step()
        student.helper("set_grads")(remote, grads)
        step_checked(student, cls_name, theirs)
        if t in (0, steps - 1):
            assert_state_dict(remote.state_dict(), local.state_dict(), f"{cls_name}{kwargs} parameters after step {t + 1}", **F64)


@pytest.mark.part("optimizers")
@pytest.mark.points(3)
def test_sgd_momentum_weight_decay(student):
    """SGDMomentum equals torch.optim.SGD with momentum and weight decay over 25 steps"""
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.01))
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.1, momentum=0.5), seed=1)


@pytest.mark.part("optimizers")
@pytest.mark.points(2)
def test_sgd_without_momentum(student):
    """momentum = 0 is plain SGD (with and without weight decay)"""
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.03, momentum=0.0, weight_decay=0.1), seed=2)
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.2, momentum=0.0), seed=3, steps=5)


@pytest.mark.part("optimizers")
@pytest.mark.points(2)
def test_sgd_param_groups(student):
    """per-group lr / momentum / weight_decay are honoured"""
    groups = [(0, dict(lr=0.01, momentum=0.8)), (2, dict(lr=0.2, momentum=0.0, weight_decay=0.05))]
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.1), seed=4, groups=groups)


@pytest.mark.part("optimizers")
@pytest.mark.points(2)
def test_sgd_skips_parameters_without_grad(student):
    """parameters whose grad is None are not updated (not even by weight decay)"""
    run_both(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.1), seed=5,
             drop=lambda t: ["2.weight"] if t % 3 else ["0.bias", "2.bias"])


@pytest.mark.part("optimizers")
@pytest.mark.points(2)
def test_sgd_uses_accumulated_gradients(student):
    """step uses the gradient accumulated by several backward passes, as torch does"""
    local = layers()
    remote = remote_model(student, local)
    ours = torch.optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
    theirs = student.SGDMomentum(remote.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(6)
    for step in range(4):
        ours.zero_grad()
        theirs.zero_grad()
        for _ in range(2 + step % 2):  # two or three micro-batches per step
            x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
            torch.nn.functional.mse_loss(local(x), y).backward()
            student.helper("backward_mse")(remote, x, y)
        ours.step()
        step_checked(student, "SGDMomentum", theirs)
    assert_state_dict(remote.state_dict(), local.state_dict(), "SGDMomentum with accumulated gradients", rtol=1e-9, atol=1e-10)


def run_accumulating(student, cls_name, torch_cls, kwargs, steps=3, seed=20):
    """Real training steps: zero_grad(set_to_none=False), two backward passes, step. After each step
    every p.grad must still be what backward produced, and the weights must follow torch's."""
    local = layers()
    remote = remote_model(student, local)
    ours = torch_cls(local.parameters(), **kwargs)
    theirs = getattr(student, cls_name)(remote.parameters(), **kwargs)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        ours.zero_grad(set_to_none=False)
        theirs.zero_grad(set_to_none=False)
        for _ in range(2):
            x, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
            torch.nn.functional.mse_loss(local(x), y).backward()
            student.helper("backward_mse")(remote, x, y)
        ours.step()
        step_checked(student, cls_name, theirs)
        got = student.helper("parameter_grads")(remote)
        if not isinstance(got, dict):
            fail(f"{cls_name}: could not read the gradients back, got {describe(got)}")
        for name, p in local.named_parameters():
            assert_tensor(got.get(name), p.grad, f"{cls_name}{kwargs}.step must not modify p.grad (nor keep it as its own state): "
                          f"{name}.grad after step {step + 1}", **F64)
    assert_state_dict(remote.state_dict(), local.state_dict(), f"{cls_name}{kwargs} parameters after {steps} steps with zero_grad(set_to_none=False)", **F64)


@pytest.mark.part("optimizers")
@pytest.mark.points(1)
def test_sgd_leaves_gradients_alone(student):
    """step reads p.grad but never writes it, and the momentum buffer is its own tensor (zero_grad(set_to_none=False))"""
    run_accumulating(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9))
    run_accumulating(student, "SGDMomentum", torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1), seed=21)


@pytest.mark.part("optimizers")
@pytest.mark.points(1)
def test_adam_leaves_gradients_alone(student):
    """step reads p.grad but never writes it (weight decay included), with zero_grad(set_to_none=False)"""
    run_accumulating(student, "Adam", torch.optim.Adam, dict(lr=0.01, weight_decay=0.1), seed=22)
    run_accumulating(student, "Adam", torch.optim.Adam, dict(lr=0.02), seed=23)


@pytest.mark.part("optimizers")
@pytest.mark.points(3)
def test_adam_defaults(student):
    """Adam equals torch.optim.Adam with default hyper-parameters over 25 steps"""
    run_both(student, "Adam", torch.optim.Adam, dict(lr=1e-2), seed=10)
    run_both(student, "Adam", torch.optim.Adam, dict(), seed=11, steps=5)


@pytest.mark.part("optimizers")
@pytest.mark.points(3)
def test_adam_weight_decay_and_betas(student):
    """L2 weight decay (added to the gradient, not decoupled) and non-default betas"""
    run_both(student, "Adam", torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.99), weight_decay=0.1), seed=12)


@pytest.mark.part("optimizers")
@pytest.mark.points(2)
def test_adam_eps_placement(student):
    """eps is added to the bias-corrected sqrt(v), outside the square root"""
    run_both(student, "Adam", torch.optim.Adam, dict(lr=0.01, eps=1e-2), seed=13, scale=1e-3)


@pytest.mark.part("optimizers")
@pytest.mark.points(3)
def test_adam_param_groups_and_missing_grads(student):
    """per-group hyper-parameters; a parameter without grad keeps its own step count"""
    groups = [(0, dict(lr=0.02, betas=(0.5, 0.9))), (2, dict(lr=0.005, weight_decay=0.2))]
    run_both(student, "Adam", torch.optim.Adam, dict(lr=0.01), seed=14, groups=groups,
             drop=lambda t: ["0.weight"] if t % 2 else [])
