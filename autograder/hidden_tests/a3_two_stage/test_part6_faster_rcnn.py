"""Part 6: FasterRCNN assembled from the student's parts 1-5: the two modes' outputs, and the detector
trained by the grader's recipe in the worker, scored here (COCO AP50 with pycocotools) on images and
ground truth made in this trusted process."""
import pytest
import torch

from autograder.hidden_tests.a2_detection_basics.coco_reference import coco_reference
from autograder.client import RemoteObject
from autograder.testing import assert_remote_module, describe, fail
from lecture_utils.data import CLASSES, ShapesDataset

from .helpers import check_forbidden

LOSS_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def images_and_targets():
    """Two images of different, non-square sizes; the second has no objects."""
    first, target = ShapesDataset(1, (96, 128), seed=3, min_objects=2, max_objects=3)[0]
    second = torch.rand(3, 80, 72) * 0.2
    without_objects = {"boxes": torch.empty(0, 4), "labels": torch.empty(0, dtype=torch.int64)}
    return [first, second], [target, without_objects]


def build(student):
    torch.manual_seed(0)
    model = student.FasterRCNN(len(CLASSES))
    assert_remote_module(student, model, f"FasterRCNN({len(CLASSES)})")
    return model


@pytest.mark.part("faster_rcnn")
@pytest.mark.points(4)
def test_training_mode_returns_the_four_losses(student):
    """model.train(): forward(images of different sizes, targets incl. an image without objects) -> the four scalar losses, finite, whose sum reaches every parameter"""
    model = build(student)
    images, targets = images_and_targets()
    check_forbidden(student, model, "train", what="FasterRCNN.train")
    result = student.helper("losses_backward")(model, images, targets)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"FasterRCNN in training mode must return a dict of losses, got {describe(result)}")
    losses, unreached = result
    if not isinstance(losses, dict) or set(losses) != LOSS_KEYS:
        fail(f"FasterRCNN in training mode must return the dict {sorted(LOSS_KEYS)}, got {describe(losses)}")
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not bool(torch.isfinite(value).all()):
            fail(f"FasterRCNN loss {name} must be a finite scalar tensor, got {describe(value)}")
    if unreached:
        fail(f"the summed loss does not reach these parameters (their gradient is missing or zero): {', '.join(unreached[:8])}")
    watched = check_forbidden(student, model, "__call__", images, targets, what="FasterRCNN.forward")
    if not isinstance(watched, dict):
        fail(f"FasterRCNN in training mode must return a dict of losses, got {describe(watched)}")


@pytest.mark.part("faster_rcnn")
@pytest.mark.points(4)
def test_eval_mode_returns_detections(student):
    """model.eval(): one {boxes, scores, labels} per image, boxes inside their own image, labels int64 in 1..C-1, scores decreasing, at most 100; a Tensor batch works too"""
    model = build(student)
    images, _ = images_and_targets()
    model.eval()
    for batch, what in ((images, "a list of two images"), (torch.stack([images[0], images[0].flip(-1)]), "a Tensor[2, 3, 96, 128]")):
        out = check_forbidden(student, model, "__call__", batch, what="FasterRCNN.forward")
        if not isinstance(out, (list, tuple)) or len(out) != 2:
            fail(f"FasterRCNN in eval mode on {what} must return a list of 2 dicts, got {describe(out)}")
        for i, d in enumerate(out):
            if not isinstance(d, dict) or not {"boxes", "scores", "labels"} <= set(d):
                fail(f"detections for image {i} of {what}: expected a dict with boxes, scores, labels; got {describe(d)}")
            boxes, scores, labels = d["boxes"], d["scores"], d["labels"]
            n = len(scores) if isinstance(scores, torch.Tensor) else -1
            if not isinstance(boxes, torch.Tensor) or tuple(boxes.shape) != (n, 4) or not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,):
                fail(f"detections for image {i} of {what}: boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D]; got {describe(boxes)}, {describe(scores)}, {describe(labels)}")
            if labels.dtype != torch.int64 or (n and (int(labels.min()) < 1 or int(labels.max()) >= len(CLASSES))):
                fail(f"detections for image {i} of {what}: labels must be int64 classes 1..{len(CLASSES) - 1}, got {describe(labels)}")
            if n > 100 or (n > 1 and bool((scores[1:] > scores[:-1]).any())):
                fail(f"detections for image {i} of {what}: at most 100, sorted by decreasing score (got {n})")
            h, w = (images[i] if isinstance(batch, list) else batch[i]).shape[-2:]
            if n and (float(boxes[:, [0, 2]].min()) < 0 or float(boxes[:, [1, 3]].min()) < 0 or float(boxes[:, [0, 2]].max()) > w or float(boxes[:, [1, 3]].max()) > h):
                fail(f"detections for image {i} of {what}: boxes must lie inside the image ({h}x{w}), clipped to its own size")


# Evaluation data made here; its seed is not visible to the worker.
EVAL_SEED, EVAL_IMAGES = 60_013, 64
EVAL_SHAPES = dict(min_objects=1, max_objects=3)  # as in training
STEPS = 300
AP50_BAR, MIN_DROP = 0.45, 0.2


def detections_ok(detections, n_images):
    """The detections the worker returned, checked and converted; a malformed reply fails the test."""
    if not isinstance(detections, (list, tuple)) or len(detections) != n_images:
        fail(f"the training recipe got {describe(detections)} from your model, not {n_images} detection dicts")
    out = []
    for d in detections:
        if not isinstance(d, dict) or not all(isinstance(d.get(k), torch.Tensor) for k in ("boxes", "scores", "labels")):
            fail(f"detections must be dicts of tensors boxes, scores, labels; got {describe(d)}")
        boxes, scores, labels = d["boxes"].double(), d["scores"].double(), d["labels"]
        if boxes.shape != (len(scores), 4) or labels.shape != scores.shape or scores.ndim != 1 or labels.is_floating_point():
            fail(f"detections: boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D] of class ids; got {describe(d)}")
        keep = torch.where(torch.isfinite(boxes).all(1) & torch.isfinite(scores))[0]
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][:100]  # COCO's maxDets: the 100 best
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep].long()})
    return out


@pytest.fixture(scope="module")
def trained_ap50(student):
    """Train the student's FasterRCNN once (grader recipe, in the worker); AP50 here of the trained model and of
    the same model with its weights shuffled."""
    data = ShapesDataset(EVAL_IMAGES, 128, seed=EVAL_SEED, **EVAL_SHAPES)
    items = [data[i] for i in range(EVAL_IMAGES)]
    images = torch.stack([im for im, _ in items])
    targets = [t for _, t in items]
    helper = student.helper("train_faster_rcnn").get()
    if not isinstance(helper, RemoteObject):
        fail("the grader could not reach its training recipe")
    result = student.call_helper("train_faster_rcnn", student.FasterRCNN.get(), images, steps=STEPS, timeout=270).value
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"the training recipe got {describe(result)} from your model, not detections")
    trained, shuffled = (detections_ok(r, EVAL_IMAGES) for r in result)
    return coco_reference(trained, targets)["AP50"], coco_reference(shuffled, targets)["AP50"]


@pytest.mark.part("faster_rcnn")
@pytest.mark.points(12)
def test_trained_detector_reaches_ap50(trained_ap50):
    """trained by the grader's recipe (300 AdamW steps, 12 shapes images of 128x128 per step): COCO AP50 >= 0.45 on 64 new images, learned"""
    ap50, shuffled = trained_ap50
    if ap50 < AP50_BAR:
        fail(f"after training, COCO AP50 is {ap50:.3f} on {EVAL_IMAGES} validation images (need {AP50_BAR})")
    if shuffled > ap50 - MIN_DROP:
        fail(f"with its trained weights shuffled, your detector still reaches AP50 {shuffled:.3f} (trained: {ap50:.3f}): "
             "detections must come from the learned weights")
