"""Generated class data for the TA tools (no grading needed): used by their tests, the similarity benchmark
and the README screenshots (``benchmarks/ta_screenshots.py``).

* :func:`generated_results` writes what ``grade-batch`` leaves in ``FOLDER/_grading/`` for N students:
  Gradescope results with the suite's real test names and points, logs, a few submissions that were not
  notebooks and a few whose grader crashed (a log and no results).
* :func:`generated_submissions` writes N notebooks of an assignment whose graded cells are the solution's,
  each disguised (local names renamed, comments dropped) and some parts left as the release stub, plus a
  few copies of one another.
"""
from __future__ import annotations

import ast
import io
import json
import random
import re
import tokenize
from pathlib import Path

import nbformat

from autograder import assignments
from autograder.notebook import extract, graded_cells
from autograder.results import Results, TestResult

FAILURE_MESSAGES = [
    "{n} of {m} values differ (max abs diff {d:.3g}); first at index [0, {n}]: expected 0.{n}31 but got 0.{m}12",
    "shape differs: expected torch.Size([{m}, 4]) but got torch.Size([{n}, 4])",
    "NotImplementedError: (raised in your cell)",
    "dtype differs: expected torch.float64 but got torch.float32",
    "must not use torch.optim.SGD.step (called {n} times)",
    "timeout: the call took longer than 20 s",
]


def generated_results(folder: Path, n: int, assignment_id: str = "a1_pytorch", seed: int = 0,
                      not_notebooks: int = 1, crashed: int = 1) -> list[str]:
    """Write ``folder/_grading/<student>.{json,log}`` for ``n`` students; return the student ids."""
    from autograder.runner import collect

    rng = random.Random(seed)
    a = assignments.get(assignment_id)
    suite = collect(a)
    difficulty = {t.name: rng.betavariate(1.2, 6) for t in suite}  # most tests easy, a few hard
    message = {t.name: rng.choice(FAILURE_MESSAGES) for t in suite}
    out = folder / "_grading"
    out.mkdir(parents=True, exist_ok=True)
    students = [f"student{k:04d}" for k in range(n)]
    for k, sid in enumerate(students):
        if k < crashed:  # the grader died: a log, no results
            (out / f"{sid}.log").write_text("Traceback (most recent call last):\n  ...\nMemoryError\n")
            continue
        if k < crashed + not_notebooks:
            reason = f"{sid}.ipynb is not a notebook: it is not valid JSON (JSONDecodeError)"
            tests = [TestResult(t.name, 0.0, t.points, reason, status="failed") for t in suite]
            results = Results(a.id, tests, output=f"Not graded: {reason}", execution_time=rng.uniform(0.3, 0.8))
        else:
            skill = rng.betavariate(5, 1.5)
            tests = []
            for t in suite:
                ok = rng.random() < 1 - difficulty[t.name] * (1.6 - skill)
                text = "" if ok else message[t.name].format(n=rng.randint(1, 9), m=rng.randint(10, 99), d=rng.random())
                tests.append(TestResult(t.name, t.points if ok else 0.0, t.points, text, status="passed" if ok else "failed"))
            results = Results(a.id, tests, execution_time=max(1.0, rng.gauss(9.0, 2.0) + (12 if rng.random() < 0.05 else 0)))
        results.write(out / f"{sid}.json")
        (out / f"{sid}.log").write_text(results.summary() + "\nworker sandbox: generated (no grading)\n")
    return students


# ----------------------------------------------------------------------------- submissions
def rename_locals(source: str, prefix: str) -> str:
    """``source`` with every name assigned in it (locals, arguments after the first, loop variables) renamed and
    comments removed: how a student disguises a copy. Names used before they are bound (imports, globals) stay."""
    tree = ast.parse(source)
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, ast.arg) and node.arg not in ("self", "ctx", "cls"):
            bound.add(node.arg)
    # keyword arguments at call sites must keep their names: only rename where a NAME token is not followed by "="
    # inside a call; simpler and safe here: keep arguments that are passed by keyword anywhere in the cell
    keywords = {kw.arg for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords if kw.arg}
    mapping = {name: f"{prefix}{i}" for i, name in enumerate(sorted(bound - keywords))}
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            tok = tok._replace(string="")
        elif tok.type == tokenize.NAME and tok.string in mapping:
            tok = tok._replace(string=mapping[tok.string])
        out.append(tok)
    return re.sub(r"[ \t]+\n", "\n", tokenize.untokenize(out))


def notebook_with(release: nbformat.NotebookNode, cells: dict[str, str]) -> nbformat.NotebookNode:
    """A copy of the release whose graded cells in ``cells`` (grade_id -> source) are replaced."""
    nb = nbformat.from_dict(json.loads(nbformat.writes(release)))
    for cell in nb.cells:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in cells:
            cell.source = cells[gid]
    return nb


def solution_cells(assignment_id: str) -> dict[str, str]:
    """The solution's graded cells, grade_id -> source."""
    a = assignments.get(assignment_id)
    release = a.release()
    return dict(extract(nbformat.read(a.solution_path, as_version=4), release).cells)


def generated_submissions(folder: Path, n: int, assignment_id: str = "a1_pytorch", seed: int = 0, copies: int = 2) -> list[str]:
    """Write ``n`` notebooks ``folder/<student>.ipynb``; the last ``copies`` copy the first ones (renamed again)."""
    rng = random.Random(seed)
    a = assignments.get(assignment_id)
    release = a.release()
    solution = solution_cells(assignment_id)
    stubs = {g.grade_id: g.stub for g in graded_cells(release)}
    folder.mkdir(parents=True, exist_ok=True)
    students, written = [], []
    for k in range(n):
        sid = f"student{k:04d}"
        if k >= n - copies and written:
            cells = {gid: rename_locals(src, f"c{k}_") for gid, src in written[k % len(written)].items()}
        else:
            cells = {gid: (rename_locals(src, f"v{k}_") if rng.random() < 0.85 else stubs[gid]) for gid, src in solution.items()}
        written.append(cells)
        nbformat.write(notebook_with(release, cells), folder / f"{sid}.ipynb")
        students.append(sid)
    return students
