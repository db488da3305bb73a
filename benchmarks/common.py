"""Shared helpers for the benchmark scripts: timing, the reference solutions, result files."""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def timeit(fn, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reference(assignment_id: str):
    """The instructor's solution module (benchmarks are instructor tools, run in the trusted repo)."""
    from autograder.assignments import Assignment

    return Assignment(assignment_id).reference()


def save(name: str, rows: list[dict], table: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
