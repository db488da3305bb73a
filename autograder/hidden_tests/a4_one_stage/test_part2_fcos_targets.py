"""Part 2: the FCOS training targets against a straightforward reference written here, one location
and one box at a time (the notebook's rules: strictly inside, lo <= max(l, t, r, b) <= hi, smallest
area then lowest index; deltas divided by the stride; centerness with -1 for background rows).

Box coordinates are multiples of 0.5 and strides integers: every distance, area and comparison is
then exact in float32, so the edge cases (a location on an edge, a size equal to a bound, equal areas)
are real ones and do not depend on rounding."""
import math

import pytest
import torch

from .helpers import call, check_output
from autograder.testing import assert_inputs_unchanged, assert_tensor, assert_vectorized, describe, fail

INF = float("inf")


# ----------------------------------------------------------------------------- the reference, one item at a time
def expected_locations(feature_sizes, strides, dtype=torch.float32):
    levels = []
    for (rows, cols), s in zip(feature_sizes, strides):
        centres = [[(j + 0.5) * s, (i + 0.5) * s] for i in range(rows) for j in range(cols)]
        levels.append(torch.tensor(centres, dtype=torch.float64).reshape(-1, 2).to(dtype))
    return levels


def expected_assignment(locations, boxes, labels, size_ranges):
    """(labels Tensor[N] int64, index of the matched box per location or -1)."""
    box_rows, label_list = boxes.tolist(), labels.tolist()
    out_labels, out_index = [], []
    for points, (lo, hi) in zip(locations, size_ranges):
        for x, y in points.tolist():
            best_area, best = None, -1
            for k, (x1, y1, x2, y2) in enumerate(box_rows):
                d = (x - x1, y - y1, x2 - x, y2 - y)
                if min(d) > 0 and lo <= max(d) <= hi:
                    area = (x2 - x1) * (y2 - y1)
                    if best_area is None or area < best_area:  # strict: the first box keeps equal areas
                        best_area, best = area, k
            out_labels.append(label_list[best] if best >= 0 else 0)
            out_index.append(best)
    return torch.tensor(out_labels, dtype=torch.int64), torch.tensor(out_index, dtype=torch.int64)


def expected_deltas(points, boxes, strides):
    rows = []
    for (x, y), (x1, y1, x2, y2), s in zip(points.tolist(), boxes.tolist(), strides):
        rows.append([(x - x1) / s, (y - y1) / s, (x2 - x) / s, (y2 - y) / s])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def expected_boxes(points, deltas, strides):
    rows = []
    for (x, y), (l, t, r, b), s in zip(points.tolist(), deltas.tolist(), strides):
        rows.append([x - l * s, y - t * s, x + r * s, y + b * s])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def expected_centerness(deltas):
    flat = []
    for l, t, r, b in deltas.reshape(-1, 4).tolist():
        if [l, t, r, b] == [-1.0, -1.0, -1.0, -1.0]:
            flat.append(-1.0)
        else:
            flat.append(math.sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)))
    return torch.tensor(flat, dtype=torch.float64).reshape(deltas.shape[:-1])


# ----------------------------------------------------------------------------- data
def half_pixel_boxes(n, generator, width, height, max_side=200):
    """Tensor[n, 4] with coordinates multiples of 0.5 (some of 4, on the locations of stride 8), partly outside the image."""
    corner = torch.randint(-30, 2 * max(width, height), (n, 2), generator=generator).double() / 2
    corner[:, 0] = corner[:, 0] % (width + 20) - 10
    corner[:, 1] = corner[:, 1] % (height + 20) - 10
    side = torch.round((torch.rand(n, 2, generator=generator, dtype=torch.float64) ** 2 * (max_side - 1) + 1) * 2) / 2  # more small boxes
    snap = torch.rand(n, generator=generator) < 0.3
    corner[snap] = torch.round(corner[snap] / 4) * 4
    side[snap] = torch.round(side[snap] / 4).clamp(min=1) * 4
    return torch.cat([corner, corner + side], dim=1)


def check_assignment(student, locations, boxes, labels, ranges, what):
    want_labels, want_index = expected_assignment(locations, boxes, labels, ranges)
    got = call(student, "fcos_assign_targets", locations, {"boxes": boxes, "labels": labels}, ranges)
    n = len(want_labels)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        fail(f"fcos_assign_targets must return (labels, matched_boxes); got {describe(got)} {what}")
    got_labels, got_boxes = got
    assert_tensor(got_labels, want_labels, f"fcos_assign_targets labels {what}")
    if not isinstance(got_boxes, torch.Tensor) or tuple(got_boxes.shape) != (n, 4) or got_boxes.dtype != boxes.dtype:
        fail(f"fcos_assign_targets: matched_boxes must be a Tensor[{n}, 4] {str(boxes.dtype)[6:]}, got {describe(got_boxes)} {what}")
    fg = want_index >= 0
    assert_tensor(got_boxes[fg], boxes[want_index[fg]], f"fcos_assign_targets matched_boxes of the positive locations {what}", rtol=0, atol=0)
    return want_labels


FCOS_STRIDES = [8, 16, 32, 64]
FCOS_RANGES = [(0, 32), (32, 64), (64, 128), (128, INF)]


def feature_sizes_of(height, width, strides):
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


# ----------------------------------------------------------------------------- tests
@pytest.mark.part("fcos_targets")
@pytest.mark.points(3)
def test_fcos_locations_formula_and_order(student):
    """one Tensor[H_l * W_l, 2] per level, (x, y) = ((j + 0.5) s, (i + 0.5) s), row by row; non-square maps; float32 or dtype"""
    cases = [([(3, 5)], [8]), ([(25, 41), (13, 21), (7, 11)], [8, 16, 32]), ([(1, 1), (2, 7), (6, 2)], [64, 5, 12])]
    for feature_sizes, strides in cases:
        got = call(student, "fcos_locations", feature_sizes, strides)
        want = expected_locations(feature_sizes, strides)
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            fail(f"fcos_locations({feature_sizes}, {strides}) must return a list of {len(want)} tensors (one per level), got {describe(got)}")
        for level, (g_level, w_level) in enumerate(zip(got, want)):
            assert_tensor(g_level, w_level, f"fcos_locations({feature_sizes}, {strides}), level {level}", rtol=0, atol=1e-6)
    feature_sizes, strides = cases[2]
    got = call(student, "fcos_locations", feature_sizes, strides, dtype=torch.float64)
    if not isinstance(got, (list, tuple)) or len(got) != 3:
        fail(f"fcos_locations(..., dtype=torch.float64) must return a list of 3 tensors, got {describe(got)}")
    for level, (g_level, w_level) in enumerate(zip(got, expected_locations(feature_sizes, strides, torch.float64))):
        assert_tensor(g_level, w_level, f"fcos_locations({feature_sizes}, {strides}, dtype=torch.float64), level {level}", rtol=0, atol=1e-12)


@pytest.mark.part("fcos_targets")
@pytest.mark.points(6)
def test_fcos_assign_targets_random(student):
    """== the rules on random images (non-square, 4 levels, 1 to 12 boxes, labels 1..C, boxes partly outside), float32 and float64 boxes"""
    g = torch.Generator().manual_seed(0)
    for trial in range(8):
        height, width = (200, 328) if trial % 2 else (264, 136)
        locations = expected_locations(feature_sizes_of(height, width, FCOS_STRIDES), FCOS_STRIDES)
        n = int(torch.randint(1, 13, (1,), generator=g))
        boxes = half_pixel_boxes(n, g, width, height).float()
        labels = torch.randint(1, 6, (n,), generator=g)
        check_assignment(student, locations, boxes, labels, FCOS_RANGES, f"(image {height} x {width}, {n} boxes, trial {trial})")
    # other size ranges, including overlapping ones and three levels only
    height, width = 120, 200
    locations = expected_locations(feature_sizes_of(height, width, [4, 8, 16]), [4, 8, 16])
    boxes = half_pixel_boxes(10, g, width, height, max_side=120).float()
    labels = torch.randint(1, 4, (10,), generator=g)
    check_assignment(student, locations, boxes, labels, [(0, 24), (16, 48), (40, 1000)], "(3 levels with overlapping size ranges)")
    as64 = [p.double() for p in locations]
    check_assignment(student, as64, boxes.double(), labels, [(0, 24), (16, 48), (40, 1000)], "(float64 locations and boxes)")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(5)
def test_fcos_assign_targets_edges_and_ties(student):
    """a location on an edge is outside; max distance equal to lo or hi is in range; nested boxes -> smallest area; equal areas -> lowest index"""
    locations = expected_locations([(6, 8), (3, 4)], [8, 16])  # x, y at 4, 12, 20, ... and 8, 24, 40, ...
    ranges = [(8, 20), (20, 40)]
    # a box whose edges pass through locations (x = 4, 20 and y = 12, 36)
    on_edges = torch.tensor([[4.0, 12.0, 20.0, 36.0]])
    check_assignment(student, locations, on_edges, torch.tensor([2]), ranges, "(a box whose edges pass through locations: they are outside it)")
    # distances exactly 8 = lo and 20 = hi on level 1, 20 = lo and 40 = hi on level 2
    bounds = torch.tensor([[4.0, 4.0, 20.0, 20.0], [-8.0, 0.0, 32.0, 28.0], [4.0, 4.0, 28.0, 28.0], [0.0, 0.0, 48.0, 48.0], [-16.0, -16.0, 48.0, 48.0]])
    for k in range(len(bounds)):
        check_assignment(student, locations, bounds[k:k + 1], torch.tensor([k + 1]), ranges, f"(box {bounds[k].tolist()}: distances equal to the range bounds)")
    # nested boxes: the smallest wins, wherever it is; first in the list or last
    nested = torch.tensor([[0.0, 0.0, 64.0, 48.0], [2.0, 2.0, 30.0, 30.0], [8.0, 8.0, 24.0, 24.0], [0.0, 0.0, 62.0, 48.0]])
    labels = torch.tensor([1, 2, 3, 4])
    wide_ranges = [(0, 100), (0, 100)]
    check_assignment(student, locations, nested, labels, wide_ranges, "(nested boxes: the smallest area wins)")
    check_assignment(student, locations, nested.flip(0), labels, wide_ranges, "(nested boxes in the reverse order)")
    # equal areas: crossing boxes 32 x 16 and 16 x 32, and two identical boxes with different labels
    crossing = torch.tensor([[0.0, 0.0, 64.0, 48.0], [8.0, 16.0, 40.0, 32.0], [16.0, 8.0, 32.0, 40.0], [16.0, 8.0, 32.0, 40.0]])
    check_assignment(student, locations, crossing, torch.tensor([1, 2, 3, 4]), wide_ranges, "(boxes of equal area: the lowest index wins)")
    check_assignment(student, locations, crossing[[0, 3, 2, 1]], torch.tensor([5, 6, 7, 8]), wide_ranges, "(boxes of equal area, another order)")
    # boxes too small or too large for every level: all background
    check_assignment(student, locations, torch.tensor([[10.0, 10.0, 14.0, 14.0], [-200.0, -200.0, 300.0, 300.0]]), torch.tensor([1, 2]), ranges,
                     "(boxes outside every size range)")
    # a box on two levels (its locations near the centre fit level 1, the others level 2), and a level of one location
    check_assignment(student, expected_locations([(6, 8), (3, 4), (1, 1)], [8, 16, 64]), torch.tensor([[0.5, 0.5, 47.5, 40.5]]), torch.tensor([3]),
                     [(0, 24), (24, 64), (0, INF)], "(one box on several levels)")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(2)
def test_fcos_assign_targets_without_objects(student):
    """no ground-truth box: every location is background (labels 0, int64), matched_boxes Tensor[N, 4]"""
    for dtype in (torch.float32, torch.float64):
        locations = expected_locations([(5, 9), (3, 5)], [8, 16], dtype)
        got = call(student, "fcos_assign_targets", locations, {"boxes": torch.zeros(0, 4, dtype=dtype), "labels": torch.zeros(0, dtype=torch.int64)}, [(0, 32), (32, INF)])
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            fail(f"fcos_assign_targets must return (labels, matched_boxes); got {describe(got)} without objects")
        assert_tensor(got[0], torch.zeros(60, dtype=torch.int64), f"fcos_assign_targets labels without objects ({str(dtype)[6:]})")
        if not isinstance(got[1], torch.Tensor) or tuple(got[1].shape) != (60, 4):
            fail(f"fcos_assign_targets: without objects matched_boxes must still be a Tensor[60, 4], got {describe(got[1])}")
    # objects in another image's places: present but nowhere positive
    locations = expected_locations([(4, 6)], [8])
    check_assignment(student, locations, torch.tensor([[100.0, 100.0, 140.0, 120.0]]), torch.tensor([1]), [(0, INF)], "(a box outside the image)")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(3)
def test_fcos_deltas_round_trip(student):
    """fcos_get_deltas = (l, t, r, b) / stride, fcos_apply_deltas its inverse; stride a number or a Tensor[N]; float32 and float64; no rows"""
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.float64):
        n = 50
        points = (torch.randint(0, 400, (n, 2), generator=g).double() + 0.5).to(dtype)
        boxes = half_pixel_boxes(n, g, 400, 400).to(dtype)
        per_point = torch.tensor([8, 16, 32, 64, 128], dtype=dtype)[torch.randint(0, 5, (n,), generator=g)]
        for stride, label in ((16, "16"), (per_point, "Tensor[N]")):
            strides = [16] * n if label == "16" else per_point.tolist()
            what = f"({n} locations, stride {label}, {str(dtype)[6:]})"
            want = expected_deltas(points, boxes, strides).to(dtype)
            check_output(call(student, "fcos_get_deltas", points, boxes, stride), want, f"fcos_get_deltas {what}")
            deltas = (torch.rand(n, 4, generator=g, dtype=torch.float64) * 12 - 2).to(dtype)  # some negative
            check_output(call(student, "fcos_apply_deltas", points, deltas, stride), expected_boxes(points, deltas, strides).to(dtype), f"fcos_apply_deltas {what}")
            back = call(student, "fcos_apply_deltas", points, want, stride)
            check_output(back, boxes, f"fcos_apply_deltas(locations, fcos_get_deltas(locations, boxes)) must give the boxes back {what}",
                         rtol=1e-5, atol=1e-4 if dtype == torch.float32 else 1e-9)
    empty_points, empty_boxes = torch.zeros(0, 2), torch.zeros(0, 4)
    check_output(call(student, "fcos_get_deltas", empty_points, empty_boxes, 8), torch.zeros(0, 4), "fcos_get_deltas without locations")
    check_output(call(student, "fcos_apply_deltas", empty_points, empty_boxes, 8), torch.zeros(0, 4), "fcos_apply_deltas without locations")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(3)
def test_fcos_centerness(student):
    """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)); -1 for background rows (all -1); shapes [N, 4], [B, N, 4] and [0, 4]; float32 and float64"""
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        deltas = torch.rand(40, 4, generator=g, dtype=torch.float64) * 20 + 0.05
        deltas[::3] = -1.0  # background
        deltas[1] = torch.tensor([2.0, 3.0, 2.0, 3.0])  # the centre: 1
        deltas[2] = torch.tensor([0.5, 1.0, 8.0, 4.0])
        deltas = deltas.to(dtype)
        check_output(call(student, "fcos_centerness", deltas), expected_centerness(deltas).to(dtype), f"fcos_centerness(Tensor[40, 4] {str(dtype)[6:]}) with background rows")
        batched = deltas.reshape(2, 20, 4)
        check_output(call(student, "fcos_centerness", batched), expected_centerness(batched).to(dtype), f"fcos_centerness(Tensor[2, 20, 4] {str(dtype)[6:]})")
    everything_background = torch.full((5, 4), -1.0)
    check_output(call(student, "fcos_centerness", everything_background), torch.full((5,), -1.0), "fcos_centerness of background rows only")
    check_output(call(student, "fcos_centerness", torch.zeros(0, 4)), torch.zeros(0), "fcos_centerness(Tensor[0, 4])")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(1)
def test_fcos_functions_leave_inputs_unchanged(student):
    """fcos_assign_targets, fcos_get_deltas, fcos_apply_deltas and fcos_centerness do not modify their arguments and return new tensors"""
    g = torch.Generator().manual_seed(3)
    locations = expected_locations([(6, 10), (3, 5)], [8, 16])
    boxes = half_pixel_boxes(5, g, 80, 48, max_side=60).float()
    labels = torch.randint(1, 4, (5,), generator=g)
    check_assignment(student, locations, boxes, labels, [(0, 16), (16, INF)], "(5 boxes)")
    _, changed = student.helper("call_with_deep_snapshot")(student.fcos_assign_targets.get(), [locations, {"boxes": boxes, "labels": labels}, [(0, 16), (16, INF)]])
    if any(changed):  # tensors, the locations list and the gt dict's keys alike
        fail(f"fcos_assign_targets changed its argument(s) {[i for i, c in enumerate(changed) if c]} (the locations list, the gt dict or "
             "their tensors); compute new tensors and leave the caller's data alone")
    points = torch.cat(locations)[:5]
    assert_inputs_unchanged(student, "fcos_get_deltas", [points, boxes, 8], "fcos_get_deltas")
    assert_inputs_unchanged(student, "fcos_apply_deltas", [points, torch.rand(5, 4, generator=g), torch.full((5,), 8.0)], "fcos_apply_deltas")
    deltas = torch.rand(6, 4, generator=g) + 0.5
    deltas[2] = -1.0
    assert_inputs_unchanged(student, "fcos_centerness", [deltas], "fcos_centerness")


@pytest.mark.part("fcos_targets")
@pytest.mark.points(2)
def test_fcos_functions_are_vectorized(student):
    """no Python loop over locations or boxes: the same tensor operations and lines of code for small and large inputs"""
    g = torch.Generator().manual_seed(4)
    ranges = [(0, 32), (32, INF)]
    few_locations, many_locations = expected_locations([(3, 4), (2, 2)], [8, 16]), expected_locations([(30, 40), (15, 20)], [8, 16])
    few_boxes = half_pixel_boxes(3, g, 300, 220).float()
    many_boxes = half_pixel_boxes(40, g, 300, 220).float()
    few_labels, many_labels = torch.randint(1, 4, (3,), generator=g), torch.randint(1, 4, (40,), generator=g)
    assert_vectorized(student, "fcos_assign_targets", [few_locations, {"boxes": few_boxes, "labels": few_labels}, ranges], [many_locations, {"boxes": many_boxes, "labels": many_labels}, ranges],
                      ("16 locations and 3 boxes", "1500 locations and 40 boxes"), hint="compare all locations with all boxes at once, Tensor[N, G, 4]")
    assert_vectorized(student, "fcos_locations", [[(3, 4), (2, 2)], [8, 16]], [[(30, 40), (15, 20)], [8, 16]], ("maps of 3 x 4 and 2 x 2", "maps of 30 x 40 and 15 x 20"),
                      hint="build each level's grid with arange and meshgrid (or broadcasting)")
