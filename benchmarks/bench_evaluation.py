"""Solution evaluate_detections vs pycocotools, faster-coco-eval and torchmetrics (same data, one run).

Ground truth: shapes images (1-4 objects). Detections: 100 per image, jittered copies of the ground
truth with random classes and scores plus random boxes. Every library gets the same boxes.

    .venv/bin/python benchmarks/bench_evaluation.py [--images 500 5000]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
import torch

from common import markdown, reference, save
from lecture_utils.data import ShapesDataset


def make_data(n_images: int, seed: int = 0):
    data = ShapesDataset(n_images, 128, seed=seed)
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for i in range(n_images):
        _, t = data[i]
        gt = t["boxes"]
        k = len(gt)
        near = gt[torch.randint(0, k, (60,), generator=g)] + torch.randn(60, 4, generator=g) * 2.5 if k else torch.zeros(0, 4)
        xy = torch.rand(100 - len(near), 2, generator=g) * 110
        rand = torch.cat([xy, xy + 4 + torch.rand(len(xy), 2, generator=g) * 40], dim=1)
        boxes = torch.cat([near, rand])
        labels = torch.where(torch.rand(100, generator=g) < 0.8, t["labels"][torch.randint(0, max(k, 1), (100,), generator=g)] if k else torch.ones(100, dtype=torch.int64), torch.randint(1, 4, (100,), generator=g))
        preds.append({"boxes": boxes, "scores": torch.rand(100, generator=g), "labels": labels})
        targets.append({"boxes": gt, "labels": t["labels"]})
    return preds, targets


def coco_dicts(preds, targets):
    images = [{"id": i + 1, "width": 128, "height": 128} for i in range(len(targets))]
    anns, dets = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        for b, label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label, "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0})
        for b, s, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i + 1, "category_id": label, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}, dets


def run_cocoapi(coco_cls, eval_cls, gt_dict, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = eval_cls(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, nargs="+", default=[500, 5000])
    args = parser.parse_args()
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    from torchmetrics.detection import MeanAveragePrecision

    sol = reference("a2_detection_basics")
    rows, table = [], []
    for n in args.images:
        preds, targets = make_data(n)
        gt_dict, dets = coco_dicts(preds, targets)
        results = {}
        start = time.perf_counter()
        ours = sol.evaluate_detections(preds, targets)
        results["solution (torch)"] = (time.perf_counter() - start, ours["AP"], ours["AP50"])
        start = time.perf_counter()
        ap, ap50 = run_cocoapi(COCO, COCOeval, gt_dict, dets)
        results["pycocotools"] = (time.perf_counter() - start, ap, ap50)
        start = time.perf_counter()
        ap, ap50 = run_cocoapi(FCOCO, COCOeval_faster, gt_dict, dets)
        results["faster-coco-eval"] = (time.perf_counter() - start, ap, ap50)
        start = time.perf_counter()
        metric = MeanAveragePrecision(iou_type="bbox")
        metric.update(preds, targets)
        tm = metric.compute()
        results["torchmetrics"] = (time.perf_counter() - start, float(tm["map"]), float(tm["map_50"]))
        reference_ap = results["pycocotools"][1]
        assert abs(ours["AP"] - reference_ap) < 1e-6, (ours["AP"], reference_ap)
        base = results["pycocotools"][0]
        for name, (seconds, ap, ap50) in results.items():
            rows.append({"images": n, "detections": 100 * n, "library": name, "seconds": seconds, "AP": ap, "AP50": ap50, "speedup_vs_pycocotools": base / seconds})
            table.append([n, name, f"{seconds:.2f}", f"{base / seconds:.1f}x", f"{ap:.6f}", f"{ap50:.6f}"])
    save("evaluation", rows, "### COCO box mAP: solution vs libraries (CPU, same data, same run)\n\n" + markdown(
        ["images", "implementation", "seconds", "speed-up vs pycocotools", "AP", "AP50"], table))


if __name__ == "__main__":
    main()
