"""The end-to-end checks every released assignment gets, one test each, parametrized over the manifests
(``autograder/manifests/<id>.toml``, status ``released``): the solution scores every point and the untouched release
none; a release with one part solved scores exactly that part's points (from the manifest); each assignment's file of
mutants and alternatives (``tests/test_grading_<aN>.py``) exists and its mutants name tests the hidden suite has.

The mutants and correct alternatives themselves are in the per-assignment files; that the manifest, the release and
the hidden suite agree (cells, points per part) is tests/test_manifests.py.
"""
from __future__ import annotations

import importlib
import types

import pytest

from autograder import assignments
from autograder.results import validate
from conftest import ASSIGNMENT_IDS, points_by_test, release_nb, solution_nb, suite_parts, with_cells

FAST, SLOW = (), (pytest.mark.slow,)

# Graded in full (solution and release) by `make test-fast` too; every other assignment's full grading is slow.
FAST_FULL_GRADE = {"a1_pytorch"}
# The solution's grading must take less than this (seconds); an assignment not listed: its manifest's submission budget.
FULL_GRADE_UNDER_S = {"a1_pytorch": 60, "a2_detection_basics": 60}

# The parts graded alone (the release with that part solved) and their marks. An assignment not listed here has every
# part graded alone, slow. Left out for their time (the full grading covers them): a1's linear_function,
# smooth_l1_function and modules; a2's box_coding, labels, ap, single_object and proposals; a3's roi_ops, fpn and
# faster_rcnn; a4's fcos; a5's mask_rcnn (its trained test takes two minutes).
ALONE = {
    "a1_pytorch": {"manual_step": FAST, "optimizers": FAST, "training": FAST, "sigmoid": SLOW, "graphs": SLOW},
    "a2_detection_basics": {"nms": FAST, "evaluation": FAST, "box_ops": SLOW},
    # a3's parts 4-5 and a4's part 4 are graded with reference versions of the earlier parts' functions, so they score alone
    "a3_two_stage": {"anchors": SLOW, "rpn": SLOW, "roi_heads": SLOW},
    "a4_one_stage": {"focal_loss": SLOW, "fcos_targets": SLOW, "fcos_head": SLOW, "fcos_losses": SLOW},
    "a5_segmentation": {"upsampling": SLOW, "transposed_conv": SLOW, "fcn": SLOW, "panoptic_keypoints": SLOW},
}
# Parts whose functions call another part's (the hidden tests bind no reference for it): graded alone with that part
# solved as well, and its points expected too.
ALSO_SOLVED = {("a2_detection_basics", part): ("box_ops",) for part in ("nms", "evaluation", "labels", "box_coding")}


def full_grade_cases() -> list:
    return [pytest.param(a, marks=FAST if a in FAST_FULL_GRADE else SLOW, id=a) for a in ASSIGNMENT_IDS]


def one_part_cases() -> list:
    cases = []
    for a in ASSIGNMENT_IDS:
        chosen = ALONE.get(a) or {p.cell: SLOW for p in assignments.get(a).parts}
        cases += [pytest.param(a, part, marks=marks, id=f"{a}-{part}") for part, marks in chosen.items()]
    return cases


def per_assignment_module(assignment_id: str) -> types.ModuleType:
    """tests/test_grading_<aN>.py (aN: the id up to its first underscore): the assignment's mutants and alternatives."""
    name = f"test_grading_{assignment_id.split('_')[0]}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        pytest.fail(f"{assignment_id} has no tests/{name}.py with its MUTANTS and correct alternatives")


@pytest.mark.parametrize("assignment_id", full_grade_cases())
def test_solution_full_release_zero(grade, assignment_id, tmp_path):
    """The solution scores every point within its time (valid Gradescope results), and each trained test (its feedback
    starts "measured:") carries a picture of at least 200 x 200 px, embedded in results.json and written beside it; the
    release scores 0, and every test's feedback says that the function is not implemented yet."""
    a = assignments.get(assignment_id)
    results = grade(a.solution_path, a.id)
    assert results.score == a.total_points, [(t.name, t.output) for t in results.tests if t.status != "passed"]
    assert sum(t.max_score for t in results.tests) == a.total_points
    assert results.execution_time < FULL_GRADE_UNDER_S.get(a.id, a.limits.submission_budget_s), results.execution_time
    validate(results.to_gradescope())
    trained = [t for t in results.tests if t.output.startswith("measured:")]
    assert all(t.figures and min(t.figures[0].width, t.figures[0].height) >= 200 for t in trained), [(t.name, t.figures) for t in trained]
    embedded = [t for t in results.to_gradescope()["tests"] if 'src="data:image/png;base64,' in t["output"]]
    assert len(embedded) == len(trained) and all(t["output_format"] == "html" for t in embedded)
    written = results.write_figures(tmp_path / "results.json")
    assert sorted(p.name for p in written) == sorted(f"results.{t.name.split(':')[0]}.png" for t in trained)
    released = grade(a.release_path, a.id)
    assert released.score == 0, [(t.name, t.score) for t in released.tests if t.score]
    assert all("NotImplementedError" in t.output for t in released.tests), [(t.name, t.output[:300]) for t in released.tests if "NotImplementedError" not in t.output]
    validate(released.to_gradescope())


@pytest.mark.parametrize("assignment_id, part", one_part_cases())
def test_one_solved_part_scores_exactly_its_points(grade, assignment_id, part):
    """The release with one part solved (and the parts it calls, ALSO_SOLVED) scores exactly their points, all of
    them from tests of those parts."""
    a = assignments.get(assignment_id)
    solved = (part, *ALSO_SOLVED.get((a.id, part), ()))
    results = grade(with_cells(release_nb(a.id), {cell: solution_nb(a.id) for cell in solved}), a.id)
    assert results.score == sum(a.part(cell).points for cell in solved), [(t.name, t.score, t.output[:300]) for t in results.tests if t.status != "passed" or t.score]
    earned = {name for name, score in points_by_test(results).items() if score}
    part_of = suite_parts(a.id)
    assert all(part_of[name] in solved for name in earned), sorted((name, part_of[name]) for name in earned)


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_mutants_name_real_tests(assignment_id):
    """The assignment has mutants and a test of correct alternatives, and every test a mutant must fail exists in the
    suite (a renamed test would make a mutant pass vacuously)."""
    module = per_assignment_module(assignment_id)
    assert getattr(module, "MUTANTS", None), f"{module.__name__}.py has no MUTANTS"
    assert any(name.startswith("test_") and "alternative" in name for name in vars(module)), f"{module.__name__}.py tests no correct alternatives"
    named = {test for mutant in module.MUTANTS.values() for test in mutant[1]}
    missing = named - set(suite_parts(assignment_id))
    assert not missing, missing


def test_the_scaffold_names_released_assignments_and_their_parts():
    """ALONE, ALSO_SOLVED and the fast sets name released assignments and parts their manifests have."""
    for assignment_id, part in [*((a, p) for a, parts in ALONE.items() for p in parts), *ALSO_SOLVED,
                                *((a, s) for (a, _), also in ALSO_SOLVED.items() for s in also)]:
        assert assignment_id in ASSIGNMENT_IDS, assignment_id
        assignments.get(assignment_id).part(part)  # KeyError names the parts
    assert set(FAST_FULL_GRADE) | set(FULL_GRADE_UNDER_S) <= set(ASSIGNMENT_IDS)
