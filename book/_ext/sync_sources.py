"""Write the book's executable pages (.ipynb) from their MyST-markdown sources in book/_src.

Authors edit ``book/_src/<chapter>/<page>.md`` (readable diffs); the book and its Colab launch
buttons need ``book/<chapter>/<page>.ipynb``. ``make book`` runs this first; a test checks that the
committed notebooks are in sync.

Every notebook that imports ``lecture_utils`` gets the Colab setup cell of
``lecture_utils/config.py`` (``SETUP_CELL``, the single template) as its first code cell: the chapter
notebooks here, the assignments in ``solutions/<id>/<id>.py`` (their cell tagged ``setup``, from which
``make release`` makes the notebooks). In the book the cell is removed from the page (tag
``remove-cell``); outside Colab it does nothing.

It also writes, from the assignments' manifests (``autograder/manifests/<id>.toml``, read with
``autograder.assignments``; nothing of the solutions or hidden tests), the assignment table of
``book/assignments/index.md`` (between the ``assignments-table`` markers) and the points column of each
assignment page's table of parts (``book/assignments/<id>.md``, between the ``part-points`` markers): a
row per ``## Part N`` section of the release notebook, its points those of the graded cells in it. The
rest of that table (what the student implements) is written by hand.

    python book/_ext/sync_sources.py          # write the notebooks that changed
    python book/_ext/sync_sources.py --check  # exit 1 if any is stale
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import jupytext
import nbformat

from lecture_utils.config import SETUP_CELL

BOOK = Path(__file__).resolve().parents[1]
SOURCES = BOOK / "_src"
SOLUTIONS = BOOK.parent / "solutions"
IMPORTS_HELPERS = re.compile(r"^\s*(from|import)\s+lecture_utils\b", re.M)
SETUP_TAGS = ["setup", "remove-cell"]


def with_setup_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Put the setup cell before the first code cell of a notebook that imports lecture_utils."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    if code and any(IMPORTS_HELPERS.search(nb.cells[i].source) for i in code):
        nb.cells.insert(code[0], nbformat.v4.new_code_cell(SETUP_CELL, metadata={"tags": list(SETUP_TAGS)}))
    return nb


def rendered(source: Path) -> str:
    nb = jupytext.read(source, fmt="myst")
    nb.metadata.pop("jupytext", None)
    with_setup_cell(nb)
    for i, cell in enumerate(nb.cells):  # stable ids: jupytext makes random ones
        cell.id = f"cell-{i}"
    return nbformat.writes(nb) + "\n"


TABLE_PAGE = BOOK / "assignments" / "index.md"
TABLE_START, TABLE_END = "<!-- assignments-table:start (written by make book from the manifests) -->", "<!-- assignments-table:end -->"
POINTS_START, POINTS_END = "<!-- part-points:start (the points column is written by make book from the manifest) -->", "<!-- part-points:end -->"
POINTS_HEADER = ("| part | you implement | points |", "|---|---|---|")
PART_HEADING = re.compile(r"^##\s+Part\s+(\d+)\b", re.M)  # a section of the release notebook
POINTS_ROW = re.compile(r"\|\s*(\d+)\s*\|(.*)\|([^|]*)\|\s*")  # | N | what the student implements | points |


class PageError(ValueError):
    """A book page the manifests cannot be written into (the message says which and why)."""


def section_points(a) -> dict[int, float]:
    """{N: points} of the release notebook's sections (``## Part N`` headings, in order): the manifest's points of the
    graded cells between that heading and the next."""
    points: dict[int, float] = {}
    cells = {p.cell: p.points for p in a.parts}
    section = None
    for cell in a.release().cells:
        heading = PART_HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            section = int(heading.group(1))
            points.setdefault(section, 0.0)
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in cells:
            if section is None:
                raise PageError(f"assignments/{a.id}: graded cell {grade_id!r} comes before the first '## Part N' heading")
            points[section] += cells.pop(grade_id)
    if cells:
        raise PageError(f"assignments/{a.id}: the manifest's parts {sorted(cells)} are not graded cells of the release (run `make release`)")
    return points


def rendered_points_page(a, text: str | None = None) -> str:
    """``book/assignments/<id>.md`` (or ``text``, a version of it) with the points column of its parts table written
    from the manifest."""
    page = BOOK / "assignments" / f"{a.id}.md"
    where = page.relative_to(BOOK.parent)
    if text is None and not page.is_file():
        raise PageError(f"{where}: {a.id} is released but has no book page (see README, Adding an assignment)")
    head, start, rest = (page.read_text() if text is None else text).partition(POINTS_START)
    table, end, tail = rest.partition(POINTS_END)
    if not (start and end):
        raise PageError(f"{where}: no parts table between {POINTS_START} and {POINTS_END}")
    lines = table.strip("\n").split("\n")
    if tuple(lines[:2]) != POINTS_HEADER:
        raise PageError(f"{where}: the parts table must start with {' / '.join(POINTS_HEADER)}")
    points, rows, numbers = section_points(a), list(lines[:2]), []
    for line in lines[2:]:
        row = POINTS_ROW.fullmatch(line)
        if row is None:
            raise PageError(f"{where}: not a row '| N | what you implement | points |': {line!r}")
        numbers.append(int(row.group(1)))
        rows.append(f"| {row.group(1)} |{row.group(2)}| {points.get(numbers[-1], 0):g} |")
    if numbers != list(points):
        raise PageError(f"{where}: the table's parts {numbers} are not the notebook's parts {list(points)} (one row per '## Part N')")
    return f"{head}{POINTS_START}\n" + "\n".join(rows) + f"\n{POINTS_END}{tail}"


def assignment_table() -> str:
    """The book's table of assignments, one row per manifest: a list-table with a class, so that
    book/_static/course.css can size its columns (it fits a phone's width)."""
    from autograder import assignments

    rows = ["```{list-table}", ":header-rows: 1", ":class: assignments-table", ":widths: 50 22 28", "",
            "* - assignment", "  - lecture", "  - graded"]
    for a in assignments.all_assignments(include_drafts=True):
        lecture = a.lecture.split("·")[0].strip()
        if a.status == "released":
            rows += [f"* - {{doc}}`{a.id}`", f"  - {lecture}", f"  - {len(section_points(a))} parts, {a.total_points:g} points"]
        else:
            rows += [f"* - {a.title} *(coming)*", f"  - {lecture}", "  - —"]
    return "\n".join(rows + ["```"])


def rendered_table_page() -> str:
    text = TABLE_PAGE.read_text()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{assignment_table()}\n{TABLE_END}{tail}"


def generated_pages() -> list[tuple[Path, str]]:
    """The book pages written from the manifests, with their text: the index table and each released assignment's page."""
    from autograder import assignments

    return [(TABLE_PAGE, rendered_table_page())] + [(BOOK / "assignments" / f"{a.id}.md", rendered_points_page(a)) for a in assignments.all_assignments()]


SETUP_HEADER = re.compile(r'^# %%.*tags=\[[^\]]*"setup"[^\]]*\].*$', re.M)


def solution_with_setup_cell(script: Path) -> str:
    """An assignment's jupytext source with its ``setup``-tagged cell replaced by the template."""
    text = script.read_text()
    header = SETUP_HEADER.search(text)
    if header is None:
        raise SystemExit(f"{script}: no cell tagged setup (`# %% tags=[\"setup\"]`) before the imports")
    end = text.find("\n# %%", header.end())
    return f"{text[:header.end()]}\n{SETUP_CELL}\n{text[end:] if end >= 0 else ''}"


def targets() -> list[tuple[Path, Path]]:
    return [(src, BOOK / src.relative_to(SOURCES).with_suffix(".ipynb")) for src in sorted(SOURCES.rglob("*.md"))]


def main(argv: list[str]) -> int:
    stale = []
    for src, dst in targets():
        text = rendered(src)
        if not dst.exists() or dst.read_text() != text:
            stale.append(dst)
            if "--check" not in argv:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_text(text)
                print(f"wrote {dst.relative_to(BOOK.parent)}")
    for script in sorted(SOLUTIONS.glob("*/*.py")):
        if script.stem != script.parent.name:
            continue
        text = solution_with_setup_cell(script)
        if script.read_text() != text:
            stale.append(script)
            if "--check" not in argv:
                script.write_text(text)
                print(f"wrote {script.relative_to(BOOK.parent)} (setup cell; run `make release`)")
    try:
        pages = generated_pages()
    except PageError as exc:
        print(exc)
        return 1
    for page, text in pages:
        if page.read_text() != text:
            stale.append(page)
            if "--check" not in argv:
                page.write_text(text)
                print(f"wrote {page.relative_to(BOOK.parent)}")
    if "--check" in argv and stale:
        print("stale (run `make book`):", *[str(p.relative_to(BOOK.parent)) for p in stale])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
