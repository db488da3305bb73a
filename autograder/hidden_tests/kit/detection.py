"""The detectors' trained and structure tests (a3, a4), trusted side: evaluation images and ground truth are made
here, the worker trains the student's model (worker_support/detectors.py ``train_detector``) and returns
detections on the images only; the detections are checked, and COCO AP50 is computed here with pycocotools."""
import torch

from autograder.client import RemoteObject
from autograder.hidden_tests.kit import counterfactual
from autograder.hidden_tests.kit.checks import build_model
from autograder.hidden_tests.kit.coco_reference import coco_reference
from autograder.hidden_tests.kit.controls import state_ok, with_controls
from autograder.hidden_tests.kit.pictures import Trained, detection_picture, picture_set, split_reply
from autograder.testing import describe, fail
from lecture_utils.data import CLASSES, ShapesDataset


def evaluation_set(seed: int, n_images: int, image_size: int = 128, **shapes):
    """(images Tensor[N, 3, H, W], targets) rendered here with a seed the worker never sees."""
    data = ShapesDataset(n_images, image_size, seed=seed, **shapes)
    items = [data[i] for i in range(n_images)]
    return torch.stack([im for im, _ in items]), [t for _, t in items]


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


def images_and_targets():
    """The structure tests' batch: two images of different, non-square sizes; the second has no objects."""
    first, target = ShapesDataset(1, (96, 128), seed=3, min_objects=2, max_objects=3)[0]
    second = torch.rand(3, 80, 72) * 0.2
    without_objects = {"boxes": torch.empty(0, 4), "labels": torch.empty(0, dtype=torch.int64)}
    return [first, second], [target, without_objects]


def check_training_mode(student, class_name: str, loss_keys: set, watched_call) -> None:
    """The detector's training-mode test: two images of different sizes (one without objects) -> the dict
    ``loss_keys`` of finite scalar losses whose sum reaches every parameter."""
    images, targets = images_and_targets()
    assert_training_losses(student, build_model(student, class_name), images, targets, loss_keys, class_name, watched_call)


def check_eval_mode(student, class_name: str, watched_call) -> None:
    """The detector's eval-mode test: detection dicts for a list of two images and for a Tensor batch."""
    model = build_model(student, class_name)
    images, _ = images_and_targets()
    model.eval()
    for batch, what in ((images, "a list of two images"), (torch.stack([images[0], images[0].flip(-1)]), "a Tensor[2, 3, 96, 128]")):
        out = watched_call(model, "__call__", batch, what=f"{class_name}.forward")
        assert_detection_dicts(out, [tuple(im.shape[-2:]) for im in batch], f"{class_name} in eval mode on {what}", len(CLASSES))


def assert_training_losses(student, model, images, targets, loss_keys: set, what: str, watched_call) -> None:
    """Training mode: ``model(images, targets)`` returns the dict ``loss_keys`` of finite scalars whose sum reaches
    every parameter. ``watched_call(target, method, *args, what=...)`` runs a call watched for forbidden models."""
    watched_call(model, "train", what=f"{what}.train")
    result = student.helper("losses_backward")(model, images, targets)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"{what} in training mode must return a dict of losses, got {describe(result)}")
    losses, unreached = result
    if not isinstance(losses, dict) or set(losses) != set(loss_keys):
        fail(f"{what} in training mode must return the dict {sorted(loss_keys)}, got {describe(losses)}")
    for name, value in losses.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1 or not bool(torch.isfinite(value).all()):
            fail(f"{what} loss {name} must be a finite scalar tensor, got {describe(value)}")
    if unreached:
        fail(f"the summed loss does not reach these parameters (their gradient is missing or zero): {', '.join(unreached[:8])}")
    if not isinstance(watched_call(model, "__call__", images, targets, what=f"{what}.forward"), dict):
        fail(f"{what} in training mode must return a dict of losses")


def assert_detection_dicts(out, sizes, what: str, num_classes: int) -> None:
    """Eval-mode output: one {boxes, scores, labels} per image of ``sizes`` [(H, W)], boxes inside their own
    image, labels int64 in 1..num_classes-1, scores decreasing, at most 100."""
    if not isinstance(out, (list, tuple)) or len(out) != len(sizes):
        fail(f"{what} must return a list of {len(sizes)} dicts, got {describe(out)}")
    for i, (d, (h, w)) in enumerate(zip(out, sizes)):
        if not isinstance(d, dict) or not {"boxes", "scores", "labels"} <= set(d):
            fail(f"{what}, image {i}: expected a dict with boxes, scores, labels; got {describe(d)}")
        boxes, scores, labels = d["boxes"], d["scores"], d["labels"]
        n = len(scores) if isinstance(scores, torch.Tensor) and scores.ndim == 1 else -1
        if not isinstance(boxes, torch.Tensor) or tuple(boxes.shape) != (n, 4) or not isinstance(labels, torch.Tensor) or tuple(labels.shape) != (n,):
            fail(f"{what}, image {i}: boxes Tensor[D, 4], scores Tensor[D], labels Tensor[D]; got {describe(boxes)}, {describe(scores)}, {describe(labels)}")
        if labels.dtype != torch.int64 or (n and (int(labels.min()) < 1 or int(labels.max()) >= num_classes)):
            fail(f"{what}, image {i}: labels must be int64 classes 1..{num_classes - 1}, got {describe(labels)}")
        if n > 100 or (n > 1 and bool((scores[1:] > scores[:-1]).any())):
            fail(f"{what}, image {i}: at most 100 detections, sorted by decreasing score (got {n})")
        if n and (float(boxes[:, [0, 2]].min()) < 0 or float(boxes[:, [1, 3]].min()) < 0 or float(boxes[:, [0, 2]].max()) > w or float(boxes[:, [1, 3]].max()) > h):
            fail(f"{what}, image {i}: boxes must lie inside the image ({h}x{w}), clipped to its own size")


TRAINING_IMAGES = 1536  # the recipe's training set (the size the solutions' notebooks train on)


def trained_ap50(student, model_class: str, *, set_name: str, steps: int, lr: float, eval_seed: int, eval_images: int = 64,
                 image_size: int = 128, shapes: dict | None = None, timeout: float = 270) -> Trained:
    """Train ``student.<model_class>`` by the recipe in the worker on training data rendered here whose classes are
    renamed by a secret permutation (``counterfactual``); AP50 against the same renaming of the trained model, of the
    same model with its weights shuffled, and with its weights before training, on ``eval_images`` images rendered here
    with a seed the worker never sees; the trained model's AP50 against the true classes (``judge`` compares the two);
    and the picture of the trained model on the ``kit.pictures`` images (sent after the evaluation images in the same
    call, not scored)."""
    shapes = shapes or dict(min_objects=1, max_objects=3)
    lut = counterfactual.renaming(set_name, student.submission_digest)
    images, true_targets = evaluation_set(eval_seed, eval_images, image_size, **shapes)
    targets = counterfactual.renamed(true_targets, lut)
    picture_images, picture_targets = picture_set(set_name, image_size, **shapes)
    train_images, train_targets = counterfactual.training_set(set_name, TRAINING_IMAGES, image_size, **shapes)
    if not isinstance(student.helper("train_detector").get(), RemoteObject):
        fail("the grader could not reach its training recipe")
    result = student.call_helper("train_detector", student.__getattr__(model_class).get(), train_images,
                                 counterfactual.renamed(train_targets, lut), steps=steps, lr=lr, timeout=timeout).value
    if not isinstance(result, (tuple, list)) or len(result) != 3 or not isinstance(result[0], RemoteObject):
        fail(f"the training recipe got {describe(result)} from your model, not a trained model")
    model, trained, initial = result[0], state_ok(result[1], model_class), state_ok(result[2], model_class)
    sent = torch.cat([images, picture_images])
    replies = with_controls(lambda states: student.call_helper("detect_with_states", model, sent, states, timeout=120).value,
                            trained, initial, shuffles=1)
    (trained, pictures), (shuffled, _), (initial, _) = (split_reply(r, eval_images, "detection dicts") for r in (replies[0], *replies[1], replies[2]))
    checked = [detections_ok(r, eval_images) for r in (trained, shuffled, initial)]
    scores = tuple(coco_reference(detections, targets)["AP50"] for detections in checked)
    true_classes = coco_reference(checked[0], true_targets)["AP50"]
    figure = detection_picture(picture_images, [{k: t[k] for k in ("boxes", "labels")} for t in counterfactual.renamed(picture_targets, lut)],
                               pictures, lut, "your trained detector")
    return Trained(scores, figure, true_classes)

