"""Gradescope-format results: building, validating, printing.

Names and outputs may carry text from the student's code. Every sink here (``to_gradescope``,
``write``, ``summary``) passes them through :mod:`autograder.sanitize` first, so nothing a submission
does can put control characters, unbounded text or a fake ``PASS`` line on the TA's terminal, in the
log or in results.json.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from autograder.feedback_figures import MAX_FIGURES_PER_TEST, FeedbackFigure, figure_paths, html_output, output_text
from autograder.sanitize import clean, defang, one_line

SCHEMA_PATH = Path(__file__).with_name("gradescope_schema.json")
NAME_LIMIT = 200
TEST_OUTPUT_LIMIT, TEST_OUTPUT_LINES = 5000, 100
OUTPUT_LIMIT, OUTPUT_LINES = 20000, 400
FIGURES_LIMIT = 1_000_000  # PNG bytes of all the tests' figures together (results.json carries them in base64)


@dataclass
class TestResult:
    name: str
    score: float
    max_score: float
    output: str = ""
    visibility: str = "visible"
    status: str = "passed"  # passed | failed (Gradescope ignores unknown keys; used in our CSV/summary)
    figures: list[FeedbackFigure] = field(default_factory=list)  # pictures made by the trusted test (feedback_figures)


@dataclass
class Results:
    assignment: str
    tests: list[TestResult] = field(default_factory=list)
    output: str = ""
    execution_time: float = 0.0

    @property
    def score(self) -> float:
        return round(sum(_number(t.score) for t in self.tests), 6)

    @property
    def max_score_total(self) -> float:
        return round(sum(_number(t.max_score) for t in self.tests), 6)

    def to_gradescope(self) -> dict:
        """The results.json content: cleaned, bounded text and finite numbers only; a test with figures has HTML
        output (its text escaped, the PNGs embedded)."""
        tests = []
        for t, figures in zip(self.tests, self.shown_figures()):
            text = _output(t.output, TEST_OUTPUT_LIMIT, TEST_OUTPUT_LINES)
            tests.append({
                "name": one_line(t.name, NAME_LIMIT),
                "score": _number(t.score),
                "max_score": _number(t.max_score),
                "output": html_output(text, figures) if figures else text,
                **({"output_format": "html"} if figures else {}),
                "visibility": t.visibility if t.visibility in VISIBILITIES else "visible",
                "status": "passed" if t.status == "passed" else "failed",
            })
        return {
            "score": self.score,
            "max_score": self.max_score_total,
            "execution_time": round(_number(self.execution_time), 3),
            "output": _output(self.output, OUTPUT_LIMIT, OUTPUT_LINES),
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": tests,
        }

    def shown_figures(self) -> list[list[FeedbackFigure]]:
        """Per test, the figures results.json shows: valid PNGs, at most ``MAX_FIGURES_PER_TEST`` a test and
        ``FIGURES_LIMIT`` bytes in all (in test order)."""
        budget, shown = FIGURES_LIMIT, []
        for t in self.tests:
            keep = []
            for f in (t.figures if isinstance(t.figures, list) else [])[:MAX_FIGURES_PER_TEST]:
                if isinstance(f, FeedbackFigure) and f.is_valid() and len(f.png) <= budget:
                    keep.append(f)
                    budget -= len(f.png)
            shown.append(keep)
        return shown

    def write(self, path: str | Path) -> None:
        """Write results.json (ASCII-only JSON: readable whatever the reader's locale)."""
        Path(path).write_text(json.dumps(self.to_gradescope(), indent=2) + "\n", encoding="utf-8")

    def write_figures(self, out: str | Path) -> list[Path]:
        """Write each shown figure as a PNG beside ``out`` (results.json), ``<out stem>.<test>.png``
        (``feedback_figures.figure_paths``), after removing those a previous grading left for the same tests."""
        out, written = Path(out), []
        for t, figures in zip(self.tests, self.shown_figures()):
            paths = figure_paths(out, t.name)
            for p in paths:
                p.unlink(missing_ok=True)
            for p, f in zip(paths, figures):
                p.write_bytes(f.png)
                written.append(p)
        return written

    def summary(self) -> str:
        """The TA's view: a header, the notes, one PASS/FAIL line per test and the failures' feedback."""
        data = self.to_gradescope()
        lines = [f"== {one_line(self.assignment, NAME_LIMIT)}: {data['score']:g} / {data['max_score']:g} points ({data['execution_time']:.1f} s)"]
        if data["output"]:
            lines += ["", *("    " + ln for ln in data["output"].split("\n")), ""]
        width = max((len(t["name"]) for t in data["tests"]), default=10)
        for t in data["tests"]:
            mark = "PASS" if t["status"] == "passed" else "FAIL"
            lines.append(f"  {mark}  {t['name']:<{width}}  {t['score']:g}/{t['max_score']:g}")
            text = output_text(t)
            if t["status"] != "passed" and text:
                lines += ["        " + ln for ln in text.split("\n")[:8]]
        return "\n".join(lines)


VISIBILITIES = ("hidden", "after_due_date", "after_published", "visible")


def _output(text: object, limit: int, max_lines: int) -> str:
    """Feedback text as it may be shown: cleaned, bounded, no line posing as a grader line."""
    return defang(clean(text, limit, max_lines))


def _number(x: object) -> float:
    """A finite float for JSON (NaN and infinities are not valid JSON)."""
    try:
        x = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def validate(results: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``results`` fits Gradescope's format."""
    import jsonschema

    jsonschema.validate(results, json.loads(SCHEMA_PATH.read_text()))
