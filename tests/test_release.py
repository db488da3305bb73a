"""The committed student release is exactly what nbgrader generates from the sources."""
import jupytext
import nbformat
import pytest

from autograder.release import generate_into
from conftest import ASSIGNMENT_IDS, ROOT, release_nb, solution_nb

VOLATILE = ("kernelspec", "language_info", "jupytext", "widgets")


def normalized(nb: nbformat.NotebookNode) -> dict:
    meta = {k: v for k, v in nb.metadata.items() if k not in VOLATILE}
    cells = [
        {"type": c.cell_type, "source": c.source, "nbgrader": c.metadata.get("nbgrader"), "tags": c.metadata.get("tags", [])}
        for c in nb.cells
    ]
    return {"metadata": meta, "cells": cells}


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_source_notebook_matches_its_jupytext_script(assignment_id):
    script = ROOT / "solutions" / assignment_id / f"{assignment_id}.py"
    if not script.exists():
        pytest.skip("no jupytext twin")
    from_script = jupytext.read(script)
    got, want = normalized(solution_nb(assignment_id)), normalized(from_script)
    got["metadata"].get("course", {}).pop("graded_cells", None)
    assert got == want, f"solutions/{assignment_id}/{assignment_id}.ipynb is stale: run `make release`"


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_committed_release_is_fresh(assignment_id, tmp_path):
    generated = nbformat.read(generate_into(assignment_id, tmp_path), as_version=4)
    assert normalized(release_nb(assignment_id)) == normalized(generated), f"assignments/{assignment_id} is stale: run `make release` and commit"


@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_release_has_stubs_and_no_outputs(assignment_id):
    nb = release_nb(assignment_id)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert graded and all("raise NotImplementedError()" in c.source for c in graded)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["course"]["graded_cells"] == [c.metadata["nbgrader"]["grade_id"] for c in graded]
    # only the notebook is released (the jupytext twin holds solutions)
    assert sorted(p.name for p in (ROOT / "assignments" / assignment_id).iterdir()) == [f"{assignment_id}.ipynb"]
