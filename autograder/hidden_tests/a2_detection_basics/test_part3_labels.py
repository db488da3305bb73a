"""Part 3: label_proposals (8 points)."""
import pytest
import torch
import torchvision.ops as tv

from a2_helpers import random_boxes
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


def check(student, proposals, gt, labels, pos=0.5, neg=0.3, what=""):
    got = student.label_proposals(proposals, gt, labels, pos, neg)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"label_proposals must return (labels, matched_idxs), got {describe(got)}")
    exp_labels, exp_matched = expected(proposals, gt, labels, pos, neg)
    assert_tensor(got[0], exp_labels, f"labels {what}")
    assert_tensor(got[1], exp_matched, f"matched indices {what}")


@pytest.mark.points(4)
def test_positive_negative_neutral(student):
    """IoU >= pos_iou: the gt class; below neg_iou: 0; in between: -1 (several thresholds)"""
    g = torch.Generator().manual_seed(0)
    gt = random_boxes(6, g, scale=120)
    labels = torch.randint(1, 4, (6,), generator=g)
    proposals = torch.cat([gt + torch.randn(6, 4, generator=g) * s for s in (1, 5, 12)] + [random_boxes(40, g, scale=150)])
    check(student, proposals, gt, labels, what="(default thresholds)")
    check(student, proposals, gt, labels, 0.7, 0.3, "(pos 0.7, neg 0.3)")
    check(student, proposals, gt, labels, 0.5, 0.5, "(pos = neg = 0.5: no neutral)")


@pytest.mark.points(2)
def test_iou_exactly_at_the_thresholds_and_ties(student):
    """IoU equal to pos_iou is positive, equal to neg_iou is neutral; ties go to the first gt box"""
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]])
    labels = torch.tensor([2, 3, 1])
    proposals = torch.tensor([[0.0, 0, 10, 5], [0, 0, 10, 3], [0, 0, 10, 10], [20, 0, 30, 4], [50, 50, 60, 60]])  # IoU 0.5, 0.3, 1 (tie), 0.4, 0
    check(student, proposals, gt, labels, 0.5, 0.3, "at the thresholds and with tied IoU")


@pytest.mark.points(2)
def test_no_ground_truth_and_no_proposals(student):
    """no ground truth: all negative, matched -1; no proposals: empty outputs"""
    g = torch.Generator().manual_seed(1)
    check(student, random_boxes(7, g), torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), what="without ground truth")
    check(student, torch.zeros(0, 4), random_boxes(3, g), torch.tensor([1, 2, 3]), what="without proposals")
