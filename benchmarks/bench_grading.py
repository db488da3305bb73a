"""Autograder throughput: one submission with `grade`, and a folder with `grade-batch --jobs 2`.

    .venv/bin/python benchmarks/bench_grading.py
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autograder.assignments import known_ids
from common import markdown, save

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    rows, table = [], []
    work = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        for assignment in known_ids():
            for kind, folder in (("solution", "solutions"), ("untouched release", "assignments")):
                seconds, out = cli("grade", "--assignment", assignment, str(ROOT / folder / assignment / f"{assignment}.ipynb"), cwd=work)
                score = re.search(r": ([\d.]+) / 100 points \(([\d.]+) s\)", out)
                rows.append({"assignment": assignment, "submission": kind, "wall_s": seconds, "score": float(score.group(1)), "grading_s": float(score.group(2))})
                table.append([assignment, kind, score.group(1), f"{float(score.group(2)):.1f}", f"{seconds:.1f}"])
        subs = work / "batch"
        subs.mkdir()
        for i in range(10):
            shutil.copy(ROOT / "solutions" / "a1_pytorch" / "a1_pytorch.ipynb", subs / f"student{i:02d}.ipynb")
        seconds, _ = cli("grade-batch", "--assignment", "a1_pytorch", str(subs), "--jobs", "2", "--csv", str(work / "grades.csv"), cwd=work)
        rate = 60 * 10 / seconds
        rows.append({"assignment": "a1_pytorch", "submission": "grade-batch of 10, --jobs 2", "wall_s": seconds, "submissions_per_min": rate})
        table.append(["a1_pytorch", "grade-batch of 10 (--jobs 2)", "100 each", "", f"{seconds:.1f} ({rate:.1f} submissions/min)"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save("grading", rows, "### Grading time (2 cores, bubblewrap sandbox where available)\n\n" + markdown(
        ["assignment", "submission", "score", "grading s (in results.json)", "wall s (with start-up)"], table))


if __name__ == "__main__":
    main()
