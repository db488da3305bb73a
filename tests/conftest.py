"""Shared helpers for the project's own tests."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder.assignments import known_ids

ROOT = Path(__file__).resolve().parents[1]
# Released assignments, from their manifests (autograder/manifests/<id>.toml).
ASSIGNMENT_IDS = known_ids()


def solution_nb(assignment_id: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "solutions" / assignment_id / f"{assignment_id}.ipynb", as_version=4)


def release_nb(assignment_id: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "assignments" / assignment_id / f"{assignment_id}.ipynb", as_version=4)


def cell_by_id(nb: nbformat.NotebookNode, grade_id: str):
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            return cell
    raise KeyError(grade_id)


def with_cells(base: nbformat.NotebookNode, replacements: dict[str, str | nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A copy of ``base`` whose graded cells are replaced: by new source text, or by another notebook's cell."""
    nb = copy.deepcopy(base)
    for gid, new in replacements.items():
        cell_by_id(nb, gid).source = new if isinstance(new, str) else cell_by_id(new, gid).source
    return nb


def solution_source(assignment_id: str, grade_id: str) -> str:
    """The source of one graded cell of the solution notebook."""
    return cell_by_id(solution_nb(assignment_id), grade_id).source


def changed_cells(assignment_id: str, changes: dict) -> dict[str, str]:
    """{cell: (old, new) | [(old, new), ...] | full new source} -> {cell: new source}, each change applied
    to the solution's cell (each ``old`` must occur exactly once)."""
    out = {}
    for gid, change in changes.items():
        if isinstance(change, str):
            out[gid] = change
            continue
        source = solution_source(assignment_id, gid)
        for old, new in ([change] if isinstance(change, tuple) else change):
            assert source.count(old) == 1, (gid, old)
            source = source.replace(old, new)
        out[gid] = source
    return out


def write_nb(nb: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


@pytest.fixture
def grade(tmp_path):
    """grade(notebook_or_path, assignment) -> Results, through the real pipeline (worker and all)."""
    from autograder.runner import grade as run_grade

    def _grade(nb_or_path, assignment_id: str = "a1_pytorch", parts=None, skip=()):
        path = nb_or_path if isinstance(nb_or_path, Path) else write_nb(nb_or_path, tmp_path / "submission.ipynb")
        return run_grade(assignment_id, path, parts=parts, skip=skip)

    return _grade


def points_by_test(results) -> dict[str, float]:
    return {t.name.split(":")[0]: t.score for t in results.tests}


def suite_parts(assignment_id: str) -> dict[str, str]:
    """Hidden test name -> the part (graded cell) it belongs to, from the suite and the manifest."""
    from autograder import assignments, runner

    return {t.name.split(":")[0]: t.part for t in runner.collect(assignments.get(assignment_id))}


def part_points(assignment_id: str, cell: str) -> float:
    from autograder import assignments

    return assignments.get(assignment_id).part(cell).points


# ----------------------------------------------------------------------------- shared checks of the test_grading_aN files
def replace_bodies(assignment_id: str, gid: str, *pairs: tuple[str, str]) -> str:
    """The solution cell ``gid`` with the solution bodies of the functions starting at each ``pairs[i][0]`` replaced by ``pairs[i][1]``."""
    source = solution_source(assignment_id, gid)
    for function_start, body in pairs:
        start = source.index("    ### BEGIN SOLUTION\n", source.index(function_start)) + len("    ### BEGIN SOLUTION\n")
        end = source.index("    ### END SOLUTION", start)
        source = source[:start] + body + source[end:]
    return source


def assert_released_with_every_part(assignment_id: str, points: list[float] | None = None) -> None:
    """The manifest's parts are the release's graded cells, each part's tests add up to its points, 100 in all."""
    from autograder import assignments, runner
    from autograder.notebook import graded_cells

    a = assignments.get(assignment_id)
    assert a.status == "released" and assignment_id in ASSIGNMENT_IDS
    assert [c.grade_id for c in graded_cells(release_nb(assignment_id))] == [p.cell for p in a.parts]
    assert a.total_points == 100 and (points is None or [p.points for p in a.parts] == points)
    tests = runner.collect(a)
    for p in a.parts:
        assert sum(t.points for t in tests if t.part == p.cell) == p.points, p.cell


def assert_solution_full_release_zero(grade, assignment_id: str) -> None:
    """The solution scores every point within the submission budget (valid Gradescope results); the release scores 0."""
    from autograder import assignments
    from autograder.results import validate

    a = assignments.get(assignment_id)
    results = grade(ROOT / "solutions" / assignment_id / f"{assignment_id}.ipynb", assignment_id)
    assert results.score == a.total_points, [(t.name, t.output) for t in results.tests if t.status != "passed"]
    assert sum(t.max_score for t in results.tests) == a.total_points
    assert results.execution_time < a.limits.submission_budget_s, results.execution_time
    validate(results.to_gradescope())
    released = grade(ROOT / "assignments" / assignment_id / f"{assignment_id}.ipynb", assignment_id)
    assert released.score == 0, [(t.name, t.score) for t in released.tests if t.score]


def assert_one_part_scores_its_points(grade, assignment_id: str, part: str) -> None:
    """The release with only ``part`` solved scores exactly that part's points."""
    results = grade(with_cells(release_nb(assignment_id), {part: solution_nb(assignment_id)}), assignment_id)
    assert results.score == part_points(assignment_id, part), [(t.name, t.score, t.output[:300]) for t in results.tests if t.status != "passed" or t.score]


def assert_mutant_loses_points(grade, assignment_id: str, name: str, mutant: tuple[dict, dict], skip=(), each_part: bool = True) -> None:
    """A mutant ({cell: change}, {test that must fail: text its feedback must contain}) fails those tests with that
    feedback and loses points in every part it changes (``each_part``), or at least in all of them together."""
    changes, must_fail = mutant
    changes = changed_cells(assignment_id, changes)
    parts = sorted(changes)
    results = grade(with_cells(solution_nb(assignment_id), changes), assignment_id, parts=parts, skip=skip)
    feedback = {t.name.split(":")[0]: t.output for t in results.tests if t.status != "passed"}
    assert set(must_fail) <= set(feedback), (name, sorted(feedback))
    for test, text in must_fail.items():
        assert text in feedback[test], (name, test, feedback[test])
    if each_part:
        part_of = suite_parts(assignment_id)
        for part in parts:
            assert sum(t.score for t in results.tests if part_of[t.name.split(":")[0]] == part) < part_points(assignment_id, part), (name, part)
    else:
        assert results.score < sum(part_points(assignment_id, p) for p in parts), name


def assert_mutants_name_real_tests(assignment_id: str, mutants: dict) -> None:
    """Every test a mutant must fail exists in the suite (a renamed test would make a mutant pass vacuously)."""
    missing = {t for _, must_fail in mutants.values() for t in must_fail} - set(suite_parts(assignment_id))
    assert not missing, missing


# ----------------------------------------------------------------------------- a headless browser (book, reports)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, driven by Playwright); installed with the CJK fonts where root and apt-get can."""
    if not Path(CHROMIUM).exists() or not list(Path("/usr/share/fonts").rglob("NotoSansCJK*")):
        if os.geteuid() == 0 and shutil.which("apt-get"):  # Chromium, and fonts for the Chinese terms
            subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "fonts-noto-cjk"], check=False, capture_output=True, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if not Path(CHROMIUM).exists():
            pytest.skip("Chromium is not installed and cannot be installed here (needs root and apt-get)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
