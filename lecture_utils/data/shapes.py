"""Synthetic shapes: circles, squares and triangles on a textured background.

Every sample is drawn from its own seed (``seed`` of the dataset and the index), so the dataset is
deterministic, order-independent and safe with DataLoader workers. Objects are painted in order,
later ones on top, so they can occlude each other: each object has an *amodal* mask and box (the
whole shape) and a *modal* mask and box (what is visible), the distinction of Lecture 13.

Targets follow torchvision's detection conventions: ``boxes`` Tensor[N, 4] xyxy float pixels (modal),
``labels`` Tensor[N] int64 in 1..3, ``masks`` Tensor[N, H, W] uint8 (modal), ``keypoints``
Tensor[N, 4, 3] (x, y, visibility 0/1/2 as in COCO), plus ``semantic`` Tensor[H, W] int64.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

CLASSES = ("background", "circle", "square", "triangle")
NUM_KEYPOINTS = 4  # square: 4 corners; triangle: 3 vertices + 1 absent; circle: 4 points on the rim


@dataclass(frozen=True)
class ShapesConfig:
    image_size: tuple[int, int] = (128, 128)  # (H, W); non-square is fine
    min_objects: int = 1
    max_objects: int = 4
    min_size: float = 0.08  # object radius as a fraction of min(H, W)
    max_size: float = 0.22
    min_visible: float = 0.35  # an object must keep this fraction of its area visible
    placement_tries: int = 12
    noise: float = 0.03


def _polygon(kind: int, cx: float, cy: float, r: float, angle: float) -> torch.Tensor:
    """Vertices Tensor[K, 2] (x, y) of a square (K=4) or triangle (K=3), circumradius r."""
    k = 4 if kind == 2 else 3
    t = angle + torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return torch.stack([cx + r * torch.cos(t), cy + r * torch.sin(t)], dim=1)


def _inside_polygon(vertices: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Bool[H, W]: pixel centres inside a convex polygon given counter-clockwise (in image coords)."""
    inside = torch.ones(ys.shape[0], xs.shape[1], dtype=torch.bool)
    nxt = vertices.roll(-1, dims=0)
    for (x0, y0), (x1, y1) in zip(vertices.tolist(), nxt.tolist()):
        inside &= (x1 - x0) * (ys - y0) - (y1 - y0) * (xs - x0) >= 0
    return inside


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (ys, xs), each Tensor[H, W] float32 (cached per size)."""
    return torch.meshgrid(torch.arange(h, dtype=torch.float32) + 0.5, torch.arange(w, dtype=torch.float32) + 0.5, indexing="ij")


def _background(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A smooth random colour field with faint stripes: Tensor[3, H, W]."""
    grey = float(torch.rand(1, generator=g)) * 0.4 + 0.3  # muted: objects are the saturated things
    base = grey + torch.rand(3, 1, 1, generator=g) * 0.2 - 0.1
    coarse = torch.rand(1, 3, 5, 5, generator=g) * 0.24 - 0.12
    texture = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    ys, xs = _grid(h, w)
    stripes_dir = torch.rand(2, generator=g) * 0.7 - 0.35
    stripes = 0.05 * torch.sin(xs * stripes_dir[0] + ys * stripes_dir[1])
    return (base + texture + stripes).clamp_(0, 1)


def _colour(g: torch.Generator) -> torch.Tensor:
    """A saturated random colour Tensor[3] (HSV with s, v high)."""
    h = float(torch.rand(1, generator=g)) * 6
    s, v = 0.65 + 0.35 * float(torch.rand(1, generator=g)), 0.75 + 0.25 * float(torch.rand(1, generator=g))
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    return torch.tensor(rgb, dtype=torch.float32) + (v - c)


def render_shapes(index: int, config: ShapesConfig = ShapesConfig(), seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Draw sample ``index``: (image Tensor[3, H, W] float in [0, 1], target dict)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + index) % (2**63))
    h, w = config.image_size
    ys, xs = _grid(h, w)
    n_target = int(torch.randint(config.min_objects, config.max_objects + 1, (1,), generator=g))
    shapes: list[dict] = []
    for _ in range(n_target):
        kind = int(torch.randint(1, 4, (1,), generator=g))
        colour = _colour(g)
        for _try in range(config.placement_tries):
            r = (config.min_size + (config.max_size - config.min_size) * float(torch.rand(1, generator=g))) * min(h, w)
            cx = r + float(torch.rand(1, generator=g)) * (w - 2 * r)
            cy = r + float(torch.rand(1, generator=g)) * (h - 2 * r)
            angle = float(torch.rand(1, generator=g)) * 2 * math.pi
            # rasterize only inside the shape's bounding window
            x0, x1 = max(int(cx - r), 0), min(int(math.ceil(cx + r)) + 1, w)
            y0, y1 = max(int(cy - r), 0), min(int(math.ceil(cy + r)) + 1, h)
            wy, wx = ys[y0:y1, x0:x1], xs[y0:y1, x0:x1]
            if kind == 1:
                window = (wx - cx) ** 2 + (wy - cy) ** 2 <= r * r
                t = angle + torch.arange(NUM_KEYPOINTS, dtype=torch.float64) * (math.pi / 2)
                points = torch.stack([cx + r * torch.cos(t), cy + r * torch.sin(t)], dim=1)
                amodal = torch.tensor([cx - r, cy - r, cx + r, cy + r], dtype=torch.float64)
            else:
                points = _polygon(kind, cx, cy, r, angle)
                window = _inside_polygon(points, wx, wy)
                amodal = torch.cat([points.min(0).values, points.max(0).values])
            if not window.any():
                continue
            # would the new shape hide too much of an earlier one?
            hidden = [int((s["visible"][y0:y1, x0:x1] & window).sum()) for s in shapes]
            if all(s["visible_count"] - k >= config.min_visible * s["area"] for s, k in zip(shapes, hidden)):
                break
        else:
            continue
        mask = torch.zeros(h, w, dtype=torch.bool)
        mask[y0:y1, x0:x1] = window
        for s, k in zip(shapes, hidden):
            s["visible"][y0:y1, x0:x1] &= ~window
            s["visible_count"] -= k
        area = int(window.sum())
        shapes.append(dict(kind=kind, colour=colour, mask=mask, visible=mask.clone(), area=area, visible_count=area, points=points, amodal=amodal))

    image = _background(h, w, g)
    for s in shapes:  # paint in order: later shapes cover earlier ones
        image = torch.where(s["mask"], s["colour"][:, None, None], image)
    # sensor noise: uniform with standard deviation `noise` (cheaper to draw than Gaussian)
    image = image.add_(torch.rand(image.shape, generator=g).sub_(0.5).mul_(config.noise * math.sqrt(12))).clamp_(0, 1)
    return image, _target(shapes, index, h, w)


def _box_of(mask: torch.Tensor) -> list[float]:
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def _target(shapes: list[dict], index: int, h: int, w: int) -> dict:
    n = len(shapes)
    keypoints = torch.zeros(n, NUM_KEYPOINTS, 3)
    for i, s in enumerate(shapes):
        pts = s["points"]
        for k in range(pts.shape[0]):
            x, y = float(pts[k, 0]), float(pts[k, 1])
            col, row = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
            # a vertex counts as visible when the object is visible within one pixel of it
            near = s["visible"][max(row - 1, 0) : row + 2, max(col - 1, 0) : col + 2].any()
            keypoints[i, k] = torch.tensor([x, y, 2.0 if near else 1.0])
    empty = torch.zeros(0, h, w, dtype=torch.uint8)
    return {
        "boxes": torch.tensor([_box_of(s["visible"]) for s in shapes], dtype=torch.float32).reshape(n, 4),
        "amodal_boxes": torch.stack([s["amodal"].clamp(min=0).minimum(torch.tensor([w, h, w, h], dtype=torch.float64)) for s in shapes]).float().reshape(n, 4) if n else torch.zeros(0, 4),
        "labels": torch.tensor([s["kind"] for s in shapes], dtype=torch.int64),
        "masks": torch.stack([s["visible"] for s in shapes]).to(torch.uint8) if n else empty,
        "amodal_masks": torch.stack([s["mask"] for s in shapes]).to(torch.uint8) if n else empty,
        "keypoints": keypoints,
        "area": torch.tensor([float(s["visible"].sum()) for s in shapes]),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
        "semantic": _semantic(shapes, h, w),
        "image_id": index,
    }


def _semantic(shapes: list[dict], h: int, w: int) -> torch.Tensor:
    semantic = torch.zeros(h, w, dtype=torch.int64)
    for s in shapes:
        semantic[s["visible"]] = s["kind"]
    return semantic


class ShapesDataset(Dataset):
    """``num_images`` synthetic images; item ``i`` is always the same (image, target) for a given seed.

    Args:
        num_images: dataset length.
        image_size: int or (H, W).
        seed: base seed; different seeds give disjoint-looking datasets (e.g. train 0, val 1).
        transform: optional ``transform(image, target) -> (image, target)``.
        **config: fields of ``ShapesConfig`` (min_objects, max_objects, min_size, max_size, ...).
    """

    def __init__(self, num_images: int = 1000, image_size: int | tuple[int, int] = 128, seed: int = 0, transform=None, **config) -> None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.config = ShapesConfig(image_size=size, **config)
        self.num_images, self.seed, self.transform = num_images, seed, transform

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(index)
        image, target = render_shapes(index, self.config, self.seed)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target
