"""Part 4: RPNHead, rpn_losses, RegionProposalNetwork == torchvision's RPN (same weights, same anchors).

The RPN is called with the earlier parts' functions bound to references (helpers.with_references), so
only this part's code is graded here. Training-mode losses are compared with a sampler that takes
every labelled anchor (batch_size_per_image larger than the anchors, positive_fraction 1), which makes
torchvision's random sampling deterministic."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork as TvRPN
from torchvision.models.detection.rpn import RPNHead as TvRPNHead

from .helpers import anchor_table, check_forbidden, check_scalar_losses, expected_anchors, with_references
from autograder.testing import assert_number, assert_remote_module, assert_tensor, describe, fail

F64 = dict(rtol=1e-9, atol=1e-10)
TV_HEAD_KEYS = {"conv.weight": "conv.0.0.weight", "conv.bias": "conv.0.0.bias", "cls_logits.weight": "cls_logits.weight",
                "cls_logits.bias": "cls_logits.bias", "bbox_pred.weight": "bbox_pred.weight", "bbox_pred.bias": "bbox_pred.bias"}


def head_pair(student, module_path, in_channels, num_anchors, seed, dtype=torch.float64):
    """torchvision's RPNHead with random weights, and the same weights loaded into the student's head."""
    torch.manual_seed(seed)
    ref = TvRPNHead(in_channels, num_anchors).to(dtype)
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    got = module_path
    got.to(dtype)
    names = got.state_dict()
    if set(names) != set(TV_HEAD_KEYS):
        fail(f"RPNHead: parameters {sorted(names)} differ from the expected {sorted(TV_HEAD_KEYS)} (conv, cls_logits, bbox_pred)")
    ref_state = ref.state_dict()
    state = {k: ref_state[v].clone() for k, v in TV_HEAD_KEYS.items()}
    for k, v in state.items():
        if tuple(names[k].shape) != tuple(v.shape):
            fail(f"RPNHead: parameter {k} has shape {list(names[k].shape)}, expected {list(v.shape)}")
    got.load_state_dict(state)
    return ref


@pytest.mark.part("rpn")
@pytest.mark.points(3)
def test_rpn_head_equals_torchvision(student):
    """RPNHead outputs equal torchvision's RPNHead with the same weights, per level; weights start from N(0, 0.01^2), biases 0"""
    fresh = student.RPNHead(16, 3)
    assert_remote_module(student, fresh, "RPNHead(16, 3)")
    state = fresh.state_dict()
    for name in ("conv", "cls_logits", "bbox_pred"):
        w, b = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
            fail(f"RPNHead needs layers conv, cls_logits, bbox_pred with weights and biases; got {sorted(state)}")
        if not 0.006 < float(w.std()) < 0.014 or float(b.abs().max()) != 0.0:
            fail(f"RPNHead.{name}: initialize the weights from N(0, 0.01^2) and the biases to 0 (weight std {float(w.std()):.4f})")
    g = torch.Generator().manual_seed(3)
    for seed, (channels, anchors, sizes) in enumerate([(8, 3, [(12, 16), (6, 8), (3, 4)]), (5, 6, [(7, 5)])]):
        got = student.RPNHead(channels, anchors)
        assert_remote_module(student, got, f"RPNHead({channels}, {anchors})")
        ref = head_pair(student, got, channels, anchors, seed)
        maps = [torch.randn(2, channels, h, w, generator=g, dtype=torch.float64) for h, w in sizes]
        out = check_forbidden(got, "__call__", maps, what="RPNHead")
        want_obj, want_deltas = ref(maps)
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(isinstance(o, (list, tuple)) and len(o) == len(maps) for o in out):
            fail(f"RPNHead.forward must return (list of objectness maps, list of delta maps), one per level; got {describe(out)}")
        for level in range(len(maps)):
            assert_tensor(out[0][level], want_obj[level], f"RPNHead({channels}, {anchors}) objectness, level {level}", **F64)
            assert_tensor(out[1][level], want_deltas[level], f"RPNHead({channels}, {anchors}) deltas, level {level}", **F64)


def expected_rpn_losses(objectness, deltas, labels, targets, positive, negative):
    sampled = positive | negative
    n = int(sampled.sum())
    if n == 0:
        return torch.zeros((), dtype=objectness.dtype), torch.zeros((), dtype=objectness.dtype)
    obj = F.binary_cross_entropy_with_logits(objectness[sampled], labels[sampled].to(objectness.dtype))
    box = F.smooth_l1_loss(deltas[positive], targets[positive], beta=1 / 9, reduction="sum") / n
    return obj, box


@pytest.mark.part("rpn")
@pytest.mark.points(3)
def test_rpn_losses_formulas(student):
    """BCE over the sampled anchors (mean) and smooth-L1 (beta 1/9, summed over the positives) / number sampled; 0 when nothing is sampled, still differentiable"""
    g = torch.Generator().manual_seed(11)
    for n, p_pos, p_neg in [(200, 0.1, 0.4), (50, 0.0, 0.5), (80, 0.3, 0.0), (30, 0.5, 0.5), (10, 0.0, 0.0)]:
        objectness = torch.randn(n, generator=g, dtype=torch.float64) * 3
        deltas, targets = torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.2, torch.randn(n, 4, generator=g, dtype=torch.float64) * 0.2
        u = torch.rand(n, generator=g)
        positive, negative = u < p_pos, (u >= p_pos) & (u < p_pos + p_neg)
        labels = torch.where(positive, 1.0, torch.where(negative, 0.0, -1.0)).double()
        want = expected_rpn_losses(objectness, deltas, labels, targets, positive, negative)
        got = check_forbidden(student, "rpn_losses", objectness, deltas, labels, targets, positive, negative, what="rpn_losses")
        check_scalar_losses(got, want, ("loss_objectness", "loss_box"), "rpn_losses", f"{int(positive.sum())} positives, {int(negative.sum())} negatives of {n}")
    nothing = torch.zeros(12, dtype=torch.bool)
    error = student.helper("losses_still_connected")(student.rpn_losses.get(), [torch.randn(12, dtype=torch.float64), torch.randn(12, 4, dtype=torch.float64),
                                                                           torch.full((12,), -1.0, dtype=torch.float64), torch.zeros(12, 4, dtype=torch.float64), nothing, nothing])
    if error is not None:
        fail(f"rpn_losses with nothing sampled: backward() of the two zero losses fails ({error}); return zeros connected to the "
             "inputs' graph (objectness.sum() * 0), not new constant tensors")


# One RPN configuration per case: levels (feature sizes), strides, sizes, ratios, image sizes, options.
CASES = [
    dict(feature_sizes=[(12, 16), (6, 8)], strides=(4, 8), sizes=((16, 24), (32, 48)), ratios=((0.5, 1.0, 2.0),) * 2,
         image_sizes=[(45, 60), (48, 64)], options=dict(pre_nms_top_n=50, post_nms_top_n=30, nms_thresh=0.7)),
    dict(feature_sizes=[(10, 7)], strides=(8,), sizes=((20, 40),), ratios=((1.0,),),
         image_sizes=[(80, 56)], options=dict(pre_nms_top_n=1000, post_nms_top_n=1000, nms_thresh=0.5, min_size=6.0)),
    dict(feature_sizes=[(16, 12), (8, 6), (4, 3)], strides=(4, 8, 16), sizes=((12,), (24,), (48,)), ratios=((0.5, 2.0),) * 3,
         image_sizes=[(64, 48), (50, 40), (61, 33)], options=dict(pre_nms_top_n=40, post_nms_top_n=25, nms_thresh=0.6, score_thresh=0.45)),
]


class FixedAnchors(torch.nn.Module):
    """torchvision's RPN with the course's anchors (centres at (i + 0.5) * stride, no rounding)."""

    def __init__(self, anchors, per_location):
        super().__init__()
        self.anchors, self.per_location = anchors, per_location

    def forward(self, image_list, feature_maps):
        return [self.anchors.to(feature_maps[0].dtype) for _ in image_list.image_sizes]

    def num_anchors_per_location(self):
        return self.per_location


def rpn_pair(student, case, seed, train_options=None):
    """The student's RegionProposalNetwork and torchvision's with the same head weights and anchors."""
    options = dict(case["options"], **(train_options or {}))
    num_anchors = len(case["sizes"][0]) * len(case["ratios"][0])
    got = student.RegionProposalNetwork(5, case["strides"], case["sizes"], case["ratios"], **options)
    assert_remote_module(student, got, "RegionProposalNetwork(...)")
    got.double()
    ref_head = head_pair(student, got.head, 5, num_anchors, seed)
    anchors = expected_anchors(case["feature_sizes"], case["strides"], case["sizes"], case["ratios"], dtype=torch.float64)
    top = options.get("pre_nms_top_n", 1000), options.get("post_nms_top_n", 1000)
    ref = TvRPN(FixedAnchors(anchors, [num_anchors] * len(case["feature_sizes"])), ref_head,
                options.get("fg_iou_thresh", 0.7), options.get("bg_iou_thresh", 0.3),
                options.get("batch_size_per_image", 256), options.get("positive_fraction", 0.5),
                dict(training=top[0], testing=top[0]), dict(training=top[1], testing=top[1]), options.get("nms_thresh", 0.7),
                score_thresh=options.get("score_thresh", 0.0))
    ref.min_size = options.get("min_size", 1e-3)
    table = anchor_table([case["feature_sizes"]], case["strides"], case["sizes"], case["ratios"])
    return got, ref, table


def inputs_for(case, seed):
    g = torch.Generator().manual_seed(100 + seed)
    batch = len(case["image_sizes"])
    features = [torch.randn(batch, 5, h, w, generator=g, dtype=torch.float64) for h, w in case["feature_sizes"]]
    padded = [max(s[i] for s in case["image_sizes"]) for i in (0, 1)]
    images = ImageList(torch.zeros(batch, 3, *padded, dtype=torch.float64), list(case["image_sizes"]))
    return features, images


def check_proposals(got, want, what):
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
        fail(f"{what}: expected a list of {len(want)} proposal tensors (one per image), got {describe(got)}")
    for i, (g, w) in enumerate(zip(got, want)):
        assert_tensor(g, w, f"{what}, proposals of image {i} (sorted by decreasing objectness)", rtol=1e-7, atol=1e-7)


@pytest.mark.part("rpn")
@pytest.mark.points(4)
def test_rpn_proposals_equal_torchvision(student):
    """eval mode: top-k per level, clipping to each image, min_size, score_thresh, NMS per level, post-NMS top-k == torchvision's RPN; losses {}"""
    for k, case in enumerate(CASES):
        got, ref, table = rpn_pair(student, case, seed=k)
        got.eval(), ref.eval()
        features, images = inputs_for(case, k)
        want, _ = ref(images, OrderedDict((str(i), f) for i, f in enumerate(features)))
        out = with_references(student, got, "__call__", [features, list(case["image_sizes"])], {}, table, "RegionProposalNetwork")
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            fail(f"RegionProposalNetwork.forward must return (proposals, losses), got {describe(out)}")
        if out[1] != {}:
            fail(f"in eval mode the RPN returns no losses ({{}}), got {describe(out[1])}")
        check_proposals(out[0], want, f"RPN case {k} ({len(case['feature_sizes'])} levels, {case['options']})")


TRAIN_TARGETS = [
    [{"boxes": torch.tensor([[5.0, 5, 30, 25], [20, 10, 50, 40]], dtype=torch.float64), "labels": torch.tensor([1, 2])},
     {"boxes": torch.zeros(0, 4, dtype=torch.float64), "labels": torch.zeros(0, dtype=torch.int64)}],
    [{"boxes": torch.tensor([[0.0, 0, 56, 80], [10, 10, 30, 30], [12, 11, 29, 33]], dtype=torch.float64), "labels": torch.tensor([3, 1, 2])}],
    [{"boxes": torch.tensor([[3.0, 4, 20, 30]], dtype=torch.float64), "labels": torch.tensor([1])},
     {"boxes": torch.tensor([[10.0, 10, 40, 25], [0, 30, 12, 50]], dtype=torch.float64), "labels": torch.tensor([2, 3])},
     {"boxes": torch.tensor([[1.0, 1, 32, 60]], dtype=torch.float64), "labels": torch.tensor([2])}],
]


@pytest.mark.part("rpn")
@pytest.mark.points(3)
def test_rpn_training_losses_equal_torchvision(student):
    """training mode: anchor labels from the matcher (0.7 / 0.3, low-quality matches), targets with weights (1, 1, 1, 1), the two losses == torchvision's RPN (every labelled anchor sampled); an image without objects; proposals detached"""
    for k, case in enumerate(CASES):
        every = dict(batch_size_per_image=10**6, positive_fraction=1.0)
        got, ref, table = rpn_pair(student, case, seed=10 + k, train_options=every)
        got.train(), ref.train()
        features, images = inputs_for(case, 10 + k)
        targets = TRAIN_TARGETS[k]
        want_props, want = ref(images, OrderedDict((str(i), f) for i, f in enumerate(features)), targets)
        out = with_references(student, got, "__call__", [features, list(case["image_sizes"]), targets], {}, table, "RegionProposalNetwork")
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not isinstance(out[1], dict):
            fail(f"RegionProposalNetwork.forward must return (proposals, dict of losses), got {describe(out)}")
        if set(out[1]) != {"loss_objectness", "loss_rpn_box_reg"}:
            fail(f"in training the RPN returns the losses 'loss_objectness' and 'loss_rpn_box_reg', got keys {sorted(out[1])}")
        for name in ("loss_objectness", "loss_rpn_box_reg"):
            value = out[1][name]
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                fail(f"RPN {name} must be a scalar tensor, got {describe(value)}")
            assert_number(float(value), float(want[name]), f"RPN {name}, case {k} ({len(targets)} images)", rtol=1e-5, atol=1e-8)  # torchvision makes its labels float32
        check_proposals(out[0], want_props, f"RPN case {k} in training mode")
        if k == 0:
            attached = student.helper("proposals_need_grad")(got, features, list(case["image_sizes"]), targets, table)
            if not isinstance(attached, list) or any(a is not False for a in attached):
                fail("RegionProposalNetwork in training mode: the proposals it returns carry gradients back into the RPN; "
                     "decode them from detached deltas (deltas.detach()), as torchvision does: the second stage must not "
                     "train the RPN through its proposals")


def filter_case(seed):
    """Boxes [2, 18, 4] (levels of 12 and 6 anchors) with integer coordinates, some partly outside the image, some exactly
    2 pixels wide or high after clipping (min_size 2), and distinct objectness logits, multiples of 1/4, one of them
    exactly 0 on each level (sigmoid 0.5, the score_thresh): the ties the notebook decides."""
    g = torch.Generator().manual_seed(seed)
    per_level, n = [12, 6], 18
    xy = torch.randint(-6, 40, (2, n, 2), generator=g).double()
    wh = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 9.0, 14.0, 20.0], dtype=torch.float64)[torch.randint(0, 8, (2, n, 2), generator=g)]
    boxes = torch.cat([xy, xy + wh], dim=2)
    boxes[:, 0] = torch.tensor([-5.0, 4.0, 2.0, 30.0], dtype=torch.float64)  # clipped to 0..2: exactly min_size wide
    logits = torch.stack([torch.cat([torch.randperm(12, generator=g).double() - 5, torch.randperm(6, generator=g).double() - 2]) / 4 for _ in range(2)])
    return boxes, logits, per_level


@pytest.mark.part("rpn")
@pytest.mark.points(2)
def test_filter_proposals_ties_equal_torchvision(student):
    """filter_proposals == torchvision RegionProposalNetwork.filter_proposals where it matters: a score equal to score_thresh is kept, a box exactly min_size wide or high is kept, top-k per level"""
    for seed, (pre, post, nms_thresh) in enumerate([(8, 10, 0.7), (20, 4, 0.5)]):
        boxes, logits, per_level = filter_case(seed)
        image_sizes = [(30, 40), (44, 36)]
        ref = TvRPN(None, None, 0.7, 0.3, 256, 0.5, dict(training=pre, testing=pre), dict(training=post, testing=post), nms_thresh, score_thresh=0.5)
        ref.min_size = 2.0
        ref.eval()
        want, _ = ref.filter_proposals(boxes.clone(), logits.clone(), image_sizes, per_level)
        got = check_forbidden(student, "filter_proposals", boxes, logits, image_sizes, per_level, pre, post, nms_thresh, 2.0, 0.5, what="filter_proposals")
        check_proposals(got, want, f"filter_proposals(pre_nms_top_n={pre}, post_nms_top_n={post}, nms_thresh={nms_thresh}, min_size=2.0, score_thresh=0.5) "
                                   "with scores equal to score_thresh and boxes exactly min_size wide (both kept)")
