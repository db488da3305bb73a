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


def times_pair(a, b, repeat: int = 7, sync=lambda: None) -> tuple[list[float], list[float]]:
    """All times of ``a()`` and ``b()`` in seconds over ``repeat`` repeats, run alternately so that machine noise hits
    both alike, after one warm-up call each; ``sync()`` before and after each call (a CUDA synchronize)."""
    a(), b()
    sync()
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out in ((a, ta), (b, tb)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            out.append(time.perf_counter() - start)
    return ta, tb


def timeit_pair(a, b, repeat: int = 7) -> tuple[float, float]:
    """Best times of ``a()`` and ``b()`` (``times_pair``)."""
    ta, tb = times_pair(a, b, repeat)
    return min(ta), min(tb)


def check_op_equal(op: str, workload: str, ours, theirs, inputs) -> tuple:
    """Assert that ``ours(*inputs)`` and ``theirs(*inputs)`` agree in output and input gradients (rtol 1e-4, atol 1e-5 x
    the largest magnitude) for a fixed random output gradient; (that gradient, max |output difference|, max |gradient
    difference| relative to the largest gradient)."""
    import torch

    leaves_a = [t.clone().requires_grad_() for t in inputs]
    leaves_b = [t.clone().requires_grad_() for t in inputs]
    out_a, out_b = ours(*leaves_a), theirs(*leaves_b)
    assert out_a.shape == out_b.shape and out_a.dtype == out_b.dtype, (op, workload, out_a.shape, out_b.shape)
    grad_out = torch.randn(out_b.shape, generator=torch.Generator().manual_seed(1)).to(out_b.device)
    out_a.backward(grad_out), out_b.backward(grad_out)
    for what, a, b in [("output", out_a.detach(), out_b.detach())] + [("gradient", a.grad, b.grad) for a, b in zip(leaves_a, leaves_b)]:
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max())), f"{op} ({workload}): {what}s differ by {float((a - b).abs().max()):.2e}"
    out_diff = float((out_a - out_b).abs().max())
    grad_diff = max(float((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp(min=1e-30)) for a, b in zip(leaves_a, leaves_b))
    return grad_out, out_diff, grad_diff


def op_runners(inputs: list, grad_out):
    """{mode: make(fn) -> a call of ``fn(*inputs)``}: "forward" without autograd, "forward + backward" from fresh
    leaves with ``grad_out``."""
    import torch

    def forward(fn):
        def go():
            with torch.no_grad():
                fn(*inputs)
        return go

    def forward_backward(fn):
        def go():
            leaves = [t.detach().requires_grad_() for t in inputs]
            fn(*leaves).backward(grad_out)
        return go

    return {"forward": forward, "forward + backward": forward_backward}


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
