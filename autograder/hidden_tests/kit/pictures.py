"""The trained tests' pictures, trusted side: ``PICTURE_IMAGES`` images rendered here like the evaluation set, from
their own secret seed (``evaluation_seed(f"{set_name}/pictures")``), sent to the worker after the evaluation images
in the same prediction call and never scored (showing scored images would leak part of the evaluation set). The
trained weights' predictions on them are drawn against their ground truth (``autograder.feedback_figures``), and
the test attaches the figure to its feedback.

What comes back for the pictures is checked only by the drawing (a malformed reply loses the picture, never the
score). Where the training classes were renamed (``counterfactual``), the ground truth is renamed the same way and
both are labelled by their true names: the class ids are mapped back, and the caption says so."""
from __future__ import annotations

from typing import NamedTuple

import torch

from autograder import feedback_figures
from autograder.feedback_figures import PICTURE_IMAGES, FeedbackFigure
from autograder.secret import evaluation_seed
from autograder.testing import describe, fail
from lecture_utils.data import CLASSES, ShapesDataset

RENAMED = ("The grader trained your model with the class ids renamed by a secret permutation; both rows show classes by "
           "their true names (your predicted ids mapped back).")


class Trained(NamedTuple):
    """A trained test's result: (trained, shuffled-weights control, initial-weights control) scores and its picture;
    where the classes were renamed, also the trained model's score against the true (not renamed) classes."""

    scores: tuple[float, float, float]
    figure: FeedbackFigure | None
    true_classes: float | None = None


def picture_set(set_name: str, image_size: int | tuple[int, int] = 128, **shapes) -> tuple[torch.Tensor, list[dict]]:
    """(images Tensor[PICTURE_IMAGES, 3, H, W], targets) rendered here like the evaluation set ``set_name``, from a seed
    of their own (derived from the course secret), never scored."""
    data = ShapesDataset(PICTURE_IMAGES, image_size, seed=evaluation_seed(f"{set_name}/pictures"), **shapes)
    items = [data[i] for i in range(PICTURE_IMAGES)]
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def split_reply(reply, n_scored: int, what: str) -> tuple[list, list]:
    """(the first ``n_scored`` predictions, to be scored; the rest, for the pictures): ``reply`` must be a list of
    ``n_scored + PICTURE_IMAGES`` predictions, one per image sent."""
    total = n_scored + PICTURE_IMAGES
    if not isinstance(reply, (list, tuple)) or len(reply) != total:
        fail(f"the training recipe got {describe(reply)} from your model, not {total} {what}")
    return list(reply[:n_scored]), list(reply[n_scored:])


def caption(what: str, renamed: bool) -> str:
    """``what`` (e.g. "Detections of your trained detector"), where the images come from, what the rows are."""
    return (f"{what} on {PICTURE_IMAGES} new images drawn like the evaluation set (not scored): ground truth above, "
            f"predictions below." + (" " + RENAMED if renamed else ""))


def detection_picture(images: torch.Tensor, targets: list[dict], predictions, lut: torch.Tensor | None, subject: str,
                      score_threshold: float | None = feedback_figures.SCORE_THRESHOLD, note: str = "",
                      distinct_iou: float | None = None) -> FeedbackFigure | None:
    """The picture of ``subject`` (e.g. "your trained detector"), a detector: ``targets`` (trusted, renamed by ``lut``
    when given) against ``predictions`` (the worker's, in the renamed ids), labelled by true class names; detections
    with a score of at least ``score_threshold`` (None: predictions without scores, all drawn). ``note`` ends the
    caption (e.g. how the training targets were changed, where the ground truth drawn is changed the same way);
    ``distinct_iou``: of detections overlapping more (IoU, any class), only the best is drawn."""
    names = list(CLASSES) if lut is None else feedback_figures.renamed_class_names(lut, CLASSES)
    what = f"Predictions of {subject}" if score_threshold is None else f"Detections (score >= {score_threshold:g}) of {subject}"
    if distinct_iou is not None:
        note = f"Of detections overlapping more than IoU {distinct_iou:g}, only the best is drawn. {note}".strip()
    return feedback_figures.detection_figure(images, targets, predictions, names, score_threshold=score_threshold or 0.0,
                                             distinct_iou=distinct_iou, caption=caption(what, lut is not None) + (f" {note}" if note else ""))


def segmentation_picture(images: torch.Tensor, semantic: torch.Tensor, maps, lut: torch.Tensor, subject: str) -> FeedbackFigure | None:
    """The picture of ``subject``, a segmenter: ``semantic`` Long[N, H, W] (trusted, renamed by ``lut``) against the
    worker's maps."""
    return feedback_figures.segmentation_figure(images, semantic, maps, feedback_figures.renamed_class_names(lut, CLASSES),
                                                caption=caption(f"Class maps of {subject}", True))
