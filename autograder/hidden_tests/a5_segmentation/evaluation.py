"""The trained tests of a5, trusted side: evaluation images and ground truth are made here, the worker trains the
student's model and returns predictions on the images only; predictions are checked here, and the mIoU (an
independent confusion matrix) and COCO mask AP50 (pycocotools ``segm``) are computed here."""
import contextlib
import io
import secrets

import numpy as np
import torch
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from autograder.client import RemoteObject
from autograder.hidden_tests.trained_detection import evaluation_set
from autograder.testing import describe, fail
from lecture_utils.data import CLASSES


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


def trained_miou(student, *, steps: int, lr: float, eval_seed: int, eval_images: int, timeout: float = 200) -> tuple[float, float]:
    """Train ``student.FCN`` by the recipe in the worker; (mIoU of its predictions, mIoU with its weights shuffled)."""
    images, targets = evaluation_set(eval_seed, eval_images, min_objects=1, max_objects=4)
    semantic = torch.stack([t["semantic"] for t in targets])
    if not isinstance(student.helper("train_segmenter").get(), RemoteObject):
        fail("the grader could not reach its training recipe")
    result = student.call_helper("train_segmenter", student.__getattr__("FCN").get(), images, steps=steps, lr=lr, timeout=timeout,
                                 control_first=bool(secrets.randbits(1))).value
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"the training recipe got {describe(result)} from your model, not class maps")
    trained, shuffled = (class_maps_ok(r, semantic.shape) for r in result)
    return confusion_miou(trained, semantic, len(CLASSES)), confusion_miou(shuffled, semantic, len(CLASSES))


def _rle(mask: torch.Tensor) -> dict:
    code = coco_mask.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    code["counts"] = code["counts"].decode()
    return code


def instances_ok(detections, n_images: int, size: tuple[int, int]) -> list[dict]:
    """The worker's detections, checked: per image {scores Tensor[D], labels Tensor[D], masks Bool[D, H, W]}; the
    100 best by score (COCO's maxDets)."""
    if not isinstance(detections, (list, tuple)) or len(detections) != n_images:
        fail(f"the training recipe got {describe(detections)} from your Mask R-CNN, not {n_images} detection dicts")
    out = []
    for d in detections:
        if not isinstance(d, dict) or not all(isinstance(d.get(k), torch.Tensor) for k in ("scores", "labels", "masks")):
            fail(f"detections must be dicts of tensors scores, labels, masks; got {describe(d)}")
        scores, labels, masks = d["scores"].double(), d["labels"], d["masks"]
        if scores.ndim != 1 or labels.shape != scores.shape or labels.is_floating_point() or tuple(masks.shape) != (len(scores), *size):
            fail(f"your paste_masks_in_image must give one {size[0]}x{size[1]} mask per detection; got masks {describe(masks)} for {len(scores)} detections")
        keep = torch.where(torch.isfinite(scores))[0]
        keep = keep[torch.argsort(scores[keep], descending=True, stable=True)][:100]
        out.append({"scores": scores[keep], "labels": labels[keep].long(), "masks": masks[keep].bool()})
    return out


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


def trained_mask_ap50(student, *, steps: int, lr: float, eval_seed: int, eval_images: int, timeout: float = 240) -> tuple[float, float]:
    """Train a Mask R-CNN whose mask branch is the student's (MaskHead, maskrcnn_loss, paste_masks_in_image) in the
    worker; (mask AP50 of its detections, mask AP50 with the mask head's weights shuffled)."""
    images, targets = evaluation_set(eval_seed, eval_images, min_objects=1, max_objects=3)
    if not isinstance(student.helper("train_mask_rcnn").get(), RemoteObject):
        fail("the grader could not reach its training recipe")
    parts = [student.__getattr__(name).get() for name in ("MaskHead", "maskrcnn_loss", "paste_masks_in_image")]
    result = student.call_helper("train_mask_rcnn", *parts, images, steps=steps, lr=lr, timeout=timeout, control_first=bool(secrets.randbits(1))).value
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        fail(f"the training recipe got {describe(result)} from your model, not detections")
    size = tuple(images.shape[-2:])
    trained, shuffled = (instances_ok(r, eval_images, size) for r in result)
    return mask_ap50(trained, targets, size), mask_ap50(shuffled, targets, size)


def assert_learned(score: float, shuffled: float, bar: float, min_drop: float, metric: str, n_images: int, what: str) -> None:
    """The trained test's verdict: ``score`` at least ``bar`` and at least ``min_drop`` above the shuffled control."""
    if not score >= bar:
        fail(f"after training, {metric} is {score:.3f} on {n_images} validation images (need {bar})")
    if not shuffled <= score - min_drop:
        fail(f"with its trained weights shuffled, your {what} still reaches {metric} {shuffled:.3f} (trained: {score:.3f}): "
             "the predictions must come from the learned weights")
