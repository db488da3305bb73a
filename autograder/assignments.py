"""The assignments, as their manifests describe them (``autograder/manifests/<id>.toml``).

A manifest is the one place that says what an assignment is: its title and lecture, its status
(``released``; ``draft`` while being written;
``planned``), its graded parts (one per graded cell, with points), the worker's
limits while grading it, and the grader support modules that run in the worker. The Makefile
(``python -m autograder list``), the project's tests, the benchmarks, the Gradescope bundle and the
book's assignment table all read it from here.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat

from autograder.notebook import extract, preamble_sources

PACKAGE_DIR = Path(__file__).resolve().parent
# The course repository (or, inside a Gradescope bundle, the folder it was unpacked to).
COURSE_ROOT = Path(os.environ.get("GRADER_COURSE_ROOT", PACKAGE_DIR.parent)).resolve()
HIDDEN_TESTS = PACKAGE_DIR / "hidden_tests"
MANIFESTS = PACKAGE_DIR / "manifests"
STATUSES = ("released", "draft", "planned")  # planned: in the book's table only


class UnknownAssignment(ValueError):
    """No manifest with that id (the message lists the known ones)."""


@dataclass(frozen=True)
class Part:
    cell: str  # the graded cell's nbgrader grade_id
    title: str
    points: float


@dataclass(frozen=True)
class GradingLimits:
    submission_budget_s: float = 300.0
    call_timeout_s: float = 20.0
    threads: int = 1
    memory_gib: float = 6.0


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    lecture: str
    status: str
    parts: tuple[Part, ...]
    limits: GradingLimits
    support: tuple[str, ...] = ()  # grader modules run in the worker before the cells, in order (paths in autograder/)

    # -- paths
    @property
    def release_path(self) -> Path:
        return COURSE_ROOT / "assignments" / self.id / f"{self.id}.ipynb"

    @property
    def solution_path(self) -> Path:
        return COURSE_ROOT / "solutions" / self.id / f"{self.id}.ipynb"

    @property
    def tests_dir(self) -> Path:
        return HIDDEN_TESTS / self.id

    # -- derived
    @property
    def total_points(self) -> float:
        return sum(p.points for p in self.parts)

    def part(self, cell: str) -> Part:
        for p in self.parts:
            if p.cell == cell:
                return p
        raise KeyError(f"{self.id} has no part {cell!r}; parts: {', '.join(p.cell for p in self.parts)}")

    @property
    def support_paths(self) -> list[Path]:
        return [PACKAGE_DIR / path for path in self.support]

    def support_sources(self) -> list[tuple[str, str]]:
        """Grader code loaded in the worker before any student cell, in order: (module name, source). Each module
        sees the public functions of those before it (worker_main.load_support)."""
        return [("grader." + path.removesuffix(".py").replace("/", "."), (PACKAGE_DIR / path).read_text()) for path in self.support]

    def release(self) -> nbformat.NotebookNode:
        return nbformat.read(self.release_path, as_version=4)

    def reference(self) -> types.ModuleType:
        """The instructor's solution as a module (trusted process only)."""
        return _load_reference(self.id)


def _parse(path: Path) -> Assignment:
    data = tomllib.loads(path.read_text())
    where = f"manifest {path.name}"
    try:
        parts = tuple(Part(str(p["cell"]), str(p["title"]), float(p["points"])) for p in data["parts"])
        status = str(data.get("status", "draft"))
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
        if len({p.cell for p in parts}) != len(parts):
            raise ValueError("two parts name the same cell")
        return Assignment(
            id=path.stem, title=str(data["title"]), lecture=str(data["lecture"]), status=status, parts=parts,
            limits=GradingLimits(**data.get("limits", {})), support=_support(data.get("support")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _support(paths) -> tuple[str, ...]:
    """The manifest's ``support`` list: paths of .py files inside autograder/, the shared ones first."""
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.endswith(".py") for p in paths):
        raise ValueError("support must be a list of .py paths inside autograder/, e.g. [\"worker_support/common.py\"]")
    if paths[0] != "worker_support/common.py":
        raise ValueError("support must start with worker_support/common.py (every test uses its helpers)")
    return tuple(paths)


@functools.lru_cache(maxsize=None)
def _all() -> dict[str, Assignment]:
    return {p.stem: _parse(p) for p in sorted(MANIFESTS.glob("*.toml"))}


def all_assignments(include_drafts: bool = False) -> list[Assignment]:
    """Released assignments in id order; with ``include_drafts`` also drafts and planned ones."""
    return [a for a in _all().values() if include_drafts or a.status == "released"]


def known_ids(include_drafts: bool = False) -> list[str]:
    """Ids of the released assignments (and the drafts, when asked)."""
    return [a.id for a in all_assignments(include_drafts)]


def get(assignment_id: str) -> Assignment:
    """The assignment with this id, draft or released; ``UnknownAssignment`` otherwise."""
    if assignment_id not in _all():
        raise UnknownAssignment(f"unknown assignment {assignment_id!r}; known: {', '.join(_all()) or 'none'}")
    return _all()[assignment_id]


@functools.lru_cache(maxsize=None)
def _load_reference(assignment_id: str) -> types.ModuleType:
    a = get(assignment_id)
    solution = nbformat.read(a.solution_path, as_version=4)
    module = types.ModuleType(f"reference_{assignment_id}")
    extraction = extract(solution, solution)
    if extraction.missing:
        raise RuntimeError(f"the solution notebook of {assignment_id} lacks cells {extraction.missing}")
    with contextlib.redirect_stdout(io.StringIO()):  # the preamble prints the device
        for name, source in preamble_sources(solution) + extraction.cells:
            exec(compile(source, f"<solution {assignment_id}:{name}>", "exec"), module.__dict__)  # noqa: S102 - instructor code
    return module
