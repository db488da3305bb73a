"""Part 2: generate_anchors (the notebook's formula and order), match_anchors (torchvision's Matcher)
and sample_labels (torchvision's balanced sampler: counts, fraction, randomness, determinism).

Boxes for the matcher have integer coordinates: every area, intersection and union is then exact, so
the IoU (one division) is the same float however it is computed, and ties are real ties."""
import math

import pytest
import torch
import torchvision.ops as tv
from torchvision.models.detection._utils import Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from .helpers import call, expected_anchors
from autograder.client import StudentError
from autograder.testing import assert_inputs_unchanged, assert_tensor, describe, fail


@pytest.mark.part("anchors")
@pytest.mark.points(3)
def test_generate_anchors_formula_and_order(student):
    """centres at (j + 0.5) * stride, h / w = ratio, area = size ** 2, no rounding; order: level, row, column, ratio, size; float32 (or dtype)"""
    cases = [
        ([(3, 5)], [16], [(32,)], [(1.0,)]),
        ([(4, 6)], [8], [(16, 24, 40)], [(0.5, 1.0, 2.0)]),
        ([(5, 7), (3, 4), (2, 2)], [8, (16, 16), (32, 28)], [(20, 33), (50,), (90, 130)], [(0.5, 1.0, 2.0), (0.3, 3.0), (1.0, 1.7)]),
        ([(2, 3), (1, 1)], [(10, 12), 64], [(17.5,), (100, 200)], [(0.75, 1.25), (1.0,)]),
    ]
    for feature_sizes, strides, sizes, ratios in cases:
        want = expected_anchors(feature_sizes, strides, sizes, ratios)
        got = call(student, "generate_anchors", feature_sizes, strides, sizes, ratios)
        assert_tensor(got, want, f"generate_anchors({feature_sizes}, {strides}, {sizes}, {ratios})", rtol=1e-6, atol=1e-4)
    feature_sizes, strides, sizes, ratios = cases[2]
    got = call(student, "generate_anchors", feature_sizes, strides, sizes, ratios, dtype=torch.float64)
    assert_tensor(got, expected_anchors(feature_sizes, strides, sizes, ratios, torch.float64), "generate_anchors(..., dtype=torch.float64)", rtol=1e-12, atol=1e-9)


@pytest.mark.part("anchors")
@pytest.mark.points(1)
def test_generate_anchors_is_torchvision_shifted_by_half_a_stride(student):
    """where torchvision's rounding changes nothing, the anchors are torchvision AnchorGenerator's moved by half a stride"""
    sizes, ratios = ((32, 64), (128,)), ((0.25, 1.0, 4.0), (1.0, 4.0))
    generator = AnchorGenerator(sizes, ratios)
    maps = [torch.zeros(1, 1, 6, 10), torch.zeros(1, 1, 3, 5)]
    want = generator(ImageList(torch.zeros(1, 3, 96, 160), [(96, 160)]), maps)[0]
    half = torch.cat([torch.full((6 * 10 * 6, 4), 8.0), torch.full((3 * 5 * 2, 4), 16.0)])
    got = call(student, "generate_anchors", [(6, 10), (3, 5)], [16, 32], list(sizes), list(ratios))
    assert_tensor(got, want + half, "generate_anchors compared with torchvision's AnchorGenerator (plus half a stride)", rtol=1e-6, atol=1e-4)


def integer_boxes(n, generator, extent=64, max_size=40):
    xy = torch.randint(0, extent, (n, 2), generator=generator)
    wh = torch.randint(1, max_size, (n, 2), generator=generator)
    return torch.cat([xy, xy + wh], dim=1).float()


def check_match(student, anchors, gt, high, low, allow, what):
    got = call(student, "match_anchors", anchors, gt, high, low, allow)
    want = Matcher(high, low, allow)(tv.box_iou(gt, anchors))
    assert_tensor(got, want, f"match_anchors (high={high}, low={low}, allow_low_quality_matches={allow}) {what}")


@pytest.mark.part("anchors")
@pytest.mark.points(4)
def test_match_anchors_equals_torchvision_matcher(student):
    """== torchvision's Matcher on random boxes: index, -1 below low, -2 between, with and without low-quality matches"""
    g = torch.Generator().manual_seed(0)
    for trial in range(12):
        gt = integer_boxes(int(torch.randint(1, 7, (1,), generator=g)), g)
        anchors = torch.cat([integer_boxes(120, g), gt[:, :2].repeat(3, 1).repeat(1, 2) + integer_boxes(3 * len(gt), g, extent=6, max_size=30)])
        for high, low in ((0.7, 0.3), (0.5, 0.4), (0.5, 0.5), (0.6, 0.1)):
            for allow in (False, True):
                check_match(student, anchors, gt, high, low, allow, f"on {len(anchors)} anchors and {len(gt)} boxes")
    got = call(student, "match_anchors", integer_boxes(10, g), integer_boxes(3, g))  # the defaults
    if not isinstance(got, torch.Tensor) or got.dtype != torch.int64:
        fail(f"match_anchors must return an int64 Tensor, got {describe(got)}")


@pytest.mark.part("anchors")
@pytest.mark.points(2)
def test_match_anchors_thresholds_and_ties(student):
    """IoU equal to high is matched, equal to low is -2; ties among boxes go to the first; every anchor tied for a box's best IoU is kept (with its own best box)"""
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10], [100, 100, 104, 104]])
    anchors = torch.tensor([
        [0.0, 0, 10, 5], [0, 0, 10, 2.5], [0, 0, 10, 10], [20, 0, 30, 4], [20, 6, 30, 10],  # IoU 0.5, 0.25, 1 (tie), 0.4, 0.4
        [50, 50, 60, 60], [20, 0, 30, 7.5], [90, 90, 102, 102], [102, 102, 114, 114],  # 0, 0.75, box 3: two equal low-quality bests
        [2, 0, 12, 10], [5, 0, 25, 10]])  # overlaps boxes 0/1 and 2
    for high, low in ((0.5, 0.25), (0.75, 0.5), (0.8, 0.4), (1.0, 0.5)):
        for allow in (False, True):
            check_match(student, anchors, gt, high, low, allow, "at the thresholds and with ties")
    lonely = torch.tensor([[200.0, 200, 210, 210]])  # overlaps nothing: all anchors tie at IoU 0
    check_match(student, anchors, torch.cat([gt, lonely]), 0.7, 0.3, True, "with a box that overlaps no anchor")
    crossed_gt = torch.tensor([[0.0, 0, 10, 10], [8, 0, 40, 10]])
    crossed = torch.tensor([[6.0, 0, 16, 10], [0, 0, 10, 10], [60, 0, 70, 10]])  # anchor 0: IoU 0.25 with box 0, the best (0.235) of box 1
    check_match(student, crossed, crossed_gt, 0.7, 0.3, True, "where an anchor is the best one of a box but closer to another box")


@pytest.mark.part("anchors")
@pytest.mark.points(1)
def test_match_anchors_without_objects(student):
    """no ground truth: every anchor is -1 (int64); no anchors: an empty int64 tensor; the boxes are not modified; low_threshold > high_threshold raises ValueError"""
    g = torch.Generator().manual_seed(1)
    anchors = integer_boxes(9, g)
    for allow in (False, True):
        got = call(student, "match_anchors", anchors, torch.zeros(0, 4), 0.7, 0.3, allow)
        assert_tensor(got, torch.full((9,), -1, dtype=torch.int64), f"match_anchors without ground truth (allow_low_quality_matches={allow})")
    assert_tensor(call(student, "match_anchors", torch.zeros(0, 4), integer_boxes(2, g), 0.7, 0.3, True), torch.zeros(0, dtype=torch.int64), "match_anchors without anchors")
    gt = integer_boxes(3, g)
    assert_inputs_unchanged(student, "match_anchors", [anchors, gt, 0.7, 0.3, True], "match_anchors")
    try:  # torchvision's Matcher refuses low_threshold > high_threshold
        got = call(student, "match_anchors", anchors, gt, 0.3, 0.7, True)
    except StudentError as exc:
        if not str(exc).startswith("ValueError"):
            fail(f"match_anchors(..., high_threshold=0.3, low_threshold=0.7) must raise ValueError, it raised {str(exc).splitlines()[0][:120]}")
    else:
        fail(f"match_anchors(..., high_threshold=0.3, low_threshold=0.7) must raise ValueError (low_threshold > high_threshold), it returned {describe(got)}")


def check_sample(student, labels, batch, fraction, seed, what):
    got = call(student, "sample_labels", labels, batch, fraction, seed)
    if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(m, (list, tuple)) and len(m) == len(labels) for m in got):
        fail(f"sample_labels must return (list of positive masks, list of negative masks), one per image; got {describe(got)} {what}")
    for i, (lab, pos, neg) in enumerate(zip(labels, got[0], got[1])):
        for name, mask in (("positive", pos), ("negative", neg)):
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != tuple(lab.shape):
                fail(f"sample_labels: the {name} mask of image {i} must be a bool Tensor{list(lab.shape)}, got {describe(mask)} {what}")
        n_pos, n_neg = int((lab >= 1).sum()), int((lab == 0).sum())
        want_pos = min(n_pos, int(batch * fraction))
        want_neg = min(n_neg, batch - want_pos)
        if int(pos.sum()) != want_pos or int(neg.sum()) != want_neg:
            fail(f"sample_labels(batch_size_per_image={batch}, positive_fraction={fraction}) {what}, image {i} with {n_pos} positives and {n_neg} negatives: "
                 f"expected {want_pos} positives and {want_neg} negatives, got {int(pos.sum())} and {int(neg.sum())}")
        if not bool((lab[pos] >= 1).all()) or not bool((lab[neg] == 0).all()):
            fail(f"sample_labels {what}, image {i}: positives must have labels >= 1 and negatives label 0 (-1 is ignored)")
    return got


@pytest.mark.part("anchors")
@pytest.mark.points(2)
def test_sample_labels_counts(student):
    """per image at most int(batch * fraction) positives, negatives fill the batch, fewer when lacking; -1 ignored; class labels > 1 and float labels count as positive"""
    g = torch.Generator().manual_seed(2)
    def labels(n_pos, n_neg, n_ignored, classes=1):
        lab = torch.cat([torch.randint(1, classes + 1, (n_pos,), generator=g), torch.zeros(n_neg, dtype=torch.int64), torch.full((n_ignored,), -1)])
        return lab[torch.randperm(len(lab), generator=g)]
    images = [labels(300, 2000, 100), labels(5, 2000, 10), labels(200, 20, 0, 3), labels(0, 50, 5), labels(0, 0, 7), labels(0, 0, 0), labels(10, 10, 10)]
    for batch, fraction in ((256, 0.5), (512, 0.25), (64, 0.33), (100, 1.0), (10, 0.0)):
        check_sample(student, images, batch, fraction, 0, f"(seed 0, {len(images)} images)")
    check_sample(student, [lab.float() for lab in images[:3]], 128, 0.25, 1, "with float labels")
    check_sample(student, [], 128, 0.25, 1, "without images")


@pytest.mark.part("anchors")
@pytest.mark.points(1)
def test_sample_labels_random_and_deterministic(student):
    """the same seed gives the same sample; different seeds different ones, each candidate picked sometimes"""
    g = torch.Generator().manual_seed(3)
    lab = torch.cat([torch.ones(40, dtype=torch.int64), torch.zeros(400, dtype=torch.int64), torch.full((20,), -1)])
    lab = lab[torch.randperm(len(lab), generator=g)]
    first = check_sample(student, [lab], 64, 0.25, 11, "(seed 11)")
    again = check_sample(student, [lab], 64, 0.25, 11, "(seed 11, again)")
    if not (torch.equal(first[0][0], again[0][0]) and torch.equal(first[1][0], again[1][0])):
        fail("sample_labels: the same seed must give the same sample")
    picked_pos, picked_neg, distinct = torch.zeros(len(lab), dtype=torch.bool), torch.zeros(len(lab), dtype=torch.bool), set()
    for seed in range(40):
        pos, neg = check_sample(student, [lab], 64, 0.25, seed, f"(seed {seed})")
        picked_pos |= pos[0]
        picked_neg |= neg[0]
        distinct.add(tuple(pos[0].nonzero().flatten().tolist()))
    if len(distinct) < 30 or int(picked_pos.sum()) < 40 or int(picked_neg.sum()) < 350:
        fail(f"sample_labels must pick at random: over 40 seeds it chose {len(distinct)} different sets of positives, "
             f"{int(picked_pos.sum())} of the 40 positives and {int(picked_neg.sum())} of the 400 negatives at least once")


@pytest.mark.part("anchors")
@pytest.mark.points(1)
def test_sample_labels_generator_and_inputs(student):
    """generator=None draws from torch's global generator, an int seed leaves it alone, a torch.Generator is drawn from (and advanced); the labels are not modified"""
    g = torch.Generator().manual_seed(4)
    lab = torch.cat([torch.randint(1, 4, (40,), generator=g), torch.zeros(400, dtype=torch.int64), torch.full((20,), -1)])
    labels = [lab[torch.randperm(len(lab), generator=g)], lab[:100].clone()]
    assert_inputs_unchanged(student, "sample_labels", [labels, 64, 0.25, 1], "sample_labels", allow_alias=True)
    use = student.helper("sampler_generator_use")(student.sample_labels.get(), labels, 64, 0.25)
    if not isinstance(use, dict):
        fail(f"sample_labels: the grader could not call it with the three kinds of generator, got {describe(use)}")
    if not use.get("none_follows_global"):
        fail("sample_labels(..., generator=None) must draw from torch's global generator: after torch.manual_seed(5) it must give the same "
             "sample each time, after torch.manual_seed(6) another one (it gave the same sample whatever the global seed, or different ones for the same)")
    if not use.get("int_leaves_global"):
        fail("sample_labels(..., generator=3) changed torch's global generator: an int seed makes a torch.Generator of its own "
             "(torch.Generator().manual_seed(seed)); never reseed the global one")
    if not use.get("generator_used"):
        fail("sample_labels(..., generator=torch.Generator().manual_seed(3)) must draw from that generator: a fresh generator with the "
             "same seed gives the same sample, and the next call with the same (advanced) generator another one")
