"""The grading pipeline end to end, on a1_pytorch: broken files, lost metadata, syntax errors, zip and .py submissions,
the CLI. (Its solution, release, parts, mutants and alternatives: test_grading_assignments.py, test_grading_a1.py.)"""
import json
import subprocess
import sys
import zipfile

import nbformat

from autograder.results import validate
from conftest import ROOT, cell_by_id, release_nb, solution_nb, solution_source, with_cells

A1 = "a1_pytorch"


# ----------------------------------------------------------------------------- broken submissions
def _assert_zero(results, reason_part):
    assert results.score == 0
    assert reason_part in results.output
    assert "Traceback" not in results.output.split("\n")[0]
    validate(results.to_gradescope())


def test_not_json_gives_zero_with_reason(grade, tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n binary garbage \x00\xff")
    _assert_zero(grade(bad), "not valid JSON")


def test_grading_computes_on_the_trusted_threads(grade, tmp_path):
    """The trusted process's torch work runs on runner.TRUSTED_THREADS threads, whatever the caller had set."""
    import torch

    from autograder.runner import TRUSTED_THREADS

    bad = tmp_path / "broken.ipynb"
    bad.write_bytes(b"not a notebook")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(TRUSTED_THREADS + 1)
        grade(bad)
        assert torch.get_num_threads() == TRUSTED_THREADS
    finally:
        torch.set_num_threads(before)


def test_nbformat_3_gives_zero_with_reason(grade, tmp_path):
    old = tmp_path / "old.ipynb"
    old.write_text(json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}))
    _assert_zero(grade(old), "notebook format 3")


def test_notebook_without_cells_gives_zero_with_reason(grade):
    _assert_zero(grade(nbformat.v4.new_notebook()), "no graded cells found")


def test_missing_graded_cell_loses_only_that_part(grade):
    nb = solution_nb(A1)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "optimizers"]
    results = grade(nb)
    assert results.score == 100 - 24
    assert "cell 'optimizers' is missing" in results.output


def test_cell_with_lost_metadata_is_found_by_its_first_line(grade):
    nb = solution_nb(A1)
    cell_by_id(nb, "graphs").metadata = {}
    results = grade(nb)
    assert results.score == 100
    assert "found by its first line" in results.output


def test_syntax_error_in_a_cell_is_reported_and_costs_that_cell(grade):
    nb = with_cells(solution_nb(A1), {"sigmoid": solution_source(A1, "sigmoid") + "\ndef broken(:\n    pass\n"})
    results = grade(nb)
    assert results.score == 100 - 8
    assert "cell 'sigmoid' has a syntax error" in results.output


def test_release_with_syntax_error_and_raise_at_import_gives_zero(grade):
    nb = with_cells(release_nb(A1), {"sigmoid": "def broken(:\n", "manual_step": "raise RuntimeError('boom at import')\n"})
    results = grade(nb)
    assert results.score == 0
    assert "RuntimeError: boom at import" in results.output and "syntax error" in results.output


def test_raise_at_import_in_the_first_cell_keeps_the_other_cells(grade):
    nb = with_cells(solution_nb(A1), {"manual_step": "raise ValueError('stop')\n" + solution_source(A1, "manual_step")})
    results = grade(nb)
    assert results.score == 100 - 15
    assert "cell 'manual_step' raised an error" in results.output


def test_student_edits_to_metadata_do_not_run_extra_cells(grade):
    nb = solution_nb(A1)
    hostile = nbformat.v4.new_code_cell("raise SystemExit('this cell must never run')")
    hostile.metadata["nbgrader"] = {"grade": False, "solution": True, "grade_id": "my_extra_cell", "locked": False}
    nb.cells.insert(0, hostile)
    setup = next(c for c in nb.cells if "preamble" in c.metadata.get("tags", []))
    setup.source = "raise SystemExit('the preamble comes from the release, not from the submission')"
    results = grade(nb)
    assert results.score == 100, results.output


def test_zip_and_py_submissions(grade, tmp_path):
    sol = ROOT / "solutions" / A1 / f"{A1}.ipynb"
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(sol, f"student/{A1}.ipynb")
    assert grade(archive).score == 100
    import jupytext

    script = tmp_path / "submission.py"
    jupytext.write(nbformat.read(sol, as_version=4), script, fmt="py:percent")
    assert grade(script).score == 100


def test_cli_grades_and_writes_valid_results_json(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "autograder", "grade", "--assignment", A1, str(ROOT / "assignments" / A1 / f"{A1}.ipynb"), "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0 / 100 points" in proc.stdout
    data = json.loads(out.read_text())
    validate(data)
    assert data["score"] == 0 and data["max_score"] == 100 and len(data["tests"]) > 20
