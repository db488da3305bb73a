"""Part 3: TwoLayerNet, ParallelBlock, build_parallel_model."""
import pytest
import torch

from autograder.client import RemoteObject
from autograder.testing import assert_tensor, describe, fail

F64 = dict(rtol=1e-9, atol=1e-10)


def is_module(student, obj) -> bool:
    return isinstance(obj, RemoteObject) and student.helper("is_instance")(obj, "torch.nn.Module")


def build_pair(student, reference, name, *args):
    """The student's module and the reference module with identical float64 weights."""
    torch.manual_seed(1234)
    ref = getattr(reference, name)(*args).double()
    got = getattr(student, name)(*args)
    if not is_module(student, got):
        fail(f"{name}(...) must be an nn.Module, got {describe(got)}")
    got.double()
    state = {k: v.detach().clone() for k, v in ref.state_dict().items()}
    names = got.state_dict()
    if sorted(names) != sorted(state):
        fail(f"{name}: parameters {sorted(names)} differ from the expected {sorted(state)} (keep the attribute names of the instructions)")
    for k, v in state.items():
        if tuple(names[k].shape) != tuple(v.shape):
            fail(f"{name}: parameter {k} has shape {list(names[k].shape)}, expected {list(v.shape)}")
    got.load_state_dict(state)
    return got, ref


def check_forward_and_grad(student, got, ref, x, what):
    _, changed, _ = student.helper("call_with_snapshot")(got, [x])
    if changed != [False]:
        fail(f"{what}: forward modified its input in place; compute new tensors and leave the caller's data alone")
    out, grads = student.helper("vjp")(got, [x], torch.ones_like(ref(x)), [True])
    xr = x.clone().requires_grad_()
    exp = ref(xr)
    exp.sum().backward()
    assert_tensor(out, exp.detach(), f"{what}: output for input {list(x.shape)}", **F64)
    assert_tensor(grads[0], xr.grad, f"{what}: gradient of the input", **F64)


@pytest.mark.part("modules")
@pytest.mark.points(6)
def test_two_layer_net(student, reference):
    """TwoLayerNet: parameters linear1/linear2, output and input gradient (2-D and 3-D inputs)"""
    got, ref = build_pair(student, reference, "TwoLayerNet", 7, 5, 3)
    check_forward_and_grad(student, got, ref, torch.randn(11, 7, dtype=torch.float64), "TwoLayerNet")
    check_forward_and_grad(student, got, ref, torch.randn(2, 4, 7, dtype=torch.float64), "TwoLayerNet")


@pytest.mark.part("modules")
@pytest.mark.points(5)
def test_parallel_block(student, reference):
    """ParallelBlock: relu(linear1(x) * linear2(x)), output and input gradient"""
    got, ref = build_pair(student, reference, "ParallelBlock", 6, 9)
    check_forward_and_grad(student, got, ref, torch.randn(13, 6, dtype=torch.float64), "ParallelBlock")
    check_forward_and_grad(student, got, ref, torch.randn(3, 2, 6, dtype=torch.float64), "ParallelBlock")


@pytest.mark.part("modules")
@pytest.mark.points(4)
def test_build_parallel_model(student, reference):
    """build_parallel_model: Sequential(ParallelBlock, ParallelBlock, Linear) with the right sizes"""
    got, ref = build_pair(student, reference, "build_parallel_model", 8, 6, 2)
    if not student.helper("is_instance")(got, "torch.nn.Sequential"):
        fail(f"build_parallel_model must return an nn.Sequential, got {got.remote_type}")
    kinds = [student.helper("type_name")(got[i]).rsplit(".", 1)[-1] for i in range(len(ref))]
    if len(kinds) != 3 or kinds[2] != "Linear" or kinds[0] != "ParallelBlock" or kinds[1] != "ParallelBlock":
        fail(f"build_parallel_model: expected layers [ParallelBlock, ParallelBlock, Linear], got {kinds}")
    check_forward_and_grad(student, got, ref, torch.randn(10, 8, dtype=torch.float64), "build_parallel_model")
