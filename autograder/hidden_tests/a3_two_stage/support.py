"""a3 grader support, run in the worker outside the student's namespace.

- ``call_with_references``: the unit tests of parts 4 and 5 call the student's RPN / second-stage code
  with the earlier parts' functions (anchors, matching, sampling, RoI Align) bound to reference versions
  made here from torchvision, so a mistake in an earlier part costs that part's points only. Anchors
  come from a table the trusted process computed and sent (no solution code lives in the worker).
The trained test uses ``train_detector`` of ``autograder/worker_support/detectors.py``: the worker trains the
student's model on data it renders itself and returns detections on evaluation *images* it received;
ground truth and metrics stay in the trusted process.
"""
import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, Matcher
from torchvision.ops import box_iou
from torchvision.ops import roi_align as _tv_roi_align

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
    """``fn(*args, **kwargs)`` with the student's generate_anchors, match_anchors, sample_labels and roi_align
    bound to the references (``call_with_bound`` of worker_support/bindings.py)."""
    return call_with_bound(_references(anchor_table), fn, args, kwargs)  # noqa: F821 - loaded before this module


def proposals_need_grad(rpn, features, image_sizes, targets, anchor_table):
    """Train-mode RPN forward (references bound) on ``features`` that require grad: [does image i's proposals tensor
    require grad] (torchvision detaches them: the second stage must not train the RPN through its proposals)."""
    features = [f.detach().requires_grad_() for f in features]
    proposals, _ = call_with_references(rpn, [features, image_sizes, targets], {}, anchor_table)
    return [bool(getattr(p, "requires_grad", False)) for p in proposals]
