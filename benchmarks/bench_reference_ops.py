"""The reference solutions' tensor ops against the library functions they re-implement, in one run.

``roi_align`` (a3) vs ``torchvision.ops.roi_align``, ``conv_transpose2d`` (a5) vs ``F.conv_transpose2d`` and
``bilinear_upsample`` (a5) vs ``F.interpolate(mode="bilinear")``, float32 on the CPU, forward (under ``no_grad``) and
forward + backward (a fixed output gradient), on 1 and 2 threads (env ``BENCH_THREADS``, default ``1,2``). The
workloads are those of ``bench_two_stage.py`` (roi_align: features ``[4, 64, 50, 50]`` of 400x400 images at
spatial_scale 1/8, RoIs with sides 8-128 px, output 7x7, aligned=True, sampling_ratio 2 and adaptive) and
``bench_segmentation.py`` (the FCN's and a larger transposed convolution; three upsamplings). Before anything is
timed, outputs and input gradients are checked equal to the library's (``allclose``). Each time is the median of
``BENCH_REPEATS`` (default 9) repeats, the two implementations alternating within a repeat, with the interquartile
range and min-max. The goal (issue #28): every ratio at most 2x.

    .venv/bin/python benchmarks/bench_reference_ops.py
    BENCH_REPEATS=3 BENCH_RESULTS=/tmp/bench .venv/bin/python benchmarks/bench_reference_ops.py   # a quick check
"""
from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torchvision.ops as tv

from bench_segmentation import op_workloads
from common import check_op_equal, markdown, op_runners, reference, save, times_pair

THREADS = [int(t) for t in os.environ.get("BENCH_THREADS", "1,2").split(",")]
REPEATS = int(os.environ.get("BENCH_REPEATS", "9"))
GOAL = 2.0


def workloads(sol: SimpleNamespace) -> list[tuple[str, str, Callable, Callable, tuple[torch.Tensor, ...]]]:
    """(op, workload, solution fn, library fn, inputs: gradients are taken for all of them) for every workload."""
    g = torch.Generator().manual_seed(0)
    out = []
    features = torch.randn(4, 64, 50, 50, generator=g)
    for n in (128, 512, 2048):
        wh = 8 + torch.rand(n, 2, generator=g) * 120
        xy = torch.rand(n, 2, generator=g) * (400 - wh)
        rois = torch.cat([torch.randint(0, 4, (n, 1), generator=g).float(), xy, xy + wh], dim=1)
        for ratio in (2, -1):
            kw = dict(output_size=7, spatial_scale=1 / 8, sampling_ratio=ratio, aligned=True)
            out.append(("roi_align", f"4x64x50x50, {n} RoIs, 7x7, sampling_ratio {ratio}",
                        lambda x, rois=rois, kw=kw: sol.roi_align(x, rois, **kw), lambda x, rois=rois, kw=kw: tv.roi_align(x, rois, **kw),
                        (features,)))
    out += op_workloads(sol, torch.device("cpu"))  # a5's conv_transpose2d and bilinear_upsample, as bench_segmentation times them
    return out


def summary(times: list[float]) -> str:
    """'median ms [IQR q1-q3; min-max]'."""
    q1, _, q3 = statistics.quantiles(times, n=4) if len(times) > 1 else (times[0],) * 3
    return f"{statistics.median(times) * 1e3:.2f} [{q1 * 1e3:.2f}-{q3 * 1e3:.2f}; {min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}]"


def run(sol: SimpleNamespace, ops: set[str] | None = None) -> tuple[list[dict], list[list]]:
    """Time every workload (of ``ops``, default all) on every thread count: (json rows, table rows)."""
    rows, table = [], []
    for op, workload, ours, theirs, inputs in workloads(sol):
        if ops and op not in ops:
            continue
        grad_out, _, _ = check_op_equal(op, workload, ours, theirs, inputs)

        for mode, make in op_runners(inputs, grad_out).items():
            for threads in THREADS:
                torch.set_num_threads(threads)
                ta, tb = times_pair(make(ours), make(theirs), REPEATS)
                ratio = statistics.median(ta) / statistics.median(tb)
                rows.append({"op": op, "workload": workload, "mode": mode, "threads": threads, "repeats": REPEATS,
                             "solution_s": ta, "library_s": tb, "ratio_of_medians": ratio})
                table.append([op, workload, mode, threads, summary(ta), summary(tb), f"{ratio:.2f}x" + ("" if ratio <= GOAL else " (> 2x)")])
                print(" | ".join(str(c) for c in table[-1]), flush=True)
    return rows, table


def main() -> None:
    a3, a5 = reference("a3_two_stage"), reference("a5_segmentation")
    sol = SimpleNamespace(roi_align=a3.roi_align, conv_transpose2d=a5.conv_transpose2d, bilinear_upsample=a5.bilinear_upsample)
    start = time.perf_counter()
    rows, table = run(sol)
    wall = time.perf_counter() - start
    rows.append({"part": "run", "wall_s": wall, "torch": torch.__version__, "threads": THREADS, "repeats": REPEATS})
    text = ("### Reference ops vs the library (CPU, float32, same run)\n\n"
            "Solution `roi_align` (a3) vs `torchvision.ops.roi_align` (aligned=True, spatial_scale 1/8, RoIs with sides 8-128 px on "
            "400x400 images), `conv_transpose2d` (a5) vs `F.conv_transpose2d` (with bias), `bilinear_upsample` (a5) vs "
            "`F.interpolate(mode=\"bilinear\", align_corners=False)`; outputs and input gradients checked allclose (rtol 1e-4, atol 1e-5 x "
            f"the largest magnitude) before timing. ms as median [interquartile range; min-max] of {REPEATS} repeats, the two "
            f"alternating; forward under `no_grad`, forward + backward with a fixed output gradient. Goal: ratio <= {GOAL:g}x.\n\n"
            + markdown(["op", "workload", "mode", "threads", "solution ms", "library ms", "solution / library (medians)"], table)
            + f"\n\nWhole run: {wall:.0f} s of wall time, torch {torch.__version__}.")
    save("reference_ops", rows, text)


if __name__ == "__main__":
    main()
