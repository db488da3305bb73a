"""Part 5: panoptic_merge against a reference written here (the notebook's rule), keypoints_to_heatmap and
heatmaps_to_keypoints against torchvision's keypoint R-CNN helpers."""
import numpy as np
import pytest
import torch
from torchvision.models.detection import roi_heads as tv_roi_heads

from autograder.testing import assert_inputs_unchanged, describe, fail
from lecture_utils.data import ShapesDataset

from .helpers import call, check_output


def reference_panoptic(semantic, instances, thing_classes, score_threshold=0.5, overlap_threshold=0.5, stuff_area_limit=64):
    """The notebook's rule, with numpy: things by decreasing score, then stuff classes in increasing order."""
    semantic = semantic.numpy()
    masks = instances["masks"].numpy()
    masks = masks >= 0.5 if masks.dtype.kind == "f" else masks.astype(bool)
    scores, labels = instances["scores"].numpy(), instances["labels"].numpy()
    panoptic = np.zeros(semantic.shape, dtype=np.int64)
    segments = []
    for i in sorted(range(len(scores)), key=lambda k: (-float(scores[k]), k)):
        if scores[i] < score_threshold or masks[i].sum() == 0:
            continue
        taken = np.logical_and(masks[i], panoptic > 0).sum()
        if taken / masks[i].sum() > overlap_threshold:
            continue
        free = np.logical_and(masks[i], panoptic == 0)
        if free.sum() == 0:
            continue
        panoptic[free] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": int(labels[i]), "isthing": True, "area": int(free.sum())})
    for c in sorted(set(np.unique(semantic).tolist()) - {int(t) for t in thing_classes}):
        free = np.logical_and(semantic == c, panoptic == 0)
        if free.sum() >= stuff_area_limit:
            panoptic[free] = len(segments) + 1
            segments.append({"id": len(segments) + 1, "category_id": int(c), "isthing": False, "area": int(free.sum())})
    return torch.from_numpy(panoptic), segments


def scene(seed, n_extra=2, probabilities=False, size=(96, 128)):
    """A shapes image's semantic map with the background split into stuff classes 4 (top) and 5 (bottom), and its
    instances plus duplicates and low-score noise."""
    _, t = ShapesDataset(1, size, seed=seed, min_objects=2, max_objects=4)[0]
    g = torch.Generator().manual_seed(seed)
    semantic = t["semantic"].clone()
    rows = torch.arange(size[0])[:, None].expand(size)
    semantic = torch.where(semantic == 0, torch.where(rows < size[0] // 3, 4, 5), semantic)
    masks = t["masks"].bool()
    extra = torch.zeros(n_extra, *size, dtype=torch.bool)
    for k in range(n_extra):  # a shifted duplicate of an object, and a random blob
        source = masks[k % len(masks)]
        extra[k] = torch.roll(source, shifts=(int(torch.randint(-8, 9, (1,), generator=g)), int(torch.randint(-8, 9, (1,), generator=g))), dims=(0, 1))
    masks = torch.cat([masks, extra, torch.zeros(1, *size, dtype=torch.bool)])
    scores = torch.rand(len(masks), generator=g) * 0.6 + 0.35
    scores[1] = scores[0]  # a tie
    labels = torch.cat([t["labels"], torch.randint(1, 4, (n_extra + 1,), generator=g)])
    if probabilities:
        masks = masks.float() * (0.5 + 0.5 * torch.rand(masks.shape, generator=g)) + (~masks).float() * 0.49 * torch.rand(masks.shape, generator=g)
    return semantic, {"masks": masks, "scores": scores, "labels": labels}


def check_panoptic(got, want, what):
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"{what} must return (panoptic, segments), got {describe(got)}")
    panoptic, segments = got
    check_output(panoptic, want[0], f"{what}: the panoptic map", 0, 0)
    if not isinstance(segments, list) or len(segments) != len(want[1]) or not all(isinstance(s, dict) for s in segments):
        fail(f"{what}: expected {len(want[1])} segments (a list of dicts), got {describe(segments) if not isinstance(segments, list) else len(segments)}")
    for k, (s, w) in enumerate(zip(segments, want[1])):
        mine = {key: s.get(key) for key in w}
        if any((type(mine[key]) is bool) != (type(w[key]) is bool) for key in w) or mine != w:
            fail(f"{what}: segment {k} should be {w}, got {s}")


@pytest.mark.part("panoptic_keypoints")
@pytest.mark.points(4)
def test_panoptic_merge_matches_the_rule(student):
    """things by decreasing score (ties: lower index first), duplicates over the overlap threshold skipped, then stuff classes in increasing order above the area limit; bool and probability masks"""
    for seed, probabilities in ((0, False), (1, True), (2, False), (3, True)):
        semantic, instances = scene(seed, probabilities=probabilities)
        what = f"panoptic_merge on shapes scene {seed} ({'probability' if probabilities else 'bool'} masks)"
        check_panoptic(call(student, "panoptic_merge", semantic, instances, {1, 2, 3}), reference_panoptic(semantic, instances, {1, 2, 3}), what)


@pytest.mark.part("panoptic_keypoints")
@pytest.mark.points(2)
def test_panoptic_merge_thresholds_and_edges(student):
    """score_threshold, overlap_threshold and stuff_area_limit honoured; no instances; thing_classes as a list; a stuff class below the limit left at 0"""
    semantic, instances = scene(4, n_extra=3)
    for kwargs in (dict(score_threshold=0.7), dict(overlap_threshold=0.1), dict(overlap_threshold=0.9), dict(stuff_area_limit=3000), dict(score_threshold=0.0)):
        what = f"panoptic_merge({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        check_panoptic(call(student, "panoptic_merge", semantic, instances, [1, 2, 3], **kwargs), reference_panoptic(semantic, instances, [1, 2, 3], **kwargs), what)
    none = {"masks": instances["masks"][:0], "scores": instances["scores"][:0], "labels": instances["labels"][:0]}
    check_panoptic(call(student, "panoptic_merge", semantic, none, [1, 2, 3]), reference_panoptic(semantic, none, [1, 2, 3]), "panoptic_merge without instances")
    assert_inputs_unchanged(student, "panoptic_merge", [semantic, instances, [1, 2, 3]], "panoptic_merge", allow_alias=True)


def keypoint_case(seed, k=6, p=4):
    g = torch.Generator().manual_seed(seed)
    xy0 = torch.rand(k, 2, generator=g) * 60
    wh = torch.rand(k, 2, generator=g) * 50 + 0.5
    rois = torch.cat([xy0, xy0 + wh], dim=1)
    rois[0] = torch.tensor([10.0, 18.0, 40.0, 34.0])
    rois[1] = torch.tensor([4.0, 4.0, 4.6, 12.5])  # narrower than a pixel
    xy = xy0[:, None] + torch.rand(k, p, 2, generator=g) * wh[:, None] * 1.3 - wh[:, None] * 0.15  # some outside the box
    vis = torch.randint(0, 3, (k, p, 1), generator=g).float()
    keypoints = torch.cat([xy, vis], dim=2)
    keypoints[0, 0, :2] = rois[0, 2:]  # exactly on the right and bottom edges
    keypoints[0, 1, :2] = rois[0, :2]  # on the top-left corner
    keypoints[0, :2, 2] = 2
    return keypoints, rois


@pytest.mark.part("panoptic_keypoints")
@pytest.mark.points(4)
def test_keypoints_to_heatmap_matches_torchvision(student):
    """== torchvision's keypoints_to_heatmap (flat index and validity, int64): edges, the right/bottom boundary rule, invisible and outside keypoints, several sizes; no boxes"""
    for seed in (0, 1, 2):
        keypoints, rois = keypoint_case(seed)
        for size in (56, 14, 7):
            got = call(student, "keypoints_to_heatmap", keypoints, rois, size)
            want = tv_roi_heads.keypoints_to_heatmap(keypoints, rois, size)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                fail(f"keypoints_to_heatmap must return (heatmaps, valid), got {describe(got)}")
            check_output(got[0], want[0], f"keypoints_to_heatmap(heatmap_size={size}): the flat heatmap indices", 0, 0)
            check_output(got[1], want[1], f"keypoints_to_heatmap(heatmap_size={size}): valid", 0, 0)
    got = call(student, "keypoints_to_heatmap", keypoints[:0], rois[:0], 14)
    want = tv_roi_heads.keypoints_to_heatmap(keypoints[:0], rois[:0], 14)
    check_output(got[0], want[0], "keypoints_to_heatmap without boxes", 0, 0)
    assert_inputs_unchanged(student, "keypoints_to_heatmap", [keypoints, rois, 14], "keypoints_to_heatmap")


@pytest.mark.part("panoptic_keypoints")
@pytest.mark.points(5)
def test_heatmaps_to_keypoints_matches_torchvision(student):
    """== torchvision's heatmaps_to_keypoints (float32 x, y, 1 and scores): fractional and sub-pixel boxes, ties (first maximum), 56 and 14 maps"""
    g = torch.Generator().manual_seed(3)
    for seed in (0, 1):
        _, rois = keypoint_case(seed)
        for size in (14, 56):
            maps = torch.randn(len(rois), 4, size, size, generator=g)
            maps[0, 2] = 0.0  # a flat map: every cell ties
            got = call(student, "heatmaps_to_keypoints", maps, rois)
            want = tv_roi_heads.heatmaps_to_keypoints(maps, rois)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                fail(f"heatmaps_to_keypoints must return (keypoints, scores), got {describe(got)}")
            check_output(got[0], want[0], f"heatmaps_to_keypoints({size}x{size} maps): the keypoints", 1e-5, 1e-4)
            check_output(got[1], want[1], f"heatmaps_to_keypoints({size}x{size} maps): the scores", 1e-5, 1e-5)
    assert_inputs_unchanged(student, "heatmaps_to_keypoints", [maps, rois], "heatmaps_to_keypoints")
