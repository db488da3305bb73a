"""Part 5: precision_recall, average_precision, evaluate_detections vs pycocotools (30 points)."""
import numpy as np
import pytest
import torch

from a2_coco_reference import coco_reference
from a2_helpers import random_boxes
from autograder.testing import assert_tensor, describe, fail

TOL = 1e-6


# ----------------------------------------------------------------------------- precision / recall / AP
def pr_reference(scores, tp, num_gt):
    order = np.argsort(-scores.numpy(), kind="mergesort")
    tps = np.cumsum(tp.numpy()[order])
    precision = tps / np.arange(1, len(order) + 1)
    recall = tps / num_gt
    return torch.from_numpy(precision), torch.from_numpy(recall)


def ap_reference(precision, recall, method):
    p, r = precision.numpy().astype(np.float64), recall.numpy().astype(np.float64)
    if len(p) == 0:
        return 0.0
    if method == "voc11":
        return float(np.mean([p[r >= t].max() if (r >= t).any() else 0.0 for t in np.arange(0.0, 1.1, 0.1)]))
    if method == "area":
        mrec, mpre = np.concatenate(([0.0], r, [1.0])), np.concatenate(([0.0], p, [0.0]))
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))
    env = p.copy()
    for i in range(len(env) - 1, 0, -1):
        env[i - 1] = max(env[i - 1], env[i])
    idx = np.searchsorted(r, np.linspace(0.0, 1.0, 101), side="left")
    return float(np.mean([env[i] if i < len(env) else 0.0 for i in idx]))


def pr_cases():
    g = torch.Generator().manual_seed(0)
    for n, num_gt, ties in ((1, 1, False), (12, 5, False), (40, 30, True), (200, 60, True)):
        scores = torch.rand(n, generator=g, dtype=torch.float64)
        if ties:
            scores = (scores * 6).round() / 6
        yield scores, torch.rand(n, generator=g) < 0.5, num_gt


@pytest.mark.points(3)
def test_precision_recall(student):
    """precision and recall after each detection in decreasing score order (stable on ties)"""
    for scores, tp, num_gt in pr_cases():
        got = student.precision_recall(scores, tp, num_gt)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"precision_recall must return (precision, recall), got {describe(got)}")
        exp_p, exp_r = pr_reference(scores, tp, num_gt)
        assert_tensor(got[0].double() if isinstance(got[0], torch.Tensor) else got[0], exp_p, f"precision ({len(scores)} detections)", check_dtype=False, rtol=1e-9, atol=1e-12)
        assert_tensor(got[1].double() if isinstance(got[1], torch.Tensor) else got[1], exp_r, f"recall ({len(scores)} detections)", check_dtype=False, rtol=1e-9, atol=1e-12)


@pytest.mark.points(3)
def test_average_precision_coco101(student):
    """101-point interpolated AP with the precision envelope (COCO)"""
    _check_ap(student, "coco101")


@pytest.mark.points(2)
def test_average_precision_voc11(student):
    """11-point interpolated AP (VOC2007)"""
    _check_ap(student, "voc11")


@pytest.mark.points(2)
def test_average_precision_area(student):
    """area under the envelope (VOC2010+), including a curve that never reaches recall 1"""
    _check_ap(student, "area")


def _check_ap(student, method):
    for scores, tp, num_gt in pr_cases():
        p, r = pr_reference(scores, tp, num_gt)
        got = student.average_precision(p, r, method)
        expected = ap_reference(p, r, method)
        if not isinstance(got, (float, int)) and not (isinstance(got, torch.Tensor) and got.numel() == 1):
            fail(f"average_precision must return a number, got {describe(got)}")
        if abs(float(got) - expected) > 1e-9:
            fail(f"average_precision(..., {method!r}) = {float(got):.10f}, expected {expected:.10f} ({len(scores)} detections, {num_gt} ground-truth boxes)")


# ----------------------------------------------------------------------------- evaluate_detections
def make_data(seed, n_img, n_cls=3, max_gt=5, max_dt=20, ties=False, crowd=False, jitter=4.0):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_img):
        n_gt = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        n_dt = int(torch.randint(0, max_dt + 1, (1,), generator=g))
        gt = random_boxes(n_gt, g, scale=120, min_size=4)
        gl = torch.randint(1, n_cls + 1, (n_gt,), generator=g)
        dt = random_boxes(n_dt, g, scale=120, min_size=4)
        dl = torch.randint(1, n_cls + 1, (n_dt,), generator=g)
        if n_gt:
            src = torch.randint(0, n_gt, (n_dt,), generator=g)
            near = torch.rand(n_dt, generator=g) < 0.7
            dt[near] = gt[src[near]] + torch.randn(int(near.sum()), 4, generator=g) * jitter
            dl[near] = torch.where(torch.rand(int(near.sum()), generator=g) < 0.85, gl[src[near]], dl[near])
        scores = torch.rand(n_dt, generator=g)
        if ties:
            scores = (scores * 4).round() / 4
        target = {"boxes": gt, "labels": gl}
        if crowd:
            target["iscrowd"] = (torch.rand(n_gt, generator=g) < 0.2).long()
        preds.append({"boxes": dt, "scores": scores, "labels": dl})
        targets.append(target)
    return preds, targets


def check_eval(student, preds, targets, what, iou_thresholds=None, timeout=None):
    if iou_thresholds is None:
        got = student.call("evaluate_detections", preds, targets, timeout=timeout).value
    else:
        got = student.evaluate_detections(preds, targets, iou_thresholds)
    expected = coco_reference(preds, targets, iou_thresholds)
    if not isinstance(got, dict) or not {"AP", "AP50", "AP75", "per_class"} <= set(got):
        fail(f"evaluate_detections must return a dict with AP, AP50, AP75 and per_class, got {describe(got)}")
    for key in ("AP", "AP50", "AP75"):
        if key in expected and abs(float(got[key]) - expected[key]) > TOL:
            fail(f"{key} = {float(got[key]):.8f}, pycocotools gives {expected[key]:.8f} ({what})")
    per_class = {int(k): float(v) for k, v in got["per_class"].items()}
    for cls, value in expected["per_class"].items():
        if cls not in per_class:
            fail(f"per_class has no entry for class {cls}, which has ground truth ({what})")
        if abs(per_class[cls] - value) > TOL:
            fail(f"AP of class {cls} = {per_class[cls]:.8f}, pycocotools gives {value:.8f} ({what})")


@pytest.mark.points(6)
def test_evaluate_random_data(student):
    """AP, AP50, AP75 and per-class AP equal pycocotools' COCOeval on random data"""
    for seed, n_img in ((0, 1), (1, 5), (2, 20), (3, 40)):
        check_eval(student, *make_data(seed, n_img), f"{n_img} random images")
    check_eval(student, *make_data(4, 25, n_cls=7, jitter=2.0), "25 images, 7 classes")


@pytest.mark.points(2)
def test_evaluate_images_without_ground_truth_and_classes_without_detections(student):
    """detections on empty images are false positives; a class with ground truth but no detection has AP 0"""
    preds, targets = make_data(5, 12)
    for i in (0, 3, 7):
        targets[i] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for p in preds:
        keep = p["labels"] != 2
        p.update(boxes=p["boxes"][keep], scores=p["scores"][keep], labels=p["labels"][keep])
    check_eval(student, preds, targets, "empty images and a class without detections")
    empty_preds = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)} for _ in targets]
    check_eval(student, empty_preds, targets, "no detections at all")


@pytest.mark.points(2)
def test_evaluate_tied_and_duplicate_scores(student):
    """tied scores and duplicate detections are ordered as COCO orders them"""
    preds, targets = make_data(6, 15, ties=True)
    for p in preds[:5]:
        p.update(boxes=torch.cat([p["boxes"], p["boxes"]]), scores=torch.cat([p["scores"], p["scores"]]), labels=torch.cat([p["labels"], p["labels"]]))
    check_eval(student, preds, targets, "tied and duplicated detections")


@pytest.mark.points(2)
def test_evaluate_iou_exactly_at_the_threshold_and_zero_area(student):
    """IoU exactly 0.5 / 0.75 counts as a match; zero-area boxes"""
    gt = torch.tensor([[0.0, 0, 100, 40], [200, 0, 300, 40], [400, 0, 500, 40]])
    dt = torch.tensor([[0.0, 0, 50, 40], [200, 0, 275, 40], [400, 0, 400, 40], [0, 0, 0, 0]])  # IoU 0.5, 0.75, 0 (zero area)
    preds = [{"boxes": dt, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 1, 1, 1])}]
    targets = [{"boxes": gt, "labels": torch.tensor([1, 1, 1])}]
    check_eval(student, preds, targets, "IoU exactly at 0.5 and 0.75, zero-area detections")
    targets2 = [{"boxes": torch.cat([gt, torch.tensor([[10.0, 10, 10, 30]])]), "labels": torch.tensor([1, 1, 1, 1])}]
    check_eval(student, preds, targets2, "a zero-area ground-truth box")


@pytest.mark.points(2)
def test_evaluate_more_than_100_detections(student):
    """only the 100 best detections per image and class count (maxDets = 100)"""
    preds, targets = make_data(7, 4, n_cls=2, max_gt=8, max_dt=300)
    check_eval(student, preds, targets, "up to 300 detections per image")


@pytest.mark.points(2)
def test_evaluate_crowd_ground_truth(student):
    """iscrowd boxes are ignored and can absorb several detections"""
    check_eval(student, *make_data(8, 20, crowd=True), "crowd ground truth")


@pytest.mark.points(2)
def test_evaluate_custom_thresholds(student):
    """iou_thresholds other than COCO's (AP averages over them; AP50 and AP75 still reported)"""
    preds, targets = make_data(9, 10)
    check_eval(student, preds, targets, "thresholds [0.3, 0.5, 0.75, 0.9]", iou_thresholds=[0.3, 0.5, 0.75, 0.9])


@pytest.mark.points(2)
def test_evaluate_many_images(student):
    """300 images with up to 100 detections each, evaluated within the time limit"""
    preds, targets = make_data(10, 300, max_dt=100)
    check_eval(student, preds, targets, "300 images", timeout=60)
