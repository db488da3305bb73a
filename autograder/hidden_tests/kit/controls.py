"""The controls of every trained test (a2-a5), trusted side.

A trained model is evaluated three ways: with its trained weights, with those weights shuffled here, and with
its weights before training. The worker gets the state dicts in a secret order (``with_controls``), so it cannot
tell the real evaluation from a control except by the weights themselves; ``assert_learned`` is the verdict.
A model that recognises its own trained weights defeats the controls: the counterfactual training data of
``kit.counterfactual`` is what catches that."""
import secrets

import torch

from autograder.feedback_figures import FeedbackFigure, attach
from autograder.testing import describe, fail


def state_ok(state, what: str) -> dict:
    """A state dict from the worker, checked: names -> tensors."""
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        fail(f"the training recipe got {describe(state)} as the state dict of your {what}, not names -> tensors")
    return state


def shuffled_state(state: dict, seed: int) -> dict:
    """``state`` with every floating-point tensor's entries randomly permuted."""
    g = torch.Generator().manual_seed(seed)
    return {k: v.reshape(-1)[torch.randperm(v.numel(), generator=g)].reshape(v.shape) if v.is_floating_point() else v
            for k, v in state.items()}


def with_controls(predict_states, trained: dict, initial: dict, shuffles: int) -> tuple:
    """(the prediction with the trained weights, [with ``shuffles`` secret shuffles of them], with the weights before
    training). ``predict_states(states) -> [prediction per state]`` runs in the worker; the states go in an order
    kept here, so the worker cannot tell the real evaluation from a control except by the weights themselves."""
    states = [("trained", trained)] + [("shuffled", shuffled_state(trained, secrets.randbits(62))) for _ in range(shuffles)] + [("initial", initial)]
    secrets.SystemRandom().shuffle(states)
    outputs = predict_states([state for _, state in states])
    if not isinstance(outputs, (tuple, list)) or len(outputs) != len(states):
        fail(f"the grader got {describe(outputs)} from your model, not {len(states)} predictions")
    by_kind = {}
    for (kind, _), out in zip(states, outputs):
        by_kind.setdefault(kind, []).append(out)
    return by_kind["trained"][0], by_kind["shuffled"], by_kind["initial"][0]



def assert_learned(score: float, shuffled: float, initial: float, *, bar: float, min_drop: float, metric: str, n_images: int,
                   what: str, initial_min_drop: float | None = None) -> None:
    """The trained test's verdict: ``score`` at least ``bar``, at least ``min_drop`` above the model with its trained
    weights shuffled, and at least ``initial_min_drop`` (default ``min_drop``) above the model with its weights before
    training (a model whose predictions come from weights it was given, not learned — a hand-set template in a
    parameter that training never changes, say — scores as well there)."""
    if not score >= bar:
        fail(f"after training, {metric} is {score:.3f} on {n_images} validation images (need {bar})")
    if not shuffled <= score - min_drop:
        fail(f"with its trained weights shuffled, your {what} still reaches {metric} {shuffled:.3f} (trained: {score:.3f}): "
             "the predictions must come from the learned weights")
    if not initial <= score - (min_drop if initial_min_drop is None else initial_min_drop):
        fail(f"with its weights as they were before training, your {what} already reaches {metric} {initial:.3f} "
             f"(trained: {score:.3f}): the predictions must come from what it learned")


# A model trained on renamed classes must match the renamed classes better than the true ones by this much. One that
# learned does by about 0.5 (AP50 against the true classes: about a third of its own for a swap of two classes, about 0
# for a cycle of three); a perfect detector of the true classes that hedges each box over every label (true one
# first) reaches AP50 0.33-0.63 against the renamed classes but about 1 against the true ones.
RENAMED_MARGIN = 0.2


def assert_follows_renaming(score: float, true_classes: float, *, margin: float, metric: str, what: str) -> None:
    """The counterfactual verdict of a test whose training classes were renamed: the trained model's ``score`` against
    the renamed classes at least ``margin`` above its score ``true_classes`` against the true ones."""
    if not score >= true_classes + margin:
        fail(f"your trained {what} reaches {metric} {score:.3f} against the renamed classes it was trained on but {true_classes:.3f} "
             f"against the shapes' true classes (need at least {margin} more on the renamed ones): its classes must come from its training labels")


def judge(record_property, scores: tuple[float, float, float], figure: FeedbackFigure | None, *, metric: str, bar: float, min_drop: float,
          n_images: int, what: str, initial_min_drop: float | None = None, digits: int = 3, shuffled_as: str = "with the weights shuffled",
          true_classes: float | None = None, renamed_margin: float = RENAMED_MARGIN) -> None:
    """A trained test's end: attach its picture, record the measured (trained, shuffled, initial) ``scores`` (and, for
    renamed classes, the trained model's score against the true classes) as its feedback, and ``assert_learned``
    (and ``assert_follows_renaming``)."""
    score, shuffled, initial = scores
    attach(record_property, figure)
    against_true = "" if true_classes is None else f"; against the true classes {true_classes:.{digits}f}"
    record_property("feedback", f"measured: {metric} {score:.{digits}f} on {n_images} new images (bar {bar}); {shuffled_as} {shuffled:.{digits}f}, "
                                f"before training {initial:.{digits}f}{against_true}")
    assert_learned(score, shuffled, initial, bar=bar, min_drop=min_drop, metric=metric, n_images=n_images, what=what, initial_min_drop=initial_min_drop)
    if true_classes is not None:
        assert_follows_renaming(score, true_classes, margin=renamed_margin, metric=metric, what=what)
