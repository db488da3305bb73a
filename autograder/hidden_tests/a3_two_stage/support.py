"""a3 grader support, run in the worker outside the student's namespace.

- ``call_with_references``: the unit tests of parts 4 and 5 call the student's RPN / second-stage code
  with the earlier parts' functions (anchors, matching, sampling, RoI Align) bound to reference versions
  made here from torchvision, so a mistake in an earlier part costs that part's points only. Anchors
  come from a table the trusted process computed and sent (no solution code lives in the worker).
- ``train_faster_rcnn``: the fixed training recipe of the trained test. The worker trains the student's
  model on data it renders itself and returns detections on evaluation *images* it received; ground
  truth and metrics stay in the trusted process.
"""
import sys

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou
from torchvision.ops import roi_align as _tv_roi_align

from lecture_utils.data import CLASSES, ShapesDataset

STUDENT_MODULE = "student_submission"
IMAGE_SIZE = 128
SHAPES = dict(min_objects=1, max_objects=3)


def _anchor_key(feature_sizes) -> str:
    return ";".join(f"{int(h)}x{int(w)}" for h, w in feature_sizes)


def _references(anchor_table: dict) -> dict:
    def generate_anchors(feature_sizes, strides, sizes, aspect_ratios, dtype=torch.float32, device=None):
        key = _anchor_key(feature_sizes)
        if key not in anchor_table:
            raise KeyError(f"the grader has no reference anchors for feature maps {key}")
        return anchor_table[key].to(dtype=dtype, device=device)

    def match_anchors(anchors, gt_boxes, high_threshold=0.7, low_threshold=0.3, allow_low_quality_matches=True):
        if len(gt_boxes) == 0:
            return torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
        return Matcher(high_threshold, low_threshold, allow_low_quality_matches)(box_iou(gt_boxes, anchors))

    def sample_labels(labels, batch_size_per_image, positive_fraction, generator=None):
        positive, negative = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)(list(labels))
        return [p.bool() for p in positive], [n.bool() for n in negative]

    def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        return _tv_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)

    return {"generate_anchors": generate_anchors, "match_anchors": match_anchors, "sample_labels": sample_labels, "roi_align": roi_align}


def call_with_references(fn, args, kwargs, anchor_table):
    """``fn(*args, **kwargs)`` with the student's generate_anchors, match_anchors, sample_labels and
    roi_align temporarily replaced by the references; the student's own are put back afterwards."""
    namespace = sys.modules[STUDENT_MODULE].__dict__
    references = _references(anchor_table)
    missing = object()
    saved = {name: namespace.get(name, missing) for name in references}
    namespace.update(references)
    try:
        return fn(*args, **kwargs)
    finally:
        for name, value in saved.items():
            if value is missing:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def losses_backward(model, images, targets):
    """Training-mode losses of a detector, and the names of the parameters the summed loss does not reach."""
    model.train()
    model.zero_grad(set_to_none=True)
    losses = model(images, targets)
    sum(losses.values()).backward()
    unreached = [name for name, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    return {k: v.detach() for k, v in losses.items()}, unreached


def _training_batches(batch_size: int, seed: int, n_images: int = 1536):
    data = ShapesDataset(n_images, IMAGE_SIZE, seed=seed, **SHAPES)
    items = [data[i] for i in range(n_images)]
    return [([im for im, _ in items[s:s + batch_size]], [t for _, t in items[s:s + batch_size]]) for s in range(0, n_images, batch_size)]


def _detect(model, images, batch_size: int = 16):
    model.eval()
    detections = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out = model([im for im in images[start:start + batch_size]])
            detections.extend({k: torch.as_tensor(d[k]) for k in ("boxes", "scores", "labels")} for d in out)
    return detections


def _shuffle_weights(model, seed: int) -> None:
    """Destroy what was learned but keep each parameter's values: permute its elements."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            flat = p.detach().reshape(-1)
            p.copy_(flat[torch.randperm(flat.numel(), generator=g)].reshape(p.shape))


def train_faster_rcnn(model_class, eval_images, steps=300, batch_size=12, lr=2e-3, seed=0):
    """Train ``model_class(len(CLASSES))`` with AdamW (one-cycle learning rate, weight decay 1e-4) on
    128x128 shapes with 1-3 objects; return its detections on ``eval_images`` (Tensor[N, 3, H, W]) and
    those of the same model with its weights shuffled: (detections, shuffled_detections)."""
    torch.manual_seed(seed)
    batches = _training_batches(batch_size, seed + 100)
    model = model_class(len(CLASSES))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    detections = _detect(model, eval_images)
    _shuffle_weights(model, seed + 1)
    return detections, _detect(model, eval_images)
