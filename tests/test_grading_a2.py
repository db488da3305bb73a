"""End-to-end grading of a2_detection_basics: full marks, zero, partial credit, subtly wrong code."""
import pytest

from conftest import ROOT, cell_by_id, points_by_test, release_nb, solution_nb, with_cells
from autograder.results import validate

A2 = "a2_detection_basics"
A2_CELL_TESTS = {
    "box_ops": (("test_box_",), 12),
    "box_coding": (("test_encode", "test_decode", "test_round_trip"), 10),
    "labels": (("test_positive", "test_iou_exactly_at_the_thresholds", "test_no_ground_truth"), 8),
    "nms": (("test_nms", "test_batched_nms"), 24),
    "ap": (("test_precision_recall", "test_average_precision"), 10),
    "evaluation": (("test_evaluate",), 20),
    "single_object": (("test_sliding", "test_single_object_loss", "test_detector"), 11),
    "proposals": (("test_proposals",), 5),
}


def sol(gid):
    return cell_by_id(solution_nb(A2), gid).source


def mutate(gid, old, new):
    source = sol(gid)
    assert old in source, old
    return source.replace(old, new)


@pytest.mark.slow
def test_a2_solution_full_release_zero(grade):
    results = grade(ROOT / "solutions" / A2 / f"{A2}.ipynb", A2)
    assert results.score == 100, [(t.name, t.output) for t in results.tests if t.status != "passed"]
    assert sum(t.max_score for t in results.tests) == 100
    validate(results.to_gradescope())
    names = points_by_test(results)
    owned = [n for n in names if any(n.startswith(p) for prefixes, _ in A2_CELL_TESTS.values() for p in prefixes)]
    assert sorted(owned) == sorted(names)
    assert grade(ROOT / "assignments" / A2 / f"{A2}.ipynb", A2).score == 0


@pytest.mark.parametrize("grade_id", ["nms", "evaluation", pytest.param("box_ops", marks=pytest.mark.slow)])
def test_a2_one_solved_part_scores_exactly_its_points(grade, grade_id):
    nb = with_cells(release_nb(A2), {grade_id: solution_nb(A2)})
    if grade_id in ("nms", "evaluation", "labels", "box_coding"):  # these parts call box_area / box_iou
        nb = with_cells(nb, {"box_ops": solution_nb(A2)})
    results = grade(nb, A2)
    earned = {n: p for n, p in points_by_test(results).items() if p}
    prefixes, points = A2_CELL_TESTS[grade_id]
    extra = A2_CELL_TESTS["box_ops"][1] if grade_id != "box_ops" else 0
    assert results.score == points + extra, earned


A2_MUTANTS = {
    "nms-suppresses-at-equality": ({"nms": ("alive[i + 1 :] &= ~(iou.double() > iou_threshold)", "alive[i + 1 :] &= ~(iou.double() >= iou_threshold)")},
                                   ["test_nms_iou_exactly_at_the_threshold"]),
    "nms-unstable-ties": ({"nms": ("order = scores.sort(dim=0, descending=True, stable=True)[1]", "order = (-scores).argsort()")},
                          ["test_nms_tied_scores"]),
    "ap-without-envelope": ({"ap": ("envelope = precision.flip(0).cummax(0).values.flip(0)", "envelope = precision")},
                            ["test_average_precision_coco101"]),
    "eval-no-max-detections": ({"evaluation": ("keep = d_rank < max_detections", "keep = d_rank >= 0")}, ["test_evaluate_more_than_100_detections"]),
    "eval-crowd-used-up": ({"evaluation": ("(~g_taken[:, :, gi] | crowd[:, gi, None])", "(~g_taken[:, :, gi])")}, ["test_evaluate_crowd_ground_truth"]),
    "iou-plus-one": ({"box_ops": ("return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])", "return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)")},
                     ["test_box_area"]),
    "decode-without-clamp": ({"box_coding": ("dw = (rel_codes[:, 2::4] / ww).clamp(max=bbox_xform_clip)", "dw = rel_codes[:, 2::4] / ww")}, ["test_decode_matches_boxcoder"]),
    "labels-neutral-boundary": ({"labels": ("torch.where(best_iou < neg_iou,", "torch.where(best_iou <= neg_iou,")}, ["test_iou_exactly_at_the_thresholds_and_ties"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(A2_MUTANTS))
def test_a2_subtly_wrong_code_loses_points(grade, name):
    changes, must_fail = A2_MUTANTS[name]
    nb = with_cells(solution_nb(A2), {gid: mutate(gid, old, new) for gid, (old, new) in changes.items()})
    results = grade(nb, A2)
    failed = {t.name.split(":")[0] for t in results.tests if t.status != "passed"}
    assert set(must_fail) <= failed, (name, sorted(failed))
    assert results.score < 100
