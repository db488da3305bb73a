"""Check an assignment notebook and write the file to upload.

    from lecture_utils import submit
    submit.export("a1_pytorch.ipynb")

Checks, in order: the notebook is valid nbformat 4; every graded cell of the assignment is
present; none still contains ``raise NotImplementedError``; the visible checks pass when the
graded cells run in a fresh Python process. Then it writes ``<name>_submission.ipynb``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

CHECK_TAG = "check"
PREAMBLE_TAG = "preamble"
STUB = "raise NotImplementedError"

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
    checks_passed: int = 0
    checks_failed: list[str] = field(default_factory=list)
    output: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and not self.checks_failed

    def __str__(self) -> str:
        lines = [f"Submission check for {self.notebook}:"]
        lines += [f"  ✗ {p}" for p in self.problems]
        total = self.checks_passed + len(self.checks_failed)
        if total:
            lines.append(f"  {'✓' if not self.checks_failed else '✗'} visible checks: {self.checks_passed}/{total} pass")
            lines += [f"      {c}" for c in self.checks_failed]
        if self.output is not None:
            lines.append(f"  → wrote {self.output}" + ("" if self.ok else "  (you can submit it, but fix the problems above first for full marks)"))
        if self.ok:
            lines.append("  All good: upload the file above.")
        return "\n".join(lines)


def _source(cell) -> str:
    return "".join(cell.source) if isinstance(cell.source, list) else cell.source


def _graded(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    return meta.get("grade_id") if cell.cell_type == "code" and meta.get("solution") else None


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
    present = [gid for gid in map(_graded, nb.cells) if gid]
    for gid in expected:
        if gid not in present:
            report.problems.append(f"graded cell '{gid}' is missing — do not delete or split graded cells (re-download the assignment and copy your code back)")
    for cell in nb.cells:
        gid = _graded(cell)
        if gid and STUB in _source(cell):
            report.problems.append(f"graded cell '{gid}' still contains `raise NotImplementedError()`")
    if run_checks:
        runnable = [
            (_graded(c) or ("check" if CHECK_TAG in c.metadata.get("tags", []) else "preamble"), _source(c))
            for c in nb.cells
            if c.cell_type == "code" and (_graded(c) or {CHECK_TAG, PREAMBLE_TAG} & set(c.metadata.get("tags", [])))
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
        from lecture_utils.colab import in_colab

        if in_colab():
            from google.colab import files  # type: ignore[import-not-found]

            files.download(str(target))
    print(report)
    return report
