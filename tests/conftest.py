"""Shared helpers for the project's own tests."""
from __future__ import annotations

import copy
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
