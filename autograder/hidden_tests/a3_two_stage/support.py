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
        if generator is None:  # torchvision's sampler draws from torch's global generator
            positive, negative = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)(list(labels))
            return [p.bool() for p in positive], [n.bool() for n in negative]
        if isinstance(generator, int):
            generator = torch.Generator().manual_seed(generator)
        positive, negative = [], []
        for lab in labels:  # the same counts, drawn from the generator given
            pos, neg = torch.nonzero(lab >= 1).flatten(), torch.nonzero(lab == 0).flatten()
            n_pos = min(len(pos), int(batch_size_per_image * positive_fraction))
            n_neg = min(len(neg), batch_size_per_image - n_pos)
            masks = [torch.zeros(lab.shape, dtype=torch.bool, device=lab.device) for _ in range(2)]
            masks[0][pos[torch.randperm(len(pos), generator=generator)[:n_pos]]] = True
            masks[1][neg[torch.randperm(len(neg), generator=generator)[:n_neg]]] = True
            positive.append(masks[0])
            negative.append(masks[1])
        return positive, negative

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


def call_with_references_snapshot(fn, args, kwargs, anchor_table):
    """``call_with_references`` that also reports, per argument, whether anything inside it changed (a tensor, a
    list's length, a dict's keys, at any depth: ``call_with_deep_snapshot`` of worker_support/common.py)."""
    return call_with_deep_snapshot(lambda *a: call_with_references(fn, list(a), kwargs, anchor_table), list(args))  # noqa: F821


def sampler_generator_use(fn, labels, batch_size_per_image, positive_fraction):
    """How ``fn`` (sample_labels) uses its ``generator`` argument: {"none_follows_global": None draws from torch's
    global generator (the same global seed gives the same sample, another seed another), "int_leaves_global": an int
    seed leaves the global generator alone, "generator_used": a torch.Generator is drawn from (and advanced)}."""
    def masks(result):
        return [m.detach().clone() for m in list(result[0]) + list(result[1])]

    def same(a, b):
        return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

    torch.manual_seed(5)
    first = masks(fn(labels, batch_size_per_image, positive_fraction))
    torch.manual_seed(5)
    again = masks(fn(labels, batch_size_per_image, positive_fraction, None))
    torch.manual_seed(6)
    other = masks(fn(labels, batch_size_per_image, positive_fraction))
    state = torch.get_rng_state()
    fn(labels, batch_size_per_image, positive_fraction, 3)
    int_leaves_global = torch.equal(state, torch.get_rng_state())
    generator = torch.Generator().manual_seed(3)
    from_generator, next_draw = (masks(fn(labels, batch_size_per_image, positive_fraction, generator)) for _ in range(2))
    fresh = masks(fn(labels, batch_size_per_image, positive_fraction, torch.Generator().manual_seed(3)))
    return {"none_follows_global": same(first, again) and not same(first, other), "int_leaves_global": int_leaves_global,
            "generator_used": same(from_generator, fresh) and not same(from_generator, next_draw)}


def losses_still_connected(fn, args):
    """``fn(*args)`` with its first two arguments requiring grad, then ``backward()`` of the sum of what it returned:
    None when that works, else the error (the losses must stay connected to the predictions, even when they are 0)."""
    args = list(args)
    for i in (0, 1):
        args[i] = args[i].detach().clone().requires_grad_(True)
    try:
        sum(fn(*args)).backward()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        return f"{type(exc).__name__}: {exc}"[:200]
    return None
