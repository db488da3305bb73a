"""Solution evaluate_detections vs pycocotools and faster-coco-eval on EQUAL work (same data, same run).

What every implementation computes: COCO box AP for area range "all" only and maxDets = 100 only,
IoU thresholds 0.50:0.05:0.95, i.e. ``evaluate()`` + ``accumulate()`` with
``params.areaRng = [[0, 1e10]]``, ``params.areaRngLbl = ['all']``, ``params.maxDets = [100]``, then
AP, AP50, AP75 and per-class AP read off ``eval['precision']`` -- exactly what the solution returns.
No 12-number ``summarize()`` (the solution does not compute the other area ranges / maxDets).
torchmetrics' ``MeanAveragePrecision`` is not benchmarked: it always evaluates four area ranges and
three maxDets and calls ``summarize()`` (``max_detection_thresholds`` must have length 3), so it
cannot be restricted to the same work.

Timed: the solution from lists of tensor dicts to its result dict; the COCO APIs from in-memory COCO
json dicts (index building, ``loadRes``, evaluate, accumulate, AP extraction). Not timed: converting
tensors to COCO json dicts. Each timing is repeated (libraries alternate within a repeat) and reported
as median and min-max, with torch's default thread count and with ``torch.set_num_threads(1)``.

Data sets (every library gets the same boxes):

- ``shapes``: shapes images (1-4 objects, 3 classes), 100 detections per image: jittered copies of the
  ground truth with random classes and scores, plus random boxes.
- ``hard``: 0-10 objects per image (some images without objects), 0-130 detections per image (some
  images without detections; in 10% of the images all detections have one class, so maxDets = 100
  cuts), scores rounded to 0.1 (many ties), 5 classes, 5% crowd boxes.

    .venv/bin/python benchmarks/bench_evaluation.py [--images 500 5000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from common import markdown, reference, save
from lecture_utils.data import ShapesDataset

Preds = list[dict[str, torch.Tensor]]  # per image: boxes Tensor[D, 4] xyxy, scores Tensor[D], labels Tensor[D]
Targets = list[dict[str, torch.Tensor]]  # per image: boxes Tensor[G, 4] xyxy, labels Tensor[G], optional iscrowd Tensor[G]
Result = dict  # {'AP': float, 'AP50': float, 'AP75': float, 'per_class': {class: float}}
TOLERANCE = 1e-12


def make_shapes_data(n_images: int, seed: int = 0) -> tuple[Preds, Targets, int]:
    """Shapes ground truth (1-4 objects, 3 classes) and 100 detections per image; returns (preds, targets, classes)."""
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
    return preds, targets, 3


def _xyxy(xy: torch.Tensor, wh: torch.Tensor) -> torch.Tensor:
    """Boxes Tensor[N, 4] xyxy from corners Tensor[N, 2] and sizes Tensor[N, 2]."""
    return torch.cat([xy, xy + wh], dim=1)


def make_hard_data(n_images: int, seed: int = 0, n_classes: int = 5) -> tuple[Preds, Targets, int]:
    """0-10 objects and 0-130 detections per image, tied scores, crowd boxes; returns (preds, targets, classes)."""
    g = torch.Generator().manual_seed(seed)
    preds, targets = [], []
    for _ in range(n_images):
        n_gt = int(torch.randint(0, 11, (1,), generator=g))
        n_dt = 0 if float(torch.rand(1, generator=g)) < 0.05 else int(torch.randint(0, 131, (1,), generator=g))
        gt = _xyxy(torch.rand(n_gt, 2, generator=g) * 200, 4 + torch.rand(n_gt, 2, generator=g) * 52)
        gl = torch.randint(1, n_classes + 1, (n_gt,), generator=g)
        crowd = (torch.rand(n_gt, generator=g) < 0.05).long()
        dt = _xyxy(torch.rand(n_dt, 2, generator=g) * 220, 2 + torch.rand(n_dt, 2, generator=g) * 60)
        dl = torch.randint(1, n_classes + 1, (n_dt,), generator=g)
        if n_gt and n_dt:
            src = torch.randint(0, n_gt, (n_dt,), generator=g)
            near = torch.rand(n_dt, generator=g) < 0.6
            jittered = gt[src] + torch.randn(n_dt, 4, generator=g) * 3.0
            jittered[:, 2:] = torch.maximum(jittered[:, 2:], jittered[:, :2] + 1)  # keep boxes valid
            dt = torch.where(near[:, None], jittered, dt)
            dl = torch.where(near & (torch.rand(n_dt, generator=g) < 0.85), gl[src], dl)
        if float(torch.rand(1, generator=g)) < 0.1:  # one class only: more than 100 per class, maxDets cuts
            dl = torch.full((n_dt,), int(torch.randint(1, n_classes + 1, (1,), generator=g)), dtype=torch.int64)
        scores = (torch.rand(n_dt, generator=g) * 10).round() / 10
        preds.append({"boxes": dt, "scores": scores, "labels": dl})
        targets.append({"boxes": gt, "labels": gl, "iscrowd": crowd})
    return preds, targets, n_classes


def coco_dicts(preds: Preds, targets: Targets, n_classes: int) -> tuple[dict, list[dict]]:
    """The same data as a COCO ground-truth dataset dict and a list of detection results (xywh boxes)."""
    images = [{"id": i + 1, "width": 1000, "height": 1000} for i in range(len(targets))]
    anns, dets = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        crowd = t.get("iscrowd", torch.zeros(len(t["labels"]), dtype=torch.int64)).tolist()
        for b, label, c in zip(t["boxes"].tolist(), t["labels"].tolist(), crowd):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": label, "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(c)})
        for b, s, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i + 1, "category_id": label, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    categories = [{"id": c, "name": str(c)} for c in range(1, n_classes + 1)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def run_cocoapi(coco_cls, eval_cls, gt_dict: dict, dets: list[dict], gt_classes: list[int]) -> Result:
    """evaluate() + accumulate() restricted to area 'all' and maxDets 100; AP, AP50, AP75, per-class AP."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = coco_cls()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = eval_cls(gt, gt.loadRes(dets), "bbox")
        ev.params.areaRng = [[0, 1e10]]
        ev.params.areaRngLbl = ["all"]
        ev.params.maxDets = [100]
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"])[:, :, :, 0, 0]  # [T, R, K]
    thresholds = np.asarray(ev.params.iouThrs)
    cat_ids = list(ev.params.catIds)

    def mean(x: np.ndarray) -> float:
        valid = x[x > -1]
        return float(valid.mean()) if valid.size else -1.0

    return {
        "AP": mean(precision),
        "AP50": mean(precision[np.where(thresholds == 0.5)[0]]),
        "AP75": mean(precision[np.where(thresholds == 0.75)[0]]),
        "per_class": {c: mean(precision[:, :, cat_ids.index(c)]) for c in gt_classes},
    }


def max_difference(a: Result, b: Result) -> float:
    """Largest |a - b| over AP, AP50, AP75 and the per-class APs (inf if the classes differ)."""
    if set(a["per_class"]) != set(b["per_class"]):
        return float("inf")
    diffs = [abs(float(a[k]) - float(b[k])) for k in ("AP", "AP50", "AP75")]
    diffs += [abs(float(a["per_class"][c]) - float(b["per_class"][c])) for c in a["per_class"]]
    return max(diffs)


def time_alternating(fns: dict[str, Callable[[], Result]], setups: dict[str, Callable[[], tuple]], repeat: int) -> tuple[dict[str, list[float]], dict[str, Result]]:
    """Wall times (``repeat`` each) of every ``fns[name](*setups[name]())``, the libraries alternating in each repeat."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, Result] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            args = setups[name]()  # fresh inputs, not timed (loadRes writes into the detection dicts)
            start = time.perf_counter()
            results[name] = fn(*args)
            times[name].append(time.perf_counter() - start)
    return times, results


def load_solution():
    """The a2 solution module (loaded from the solution notebook, so run ``autograder release`` after editing the .py)."""
    try:
        return reference("a2_detection_basics")
    except TypeError:  # autograder.assignments.Assignment is now a dataclass built by get(); common.py predates that
        from autograder.assignments import get

        return get("a2_detection_basics").reference()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, nargs="+", default=[500, 5000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--datasets", nargs="+", default=["shapes", "hard"], choices=["shapes", "hard"])
    args = parser.parse_args()
    from faster_coco_eval import COCO as FCOCO
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    sol = load_solution()
    makers = {"shapes": make_shapes_data, "hard": make_hard_data}
    default_threads = torch.get_num_threads()
    rows, table = [], []
    for dataset in args.datasets:
        for n in args.images:
            preds, targets, n_classes = makers[dataset](n)
            gt_dict, dets = coco_dicts(preds, targets, n_classes)
            gt_classes = sorted({int(c) for t in targets for c in t["labels"].tolist()})
            n_gt, n_crowd = len(gt_dict["annotations"]), sum(a["iscrowd"] for a in gt_dict["annotations"])

            def coco_inputs() -> tuple:
                anns = [dict(a) for a in gt_dict["annotations"]]
                return {**gt_dict, "annotations": anns}, [dict(d) for d in dets], gt_classes

            fns = {
                "solution (torch)": lambda p, t: sol.evaluate_detections(p, t),
                "pycocotools": lambda g, d, c: run_cocoapi(COCO, COCOeval, g, d, c),
                "faster-coco-eval": lambda g, d, c: run_cocoapi(FCOCO, COCOeval_faster, g, d, c),
            }
            setups = {"solution (torch)": lambda: (preds, targets), "pycocotools": coco_inputs, "faster-coco-eval": coco_inputs}
            for threads in (default_threads, 1):
                torch.set_num_threads(threads)
                times, results = time_alternating(fns, setups, args.repeat)
                base = statistics.median(times["pycocotools"])
                for name, ts in times.items():
                    res, diff = results[name], max_difference(results[name], results["pycocotools"])
                    if name == "solution (torch)" and not diff <= TOLERANCE:
                        raise SystemExit(f"solution differs from pycocotools by {diff:.3g} > {TOLERANCE} ({dataset}, {n} images): {res} vs {results['pycocotools']}")
                    median = statistics.median(ts)
                    rows.append({
                        "dataset": dataset, "images": n, "ground_truth": n_gt, "crowd": n_crowd, "detections": len(dets),
                        "classes": n_classes, "torch_threads": threads, "library": name, "seconds": ts,
                        "median_seconds": median, "speedup_vs_pycocotools": base / median,
                        "AP": res["AP"], "AP50": res["AP50"], "AP75": res["AP75"], "per_class": {str(k): v for k, v in res["per_class"].items()},
                        "max_abs_diff_vs_pycocotools": diff,
                    })
                    table.append([dataset, n, f"{n_gt} ({n_crowd})", len(dets), n_classes, threads, name, f"{median:.3f}",
                                  f"{min(ts):.3f}–{max(ts):.3f}", f"{base / median:.1f}x", f"{res['AP']:.6f}", f"{res['AP50']:.6f}",
                                  f"{res['AP75']:.6f}", f"{diff:.1e}"])
                print(*table[-3:], sep="\n", flush=True)
    torch.set_num_threads(default_threads)
    title = (
        "### COCO box mAP, equal work: solution vs pycocotools and faster-coco-eval (CPU, same data, same run)\n\n"
        "Every implementation computes area range 'all', maxDets 100, IoU 0.50:0.05:0.95 (evaluate + accumulate, no "
        "12-number summarize) and returns AP, AP50, AP75 and per-class AP. Times: median and min–max of "
        f"{args.repeat} repeats, libraries alternating; the COCO APIs start from COCO json dicts (conversion from tensors "
        "not timed). Threads: torch's intra-op threads (pycocotools and faster-coco-eval do not use them). "
        "Max |Δ|: largest difference from pycocotools over AP, AP50, AP75 and per-class AP. torchmetrics is left "
        "out: it cannot be restricted to one area range and one maxDets.\n\n"
    )
    save("evaluation", rows, title + markdown(
        ["data", "images", "gt (crowd)", "detections", "classes", "threads", "implementation", "median s", "min–max s",
         "speed-up vs pycocotools (median)", "AP", "AP50", "AP75", "max |Δ| vs pycocotools"], table))


if __name__ == "__main__":
    main()
