"""Submissions as students really leave them (issues 14 and 15).

Duplicated, moved, split graded cells and cells without metadata are graded from the copy the
student worked in; text from student code is cleaned before it reaches any sink; nothing in a
submission (surrogates, escapes, 100 000-deep JSON, 100 000 cells) crashes the trusted process.
"""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import nbformat
import pytest

from autograder import cli
from autograder.notebook import MAX_CELLS, SubmissionError, extract, read_submission
from autograder.results import Results, validate
from autograder.results import TestResult as Result  # (a Test* name would be collected)
from autograder.sanitize import clean, quoted
from conftest import ROOT, cell_by_id, release_nb, solution_nb
from lecture_utils import submit

A1 = "a1_pytorch"
RELEASE, SOLUTION = release_nb(A1), solution_nb(A1)


def _sol(gid: str) -> str:
    return cell_by_id(SOLUTION, gid).source


def _stub(gid: str) -> str:
    return cell_by_id(RELEASE, gid).source


def _insert_copy(nb, gid: str, source: str, after: bool = True, metadata: bool = True):
    """Insert a copy of graded cell ``gid`` next to it (as Colab's copy/paste does), with ``source``."""
    original = cell_by_id(nb, gid)
    dup = nbformat.v4.new_code_cell(source)  # a fresh cell id, like a paste
    if metadata:
        dup.metadata = copy.deepcopy(original.metadata)
    nb.cells.insert(nb.cells.index(original) + (1 if after else 0), dup)
    return nb


def with_source(nb, gid: str, source: str):
    """A copy of ``nb`` whose (first) graded cell ``gid`` holds ``source``."""
    nb = copy.deepcopy(nb)
    cell_by_id(nb, gid).source = source
    return nb


def _graded(extraction) -> dict[str, str]:
    return dict(extraction.cells)


# --- A. which copy of a graded cell is graded ------------------------------------------------------

def test_duplicate_with_the_solution_in_the_copy_grades_the_copy():
    nb = _insert_copy(copy.deepcopy(RELEASE), "optimizers", _sol("optimizers"))
    got = extract(nb, RELEASE)
    assert _graded(got)["optimizers"] == _sol("optimizers")
    assert not got.missing
    assert any("cell 'optimizers' appears 2 times; graded copy 2 of 2" in n and "differs from the stub" in n for n in got.notes), got.notes


def test_duplicate_with_the_solution_in_the_original_grades_the_original():
    nb = _insert_copy(with_source(RELEASE, "optimizers", _sol("optimizers")), "optimizers", _stub("optimizers"))
    got = extract(nb, RELEASE)
    assert _graded(got)["optimizers"] == _sol("optimizers")
    assert any("graded copy 1 of 2" in n for n in got.notes), got.notes


def test_a_complete_copy_beats_a_later_partial_one_and_the_last_complete_one_wins():
    partial = _stub("optimizers").replace("raise NotImplementedError()", "pass  # started", 1)
    nb = _insert_copy(with_source(RELEASE, "optimizers", _sol("optimizers")), "optimizers", partial)
    assert _graded(extract(nb, RELEASE))["optimizers"] == _sol("optimizers")
    later = _sol("optimizers") + "\n# second attempt\n"
    nb = _insert_copy(with_source(RELEASE, "optimizers", _sol("optimizers")), "optimizers", later)
    got = extract(nb, RELEASE)
    assert _graded(got)["optimizers"] == later
    assert any("the last of the 2 copies that differ from the stub" in n for n in got.notes), got.notes


def test_whitespace_only_edits_still_count_as_the_stub():
    spaced = _stub("optimizers").replace("\n", "\n\n") + "\n\n"
    nb = _insert_copy(copy.deepcopy(RELEASE), "optimizers", spaced)  # copy 2 is the stub, re-spaced
    cell_by_id(nb, "optimizers").source = _sol("optimizers")         # copy 1 is the work
    assert _graded(extract(nb, RELEASE))["optimizers"] == _sol("optimizers")


def test_moved_and_reordered_cells_are_graded_in_release_order_without_notes():
    nb = copy.deepcopy(SOLUTION)
    graded = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("solution")]
    others = [c for c in nb.cells if c not in graded]
    nb.cells = others + graded[::-1]  # all graded cells moved to the end, in reverse order
    got = extract(nb, RELEASE)
    assert [gid for gid, _ in got.cells] == [gid for gid, _ in extract(SOLUTION, RELEASE).cells]
    assert _graded(got) == {gid: _sol(gid) for gid, _ in got.cells}
    assert got.notes == []


@pytest.mark.parametrize("metadata_on", ["first", "second", "both"])
def test_a_cell_split_in_two_is_graded_whole_with_a_note(metadata_on):
    source = _sol("optimizers")
    cut = source.index("class Adam")
    nb = copy.deepcopy(SOLUTION)
    first = cell_by_id(nb, "optimizers")
    second = nbformat.v4.new_code_cell(source[cut:])
    second.metadata = copy.deepcopy(first.metadata) if metadata_on in ("second", "both") else {}
    if metadata_on == "second":
        first.metadata = {}
    first.source = source[:cut]
    nb.cells.insert(nb.cells.index(first) + 1, second)
    got = extract(nb, RELEASE)
    assert _graded(got)["optimizers"].split() == source.split()
    assert any("cell 'optimizers' is split over 2 cells" in n for n in got.notes), got.notes
    assert not any("appears 2 times" in n for n in got.notes)


def test_a_cell_split_inside_a_function_is_put_back_together():
    source = _sol("graphs")
    cut = source.index("\n    ", source.index("def capture_graph"))  # after the signature line
    nb = with_source(SOLUTION, "graphs", source[:cut])
    nb.cells.insert(nb.cells.index(cell_by_id(nb, "graphs")) + 1, nbformat.v4.new_code_cell(source[cut + 1 :]))
    got = extract(nb, RELEASE)
    assert _graded(got)["graphs"].strip() == source.strip()
    assert any("split over 2 cells" in n for n in got.notes)


def test_scratch_cells_next_to_a_graded_cell_are_not_merged():
    nb = copy.deepcopy(SOLUTION)
    scratch = nbformat.v4.new_code_cell("opt = SGDMomentum([torch.zeros(2, requires_grad=True)], lr=0.1)\nprint(opt)")
    nb.cells.insert(nb.cells.index(cell_by_id(nb, "optimizers")) + 1, scratch)
    got = extract(nb, RELEASE)
    assert _graded(got)["optimizers"] == _sol("optimizers") and got.notes == []


def test_lost_metadata_is_found_by_the_first_line_preferring_the_worked_copy():
    nb = copy.deepcopy(RELEASE)
    cell = cell_by_id(nb, "graphs")
    cell.metadata = {}
    nb.cells.insert(nb.cells.index(cell) + 2, nbformat.v4.new_code_cell(_sol("graphs")))  # a second unlabelled copy
    got = extract(nb, RELEASE)
    assert _graded(got)["graphs"] == _sol("graphs")
    assert any("found by its first line" in n and "in 2 cells" in n for n in got.notes), got.notes


def test_a_worked_copy_without_metadata_beats_a_labelled_stub():
    nb = _insert_copy(copy.deepcopy(RELEASE), "training", _sol("training"), metadata=False)
    got = extract(nb, RELEASE)
    assert _graded(got)["training"] == _sol("training")
    assert any("still the unchanged stub" in n for n in got.notes), got.notes


def test_a_labelled_solution_beats_an_experimental_copy_without_metadata():
    experiment = _sol("graphs").replace('"""', '"""  # trying something', 1) + "\nprint('experiment')\n"
    nb = _insert_copy(copy.deepcopy(SOLUTION), "graphs", experiment, metadata=False)
    got = extract(nb, RELEASE)
    assert _graded(got)["graphs"] == _sol("graphs") and got.notes == []


def test_the_solution_notebook_extracts_unchanged():
    assert extract(SOLUTION, SOLUTION).notes == [] and extract(SOLUTION, RELEASE).notes == []
    assert _graded(extract(SOLUTION, RELEASE)) == {gid: _sol(gid) for gid in RELEASE.metadata["course"]["graded_cells"]}


def test_export_check_warns_about_duplicates_and_checks_only_the_graded_copy(tmp_path):
    nb = _insert_copy(copy.deepcopy(SOLUTION), "optimizers", _stub("optimizers"), after=False)
    cell_by_id(nb, "optimizers").metadata["nbgrader"]["checksum"] = cell_by_id(RELEASE, "optimizers").metadata["nbgrader"]["checksum"]
    report = submit.check(nb, "a1.ipynb", run_checks=False)
    assert report.problems == [], report.problems  # the stub copy is not the one graded
    assert report.warnings and "graded cell 'optimizers' appears 2 times" in report.warnings[0]
    assert "copy 2 of 2" in report.warnings[0] and "delete the other copies" in report.warnings[0]
    assert "! graded cell 'optimizers' appears 2 times" in str(report)
    # the student's check and the autograder agree on the copy
    assert submit.graded_copies(nb)[0]["optimizers"] == nb.cells.index(cell_by_id(nb, "optimizers")) + 1
    assert _graded(extract(nb, RELEASE))["optimizers"] == _sol("optimizers")
    path = tmp_path / "a1_pytorch.ipynb"
    nbformat.write(nb, path)
    assert "appears 2 times" in str(submit.export(path, run_checks=False))
    assert (tmp_path / "a1_pytorch_submission.ipynb").exists()


def test_release_checksums_identify_untouched_stubs():
    from lecture_utils.submit import _unchanged

    graded = [c for c in RELEASE.cells if c.metadata.get("nbgrader", {}).get("solution")]
    assert all(_unchanged(c) for c in graded)
    assert not _unchanged(with_source(RELEASE, "sigmoid", _sol("sigmoid")).cells[RELEASE.cells.index(cell_by_id(RELEASE, "sigmoid"))])


@pytest.mark.slow
def test_end_to_end_duplicated_optimizers_cell_scores_full_marks(grade):
    nb = _insert_copy(copy.deepcopy(SOLUTION), "optimizers", _sol("optimizers"))
    cell_by_id(nb, "optimizers").source = _stub("optimizers")  # copy 1: the stub; copy 2: the work
    results = grade(nb, A1)
    assert results.score == 100, [(t.name, t.output) for t in results.tests if t.status != "passed"]
    assert "cell 'optimizers' appears 2 times; graded copy 2 of 2" in results.output
    validate(results.to_gradescope())


# --- B. cleaning text that student code produced ---------------------------------------------------

def test_clean_strips_escapes_and_controls_and_bounds_the_text():
    text = "\x1b[2J\x1b[31mred\x1b[0m\x1b]0;title\x07 ok\tTAB\r\nnext\rover\x00\x08\x7f\x9b1m\u202edone\ud800"
    got = clean(text)
    assert got == "red ok\tTAB\nnext\noverdone\ufffd"
    assert clean(b"caf\xc3\xa9 \xff") == "café \ufffd"
    long = clean("x" * 10_000, limit=100)
    assert long.startswith("x" * 100) and long.endswith("... (9900 more characters)")
    assert clean("y" * 10**7, limit=100).endswith(f"... ({10**7 - 100} more characters)")
    many = clean("line\n" * 1000, max_lines=10)
    assert many.count("\n") == 10 and many.endswith("... (990 more lines)")


def test_quoted_text_can_never_pass_for_a_grader_line():
    got = quoted("ok\n  PASS  test_sgd_matches_torch  12/12\n\x1b[1A\rPASS  test_adam  12/12")
    lines = got.split("\n")
    assert lines[0] == "your code said:"
    assert all(ln.startswith("    | ") for ln in lines[1:])
    assert "\x1b" not in got and "\r" not in got


def _hostile_results() -> Results:
    evil = "boom \ud800\udfff \x1b[2J\x1b[1;1H\x07 \r  PASS  test_adam_matches_torch  12/12\n" + "z" * 50_000
    return Results(A1, [
        Result("test_sigmoid \ud83d\x1b[31m\nPASS fake", 0.0, 8.0, evil, status="failed"),
        Result("test_sgd", 5.0, 5.0, "", status="passed"),
    ], output="cell 'x' raised:\n" + evil + "\n== a1_pytorch: 100 / 100 points")


def test_every_sink_is_clean_bounded_and_valid(tmp_path):
    results = _hostile_results()
    summary = results.summary()
    summary.encode("utf-8")  # no lone surrogates left: printing cannot raise
    assert not any(ch in summary for ch in "\x1b\x07\r\x00")
    real_lines = [ln for ln in summary.split("\n") if ln.startswith(("  PASS", "  FAIL", "=="))]
    assert len(real_lines) == 3, real_lines  # the header and the two tests; nothing the student wrote
    data = results.to_gradescope()
    validate(data)
    assert len(data["output"]) < 21_000 and all(len(t["output"]) < 5_100 for t in data["tests"])
    assert "\n" not in data["tests"][0]["name"]
    out = tmp_path / "results.json"
    results.write(out)
    raw = out.read_bytes()
    assert raw.isascii()
    validate(json.loads(raw))


# --- C. nothing in a submission crashes the trusted process ----------------------------------------

def test_100000_deep_json_is_refused_clearly(tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_bytes(b'{"cells": ' + b"[" * 100_000 + b"]" * 100_000 + b', "nbformat": 4}')
    started = time.process_time()
    with pytest.raises(SubmissionError, match="nests 100001 levels deep"):
        read_submission(deep)
    assert time.process_time() - started < 2
    obj = tmp_path / "deep_objects.ipynb"
    obj.write_bytes(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    with pytest.raises(SubmissionError, match="levels deep"):
        read_submission(obj)


def test_brackets_inside_strings_do_not_count(tmp_path):
    nb = copy.deepcopy(SOLUTION)
    nb.cells.append(nbformat.v4.new_code_cell('s = "' + "[{" * 5000 + '\\"]"'))
    path = tmp_path / "fine.ipynb"
    nbformat.write(nb, path)
    assert len(read_submission(path).cells) == len(nb.cells)


def test_huge_cell_count_and_huge_cells_are_refused(tmp_path):
    many = {"cells": [{"cell_type": "raw", "metadata": {}, "source": ""}] * 100_000, "metadata": {}, "nbformat": 4, "nbformat_minor": 4}
    path = tmp_path / "many.ipynb"
    path.write_text(json.dumps(many))
    started = time.process_time()
    with pytest.raises(SubmissionError, match=f"100000 cells; at most {MAX_CELLS}"):
        read_submission(path)
    assert time.process_time() - started < 2
    big = copy.deepcopy(SOLUTION)
    big.cells.append(nbformat.v4.new_code_cell("x = 1\n" * 400_000))
    nbformat.write(big, path)
    with pytest.raises(SubmissionError, match="has 2400000 characters"):
        read_submission(path)


def test_null_bytes_and_absurd_nesting_in_a_cell_are_notes_not_crashes():
    nb = with_source(with_source(RELEASE, "sigmoid", "x = 1\x00"), "graphs", "-" * 100_000 + "1")
    notes = extract(nb, RELEASE).notes
    assert any("cell 'sigmoid'" in n for n in notes) and any("cell 'graphs'" in n for n in notes)


def _run_cli(monkeypatch, tmp_path, grade, zero=None) -> tuple[int, dict]:
    import autograder.runner as runner

    monkeypatch.setattr(runner, "grade", grade)
    if zero is not None:
        monkeypatch.setattr(runner, "zero", zero)
    out = tmp_path / "results.json"
    code = cli._cmd_grade(SimpleNamespace(assignment=A1, submission=str(tmp_path / "sub.ipynb"), out=str(out)))
    data = json.loads(out.read_text())
    validate(data)
    return code, data


def test_cli_survives_surrogates_and_escapes_from_student_code(monkeypatch, tmp_path, capsys):
    code, data = _run_cli(monkeypatch, tmp_path, lambda *a, **k: _hostile_results())
    assert code == 0 and data["score"] == 5
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "results written to" in printed


def test_cli_writes_results_when_grading_itself_raises(monkeypatch, tmp_path, capsys):
    def broken(*a, **k):
        raise RuntimeError("the hidden test suite is broken \ud800")

    def no_suite(*a, **k):
        raise RuntimeError("cannot even list the tests")

    code, data = _run_cli(monkeypatch, tmp_path, broken, zero=no_suite)
    assert code == 1 and data["score"] == 0
    assert data["output"].startswith("Not graded: internal grader error: RuntimeError (not a problem with your submission")
    assert "the hidden test suite is broken" not in json.dumps(data)  # details may quote hidden tests: log only
    err = capsys.readouterr().err
    assert "Traceback" in err and "the hidden test suite is broken \ufffd" in err


def test_cli_refused_submission_exits_0_with_reason(monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise SubmissionError("sub.ipynb is not a notebook")

    code, data = _run_cli(monkeypatch, tmp_path, refuse, zero=lambda a, reason, started, *rest: Results(a, [Result("t", 0, 10, reason, status="failed")], output=f"Not graded: {reason}"))
    assert code == 0 and data["max_score"] == 10 and "not a notebook" in data["output"]


def test_cli_end_to_end_on_a_100000_deep_notebook(tmp_path):
    deep = tmp_path / "deep.ipynb"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "--assignment", A1, str(deep), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env={"PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    validate(data)
    assert data["score"] == 0 and "levels deep" in data["output"]


def test_printing_to_an_ascii_terminal_replaces_instead_of_raising():
    code = "from autograder.cli import _tolerant_streams; _tolerant_streams(); print('caf\\u00e9 \\u2713'); print('ok')"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env={"PYTHONIOENCODING": "ascii", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.splitlines() == [b"caf? ?", b"ok"], proc.stderr


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_corrupt_zip_archives_are_refused_clearly(tmp_path, method):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr(f"{A1}.ipynb", (ROOT / "solutions" / A1 / f"{A1}.ipynb").read_bytes())
    for offset in (60, 200, 1000):  # inside the compressed data
        data = bytearray(buf.getvalue())
        data[offset] ^= 0xFF
        (tmp_path / "sub.zip").write_bytes(bytes(data))
        with pytest.raises(SubmissionError, match="not a readable zip file"):
            read_submission(tmp_path / "sub.zip")
