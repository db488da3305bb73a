"""Part 5: BoxHead, select_training_samples, fastrcnn_loss, postprocess_detections == torchvision's
TwoMLPHead + FastRCNNPredictor and RoIHeads on the same inputs. select_training_samples runs with
the earlier parts' match_anchors / sample_labels bound to references (helpers.with_references)."""
import math

import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss as tv_fastrcnn_loss

from .helpers import GRADED, check_forbidden, check_scalar_losses, with_references
from autograder.testing import assert_inputs_unchanged, assert_remote_module, assert_tensor, describe, fail

F64 = dict(rtol=1e-9, atol=1e-10)


def roi_heads(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, batch_size_per_image=512, positive_fraction=0.25, fg=0.5, bg=0.5):
    return RoIHeads(None, None, None, fg, bg, batch_size_per_image, positive_fraction, (10.0, 10.0, 5.0, 5.0), score_thresh, nms_thresh, detections_per_img)


def random_boxes(n, size, g, dtype=torch.float64):
    """Tensor[n, 4] boxes in a (h, w) image, some partly outside it, a few tiny."""
    h, w = size
    xy = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 1.1 - 3
    wh = torch.rand(n, 2, generator=g, dtype=dtype) * torch.tensor([w, h], dtype=dtype) * 0.6 + 0.5
    wh[: n // 8] *= 0.01
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.part("roi_heads")
@pytest.mark.points(3)
def test_box_head_equals_torchvision(student):
    """BoxHead == TwoMLPHead + FastRCNNPredictor with the same weights: class logits [K, num_classes], class-specific deltas [K, 4 * num_classes]"""
    g = torch.Generator().manual_seed(0)
    for channels, resolution, hidden, classes, k in [(4, 7, 32, 4, 9), (3, 5, 16, 2, 1), (2, 3, 8, 6, 0)]:
        got = student.BoxHead(channels, resolution, hidden, classes)
        assert_remote_module(student, got, f"BoxHead({channels}, {resolution}, {hidden}, {classes})")
        torch.manual_seed(k)
        mlp, predictor = TwoMLPHead(channels * resolution**2, hidden).double(), FastRCNNPredictor(hidden, classes).double()
        want_keys = {f"{layer}.{leaf}" for layer in ("fc6", "fc7", "cls_score", "bbox_pred") for leaf in ("weight", "bias")}
        names = got.state_dict()
        if set(names) != want_keys:
            fail(f"BoxHead: parameters {sorted(names)} differ from the expected {sorted(want_keys)}")
        for layer, fan_in in (("fc6", channels * resolution**2), ("fc7", hidden), ("cls_score", hidden), ("bbox_pred", hidden)):
            weight = names[f"{layer}.weight"].double()  # nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in)
            bound = 1 / math.sqrt(fan_in)
            if float(weight.abs().max()) > bound * (1 + 1e-6) or (weight.numel() >= 64 and float(weight.std()) < 0.8 * bound / math.sqrt(3)):
                fail(f"BoxHead({channels}, {resolution}, {hidden}, {classes}).{layer}: keep PyTorch's default initialization of nn.Linear "
                     f"(uniform in +-1/sqrt(fan_in) = +-{bound:.3g}); its weights have std {float(weight.std()):.3g}, largest {float(weight.abs().max()):.3g}")
        got.double()
        state = {**mlp.state_dict(), **predictor.state_dict()}
        for key in want_keys:
            if tuple(names[key].shape) != tuple(state[key].shape):
                fail(f"BoxHead: parameter {key} has shape {list(names[key].shape)}, expected {list(state[key].shape)}")
        got.load_state_dict({key: state[key] for key in want_keys})
        x = torch.randn(k, channels, resolution, resolution, generator=g, dtype=torch.float64)
        out = check_forbidden(got, "__call__", x, what="BoxHead")
        want = predictor(mlp(x))
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(f"BoxHead.forward must return (class_logits, box_regression), got {describe(out)}")
        assert_tensor(out[0], want[0], f"BoxHead({channels}, {resolution}, {hidden}, {classes}) class logits for {k} RoIs", **F64)
        assert_tensor(out[1], want[1], f"BoxHead({channels}, {resolution}, {hidden}, {classes}) box regression for {k} RoIs", **F64)


@pytest.mark.part("roi_heads")
@pytest.mark.points(5)
def test_fastrcnn_loss_equals_torchvision(student):
    """cross-entropy over all rows; smooth-L1 (beta 1/9) on the deltas of each positive row's own class, summed, / all rows; all-background batches"""
    g = torch.Generator().manual_seed(1)
    for k, classes, background_only in [(20, 4, False), (7, 2, False), (33, 6, False), (5, 3, True), (1, 4, False)]:
        logits = torch.randn(k, classes, generator=g, dtype=torch.float64) * 2
        regression = torch.randn(k, 4 * classes, generator=g, dtype=torch.float64)
        labels = torch.zeros(k, dtype=torch.int64) if background_only else torch.randint(0, classes, (k,), generator=g)
        if not background_only:
            labels[0] = classes - 1
        targets = torch.randn(k, 4, generator=g, dtype=torch.float64)
        want = tv_fastrcnn_loss(logits, regression, [labels], [targets])
        got = check_forbidden(student, "fastrcnn_loss", logits, regression, labels, targets, what="fastrcnn_loss")
        check_scalar_losses(got, want, ("loss_classifier", "loss_box_reg"), "fastrcnn_loss", f"{k} rows, {classes} classes, {int((labels > 0).sum())} positive")


def sorted_rows(boxes, labels, targets):
    """The rows in a canonical order (by box, then label), to compare samples returned in any order."""
    keys = torch.cat([boxes, labels[:, None].to(boxes.dtype)], dim=1)
    order = torch.arange(len(keys))
    for column in reversed(range(keys.shape[1])):
        order = order[torch.argsort(keys[order, column], stable=True)]
    return boxes[order], labels[order], targets[order]


def sample_targets():
    g = torch.Generator().manual_seed(5)
    sizes = [(60, 80), (45, 45), (70, 50)]
    proposals = [random_boxes(n, s, g) for n, s in zip((25, 12, 30), sizes)]
    gt = [{"boxes": torch.tensor([[5.0, 5, 30, 25], [20, 10, 50, 40], [22, 12, 48, 41]], dtype=torch.float64), "labels": torch.tensor([1, 3, 2])},
          {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.int64)},
          {"boxes": torch.tensor([[0.0, 0, 50, 70]], dtype=torch.float64), "labels": torch.tensor([2])}]
    # proposals near the objects, so that there are positives and negatives at several IoUs
    proposals[0] = torch.cat([proposals[0], gt[0]["boxes"] + torch.randn(3, 4, generator=g, dtype=torch.float64) * 3])
    proposals[2] = torch.cat([proposals[2], gt[2]["boxes"] + torch.tensor([[2.0, 3, -4, 1], [10, 10, -5, -20]], dtype=torch.float64)])
    return proposals, gt


@pytest.mark.part("roi_heads")
@pytest.mark.points(5)
def test_select_training_samples(student):
    """ground truth added to the proposals, matched at 0.5 (no low-quality matches), labels = classes / 0 / ignored, targets with weights (10, 10, 5, 5) == torchvision (every labelled proposal sampled); the positive quota; the generator reaches sample_labels; the arguments unchanged"""
    proposals, targets = sample_targets()
    for fg, bg in ((0.5, 0.5), (0.6, 0.3)):
        ref = roi_heads(batch_size_per_image=10**6, positive_fraction=1.0, fg=fg, bg=bg)
        want_boxes, _, want_labels, want_targets = ref.select_training_samples([p.clone() for p in proposals], targets)
        out = with_references(student, student, "select_training_samples", [proposals, targets],
                              dict(fg_iou_thresh=fg, bg_iou_thresh=bg, batch_size_per_image=10**6, positive_fraction=1.0), {}, "select_training_samples")
        if not isinstance(out, (tuple, list)) or len(out) != 3 or not all(isinstance(o, (list, tuple)) and len(o) == len(proposals) for o in out):
            fail(f"select_training_samples must return three lists (boxes, labels, regression targets) with one entry per image, got {describe(out)}")
        for i in range(len(proposals)):
            boxes, labels, regression = out[0][i], out[1][i], out[2][i]
            if not all(isinstance(t, torch.Tensor) for t in (boxes, labels, regression)) or labels.dtype != torch.int64:
                fail(f"select_training_samples, image {i}: expected Tensor[S, 4], Tensor[S] int64, Tensor[S, 4]; got {describe(boxes)}, {describe(labels)}, {describe(regression)}")
            if len(boxes) != len(want_boxes[i]) or len(labels) != len(boxes) or len(regression) != len(boxes):
                fail(f"select_training_samples (fg {fg}, bg {bg}), image {i}: {len(boxes)} samples, expected {len(want_boxes[i])} "
                     "(the proposals and the ground-truth boxes, without the ignored ones, all sampled here)")
            g_boxes, g_labels, g_reg = sorted_rows(boxes.double(), labels, regression.double())
            w_boxes, w_labels, w_reg = sorted_rows(want_boxes[i], want_labels[i], want_targets[i])
            assert_tensor(g_boxes, w_boxes, f"select_training_samples (fg {fg}, bg {bg}) sampled boxes of image {i}", rtol=1e-9, atol=1e-9, check_dtype=False)
            assert_tensor(g_labels, w_labels, f"select_training_samples (fg {fg}, bg {bg}) labels of image {i}")
            positive = w_labels > 0
            assert_tensor(g_reg[positive], w_reg[positive], f"select_training_samples (fg {fg}, bg {bg}) regression targets of the positives of image {i}", rtol=1e-7, atol=1e-7, check_dtype=False)
    fn = student.select_training_samples.get()
    result, changed = GRADED.with_references(student, "call_with_references_snapshot", fn, [proposals, targets], {}, {}, what="select_training_samples")
    if any(changed):
        fail("select_training_samples changed its arguments (the proposals list or its tensors, the targets): build new lists, "
             "and leave the caller's data alone")
    draws = [with_references(student, student, "select_training_samples", [proposals, targets],
                             dict(batch_size_per_image=8, positive_fraction=0.25, generator=seed), {}, "select_training_samples")
             for seed in (11, 11, 12, 13, 14)]
    keys = [tuple(tuple(b.flatten().tolist()) for b in d[0]) if isinstance(d, (tuple, list)) and d and isinstance(d[0], (list, tuple)) else None for d in draws]
    if keys[0] != keys[1] or len(set(keys)) < 2:
        fail("select_training_samples(..., generator=seed) must pass the generator to sample_labels: the same seed gives the same "
             "samples, other seeds other ones")
    out = with_references(student, student, "select_training_samples", [proposals, targets],
                          dict(batch_size_per_image=8, positive_fraction=0.25), {}, "select_training_samples")
    for i, labels in enumerate(out[1]):
        n_pos, n = int((labels > 0).sum()), len(labels)
        if n_pos > 2 or n != 8 or bool((labels < 0).any()):
            fail(f"select_training_samples with batch_size_per_image=8, positive_fraction=0.25, image {i}: {n_pos} positives of {n} samples "
                 "(at most int(8 * 0.25) = 2 positives, negatives fill the 8, ignored proposals never sampled)")


POSTPROCESS_CASES = [
    dict(sizes=[(60, 80), (45, 45)], counts=(25, 12), classes=4, options={}),
    dict(sizes=[(64, 48)], counts=(40,), classes=3, options=dict(score_thresh=0.2, nms_thresh=0.3, detections_per_img=10)),
    dict(sizes=[(30, 50), (50, 30), (40, 40)], counts=(0, 15, 7), classes=2, options=dict(score_thresh=0.0, nms_thresh=0.7, detections_per_img=5)),
    dict(sizes=[(100, 60)], counts=(30,), classes=6, options=dict(score_thresh=0.5, nms_thresh=0.5, detections_per_img=100)),
    # small proposals, huge size deltas: torchvision's BoxCoder clamps dw, dh at log(1000 / 16) before exp
    dict(sizes=[(120, 140)], counts=(20,), classes=3, options=dict(score_thresh=0.0), scale=40.0, small=True),
    # two classes with equal logits in every third row: the score is exactly 0.5 = score_thresh there (dropped: strictly above)
    dict(sizes=[(50, 70)], counts=(24,), classes=2, options=dict(score_thresh=0.5), tie=True),
]


@pytest.mark.part("roi_heads")
@pytest.mark.points(7)
def test_postprocess_detections_equal_torchvision(student):
    """class-specific decoding (10, 10, 5, 5; dw, dh clamped), softmax, clipping, background dropped, scores > score_thresh (a score equal to it dropped), small boxes removed, NMS per class, top detections_per_img == RoIHeads.postprocess_detections; images without proposals; inputs unchanged"""
    g = torch.Generator().manual_seed(9)
    for k, case in enumerate(POSTPROCESS_CASES):
        proposals = [random_boxes(n, s, g) for n, s in zip(case["counts"], case["sizes"])]
        if case.get("small"):  # 1-3 pixel proposals
            proposals = [torch.cat([p[:, :2], p[:, :2] + 1 + 2 * torch.rand(len(p), 2, generator=g, dtype=p.dtype)], 1) for p in proposals]
        total, classes = sum(case["counts"]), case["classes"]
        logits = torch.randn(total, classes, generator=g, dtype=torch.float64) * 2.5
        regression = torch.randn(total, 4 * classes, generator=g, dtype=torch.float64) * case.get("scale", 0.5)
        if case.get("tie"):
            logits[::3, 1] = logits[::3, 0]
        if k == 0:  # the caller's logits, regression and proposals stay as they were
            assert_inputs_unchanged(student, "postprocess_detections", [logits, regression, proposals, case["sizes"]],
                                    "postprocess_detections", allow_alias=True)
        ref = roi_heads(**case["options"])
        boxes, scores, labels = ref.postprocess_detections(logits, regression, proposals, case["sizes"])
        out = check_forbidden(student, "postprocess_detections", logits, regression, proposals, case["sizes"], what="postprocess_detections", **case["options"])
        if not isinstance(out, (list, tuple)) or len(out) != len(proposals):
            fail(f"postprocess_detections must return one dict per image ({len(proposals)}), got {describe(out)}")
        for i, d in enumerate(out):
            if not isinstance(d, dict) or not {"boxes", "scores", "labels"} <= set(d):
                fail(f"postprocess_detections, image {i}: expected a dict with boxes, scores, labels, got {describe(d)}")
            what = f"postprocess_detections case {k} ({case['options'] or 'defaults'}), image {i}"
            assert_tensor(d["scores"], scores[i], f"{what}: scores (sorted, decreasing)", rtol=1e-9, atol=1e-12)
            assert_tensor(d["labels"], labels[i], f"{what}: labels (int64)")
            assert_tensor(d["boxes"], boxes[i], f"{what}: boxes", rtol=1e-7, atol=1e-7)
