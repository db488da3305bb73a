"""Write the book's executable pages (.ipynb) from their MyST-markdown sources in book/_src.

Authors edit ``book/_src/<chapter>/<page>.md`` (readable diffs); the book and its Colab launch
buttons need ``book/<chapter>/<page>.ipynb``. ``make book`` runs this first; a test checks that the
committed notebooks are in sync.

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
    if "--check" in argv and stale:
        print("stale notebooks (run `make book`):", *[str(p.relative_to(BOOK.parent)) for p in stale])
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
