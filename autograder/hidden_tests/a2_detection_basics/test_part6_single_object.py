"""Part 6: sliding_window_count, single_object_loss, SingleObjectDetector."""
import pytest
import torch
import torch.nn.functional as F
import torchvision.ops as tv

from autograder.client import RemoteObject
from autograder.feedback_figures import PICTURE_IMAGES
from autograder.hidden_tests.kit import counterfactual
from autograder.hidden_tests.kit.controls import judge, state_ok, with_controls
from autograder.hidden_tests.kit.pictures import detection_picture, picture_set
from lecture_utils.data import ShapesDataset
from autograder.secret import evaluation_seed
from autograder.testing import assert_tensor, describe, fail

SHAPES = dict(min_objects=1, max_objects=1, min_size=0.25, max_size=0.4)


@pytest.mark.part("single_object")
@pytest.mark.points(3)
def test_sliding_window_count(student):
    """(W - w + 1)(H - h + 1) positions for one size; H(H+1)/2 * W(W+1)/2 for all sizes"""
    cases = {(4, 5, None, None): 150, (4, 5, 2, 3): 9, (600, 800, None, None): 180300 * 320400, (10, 10, 10, 10): 1,
             (10, 10, 11, 3): 0, (7, 3, 1, 1): 21, (1, 1, None, None): 1, (224, 300, 64, 32): 161 * 269}
    for (H, W, h, w), expected in cases.items():
        got = student.sliding_window_count(H, W) if h is None else student.sliding_window_count(H, W, h, w)
        if not isinstance(got, int) or got != expected:
            fail(f"sliding_window_count({H}, {W}" + ("" if h is None else f", {h}, {w}") + f") = {got!r}, expected {expected}")


@pytest.mark.part("single_object")
@pytest.mark.points(3)
def test_single_object_loss(student):
    """cross-entropy + lam * mean squared error, and its gradients"""
    g = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.rand(6, 4, generator=g, dtype=torch.float64)
    labels, targets = torch.randint(1, 4, (6,), generator=g), torch.rand(6, 4, generator=g, dtype=torch.float64)
    for lam in (1.0, 0.3, 5.0):
        expected = F.cross_entropy(logits, labels) + lam * F.mse_loss(boxes, targets)
        got = student.single_object_loss(logits, boxes, labels, targets, lam)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.reshape(())
        assert_tensor(got, expected, f"single_object_loss with lam={lam}", rtol=1e-9, atol=1e-12)
    default = student.single_object_loss(logits, boxes, labels, targets)
    assert_tensor(default.reshape(()) if isinstance(default, torch.Tensor) else default, F.cross_entropy(logits, labels) + F.mse_loss(boxes, targets), "single_object_loss with the default lam", rtol=1e-9, atol=1e-12)
    out, grads = student.helper("vjp")(student.single_object_loss.get(), [logits, boxes, labels, targets], torch.tensor(1.0, dtype=torch.float64), [True, True, False, False])
    l2, b2 = logits.clone().requires_grad_(), boxes.clone().requires_grad_()
    (F.cross_entropy(l2, labels) + F.mse_loss(b2, targets)).backward()
    assert_tensor(grads[0], l2.grad, "gradient of the loss w.r.t. the class scores", rtol=1e-9, atol=1e-12)
    assert_tensor(grads[1], b2.grad, "gradient of the loss w.r.t. the boxes", rtol=1e-9, atol=1e-12)


@pytest.mark.part("single_object")
@pytest.mark.points(1)
def test_detector_outputs(student):
    """SingleObjectDetector(num_classes) maps images to (Tensor[B, num_classes + 1], Tensor[B, 4] in [0, 1])"""
    model = student.SingleObjectDetector(5)
    if not isinstance(model, RemoteObject) or not student.helper("is_instance")(model, "torch.nn.Module"):
        fail(f"SingleObjectDetector(5) must be an nn.Module, got {describe(model)}")
    model.eval()
    out = model(torch.rand(3, 3, 64, 96))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(f"the model must return (class_logits, boxes), got {describe(out)}")
    logits, boxes = out
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (3, 6):
        fail(f"class_logits for 5 classes and a batch of 3 should be Tensor[3, 6] (background first), got {describe(logits)}")
    if not isinstance(boxes, torch.Tensor) or tuple(boxes.shape) != (3, 4) or float(boxes.min()) < 0 or float(boxes.max()) > 1:
        fail(f"boxes should be Tensor[3, 4] with values in [0, 1], got {describe(boxes)}")


# Evaluation data made here, in the trusted process; its seed comes from the course secret (autograder.secret) and is never sent to the worker.
# A 62-bit seed: the renderer is public, so a small seed could be found by rendering candidates until one
# matches an evaluation image (and with it the ground truth).
EVAL_SET, EVAL_IMAGES = "a2_detection_basics/single_object", 128  # its seed: evaluation_seed(EVAL_SET), from the course secret
ACCURACY_BAR, IOU_BAR, MIN_DROP = 0.6, 0.55, 0.15
TRAINING_IMAGES = 2048


@pytest.fixture(scope="module")
def trained_single_object(student):
    """Train the student's detector once (grader recipe, in the worker) on training data rendered here whose classes
    are renamed by a secret permutation and whose boxes are moved by a secret shift and scale (``counterfactual``),
    and score it here against the same renaming and move.

    Returns {"trained" | "shuffled" | "initial": (accuracy, mean IoU)}: the trained weights, the same model with its
    trained weights shuffled here, and with its weights before training (both must score clearly worse: a detector
    that does not learn gets no points); the three go to the worker in a secret order. And {"figure": the picture of
    the trained model on the kit.pictures images, sent after the evaluation images, not scored}."""
    lut = counterfactual.renaming(EVAL_SET, student.submission_digest)
    move = counterfactual.box_move(EVAL_SET, student.submission_digest)
    data = ShapesDataset(EVAL_IMAGES, 64, seed=evaluation_seed(EVAL_SET), **SHAPES)
    items = [data[i] for i in range(EVAL_IMAGES)]
    images = torch.stack([im for im, _ in items])
    labels = lut[torch.stack([t["labels"][0] for _, t in items])]
    boxes = counterfactual.moved_boxes(torch.stack([t["boxes"][0] for _, t in items]), move, 64)
    train_images, train_targets = counterfactual.training_set(EVAL_SET, TRAINING_IMAGES, 64, **SHAPES)
    train_labels = lut[torch.stack([t["labels"][0] for t in train_targets])]
    train_boxes = counterfactual.moved_boxes(torch.stack([t["boxes"][0] for t in train_targets]), move, 64)
    result = student.call_helper("train_single_object", student.SingleObjectDetector.get(), train_images, train_labels, train_boxes,
                                 timeout=240).value
    if not isinstance(result, (tuple, list)) or len(result) != 3 or not isinstance(result[0], RemoteObject):
        fail(f"the training recipe got {describe(result)} from your model, not a trained model")
    model, trained, initial = result[0], state_ok(result[1], "SingleObjectDetector"), state_ok(result[2], "SingleObjectDetector")
    picture_images, picture_targets = picture_set(EVAL_SET, 64, **SHAPES)
    sent = torch.cat([images, picture_images])
    outputs = with_controls(lambda states: student.call_helper("predict_with_states", model, sent, states, timeout=120).value,
                            trained, initial, shuffles=1)
    (trained, pictures), (shuffled, _), (initial, _) = (_split(out) for out in (outputs[0], *outputs[1], outputs[2]))
    scores = {kind: score(*out, labels, boxes) for kind, out in (("trained", trained), ("shuffled", shuffled), ("initial", initial))}
    shown = [{"boxes": pictures[1][i:i + 1], "labels": pictures[0][i:i + 1]} for i in range(PICTURE_IMAGES)]
    truths = [{"boxes": counterfactual.moved_boxes(t["boxes"], move, 64), "labels": t["labels"]} for t in counterfactual.renamed(picture_targets, lut)]
    figure = detection_picture(picture_images, truths, shown, lut, "your trained SingleObjectDetector (class and box)", score_threshold=None,
                               note="The true boxes are moved as the grader moved your training boxes (a secret shift and scale).")
    return {**scores, "figure": figure}


def _pair(out):
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        fail(f"the grader got {describe(out)} from your model, not (classes, boxes)")
    return out


def _split(out):
    """((classes, boxes) of the evaluation images, (classes, boxes) of the pictures' images): ``out`` must hold one
    prediction per image sent (the evaluation images, then the pictures')."""
    classes, boxes = _pair(out)
    sent = EVAL_IMAGES + PICTURE_IMAGES
    if not isinstance(classes, torch.Tensor) or classes.ndim != 1 or len(classes) != sent:
        fail(f"class predictions should be Tensor[{sent}] of class ids (one per image sent), got {describe(classes)}")
    if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or len(boxes) != sent:
        fail(f"box predictions should be Tensor[{sent}, 4] (one per image sent), got {describe(boxes)}")
    return (classes[:EVAL_IMAGES], boxes[:EVAL_IMAGES]), (classes[EVAL_IMAGES:], boxes[EVAL_IMAGES:])


def score(pred_classes, pred_boxes, labels, boxes) -> tuple[float, float]:
    """(accuracy, mean IoU) of predictions against the trusted ground truth; NaN/inf scores 0."""
    n = len(labels)
    if not isinstance(pred_classes, torch.Tensor) or tuple(pred_classes.shape) != (n,) or pred_classes.is_floating_point():
        fail(f"class predictions should be Tensor[{n}] of class ids, got {describe(pred_classes)}")
    if not isinstance(pred_boxes, torch.Tensor) or tuple(pred_boxes.shape) != (n, 4):
        fail(f"box predictions should be Tensor[{n}, 4], got {describe(pred_boxes)}")
    accuracy = float((pred_classes == labels).double().mean())
    finite = torch.isfinite(pred_boxes).all(1)
    iou = torch.diag(tv.box_iou(pred_boxes.double(), boxes.double())).nan_to_num(0.0)
    return accuracy, float(torch.where(finite, iou, torch.zeros_like(iou)).mean())


@pytest.mark.part("single_object")
@pytest.mark.points(2)
def test_detector_learns_to_classify(trained_single_object, record_property):
    """trained by the grader's recipe (400 Adam steps, one-object 64x64 shapes, classes renamed): accuracy >= 0.6 on 128 new images, learned"""
    scores = tuple(trained_single_object[k][0] for k in ("trained", "shuffled", "initial"))
    judge(record_property, scores, trained_single_object["figure"], metric="classification accuracy", bar=ACCURACY_BAR, min_drop=MIN_DROP,
          n_images=EVAL_IMAGES, what="model's classification", digits=2)


@pytest.mark.part("single_object")
@pytest.mark.points(2)
def test_detector_learns_to_localize(trained_single_object, record_property):
    """trained by the grader's recipe (boxes moved by a secret shift and scale): mean box IoU >= 0.55 on 128 new images, learned"""
    scores = tuple(trained_single_object[k][1] for k in ("trained", "shuffled", "initial"))
    judge(record_property, scores, trained_single_object["figure"], metric="mean box IoU", bar=IOU_BAR, min_drop=MIN_DROP, n_images=EVAL_IMAGES,
          what="model's boxes", digits=2)
