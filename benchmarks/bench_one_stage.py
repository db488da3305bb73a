"""Assignment a4 (single-stage detectors): the solution FCOS against torchvision's FCOS on EQUAL work, in one run.

Both detectors use the same backbone (``SmallBackbone`` + ``torchvision.ops.FeaturePyramidNetwork``, 64 channels,
strides 4, 8, 16), a head of 2 convolutions per tower (torchvision: ``FCOSHead(64, 1, C, num_convs=2)``), the
focal loss (alpha 0.25, gamma 2), GIoU and centerness losses divided by the number of positives, and a transform
that neither resizes (``min_size = max_size = 128``) nor normalizes differently ((x - 0.5) / 0.25). They start from
the SAME weights (the solution's initial weights copied into torchvision's modules) and race for the same CPU
time (``detector_race``: same batches, AdamW lr 3e-3, weight decay 1e-4, constant learning rate after a 30-step
warmup; the grader's recipe uses a one-cycle schedule), evaluated at each checkpoint (env ``BENCH_MINUTES``,
default ``2,5,8`` training minutes) with COCO AP50 and AP on 128 fixed validation images.

The remaining differences are torchvision's design, stated in the table: its locations are the corners
``(j s, i s)`` of the cells (the solution: centres), it assigns a location to a box only within 1.5 strides of the
box's centre ("center sampling") and with size ranges of 4-8 strides per level (the solution: the whole box, sizes
0-16 / 16-32 / 32+ px), its box deltas pass through a ReLU (the solution: exp), its GroupNorm has 32 groups
(the solution: 16), and its eval keeps scores above 0.2 (the solution: 0.05).

All of it runs with ``torch.set_num_threads(2)`` (env ``BENCH_THREADS``).

    .venv/bin/python benchmarks/bench_one_stage.py
    BENCH_MINUTES="0.1,0.2" BENCH_RESULTS=/tmp/bench .venv/bin/python benchmarks/bench_one_stage.py   # a dry run
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
from torchvision.models.detection import FCOS as TvFCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead as TvFCOSHead

from common import reference, save
from detector_race import IMAGE_SIZE, BackboneWithFPN, race, race_tables, race_workload
from lecture_utils.data import CLASSES

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
MINUTES = [float(m) for m in os.environ.get("BENCH_MINUTES", "2,5,8").split(",")]
LR, WEIGHT_DECAY, WARMUP = 3e-3, 1e-4, 30


def torchvision_model(sol) -> nn.Module:
    return TvFCOS(
        BackboneWithFPN(sol.SmallBackbone), num_classes=len(CLASSES),
        min_size=IMAGE_SIZE, max_size=IMAGE_SIZE, image_mean=[0.5] * 3, image_std=[0.25] * 3,
        anchor_generator=AnchorGenerator(sizes=tuple((s,) for s in sol.FCOS.strides), aspect_ratios=((1.0,),) * 3),
        head=TvFCOSHead(64, 1, len(CLASSES), num_convs=2), score_thresh=0.2, nms_thresh=0.6, detections_per_img=100, topk_candidates=1000,
    )


def solution_weights_for_torchvision(state: dict) -> dict:
    """The solution FCOS's state dict under the names of torchvision_model's modules."""
    renames = (("backbone.", "backbone.body."), ("fpn.", "backbone.fpn."),
               ("head.cls_tower.", "head.classification_head.conv."), ("head.reg_tower.", "head.regression_head.conv."),
               ("head.cls_logits.", "head.classification_head.cls_logits."), ("head.bbox_reg.", "head.regression_head.bbox_reg."),
               ("head.centerness.", "head.regression_head.bbox_ctrness."))
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def main() -> None:
    torch.set_num_threads(THREADS)
    sol = reference("a4_one_stage")
    torch.manual_seed(0)
    solution = sol.FCOS(len(CLASSES))
    theirs = torchvision_model(sol)
    theirs.load_state_dict(solution_weights_for_torchvision(solution.state_dict()), strict=True)
    state = race({"solution": solution, "torchvision": theirs}, MINUTES, LR, WEIGHT_DECAY, WARMUP)
    workload = race_workload(THREADS, LR, WEIGHT_DECAY, WARMUP)
    note = ("Not identical models: torchvision's FCOS puts locations at cell corners, samples positives within 1.5 strides of a box "
            "centre with size ranges of 4-8 strides, uses ReLU deltas, GroupNorm(32) and an eval score threshold of 0.2.")
    rows: list[dict] = []
    save("one_stage", rows, race_tables("FCOS (torchvision.models.detection.FCOS)", state, MINUTES, workload, note, rows))


if __name__ == "__main__":
    main()
