"""Where each assignment's release, reference solution and hidden tests live."""
from __future__ import annotations

import contextlib
import functools
import io
import os
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.notebook import extract, preamble_sources

PACKAGE_DIR = Path(__file__).resolve().parent
# The course repository (or, inside a Gradescope bundle, the folder it was unpacked to).
COURSE_ROOT = Path(os.environ.get("GRADER_COURSE_ROOT", PACKAGE_DIR.parent)).resolve()
HIDDEN_TESTS = PACKAGE_DIR / "hidden_tests"


@dataclass(frozen=True)
class Assignment:
    id: str

    @property
    def release_path(self) -> Path:
        return COURSE_ROOT / "assignments" / self.id / f"{self.id}.ipynb"

    @property
    def solution_path(self) -> Path:
        return COURSE_ROOT / "solutions" / self.id / f"{self.id}.ipynb"

    @property
    def tests_dir(self) -> Path:
        return HIDDEN_TESTS / self.id

    @property
    def worker_support(self) -> list[tuple[str, str]]:
        """Grader-provided code run in the worker after the student's cells (training recipes)."""
        path = self.tests_dir / "worker_support.py"
        return [("grader_support", path.read_text())] if path.exists() else []

    def release(self) -> nbformat.NotebookNode:
        return nbformat.read(self.release_path, as_version=4)

    def reference(self) -> types.ModuleType:
        """The instructor's solution as a module (trusted process only)."""
        return _load_reference(self.id)


def known_ids() -> list[str]:
    """Assignments that have a hidden test suite."""
    return sorted(p.name for p in HIDDEN_TESTS.glob("*/") if any(p.glob("test_*.py")))


def get(assignment_id: str) -> Assignment:
    if assignment_id not in known_ids():
        raise SystemExit(f"unknown assignment {assignment_id!r}; known: {', '.join(known_ids()) or 'none'}")
    return Assignment(assignment_id)


@functools.lru_cache(maxsize=None)
def _load_reference(assignment_id: str) -> types.ModuleType:
    a = Assignment(assignment_id)
    solution = nbformat.read(a.solution_path, as_version=4)
    module = types.ModuleType(f"reference_{assignment_id}")
    extraction = extract(solution, solution)
    if extraction.missing:
        raise RuntimeError(f"the solution notebook of {assignment_id} lacks cells {extraction.missing}")
    with contextlib.redirect_stdout(io.StringIO()):  # the preamble prints the device
        for name, source in preamble_sources(solution) + extraction.cells:
            exec(compile(source, f"<solution {assignment_id}:{name}>", "exec"), module.__dict__)  # noqa: S102 - instructor code
    return module
