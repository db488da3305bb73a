"""Part 3: mean_iou against an independent reference; FCN's outputs and modes; the FCN trained by the grader's
recipe in the worker, its mIoU computed here on images and semantic maps made in this trusted process."""
import math

import pytest
import torch

from autograder.hidden_tests.kit.controls import judge
from autograder.secret import evaluation_seed
from autograder.testing import assert_inputs_unchanged, assert_remote_module, describe, fail
from lecture_utils.data import CLASSES

from .evaluation import trained_miou
from .helpers import call


def reference_miou(pred, target, num_classes, ignore_index=255):
    """Per class, as sets of pixels (not a confusion matrix): the mean IoU over classes present in pred or target."""
    pred, target = pred.reshape(-1), target.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    ious = []
    for c in range(num_classes):
        union = int(((pred == c) | (target == c)).sum())
        if union:
            ious.append(int(((pred == c) & (target == c)).sum()) / union)
    return sum(ious) / len(ious) if ious else math.nan


def check_miou(got, want, what):
    if not isinstance(got, torch.Tensor) or got.ndim != 0 or got.dtype != torch.float64:
        fail(f"{what}: expected a 0-dimensional float64 tensor, got {describe(got)}")
    value = float(got)
    if math.isnan(want):
        if not math.isnan(value):
            fail(f"{what}: no class is present, the mIoU is undefined (nan); got {value}")
    elif not abs(value - want) <= 1e-9:
        fail(f"{what}: expected {want:.6f}, got {value:.6f}")


@pytest.mark.part("fcn")
@pytest.mark.points(4)
def test_mean_iou_matches_reference(student):
    """== the per-class IoU averaged over classes present in prediction or target, on random maps of [H, W] and [N, H, W], int64 and uint8, several class counts"""
    g = torch.Generator().manual_seed(0)
    for num_classes, shape, dtype in ((4, (37, 50), torch.int64), (6, (3, 20, 30), torch.int64), (3, (2, 9, 7), torch.uint8), (21, (2, 16, 24), torch.int64),
                                      (20, (2, 12, 16), torch.uint8)):  # uint8 maps of many classes: no overflow in the arithmetic
        target = torch.randint(0, num_classes, shape, generator=g)
        pred = torch.where(torch.rand(shape, generator=g) < 0.6, target, torch.randint(0, num_classes, shape, generator=g))
        if num_classes == 21:  # most classes absent
            target, pred = target % 5, pred % 4
        what = f"mean_iou(pred Tensor{list(shape)}, target, num_classes={num_classes})"
        check_miou(call(student, "mean_iou", pred.to(dtype), target.to(dtype), num_classes), reference_miou(pred, target, num_classes), what)
    perfect = torch.randint(0, 4, (10, 12), generator=g)
    check_miou(call(student, "mean_iou", perfect, perfect.clone(), 4), 1.0, "mean_iou of a perfect prediction")


@pytest.mark.part("fcn")
@pytest.mark.points(3)
def test_mean_iou_absent_classes_and_ignore_index(student):
    """absent classes left out (not 0, not 1); target == ignore_index pixels left out whatever their prediction; ignore_index=None and other values; no pixels -> nan; pred and target left unchanged"""
    pred = torch.tensor([[1, 1, 0], [0, 2, 2]])
    target = torch.tensor([[1, 2, 0], [255, 2, 0]])
    check_miou(call(student, "mean_iou", pred, target, 4), (0.5 + 0.5 + 1 / 3) / 3, "mean_iou with class 3 absent from both maps and one ignored pixel")
    check_miou(call(student, "mean_iou", pred, target.clamp(max=3), 4, None), reference_miou(pred, target.clamp(max=3), 4, None),
               "mean_iou(..., ignore_index=None): every pixel counts")
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (2, 14, 18), generator=g)
    pred = torch.randint(0, 5, (2, 14, 18), generator=g)
    for ignore in (4, 0):
        check_miou(call(student, "mean_iou", pred, target, 5, ignore), reference_miou(pred, target, 5, ignore), f"mean_iou(..., ignore_index={ignore})")
    masked = target.clone()
    masked[:, :7] = 255
    check_miou(call(student, "mean_iou", pred, masked, 5), reference_miou(pred, masked, 5), "mean_iou with half of the pixels ignored")
    check_miou(call(student, "mean_iou", pred, torch.full_like(target, 255), 5), math.nan, "mean_iou with every pixel ignored")
    only_background = torch.zeros(6, 6, dtype=torch.int64)
    check_miou(call(student, "mean_iou", only_background, only_background, 4), 1.0, "mean_iou when only class 0 is present (in both)")
    assert_inputs_unchanged(student, "mean_iou", [pred, masked, 5], "mean_iou with half of the pixels ignored")


def build(student):
    torch.manual_seed(0)
    model = student.FCN(len(CLASSES))
    assert_remote_module(student, model, f"FCN({len(CLASSES)})")
    return model


@pytest.mark.part("fcn")
@pytest.mark.points(1)
def test_fcn_outputs_and_modes(student):
    """logits Tensor[B, 4, H, W] for non-square sizes (multiples of 16) in train and eval mode; in eval mode an image's output does not depend on the batch"""
    model = build(student)
    g = torch.Generator().manual_seed(2)
    for size in ((96, 128), (64, 48)):
        images = torch.rand(3, 3, *size, generator=g)
        for mode in ("train", "eval"):
            model.call_method(mode)
            out = model.call_method("__call__", images).value
            if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, len(CLASSES), *size) or not out.is_floating_point():
                fail(f"FCN in {mode} mode on Tensor[3, 3, {size[0]}, {size[1]}] must return logits Tensor[3, {len(CLASSES)}, {size[0]}, {size[1]}], got {describe(out)}")
            if not bool(torch.isfinite(out).all()):
                fail(f"FCN in {mode} mode returned values that are not finite")
        alone = model.call_method("__call__", images[:1]).value
        if not torch.allclose(alone, out[:1], rtol=1e-4, atol=1e-4):
            fail("FCN in eval mode: an image's logits change with the other images of the batch (BatchNorm must use its running statistics in eval mode)")


# Evaluation data made here; its seed comes from the course secret (autograder.secret) and is never sent to the worker.
# A 62-bit seed: the renderer is public, so a small seed could be found by rendering candidates until one
# matches an evaluation image (and with it the ground truth).
EVAL_SET, EVAL_IMAGES = "a5_segmentation/fcn", 48  # its seed: evaluation_seed(EVAL_SET), from the course secret
STEPS, LR = 500, 3e-3
MIOU_BAR, MIN_DROP = 0.65, 0.2


@pytest.fixture(scope="module")
def trained(student):
    """Train the student's FCN once (grader recipe, in the worker); mIoU here of its predictions and of the same model with its weights shuffled,
    and the picture of its class maps."""
    return trained_miou(student, set_name=EVAL_SET, steps=STEPS, lr=LR, eval_seed=evaluation_seed(EVAL_SET), eval_images=EVAL_IMAGES)


@pytest.mark.part("fcn")
@pytest.mark.points(12)
def test_trained_fcn_reaches_miou(trained, record_property):
    """trained by the grader's recipe (500 AdamW steps, 8 shapes images of 128x128 per step): mIoU >= 0.65 on 48 new images (4 classes), learned"""
    judge(record_property, trained.scores, trained.figure, metric="mIoU", bar=MIOU_BAR, min_drop=MIN_DROP, n_images=EVAL_IMAGES, what="FCN")
