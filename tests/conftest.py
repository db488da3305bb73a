"""Shared helpers for the project's own tests."""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from autograder import assignments

ROOT = Path(__file__).resolve().parents[1]
# Released assignments, from their manifests (autograder/manifests/<id>.toml).
ASSIGNMENT_IDS = assignments.known_ids()

# The files whose tests take longest (training, whole gradings, the book built from the published tree), longest
# first: `pytest -n 2` hands tests out in collection order, so starting with these keeps one worker from running a
# long test alone at the end. A file's tests stay together (module fixtures are built once per worker).
LONGEST_FIRST = ("test_notebooks_execute.py", "test_grading_assignments.py", "test_trusted_evaluation.py", "test_grading_a5.py",
                 "test_grading_a3.py", "test_grading_a4.py", "test_publish.py", "test_feedback_figures.py", "test_grading_a2.py")


def pytest_configure(config):
    """Under `pytest -n 2` each test process computes on one torch thread: two processes of two OpenMP threads on two
    cores wait for each other's busy core (small ops ran 15x slower that way)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def solution_nb(assignment_id: str) -> nbformat.NotebookNode:
    """The nbgrader source notebook, solutions/<id>/<id>.ipynb."""
    return nbformat.read(assignments.get(assignment_id).solution_path, as_version=4)


def release_nb(assignment_id: str) -> nbformat.NotebookNode:
    """The student release, assignments/<id>/<id>.ipynb."""
    return assignments.get(assignment_id).release()


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
    from autograder import runner

    return {t.name.split(":")[0]: t.part for t in runner.collect(assignments.get(assignment_id))}


def part_points(assignment_id: str, cell: str) -> float:
    """A part's points, from the manifest."""
    return assignments.get(assignment_id).part(cell).points


# ----------------------------------------------------------------------------- shared by the test_grading_aN files (mutants, alternatives)
def replace_bodies(assignment_id: str, gid: str, *pairs: tuple[str, str]) -> str:
    """The solution cell ``gid`` with the solution bodies of the functions starting at each ``pairs[i][0]`` replaced by ``pairs[i][1]``."""
    source = solution_source(assignment_id, gid)
    for function_start, body in pairs:
        start = source.index("    ### BEGIN SOLUTION\n", source.index(function_start)) + len("    ### BEGIN SOLUTION\n")
        end = source.index("    ### END SOLUTION", start)
        source = source[:start] + body + source[end:]
    return source


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
