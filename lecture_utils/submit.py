"""Check an assignment notebook and write the file to upload.

    from lecture_utils import submit
    submit.export("a1_pytorch.ipynb")

Checks, in order: the notebook is valid nbformat 4; every graded cell of the assignment is
present, once (a duplicated graded cell is a warning that says which copy the autograder grades);
none still contains ``raise NotImplementedError``; the visible checks pass when the graded cells
run in a fresh Python process. Then it writes ``<name>_submission.ipynb``.
"""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

CHECK_TAG = "check"
PREAMBLE_TAG = "preamble"
STUB = "raise NotImplementedError"
# The line nbgrader puts where a solution goes (a bare raise, not one with a message of the student's).
_STUB_LINE = re.compile(r"^[ \t]*raise[ \t]+NotImplementedError(?:\([ \t]*\))?[ \t]*(?:#.*)?$", re.M)


def stub_raises(source: str) -> int:
    """How many bare ``raise NotImplementedError()`` lines (nbgrader's stub) ``source`` still has."""
    return len(_STUB_LINE.findall(source))


def choose_copy(sources: Sequence[str], unchanged: Sequence[bool]) -> tuple[int, str]:
    """Which of several copies of one graded cell is graded, and why (shared with the autograder).

    The copy the student worked in: one that differs from the release stub (``unchanged[i]`` is
    False) and has the fewest stub ``raise NotImplementedError()`` left; among equals, the last.
    """
    ranks = [(not same, -stub_raises(src)) for src, same in zip(sources, unchanged)]
    best = max(ranks)
    tied = [i for i, r in enumerate(ranks) if r == best]
    chosen = tied[-1]
    if not best[0]:
        why = "none of them differs from the stub: the last one"
    elif len(tied) > 1:
        why = f"the last of the {len(tied)} copies that differ from the stub"
    elif sum(not u for u in unchanged) == 1:
        why = "the one that differs from the stub"
    elif best[1] == 0:
        why = "the only one that differs from the stub and no longer raises NotImplementedError"
    else:
        why = "the one with the fewest `raise NotImplementedError()` left"
    return chosen, why


# Runs the cells it reads on stdin one after another and reports each as a JSON line.
_CELL_RUNNER = r"""
import json, sys, traceback, io, contextlib
import matplotlib
matplotlib.use("Agg")
cells = json.load(sys.stdin)
ns = {"__name__": "__main__"}
for name, src in cells:
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(src, f"<{name}>", "exec"), ns)
        print(json.dumps({"cell": name, "ok": True}), flush=True)
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}"
        print(json.dumps({"cell": name, "ok": False, "error": msg[:500]}), flush=True)
"""


@dataclass
class Report:
    notebook: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    output: Path | None = None
    submit_to: str | None = None  # where and by when to upload (lecture_utils/config.py)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.checks_failed

    def __str__(self) -> str:
        lines = [f"Submission check for {self.notebook}:"]
        lines += [f"  ✗ {p}" for p in self.problems]
        lines += [f"  ! {w}" for w in self.warnings]
        total = self.checks_passed + len(self.checks_failed)
        if total:
            lines.append(f"  {'✓' if not self.checks_failed else '✗'} visible checks: {self.checks_passed}/{total} pass")
            lines += [f"      {c}" for c in self.checks_failed]
        if self.output is not None:
            lines.append(f"  → wrote {self.output}" + ("" if self.ok else "  (you can submit it, but fix the problems above first for full marks)"))
        if self.ok:
            lines.append("  All good: upload the file above.")
        if self.submit_to:
            lines.append(f"  {self.submit_to}")
        return "\n".join(lines)


def _source(cell) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


def _graded(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if cell.cell_type == "code" and meta.get("solution") else None


def _unchanged(cell) -> bool:
    """True when a graded cell is still exactly as released: nbgrader's checksum of it still matches."""
    meta = cell.metadata.get("nbgrader", {})
    grade = meta.get("grade", False)
    parts = [_source(cell), cell.cell_type, str(grade), str(meta.get("solution", False)), "False", str(meta.get("grade_id", ""))]
    if grade:
        parts.append(str(float(meta.get("points", 0))))
    return hashlib.md5("".join(parts).encode(), usedforsecurity=False).hexdigest() == meta.get("checksum")


def graded_copies(nb: nbformat.NotebookNode) -> tuple[dict[str, int], list[str]]:
    """The position of the graded copy of each graded cell, and a warning for each duplicated one."""
    positions: dict[str, list[int]] = {}
    for i, cell in enumerate(nb.cells):
        if _graded(cell):
            positions.setdefault(_graded(cell), []).append(i)
    chosen, warnings = {}, []
    for gid, where in positions.items():
        cells = [nb.cells[i] for i in where]
        k, why = choose_copy([_source(c) for c in cells], [_unchanged(c) for c in cells])
        chosen[gid] = where[k]
        if len(where) > 1:
            warnings.append(f"graded cell '{gid}' appears {len(where)} times (a copied cell keeps its grading metadata); "
                            f"the autograder will grade copy {k + 1} of {len(where)} from the top ({why}). "
                            "Keep all your code for this cell in that copy and delete the other copies.")
    return chosen, warnings


def _load(notebook_path: str | Path) -> nbformat.NotebookNode:
    from lecture_utils.colab import in_colab

    if in_colab():  # the notebook lives in Drive: ask the Colab frontend for its current content
        from google.colab import _message  # type: ignore[import-not-found]

        return nbformat.from_dict(_message.blocking_request("get_ipynb", timeout_sec=60)["ipynb"])
    path = Path(notebook_path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: pass the path of this notebook, e.g. submit.export('a1_pytorch.ipynb'), and save it first")
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def check(nb: nbformat.NotebookNode, name: str, run_checks: bool = True, timeout: float = 600) -> Report:
    """Validate ``nb`` and (optionally) run its graded cells and visible checks in a fresh process."""
    report = Report(name)
    if nb.get("nbformat") != 4:
        report.problems.append(f"notebook format {nb.get('nbformat')} — save it with Jupyter or Colab (nbformat 4)")
        return report
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as exc:
        report.problems.append(f"invalid notebook: {str(exc).splitlines()[0]}")
    expected = list(nb.metadata.get("course", {}).get("graded_cells", []))
    chosen, report.warnings = graded_copies(nb)
    for gid in expected:
        if gid not in chosen:
            report.problems.append(f"graded cell '{gid}' is missing — do not delete or split graded cells (re-download the assignment and copy your code back)")
    for gid, i in chosen.items():
        if STUB in _source(nb.cells[i]):
            report.problems.append(f"graded cell '{gid}' still contains `raise NotImplementedError()`")
    if run_checks:  # the graded copy of each graded cell, the visible checks and the imports, in notebook order
        runnable = [
            (_graded(c) or ("check" if CHECK_TAG in c.metadata.get("tags", []) else "preamble"), _source(c))
            for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and (chosen.get(_graded(c)) == i if _graded(c) else {CHECK_TAG, PREAMBLE_TAG} & set(c.metadata.get("tags", [])))
        ]
        _run_checks(runnable, report, timeout)
    return report


def _run_checks(cells: list[tuple[str, str]], report: Report, timeout: float) -> None:
    try:
        proc = subprocess.run([sys.executable, "-c", _CELL_RUNNER], input=json.dumps(cells), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        report.checks_failed.append(f"the checks did not finish within {timeout:.0f} s (an infinite loop?)")
        return
    check_no = 0
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row["cell"] == "check":
            check_no += 1
            if row["ok"]:
                report.checks_passed += 1
            else:
                report.checks_failed.append(f"check #{check_no}: {row['error']}")
        elif not row["ok"]:
            report.checks_failed.append(f"cell '{row['cell']}' raised {row['error']}")


def export(notebook_path: str | Path, out: str | Path | None = None, run_checks: bool = True) -> Report:
    """Check the notebook and write ``<stem>_submission.ipynb`` (in Colab: also download it)."""
    nb = _load(notebook_path)
    stem = Path(notebook_path).stem
    report = check(nb, Path(notebook_path).name, run_checks=run_checks)
    if nb.get("nbformat") == 4:
        target = Path(out) if out else Path(notebook_path).with_name(f"{stem}_submission.ipynb")
        nbformat.write(nb, target)
        report.output = target
        from lecture_utils import config

        assignment = (nb.metadata.get("course") or {}).get("assignment") or stem.removesuffix("_submission")
        if assignment in config.DUE_DATES:
            report.submit_to = config.submission_line(assignment)
        from lecture_utils.colab import in_colab

        if in_colab():
            from google.colab import files  # type: ignore[import-not-found]

            files.download(str(target))
    print(report)
    return report
