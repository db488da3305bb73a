"""Shapes dataset generation speed (images/s on one core) at several sizes.

    .venv/bin/python benchmarks/bench_shapes.py
"""
import time

import torch

from common import markdown, save
from lecture_utils.data import ShapesDataset


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for size in (128, 256, (192, 320)):
        ds = ShapesDataset(400, size, seed=0)
        ds[0]
        start = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        rate = len(ds) / (time.perf_counter() - start)
        rows.append({"image_size": size if isinstance(size, int) else list(size), "images_per_s": round(rate, 1)})
    save("shapes", rows, "### Shapes dataset generation (one core)\n\n" + markdown(
        ["image size (H, W)", "images/s"], [[r["image_size"], r["images_per_s"]] for r in rows]))


if __name__ == "__main__":
    main()
