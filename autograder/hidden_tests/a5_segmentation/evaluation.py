"""The trained tests of a5, trusted side: evaluation images and ground truth are made here, the worker trains the
student's model; predictions are checked here, and the mIoU (an independent confusion matrix) and COCO mask AP50
(pycocotools ``segm``) are computed here.

The FCN gets the evaluation images (its input). Mask R-CNN's box part (torchvision's modules) is run here with the
weights the worker trained; the student's mask head gets only the RoI features of the detections, and its mask
logits are pasted here with torchvision's ``paste_masks_in_image``: the worker never sees an evaluation image, so
masks can only come from what the head learned (not from pixel colours found on the call stack).

Each also returns the picture of the trained model on the ``kit.pictures`` images: sent with the evaluation images in
the same call (the FCN's input; Mask R-CNN's box part here, their RoI features to the head), never scored."""
import contextlib
import io

import numpy as np
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torchvision.models.detection.transform import paste_masks_in_image

from autograder.client import RemoteObject
from autograder.hidden_tests.kit import counterfactual
from autograder.hidden_tests.kit.controls import state_ok, with_controls
from autograder.hidden_tests.kit.detection import evaluation_set
from autograder.hidden_tests.kit.pictures import PICTURE_IMAGES, Trained, detection_picture, picture_set, segmentation_picture
from autograder.testing import describe, fail
from lecture_utils.data import CLASSES

from .support import build_mask_rcnn


def confusion_miou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Dataset-level mIoU over the classes present in prediction or target."""
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (target.reshape(-1).numpy(), pred.reshape(-1).numpy()), 1)
    intersection = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    return float((intersection[present] / union[present]).mean()) if present.any() else float("nan")


def class_maps_ok(maps, shape) -> torch.Tensor:
    """The worker's predicted class maps, checked: Tensor[N, H, W] of class ids 0..C-1."""
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != tuple(shape) or maps.is_floating_point() or maps.is_complex():
        fail(f"the training recipe got {describe(maps)} from your FCN's argmax, not class maps Tensor{list(shape)}: "
             f"FCN must return logits Tensor[B, {len(CLASSES)}, H, W]")
    maps = maps.long()
    if len(maps) and (int(maps.min()) < 0 or int(maps.max()) >= len(CLASSES)):
        fail(f"predicted classes must lie in 0..{len(CLASSES) - 1}")
    return maps


TRAINING_IMAGES = 512  # the FCN recipe's training set


def scored_maps(maps, shape) -> torch.Tensor:
    """The scored part of the worker's class maps: ``maps`` must be the maps of every image sent (``shape[0]`` scored,
    then ``PICTURE_IMAGES`` for the picture); the first ``shape[0]``, checked by ``class_maps_ok``."""
    sent = (shape[0] + PICTURE_IMAGES, *shape[1:])
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != sent:
        class_maps_ok(maps, sent)  # fails, saying what was expected
    return class_maps_ok(maps[:shape[0]], shape)


def trained_miou(student, *, set_name: str, steps: int, lr: float, eval_seed: int, eval_images: int, timeout: float = 200) -> Trained:
    """Train ``student.FCN`` by the recipe in the worker on training maps rendered here whose classes are renamed by a
    secret permutation (``counterfactual``); mIoU against the same renaming of its predictions, with its weights
    shuffled, and with its weights before training; and the picture of the trained FCN's maps."""
    lut = counterfactual.renaming(set_name, student.submission_digest)
    images, targets = evaluation_set(eval_seed, eval_images, min_objects=1, max_objects=4)
    semantic = torch.stack([t["semantic"] for t in counterfactual.renamed(targets, lut)])
    picture_images, picture_targets = picture_set(set_name, min_objects=1, max_objects=4)
    train_images, train_targets = counterfactual.training_set(set_name, TRAINING_IMAGES, keys=("semantic",), min_objects=1, max_objects=4)
    train_semantic = torch.stack([t["semantic"].to(torch.uint8) for t in counterfactual.renamed(train_targets, lut)])
    if not isinstance(student.helper("train_segmenter").get(), RemoteObject):
        fail("the grader could not reach its training recipe")
    result = student.call_helper("train_segmenter", student.__getattr__("FCN").get(), train_images, train_semantic,
                                 steps=steps, lr=lr, timeout=timeout).value
    if not isinstance(result, (tuple, list)) or len(result) != 3 or not isinstance(result[0], RemoteObject):
        fail(f"the training recipe got {describe(result)} from your FCN, not a trained model")
    model, trained, initial = result[0], state_ok(result[1], "FCN"), state_ok(result[2], "FCN")
    sent = torch.cat([images, picture_images])
    trained, (control,), initial = with_controls(lambda states: student.call_helper("segment", model, sent, states, timeout=60).value,
                                                 trained, initial, shuffles=1)
    scores = tuple(confusion_miou(scored_maps(r, semantic.shape), semantic, len(CLASSES)) for r in (trained, control, initial))
    picture_semantic = torch.stack([t["semantic"] for t in counterfactual.renamed(picture_targets, lut)])
    return Trained(scores, segmentation_picture(picture_images, picture_semantic, trained[eval_images:], lut, "your trained FCN"))


def _rle(mask: torch.Tensor) -> dict:
    code = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    code["counts"] = code["counts"].decode()
    return code


def mask_ap50(detections: list[dict], targets: list[dict], size: tuple[int, int]) -> float:
    """COCO mask AP50 (pycocotools segm, area all, 100 detections) of ``detections`` against ``targets``' masks."""
    images = [{"id": i, "height": size[0], "width": size[1]} for i in range(len(targets))]
    anns = []
    for i, t in enumerate(targets):
        for m, c in zip(t["masks"], t["labels"].tolist()):
            rle = _rle(m)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "segmentation": rle, "area": float(m.sum()),
                         "bbox": list(coco_mask.toBbox(rle)), "iscrowd": 0})
    dets = [{"image_id": i, "category_id": int(c), "segmentation": _rle(m), "score": float(s)}
            for i, d in enumerate(detections) for m, s, c in zip(d["masks"], d["scores"].tolist(), d["labels"].tolist())
            if 1 <= int(c) < len(CLASSES)]
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(1, len(CLASSES))]}
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(dets), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1])


class _MaskFeatures(nn.Module):
    """Stands in for the mask head in the trusted model: keeps the RoI features of the detections, returns zeros."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.features.append(x)
        return x.new_zeros((len(x), self.num_classes, 2 * x.shape[-2], 2 * x.shape[-1]))


def box_part(weights) -> tuple[nn.Module, _MaskFeatures]:
    """torchvision's Mask R-CNN of the recipe with the worker's trained weights (everything but the mask head),
    built here; its mask head records RoI features."""
    features = _MaskFeatures(len(CLASSES))
    model = build_mask_rcnn(features, len(CLASSES))
    expected = model.state_dict()
    if not isinstance(weights, dict) or set(weights) != set(expected) or not all(
            isinstance(weights[k], torch.Tensor) and weights[k].shape == v.shape and weights[k].dtype == v.dtype for k, v in expected.items()):
        fail(f"the training recipe returned {describe(weights)} as the trained weights, not the recipe's model: "
             "MaskHead(64, 4, hidden_channels=64, num_convs=2) must be the only mask module")
    if not all(bool(torch.isfinite(w).all()) for w in weights.values() if w.is_floating_point()):
        fail("training diverged: the trained weights contain NaN or inf (check maskrcnn_loss and MaskHead's initialisation)")
    model.load_state_dict(weights)
    return model.eval(), features


def detect_with_mask_features(model: nn.Module, features: _MaskFeatures, images: torch.Tensor, batch_size: int = 16):
    """Detections {boxes, scores, labels} per image and the RoI features Tensor[D, 64, 14, 14] of each image's detections."""
    detections, rois = [], []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            features.features.clear()
            batch = model([im for im in images[s:s + batch_size]])
            pooled = torch.cat(features.features) if features.features else images.new_zeros((0, 64, 14, 14))
            rois += list(pooled.split([len(d["boxes"]) for d in batch]))
            detections += [{k: d[k] for k in ("boxes", "scores", "labels")} for d in batch]
    return detections, rois


def logits_ok(logits, n: int) -> torch.Tensor:
    """The worker's mask logits, checked: Tensor[n, C, 28, 28] floating point."""
    shape = (n, len(CLASSES), 28, 28)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != shape or not logits.is_floating_point():
        fail(f"your MaskHead gave {describe(logits)} for {n} RoI feature maps [{n}, 64, 14, 14]; expected mask logits Tensor{list(shape)}")
    return logits.float()


def pasted(detections: list[dict], logits: torch.Tensor, size: tuple[int, int]) -> list[dict]:
    """Detections with masks Bool[D, H, W]: each detection's class channel, sigmoid, pasted by torchvision, >= 0.5."""
    out, start = [], 0
    for d in detections:
        n = len(d["boxes"])
        own = logits[start:start + n]
        start += n
        probs = own[torch.arange(n), d["labels"]].sigmoid()[:, None]
        masks = paste_masks_in_image(probs, d["boxes"], size, padding=1)[:, 0] >= 0.5
        out.append({"scores": d["scores"].double(), "labels": d["labels"].long(), "masks": masks})
    return out


MASK_TRAINING_IMAGES = 1024  # the Mask R-CNN recipe's training set


# A shuffled mask head's AP50 varies with the shuffle (0.08-0.51 over 12 shuffles of the reference head, whose
# trained AP50 is 0.68; masks that fill the boxes score 0.455): the control is the mean over several shuffles.
MASK_CONTROLS = 5


def trained_mask_ap50(student, *, set_name: str, steps: int, lr: float, eval_seed: int, eval_images: int, timeout: float = 240) -> Trained:
    """Train a Mask R-CNN whose mask branch is the student's (MaskHead, maskrcnn_loss) in the worker, detect here,
    let the student's trained head turn RoI features into masks; (mask AP50, mean mask AP50 with the head's weights
    shuffled over MASK_CONTROLS shuffles, mask AP50 with the head's weights before training) and the picture of the
    trained head's masks (on the detections of the ``kit.pictures`` images, their RoI features sent with the others).
    The training data is rendered here and its masks kept only inside a secret region of their boxes
    (``counterfactual.mask_region``), the evaluation's alike: a head that learned follows the region, a template does not."""
    region = counterfactual.mask_region(set_name, student.submission_digest)
    shapes = dict(min_objects=1, max_objects=3)
    images, targets = evaluation_set(eval_seed, eval_images, **shapes)
    targets = counterfactual.with_masks_in_region(targets, region)
    picture_images, picture_targets = picture_set(set_name, **shapes)
    picture_targets = counterfactual.with_masks_in_region(picture_targets, region)
    train_images, train_targets = counterfactual.training_set(set_name, MASK_TRAINING_IMAGES, keys=("boxes", "labels", "masks"), **shapes)
    if not isinstance(student.helper("train_mask_rcnn").get(), RemoteObject):
        fail("the grader could not reach its training recipe")
    parts = [student.__getattr__(name).get() for name in ("MaskHead", "maskrcnn_loss")]
    result = student.call_helper("train_mask_rcnn", *parts, train_images, counterfactual.with_masks_in_region(train_targets, region),
                                 steps=steps, lr=lr, timeout=timeout).value
    if not isinstance(result, (tuple, list)) or len(result) != 4 or not isinstance(result[1], RemoteObject):
        fail(f"the training recipe got {describe(result)} from your model, not trained weights and a mask head")
    box_weights, head, trained, initial = result[0], result[1], state_ok(result[2], "MaskHead"), state_ok(result[3], "MaskHead")
    detections, rois = detect_with_mask_features(*box_part(box_weights), torch.cat([images, picture_images]))
    size = tuple(images.shape[-2:])
    scored = sum(len(r) for r in rois[:eval_images])  # the evaluation images' RoIs come first, then the pictures'
    rois = torch.cat(rois)
    if not scored:
        return Trained((0.0, 0.0, 0.0), None)
    trained, controls, initial = with_controls(lambda states: student.call_helper("mask_logits", head, rois, states, timeout=60).value,
                                               trained, initial, shuffles=MASK_CONTROLS)
    trained, initial = logits_ok(trained, len(rois)), logits_ok(initial, len(rois))
    score, initial = (mask_ap50(pasted(detections[:eval_images], r[:scored], size), targets, size) for r in (trained, initial))
    controls = [mask_ap50(pasted(detections[:eval_images], logits_ok(c, len(rois))[:scored], size), targets, size) for c in controls]
    shown = [{**p, "boxes": d["boxes"]} for p, d in zip(pasted(detections[eval_images:], trained[scored:], size), detections[eval_images:])]
    figure = detection_picture(picture_images, [{k: t[k] for k in ("boxes", "labels", "masks")} for t in picture_targets], shown, None,
                               "Mask R-CNN with your trained mask head (boxes, classes and scores from its box part, trained with your head "
                               "and run by the grader; masks from your head)", distinct_iou=0.7,
                               note=f"The true masks are the part of each object in the {region} of its box, as in your head's training data.")
    return Trained((score, float(np.mean(controls)), initial), figure)
