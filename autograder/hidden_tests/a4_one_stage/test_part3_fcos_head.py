"""Part 3: FCOSHead — output shapes and order (levels concatenated, each row by row), one set of weights
for every level, the classification prior, non-negative box deltas."""
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
@pytest.mark.points(2)
def test_fcos_head_shapes(student):
    """Tensor[B, N, num_classes], Tensor[B, N, 4], Tensor[B, N] for 1 to 3 levels of non-square maps, batches of 1 and 3, several channel counts"""
    g = torch.Generator().manual_seed(0)
    for channels, classes, batch, sizes in [(32, 5, 2, [(6, 10), (3, 5)]), (16, 2, 1, [(7, 4)]), (64, 7, 3, [(8, 8), (4, 4), (2, 2)])]:
        head = build(student, channels, classes)
        feats = [torch.randn(batch, channels, h, w, generator=g) for h, w in sizes]
        what = f"FCOSHead({channels}, {classes}) on maps {sizes}, batch {batch}"
        expect_shapes(run(student, head, feats, what), batch, sum(h * w for h, w in sizes), classes, what)


@pytest.mark.part("fcos_head")
@pytest.mark.points(4)
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
@pytest.mark.points(4)
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
