"""Write the book's executable pages (.ipynb) from their MyST-markdown sources in book/_src.

Authors edit ``book/_src/<chapter>/<page>.md`` (readable diffs); the book and its Colab launch
buttons need ``book/<chapter>/<page>.ipynb``. ``make book`` runs this first; a test checks that the
committed notebooks are in sync.

Every notebook that imports ``lecture_utils`` gets the Colab setup cell of
``lecture_utils/config.py`` (``SETUP_CELL``, the single template) as its first code cell: the chapter
notebooks here, the assignments in ``solutions/<id>/<id>.py`` (their cell tagged ``setup``, from which
``make release`` makes the notebooks). In the book the cell is removed from the page (tag
``remove-cell``); outside Colab it does nothing.

It also writes the assignment table of ``book/assignments/index.md`` from the assignments'
manifests (``autograder/manifests/<id>.toml``: title, lecture, status, points), between the
``assignments-table`` markers.

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


def assignment_table() -> str:
    """The book's table of assignments, one row per manifest: a list-table with a class, so that
    book/_static/course.css can size its columns (it fits a phone's width)."""
    import tomllib

    rows = ["```{list-table}", ":header-rows: 1", ":class: assignments-table", ":widths: 50 22 28", "",
            "* - assignment", "  - lecture", "  - graded"]
    for path in sorted((BOOK.parent / "autograder" / "manifests").glob("*.toml")):
        m = tomllib.loads(path.read_text())
        lecture = m["lecture"].split("·")[0].strip()
        if m["status"] == "released":
            points = sum(p["points"] for p in m["parts"])
            rows += [f"* - {{doc}}`{path.stem}`", f"  - {lecture}", f"  - {len(m['parts'])} parts, {points:g} points"]
        else:
            rows += [f"* - {m['title']} *(coming)*", f"  - {lecture}", "  - —"]
    return "\n".join(rows + ["```"])


def rendered_table_page() -> str:
    text = TABLE_PAGE.read_text()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{assignment_table()}\n{TABLE_END}{tail}"


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
    table = rendered_table_page()
    if TABLE_PAGE.read_text() != table:
        stale.append(TABLE_PAGE)
        if "--check" not in argv:
            TABLE_PAGE.write_text(table)
            print(f"wrote {TABLE_PAGE.relative_to(BOOK.parent)}")
    if "--check" in argv and stale:
        print("stale notebooks (run `make book`):", *[str(p.relative_to(BOOK.parent)) for p in stale])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
