"""Two detectors trained side by side for the same CPU time budget (benchmarks of a3 and a4).

The models start from the same weights where their modules correspond, see the same pre-rendered batches in
the same order and use the same optimizer (AdamW with a constant learning rate after a linear warmup: the
grader's one-cycle schedule needs the number of steps, unknown for a time budget). Their training steps
alternate, so machine noise hits both alike; each stops when its own training time reaches the last
checkpoint; at every checkpoint it is evaluated (COCO AP50 / AP with pycocotools via the grader's
``coco_reference``) on fixed validation images, evaluation time not counted.
"""
from __future__ import annotations

import copy
import sys
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn
import torchvision.ops as tv

from common import markdown

sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repo root, for autograder.hidden_tests
from autograder.hidden_tests.kit.coco_reference import coco_reference  # noqa: E402
from lecture_utils.data import ShapesDataset  # noqa: E402

IMAGE_SIZE, BATCH, TRAIN_IMAGES, VAL_IMAGES = 128, 12, 1536, 128
SHAPES = dict(min_objects=1, max_objects=3)
TRAIN_SEED, VAL_SEED = 100, 2
LEVELS = ("0", "1", "2")


class BackboneWithFPN(nn.Module):
    """SmallBackbone + torchvision's FeaturePyramidNetwork: images -> OrderedDict of the three 64-channel levels."""

    out_channels = 64

    def __init__(self, backbone_class):
        super().__init__()
        self.body = backbone_class()
        self.fpn = tv.FeaturePyramidNetwork(list(backbone_class.out_channels), self.out_channels)

    def forward(self, x):
        return self.fpn(OrderedDict(zip(LEVELS, self.body(x))))


def render(n: int, seed: int):
    data = ShapesDataset(n, IMAGE_SIZE, seed=seed, **SHAPES)
    return [data[i] for i in range(n)]


def detect(model, images, batch_size: int = 16):
    model.eval()
    detections = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = model(images[start:start + batch_size])
            detections.extend({k: d[k].detach() for k in ("boxes", "scores", "labels")} for d in out)
    model.train()
    return detections


def race(models: dict, minutes: list[float], lr: float, weight_decay: float, warmup: int) -> dict:
    """Train each of ``models`` ({name: model}) for ``minutes`` of its own training time, steps alternating;
    returns {name: {"steps", "train_s", "results": [{minutes, steps, train_s, AP50, AP, last_loss}]}}."""
    items = render(TRAIN_IMAGES, TRAIN_SEED)
    batches = [([im for im, _ in items[s:s + BATCH]], [t for _, t in items[s:s + BATCH]]) for s in range(0, TRAIN_IMAGES, BATCH)]
    val = render(VAL_IMAGES, VAL_SEED)
    val_images, val_targets = [im for im, _ in val], [t for _, t in val]
    state = {}
    for name, model in models.items():
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, 1 / 25 + (1 - 1 / 25) * s / warmup))
        model.train()
        state[name] = {"optimizer": optimizer, "schedule": schedule, "steps": 0, "train_s": 0.0, "checkpoint": 0, "results": []}
    for model in models.values():  # warm-up (one-time costs out of the budget), then back to the initial weights
        saved = copy.deepcopy(model.state_dict())
        sum(model(*batches[0]).values()).backward()
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    budgets = [m * 60 for m in minutes]
    torch.manual_seed(0)
    while any(s["checkpoint"] < len(budgets) for s in state.values()):
        for name, model in models.items():  # one step of each model in turn
            s = state[name]
            if s["checkpoint"] >= len(budgets):
                continue
            images, targets = batches[s["steps"] % len(batches)]
            start = time.perf_counter()
            losses = model(images, targets)
            loss = sum(losses.values())
            s["optimizer"].zero_grad()
            loss.backward()
            s["optimizer"].step()
            s["schedule"].step()
            s["train_s"] += time.perf_counter() - start
            s["steps"] += 1
            while s["checkpoint"] < len(budgets) and s["train_s"] >= budgets[s["checkpoint"]]:
                metrics = coco_reference(detect(model, val_images), val_targets)
                s["results"].append({"minutes": minutes[s["checkpoint"]], "steps": s["steps"], "train_s": s["train_s"],
                                     "AP50": metrics["AP50"], "AP": metrics["AP"], "last_loss": float(loss.detach())})
                print(f"{name}: {minutes[s['checkpoint']]} min, {s['steps']} steps, AP50 {metrics['AP50']:.3f}, AP {metrics['AP']:.3f}", flush=True)
                s["checkpoint"] += 1
    return state


def race_workload(threads: int, lr: float, weight_decay: float, warmup: int) -> str:
    """The race's workload, stated under its tables."""
    return (f"{IMAGE_SIZE}x{IMAGE_SIZE} shapes images (1-3 objects), batch {BATCH}, CPU, {threads} threads, same initial weights, "
            f"same batches, AdamW lr {lr:g} wd {weight_decay:g} with a constant learning rate after a {warmup}-step linear warmup "
            f"(not the grader's one-cycle schedule)")


def race_tables(title: str, state: dict, minutes: list[float], workload: str, note: str, rows: list[dict]) -> str:
    """Markdown: AP50 / AP per checkpoint and step times of the race ``state`` (solution vs torchvision); appends to ``rows``."""
    table = []
    for k, m in enumerate(minutes):
        a, b = state["solution"]["results"][k], state["torchvision"]["results"][k]
        rows.append({"part": "training_checkpoint", "minutes": m, "solution": a, "torchvision": b})
        table.append([f"{m:g}", a["steps"], f"{a['AP50']:.3f}", f"{a['AP']:.3f}", b["steps"], f"{b['AP50']:.3f}", f"{b['AP']:.3f}"])
    step_s = {name: s["train_s"] / s["steps"] for name, s in state.items()}
    rows.append({"part": "training_step_time", "solution_s_per_step": step_s["solution"], "torchvision_s_per_step": step_s["torchvision"],
                 "ratio": step_s["solution"] / step_s["torchvision"],
                 "steps": {name: s["steps"] for name, s in state.items()}, "train_s": {name: s["train_s"] for name, s in state.items()}})
    checkpoints = (f"### {title} training for a time budget: solution vs torchvision\n\n"
                   f"{workload}; steps of the two models alternate; COCO AP50 / AP (pycocotools) on {VAL_IMAGES} fixed validation "
                   f"images at each checkpoint of training time (evaluation not counted). {note}\n\n"
                   + markdown(["training minutes", "solution steps", "solution AP50", "solution AP",
                               "torchvision steps", "torchvision AP50", "torchvision AP"], table))
    speed = (f"### {title} training step time ({workload})\n\n"
             + markdown(["model", "steps", "training s", "s / step"],
                        [[name, s["steps"], f"{s['train_s']:.1f}", f"{step_s[name]:.3f}"] for name, s in state.items()]
                        + [["solution / torchvision", "", "", f"{step_s['solution'] / step_s['torchvision']:.2f}x"]]))
    return checkpoints + "\n\n" + speed
