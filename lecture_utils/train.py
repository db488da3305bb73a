"""A generic training loop with progress bars, device moves and checkpoints.

Used by the later assignments' training cells and by the book. It is written for
models whose loss comes from a *step function* (a detector returns a dict of losses),
so it is not the answer to any assignment's training-loop exercise.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm


def move_to(obj: Any, device: torch.device | str) -> Any:
    """Recursively move tensors inside lists, tuples and dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


@dataclass
class History:
    """Per-epoch records of a ``fit`` run: ``history.loss[e]`` is epoch ``e``'s mean loss."""

    loss: list[float] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)


StepFn = Callable[[torch.nn.Module, Any], "torch.Tensor | Mapping[str, torch.Tensor]"]


def fit(
    model: torch.nn.Module,
    batches: Iterable,
    optimizer: torch.optim.Optimizer,
    step_fn: StepFn,
    epochs: int = 1,
    device: torch.device | str | None = None,
    scheduler: Any | None = None,
    checkpoint: str | Path | None = None,
    max_steps: int | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` and return its loss history.

    Args:
        model: the network; it is moved to ``device`` (default: where its parameters are).
        batches: an iterable of batches (e.g. a ``DataLoader``), re-iterated every epoch.
        optimizer: a torch optimizer over the model's parameters.
        step_fn: ``step_fn(model, batch) -> loss`` where loss is a scalar tensor or a dict of
            scalar tensors (summed for the update, each logged).
        epochs: passes over ``batches``.
        scheduler: optional learning-rate scheduler stepped once per batch.
        checkpoint: optional path; the model and optimizer state are saved there after each epoch.
        max_steps: stop after this many optimizer steps in total (quick modes, tests).
        progress: show tqdm progress bars.
    """
    if device is None:
        device = next(model.parameters()).device
    model.to(device).train()
    history = History()
    steps = 0
    for epoch in tqdm(range(epochs), desc="epochs", disable=not progress or epochs == 1):
        totals: dict[str, float] = {}
        n_batches = 0
        bar = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        for batch in bar:
            out = step_fn(model, move_to(batch, device))
            parts = dict(out) if isinstance(out, Mapping) else {"loss": out}
            total = sum(parts.values())
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            n_batches += 1
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(total.detach()):.4f}")
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        means = {k: v / max(n_batches, 1) for k, v in totals.items()}
        history.parts.append(means)
        history.loss.append(sum(means.values()))
        if checkpoint is not None:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, checkpoint)
        if max_steps is not None and steps >= max_steps:
            break
    return history
