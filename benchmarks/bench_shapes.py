"""Shapes dataset generation speed (images/s on one core) at several sizes.

    .venv/bin/python benchmarks/bench_shapes.py
"""
import json
import time
from pathlib import Path

import torch

from lecture_utils.data import ShapesDataset

RESULTS = Path(__file__).with_name("results")


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
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "shapes.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| image size | images/s (1 core) |\n|---|---|")
    for r in rows:
        print(f"| {r['image_size']} | {r['images_per_s']} |")


if __name__ == "__main__":
    main()
