"""Shared helpers for the project's own tests."""
from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT_IDS = sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())


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


def write_nb(nb: nbformat.NotebookNode, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


@pytest.fixture
def grade(tmp_path):
    """grade(notebook_or_path, assignment) -> Results, through the real pipeline (worker and all)."""
    from autograder.runner import grade as run_grade

    def _grade(nb_or_path, assignment_id: str = "a1_pytorch"):
        path = nb_or_path if isinstance(nb_or_path, Path) else write_nb(nb_or_path, tmp_path / "submission.ipynb")
        return run_grade(assignment_id, path)

    return _grade


def points_by_test(results) -> dict[str, float]:
    return {t.name.split(":")[0]: t.score for t in results.tests}
