"""Pictures in a test's feedback: the student's predictions against the ground truth, drawn in the trusted process.

The trained tests (a2-a5) draw a few images rendered like the evaluation set but never scored (``PICTURE_IMAGES``),
with the ground truth in one row and the trained model's predictions below it (boxes with class and score, masks,
segmentation maps); failing unit tests on boxes draw the expected boxes against the returned ones
(``box_comparison_figure``). A test attaches a figure with ``attach(record_property, figure)``; the runner keeps
it with the test's result, results.json shows it as the test's HTML output with the PNG embedded (base64,
``html_output``), and ``grade --out`` writes it beside results.json (``figure_paths``).

Nothing that came from the worker is trusted: predictions pass the ``safe_*`` checks (plain tensors, bounded sizes,
finite numbers, class ids in range) before anything is drawn, and every drawing function returns ``None`` instead of
raising, so a garbage reply costs the picture, never the score. The PNG is drawn with matplotlib's Agg canvas (no
pyplot state), ``PAGE_WIDTH_PX`` wide (Gradescope's page), palette-quantised and at most ``MAX_PNG_BYTES``.

torch, numpy, PIL and matplotlib are imported where they are used: results.py (and with it every CLI command)
imports this module for ``FeedbackFigure`` and ``html_output`` only.
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
import struct
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from matplotlib.figure import Figure

FIGURE_PROPERTY = "feedback_figure"  # the record_property key a test attaches a FeedbackFigure under
PICTURE_IMAGES = 4  # images drawn per trained test
MAX_PNG_BYTES = 150_000  # one figure's PNG; its base64 in results.json is 4/3 of it
MAX_FIGURES_PER_TEST = 2
PAGE_WIDTH_PX, DPI = 690, 100  # Gradescope's test output is about 690 px wide
MAX_PREDICTIONS = 100  # detections per image looked at (COCO's maxDets)
MAX_SIDE = 1024  # an image side the pictures accept
SCORE_THRESHOLD, MAX_SHOWN = 0.3, 10  # detections drawn: score >= SCORE_THRESHOLD, the MAX_SHOWN best
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), by class name.
CLASS_COLORS = {"circle": "#E69F00", "square": "#56B4E9", "triangle": "#CC79A7"}
_OTHER_COLORS = ("#009E73", "#D55E00", "#0072B2", "#F0E442", "#999999")
EXPECTED_COLOR, RETURNED_COLOR, CONTEXT_COLOR = "#009E73", "#D55E00", "#999999"


@dataclass(frozen=True)
class FeedbackFigure:
    """A PNG made here (never by the worker) with its caption; ``width`` x ``height`` pixels."""

    png: bytes
    caption: str
    width: int
    height: int

    @classmethod
    def from_png(cls, png: bytes, caption: str) -> FeedbackFigure | None:
        """The figure of ``png`` when it is a PNG of at most ``MAX_PNG_BYTES``; else None."""
        size = png_size(png)
        if size is None or len(png) > MAX_PNG_BYTES:
            return None
        return cls(bytes(png), str(caption), *size)

    def is_valid(self) -> bool:
        """Still a bounded PNG of the size it says (checked again where it is written out)."""
        return isinstance(self.png, bytes) and len(self.png) <= MAX_PNG_BYTES and png_size(self.png) == (self.width, self.height)


def png_size(png: object) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, or None when ``png`` is not a PNG."""
    if not isinstance(png, (bytes, bytearray)) or len(png) < 24 or bytes(png[:8]) != _PNG_SIGNATURE or bytes(png[12:16]) != b"IHDR":
        return None
    width, height = struct.unpack(">II", bytes(png[16:24]))
    return (width, height) if 0 < width <= 4096 and 0 < height <= 4096 else None


def attach(record_property: Callable[[str, object], None], figure: FeedbackFigure | None) -> None:
    """Attach ``figure`` (if there is one) to the running test's feedback, via pytest's ``record_property``."""
    if isinstance(figure, FeedbackFigure):
        record_property(FIGURE_PROPERTY, figure)


def figures_of(user_properties: Sequence[tuple[str, object]]) -> list[FeedbackFigure]:
    """The valid figures a test attached (at most ``MAX_FIGURES_PER_TEST``), from a pytest report's user_properties."""
    found = [v for k, v in user_properties if k == FIGURE_PROPERTY and isinstance(v, FeedbackFigure) and v.is_valid()]
    return found[:MAX_FIGURES_PER_TEST]


# ----------------------------------------------------------------------------- where the figures go
def html_output(text: str, figures: Sequence[FeedbackFigure]) -> str:
    """A test's output as HTML: ``text`` (already cleaned) escaped in a <pre>, then each figure with its caption,
    the PNG embedded as a data URI. Nothing here is a script or an outside resource."""
    parts = [f'<pre style="white-space: pre-wrap">{html.escape(text)}</pre>'] if text else []
    for f in figures:
        if not f.is_valid():
            continue
        data = base64.b64encode(f.png).decode("ascii")
        caption = html.escape(" ".join(f.caption.split())[:600])
        parts.append(f'<figure><img src="data:image/png;base64,{data}" width="{f.width}" height="{f.height}" alt="{caption}" '
                     f'style="max-width: 100%; height: auto"><figcaption>{caption}</figcaption></figure>')
    return "\n".join(parts)


_HTML_PRE = re.compile(r"^<pre[^>]*>(.*?)</pre>", re.S)


def output_text(test: dict) -> str:
    """The text of a results.json test's output, whether it is plain text or our HTML (its <pre> part)."""
    output = str(test.get("output", ""))
    if test.get("output_format") != "html":
        return output
    match = _HTML_PRE.match(output)
    return html.unescape(match.group(1)) if match else ""


def figure_file_stem(test_name: str) -> str:
    """The file-name part of a test: its function name (``test_x: docstring`` -> ``test_x``), safe characters only."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", test_name.split(":", 1)[0].strip())[:80] or "test"


def figure_paths(out: Path, test_name: str, count: int = MAX_FIGURES_PER_TEST) -> list[Path]:
    """Where ``grade --out OUT`` writes a test's figures: beside OUT, ``<OUT stem>.<test>.png`` then ``-2.png`` ..."""
    stem = f"{out.stem}.{figure_file_stem(test_name)}"
    return [out.with_name(f"{stem}.png" if k == 0 else f"{stem}-{k + 1}.png") for k in range(count)]


# ----------------------------------------------------------------------------- what came from the worker, checked
def _plain(x: object) -> bool:
    import torch

    return type(x) is torch.Tensor and not x.is_complex() and x.layout == torch.strided and not x.is_quantized


def safe_detections(d: object, size: tuple[int, int], num_classes: int, need_scores: bool = True) -> dict | None:
    """A detection dict from the worker, checked for drawing: {boxes Float[D, 4] clipped to ``size`` (H, W),
    scores Float[D] (or None when ``need_scores`` is False and there are none), labels Long[D] in 1..num_classes-1,
    masks Bool[D, H, W] or None}; the ``MAX_PREDICTIONS`` best finite detections with a valid class. None when
    ``d`` is not such a dict (wrong types, shapes or sizes)."""
    import torch

    if not isinstance(d, dict):
        return None
    boxes, scores, labels, masks = d.get("boxes"), d.get("scores"), d.get("labels"), d.get("masks")
    if not (_plain(boxes) and _plain(labels)) or boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        return None
    n = len(boxes)
    if n > 10 * MAX_PREDICTIONS or labels.is_floating_point() or not boxes.dtype.is_floating_point:
        return None
    if scores is None and not need_scores:
        scores_ = None
    elif _plain(scores) and scores.shape == (n,) and scores.dtype.is_floating_point:
        scores_ = scores.detach().double()
    else:
        return None
    h, w = size
    masks_ = None
    if masks is not None:
        if not _plain(masks) or masks.shape[-2:] != (h, w) or masks.shape[0] != n or masks.ndim not in (3, 4) or (masks.ndim == 4 and masks.shape[1] != 1):
            return None
        masks_ = masks.detach().reshape(n, h, w)
        masks_ = masks_ >= 0.5 if masks_.dtype.is_floating_point else masks_ != 0
    boxes_, labels_ = boxes.detach().double(), labels.detach().long()
    ok = torch.isfinite(boxes_).all(1) & (labels_ >= 1) & (labels_ < num_classes)
    if scores_ is not None:
        ok &= torch.isfinite(scores_)
    keep = torch.where(ok)[0]
    if scores_ is not None:
        keep = keep[torch.argsort(scores_[keep], descending=True, stable=True)]
    keep = keep[:MAX_PREDICTIONS]
    boxes_ = boxes_[keep]
    boxes_[:, 0::2] = boxes_[:, 0::2].clamp(0, w)
    boxes_[:, 1::2] = boxes_[:, 1::2].clamp(0, h)
    return {"boxes": boxes_, "scores": None if scores_ is None else scores_[keep], "labels": labels_[keep],
            "masks": None if masks_ is None else masks_[keep]}


def safe_class_map(m: object, size: tuple[int, int], num_classes: int) -> torch.Tensor | None:
    """A predicted class map Long[H, W] from the worker, or None unless it is an integer map of ``size`` with ids
    in 0..num_classes-1."""
    if not _plain(m) or tuple(m.shape) != tuple(size) or m.dtype.is_floating_point or m.dtype == _bool_dtype():
        return None
    m = m.detach().long()
    return m if m.numel() and int(m.min()) >= 0 and int(m.max()) < num_classes else None


def safe_boxes(b: object, max_boxes: int = 64) -> torch.Tensor | None:
    """Boxes Float[K, 4] (x1, y1, x2, y2) from the worker, K <= ``max_boxes``, all finite; else None."""
    if not _plain(b) or b.ndim != 2 or b.shape[1] != 4 or len(b) > max_boxes or b.dtype == _bool_dtype():
        return None
    import torch

    b = b.detach().double()
    return b if bool(torch.isfinite(b).all()) else None


def _bool_dtype():
    import torch

    return torch.bool


def renamed_class_names(lut: torch.Tensor, names: Sequence[str]) -> list[str]:
    """Names indexed by renamed class id: ``out[lut[c]] = names[c]`` (``lut`` Tensor[C] int64, a permutation)."""
    out = list(names)
    for old, new in enumerate(lut.tolist()):
        out[int(new)] = names[old]
    return out


# ----------------------------------------------------------------------------- drawing
def _color(name: str) -> str:
    return CLASS_COLORS.get(name) or _OTHER_COLORS[sum(map(ord, name)) % len(_OTHER_COLORS)]


def _rgb(hex_color: str) -> tuple[float, float, float]:
    return tuple(int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5))  # type: ignore[return-value]


def _image_array(image: torch.Tensor, grey: bool = False) -> np.ndarray:
    """Float[H, W, 3] in [0, 1] from a trusted image Tensor[3, H, W] (float in [0, 1] or uint8); ``grey``: in grey
    and lighter, so that class colours tinted over it stand out from the objects' own colours."""
    import numpy as np

    x = image.detach().float()
    if image.dtype == _uint8():
        x = x / 255
    x = np.clip(x.permute(1, 2, 0).numpy(), 0.0, 1.0)
    if grey:
        x = np.repeat(0.35 + 0.55 * x.mean(axis=2, keepdims=True), 3, axis=2)
    return x


def _uint8():
    import torch

    return torch.uint8


def _tint(canvas: np.ndarray, mask: np.ndarray, color: str, alpha: float = 0.45) -> None:
    """Blend ``color`` into ``canvas`` Float[H, W, 3] where ``mask`` Bool[H, W] (in place)."""
    import numpy as np

    canvas[mask] = (1 - alpha) * canvas[mask] + alpha * np.asarray(_rgb(color))


def _draw_box(ax, box: Sequence[float], color: str, label: str | None, *, dashed: bool = False, linewidth: float = 1.6,
              width: float | None = None) -> None:
    """An (x1, y1, x2, y2) box; ``label`` above its top-left corner (top-right in the right part of an image
    ``width`` wide, so that it stays inside)."""
    from matplotlib.patches import Rectangle

    x1, y1, x2, y2 = (float(v) for v in box)
    ax.add_patch(Rectangle((x1, y1), max(x2 - x1, 0.0), max(y2 - y1, 0.0), fill=False, edgecolor=color, linewidth=linewidth,
                           linestyle="--" if dashed else "-"))
    if label:
        right = width is not None and x1 > 0.55 * width
        ax.text(x2 if right else x1, y1, label, fontsize=7, color="white", va="bottom", ha="right" if right else "left", clip_on=True,
                bbox=dict(facecolor=color, edgecolor="none", alpha=0.85, pad=1.0))


def _new_figure(rows: int, cols: int, panel_aspect: float, *, left: float = 0.22, bottom: float = 0.35, title_lines: int = 1,
                wspace: float = 0.03) -> tuple[Figure, Any]:
    """A figure ``PAGE_WIDTH_PX`` wide of ``rows`` x ``cols`` panels (height / width ``panel_aspect``), with ``left``
    and ``bottom`` inches for row labels and the legend, and room for ``title_lines`` lines of panel titles."""
    from matplotlib.figure import Figure

    width = PAGE_WIDTH_PX / DPI
    panel = (width - left - 0.05) / cols * 0.97
    title = 0.05 + 0.14 * title_lines
    height = rows * (panel * panel_aspect + title) + bottom + 0.05
    fig = Figure(figsize=(width, height), dpi=DPI)
    axes = fig.subplots(rows, cols, squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - 0.05 / width, top=1 - title / height, bottom=bottom / height, wspace=wspace,
                        hspace=title * rows / (height - bottom - title))
    return fig, axes


def _legend(fig: Figure, entries: Sequence[tuple[str, str, str]]) -> None:
    """(label, colour, line style or 'fill') entries in one row at the bottom."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=c, edgecolor=c, alpha=0.7, label=lab) if style == "fill" else Line2D([], [], color=c, linestyle=style, label=lab)
               for lab, c, style in entries]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False, borderaxespad=0.2)


def _panel(ax, title: str, row_label: str = "") -> None:
    ax.set_title(title, fontsize=8, pad=2)
    ax.set_ylabel(row_label, fontsize=8, labelpad=2)
    ax.set_xticks([])
    ax.set_yticks([])


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="white",
            bbox=dict(facecolor="#cf222e", edgecolor="none", alpha=0.85, pad=2))


def encode_png(fig: Figure, caption: str) -> FeedbackFigure | None:
    """``fig`` as a palette PNG of at most ``MAX_PNG_BYTES`` (drawn smaller until it fits, else None)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())
    for scale in (1.0, 0.8, 0.65):
        image = rgb if scale == 1.0 else rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.LANCZOS)
        buffer = io.BytesIO()
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        figure = FeedbackFigure.from_png(buffer.getvalue(), caption)
        if figure is not None:
            return figure
    return None


def _fail_safe(draw: Callable[..., FeedbackFigure | None]) -> Callable[..., FeedbackFigure | None]:
    """A drawing function that returns None instead of raising (the picture is lost, the grade stands)."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs) -> FeedbackFigure | None:
        try:
            return draw(*args, **kwargs)
        except Exception:  # noqa: BLE001 - anything a malformed reply provokes in drawing
            return None

    return wrapper


def _distinct(boxes: torch.Tensor, order: list[int], iou: float) -> list[int]:
    """The rows of ``order`` (best first) whose box overlaps no earlier kept one by more than ``iou``."""
    from torchvision.ops import box_iou

    overlaps = box_iou(boxes[order].double(), boxes[order].double())
    kept: list[int] = []
    for i in range(len(order)):
        if all(float(overlaps[i, j]) <= iou for j in kept):
            kept.append(i)
    return [order[i] for i in kept]


def _detection_label(name: str, score: float | None) -> str:
    return name if score is None else f"{name} {score:.2f}"


@_fail_safe
def detection_figure(images: torch.Tensor, truths: Sequence[dict], predictions: object, class_names: Sequence[str], *, caption: str,
                     score_threshold: float = SCORE_THRESHOLD, max_shown: int = MAX_SHOWN, predicted_row: str = "your trained model",
                     distinct_iou: float | None = None) -> FeedbackFigure | None:
    """Ground truth (top row) and predictions (bottom row) on ``images`` Tensor[N, 3, H, W] (trusted, N <= 8):
    boxes with class name (and score), masks as tinted overlays when the dicts have ``masks``.

    ``truths``: N trusted dicts {boxes Float[K, 4], labels Long[K], masks Bool[K, H, W] optional}; ``predictions``:
    the worker's N detection dicts (checked by ``safe_detections``; a malformed one is drawn as a note);
    ``class_names[id]`` names a label id (both rows use the same ids). Drawn: detections with score >=
    ``score_threshold``, at most ``max_shown`` per image (the best); with ``distinct_iou``, only the best of detections
    overlapping more than that (IoU, whatever their class)."""
    n = len(images)
    if not 1 <= n <= 8 or len(truths) != n:
        return None
    h, w = (int(s) for s in images.shape[-2:])
    if not isinstance(predictions, (list, tuple)) or len(predictions) != n:
        predictions = [None] * n
    fig, axes = _new_figure(2, n, h / w)
    seen: dict[str, None] = {}
    with_masks = any(t.get("masks") is not None for t in truths)
    for i in range(n):
        for row, dets in enumerate((truths[i], safe_detections(predictions[i], (h, w), len(class_names), need_scores=False))):
            ax = axes[row, i]
            canvas = _image_array(images[i], grey=with_masks)
            _panel(ax, f"image {i + 1}" if row == 0 else "", (("ground truth", predicted_row)[row] if i == 0 else ""))
            if dets is None:
                ax.imshow(canvas, interpolation="nearest")
                _note(ax, "no valid output")
                continue
            boxes, labels = dets["boxes"], dets["labels"]
            scores, masks = dets.get("scores"), dets.get("masks")
            order = list(range(len(boxes)))
            if row == 1:
                order = [k for k in order if scores is None or float(scores[k]) >= score_threshold]
                if distinct_iou is not None and order:
                    order = _distinct(boxes, order, distinct_iou)
                order = order[:max_shown]
            for k in order:
                if masks is not None:
                    _tint(canvas, masks[k].bool().numpy(), _color(class_names[int(labels[k])]), alpha=0.6)
            ax.imshow(canvas, interpolation="nearest")
            for k in order:
                name = class_names[int(labels[k])]
                seen[name] = None
                _draw_box(ax, boxes[k].tolist(), _color(name), _detection_label(name, None if row == 0 or scores is None else float(scores[k])), width=w)
            if row == 1 and not order:
                _note(ax, f"no detection with score >= {score_threshold:g}" if scores is not None else "no detection")
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
    _legend(fig, [(name, _color(name), "fill") for name in class_names if name in seen])
    return encode_png(fig, caption)


@_fail_safe
def segmentation_figure(images: torch.Tensor, truth_maps: torch.Tensor, predicted_maps: object, class_names: Sequence[str], *, caption: str,
                        predicted_row: str = "your trained model") -> FeedbackFigure | None:
    """Ground-truth class maps (top row) and predicted ones (bottom row) tinted over ``images`` Tensor[N, 3, H, W]
    (trusted, N <= 8); ``truth_maps`` Long[N, H, W] trusted, ``predicted_maps`` the worker's Tensor[N, H, W] (each
    checked by ``safe_class_map``); class 0 (background) is not tinted; ``class_names[id]`` names an id."""
    n = len(images)
    if not 1 <= n <= 8 or len(truth_maps) != n:
        return None
    h, w = (int(s) for s in images.shape[-2:])
    rows = [list(truth_maps), [None] * n]
    if _plain(predicted_maps) and len(predicted_maps) == n:
        rows[1] = [safe_class_map(m, (h, w), len(class_names)) for m in predicted_maps]
    fig, axes = _new_figure(2, n, h / w)
    for row, (maps, title) in enumerate(zip(rows, ("ground truth", predicted_row))):
        for i in range(n):
            ax = axes[row, i]
            _panel(ax, f"image {i + 1}" if row == 0 else "", title if i == 0 else "")
            canvas = _image_array(images[i], grey=True)
            if maps[i] is None:
                ax.imshow(canvas, interpolation="nearest")
                _note(ax, "no valid class map")
                continue
            m = maps[i].numpy()
            for c in range(1, len(class_names)):
                _tint(canvas, m == c, _color(class_names[c]), alpha=0.75)
            ax.imshow(canvas, interpolation="nearest")
    _legend(fig, [(name, _color(name), "fill") for name in class_names[1:]])
    return encode_png(fig, caption)


def _limits(boxes: Sequence[torch.Tensor], size: tuple[int, int] | None) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of a box panel: the image of ``size`` (H, W), else the ``boxes`` (Tensor[K, 4] each) with a margin."""
    import torch

    if size is not None:
        return 0.0, 0.0, float(size[1]), float(size[0])
    if not boxes:
        return 0.0, 0.0, 1.0, 1.0
    every = torch.cat([b.double() for b in boxes])
    x0, y0 = float(every[:, [0, 2]].min()), float(every[:, [1, 3]].min())
    x1, y1 = float(every[:, [0, 2]].max()), float(every[:, [1, 3]].max())
    pad = 0.08 * max(x1 - x0, y1 - y0, 1e-6)
    return x0 - pad, y0 - pad, x1 + pad, y1 + pad


@dataclass
class BoxPanel:
    """One case of a box unit test: ``expected`` boxes (trusted) against ``returned`` (the worker's, checked by
    ``safe_boxes``), over ``context`` boxes (trusted inputs, grey, labelled by ``context_labels`` or their index)
    with a ``note`` under the title."""

    title: str
    expected: torch.Tensor | None
    returned: object
    context: torch.Tensor | None = None
    note: str = ""
    context_labels: Sequence[str] | None = None


@_fail_safe
def box_comparison_figure(panels: Sequence[BoxPanel], *, caption: str, size: tuple[int, int] | None = None) -> FeedbackFigure | None:
    """Expected (green, dashed) against returned (orange, solid) boxes, one panel per case (at most 4), on a blank
    canvas in image coordinates (y down); ``size`` (H, W) fixes the canvas, else it spans the boxes."""
    import torch

    panels = list(panels)[:4]
    if not panels:
        return None
    returned = [safe_boxes(p.returned) for p in panels]
    limits = [_limits([b for b in (p.context, p.expected, r) if b is not None and len(b)], size) for p, r in zip(panels, returned)]
    if not all(math.isfinite(v) for lim in limits for v in lim):
        return None
    aspect = max((y1 - y0) / max(x1 - x0, 1e-9) for x0, y0, x1, y1 in limits)  # the panels' height / width, from the boxes
    chars = max(int(PAGE_WIDTH_PX / len(panels) / 6), 16)  # a title line's characters at 7 points
    titles = [textwrap.fill(p.title[:70], chars) + (f"\n{textwrap.fill(p.note[:120], chars)}" if p.note else "") for p in panels]
    fig, axes = _new_figure(1, len(panels), min(max(aspect, 0.3), 1.0), left=0.3, bottom=0.55, title_lines=max(t.count("\n") + 1 for t in titles),
                            wspace=0.3)
    for ax, p, ret, (x0, y0, x1, y1), title in zip(axes[0], panels, returned, limits, titles):
        _panel(ax, title)
        ax.title.set_fontsize(7)
        ax.set_facecolor("white")
        ax.set_aspect("equal")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        anchors: list[tuple[float, float]] = []  # labels at the same corner go one under the other
        for k, b in enumerate(p.context if p.context is not None else []):
            label = p.context_labels[k] if p.context_labels is not None and k < len(p.context_labels) else str(k)
            _draw_box(ax, b.tolist(), CONTEXT_COLOR, None, linewidth=1.0)
            near = sum(abs(b[0] - ax_) < 0.04 * (x1 - x0) and abs(b[1] - ay) < 0.04 * (y1 - y0) for ax_, ay in anchors)
            anchors.append((float(b[0]), float(b[1])))
            ax.annotate(str(label)[:24], (float(b[0]), float(b[1])), xytext=(1, -1 - 9 * near), textcoords="offset points", fontsize=6,
                        color="white", va="top", ha="left", annotation_clip=True,
                        bbox=dict(facecolor=CONTEXT_COLOR, edgecolor="none", alpha=0.85, pad=0.8))
        for b in (p.expected if p.expected is not None else []):
            _draw_box(ax, b.tolist(), EXPECTED_COLOR, None, dashed=True, linewidth=2.2)
        if ret is None and p.returned is not None:
            _note(ax, "not boxes Tensor[K, 4] of finite numbers")
        for b in (ret if ret is not None else []):
            _draw_box(ax, b.tolist(), RETURNED_COLOR, None, linewidth=1.4)
        ax.set_xticks([x0, x1], [f"{x0:.4g}", f"{x1:.4g}"])
        ax.set_yticks([y0, y1], [f"{y0:.4g}", f"{y1:.4g}"])
        ax.tick_params(labelsize=6, length=2)
        first, last = ax.get_xticklabels()
        first.set_horizontalalignment("left")
        last.set_horizontalalignment("right")
    entries = [entry for entry, used in ((("expected", EXPECTED_COLOR, "--"), any(p.expected is not None for p in panels)),
                                         (("returned", RETURNED_COLOR, "-"), any(p.returned is not None for p in panels))) if used]
    if any(p.context is not None for p in panels):
        entries.append(("input boxes", CONTEXT_COLOR, "-"))
    _legend(fig, entries)
    return encode_png(fig, caption)
