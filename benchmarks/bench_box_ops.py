"""Solution box_iou, nms and batched_nms against torchvision's kernels, measured in one run.

    .venv/bin/python benchmarks/bench_box_ops.py
"""
from __future__ import annotations

import torch
import torchvision.ops as tv

from common import markdown, reference, save, timeit_pair


def random_boxes(n: int, g: torch.Generator, scale: float = 1000.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * scale
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * scale / 10], dim=1)


def main() -> None:
    sol = reference("a2_detection_basics")
    g = torch.Generator().manual_seed(0)
    rows, table = [], []
    for n in (1000, 5000, 20000):
        boxes, scores = random_boxes(n, g), torch.rand(n, generator=g)
        idxs = torch.randint(0, 10, (n,), generator=g)
        other = random_boxes(1000, g)
        assert torch.equal(sol.box_iou(boxes, other), tv.box_iou(boxes, other))
        assert torch.equal(sol.nms(boxes, scores, 0.5), tv.nms(boxes, scores, 0.5))
        assert set(sol.batched_nms(boxes, scores, idxs, 0.5).tolist()) == set(tv.batched_nms(boxes, scores, idxs, 0.5).tolist())
        for op, ours, theirs in (
            ("box_iou (N x 1000)", lambda: sol.box_iou(boxes, other), lambda: tv.box_iou(boxes, other)),
            ("nms", lambda: sol.nms(boxes, scores, 0.5), lambda: tv.nms(boxes, scores, 0.5)),
            ("batched_nms (10 classes)", lambda: sol.batched_nms(boxes, scores, idxs, 0.5), lambda: tv.batched_nms(boxes, scores, idxs, 0.5)),
        ):
            t_ours, t_tv = timeit_pair(ours, theirs)
            rows.append({"op": op, "n": n, "solution_s": t_ours, "torchvision_s": t_tv, "ratio": t_ours / t_tv})
            table.append([op, n, f"{t_ours * 1e3:.2f}", f"{t_tv * 1e3:.2f}", f"{t_ours / t_tv:.2f}x"])
    save("box_ops", rows, "### Box operations: solution vs torchvision (CPU, same run, identical results)\n\n" + markdown(
        ["op", "N boxes", "solution ms", "torchvision ms", "solution / torchvision"], table))


if __name__ == "__main__":
    main()
