"""Part 6: capture_graph."""
import pytest
import torch

from autograder.client import RemoteObject
from autograder.testing import assert_tensor, describe, fail

LINEAR = {"aten.linear.default", "aten.addmm.default", "linear", "Linear"}
RELU = {"aten.relu.default", "aten.clamp.default", "aten.clamp_min.default", "relu", "clamp", "ReLU"}


def capture(student, model, example):
    gm = student.capture_graph(model, example)
    if not isinstance(gm, RemoteObject) or not student.helper("is_instance")(gm, "torch.fx.GraphModule"):
        fail(f"capture_graph must return a torch.fx.GraphModule, got {describe(gm)}")
    nodes = student.helper("graph_nodes")(gm)
    return gm, [target for op, target in nodes if op in ("call_function", "call_module", "call_method")]


def check(student, build, example, what, expect):
    model = build()
    gm, ops = capture(student, model, example)
    for name, allowed, count in expect:
        found = sum(op in allowed for op in ops)
        if found != count:
            fail(f"{what}: the graph should contain {count} {name} op(s), found {found} in {ops}")
    x = torch.randn(example.shape, dtype=example.dtype)
    assert_tensor(gm(x), model(x), f"{what}: graph output on a new input", rtol=1e-5, atol=1e-6)


@pytest.mark.part("graphs")
@pytest.mark.points(2)
def test_capture_two_layer_model(student):
    """the graph of Linear-ReLU-Linear has two linear ops and a ReLU and computes the same output"""

    def build():
        torch.manual_seed(0)
        lib = student.lib
        return lib("torch.nn.Sequential")(lib("torch.nn.Linear")(6, 5), lib("torch.nn.ReLU")(), lib("torch.nn.Linear")(5, 2))

    check(student, build, torch.randn(4, 6), "capture_graph(Linear-ReLU-Linear)", [("linear", LINEAR, 2), ("ReLU", RELU, 1)])


@pytest.mark.part("graphs")
@pytest.mark.points(1)
def test_capture_deeper_model(student):
    """a deeper model (Linear-Tanh-Linear-Sigmoid, batch of one) is captured op for op"""

    def build():
        torch.manual_seed(1)
        lib = student.lib
        return lib("torch.nn.Sequential")(lib("torch.nn.Linear")(3, 4), lib("torch.nn.Tanh")(), lib("torch.nn.Linear")(4, 4), lib("torch.nn.Sigmoid")())

    tanh = {"aten.tanh.default", "tanh", "Tanh"}
    sigmoid = {"aten.sigmoid.default", "sigmoid", "Sigmoid"}
    check(student, build, torch.randn(1, 3), "capture_graph(Linear-Tanh-Linear-Sigmoid)", [("linear", LINEAR, 2), ("tanh", tanh, 1), ("sigmoid", sigmoid, 1)])


@pytest.mark.part("graphs")
@pytest.mark.points(2)
def test_capture_eval_mode_graph(student):
    """a model with BatchNorm and Dropout, handed over in train mode, is captured as its eval-mode graph"""
    layers = [("Linear", (5, 6)), ("BatchNorm1d", (6,)), ("ReLU", ()), ("Dropout", (0.5,)), ("Linear", (6, 3))]
    torch.manual_seed(2)
    local = torch.nn.Sequential(*[getattr(torch.nn, name)(*args) for name, args in layers])
    local[1].running_mean.uniform_(-1, 1)
    local[1].running_var.uniform_(0.5, 2)
    lib = student.lib
    remote = lib("torch.nn.Sequential")(*[lib(f"torch.nn.{name}")(*args) for name, args in layers])
    remote.load_state_dict({k: v.clone() for k, v in local.state_dict().items()})
    remote.train()
    gm, _ = capture(student, remote, torch.randn(4, 5))
    local.eval()
    x = torch.randn(4, 5)  # the example's shape: torch.export specializes the batch size
    what = "capture_graph(Linear-BatchNorm1d-ReLU-Dropout-Linear) of a model in train mode"
    for attempt in range(2):  # dropout in the graph would give a different output each time
        assert_tensor(gm(x), local(x).detach(), f"{what}: the graph's output should be the eval-mode output "
                      "(BatchNorm with its running statistics, no dropout); call model.eval() before capturing", rtol=1e-5, atol=1e-6)
