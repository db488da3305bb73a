"""Write the book's executable pages (.ipynb) from their MyST-markdown sources in book/_src.

Authors edit ``book/_src/<chapter>/<page>.md`` (readable diffs); the book and its Colab launch
buttons need ``book/<chapter>/<page>.ipynb``. ``make book`` runs this first; a test checks that the
committed notebooks are in sync.

It also writes the assignment table of ``book/assignments/index.md`` from the assignments'
manifests (``autograder/manifests/<id>.toml``: title, lecture, status, points), between the
``assignments-table`` markers.

    python book/_ext/sync_sources.py          # write the notebooks that changed
    python book/_ext/sync_sources.py --check  # exit 1 if any is stale
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

BOOK = Path(__file__).resolve().parents[1]
SOURCES = BOOK / "_src"


def rendered(source: Path) -> str:
    nb = jupytext.read(source, fmt="myst")
    nb.metadata.pop("jupytext", None)
    for i, cell in enumerate(nb.cells):  # stable ids: jupytext makes random ones
        cell.id = f"cell-{i}"
    return nbformat.writes(nb) + "\n"


TABLE_PAGE = BOOK / "assignments" / "index.md"
TABLE_START, TABLE_END = "<!-- assignments-table:start (written by make book from the manifests) -->", "<!-- assignments-table:end -->"


def assignment_table() -> str:
    """The book's table of assignments, one row per manifest."""
    import tomllib

    rows = ["| | lecture | graded | status |", "|---|---|---|---|"]
    for path in sorted((BOOK.parent / "autograder" / "manifests").glob("*.toml")):
        m = tomllib.loads(path.read_text())
        if m["status"] == "released":
            points = sum(p["points"] for p in m["parts"])
            rows.append(f"| {{doc}}`{path.stem}` | {m['lecture']} | {len(m['parts'])} parts, {points:g} points | available |")
        else:
            rows.append(f"| {m['title']} | {m['lecture']} | | coming |")
    return "\n".join(rows)


def rendered_table_page() -> str:
    text = TABLE_PAGE.read_text()
    head, _, rest = text.partition(TABLE_START)
    _, _, tail = rest.partition(TABLE_END)
    return f"{head}{TABLE_START}\n{assignment_table()}\n{TABLE_END}{tail}"


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
