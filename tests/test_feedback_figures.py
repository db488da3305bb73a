"""Pictures in the feedback (autograder/feedback_figures.py): drawn in the trusted process, fail-safe on whatever the
worker returns, bounded, and carried to results.json (HTML with the PNG embedded), beside ``grade --out`` and into
the class report."""
from __future__ import annotations

import base64
import io
import json
import re
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from autograder import assignments, feedback_figures as ff
from autograder.results import FIGURES_LIMIT, Results, validate
from autograder.results import TestResult as Result
from lecture_utils.data import CLASSES, ShapesDataset


def shapes(n: int = 4, size: int = 128, seed: int = 11):
    data = ShapesDataset(n, size, seed=seed, min_objects=1, max_objects=3)
    items = [data[i] for i in range(n)]
    return torch.stack([im for im, _ in items]), [t for _, t in items]


def decoded(figure: ff.FeedbackFigure) -> np.ndarray:
    image = Image.open(io.BytesIO(figure.png))
    assert image.format == "PNG" and image.size == (figure.width, figure.height)
    return np.asarray(image.convert("RGB")).astype(int)


def color_pixels(pixels: np.ndarray, hex_color: str, tol: int = 40) -> int:
    rgb = np.array([int(hex_color[i:i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=2) <= tol).sum())


def perfect(targets, keys=("boxes", "labels", "masks")):
    return [{**{k: t[k] for k in keys}, "scores": torch.linspace(0.99, 0.5, len(t["boxes"]))} for t in targets]


# ----------------------------------------------------------------------------- the figures
def test_detection_figure_is_a_readable_bounded_png_that_draws_the_predictions():
    images, targets = shapes()
    truths = [{k: t[k] for k in ("boxes", "labels")} for t in targets]
    figure = ff.detection_figure(images, truths, perfect(targets, ("boxes", "labels")), list(CLASSES), caption="caption <b>")
    assert figure is not None and figure.width == ff.PAGE_WIDTH_PX and figure.height >= 200
    assert len(figure.png) <= ff.MAX_PNG_BYTES and figure.caption == "caption <b>"
    pixels = decoded(figure)
    # the same with nothing predicted: the rows differ only where the predictions were drawn, in their classes' colours
    empty = ff.detection_figure(images, truths, [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}] * 4,
                                list(CLASSES), caption="")
    assert (empty.width, empty.height) == (figure.width, figure.height)
    changed = np.abs(pixels - decoded(empty)).max(axis=2) > 60
    half = figure.height // 2
    assert changed[:half].sum() < 50  # the ground truth row is the same
    for c in {int(l) for t in targets for l in t["labels"]}:
        color = ff.CLASS_COLORS[CLASSES[c]]
        assert color_pixels(pixels[half:][changed[half:]][None], color) > 50, CLASSES[c]
        assert color_pixels(pixels[:half], color) > 50, CLASSES[c]


def test_mask_and_segmentation_figures_tint_the_classes():
    images, targets = shapes(seed=12)
    truths = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
    masks = ff.detection_figure(images, truths, perfect(targets), list(CLASSES), caption="masks")
    semantic = torch.stack([t["semantic"] for t in targets])
    wrong = torch.zeros_like(semantic)
    segmentation = ff.segmentation_figure(images, semantic, semantic, list(CLASSES), caption="maps")
    background = ff.segmentation_figure(images, semantic, wrong, list(CLASSES), caption="maps")
    for figure in (masks, segmentation, background):
        assert figure is not None and figure.width == ff.PAGE_WIDTH_PX and figure.height >= 200 and len(figure.png) <= ff.MAX_PNG_BYTES
    def tinted(figure) -> tuple[int, int]:
        """Coloured pixels (the images are drawn in grey under the tint) in the top and the bottom row, legend left out."""
        pixels = decoded(figure)
        coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 40
        half = figure.height // 2
        return int(coloured[:half].sum()), int(coloured[half:figure.height - 40].sum())

    truth, predicted = tinted(segmentation)
    assert truth > 2000 and abs(predicted - truth) < 0.1 * truth  # perfect: the rows agree
    assert tinted(background) == (truth, pytest.approx(0, abs=0.01 * truth))  # all background: nothing tinted below
    truth, predicted = tinted(masks)
    assert truth > 2000 and predicted > 0.8 * truth  # perfect masks (and their boxes and labels)


def test_box_comparison_figure_draws_expected_and_returned_boxes():
    expected = torch.tensor([[10.0, 10.0, 50.0, 40.0]])
    returned = torch.tensor([[12.0, 8.0, 70.0, 45.0], [60.0, 60.0, 90.0, 100.0]])
    figure = ff.box_comparison_figure([ff.BoxPanel("nms", expected, returned, context=torch.cat([expected, returned]), note="keep [0]")],
                                      caption="expected vs returned")
    pixels = decoded(figure)
    assert color_pixels(pixels, ff.EXPECTED_COLOR, 30) > 50 and color_pixels(pixels, ff.RETURNED_COLOR, 30) > 50
    only_expected = decoded(ff.box_comparison_figure([ff.BoxPanel("nms", expected, torch.zeros(0, 4))], caption=""))
    assert color_pixels(only_expected[:-45], ff.RETURNED_COLOR, 30) < 10 < color_pixels(pixels[:-45], ff.RETURNED_COLOR, 30)  # the legend left out


class Hostile:
    """Raises on everything a drawing function might try."""

    def __getattr__(self, name):
        raise RuntimeError("hostile")

    def __len__(self):
        raise RuntimeError("hostile")

    def __iter__(self):
        raise RuntimeError("hostile")


class Subclass(torch.Tensor):
    pass


GARBAGE = [
    None, "detections", 3, Hostile(), [Hostile()] * 4, [None] * 4, [{}] * 4, [[1, 2, 3]] * 4,
    [{"boxes": torch.full((5, 4), float("nan")), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long)}] * 4,
    [{"boxes": torch.rand(5, 4) * 1e30, "scores": torch.full((5,), float("inf")), "labels": torch.full((5,), 99)}] * 4,
    [{"boxes": torch.rand(5, 4), "scores": torch.rand(5), "labels": torch.rand(5)}] * 4,  # float labels
    [{"boxes": torch.rand(5, 3), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long)}] * 4,
    [{"boxes": torch.rand(5, 4, dtype=torch.complex64), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long)}] * 4,
    [{"boxes": torch.rand(5, 4).as_subclass(Subclass), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long)}] * 4,
    [{"boxes": torch.rand(200_000, 4), "scores": torch.rand(200_000), "labels": torch.ones(200_000, dtype=torch.long)}] * 4,
    [{"boxes": torch.rand(5, 4), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long), "masks": torch.ones(5, 3, 3)}] * 4,
    [{"boxes": torch.rand(5, 4), "scores": torch.rand(5), "labels": torch.ones(5, dtype=torch.long), "masks": Hostile()}] * 4,
    [{"boxes": torch.tensor([[50.0, 50.0, 10.0, -1e9]]), "scores": torch.tensor([-5.0]), "labels": torch.tensor([-3])}] * 4,
]


@pytest.mark.parametrize("reply", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_from_the_worker_never_raises(reply):
    """Whatever came back, a figure (saying the output was not valid) or None; never an exception, never unbounded."""
    images, targets = shapes(seed=13)
    truths = [{k: t[k] for k in ("boxes", "labels", "masks")} for t in targets]
    for figure in (ff.detection_figure(images, truths, reply, list(CLASSES), caption="x"),
                   ff.segmentation_figure(images, torch.stack([t["semantic"] for t in targets]), reply, list(CLASSES), caption="x"),
                   ff.box_comparison_figure([ff.BoxPanel("case", torch.tensor([[0.0, 0, 1, 1]]), reply)], caption="x")):
        assert figure is None or (isinstance(figure, ff.FeedbackFigure) and figure.is_valid())


def test_safe_detections_keeps_only_finite_valid_detections():
    d = {"boxes": torch.tensor([[1.0, 2, 30, 40], [float("nan"), 0, 1, 1], [-10, -5, 500, 60], [5, 5, 6, 6]]),
         "scores": torch.tensor([0.5, 0.9, 0.7, 0.8]), "labels": torch.tensor([1, 2, 3, 4])}
    out = ff.safe_detections(d, (64, 128), len(CLASSES))
    assert out["labels"].tolist() == [3, 1]  # NaN box and class 4 dropped, by decreasing score
    assert out["boxes"].tolist() == [[0.0, 0.0, 128.0, 60.0], [1.0, 2.0, 30.0, 40.0]]  # clipped to the image
    assert ff.safe_detections({**d, "scores": None}, (64, 128), len(CLASSES)) is None
    assert ff.safe_detections({k: v for k, v in d.items() if k != "scores"}, (64, 128), len(CLASSES), need_scores=False)["scores"] is None
    assert ff.safe_class_map(torch.tensor([[0, 3], [1, 2]]), (2, 2), 4).dtype == torch.int64
    for bad in (torch.tensor([[0, 4], [1, 2]]), torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.bool), [[0, 0], [0, 0]]):
        assert ff.safe_class_map(bad, (2, 2), 4) is None


def test_renamed_class_names_follow_the_renaming():
    lut = torch.tensor([0, 3, 1, 2])  # circle -> 3, square -> 1, triangle -> 2
    assert ff.renamed_class_names(lut, CLASSES) == ["background", "square", "triangle", "circle"]


# ----------------------------------------------------------------------------- where the figures go
def figure(seed: int = 14) -> ff.FeedbackFigure:
    images, targets = shapes(seed=seed)
    return ff.detection_figure(images, [{k: t[k] for k in ("boxes", "labels")} for t in targets], perfect(targets, ("boxes", "labels")),
                               list(CLASSES), caption="4 new images <not scored> & more")


def test_results_json_shows_figures_as_html_with_the_png_embedded(tmp_path):
    fig = figure()
    results = Results("a4_one_stage", [Result("test_trained: trained", 5, 5, "measured: <script>alert(1)</script>\nPASS  fake 5/5", figures=[fig]),
                                       Result("test_plain: no figure", 0, 3, "a < b", status="failed")])
    data = results.to_gradescope()
    validate(data)
    with_figure, plain = data["tests"]
    assert with_figure["output_format"] == "html" and "output_format" not in plain and plain["output"] == "a < b"
    assert "<script>" not in with_figure["output"] and "&lt;script&gt;" in with_figure["output"] and "| PASS  fake" in with_figure["output"]
    src = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"', with_figure["output"])
    assert base64.b64decode(src.group(1)) == fig.png and (int(src.group(2)), int(src.group(3))) == (fig.width, fig.height)
    assert "&lt;not scored&gt; &amp; more" in with_figure["output"]
    assert ff.output_text(with_figure) == "measured: <script>alert(1)</script>\n| PASS  fake 5/5" and ff.output_text(plain) == "a < b"
    results.tests[0].status = "failed"
    assert "base64" not in results.summary() and "measured: <script>" in results.summary()

    out = tmp_path / "results.json"
    stale = out.with_name("results.test_plain.png")
    stale.write_bytes(b"left by an earlier grading")
    results.write(out)
    written = results.write_figures(out)
    assert written == [tmp_path / "results.test_trained.png"] and written[0].read_bytes() == fig.png and not stale.exists()
    validate(json.loads(out.read_text()))


def test_figures_are_bounded_in_number_and_bytes():
    fig = figure()
    not_png = ff.FeedbackFigure(b"<svg onload=alert(1)>", "x", 10, 10)
    lying = ff.FeedbackFigure(fig.png, "x", fig.width + 1, fig.height)
    per_test = max(1, FIGURES_LIMIT // len(fig.png))
    tests = [Result(f"test_{k}", 1, 1, "", figures=[fig, fig, fig, not_png, lying]) for k in range(per_test)]
    shown = Results("a4_one_stage", tests).shown_figures()
    assert all(len(s) <= ff.MAX_FIGURES_PER_TEST for s in shown) and sum(len(f.png) for s in shown for f in s) <= FIGURES_LIMIT
    assert not any(f is not_png or f is lying for s in shown for f in s)
    assert ff.FeedbackFigure.from_png(b"\x89PNG\r\n\x1a\n" + b"\0" * (ff.MAX_PNG_BYTES + 10), "x") is None
    assert ff.figures_of([("feedback", "text"), (ff.FIGURE_PROPERTY, "forged"), (ff.FIGURE_PROPERTY, fig), (ff.FIGURE_PROPERTY, not_png)]) == [fig]


def test_a_test_attaches_its_figure_through_the_grading_plugin(tmp_path):
    """The runner's plugin keeps the figures a test attached with attach(record_property, ...), passed or failed."""
    from autograder.runner import GradingPlugin

    png_path = tmp_path / "figure.png"
    png_path.write_bytes(figure().png)
    (tmp_path / "test_pictures.py").write_text(textwrap.dedent(f"""
        import pytest
        from pathlib import Path
        from autograder.feedback_figures import FeedbackFigure, attach

        FIG = FeedbackFigure.from_png(Path({str(png_path)!r}).read_bytes(), "four new images")

        @pytest.mark.part("p")
        @pytest.mark.points(2)
        def test_passes_with_a_picture(record_property):
            record_property("feedback", "measured: 0.9")
            attach(record_property, FIG)

        @pytest.mark.part("p")
        @pytest.mark.points(3)
        def test_fails_with_a_picture(record_property):
            attach(record_property, FIG)
            attach(record_property, None)
            assert False, "below the bar"
    """))

    class Client:
        def release_all(self):
            pass

    manifest = assignments.Assignment("fake", "Fake", "L0", "released", (assignments.Part("p", "P", 5.0),), assignments.GradingLimits())
    plugin = GradingPlugin(manifest, student=None, client=Client())
    code = pytest.main([str(tmp_path), "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-c", str(assignments.HIDDEN_TESTS / "pytest.ini"),
                        "--rootdir", str(tmp_path), "--assert=plain"], plugins=[plugin])
    assert code == 1 and not plugin.collection_errors
    by_name = {t.name.split(":")[0]: t for t in plugin.results}
    passed, failed = by_name["test_passes_with_a_picture"], by_name["test_fails_with_a_picture"]
    assert passed.status == "passed" and passed.output == "measured: 0.9" and len(passed.figures) == 1
    assert failed.status == "failed" and "below the bar" in failed.output and len(failed.figures) == 1
    assert failed.figures[0].png == png_path.read_bytes() and failed.figures[0].caption == "four new images"
    data = Results("fake", plugin.results).to_gradescope()
    validate(data)
    assert all(t["output_format"] == "html" for t in data["tests"])


def test_the_class_report_links_each_students_pictures(tmp_path):
    from autograder.report import write_report

    grading = tmp_path / "_grading"
    grading.mkdir()
    fig = figure()
    for sid, figures in (("alice", [fig]), ("bob", [])):
        results = Results("a4_one_stage", [Result("test_trained_detector_reaches_ap50: trained", 0, 22, "below the bar", status="failed", figures=figures)])
        results.write(grading / f"{sid}.json")
        results.write_figures(grading / f"{sid}.json")
        (grading / f"{sid}.log").write_text("log")
    index = write_report(tmp_path, assignment_id="a4_one_stage")
    page = index.read_text()
    links = re.findall(r'<a href="(pictures/[^"]+)">picture 1</a>', page)
    assert len(links) == 1 and "alice" in links[0] and (index.parent / links[0]).read_bytes() == fig.png
    assert "below the bar" in page and "base64" not in page


# ----------------------------------------------------------------------------- a2's failed box checks show the boxes
def recorder():
    recorded = []
    return recorded, lambda key, value: recorded.append((key, value))


BOX_GARBAGE = [None, "boxes", Hostile(), torch.full((4,), float("nan")), torch.zeros(3, 3, dtype=torch.complex64), torch.tensor([10**6, -1]),
               torch.rand(10**5), torch.rand(2, 2).as_subclass(Subclass)]


def test_a2_box_checks_attach_expected_against_returned_boxes():
    import torchvision.ops as tv
    from torchvision.models.detection._utils import BoxCoder

    from autograder.hidden_tests.a2_detection_basics import helpers
    from autograder.testing import GradingFailure

    g = torch.Generator().manual_seed(0)
    boxes, scores = helpers.random_boxes(40, g, scale=100), torch.rand(40, generator=g)
    expected = tv.nms(boxes, scores, 0.5)
    recorded, record = recorder()
    with pytest.raises(GradingFailure, match="nms"):
        helpers.check_nms_pictured(record, torch.arange(40), expected, boxes, scores, 0.5, "nms: kept indices")  # suppresses nothing
    ((key, fig),) = recorded
    assert key == ff.FIGURE_PROPERTY and fig.is_valid() and "IoU threshold 0.5" in fig.caption
    pixels = decoded(fig)
    assert color_pixels(pixels[:-45], ff.RETURNED_COLOR, 30) > 50 and color_pixels(pixels[:-45], ff.EXPECTED_COLOR, 30) > 50
    recorded.clear()
    helpers.check_nms_pictured(record, expected.clone(), expected, boxes, scores, 0.5, "nms")  # right: no picture, no failure
    assert recorded == []

    proposals, codes = helpers.random_boxes(10, g), torch.randn(10, 8, generator=g)
    decoded_boxes = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(codes, proposals)
    wrong = decoded_boxes.clone()
    wrong[3, 4:] += 5.0
    with pytest.raises(GradingFailure):
        helpers.check_boxes(record, wrong, decoded_boxes, "decode_boxes", proposals, rtol=1e-5, atol=1e-4)
    ((_, fig),) = recorded
    assert fig.is_valid() and "decode_boxes" in fig.caption
    recorded.clear()

    iou = tv.box_iou(boxes[:5], boxes[5:9])
    with pytest.raises(GradingFailure):
        helpers.check_iou_pictured(record, iou * 0.5, iou, boxes[:5], boxes[5:9], "box_iou", rtol=1e-5, atol=1e-6)
    assert len(recorded) == 1 and recorded[0][1].is_valid()
    recorded.clear()

    for garbage in BOX_GARBAGE:  # whatever came back: the check fails as before, with or without a picture, never otherwise
        for check in (lambda: helpers.check_nms_pictured(record, garbage, expected, boxes, scores, 0.5, "nms"),
                      lambda: helpers.check_boxes(record, garbage, decoded_boxes, "decode_boxes", proposals, rtol=1e-5, atol=1e-4),
                      lambda: helpers.check_iou_pictured(record, garbage, iou, boxes[:5], boxes[5:9], "box_iou")):
            with pytest.raises(GradingFailure):
                check()
    assert all(isinstance(f, ff.FeedbackFigure) and f.is_valid() for _, f in recorded)


# ----------------------------------------------------------------------------- end to end: the trained tests' pictures
A2_TRAINED = ("test_detector_learns_to_classify", "test_detector_learns_to_localize")
# The solution's detector, except on the grader's last batch of 4 images (the pictures' images: 128 evaluation
# images are predicted in batches of 64, then the 4): NaN class scores and infinite boxes there.
GARBAGE_ON_THE_PICTURES = '''

_Solved = SingleObjectDetector


class SingleObjectDetector(_Solved):
    def forward(self, images):
        logits, boxes = super().forward(images)
        if images.shape[0] == 4:
            return torch.full_like(logits, float("nan")), torch.full_like(boxes, float("inf"))
        return logits, boxes
'''


def figures_in(data: dict, test: str) -> list[tuple[int, int]]:
    """(width, height) of each PNG embedded in ``test``'s output in results.json ``data``."""
    (t,) = [t for t in data["tests"] if t["name"].startswith(test + ":")]
    return [Image.open(io.BytesIO(base64.b64decode(b))).size for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', t["output"])]


@pytest.mark.slow
def test_a2_trained_tests_show_a_picture_and_garbage_on_it_costs_nothing(grade, tmp_path):
    """a2's trained tests carry the picture; a model whose predictions on the pictures' images are garbage keeps its
    points (those images are not scored) and its results are valid."""
    from conftest import cell_by_id, solution_nb

    a2 = "a2_detection_basics"
    nb = solution_nb(a2)  # the solution's own pictures: tests/test_grading_assignments.py (every trained test of a2-a5)
    cell_by_id(nb, "single_object").source += GARBAGE_ON_THE_PICTURES
    hostile = grade(nb, a2, parts=["single_object"])
    assert hostile.score == hostile.max_score_total, [(t.name, t.output) for t in hostile.tests if t.status != "passed"]
    data = hostile.to_gradescope()
    validate(data)
    for test in A2_TRAINED:
        ((width, height),) = figures_in(data, test)
        assert width == ff.PAGE_WIDTH_PX and height >= 200
    assert "Predictions of your trained SingleObjectDetector" in data["tests"][-1]["output"]
    written = hostile.write_figures(tmp_path / "results.json")
    assert sorted(p.name for p in written) == sorted(f"results.{t}.png" for t in A2_TRAINED)


def test_distinct_iou_draws_only_the_best_of_overlapping_detections():
    images, _ = shapes(seed=15)
    box = torch.tensor([[30.0, 30.0, 90.0, 90.0]])
    duplicates = {"boxes": torch.cat([box, box + 3.0]), "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 2])}  # circle, then square (IoU 0.82)
    truths = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 4
    both = decoded(ff.detection_figure(images, truths, [duplicates] * 4, list(CLASSES), caption=""))
    best = decoded(ff.detection_figure(images, truths, [duplicates] * 4, list(CLASSES), caption="", distinct_iou=0.7))
    square, circle = ff.CLASS_COLORS["square"], ff.CLASS_COLORS["circle"]
    half = both.shape[0] // 2
    assert color_pixels(both[half:-45], square, 40) > 200
    assert color_pixels(best[half:-45], square, 40) < color_pixels(both[half:-45], square, 40) / 4
    assert color_pixels(best[half:-45], circle, 40) > 200
