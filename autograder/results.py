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

from autograder.sanitize import clean, defang, one_line

SCHEMA_PATH = Path(__file__).with_name("gradescope_schema.json")
NAME_LIMIT = 200
TEST_OUTPUT_LIMIT, TEST_OUTPUT_LINES = 5000, 100
OUTPUT_LIMIT, OUTPUT_LINES = 20000, 400


@dataclass
class TestResult:
    name: str
    score: float
    max_score: float
    output: str = ""
    visibility: str = "visible"
    status: str = "passed"  # passed | failed (Gradescope ignores unknown keys; used in our CSV/summary)


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
        """The results.json content: cleaned, bounded text and finite numbers only."""
        return {
            "score": self.score,
            "max_score": self.max_score_total,
            "execution_time": round(_number(self.execution_time), 3),
            "output": _output(self.output, OUTPUT_LIMIT, OUTPUT_LINES),
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [
                {
                    "name": one_line(t.name, NAME_LIMIT),
                    "score": _number(t.score),
                    "max_score": _number(t.max_score),
                    "output": _output(t.output, TEST_OUTPUT_LIMIT, TEST_OUTPUT_LINES),
                    "visibility": t.visibility if t.visibility in VISIBILITIES else "visible",
                    "status": "passed" if t.status == "passed" else "failed",
                }
                for t in self.tests
            ],
        }

    def write(self, path: str | Path) -> None:
        """Write results.json (ASCII-only JSON: readable whatever the reader's locale)."""
        Path(path).write_text(json.dumps(self.to_gradescope(), indent=2) + "\n", encoding="utf-8")

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
            if t["status"] != "passed" and t["output"]:
                lines += ["        " + ln for ln in t["output"].split("\n")[:8]]
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
