"""End-to-end grading of a2_detection_basics: subtly wrong code and library calls that do the exercise lose points,
correct alternatives keep full marks. (Solution 100, release 0, one part alone: test_grading_assignments.py.)"""
import pytest

from conftest import assert_mutant_loses_points, changed_cells, part_points, solution_nb, with_cells

A2 = "a2_detection_basics"


# ----------------------------------------------------------------------------- other implementations
# evaluate_detections written independently of the solution, the way pycocotools does it (loops over
# images, classes, thresholds): a correct alternative, and the base of the evaluation mutants below
# (the solution's vectorized body changes; these anchors do not).
EVAL_LOOPS = '''def evaluate_detections(preds, targets, iou_thresholds=None, max_detections=100):
    """COCO box AP written the way pycocotools does it: one image and class at a time, Python loops."""
    coco = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    thresholds = coco if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    all_thr = np.concatenate([thresholds, np.asarray([t for t in (0.5, 0.75) if not np.any(thresholds == t)], dtype=np.float64)])
    T = len(all_thr)
    rec_thrs = np.linspace(0.0, 1.0, 101)

    def xywh(boxes):
        b = boxes.detach().to("cpu", torch.float64).clone()
        b[:, 2:] -= b[:, :2]
        return b.tolist()

    def iou_matrix(dts, gts, crowd):
        out = np.zeros((len(dts), len(gts)))
        for j, (gx, gy, gw, gh) in enumerate(gts):
            for i, (dx, dy, dw, dh) in enumerate(dts):
                w = min(dx + dw, gx + gw) - max(dx, gx)
                h = min(dy + dh, gy + gh) - max(dy, gy)
                if w <= 0 or h <= 0:
                    continue
                inter = w * h
                union = dw * dh if crowd[j] else dw * dh + gw * gh - inter
                out[i, j] = inter / union
        return out

    images = []
    for p, t in zip(preds, targets):
        crowd = t["iscrowd"].tolist() if "iscrowd" in t else [0] * len(t["labels"])
        images.append((xywh(p["boxes"]), p["scores"].tolist(), p["labels"].tolist(), xywh(t["boxes"]), t["labels"].tolist(), crowd))
    classes = sorted({c for im in images for c in im[4]})
    precision = -np.ones((T, len(rec_thrs), len(classes)))
    for k, cls in enumerate(classes):
        scores_all, matched_all, ignored_all, num_gt = [], [], [], 0
        for d_boxes, d_scores, d_labels, g_boxes, g_labels, g_crowd in images:
            gts = [(b, bool(c)) for b, l, c in zip(g_boxes, g_labels, g_crowd) if l == cls]
            dts = [(s, b) for b, s, l in zip(d_boxes, d_scores, d_labels) if l == cls]
            if not gts and not dts:
                continue
            g_ignore = [c or b[2] * b[3] < 0 or b[2] * b[3] > 1e10 for b, c in gts]
            order = sorted(range(len(gts)), key=lambda i: g_ignore[i])  # regular first, stable
            gts, g_ignore = [gts[i] for i in order], [g_ignore[i] for i in order]
            dts = sorted(dts, key=lambda d: -d[0])[:max_detections]  # stable
            num_gt += sum(1 for ig in g_ignore if not ig)
            ious = iou_matrix([b for _, b in dts], [b for b, _ in gts], [c for _, c in gts])
            d_matched = np.zeros((T, len(dts)), dtype=bool)
            d_ignored = np.zeros((T, len(dts)), dtype=bool)
            for ti, thr in enumerate(all_thr):
                g_taken = [False] * len(gts)
                for di in range(len(dts)):
                    best, m = min(thr, 1 - 1e-10), -1
                    for gi in range(len(gts)):
                        if g_taken[gi] and not gts[gi][1]:
                            continue
                        if m > -1 and not g_ignore[m] and g_ignore[gi]:
                            break
                        if ious[di, gi] < best:
                            continue
                        best, m = ious[di, gi], gi
                    if m == -1:
                        continue
                    g_taken[m] = True
                    d_matched[ti, di] = True
                    d_ignored[ti, di] = g_ignore[m]
            out_of_range = np.array([b[2] * b[3] < 0 or b[2] * b[3] > 1e10 for _, b in dts], dtype=bool)
            d_ignored |= ~d_matched & out_of_range[None, :]
            scores_all.append(np.array([s for s, _ in dts], dtype=np.float64))
            matched_all.append(d_matched)
            ignored_all.append(d_ignored)
        if num_gt == 0:
            continue
        scores = np.concatenate(scores_all) if scores_all else np.zeros(0)
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate(matched_all, axis=1)[:, order] if matched_all else np.zeros((T, 0), dtype=bool)
        ignored = np.concatenate(ignored_all, axis=1)[:, order] if ignored_all else np.zeros((T, 0), dtype=bool)
        tp_sum = np.cumsum(matched & ~ignored, axis=1).astype(np.float64)
        fp_sum = np.cumsum(~matched & ~ignored, axis=1).astype(np.float64)
        for ti in range(T):
            tp, fp = tp_sum[ti], fp_sum[ti]
            rc = tp / num_gt
            pr = list(tp / (fp + tp + np.spacing(1)))
            for i in range(len(pr) - 1, 0, -1):
                pr[i - 1] = max(pr[i - 1], pr[i])
            idx = np.searchsorted(rc, rec_thrs, side="left")
            precision[ti, :, k] = [pr[i] if i < len(pr) else 0.0 for i in idx]

    def mean(x):
        v = x[x > -1]
        return float(np.mean(v)) if v.size else -1.0

    n = len(thresholds)
    return {"AP": mean(precision[:n]), "AP50": mean(precision[np.where(all_thr == 0.5)[0]]), "AP75": mean(precision[np.where(all_thr == 0.75)[0]]),
            "per_class": {int(c): mean(precision[:n, :, k]) for k, c in enumerate(classes)}}
'''


def eval_loops(*changes):
    source = EVAL_LOOPS
    for old, new in changes:
        assert source.count(old) == 1, old
        source = source.replace(old, new)
    return source


# evaluate_detections that hands the work to pycocotools (correct values, Python floats)
EVAL_PYCOCOTOOLS = '''import contextlib, io
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def evaluate_detections(preds, targets, iou_thresholds=None, max_detections=100):
    images, anns, dets = [], [], []
    cats = sorted({int(c) for t in targets for c in t["labels"].tolist()} | {int(c) for p in preds for c in p["labels"].tolist()}) or [1]
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        crowd = t["iscrowd"].tolist() if "iscrowd" in t else [0] * len(t["labels"])
        for b, l, c in zip(t["boxes"].tolist(), t["labels"].tolist(), crowd):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": int(c)})
        for b, s, l in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        thr = np.linspace(0.5, 0.95, 10) if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64)
        ev.params.iouThrs = np.concatenate([thr, [t for t in (0.5, 0.75) if not np.any(thr == t)]])
        ev.params.maxDets = [max_detections]
        ev.params.areaRng = [[0, 1e10]]
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]
    def mean(x):
        v = x[x > -1]
        return float(np.mean(v)) if v.size else -1.0
    all_thr, n = ev.params.iouThrs, len(thr)
    return {"AP": mean(prec[:n]), "AP50": mean(prec[all_thr == 0.5]), "AP75": mean(prec[all_thr == 0.75]),
            "per_class": {c: mean(prec[:n, :, cats.index(c)]) for c in sorted({int(c) for t in targets for c in t["labels"].tolist()})}}
'''

BOX_IOU_BODY = '''    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = _upcast(bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)
'''
NMS_BODY_START = '''    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = scores.sort(dim=0, descending=True, stable=True)[1]'''

# A selective search without the hierarchy: boxes of Felzenszwalb segmentations at several scales.
PROPOSALS_FLAT = '''def proposals_from_segments(image, scale=100.0, sigma=0.8, min_size=20):
    from skimage.segmentation import felzenszwalb
    pixels = image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    boxes = []
    for s in (scale, 4 * scale, 16 * scale, 64 * scale):
        seg = felzenszwalb(pixels, scale=s, sigma=sigma, min_size=min_size)
        for r in range(int(seg.max()) + 1):
            ys, xs = np.nonzero(seg == r)
            if len(xs):
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    boxes.append([0, 0, pixels.shape[1], pixels.shape[0]])
    return torch.unique(torch.tensor(boxes, dtype=torch.float32), dim=0)
'''

NMS_TESTS = ["test_nms_random_boxes", "test_nms_tied_scores", "test_nms_iou_exactly_at_the_threshold", "test_nms_edge_cases", "test_nms_many_boxes"]
EVAL_TESTS = ["test_evaluate_random_data", "test_evaluate_images_without_ground_truth_and_classes_without_detections", "test_evaluate_tied_and_duplicate_scores",
              "test_evaluate_iou_at_the_thresholds_in_float64", "test_evaluate_takes_the_best_free_ground_truth", "test_evaluate_max_detections",
              "test_evaluate_crowd_ground_truth", "test_evaluate_custom_thresholds", "test_evaluate_large_boxes", "test_evaluate_many_images"]
FORBIDDEN = "must not use"  # the start of call_checked's message

# Correct implementations other than the solution's: each must keep every point of its parts.
ALTERNATIVES = {
    # compares the float32 IoU with the threshold in float32 (torchvision compares in double)
    "nms-float32-comparison": {"nms": ("alive[i + 1 :] &= ~(iou.double() > iou_threshold)", "alive[i + 1 :] &= ~(iou > iou_threshold)")},
    # another order of operations, per-axis intersection, and 0 (not nan) for two zero-area boxes
    "box_iou-other-formula": {"box_ops": (BOX_IOU_BODY, '''    w = (torch.minimum(boxes1[:, None, 2], boxes2[None, :, 2]) - torch.maximum(boxes1[:, None, 0], boxes2[None, :, 0])).clamp(min=0)
    h = (torch.minimum(boxes1[:, None, 3], boxes2[None, :, 3]) - torch.maximum(boxes1[:, None, 1], boxes2[None, :, 1])).clamp(min=0)
    inter = _upcast(w) * _upcast(h)
    union = box_area(boxes1)[:, None] - inter + box_area(boxes2)[None, :]
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))
''')},
    "batched-nms-one-nms-per-class": {"nms": ("if boxes.numel() > 4000:", "if True:")},
    "evaluate-per-image-loops": {"evaluation": EVAL_LOOPS},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ALTERNATIVES))
def test_a2_correct_alternatives_keep_full_marks(grade, name):
    changes = changed_cells(A2, ALTERNATIVES[name])
    parts = sorted(changes)
    results = grade(with_cells(solution_nb(A2), changes), A2, parts=parts)
    assert results.score == sum(part_points(A2, p) for p in parts), [(t.name, t.output) for t in results.tests if t.status != "passed"]


# Each mutant: {cell: change} and {test that must fail: text its feedback must contain (or "")}.
MUTANTS = {
    # --- the library does the exercise (however it is reached): no points for that function
    "box_convert-calls-torchvision": ({"box_ops": ('    formats = ("xyxy", "xywh", "cxcywh")\n', "    import torchvision\n    return torchvision.ops.box_convert(boxes, in_fmt, out_fmt)\n")},
                                      {"test_box_convert_all_formats": "torchvision.ops.boxes.box_convert"}),
    "box_convert-via-transforms-v2": ({"box_ops": ('    formats = ("xyxy", "xywh", "cxcywh")\n', "    from torchvision.transforms.v2.functional import convert_bounding_box_format as f\n"
                                                   "    return f(boxes, old_format=in_fmt.upper(), new_format=out_fmt.upper()).clone()\n")},
                                      {"test_box_convert_all_formats": "_convert_bounding_box_format"}),
    "box_area-captured-alias": ({"box_ops": ("def box_area(boxes):", "from torchvision.ops import box_area as _area\n\n\ndef box_area(boxes):\n    return _area(boxes)")},
                                {"test_box_area": "torchvision.ops.boxes.box_area"}),
    "box_iou-captured-alias": ({"box_ops": [("def box_iou(boxes1, boxes2):", "from torchvision.ops import box_iou as f\n\n\ndef box_iou(boxes1, boxes2):"),
                                            (BOX_IOU_BODY, "    return f(boxes1, boxes2)\n")]},
                               {"test_box_iou_matches_torchvision": "torchvision.ops.boxes.box_iou", "test_box_iou_is_vectorized": FORBIDDEN}),
    "box_iou-in-a-thread": ({"box_ops": (BOX_IOU_BODY, '''    import threading, torchvision
    out = []
    worker = threading.Thread(target=lambda: out.append(torchvision.ops.box_iou(boxes1, boxes2)))
    worker.start()
    worker.join()
    return out[0]
''')}, {"test_box_iou_matches_torchvision": "torchvision.ops.boxes.box_iou", "test_box_iou_is_vectorized": FORBIDDEN}),
    "box_coding-boxcoder-direct-and-in-a-thread": ({"box_coding": [
        ("    wx, wy, ww, wh = (float(w) for w in weights)\n    ex_w", "    from torchvision.models.detection._utils import BoxCoder\n    return BoxCoder(weights).encode_single(reference, proposals)\n    ex_w"),
        ("    boxes = boxes.to(rel_codes.dtype)\n", "    import threading\n    from torchvision.models.detection._utils import BoxCoder\n    out = []\n"
         "    worker = threading.Thread(target=lambda: out.append(BoxCoder(weights, bbox_xform_clip).decode_single(rel_codes, boxes)))\n"
         "    worker.start()\n    worker.join()\n    return out[0]\n")]},
        {"test_encode_matches_boxcoder": "encode_boxes must not use", "test_decode_matches_boxcoder": "BoxCoder.decode_single", "test_round_trip": FORBIDDEN}),
    "labels-torchvision-matcher": ({"labels": ("    iou = box_iou(proposals, gt_boxes)\n", "    from torchvision.models.detection._utils import Matcher\n    iou = box_iou(proposals, gt_boxes)\n"
                                               "    Matcher(pos_iou, neg_iou)(iou.T)\n")},
                                   {"test_positive_negative_neutral": "Matcher.__call__", "test_iou_exactly_at_the_thresholds_and_ties": FORBIDDEN}),
    "nms-torchvision-direct": ({"nms": (NMS_BODY_START, "    import torchvision\n    return torchvision.ops.nms(boxes, scores, iou_threshold)\n" + NMS_BODY_START)},
                               {**{t: "torchvision.ops.boxes.nms" for t in NMS_TESTS}, "test_batched_nms": FORBIDDEN}),
    "nms-torch-ops-in-a-thread": ({"nms": (NMS_BODY_START, "    import threading\n    out = []\n"
                                           "    worker = threading.Thread(target=lambda: out.append(torch.ops.torchvision.nms(boxes, scores, iou_threshold)))\n"
                                           "    worker.start()\n    worker.join()\n    return out[0]\n" + NMS_BODY_START)},
                                  {**{t: "torchvision::nms" for t in NMS_TESTS}, "test_batched_nms": "torchvision::nms"}),
    "batched_nms-captured-alias": ({"nms": [("def batched_nms(boxes, scores, idxs, iou_threshold):", "from torchvision.ops import batched_nms as _tv_batched\n\n\n"
                                             "def batched_nms(boxes, scores, idxs, iou_threshold):\n    return _tv_batched(boxes, scores, idxs, iou_threshold)")]},
                                   {"test_batched_nms": "torchvision.ops.boxes.batched_nms"}),
    "evaluate-wraps-pycocotools": ({"evaluation": EVAL_PYCOCOTOOLS},
                                   {t: "pycocotools.cocoeval.COCOeval.evaluate" for t in EVAL_TESTS}),
    # --- boxes
    "box_convert-in-place": ({"box_ops": ("    return torch.stack((a, b, c, d), dim=-1)\n", "    boxes.copy_(torch.stack((a, b, c, d), dim=-1))\n    return boxes\n")},
                             {"test_box_convert_all_formats": "in place"}),
    "box_convert-returns-its-input": ({"box_ops": ("        return boxes.clone()\n", "        return boxes\n")}, {"test_box_convert_all_formats": "returned its input"}),
    "box_area-abs": ({"box_ops": ("    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])", "    return ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).abs()")},
                     {"test_box_area": "box_area"}),
    # products in the boxes' own dtype: int8 / float16 areas overflow (torchvision upcasts)
    "box_area-and-iou-without-upcast": ({"box_ops": [("    boxes = _upcast(boxes)\n", ""), ("    wh = _upcast(bottom_right - top_left).clamp(min=0)", "    wh = (bottom_right - top_left).clamp(min=0)")]},
                                        {"test_box_area": "int8", "test_box_iou_matches_torchvision": "int8"}),
    "iou-plus-one": ({"box_ops": ("return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])", "return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)")},
                     {"test_box_area": ""}),
    "box_iou-python-loop": ({"box_ops": (BOX_IOU_BODY, '''    rows = []
    for a in boxes1.tolist():
        row = []
        for b in boxes2.tolist():
            w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
            row.append(w * h / union if union > 0 else float("nan"))
        rows.append(row)
    return torch.tensor(rows, dtype=boxes1.dtype).reshape(len(boxes1), len(boxes2))
''')}, {"test_box_iou_is_vectorized": "lines of your code"}),
    # --- box coding
    "decode-without-clamp": ({"box_coding": ("dw = (rel_codes[:, 2::4] / ww).clamp(max=bbox_xform_clip)", "dw = rel_codes[:, 2::4] / ww")}, {"test_decode_matches_boxcoder": ""}),
    "decode-clamps-before-dividing-by-the-weight": ({"box_coding": [("dw = (rel_codes[:, 2::4] / ww).clamp(max=bbox_xform_clip)", "dw = rel_codes[:, 2::4].clamp(max=bbox_xform_clip) / ww"),
                                                                    ("dh = (rel_codes[:, 3::4] / wh).clamp(max=bbox_xform_clip)", "dh = rel_codes[:, 3::4].clamp(max=bbox_xform_clip) / wh")]},
                                                    {"test_decode_matches_boxcoder": "decode_boxes with weights (10.0, 10.0, 5.0, 5.0)"}),
    "encode-in-float32": ({"box_coding": ("    wx, wy, ww, wh = (float(w) for w in weights)\n    ex_w", "    reference, proposals = reference.float(), proposals.float()\n"
                                          "    wx, wy, ww, wh = (float(w) for w in weights)\n    ex_w")}, {"test_encode_matches_boxcoder": "float64", "test_round_trip": ""}),
    # --- labels
    "labels-neutral-boundary": ({"labels": ("torch.where(best_iou < neg_iou,", "torch.where(best_iou <= neg_iou,")}, {"test_iou_exactly_at_the_thresholds_and_ties": ""}),
    # --- nms
    "nms-suppresses-at-equality": ({"nms": ("alive[i + 1 :] &= ~(iou.double() > iou_threshold)", "alive[i + 1 :] &= ~(iou.double() >= iou_threshold)")},
                                   {"test_nms_iou_exactly_at_the_threshold": ""}),
    "nms-unstable-ties": ({"nms": ("order = scores.sort(dim=0, descending=True, stable=True)[1]", "order = (-scores).argsort()")}, {"test_nms_tied_scores": ""}),
    "batched_nms-fixed-class-offset-1000": ({"nms": ("offsets = idxs.to(boxes) * (boxes.max() + 1)", "offsets = idxs.to(boxes) * 1000")},
                                            {"test_batched_nms": "1333"}),
    "batched_nms-shifts-the-boxes-in-place": ({"nms": ("        keep = nms(boxes + offsets[:, None], scores, iou_threshold)",
                                                       "        boxes += offsets[:, None]\n        keep = nms(boxes, scores, iou_threshold)")},
                                              {"test_batched_nms_empty_and_inputs": "in place"}),
    # --- precision, recall, AP
    "ap-without-envelope": ({"ap": ("envelope = precision.flip(0).cummax(0).values.flip(0)", "envelope = precision")}, {"test_average_precision_coco101": ""}),
    "ap-envelope-in-place": ({"ap": ("    precision, recall = precision.to(torch.float64), recall.to(torch.float64)\n",
                                     "    for i in range(len(precision) - 1, 0, -1):\n        precision[i - 1] = max(precision[i - 1], precision[i])\n")},
                             {"test_average_precision_coco101": "in place", "test_average_precision_area": "in place"}),
    "ap-returns-a-tensor": ({"ap": ("        return float(sampled.mean())", "        return sampled.mean()")}, {"test_average_precision_coco101": "expected a Python float"}),
    "precision_recall-float32": ({"ap": ("    precision = tp / ranks\n", "    precision = (tp / ranks).float()\n")}, {"test_precision_recall": "expected dtype torch.float64"}),
    # --- evaluate_detections (on EVAL_LOOPS)
    "eval-area-range-all-is-1e5": ({"evaluation": eval_loops(("c or b[2] * b[3] < 0 or b[2] * b[3] > 1e10", "c or b[2] * b[3] < 0 or b[2] * b[3] > 1e5"),
                                                             ("[b[2] * b[3] < 0 or b[2] * b[3] > 1e10 for", "[b[2] * b[3] < 0 or b[2] * b[3] > 1e5 for"))},
                                   {"test_evaluate_large_boxes": "", "test_evaluate_random_data": "350 pixels"}),
    "eval-first-free-ground-truth": ({"evaluation": eval_loops(("                        best, m = ious[di, gi], gi\n", "                        best, m = ious[di, gi], gi\n                        break\n"))},
                                     {"test_evaluate_takes_the_best_free_ground_truth": ""}),
    "eval-iou-in-float32": ({"evaluation": eval_loops(("        b = boxes.detach().to(\"cpu\", torch.float64).clone()\n", "        b = boxes.detach().to(\"cpu\", torch.float32).clone()\n"),
                                                      ("                out[i, j] = inter / union\n", "                out[i, j] = float(np.float32(inter) / np.float32(union))\n"),
                                                      ("                w = min(dx + dw, gx + gw) - max(dx, gx)\n                h = min(dy + dh, gy + gh) - max(dy, gy)\n",
                                                       "                dx, dy, dw, dh, gx, gy, gw, gh = (np.float32(v) for v in (dx, dy, dw, dh, gx, gy, gw, gh))\n"
                                                       "                w = min(dx + dw, gx + gw) - max(dx, gx)\n                h = min(dy + dh, gy + gh) - max(dy, gy)\n"))},
                            {"test_evaluate_iou_at_the_thresholds_in_float64": "float64"}),
    "eval-crowd-iou-is-plain-iou": ({"evaluation": eval_loops(("union = dw * dh if crowd[j] else dw * dh + gw * gh - inter", "union = dw * dh + gw * gh - inter"))},
                                    {"test_evaluate_crowd_ground_truth": ""}),
    "eval-crowd-used-up": ({"evaluation": eval_loops(("if g_taken[gi] and not gts[gi][1]:", "if g_taken[gi]:"))}, {"test_evaluate_crowd_ground_truth": ""}),
    "eval-max-detections-ignored": ({"evaluation": eval_loops(("[:max_detections]", "[:100]"))}, {"test_evaluate_max_detections": "max_detections=10"}),
    "eval-no-max-detections": ({"evaluation": eval_loops(("[:max_detections]", ""))}, {"test_evaluate_max_detections": "300 detections"}),
    "eval-changes-its-inputs": ({"evaluation": eval_loops(("        b = boxes.detach().to(\"cpu\", torch.float64).clone()\n", "        b = boxes.detach()\n"))},
                                {"test_evaluate_random_data": "in place"}),
    # --- proposals
    "proposals-flat-multiscale-segmentation": ({"proposals": PROPOSALS_FLAT}, {"test_proposals_merge_hierarchically": "not the union of two adjacent"}),
    "proposals-skimage-merge-hierarchical": ({"proposals": ("    n = int(seg.max()) + 1\n", "    from skimage import graph\n"
                                                          "    graph.merge_hierarchical(seg, graph.rag_mean_color(pixels, seg), thresh=0.05, rag_copy=True, in_place_merge=False,\n"
                                                          "                             merge_func=lambda g, s, d: None, weight_func=lambda g, s, d, n: {'weight': 1.0})\n"
                                                          "    n = int(seg.max()) + 1\n")},
                                             {"test_proposals_recall_on_shapes": "skimage.graph._graph_merge.merge_hierarchical", "test_proposals_merge_hierarchically": FORBIDDEN}),
    "proposals-horizontal-neighbours-only": ({"proposals": ("for a, b in ((seg[:, 1:], seg[:, :-1]), (seg[1:, :], seg[:-1, :])):", "for a, b in ((seg[:, 1:], seg[:, :-1]),):")},
                                             {"test_proposals_merge_hierarchically": "horizontal stripes"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_a2_subtly_wrong_code_loses_points(grade, name):
    assert_mutant_loses_points(grade, A2, name, MUTANTS[name], each_part=False)
