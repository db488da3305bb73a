"""Plotting helpers shared by the book and the assignments."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch


def plot_losses(curves: Mapping[str, Sequence[float]], title: str = "training loss", logy: bool = True, ax=None):
    """Plot one loss curve per entry of ``curves`` (name -> values per step/epoch)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), list(values), label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax


def show_image(image: torch.Tensor, ax=None, title: str | None = None):
    """Show an image given as Tensor[3, H, W] (float in [0, 1] or uint8) or Tensor[H, W]."""
    if ax is None:
        _, ax = plt.subplots()
    img = image.detach().cpu()
    if img.dtype == torch.uint8:
        img = img.float() / 255
    if img.ndim == 3:
        img = img.permute(1, 2, 0)
    ax.imshow(img.clamp(0, 1).numpy(), cmap="gray" if img.ndim == 2 else None)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def draw_boxes(ax, boxes: torch.Tensor, labels: Sequence[str] | None = None, color: str = "lime", linewidth: float = 2):
    """Draw boxes Tensor[N, 4] (xyxy, pixels) on a matplotlib axis, with optional text labels."""
    from matplotlib.patches import Rectangle

    for i, (x1, y1, x2, y2) in enumerate(boxes.detach().cpu().tolist()):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=linewidth))
        if labels is not None:
            ax.text(x1, y1, labels[i], color="black", fontsize=8, va="bottom", bbox=dict(facecolor=color, alpha=0.7, pad=1, linewidth=0))
    return ax


def draw_graph(edges: Sequence[tuple[str, str]], labels: Mapping[str, str] | None = None, ax=None, title: str | None = None):
    """Draw a small directed graph (e.g. an autograd graph) laid out in layers, left to right.

    Args:
        edges: (parent, child) node ids; data flows from parent to child.
        labels: optional display text per node id.
    """
    nodes: list[str] = []
    for a, b in edges:
        for n in (a, b):
            if n not in nodes:
                nodes.append(n)
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        parents[b].append(a)
    depth: dict[str, int] = {}

    def layer(n: str, seen: frozenset = frozenset()) -> int:
        if n not in depth:
            depth[n] = 0 if not parents[n] or n in seen else 1 + max(layer(p, seen | {n}) for p in parents[n])
        return depth[n]

    for n in nodes:
        layer(n)
    children: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        children[a].append(b)
    for n in nodes:  # draw each input right before its first consumer
        if not parents[n] and children[n]:
            depth[n] = min(depth[c] for c in children[n]) - 1
    columns: dict[int, list[str]] = {}
    for n in nodes:
        columns.setdefault(depth[n], []).append(n)
    pos = {n: (d, -i + (len(col) - 1) / 2) for d, col in columns.items() for i, n in enumerate(col)}
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 * (len(columns) + 1), 1.2 * (max(map(len, columns.values())) + 1)))
    for a, b in edges:
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=dict(arrowstyle="->", color="0.4", shrinkA=18, shrinkB=18))
    for n, (x, y) in pos.items():
        text = (labels or {}).get(n, n)
        ax.text(x, y, text, ha="center", va="center", fontsize=9, bbox=dict(boxstyle="round", facecolor="#dbe9f6", edgecolor="#4a7ab7"))
    ax.set_xlim(-0.7, max(columns) + 0.7)
    ax.set_ylim(min(y for _, y in pos.values()) - 0.8, max(y for _, y in pos.values()) + 0.8)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def autograd_edges(output: torch.Tensor, names: Mapping[int, str] | None = None) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Walk ``output.grad_fn`` backwards and return the graph as (edges, labels) for ``draw_graph``.

    Leaf tensors show up as their ``AccumulateGrad`` nodes, labelled with ``names[id(tensor)]``
    when given (e.g. ``{id(w1): "w1"}``).
    """
    names = dict(names or {})
    edges: list[tuple[str, str]] = []
    labels: dict[str, str] = {}
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        key = str(id(fn))
        if hasattr(fn, "variable"):
            labels[key] = names.get(id(fn.variable), "leaf")
        else:
            labels[key] = re.sub(r"Backward\d*$", "", type(fn).__name__)
        for child, _ in fn.next_functions:
            if child is not None:
                edges.append((str(id(child)), key))
                stack.append(child)
    return edges, labels
