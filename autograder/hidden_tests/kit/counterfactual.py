"""Counterfactual training data: what makes a trained test prove *learning*, trusted side.

A model that answers from hand-written rules (saturated pixels, the area of a region against the circle
through it ...) can reach the bar on shapes without learning anything, and if it also recognises its own
trained weights (a tag that only training puts in order), perturbing the weights (the controls) cannot tell.
So the grader trains the student's model on data whose labels it changed in a way the images do not reveal:
the class ids are renamed by a secret permutation that is never the identity (a derangement or a swap of two
classes), and the evaluation's ground truth is renamed the same way. A model that learned from its training
data predicts the renamed classes and scores as it would on the true ones; rules written by hand keep
predicting the true classes and fail (with a swap, two of the three classes are wrong).

The training images and targets are rendered here from a seed derived from the course secret and sent to the
worker as data; the worker never gets a seed or the permutation. The permutation is derived from the course
secret and the submission's graded code, so the same submission always gets the same one (the same grade),
and another submission another one: guessing it succeeds for 1 submission in 5.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import itertools

import torch

from autograder.secret import course_secret, evaluation_seed
from lecture_utils.data import CLASSES, ShapesDataset

# Every renaming of the classes 1..C-1 except the identity (background stays 0).
RENAMINGS = [p for p in itertools.permutations(range(1, len(CLASSES))) if list(p) != list(range(1, len(CLASSES)))]


def renaming(set_name: str, submission: str) -> torch.Tensor:
    """The secret renaming of the training set ``set_name`` for this submission: ``lut`` Tensor[C] int64 with
    ``lut[0] == 0`` and ``new_label = lut[old_label]``."""
    digest = hmac.new(course_secret(), f"renaming:{set_name}:{submission}".encode(), hashlib.sha256).digest()
    chosen = RENAMINGS[int.from_bytes(digest[:8], "big") % len(RENAMINGS)]
    return torch.tensor([0, *chosen], dtype=torch.int64)


def renamed(targets: list[dict], lut: torch.Tensor) -> list[dict]:
    """Copies of ``targets`` whose ``labels`` and ``semantic`` maps are renamed by ``lut`` (nothing else changes)."""
    out = []
    for t in targets:
        t = dict(t)
        if "labels" in t:
            t["labels"] = lut[t["labels"]]
        if "semantic" in t:
            t["semantic"] = lut[t["semantic"].long()].to(t["semantic"].dtype)
        out.append(t)
    return out


def training_set(set_name: str, n_images: int, image_size: int = 128, keys=("boxes", "labels"), **shapes):
    """(images Tensor[N, 3, H, W] uint8, targets holding only ``keys``): the training data of a trained test, rendered
    here from a seed derived from the course secret (the worker cannot render it itself, nor its true labels). A process
    that grades many submissions renders each set once (the last two are kept); callers get copies."""
    images, targets = _rendered(evaluation_seed(f"{set_name}/training"), n_images, image_size, tuple(keys), tuple(sorted(shapes.items())))
    return images.clone(), [{k: v.clone() for k, v in t.items()} for t in targets]


@functools.lru_cache(maxsize=2)
def _rendered(seed: int, n_images: int, image_size: int, keys: tuple[str, ...], shapes: tuple) -> tuple[torch.Tensor, list[dict]]:
    data = ShapesDataset(n_images, image_size, seed=seed, **dict(shapes))
    images, targets = [], []
    for i in range(n_images):
        image, target = data[i]
        images.append((image * 255).round().to(torch.uint8))
        targets.append({k: target[k] for k in keys})
    return torch.stack(images), targets


# Boxes: a secret move the images do not reveal. Every move shifts the box by half its size along both axes (the
# signs are secret) and scales it by 0.8 or 1.3 about its new centre, clipped to the image. Against the moved boxes, a
# hand-written localizer that finds the object's true box reaches a mean IoU of about 0.2 (x0.8) or 0.3 (x1.3), and
# its best hedge for a move it knew (the true box scaled about its centre) 0.36 at most. Moves in different directions
# overlap as little; a guess of the direction with the scale hedged (x1) would pass, so guessing succeeds for 1
# submission in 4.
BOX_MOVES = [(sx, sy, scale) for sx in (-1, 1) for sy in (-1, 1) for scale in (0.8, 1.3)]
BOX_SHIFT = 0.5


def box_move(set_name: str, submission: str) -> tuple[int, int, float]:
    """The secret move of the training set ``set_name``'s boxes for this submission: (sign x, sign y, scale)."""
    digest = hmac.new(course_secret(), f"box-move:{set_name}:{submission}".encode(), hashlib.sha256).digest()
    return BOX_MOVES[int.from_bytes(digest[:8], "big") % len(BOX_MOVES)]


def moved_boxes(boxes: torch.Tensor, move: tuple[int, int, float], image_size: int) -> torch.Tensor:
    """``boxes`` Tensor[N, 4] xyxy pixels moved by ``move`` (shifted by ``BOX_SHIFT`` of their size, scaled about the
    new centre) and clipped to the ``image_size`` square; same dtype."""
    sx, sy, scale = move
    b = boxes.double()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2 + sx * BOX_SHIFT * w, (b[:, 1] + b[:, 3]) / 2 + sy * BOX_SHIFT * h
    moved = torch.stack([cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2], dim=1)
    return moved.clamp(0, image_size).to(boxes.dtype)


# Masks: only the part of each object inside a secret region of its box, one of its thirds (left, right, top, bottom)
# or one of its corner quarters. A hand-written segmenter that finds the whole object reaches a mask IoU >= 0.5 (COCO
# AP50's match) on at most 4% of the shapes (squares fill their box: 1/3 with a third), and a mask made for one region
# matches another region's on at most 10%. A guess hedged over neighbouring regions (the left half of the object, say)
# can pass for up to 3 of the 8: guessing succeeds for about 1 submission in 3.
MASK_REGIONS = {  # name: ((x from, x to), (y from, y to)) as fractions of the box
    "left third": ((0, 1 / 3), (0, 1)), "right third": ((2 / 3, 1), (0, 1)),
    "top third": ((0, 1), (0, 1 / 3)), "bottom third": ((0, 1), (2 / 3, 1)),
    "top-left quarter": ((0, 0.5), (0, 0.5)), "top-right quarter": ((0.5, 1), (0, 0.5)),
    "bottom-left quarter": ((0, 0.5), (0.5, 1)), "bottom-right quarter": ((0.5, 1), (0.5, 1)),
}


def mask_region(set_name: str, submission: str) -> str:
    """The secret region (a key of ``MASK_REGIONS``) of the training set ``set_name``'s masks for this submission."""
    digest = hmac.new(course_secret(), f"mask-region:{set_name}:{submission}".encode(), hashlib.sha256).digest()
    names = list(MASK_REGIONS)
    return names[int.from_bytes(digest[:8], "big") % len(names)]


def masks_in_region(masks: torch.Tensor, boxes: torch.Tensor, region: str) -> torch.Tensor:
    """``masks`` Bool[N, H, W] kept only inside ``region`` of their ``boxes`` Tensor[N, 4] xyxy (a pixel counts when its
    centre lies in the region)."""
    (fx0, fx1), (fy0, fy1) = MASK_REGIONS[region]
    b = boxes.double()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    x = torch.arange(masks.shape[-1], dtype=torch.float64) + 0.5
    y = torch.arange(masks.shape[-2], dtype=torch.float64) + 0.5
    in_x = (x >= (b[:, 0] + fx0 * w)[:, None]) & (x < (b[:, 0] + fx1 * w)[:, None])
    in_y = (y >= (b[:, 1] + fy0 * h)[:, None]) & (y < (b[:, 1] + fy1 * h)[:, None])
    return masks.bool() & in_y[:, :, None] & in_x[:, None, :]


def with_masks_in_region(targets: list[dict], region: str) -> list[dict]:
    """Copies of ``targets`` whose ``masks`` keep only ``region`` of their boxes (nothing else changes)."""
    return [{**t, "masks": masks_in_region(t["masks"], t["boxes"], region)} for t in targets]
