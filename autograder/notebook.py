"""Reading submissions and taking the student's code out of them.

Only the cells whose nbgrader ``grade_id`` is a solution cell of the *release* run, in the
release's order; everything else a student wrote (experiments, plots, training runs) is ignored.
The imports/setup ("preamble") cells also come from the release, never from the submission.
"""
from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.sanitize import clean

MAX_SUBMISSION_BYTES = 50 * 2**20
MAX_JSON_DEPTH = 100  # a notebook needs about 10; deeper nesting only serves to crash parsers
MAX_CELLS = 5000  # the assignments have about 30 cells
MAX_CODE_CELL_CHARS = 1_000_000  # per code cell (markdown may embed images, it is not limited)
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
    except SubmissionError:
        raise
    except Exception as exc:  # noqa: BLE001 - corrupt archives raise zlib, bz2, lzma, CRC, EOF errors...
        raise SubmissionError(f"{zip_name} is not a readable zip file ({exc})") from None


def json_depth(data: bytes, chunk: int = 1 << 22) -> int:
    """How deeply arrays and objects nest in JSON ``data``, found without parsing it (strings skipped).

    Linear time and bounded memory (numpy, chunk by chunk): well under a second for 50 MB of any shape.
    """
    import numpy as np

    # Drop escaped backslashes and quotes: every quote left opens or closes a string.
    text = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    depth = deepest = 0
    in_string = 0
    for start in range(0, len(text), chunk):
        codes = np.frombuffer(text, np.uint8, count=min(chunk, len(text) - start), offset=start)
        inside = ((np.cumsum(codes == ord('"'), dtype=np.uint8) + in_string) & 1).view(bool)  # quote parity (mod 256 keeps it)
        steps = ((codes == ord("[")) | (codes == ord("{"))).view(np.int8) - ((codes == ord("]")) | (codes == ord("}"))).view(np.int8)
        steps[inside] = 0
        levels = np.cumsum(steps, dtype=np.int32) + depth
        deepest, depth, in_string = max(deepest, int(levels.max())), int(levels[-1]), int(inside[-1])
    return deepest


def _check_size(cells: list, name: str) -> None:
    """Refuse notebooks far beyond any real submission before anything expensive reads them."""
    if len(cells) > MAX_CELLS:
        raise SubmissionError(f"{name} has {len(cells)} cells; at most {MAX_CELLS} are accepted — submit the assignment notebook itself")
    for i, cell in enumerate(cells):
        if isinstance(cell, dict) and cell.get("cell_type") == "code":
            src = cell.get("source", "")
            size = sum(len(s) for s in src if isinstance(s, str)) if isinstance(src, list) else len(src) if isinstance(src, str) else 0
            if size > MAX_CODE_CELL_CHARS:
                raise SubmissionError(f"{name}: code cell {i + 1} has {size} characters; at most {MAX_CODE_CELL_CHARS} are accepted in one cell")


def _from_ipynb(data: bytes, name: str) -> nbformat.NotebookNode:
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise SubmissionError(f"{name} is not a notebook: its JSON nests {depth} levels deep (at most {MAX_JSON_DEPTH} are accepted)")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SubmissionError(f"{name} is not a notebook: it is not valid JSON ({type(exc).__name__}); download it again with File > Download > .ipynb") from None
    if not isinstance(raw, dict) or "cells" not in raw and "worksheets" not in raw:
        raise SubmissionError(f"{name} is JSON but not a Jupyter notebook (no cells)")
    major = raw.get("nbformat")
    if major != 4:
        raise SubmissionError(f"{name} uses notebook format {clean(repr(major), 40, 1)}; only nbformat 4 (Jupyter, Colab) is accepted — open it in Jupyter and save it again")
    if not isinstance(raw.get("cells"), list):
        raise SubmissionError(f"{name} is not a valid notebook: its 'cells' is not a list")
    _check_size(raw["cells"], name)
    try:
        nb = nbformat.from_dict(raw)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SubmissionError(f"{name} is not a valid notebook: {clean(first, 200, 1)}") from None
    return nb


def _from_python(data: bytes, name: str) -> nbformat.NotebookNode:
    import jupytext

    try:
        nb = jupytext.reads(data.decode("utf-8"), fmt="py:percent")
    except Exception as exc:  # noqa: BLE001
        raise SubmissionError(f"{name} could not be read as a percent-format script ({type(exc).__name__})") from None
    _check_size(nb.cells, name)
    return nb


@dataclass(frozen=True)
class GradedCell:
    grade_id: str
    header: str  # first code line of the release cell, used when a student's metadata was lost
    stub: str = ""  # the release cell's source


@dataclass
class Extraction:
    cells: list[tuple[str, str]]  # (grade_id, source) in release order, only the ones found
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Cell:
    """A code cell of the submission: its position (0-based) in the notebook, grade_id and source."""

    index: int
    grade_id: str | None
    source: str
    release_tagged: bool  # a preamble/check/setup cell: release material, never part of a student's cell


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {})
    meta = meta.get("nbgrader", {}) if isinstance(meta, dict) else None
    gid = meta.get("grade_id") if isinstance(meta, dict) else None
    return gid if isinstance(gid, str) else None


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(map(str, src)) if isinstance(src, list) else str(src)


def _normalized(source: str) -> str:
    """``source`` with all whitespace runs collapsed, to compare a cell with the release stub."""
    return " ".join(source.split())


def graded_cells(release: nbformat.NotebookNode) -> list[GradedCell]:
    """The solution cells of a release notebook, in order."""
    out = []
    for cell in release.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type == "code" and meta.get("solution") and _grade_id(cell):
            header = next((ln.strip() for ln in _source(cell).splitlines() if ln.strip() and not ln.strip().startswith("#")), "")
            out.append(GradedCell(_grade_id(cell), header, _source(cell)))
    return out


def preamble_sources(release: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """The release's imports/setup cells the grader runs before the student's cells."""
    return [
        (_grade_id(c) or f"preamble{i}", _source(c))
        for i, c in enumerate(release.cells)
        if c.cell_type == "code" and PREAMBLE_TAG in c.get("metadata", {}).get("tags", [])
    ]


def extract(submission: nbformat.NotebookNode, release: nbformat.NotebookNode) -> Extraction:
    """Take the student's graded cells out of ``submission``, matched to the release's grade_ids.

    A cell is found by its ``grade_id`` or, when its metadata was lost, by its first line. Where
    several cells qualify (Colab's "copy cell" keeps the metadata) the one the student worked in is
    graded (:func:`lecture_utils.submit.choose_copy`); a cell split in two is put back together.
    Notebook order does not matter: the cells are returned, and run, in the release's order.
    """
    code = [
        _Cell(i, _grade_id(c), _source(c), bool(RELEASE_TAGS & set(_tags(c))))
        for i, c in enumerate(submission.cells)
        if isinstance(c, dict) and c.get("cell_type") == "code"
    ]
    at = {c.index: c for c in code}
    used: set[int] = set()
    found: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    wanted = graded_cells(release)
    # 1. Cells that kept their grading metadata.
    for g in wanted:
        copies = [c for c in code if c.grade_id == g.grade_id]
        if copies:
            found[g.grade_id] = _take(g, copies, at, used, notes.setdefault(g.grade_id, []), labelled=True)
    # 2. Cells that lost it, found by the release cell's first code line; also tried when every
    #    labelled copy is still the stub (the student may have worked in a pasted copy).
    for g in wanted:
        labelled = [c for c in code if c.grade_id == g.grade_id]
        if labelled and not all(_unchanged(c, g) for c in labelled):
            continue
        matches = [c for c in code if c.grade_id is None and c.index not in used and not c.release_tagged and g.header
                   and any(ln.strip() == g.header for ln in c.source.splitlines())]
        if not matches or (labelled and all(_unchanged(c, g) for c in matches)):
            continue
        notes[g.grade_id] = []
        found[g.grade_id] = _take(g, matches, at, used, notes[g.grade_id], labelled=False)
        if labelled:
            notes[g.grade_id].insert(0, f"cell '{g.grade_id}' is still the unchanged stub; graded a cell without grading metadata that starts like it")
    result = Extraction(cells=[])
    for g in wanted:
        if g.grade_id in found:
            result.cells.append((g.grade_id, found[g.grade_id]))
            result.notes += notes.get(g.grade_id, [])
        else:
            result.missing.append(g.grade_id)
            result.notes.append(f"cell '{g.grade_id}' is missing from the notebook (do not delete or split the graded cells)")
    for gid, src in result.cells:
        try:
            ast.parse(src)
        except SyntaxError as exc:
            where = f"line {exc.lineno}: " if exc.lineno else ""
            result.notes.append(f"cell '{gid}' has a syntax error ({where}{exc.msg}); nothing in it can be graded")
        except (ValueError, MemoryError, RecursionError) as exc:  # null bytes, absurd nesting
            result.notes.append(f"cell '{gid}' cannot be compiled ({type(exc).__name__}); nothing in it can be graded")
    return result


RELEASE_TAGS = {PREAMBLE_TAG, "check", "setup"}
MAX_SPLIT_PARTS = 4
_TOP_NAME = re.compile(r"^(?:(?:async[ \t]+)?def|class)[ \t]+(\w+)|^(\w+)[ \t]*(?::[^=\n]*)?=(?!=)", re.M)


def _tags(cell) -> list:
    tags = cell.get("metadata", {}).get("tags", []) if isinstance(cell.get("metadata"), dict) else []
    return tags if isinstance(tags, list) else []


def _unchanged(cell: _Cell, g: GradedCell) -> bool:
    return _normalized(cell.source) == _normalized(g.stub)


def _top_names(source: str) -> set[str]:
    """Names a cell defines at top level (functions, classes, assignments); works on broken code too."""
    return {a or b for a, b in _TOP_NAME.findall(source)}


def _starts_indented(source: str) -> bool:
    """True when the first non-blank line is indented: the tail of a cell that was split."""
    first = next((ln for ln in source.splitlines() if ln.strip()), "")
    return first[:1] in (" ", "\t")


def _take(g: GradedCell, candidates: list[_Cell], at: dict[int, _Cell], used: set[int], notes: list[str], labelled: bool) -> str:
    """The source to grade for ``g`` among ``candidates`` (notebook order), with a note when it was a choice."""
    from lecture_utils.submit import choose_copy  # one rule for the grader and the student's export check

    i, why = choose_copy([c.source for c in candidates], [_unchanged(c, g) for c in candidates])
    parts = _split_parts(candidates[i], g, at, used)
    used.update(p.index for p in parts)
    n = len(candidates)
    if labelled and n > 1 and not all(c in parts for c in candidates):
        notes.append(f"cell '{g.grade_id}' appears {n} times; graded copy {i + 1} of {n} (notebook cell {candidates[i].index + 1}: {why}); delete the other copies")
    elif not labelled:
        where = "" if n == 1 else f" in {n} cells; graded notebook cell {candidates[i].index + 1} ({why})"
        notes.append(f"cell '{g.grade_id}' had no grading metadata; it was found by its first line '{g.header}'{where}")
    if len(parts) > 1:
        notes.append(f"cell '{g.grade_id}' is split over {len(parts)} cells (notebook cells {parts[0].index + 1}-{parts[-1].index + 1}); "
                     "they were graded together as one cell: merge them back into one")
    return "\n".join(p.source.rstrip("\n") for p in parts) + "\n" if len(parts) > 1 else parts[0].source


def _split_parts(chosen: _Cell, g: GradedCell, at: dict[int, _Cell], used: set[int]) -> list[_Cell]:
    """``chosen`` and the adjacent cells it was split from, in notebook order.

    A neighbour (no grading metadata, or the same grade_id, and not the unchanged stub) is a part
    when it defines something the release cell defines and ``chosen`` lacks, or when the later cell
    of the two starts indented (it continues the code of the earlier one).
    """
    parts = [chosen]
    missing = _top_names(g.stub) - _top_names(chosen.source)

    def joinable(cell: _Cell | None) -> bool:
        return (cell is not None and cell.index not in used and not cell.release_tagged
                and cell.grade_id in (None, g.grade_id) and not _unchanged(cell, g))

    while len(parts) < MAX_SPLIT_PARTS:
        before, after = at.get(parts[0].index - 1), at.get(parts[-1].index + 1)
        if joinable(before) and (missing & _top_names(before.source) or _starts_indented(parts[0].source)):
            parts.insert(0, before)
            missing -= _top_names(before.source)
        elif joinable(after) and (missing & _top_names(after.source) or _starts_indented(after.source)):
            parts.append(after)
            missing -= _top_names(after.source)
        else:
            break
    return parts
