"""Part 4: fcos_losses == torchvision's FCOSHead.compute_loss on the same predictions and targets (a
reference box of side `stride` per location makes torchvision's BoxLinearCoder the notebook's ltrb / stride
encoding), in values and gradients; the student's function runs with reference versions of the part 1-2
functions (support.call_with_references)."""
import pytest
import torch
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops import sigmoid_focal_loss

from .helpers import with_references
from autograder.client import RemoteObject
from autograder.testing import assert_tensor, describe, fail

KEYS = ("loss_cls", "loss_box", "loss_ctr")
TV_KEYS = {"loss_cls": "classification", "loss_box": "bbox_regression", "loss_ctr": "bbox_ctrness"}
F64 = dict(rtol=1e-8, atol=1e-10)


def problem(seed, batch=2, num_classes=4, sizes=((8, 10), (4, 5), (2, 3)), strides=(4, 8, 16), objects=(3, 1), dtype=torch.float64):
    """Random predictions, and targets from random boxes: every location strictly inside some box of its image
    is positive for the first such box (the assignment rule does not matter here, only labels / matched boxes)."""
    g = torch.Generator().manual_seed(seed)
    locations, stride_of = [], []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid((torch.arange(h) + 0.5) * s, (torch.arange(w) + 0.5) * s, indexing="ij")
        locations.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], 1))
        stride_of.append(torch.full((h * w,), float(s)))
    locations, stride_of = torch.cat(locations).to(dtype), torch.cat(stride_of).to(dtype)
    n = len(locations)
    height, width = sizes[0][0] * strides[0], sizes[0][1] * strides[0]
    targets, matched_idxs = [], []
    for count in objects[:batch] + (0,) * max(0, batch - len(objects)):
        xy = torch.rand(count, 2, generator=g, dtype=dtype) * torch.tensor([width * 0.7, height * 0.7], dtype=dtype)
        wh = torch.rand(count, 2, generator=g, dtype=dtype) * torch.tensor([width * 0.4, height * 0.4], dtype=dtype) + 6
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, num_classes, (count,), generator=g)
        inside = ((locations[:, None, :] > boxes[None, :, :2]) & (locations[:, None, :] < boxes[None, :, 2:])).all(-1)  # [N, G]
        idx = torch.where(inside.any(1), inside.to(torch.uint8).argmax(1), torch.full((n,), -1)) if count else torch.full((n,), -1)
        targets.append({"boxes": boxes, "labels": labels})
        matched_idxs.append(idx)
    labels = torch.stack([torch.where(m >= 0, t["labels"][m.clamp(min=0)] if len(t["labels"]) else torch.zeros_like(m), torch.zeros_like(m))
                          for t, m in zip(targets, matched_idxs)])
    matched_boxes = torch.stack([torch.where((m >= 0)[:, None], t["boxes"][m.clamp(min=0)] if len(t["boxes"]) else torch.zeros(n, 4, dtype=dtype),
                                             torch.zeros(n, 4, dtype=dtype)) for t, m in zip(targets, matched_idxs)])
    cls_logits = torch.randn(batch, n, num_classes, generator=g, dtype=dtype) * 2 - 1
    box_deltas = torch.rand(batch, n, 4, generator=g, dtype=dtype) * 3 + 0.05
    centerness = torch.randn(batch, n, generator=g, dtype=dtype)
    return dict(cls_logits=cls_logits, box_deltas=box_deltas, centerness=centerness, labels=labels, matched_boxes=matched_boxes,
                locations=locations, strides=stride_of, targets=targets, matched_idxs=matched_idxs)


def student_args(p):
    return [p["cls_logits"], p["box_deltas"], p["centerness"], p["labels"], p["matched_boxes"], p["locations"], p["strides"]]


def torchvision_losses(p, alpha=0.25, gamma=2.0):
    """FCOSHead.compute_loss (torchvision) on the same inputs, with its gradients w.r.t. the three predictions."""
    preds = [p["cls_logits"].clone().requires_grad_(True), p["box_deltas"].clone().requires_grad_(True), p["centerness"].clone().requires_grad_(True)]
    half = p["strides"][:, None] / 2
    anchors = torch.cat([p["locations"] - half, p["locations"] + half], 1)
    head = FCOSHead(32, 1, preds[0].shape[-1]).double()  # only its compute_loss and box coder are used
    out = head.compute_loss(p["targets"], {"cls_logits": preds[0], "bbox_regression": preds[1], "bbox_ctrness": preds[2][..., None]},
                            [anchors] * len(p["targets"]), p["matched_idxs"])
    losses = {k: out[TV_KEYS[k]] for k in KEYS}
    if (alpha, gamma) != (0.25, 2.0):  # torchvision's head has the defaults built in: the focal term by hand
        one_hot = torch.zeros_like(preds[0])
        positive = p["labels"] > 0
        one_hot[positive, p["labels"][positive]] = 1.0
        losses["loss_cls"] = sigmoid_focal_loss(preds[0], one_hot, alpha, gamma, "sum") / max(1, int(positive.sum()))
    return losses, preds


def check(student, p, what, weights=(1.0, 1.0, 1.0), alpha=0.25, gamma=2.0, grads=True):
    kwargs = {} if (alpha, gamma) == (0.25, 2.0) else {"focal_alpha": alpha, "focal_gamma": gamma}
    reply = with_references(student, "losses_and_grads", "fcos_losses", [student_args(p), kwargs, dict(zip(KEYS, weights))], what)
    got, got_grads = reply
    if not isinstance(got, dict) or set(got) != set(KEYS):
        fail(f"{what}: fcos_losses must return the dict {{'loss_cls', 'loss_box', 'loss_ctr'}}, got {describe(got)}")
    want, preds = torchvision_losses(p, alpha, gamma)
    for key in KEYS:
        if not isinstance(got[key], torch.Tensor) or got[key].numel() != 1:
            fail(f"{what}: {key} must be a scalar tensor, got {describe(got[key])}")
        assert_tensor(got[key].reshape(()), want[key].detach(), f"{what}: {key}", **F64)
    if grads:
        total = sum(w * want[k] for w, k in zip(weights, KEYS))
        want_grads = torch.autograd.grad(total, preds, allow_unused=True)
        if got_grads is None:
            fail(f"{what}: the losses are not differentiable with respect to the predictions")
        for name, g, w in zip(("cls_logits", "box_deltas", "centerness_logits"), got_grads, want_grads):
            w = torch.zeros_like(p["cls_logits"] if name == "cls_logits" else p["box_deltas"] if name == "box_deltas" else p["centerness"]) if w is None else w
            if g is None:
                g = torch.zeros_like(w)
            assert_tensor(g, w, f"{what}: gradient of the losses with respect to {name}", **F64)
    return got


@pytest.mark.part("fcos_losses")
@pytest.mark.points(6)
def test_fcos_losses_equal_torchvision(student):
    """== torchvision FCOSHead.compute_loss: focal over all locations and classes (one-hot), GIoU and centerness BCE over the positives, / #positives of the batch; several batches"""
    for seed, batch, objects in [(0, 2, (3, 1)), (1, 3, (1, 4, 2)), (2, 1, (5,))]:
        check(student, problem(seed, batch=batch, objects=objects), f"fcos_losses (batch {batch}, objects {objects})", grads=False)


@pytest.mark.part("fcos_losses")
@pytest.mark.points(4)
def test_fcos_losses_gradients(student):
    """gradients by autograd with respect to the class logits, box deltas and centerness logits == torchvision's, for each loss alone and their sum"""
    p = problem(3, batch=2, objects=(2, 2))
    for weights in [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (1.0, 2.0, 0.5)]:
        check(student, p, f"fcos_losses (loss weights {weights})", weights=weights)


@pytest.mark.part("fcos_losses")
@pytest.mark.points(3)
def test_fcos_losses_focal_parameters(student):
    """focal_alpha and focal_gamma reach the classification loss (alpha=-1, gamma=0: plain BCE summed / #positives)"""
    p = problem(4, batch=2, objects=(2, 1))
    for alpha, gamma in [(-1.0, 0.0), (0.5, 1.0)]:
        check(student, p, f"fcos_losses(..., focal_alpha={alpha}, focal_gamma={gamma})", alpha=alpha, gamma=gamma, grads=False)


@pytest.mark.part("fcos_losses")
@pytest.mark.points(3)
def test_fcos_losses_without_objects(student):
    """a batch without positives: loss_box = loss_ctr = 0 (finite), loss_cls = the focal sum over all locations / 1; one image without objects in a batch"""
    got = check(student, problem(5, batch=2, objects=(0, 0)), "fcos_losses on a batch without objects", grads=False)
    for key in ("loss_box", "loss_ctr"):
        if float(got[key]) != 0.0:
            fail(f"fcos_losses on a batch without objects: {key} must be 0 (a sum over no positives), got {float(got[key])}")
    check(student, problem(6, batch=2, objects=(0, 3)), "fcos_losses with one image without objects")


def with_references_remote(student):
    helper = student.helper("call_with_references").get()
    if not isinstance(helper, RemoteObject):
        fail("the grader could not reach its helper 'call_with_references'")
    return helper


@pytest.mark.part("fcos_losses")
@pytest.mark.points(2)
def test_fcos_losses_dtype_and_inputs(student):
    """float32 in, float32 scalars out; the arguments are not modified"""
    p = problem(7, batch=2, objects=(2, 1), dtype=torch.float32)
    fn = student.fcos_losses.get()
    got, changed, _ = student.helper("call_with_snapshot")(with_references_remote(student), [fn, student_args(p), {}])
    if changed[1]:
        fail("fcos_losses changed its arguments in place; compute new tensors and leave the caller's data alone")
    if not isinstance(got, dict) or set(got) != set(KEYS):
        fail(f"fcos_losses must return the dict {{'loss_cls', 'loss_box', 'loss_ctr'}}, got {describe(got)}")
    for key in KEYS:
        if not isinstance(got[key], torch.Tensor) or got[key].dtype != torch.float32 or got[key].numel() != 1:
            fail(f"fcos_losses on float32 predictions: {key} must be a float32 scalar, got {describe(got[key])}")


@pytest.mark.part("fcos_losses")
@pytest.mark.points(2)
def test_fcos_losses_are_vectorized(student):
    """no Python loop over locations or positives: the same tensor operations and lines of code for few and many locations"""
    few = problem(8, batch=2, sizes=((4, 4), (2, 2)), strides=(8, 16), objects=(1, 1))
    many = problem(8, batch=2, sizes=((16, 16), (8, 8)), strides=(8, 16), objects=(4, 4))
    helper, fn = with_references_remote(student), student.fcos_losses.get()
    (ops_few, lines_few), (ops_many, lines_many) = [
        (sum(r.ops.values()), r.lines) for r in (helper.call_method("__call__", fn, student_args(q), {}, count_ops=True, count_lines=True) for q in (few, many))]
    hint = "select the positives with a mask or torch.where and compute each loss at once"
    if ops_many > ops_few:
        fail(f"fcos_losses ran {ops_few} tensor operations for 20 locations but {ops_many} for 320: {hint}")
    if lines_many > lines_few:
        fail(f"fcos_losses executed {lines_few} lines of your code for 20 locations but {lines_many} for 320 (a Python loop over the elements): {hint}")
