"""Part 5: precision_recall, average_precision, evaluate_detections vs pycocotools."""
import numpy as np
import pytest
import torch

from autograder.hidden_tests.kit.coco_reference import coco_reference
from .helpers import assert_number_like, assert_plain_number, call, call_unchanged, random_boxes
from autograder.client import RemoteObject
from autograder.testing import assert_tensor, describe, fail

TOL = 1e-6


# ----------------------------------------------------------------------------- precision / recall / AP
def pr_reference(scores, tp, num_gt):
    order = np.argsort(-scores.numpy(), kind="mergesort")
    tps = np.cumsum(tp.numpy()[order]).astype(np.float64)
    precision = tps / np.arange(1, len(order) + 1)
    recall = tps / num_gt if num_gt > 0 else np.zeros_like(tps)
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
    """(scores, is_tp, num_gt) with num_gt >= the number of true positives (recall <= 1)."""
    g = torch.Generator().manual_seed(0)
    for n, missed, ties in ((1, 0, False), (12, 2, False), (40, 0, True), (200, 17, True), (150, 0, False)):
        scores = torch.rand(n, generator=g, dtype=torch.float64)
        if ties:
            scores = (scores * 6).round() / 6
        tp = torch.rand(n, generator=g) < 0.5
        if n == 150:  # 100 ground-truth boxes: recalls k / 100 fall on the grid np.linspace(0, 1, 101)
            tp = torch.zeros(n, dtype=torch.bool)
            tp[torch.randperm(n, generator=g)[:100]] = True
        yield scores, tp, int(tp.sum()) + missed
    yield torch.rand(9, generator=g, dtype=torch.float64), torch.zeros(9, dtype=torch.bool), 0  # no ground truth


@pytest.mark.part("ap")
@pytest.mark.points(3)
def test_precision_recall(student):
    """precision and recall (float64) after each detection in decreasing score order (stable on ties); num_gt = 0 gives recall 0; inputs unchanged"""
    for scores, tp, num_gt in pr_cases():
        got = call(student, "precision_recall", scores, tp, num_gt)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"precision_recall must return (precision, recall), got {describe(got)}")
        exp_p, exp_r = pr_reference(scores, tp, num_gt)
        assert_tensor(got[0], exp_p, f"precision_recall: precision ({len(scores)} detections, {num_gt} ground-truth boxes)", rtol=1e-9, atol=1e-12)
        assert_tensor(got[1], exp_r, f"precision_recall: recall ({len(scores)} detections, {num_gt} ground-truth boxes)", rtol=1e-9, atol=1e-12)
    call_unchanged(student, "precision_recall", scores, tp, num_gt)


@pytest.mark.part("ap")
@pytest.mark.points(3)
def test_average_precision_coco101(student):
    """101-point interpolated AP with the precision envelope (COCO, recall grid np.linspace(0, 1, 101)); a Python float; inputs unchanged"""
    _check_ap(student, "coco101")
    p, r = pr_reference(*next(pr_cases()))
    call_unchanged(student, "average_precision", p, r, "coco101")
    g = torch.Generator().manual_seed(1)
    scores, tp = torch.rand(30, generator=g, dtype=torch.float64), torch.rand(30, generator=g) < 0.5
    p, r = pr_reference(scores, tp, int(tp.sum()) + 3)
    call_unchanged(student, "average_precision", p, r, "coco101")


@pytest.mark.part("ap")
@pytest.mark.points(2)
def test_average_precision_voc11(student):
    """11-point interpolated AP (VOC2007); a Python float"""
    _check_ap(student, "voc11")


@pytest.mark.part("ap")
@pytest.mark.points(2)
def test_average_precision_area(student):
    """area under the envelope (VOC2010+), including curves that never reach recall 1; a Python float; inputs unchanged"""
    _check_ap(student, "area")
    g = torch.Generator().manual_seed(2)
    scores, tp = torch.rand(30, generator=g, dtype=torch.float64), torch.rand(30, generator=g) < 0.5
    p, r = pr_reference(scores, tp, int(tp.sum()) + 3)
    call_unchanged(student, "average_precision", p, r, "area")


def _check_ap(student, method):
    for scores, tp, num_gt in pr_cases():
        p, r = pr_reference(scores, tp, num_gt)
        got = call(student, "average_precision", p, r, method)
        assert_number_like(got, ap_reference(p, r, method), f"average_precision(..., {method!r}) ({len(scores)} detections, {num_gt} ground-truth boxes)",
                           rtol=0, atol=1e-9)
    empty = torch.zeros(0, dtype=torch.float64)
    assert_number_like(call(student, "average_precision", empty, empty, method), 0.0, f"average_precision(..., {method!r}) of no detections", rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- evaluate_detections
def make_data(seed, n_img, n_cls=3, max_gt=5, max_dt=20, ties=False, crowd=False, jitter=4.0, scale=120.0):
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_img):
        n_gt = int(torch.randint(0, max_gt + 1, (1,), generator=g))
        n_dt = int(torch.randint(0, max_dt + 1, (1,), generator=g))
        gt = random_boxes(n_gt, g, scale=scale, min_size=4)
        gl = torch.randint(1, n_cls + 1, (n_gt,), generator=g)
        dt = random_boxes(n_dt, g, scale=scale, min_size=4)
        dl = torch.randint(1, n_cls + 1, (n_dt,), generator=g)
        if n_gt:
            src = torch.randint(0, n_gt, (n_dt,), generator=g)
            near = torch.rand(n_dt, generator=g) < 0.7
            dt[near] = gt[src[near]] + torch.randn(int(near.sum()), 4, generator=g) * jitter * scale / 120
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


def make_crowded(seed, n_img, n_cls=2):
    """Clusters of overlapping ground-truth boxes and detections near them: a detection often has
    IoU >= t with several ground-truth boxes, and which one it takes matters."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_img):
        gts, dts = [], []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            base = random_boxes(1, g, scale=150, min_size=30)
            members = base + torch.randn(int(torch.randint(2, 5, (1,), generator=g)), 4, generator=g) * 6
            gts.append(members)
            dts.append(members[torch.randint(0, len(members), (2 * len(members),), generator=g)] + torch.randn(2 * len(members), 4, generator=g) * 4)
        gt, dt = torch.cat(gts), torch.cat(dts)
        cls = int(torch.randint(1, n_cls + 1, (1,), generator=g))
        preds.append({"boxes": dt, "scores": torch.rand(len(dt), generator=g), "labels": torch.full((len(dt),), cls)})
        targets.append({"boxes": gt, "labels": torch.full((len(gt),), cls)})
    return preds, targets


def check_eval(student, preds, targets, what, iou_thresholds=None, max_detections=None, timeout=None, unchanged=False):
    args = [preds, targets] + ([iou_thresholds] if iou_thresholds is not None or max_detections is not None else []) + ([max_detections] if max_detections is not None else [])
    got = call_unchanged(student, "evaluate_detections", *args) if unchanged else call(student, "evaluate_detections", *args, timeout=timeout)
    expected = coco_reference(preds, targets, iou_thresholds, 100 if max_detections is None else max_detections)
    if isinstance(got, RemoteObject) or not isinstance(got, dict) or not {"AP", "AP50", "AP75", "per_class"} <= set(got):
        fail(f"evaluate_detections must return a dict with the keys 'AP', 'AP50', 'AP75', 'per_class', got {describe(got)}")
    for key in ("AP", "AP50", "AP75"):
        assert_number_like(got[key], expected[key], f"evaluate_detections: {key} ({what}; pycocotools gives {expected[key]:.8f})", rtol=0, atol=TOL)
    per_class = got["per_class"]
    if isinstance(per_class, RemoteObject) or not isinstance(per_class, dict) or not all(type(k) is int for k in per_class):
        fail(f"evaluate_detections: per_class must be a dict {{class id (Python int): AP (Python float)}}, got {describe(per_class)}"
             + (f" with keys of type {sorted({type(k).__name__ for k in per_class})}" if isinstance(per_class, dict) else "")
             + " (convert numpy / torch scalars with int(...) and float(...))")
    if sorted(per_class) != sorted(expected["per_class"]):
        fail(f"evaluate_detections: per_class has the classes {sorted(per_class)[:10]}, expected those with ground truth: {sorted(expected['per_class'])[:10]} ({what})")
    for cls, value in expected["per_class"].items():
        assert_number_like(per_class[cls], value, f"evaluate_detections: AP of class {cls} ({what}; pycocotools gives {value:.8f})", rtol=0, atol=TOL)


@pytest.mark.part("evaluation")
@pytest.mark.points(5)
def test_evaluate_random_data(student):
    """AP, AP50, AP75 (Python floats) and per_class {class: AP} equal pycocotools' COCOeval on random data, large boxes included; inputs unchanged"""
    check_eval(student, *make_data(0, 1), "1 random image", unchanged=True)
    for seed, n_img in ((1, 5), (2, 20)):
        check_eval(student, *make_data(seed, n_img), f"{n_img} random images")
    check_eval(student, *make_data(4, 25, n_cls=7, jitter=2.0), "25 images, 7 classes")
    check_eval(student, *make_data(3, 30, scale=700.0), "30 images with boxes up to 350 pixels wide", unchanged=True)


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_images_without_ground_truth_and_classes_without_detections(student):
    """detections on empty images are false positives; a class with ground truth but no detection has AP 0; no ground truth at all: -1"""
    preds, targets = make_data(5, 12)
    for i in (0, 3, 7):
        targets[i] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for p in preds:
        keep = p["labels"] != 2
        p.update(boxes=p["boxes"][keep], scores=p["scores"][keep], labels=p["labels"][keep])
    check_eval(student, preds, targets, "empty images and a class without detections")
    empty_preds = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)} for _ in targets]
    check_eval(student, empty_preds, targets, "no detections at all")
    no_gt = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in preds]
    check_eval(student, preds, no_gt, "no ground truth at all: AP, AP50 and AP75 are -1, per_class is empty")


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_tied_and_duplicate_scores(student):
    """tied scores and duplicate detections are ordered as COCO orders them"""
    preds, targets = make_data(6, 15, ties=True)
    for p in preds[:5]:
        p.update(boxes=torch.cat([p["boxes"], p["boxes"]]), scores=torch.cat([p["scores"], p["scores"]]), labels=torch.cat([p["labels"], p["labels"]]))
    check_eval(student, preds, targets, "tied and duplicated detections")


# float32 boxes whose IoU is just above / below a COCO threshold in float64 and on the other side when computed in float32
FLOAT64_CASES = [
    ([27.073060989379883, 14.985594749450684, 107.4955825805664, 64.57369995117188], [50.42152786254883, 14.985594749450684, 130.84405517578125, 64.57369995117188]),
    ([6.214163780212402, 33.531219482421875, 28.19654083251953, 98.83448791503906], [11.709758758544922, 33.531219482421875, 33.692134857177734, 98.83448791503906]),
    ([2.9284017086029053, 16.80585289001465, 84.28229522705078, 47.325416564941406], [11.967720985412598, 16.80585289001465, 93.32161712646484, 47.325416564941406]),
    ([9.925652503967285, 4.537652492523193, 58.24428176879883, 65.16091918945312], [13.843379974365234, 4.537652492523193, 62.162010192871094, 65.16091918945312]),
    ([5.274764060974121, 31.455408096313477, 50.83247756958008, 116.3562240600586], [7.672539234161377, 31.455408096313477, 53.23025131225586, 116.3562240600586]),
]


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_iou_at_the_thresholds_in_float64(student):
    """IoU exactly 0.5 / 0.75 counts as a match; IoU in float64 (a hair above or below a threshold); zero-area boxes"""
    gt = torch.tensor([[0.0, 0, 100, 40], [200, 0, 300, 40], [400, 0, 500, 40]])
    dt = torch.tensor([[0.0, 0, 50, 40], [200, 0, 275, 40], [400, 0, 400, 40], [0, 0, 0, 0]])  # IoU 0.5, 0.75, 0 (zero area)
    preds = [{"boxes": dt, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 1, 1, 1])}]
    targets = [{"boxes": gt, "labels": torch.tensor([1, 1, 1])}]
    check_eval(student, preds, targets, "IoU exactly at 0.5 and 0.75, zero-area detections")
    targets2 = [{"boxes": torch.cat([gt, torch.tensor([[10.0, 10, 10, 30]])]), "labels": torch.tensor([1, 1, 1, 1])}]
    check_eval(student, preds, targets2, "a zero-area ground-truth box")
    preds3 = [{"boxes": torch.tensor([d]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])} for _, d in FLOAT64_CASES]
    targets3 = [{"boxes": torch.tensor([t]), "labels": torch.tensor([1])} for t, _ in FLOAT64_CASES]
    check_eval(student, preds3, targets3, "IoUs within 1e-7 of a threshold: compute them in float64 like pycocotools")


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_takes_the_best_free_ground_truth(student):
    """a detection takes, among the free ground-truth boxes with IoU >= t, the one with the highest IoU (crowded scenes)"""
    a, b = [0.0, 0, 100, 100], [30.0, 0, 130, 100]
    preds = [{"boxes": torch.tensor([[25.0, 0, 125, 100], a]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}]
    targets = [{"boxes": torch.tensor([a, b]), "labels": torch.tensor([1, 1])}]
    check_eval(student, preds, targets, "the first detection overlaps both boxes, the second only the first box")
    check_eval(student, *make_crowded(12, 25), "25 images of clustered objects")


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_max_detections(student):
    """only the max_detections best detections per image and class count (100 by default, 10 when asked)"""
    preds, targets = make_data(7, 4, n_cls=2, max_gt=8, max_dt=300)
    check_eval(student, preds, targets, "up to 300 detections per image")
    check_eval(student, preds, targets, "max_detections=10", max_detections=10)


@pytest.mark.part("evaluation")
@pytest.mark.points(2)
def test_evaluate_crowd_ground_truth(student):
    """iscrowd boxes are ignored, can absorb several detections, and their IoU is intersection / detection area"""
    crowd = torch.tensor([[0.0, 0, 200, 100], [300, 0, 340, 40]])
    dets = torch.tensor([[10.0, 10, 60, 60], [100, 0, 150, 100], [300, 0, 350, 40], [310, 0, 340, 30], [150, 0, 400, 100]])
    preds = [{"boxes": dets, "scores": torch.tensor([0.9, 0.85, 0.8, 0.7, 0.6]), "labels": torch.tensor([1, 1, 1, 1, 1])}]
    targets = [{"boxes": torch.cat([crowd, torch.tensor([[300.0, 0, 350, 40]])]), "labels": torch.tensor([1, 1, 1]), "iscrowd": torch.tensor([1, 1, 0])}]
    check_eval(student, preds, targets, "detections inside crowd boxes (IoU = intersection / detection area)")
    check_eval(student, *make_data(8, 20, crowd=True), "random crowd ground truth")


@pytest.mark.part("evaluation")
@pytest.mark.points(1)
def test_evaluate_custom_thresholds(student):
    """iou_thresholds other than COCO's: AP averages over them; AP50 and AP75 are still reported"""
    preds, targets = make_data(9, 10)
    check_eval(student, preds, targets, "iou_thresholds [0.3, 0.5, 0.75, 0.9]", iou_thresholds=[0.3, 0.5, 0.75, 0.9])
    check_eval(student, preds, targets, "iou_thresholds [0.6, 0.8] (AP50 and AP75 still at 0.5 and 0.75)", iou_thresholds=[0.6, 0.8])


@pytest.mark.part("evaluation")
@pytest.mark.points(1)
def test_evaluate_large_boxes(student):
    """the area range is COCO's 'all', [0, 1e10]: boxes of any size count, 650 x 650 ones too"""
    preds, targets = make_data(11, 12, scale=1300.0, jitter=6.0)
    check_eval(student, preds, targets, "boxes up to 650 pixels wide (area above 1e5)")


@pytest.mark.part("evaluation")
@pytest.mark.points(1)
def test_evaluate_many_images(student):
    """300 images with up to 100 detections each, evaluated within the time limit"""
    preds, targets = make_data(10, 300, max_dt=100)
    check_eval(student, preds, targets, "300 images", timeout=60)
