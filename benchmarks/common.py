"""Shared helpers for the benchmark scripts: timing, the reference solutions, result files."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

RESULTS = Path(os.environ.get("BENCH_RESULTS", Path(__file__).with_name("results")))  # BENCH_RESULTS: a dry run elsewhere


def timeit(fn, repeat: int = 7, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs, in seconds (the minimum is the least noisy estimate)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def timeit_pair(a, b, repeat: int = 7) -> tuple[float, float]:
    """Best times of ``a()`` and ``b()``, run alternately so that machine noise hits both alike."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return min(ta), min(tb)


def reference(assignment_id: str):
    """The instructor's solution module (benchmarks are instructor tools, run in the trusted repo)."""
    from autograder.assignments import get

    return get(assignment_id).reference()


def save(name: str, rows: list[dict], table: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
