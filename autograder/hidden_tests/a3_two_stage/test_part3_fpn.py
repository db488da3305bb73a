"""Part 3: FPN == torchvision.ops.FeaturePyramidNetwork (no extra blocks) with the same weights, in
values and input gradients, for maps whose sizes do not halve exactly."""
import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork

from autograder.testing import assert_remote_module, assert_tensor, describe, fail

from .helpers import GRADED

F64 = dict(rtol=1e-9, atol=1e-10)
TV_GROUP = {"lateral_convs": "inner_blocks", "output_convs": "layer_blocks"}


def tv_key(key: str) -> str:
    """lateral_convs.0.weight -> inner_blocks.0.0.weight (torchvision wraps each conv in a Sequential)."""
    group, index, leaf = key.split(".")
    return f"{TV_GROUP[group]}.{index}.0.{leaf}"


def build_pair(student, in_channels, out_channels, seed=0):
    """The student's FPN and torchvision's with identical float64 weights (biases non-zero)."""
    torch.manual_seed(seed)
    ref = FeaturePyramidNetwork(in_channels, out_channels).double()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    got = student.FPN(in_channels, out_channels)
    assert_remote_module(student, got, f"FPN({in_channels}, {out_channels})")
    got.double()
    names = got.state_dict()
    want = {f"{g}.{i}.{leaf}" for g in ("lateral_convs", "output_convs") for i in range(len(in_channels)) for leaf in ("weight", "bias")}
    if set(names) != want:
        fail(f"FPN: parameters {sorted(names)} differ from the expected {sorted(want)} (keep the names and layers of the instructions)")
    ref_state = ref.state_dict()
    state = {k: ref_state[tv_key(k)].clone() for k in want}
    for k, v in state.items():
        if tuple(names[k].shape) != tuple(v.shape):
            fail(f"FPN: parameter {k} has shape {list(names[k].shape)}, expected {list(v.shape)}")
    got.load_state_dict(state)
    return got, ref


def maps_for(in_channels, sizes, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g, dtype=torch.float64) for c, (h, w) in zip(in_channels, sizes)]


def forward_checked(got, maps, what):
    out = GRADED.watched(got, "__call__", maps, what="FPN", rule="FPN")
    if not isinstance(out, (list, tuple)) or not all(isinstance(o, torch.Tensor) for o in out):
        fail(f"{what}: forward must return a list of tensors, got {describe(out)}")
    return list(out)


CASES = [
    ([4, 8, 16], 6, [(16, 16), (8, 8), (4, 4)]),          # exact halving
    ([3, 5, 7, 9], 4, [(15, 21), (8, 11), (4, 6), (2, 3)]),  # odd sizes, non-square
    ([6], 5, [(7, 9)]),                                   # one level
    ([2, 4], 3, [(9, 5), (3, 2)]),                        # ratio 3, not 2
]


@pytest.mark.part("fpn")
@pytest.mark.points(6)
def test_fpn_equals_torchvision(student):
    """outputs equal FeaturePyramidNetwork's with the same weights: one level or several, exact and uneven halving, non-square maps, float64"""
    for k, (channels, out_channels, sizes) in enumerate(CASES):
        got, ref = build_pair(student, channels, out_channels, seed=k)
        maps = maps_for(channels, sizes, seed=k)
        want = list(ref({str(i): m for i, m in enumerate(maps)}).values())
        out = forward_checked(got, maps, f"FPN{channels}")
        if len(out) != len(want):
            fail(f"FPN with {len(channels)} levels returned {len(out)} maps; expected one per level, finest first")
        for level, (o, w) in enumerate(zip(out, want)):
            assert_tensor(o, w, f"FPN({channels}, {out_channels}) level {level} for maps {sizes}", **F64)


@pytest.mark.part("fpn")
@pytest.mark.points(3)
def test_fpn_input_gradients(student):
    """gradients of a weighted sum of all outputs with respect to every input map equal torchvision's"""
    channels, out_channels, sizes = CASES[1]
    got, ref = build_pair(student, channels, out_channels, seed=5)
    maps = maps_for(channels, sizes, seed=5)
    g = torch.Generator().manual_seed(6)
    weights = [torch.randn(2, out_channels, h, w, generator=g, dtype=torch.float64) for h, w in sizes]
    leaves = [m.clone().requires_grad_() for m in maps]
    want = list(ref({str(i): m for i, m in enumerate(leaves)}).values())
    sum((o * w).sum() for o, w in zip(want, weights)).backward()
    result = student.helper("list_input_vjp")(got, maps, weights)
    if not isinstance(result, (list, tuple)) or len(result) != len(maps):
        fail(f"FPN: the grader could not run the backward pass through forward (got {describe(result)})")
    for level, (r, leaf) in enumerate(zip(result, leaves)):
        assert_tensor(r, leaf.grad, f"FPN gradient of input level {level}", **F64)


@pytest.mark.part("fpn")
@pytest.mark.points(1)
def test_fpn_leaves_its_inputs_alone_and_keeps_dtype(student):
    """forward does not change the input maps; float32 in, float32 out"""
    got = student.FPN([4, 8], 5)
    assert_remote_module(student, got, "FPN([4, 8], 5)")
    maps = [torch.randn(1, 4, 6, 10), torch.randn(1, 8, 3, 5)]
    copies = [m.clone() for m in maps]
    out = forward_checked(got, maps, "FPN")
    for o in out:
        if o.dtype != torch.float32:
            fail(f"FPN on float32 maps returned {o.dtype}; keep the input's dtype")
    _, changed, _ = student.helper("call_with_snapshot")(got, [maps])
    if any(changed) or not all(torch.equal(m, c) for m, c in zip(maps, copies)):
        fail("FPN.forward changed its input maps in place; compute new tensors")
