"""Assignment a5 (segmentation): the solution's trained quality after fixed CPU budgets, and its upsampling ops' speed.

1. **FCN.** The solution ``FCN(4)`` trained by the grader's recipe (``support.train_segmenter``: cross-entropy,
   AdamW lr 3e-3 weight decay 1e-4, one-cycle schedule, batch 8 of the same 512 rendered 128x128 shapes images
   with 1-4 objects) for fixed training-time budgets (env ``BENCH_FCN_MINUTES``, default ``1,3``); mIoU from a
   dataset-level confusion matrix over the 4 classes (the grader's ``confusion_miou``) on 96 held-out images.
2. **Mask R-CNN.** torchvision's ``MaskRCNN`` on the grader's small backbone (``support.build_mask_rcnn``) with the
   SOLUTION's mask branch (``MaskHead(64, 4, hidden_channels=64, num_convs=2)``, mask predictor ``Identity``, the
   solution's ``maskrcnn_loss`` and ``paste_masks_in_image`` swapped in by the grader's ``_MaskFunctions``)
   against the same model with torchvision's own mask branch (``MaskRCNNHeads(64, [64, 64], 1)`` +
   ``MaskRCNNPredictor(64, 64, 4)``, torchvision's loss and paste). Everything but the mask branch starts from the
   same weights (copied); the mask branches keep their own initialization (the solution: PyTorch's defaults,
   torchvision: Kaiming normal). Same batches (the grader's 1024 images, 1-3 objects, batch 8), same AdamW
   (lr 2e-3 as the grader, weight decay 1e-4), same one-cycle schedule, same budget (env ``BENCH_MASK_MINUTES``,
   default ``2,5``, each budget a fresh run); the two models' steps alternate so that machine load hits both
   alike. COCO mask AP50 / AP (pycocotools ``segm``, masks >= 0.5) and box AP50 (pycocotools ``bbox``) on 96
   held-out images.

   The one-cycle schedule (``OneCycleLR``'s formula: pct_start 0.1, cosine, div_factor 25, final_div_factor 1e4,
   beta1 cycled 0.95 -> 0.85 -> 0.95) is driven by the fraction of the budget's training time used so far (the
   grader's is driven by a step count, unknown in advance for a time budget); evaluation is not counted.
3. **Ops.** Solution ``conv_transpose2d`` vs ``F.conv_transpose2d`` and ``bilinear_upsample`` vs
   ``F.interpolate(mode="bilinear")``, forward and forward + backward, float32, outputs (and gradients) checked
   equal (allclose) in the same run; median and min-max of ``BENCH_REPEATS`` (default 9) alternating repeats.
   On a CUDA GPU the same table on the GPU; without one, the result says so.

Everything runs with ``torch.set_num_threads(1)`` (env ``BENCH_THREADS``), the grader's setting.

    .venv/bin/python benchmarks/bench_segmentation.py                                            # about 20 minutes
    BENCH_QUICK=1 BENCH_RESULTS=/tmp/bench .venv/bin/python benchmarks/bench_segmentation.py     # a dry run, about 1 minute
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from tqdm.auto import tqdm

from common import check_op_equal, markdown, op_runners, reference, save, times_pair

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repo root, for autograder.hidden_tests
from autograder.hidden_tests.a5_segmentation import support  # noqa: E402
from autograder.hidden_tests.a5_segmentation.evaluation import confusion_miou  # noqa: E402
from autograder.hidden_tests.kit.detection import evaluation_set  # noqa: E402
from lecture_utils.data import CLASSES, ShapesDataset  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
FCN_MINUTES = [float(m) for m in os.environ.get("BENCH_FCN_MINUTES", "0.05,0.1" if QUICK else "1,3").split(",")]
MASK_MINUTES = [float(m) for m in os.environ.get("BENCH_MASK_MINUTES", "0.05,0.1" if QUICK else "2,5").split(",")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "5" if QUICK else "9"))
EVAL_IMAGES = 24 if QUICK else 96
FCN_EVAL_SEED, MASK_EVAL_SEED = 5_001, 5_002  # held out: not the training seeds (200, 300) nor the grader's
FCN_LR, MASK_LR, WEIGHT_DECAY, BATCH = 3e-3, 2e-3, 1e-4, 8
FCN_GOAL, MASK_GOAL = 0.85, 0.75


# ---------------------------------------------------------------- one-cycle by time

def _cos(start: float, end: float, p: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * p))


def one_cycle(fraction: float, max_lr: float, pct_start: float = 0.1) -> tuple[float, float]:
    """(lr, beta1) of ``OneCycleLR`` (defaults, cosine) at ``fraction`` in [0, 1] of the run."""
    initial, final = max_lr / 25, max_lr / 25 / 1e4
    if fraction <= pct_start:
        p = fraction / pct_start
        return _cos(initial, max_lr, p), _cos(0.95, 0.85, p)
    p = min(1.0, (fraction - pct_start) / (1 - pct_start))
    return _cos(max_lr, final, p), _cos(0.85, 0.95, p)


def set_schedule(optimizer, fraction: float, max_lr: float) -> None:
    lr, beta1 = one_cycle(fraction, max_lr)
    for group in optimizer.param_groups:
        group["lr"], group["betas"] = lr, (beta1, group["betas"][1])


def optimizer_for(model, lr: float):
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    set_schedule(optimizer, 0.0, lr)
    return optimizer


# ---------------------------------------------------------------- 1a. FCN

def fcn_run(sol, minutes: float, batches, eval_images, eval_semantic) -> dict:
    torch.manual_seed(0)
    model = sol.FCN(len(CLASSES))
    optimizer = optimizer_for(model, FCN_LR)
    model.train()
    saved = copy.deepcopy(model.state_dict())  # warm-up step (one-time costs out of the budget), then the initial weights
    F.cross_entropy(model(batches[0][0]), batches[0][1]).backward()
    model.load_state_dict(saved)
    model.zero_grad(set_to_none=True)
    budget, train_s, steps, step_times = minutes * 60, 0.0, 0, []
    with tqdm(total=round(budget), desc=f"FCN {minutes:g} min", unit="s", leave=False) as bar:
        while train_s < budget:
            images, semantic = batches[steps % len(batches)]
            start = time.perf_counter()
            set_schedule(optimizer, train_s / budget, FCN_LR)
            loss = F.cross_entropy(model(images), semantic)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            dt = time.perf_counter() - start
            train_s, steps = train_s + dt, steps + 1
            step_times.append(dt)
            bar.update(min(round(train_s), round(budget)) - bar.n)
    miou = confusion_miou(support._segment(model, eval_images), eval_semantic, len(CLASSES))
    result = {"minutes": minutes, "steps": steps, "train_s": train_s, "median_step_s": statistics.median(step_times),
              "mIoU": miou, "last_loss": float(loss.detach())}
    print(f"FCN {minutes:g} min: {steps} steps, mIoU {miou:.3f}", flush=True)
    return result


def fcn_part(sol) -> tuple[list[dict], str]:
    data = ShapesDataset(512, 128, seed=200, min_objects=1, max_objects=4)  # training images like the grader's (its own seed)
    items = [data[i] for i in range(512)]
    batches = [(torch.stack([im for im, _ in items[s:s + BATCH]]), torch.stack([t["semantic"] for _, t in items[s:s + BATCH]]))
               for s in range(0, 512, BATCH)]
    eval_images, targets = evaluation_set(FCN_EVAL_SEED, EVAL_IMAGES, min_objects=1, max_objects=4)
    eval_semantic = torch.stack([t["semantic"] for t in targets])
    results = [fcn_run(sol, m, batches, eval_images, eval_semantic) for m in FCN_MINUTES]
    rows = [{"part": "fcn", **r} for r in results]
    table = [[f"{r['minutes']:g}", r["steps"], f"{r['train_s']:.0f}", f"{r['median_step_s'] * 1e3:.0f}", f"{r['mIoU']:.3f}",
              "yes" if r["mIoU"] >= FCN_GOAL else "no"] for r in results]
    text = (f"### a5 FCN trained for a time budget (solution `FCN(4)`, the grader's recipe)\n\n"
            f"128x128 shapes images (1-4 objects), batch {BATCH}, CPU, {THREADS} thread(s); cross-entropy, AdamW lr {FCN_LR:g} "
            f"wd {WEIGHT_DECAY:g}, one-cycle schedule over the budget's training time (evaluation not counted); mIoU from a "
            f"dataset-level confusion matrix over {len(CLASSES)} classes on {EVAL_IMAGES} held-out images. Goal: mIoU >= {FCN_GOAL} "
            f"(the grader's bar: 0.65 after 500 steps).\n\n"
            + markdown(["training minutes", "steps", "training s", "median ms / step", "mIoU", f"mIoU >= {FCN_GOAL}"], table))
    return rows, text


# ---------------------------------------------------------------- 1b. Mask R-CNN

def _rle(mask: torch.Tensor) -> dict:
    code = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    code["counts"] = code["counts"].decode()
    return code


def coco_ap(detections: list[dict], targets: list[dict], iou_type: str, size=(128, 128)) -> tuple[float, float]:
    """(AP, AP50) by pycocotools (``iou_type`` "segm" or "bbox"; area all, 100 detections)."""
    images = [{"id": i, "height": size[0], "width": size[1]} for i in range(len(targets))]
    anns = []
    for i, t in enumerate(targets):
        for m, box, c in zip(t["masks"], t["boxes"].tolist(), t["labels"].tolist()):
            x0, y0, x1, y1 = box
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "segmentation": _rle(m), "area": float(m.sum()),
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "iscrowd": 0})
    dets = []
    for i, d in enumerate(detections):
        for m, box, s, c in zip(d["masks"], d["boxes"].tolist(), d["scores"].tolist(), d["labels"].tolist()):
            x0, y0, x1, y1 = box
            det = {"image_id": i, "category_id": int(c), "score": float(s)}
            det.update({"segmentation": _rle(m)} if iou_type == "segm" else {"bbox": [x0, y0, x1 - x0, y1 - y0]})
            dets.append(det)
    if not dets:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, len(CLASSES))]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), iou_type)
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    return float(evaluator.stats[0]), float(evaluator.stats[1])


def mask_models(sol) -> dict:
    """{"solution": (model, mask functions context), "torchvision": (...)}: same weights outside the mask branch."""
    torch.manual_seed(0)
    ours = support.build_mask_rcnn(sol.MaskHead(support.FPN_CHANNELS, len(CLASSES), **support.MASK_HEAD_ARGS), len(CLASSES))
    torch.manual_seed(0)
    theirs = support.build_mask_rcnn(MaskRCNNHeads(support.FPN_CHANNELS, [64, 64], 1), len(CLASSES))
    theirs.roi_heads.mask_predictor = MaskRCNNPredictor(64, 64, len(CLASSES))
    shared = {k: v for k, v in ours.state_dict().items() if not k.startswith("roi_heads.mask_")}
    missing, unexpected = theirs.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith("roi_heads.mask_") for k in missing), (missing, unexpected)
    return {"solution": (ours, lambda: support._MaskFunctions(sol.maskrcnn_loss, sol.paste_masks_in_image)),
            "torchvision": (theirs, contextlib.nullcontext)}


def mask_step(model, batch) -> torch.Tensor:
    targets = [{k: t[k] for k in ("boxes", "labels", "masks")} for _, t in batch]
    return sum(model([im for im, _ in batch], targets).values())


def instances(model, images, batch_size=16):
    """Detections of a torchvision Mask R-CNN with binary masks Bool[D, H, W] (probability >= 0.5)."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            for d in model([im for im in images[s:s + batch_size]]):
                out.append({"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"], "masks": d["masks"][:, 0] >= 0.5})
    return out


def mask_race(sol, minutes: float, items, eval_images, eval_targets) -> dict:
    models = mask_models(sol)
    state = {}
    for name, (model, functions) in models.items():
        model.train()
        saved = copy.deepcopy(model.state_dict())
        with functions():  # warm-up step (one-time costs out of the budget), then the initial weights
            mask_step(model, items[:BATCH]).backward()
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
        state[name] = {"optimizer": optimizer_for(model, MASK_LR), "steps": 0, "train_s": 0.0, "step_times": []}
    budget = minutes * 60
    torch.manual_seed(0)
    order = list(models)
    with tqdm(total=round(2 * budget), desc=f"Mask R-CNN race {minutes:g} min x 2", unit="s", leave=False) as bar:
        while any(s["train_s"] < budget for s in state.values()):
            for name in order:  # one step of each model, the order swapped every round
                s = state[name]
                if s["train_s"] >= budget:
                    continue
                model, functions = models[name]
                batch = items[(s["steps"] * BATCH) % len(items):][:BATCH]  # the grader's batches
                start = time.perf_counter()
                set_schedule(s["optimizer"], s["train_s"] / budget, MASK_LR)
                with functions():
                    loss = mask_step(model, batch)
                    s["optimizer"].zero_grad()
                    loss.backward()
                    s["optimizer"].step()
                dt = time.perf_counter() - start
                s["train_s"] += dt
                s["steps"] += 1
                s["step_times"].append(dt)
                s["last_loss"] = float(loss.detach())
            order.reverse()
            bar.update(min(round(sum(s["train_s"] for s in state.values())), round(2 * budget)) - bar.n)
    out = {}
    for name, (model, functions) in models.items():
        with functions():
            detections = instances(model, eval_images)
        mask_ap, mask_ap50 = coco_ap(detections, eval_targets, "segm")
        box_ap, box_ap50 = coco_ap(detections, eval_targets, "bbox")
        s = state[name]
        out[name] = {"minutes": minutes, "steps": s["steps"], "train_s": s["train_s"], "median_step_s": statistics.median(s["step_times"]),
                     "mask_AP50": mask_ap50, "mask_AP": mask_ap, "box_AP50": box_ap50, "box_AP": box_ap, "last_loss": s["last_loss"]}
        print(f"Mask R-CNN, {name} mask branch, {minutes:g} min: {s['steps']} steps, mask AP50 {mask_ap50:.3f}, mask AP {mask_ap:.3f}, "
              f"box AP50 {box_ap50:.3f}", flush=True)
    return out


def mask_part(sol) -> tuple[list[dict], str]:
    data = ShapesDataset(1024, 128, seed=300, min_objects=1, max_objects=3)  # the grader's training images (seed 0 + 300)
    items = [data[i] for i in range(len(data))]
    images, targets = evaluation_set(MASK_EVAL_SEED, EVAL_IMAGES, min_objects=1, max_objects=3)
    eval_images = list(images)
    results = [mask_race(sol, m, items, eval_images, targets) for m in MASK_MINUTES]
    rows, table = [], []
    for r in results:
        rows.append({"part": "mask_rcnn", "minutes": r["solution"]["minutes"], **r})
        for name in ("solution", "torchvision"):
            x = r[name]
            table.append([f"{x['minutes']:g}", name, x["steps"], f"{x['train_s']:.0f}", f"{x['median_step_s'] * 1e3:.0f}",
                          f"{x['mask_AP50']:.3f}", f"{x['mask_AP']:.3f}", f"{x['box_AP50']:.3f}",
                          "yes" if x["mask_AP50"] >= MASK_GOAL else "no"])
    text = (f"### a5 Mask R-CNN trained for a time budget: solution mask branch vs torchvision's\n\n"
            f"torchvision `MaskRCNN` on the grader's small backbone + FPN (`support.build_mask_rcnn`); mask branch: the solution's "
            f"`MaskHead(64, 4, hidden_channels=64, num_convs=2)` with its `maskrcnn_loss` and `paste_masks_in_image`, or torchvision's "
            f"`MaskRCNNHeads(64, [64, 64], 1)` + `MaskRCNNPredictor(64, 64, 4)` with its own loss and paste (same layers; the mask "
            f"branches keep their own initialization, everything else starts from the same weights). 128x128 shapes images (1-3 "
            f"objects), the grader's batches of {BATCH}, CPU, {THREADS} thread(s), AdamW lr {MASK_LR:g} wd {WEIGHT_DECAY:g}, one-cycle "
            f"schedule over the budget's training time, steps of the two models alternating, a fresh run per budget. COCO mask AP50 "
            f"/ AP (pycocotools `segm`, masks >= 0.5) and box AP50 (`bbox`) on {EVAL_IMAGES} held-out images (evaluation not "
            f"counted). Goal: mask AP50 >= {MASK_GOAL} (the grader's bar: 0.55 after 300 steps).\n\n"
            + markdown(["training minutes", "mask branch", "steps", "training s", "median ms / step", "mask AP50", "mask AP", "box AP50",
                        f"mask AP50 >= {MASK_GOAL}"], table))
    return rows, text


# ---------------------------------------------------------------- 2-3. ops

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def op_workloads(sol, device: torch.device):
    """(op, workload, solution fn, torch fn, input tensors (gradients checked for these)) for each workload."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    out = []
    for n, c_in, hw, c_out, k, stride, padding, label in ((8, 64, 32, 64, 4, 2, 1, "8x64x32x32, weight 64x64x4x4, stride 2, padding 1 -> 8x64x64x64"),
                                                          (8, 32, 32, 16, 2, 2, 0, "8x32x32x32, weight 32x16x2x2, stride 2 -> 8x16x64x64 (FCN up1)")):
        x, w, b = rand(n, c_in, hw, hw), rand(c_in, c_out, k, k) * 0.05, rand(c_out)
        kw = dict(stride=stride, padding=padding)
        out.append(("conv_transpose2d", label, lambda x, w, b, kw=kw: sol.conv_transpose2d(x, w, b, **kw),
                    lambda x, w, b, kw=kw: F.conv_transpose2d(x, w, b, **kw), (x, w, b)))
    for shape, kw, label in (((8, 3, 128, 128), dict(scale_factor=2), "8x3x128x128, scale_factor 2 -> 256x256"),
                             ((8, 3, 128, 128), dict(size=(300, 400)), "8x3x128x128, size (300, 400)"),
                             ((8, 4, 64, 64), dict(size=(128, 128)), "8x4x64x64 -> 128x128 (FCN logits)")):
        x = rand(*shape)
        out.append(("bilinear_upsample", label, lambda x, kw=kw: sol.bilinear_upsample(x, **kw, align_corners=False),
                    lambda x, kw=kw: F.interpolate(x, **kw, mode="bilinear", align_corners=False), (x,)))
    return out


def op_part(sol, device: torch.device) -> tuple[list[dict], str]:
    rows, table = [], []
    threads = torch.get_num_threads()
    for op, workload, ours, theirs, inputs in tqdm(op_workloads(sol, device), desc=f"ops on {device.type}", leave=False):
        grad_out, out_diff, grad_diff = check_op_equal(op, workload, ours, theirs, inputs)  # same arguments, same outputs and gradients

        for mode, make in op_runners(inputs, grad_out).items():
            ta, tb = times_pair(make(ours), make(theirs), REPEATS, sync=lambda: _sync(device))
            ma, mb = statistics.median(ta), statistics.median(tb)
            rows.append({"part": "op_speed", "device": device.type, "threads": threads if device.type == "cpu" else None, "op": op,
                         "workload": workload, "mode": mode, "repeats": REPEATS, "solution_median_s": ma, "solution_min_s": min(ta),
                         "solution_max_s": max(ta), "torch_median_s": mb, "torch_min_s": min(tb), "torch_max_s": max(tb),
                         "ratio": ma / mb, "output_max_abs_diff": out_diff,
                         "grad_max_diff_relative_to_max_grad": grad_diff})
            table.append([op, workload, mode, f"{ma * 1e3:.2f}", f"{min(ta) * 1e3:.2f}–{max(ta) * 1e3:.2f}", f"{mb * 1e3:.2f}",
                          f"{min(tb) * 1e3:.2f}–{max(tb) * 1e3:.2f}", f"{ma / mb:.2f}x", f"{out_diff:.1e}", f"{grad_diff:.1e}"])
    where = f"CPU, {threads} thread(s)" if device.type == "cpu" else f"CUDA ({torch.cuda.get_device_name(device)})"
    text = (f"### a5 upsampling ops: solution vs PyTorch ({where}, float32)\n\n"
            f"Solution `conv_transpose2d` vs `F.conv_transpose2d` (with bias) and solution `bilinear_upsample` vs "
            f"`F.interpolate(mode=\"bilinear\", align_corners=False)` on the same arguments; outputs and input gradients checked "
            f"allclose in the same run (rtol 1e-4, atol 1e-5 x the largest magnitude; max |Δ| of the outputs; max |Δ| of the input gradients relative to their largest magnitude). Median and min–max of {REPEATS} repeats, the two "
            f"alternating; forward under `no_grad`, forward + backward with a fixed output gradient.\n\n"
            + markdown(["op", "workload", "mode", "solution median ms", "solution min–max ms", "torch median ms", "torch min–max ms",
                        "solution / torch", "output max |Δ|", "gradient max |Δ| / max |grad|"], table))
    return rows, text


def main() -> None:
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    sol = reference("a5_segmentation")
    parts = {}  # the quick op timings first (a failed equality check stops the run early), the tables in the brief's order
    parts["cpu ops"] = op_part(sol, torch.device("cpu"))
    print(parts["cpu ops"][1], flush=True)
    if torch.cuda.is_available():
        parts["cuda ops"] = op_part(sol, torch.device("cuda"))
    else:
        parts["cuda ops"] = ([{"part": "op_speed", "device": "cuda", "skipped": "no GPU available (torch.cuda.is_available() is False)"}],
                             "### a5 upsampling ops on a GPU\n\nNo GPU was available on this machine (`torch.cuda.is_available()` "
                             "is False): no CUDA timings.")
    print(parts["cuda ops"][1], flush=True)
    for name, part in (("fcn", fcn_part), ("mask", mask_part)):
        parts[name] = part(sol)
        print(parts[name][1], flush=True)
    wall = time.perf_counter() - start
    rows = [row for name in ("fcn", "mask", "cpu ops", "cuda ops") for row in parts[name][0]]
    rows.append({"part": "run", "wall_s": wall, "threads": THREADS, "quick": QUICK})
    texts = [parts[name][1] for name in ("fcn", "mask", "cpu ops", "cuda ops")]
    texts[-1] += f"\n\nWhole run: {wall / 60:.1f} minutes of wall time{' (BENCH_QUICK dry run)' if QUICK else ''}, {THREADS} thread(s)."
    save("segmentation", rows, "\n\n".join(texts))


if __name__ == "__main__":
    main()
