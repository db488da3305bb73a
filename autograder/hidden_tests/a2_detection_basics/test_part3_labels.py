"""Part 3: label_proposals."""
import pytest
import torch
import torchvision.ops as tv

from .helpers import call, call_unchanged, near_threshold, random_boxes
from autograder.testing import assert_tensor, describe, fail


def expected(proposals, gt, labels, pos, neg):
    if len(gt) == 0:
        return torch.zeros(len(proposals), dtype=torch.int64), torch.full((len(proposals),), -1, dtype=torch.int64)
    iou = tv.box_iou(proposals, gt)
    best = iou.max(1).values
    matched = iou.argmax(1)  # first maximum
    lab = labels[matched].clone()
    lab[best < pos] = -1
    lab[best < neg] = 0
    return lab, matched


def without_near_ties(proposals, gt, thresholds):
    """Random proposals whose label could hinge on float rounding are left out: best IoU within 1e-6
    of a threshold, or two ground-truth boxes within 1e-6 of the best IoU."""
    iou = tv.box_iou(proposals.double(), gt.double())
    top = iou.topk(min(2, iou.shape[1]), dim=1).values
    ambiguous = near_threshold(top[:, 0:1], thresholds).any(1)
    if top.shape[1] == 2:
        ambiguous |= (top[:, 0] - top[:, 1]).abs() < 1e-6
    return proposals[~ambiguous]


def check(student, proposals, gt, labels, pos=0.5, neg=0.3, what=""):
    got = call(student, "label_proposals", proposals, gt, labels, pos, neg)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"label_proposals must return (labels, matched_idxs), got {describe(got)}")
    exp_labels, exp_matched = expected(proposals, gt, labels, pos, neg)
    assert_tensor(got[0], exp_labels, f"label_proposals: labels {what}")
    assert_tensor(got[1], exp_matched, f"label_proposals: matched indices {what}")


@pytest.mark.part("labels")
@pytest.mark.points(4)
def test_positive_negative_neutral(student):
    """IoU >= pos_iou: the gt class; below neg_iou: 0; in between: -1 (several thresholds); int64 outputs; inputs unchanged"""
    g = torch.Generator().manual_seed(0)
    gt = random_boxes(6, g, scale=120)
    labels = torch.randint(1, 4, (6,), generator=g)
    proposals = torch.cat([gt + torch.randn(6, 4, generator=g) * s for s in (1, 5, 12)] + [random_boxes(40, g, scale=150)])
    proposals = without_near_ties(proposals, gt, (0.3, 0.5, 0.7))
    check(student, proposals, gt, labels, what="(default thresholds)")
    check(student, proposals, gt, labels, 0.7, 0.3, "(pos 0.7, neg 0.3)")
    check(student, proposals, gt, labels, 0.5, 0.5, "(pos = neg = 0.5: no neutral)")
    call_unchanged(student, "label_proposals", proposals[:5], gt, labels)


@pytest.mark.part("labels")
@pytest.mark.points(2)
def test_iou_exactly_at_the_thresholds_and_ties(student):
    """IoU equal to pos_iou is positive, equal to neg_iou is neutral; ties go to the first gt box"""
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]])
    labels = torch.tensor([2, 3, 1])
    proposals = torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 2.5], [0, 0, 10, 10], [20, 0, 30, 4], [50, 50, 60, 60], [20, 0, 30, 7.5]])  # IoU 0.5, 0.25, 1 (tie), 0.4, 0, 0.75
    check(student, proposals, gt, labels, 0.5, 0.25, "at the thresholds 0.5 and 0.25 and with tied IoU")
    check(student, proposals, gt, labels, 0.75, 0.5, "at the thresholds 0.75 and 0.5")


@pytest.mark.part("labels")
@pytest.mark.points(2)
def test_no_ground_truth_and_no_proposals(student):
    """no ground truth: all negative, matched -1; no proposals: empty outputs"""
    g = torch.Generator().manual_seed(1)
    check(student, random_boxes(7, g), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), what="without ground truth")
    check(student, torch.zeros(0, 4), random_boxes(3, g), torch.tensor([1, 2, 3]), what="without proposals")
