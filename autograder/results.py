"""Gradescope-format results: building, validating, printing."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("gradescope_schema.json")


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
        return round(sum(t.score for t in self.tests), 6)

    @property
    def max_score_total(self) -> float:
        return round(sum(t.max_score for t in self.tests), 6)

    def to_gradescope(self) -> dict:
        return {
            "score": self.score,
            "max_score": self.max_score_total,
            "execution_time": round(self.execution_time, 3),
            "output": self.output,
            "visibility": "visible",
            "stdout_visibility": "hidden",
            "tests": [asdict(t) for t in self.tests],
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_gradescope(), indent=2, ensure_ascii=False) + "\n")

    def summary(self) -> str:
        lines = [f"== {self.assignment}: {self.score:g} / {self.max_score_total:g} points ({self.execution_time:.1f} s)"]
        if self.output:
            lines += ["", *("  " + ln for ln in self.output.splitlines()), ""]
        width = max((len(t.name) for t in self.tests), default=10)
        for t in self.tests:
            mark = "PASS" if t.status == "passed" else "FAIL"
            lines.append(f"  {mark}  {t.name:<{width}}  {t.score:g}/{t.max_score:g}")
            if t.status != "passed" and t.output:
                lines += ["        " + ln for ln in t.output.splitlines()[:8]]
        return "\n".join(lines)


def validate(results: dict) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``results`` fits Gradescope's format."""
    import jsonschema

    jsonschema.validate(results, json.loads(SCHEMA_PATH.read_text()))
