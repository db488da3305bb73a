"""pycocotools COCOeval on in-memory data: the reference for evaluate_detections (trusted process only)."""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _precision(preds, targets, cats, iou_thresholds, max_detections):
    """COCOeval's precision array [T, R, K] (area 'all', maxDets = max_detections) for categories ``cats``."""
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        crowd = t.get("iscrowd")
        for j, (b, l) in enumerate(zip(t["boxes"].tolist(), t["labels"].tolist())):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], w, h], "area": w * h,
                         "iscrowd": int(crowd[j]) if crowd is not None else 0})
        for b, s, l in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if dets:
            dt = gt.loadRes(dets)
        else:
            dt = COCO()
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        ev.params.maxDets = [max_detections]
        ev.params.areaRng, ev.params.areaRngLbl = [[0**2, 1e5**2]], ["all"]  # pycocotools' default "all" range
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"][:, :, :, 0, -1]


def _mean(x):
    v = x[x > -1]
    return float(np.mean(v)) if v.size else -1.0


def coco_reference(preds, targets, iou_thresholds=None, max_detections=100):
    """{'AP', 'AP50', 'AP75', 'per_class'} as COCOeval computes them; AP50 and AP75 are always at IoU 0.5 and 0.75."""
    thresholds = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True) if iou_thresholds is None else np.asarray(iou_thresholds, dtype=np.float64)
    extra = [t for t in (0.5, 0.75) if not np.any(thresholds == t)]
    cats = sorted({int(c) for t in targets for c in t["labels"].tolist()} | {int(c) for p in preds for c in p["labels"].tolist()}) or [1]
    prec = _precision(preds, targets, cats, np.concatenate([thresholds, np.asarray(extra)]), max_detections)
    n = len(thresholds)
    all_thr = np.concatenate([thresholds, np.asarray(extra)])
    gt_cats = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    return {
        "AP": _mean(prec[:n]),
        "AP50": _mean(prec[np.where(all_thr == 0.5)[0]]),
        "AP75": _mean(prec[np.where(all_thr == 0.75)[0]]),
        "per_class": {c: _mean(prec[:n, :, cats.index(c)]) for c in gt_cats},
    }
