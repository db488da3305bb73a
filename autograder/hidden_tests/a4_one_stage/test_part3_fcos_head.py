"""Part 3: FCOSHead — output shapes and order (levels concatenated, each row by row), one set of weights
for every level, the classification prior, non-negative box deltas."""
import math

import pytest
import torch

from .helpers import check_forbidden
from autograder.testing import assert_remote_module, describe, fail


def build(student, in_channels, num_classes):
    torch.manual_seed(0)
    head = student.FCOSHead(in_channels, num_classes)
    assert_remote_module(student, head, f"FCOSHead({in_channels}, {num_classes})")
    return head


def run(student, head, features, what):
    out = check_forbidden(head, "__call__", features, what=what)
    if not isinstance(out, (tuple, list)) or len(out) != 3 or not all(isinstance(t, torch.Tensor) for t in out):
        fail(f"{what} must return (cls_logits, box_deltas, centerness_logits), got {describe(out)}")
    return out


def expect_shapes(out, batch, n, num_classes, what):
    want = [(batch, n, num_classes), (batch, n, 4), (batch, n)]
    got = [tuple(t.shape) for t in out]
    if got != want:
        fail(f"{what}: expected shapes {want} (cls_logits, box_deltas, centerness_logits), got {got}")


@pytest.mark.part("fcos_head")
@pytest.mark.points(1)
def test_fcos_head_shapes(student):
    """Tensor[B, N, num_classes], Tensor[B, N, 4], Tensor[B, N] for 1 to 3 levels of non-square maps, batches of 1 and 3, several channel counts"""
    g = torch.Generator().manual_seed(0)
    for channels, classes, batch, sizes in [(32, 5, 2, [(6, 10), (3, 5)]), (16, 2, 1, [(7, 4)]), (64, 7, 3, [(8, 8), (4, 4), (2, 2)])]:
        head = build(student, channels, classes)
        feats = [torch.randn(batch, channels, h, w, generator=g) for h, w in sizes]
        what = f"FCOSHead({channels}, {classes}) on maps {sizes}, batch {batch}"
        expect_shapes(run(student, head, feats, what), batch, sum(h * w for h, w in sizes), classes, what)


@pytest.mark.part("fcos_head")
@pytest.mark.points(3)
def test_fcos_head_order_is_levels_then_rows(student):
    """row n of each output belongs to location n of torch.cat(fcos_locations(...)): levels in order, each row by row (a local change moves the outputs at its own place)"""
    head = build(student, 16, 3)
    sizes = [(9, 14), (5, 7)]
    base = [torch.zeros(1, 16, h, w) for h, w in sizes]
    with_bump = run(student, head, base, "FCOSHead")
    offsets = [0, 9 * 14]
    for level, (row, col) in [(0, (2, 11)), (0, (7, 3)), (1, (3, 5))]:
        feats = [f.clone() for f in base]
        feats[level][0, :, row, col] = 8.0
        bumped = run(student, head, feats, "FCOSHead")
        change = sum((b - a).abs().reshape(b.shape[0], b.shape[1], -1).sum(-1) for a, b in zip(with_bump, bumped))[0]  # [N]
        h, w = sizes[level]
        own = change[offsets[level]:offsets[level] + h * w].reshape(h, w)
        peak = int(own.argmax())
        peak_row, peak_col = divmod(peak, w)
        if abs(peak_row - row) > 3 or abs(peak_col - col) > 3 or float(own.max()) <= float(change.max()) * 0.5:
            fail(f"FCOSHead: a change of level {level}'s map at row {row}, column {col} moved most the outputs of row "
                 f"{offsets[level] + peak} (= row {peak_row}, column {peak_col} of that level); the outputs must be the levels "
                 f"concatenated in order, each flattened row by row (x.flatten(2).transpose(1, 2))")


@pytest.mark.part("fcos_head")
@pytest.mark.points(3)
def test_fcos_head_shared_weights_prior_and_deltas(student):
    """one head for every level (the same map on two levels gives the same outputs), class probabilities start near the prior 0.01 (the prior on the class logits only), box deltas >= 0, GroupNorm (an image's outputs do not depend on the batch in training mode)"""
    g = torch.Generator().manual_seed(1)
    head = build(student, 32, 4)
    x = torch.randn(2, 32, 5, 6, generator=g)
    cls, deltas, ctr = run(student, head, [x, x], "FCOSHead on [x, x]")
    expect_shapes((cls, deltas, ctr), 2, 60, 4, "FCOSHead on [x, x]")
    for name, t in (("cls_logits", cls), ("box_deltas", deltas), ("centerness_logits", ctr)):
        if not torch.allclose(t[:, :30], t[:, 30:], atol=1e-6):
            fail(f"FCOSHead: the same feature map on two levels gives different {name}: one head (the same weights) must run on every level")
    p = float(torch.sigmoid(cls.double()).mean())
    if not 0.005 <= p <= 0.02:
        fail(f"FCOSHead: a new head's mean class probability is {p:.3f}; initialize the class logits' bias to -log((1 - 0.01) / 0.01) (RetinaNet's prior)")
    if bool((deltas < 0).any()):
        fail(f"FCOSHead: box deltas must be >= 0 (exp, or a ReLU, of the regression output); the smallest is {float(deltas.min()):.3g}")
    # The prior is the classification's only: the regression and centerness outputs start with bias 0.
    if float(deltas.max()) < 0.05 or abs(float(ctr.mean())) > 1.0:
        fail(f"FCOSHead: a new head's box deltas are at most {float(deltas.max()):.3g} and its mean centerness logit is "
             f"{float(ctr.mean()):.3g}: the prior bias goes on the class logits only; the box and centerness convolutions start with bias 0")
    # GroupNorm normalizes each image by itself; BatchNorm in training mode mixes the batch.
    head.call_method("train")
    alone = run(student, head, [x[:1]], "FCOSHead in training mode on one image")
    together = run(student, head, [x], "FCOSHead in training mode on a batch of two")
    if not all(torch.allclose(a[0], b[0], atol=1e-5) for a, b in zip(alone, together)):
        fail("FCOSHead in training mode: an image's outputs change with the rest of the batch; the towers normalize with "
             "GroupNorm(16, in_channels), which (unlike BatchNorm) normalizes each image by itself")


def chain_to_input(layers, calls, start, x, num_convs, in_channels, what):
    """Follow the input of output convolution ``start`` back through ``num_convs`` x (3x3 conv, GroupNorm, ReLU) to the
    feature map ``x``; the names of the tower convolutions it went through."""
    tower_convs = [n for n, l in layers.items() if l[0] == "Conv2d" and n != start and n in calls]
    norms = [n for n, l in layers.items() if l[0] == "GroupNorm" and n in calls]
    t, used = calls[start][0], []
    for step in range(num_convs):
        norm = next((n for n in norms if calls[n][1].shape == t.shape and torch.allclose(torch.relu(calls[n][1]), t, atol=1e-6)), None)
        if norm is None:
            fail(f"{what}: the input of the output convolution {start!r} is not ReLU(GroupNorm(...)) of its tower "
                 f"({num_convs - step} more conv + GroupNorm + ReLU expected); each tower is num_convs x (3x3 convolution, GroupNorm(16, in_channels), ReLU)")
        conv = next((n for n in tower_convs if calls[n][1].shape == calls[norm][0].shape and torch.allclose(calls[n][1], calls[norm][0], atol=1e-6)), None)
        if conv is None:
            fail(f"{what}: the GroupNorm {norm!r} does not normalize the output of a 3x3 convolution of the tower")
        used.append(conv)
        t = calls[conv][0]
    if t.shape != x.shape or not torch.allclose(t, x, atol=1e-6):
        fail(f"{what}: the output convolution {start!r} is not num_convs={num_convs} x (3x3 convolution, GroupNorm, ReLU) away from the "
             "feature map: each tower has exactly num_convs blocks")
    return used


@pytest.mark.part("fcos_head")
@pytest.mark.points(3)
def test_fcos_head_architecture_and_initialization(student):
    """two towers of num_convs x (3x3 conv in_channels -> in_channels, GroupNorm(16, in_channels), ReLU); class logits on the
    classification tower, deltas and centerness on the regression tower, 3x3 output convolutions; output weights N(0, 0.01^2),
    the prior bias -log((1 - prior_probability) / prior_probability) on the class logits, 0 on the others; deltas that cannot overflow"""
    g = torch.Generator().manual_seed(2)
    channels, classes = 32, 5
    for kwargs in ({}, {"num_convs": 1}, {"num_convs": 3, "prior_probability": 0.05}):
        num_convs, prior = kwargs.get("num_convs", 2), kwargs.get("prior_probability", 0.01)
        what = f"FCOSHead({channels}, {classes}{''.join(f', {k}={v}' for k, v in kwargs.items())})"
        torch.manual_seed(0)
        head = student.FCOSHead(channels, classes, **kwargs)
        assert_remote_module(student, head, what)
        x = torch.randn(2, channels, 5, 6, generator=g)
        layers, calls, _ = student.helper("head_dataflow")(head, [x])
        other_norms = sorted({l[0] for l in layers.values() if l[0] not in ("Conv2d", "GroupNorm")})
        if other_norms:
            fail(f"{what}: the towers normalize with GroupNorm(16, in_channels) only; found {', '.join(other_norms)}")
        norms = [l for l in layers.values() if l[0] == "GroupNorm"]
        if len(norms) != 2 * num_convs or any(l[1:] != (16, channels, True) for l in norms):
            fail(f"{what}: expected {2 * num_convs} GroupNorm(16, {channels}) layers (num_convs per tower), found {[l[1:3] for l in norms]} (groups, channels)")
        convs = {n: l for n, l in layers.items() if l[0] == "Conv2d"}
        tower = [n for n, l in convs.items() if l[1:3] == (channels, channels)]
        outputs = {}
        for out_channels, role in ((classes, "class logits"), (4, "box deltas"), (1, "centerness")):
            found = [n for n, l in convs.items() if l[1:3] == (channels, out_channels)]
            if len(found) != 1:
                fail(f"{what}: expected one output convolution {channels} -> {out_channels} ({role}), found {len(found)}")
            outputs[role] = found[0]
        if len(tower) != 2 * num_convs or len(convs) != 2 * num_convs + 3:
            fail(f"{what}: expected {2 * num_convs} tower convolutions {channels} -> {channels} and 3 output convolutions, "
                 f"found {[l[1:3] for l in convs.values()]} (in, out channels)")
        for name, l in convs.items():
            if l[3:6] != ((3, 3), (1, 1), (1, 1)):
                fail(f"{what}: every convolution of the head is 3x3 with padding 1 (stride 1); {name!r} has kernel {l[3]}, padding {l[4]}, stride {l[5]}")
        missing = [n for n in list(outputs.values()) + tower if n not in calls]
        if missing:
            fail(f"{what}: the layers {missing} were not used by forward")
        cls_chain = chain_to_input(layers, calls, outputs["class logits"], x, num_convs, channels, what)
        box_chain = chain_to_input(layers, calls, outputs["box deltas"], x, num_convs, channels, what)
        ctr_chain = chain_to_input(layers, calls, outputs["centerness"], x, num_convs, channels, what)
        if box_chain != ctr_chain or not torch.equal(calls[outputs["box deltas"]][0], calls[outputs["centerness"]][0]):
            fail(f"{what}: the box deltas and the centerness are computed from the same regression tower")
        if set(cls_chain) & set(box_chain):
            fail(f"{what}: the classification and regression towers are two towers with their own weights; they share {sorted(set(cls_chain) & set(box_chain))}")
        want_bias = -math.log((1 - prior) / prior)
        for role, name in outputs.items():
            std, bias = convs[name][6], convs[name][7]
            if not 0.006 < std < 0.014:
                fail(f"{what}: the {role} convolution's weights are drawn from N(0, 0.01^2); their std is {std:.4f}")
            want = want_bias if role == "class logits" else 0.0
            if bias is None or not torch.allclose(bias.double(), torch.full_like(bias.double(), want), atol=1e-6):
                fail(f"{what}: the {role} convolution's bias must start at {want:.6g}"
                     + (" (-log((1 - prior_probability) / prior_probability))" if role == "class logits" else " (the prior goes on the class logits only)")
                     + f", got {describe(bias)}")
    # deltas that cannot overflow: a regression output of 100 (exp(100) is inf in float32) still gives finite deltas
    torch.manual_seed(0)
    head = student.FCOSHead(channels, classes)
    _, _, out = student.helper("head_dataflow")(head, [torch.randn(1, channels, 4, 4, generator=g)], 100.0)
    if not isinstance(out, (tuple, list)) or len(out) != 3 or not isinstance(out[1], torch.Tensor) or not bool(torch.isfinite(out[1]).all()):
        fail("FCOSHead: with a regression output of 100 the box deltas are not finite: clamp the input of exp (at 10, say) so it cannot overflow")
