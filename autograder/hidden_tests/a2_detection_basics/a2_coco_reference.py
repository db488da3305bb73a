"""pycocotools COCOeval on in-memory data: the reference for evaluate_detections (trusted process only)."""
import contextlib, io
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

def coco_reference(preds, targets, iou_thresholds=None):
    images, anns, dets = [], [], []
    cats = sorted({int(c) for t in targets for c in t["labels"].tolist()} | {int(c) for p in preds for c in p["labels"].tolist()})
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i + 1, "width": 1000, "height": 1000})
        crowd = t.get("iscrowd")
        for j, (b, l) in enumerate(zip(t["boxes"].tolist(), t["labels"].tolist())):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(crowd[j]) if crowd is not None else 0})
        for b, s, l in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i + 1, "category_id": int(l), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}; dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        if iou_thresholds is not None:
            ev.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        ev.evaluate(); ev.accumulate(); ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]
    def m(x):
        v = x[x > -1]; return float(np.mean(v)) if v.size else -1.0
    gt_cats = sorted({int(c) for t in targets for c in t["labels"].tolist()})
    out = {"AP": m(prec), "per_class": {c: m(prec[:, :, cats.index(c)]) for c in gt_cats}}
    thr = ev.params.iouThrs
    if np.any(thr == 0.5): out["AP50"] = m(prec[np.where(thr == 0.5)[0]])
    if np.any(thr == 0.75): out["AP75"] = m(prec[np.where(thr == 0.75)[0]])
    return out
