"""Reading submissions and taking the student's code out of them.

Only the cells whose nbgrader ``grade_id`` is a solution cell of the *release* run, in the
release's order; everything else a student wrote (experiments, plots, training runs) is ignored.
The imports/setup ("preamble") cells also come from the release, never from the submission.
"""
from __future__ import annotations

import ast
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

MAX_SUBMISSION_BYTES = 50 * 2**20
PREAMBLE_TAG = "preamble"


class SubmissionError(Exception):
    """The file is not a gradable notebook; the message is one line for the student."""


def read_submission(path: str | Path) -> nbformat.NotebookNode:
    """Load a ``.ipynb``, a ``.py`` (jupytext percent export) or a ``.zip`` holding one of them."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path.name}: no such file")
    if path.stat().st_size > MAX_SUBMISSION_BYTES:
        raise SubmissionError(f"{path.name} is larger than {MAX_SUBMISSION_BYTES // 2**20} MB; clear the outputs and submit again")
    data = path.read_bytes()
    name = path.name
    if zipfile.is_zipfile(io.BytesIO(data)):
        name, data = _from_zip(data, path.name)
    if name.endswith(".py"):
        return _from_python(data, name)
    return _from_ipynb(data, name)


def _from_zip(data: bytes, zip_name: str) -> tuple[str, bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = [i for i in zf.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX")]
            notebooks = [i for i in members if i.filename.endswith(".ipynb") and ".ipynb_checkpoints" not in i.filename]
            candidates = notebooks or [i for i in members if i.filename.endswith(".py")]
            if len(candidates) != 1:
                raise SubmissionError(f"{zip_name} must contain exactly one .ipynb notebook (found {len(candidates)})")
            info = candidates[0]
            if info.file_size > MAX_SUBMISSION_BYTES:
                raise SubmissionError(f"{info.filename} in {zip_name} is too large")
            return info.filename, zf.read(info)
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise SubmissionError(f"{zip_name} is not a readable zip file ({exc})") from None


def _from_ipynb(data: bytes, name: str) -> nbformat.NotebookNode:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SubmissionError(f"{name} is not a notebook: it is not valid JSON ({type(exc).__name__}); download it again with File > Download > .ipynb") from None
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        raise SubmissionError(f"{name} is JSON but not a Jupyter notebook (no cells)")
    major = raw.get("nbformat")
    if major != 4:
        raise SubmissionError(f"{name} uses notebook format {major!r}; only nbformat 4 (Jupyter, Colab) is accepted — open it in Jupyter and save it again")
    try:
        nb = nbformat.from_dict(raw)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SubmissionError(f"{name} is not a valid notebook: {first[:200]}") from None
    return nb


def _from_python(data: bytes, name: str) -> nbformat.NotebookNode:
    import jupytext

    try:
        return jupytext.reads(data.decode("utf-8"), fmt="py:percent")
    except Exception as exc:  # noqa: BLE001
        raise SubmissionError(f"{name} could not be read as a percent-format script ({type(exc).__name__})") from None


@dataclass(frozen=True)
class GradedCell:
    grade_id: str
    header: str  # first code line of the release cell, used when a student's metadata was lost


@dataclass
class Extraction:
    cells: list[tuple[str, str]]  # (grade_id, source) in release order, only the ones found
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader", {})
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def graded_cells(release: nbformat.NotebookNode) -> list[GradedCell]:
    """The solution cells of a release notebook, in order."""
    out = []
    for cell in release.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and _grade_id(cell):
            header = next((ln.strip() for ln in _source(cell).splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
            out.append(GradedCell(_grade_id(cell), header))
    return out


def preamble_sources(release: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """The release's imports/setup cells the grader runs before the student's cells."""
    return [
        (_grade_id(c) or f"preamble{i}", _source(c))
        for i, c in enumerate(release.cells)
        if c.cell_type == "code" and PREAMBLE_TAG in c.get("metadata", {}).get("tags", [])
    ]


def extract(submission: nbformat.NotebookNode, release: nbformat.NotebookNode) -> Extraction:
    """Take the student's graded cells out of ``submission``, matched to the release's grade_ids."""
    by_id: dict[str, str] = {}
    unlabelled: list[str] = []
    for cell in submission.cells:
        if cell.get("cell_type") != "code":
            continue
        gid = _grade_id(cell)
        if gid is not None:
            by_id.setdefault(gid, _source(cell))
        else:
            unlabelled.append(_source(cell))
    result = Extraction(cells=[])
    for graded in graded_cells(release):
        if graded.grade_id in by_id:
            result.cells.append((graded.grade_id, by_id[graded.grade_id]))
            continue
        # Metadata lost (copy-pasted cell, another editor): find the cell by its first line.
        match = next((src for src in unlabelled if graded.header and any(ln.strip() == graded.header for ln in src.splitlines())), None)
        if match is not None:
            result.cells.append((graded.grade_id, match))
            result.notes.append(f"cell '{graded.grade_id}' had no grading metadata; it was found by its first line '{graded.header}'")
        else:
            result.missing.append(graded.grade_id)
            result.notes.append(f"cell '{graded.grade_id}' is missing from the notebook (do not delete or split the graded cells)")
    for gid, src in result.cells:
        try:
            ast.parse(src)
        except SyntaxError as exc:
            result.notes.append(f"cell '{gid}' has a syntax error (line {exc.lineno}: {exc.msg}); nothing in it can be graded")
    return result
