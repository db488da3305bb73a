"""Book build time: a clean build (every notebook executed) and a cached rebuild, on a copy of book/.

    .venv/bin/python benchmarks/bench_book.py
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import markdown, save

ROOT = Path(__file__).resolve().parents[1]


def build(book: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([str(Path(sys.executable).parent / "jupyter-book"), "build", str(book), "--warningiserror", "--keep-going"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"book build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-book-"))
    try:
        book = work / "book"
        shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build"))
        (work / "assignments").symlink_to(ROOT / "assignments")  # the Colab badges check their notebooks exist
        clean, cached = build(book), build(book)
        pages = len(list((book / "_build" / "html").rglob("*.html")))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [{"clean_build_s": clean, "cached_rebuild_s": cached, "html_pages": pages}]
    save("book", rows, "### Book build (2 cores)\n\n" + markdown(["clean build s", "cached rebuild s", "HTML pages"], [[f"{clean:.0f}", f"{cached:.0f}", pages]]))


if __name__ == "__main__":
    main()
