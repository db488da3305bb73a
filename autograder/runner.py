"""Grade one submission: extract its cells, start the worker, run the hidden pytest suite.

The hidden tests run HERE, in the trusted process, with three fixtures: ``student`` (a proxy
whose calls run in the sandboxed worker), ``reference`` (the instructor's solution module) and
``assignment`` (its manifest). Scores are computed from plain data only. Each test belongs to a
part of the manifest (``@pytest.mark.part(cell)``); the points of a part's tests must add up to
the part's points in the manifest, and ``parts=`` grades only some parts.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from autograder import assignments, sandbox
from autograder.sanitize import clean, one_line, quoted
from autograder.client import GraderError, StudentError, StudentProxy, WorkerClient, WorkerFailure
from autograder.notebook import SubmissionError, extract, preamble_sources, read_submission
from autograder.feedback_figures import figures_of
from autograder.results import Results, TestResult
from autograder.secret import course_secret

# The trusted process's own tensor work (rendering the evaluation and training data, running a5's box part, scoring) is
# small ops on one thread: the worker has its own threads, two OpenMP threads beside a busy core made the rendering
# 15x slower, and one thread makes scores independent of the grading machine's core count.
TRUSTED_THREADS = 1
FEEDBACK_LIMIT = 1500


class SuiteChecks:
    """pytest plugin: every test names a part of the manifest, and the points add up per part."""

    def __init__(self, assignment: assignments.Assignment, parts: Iterable[str] | None = None, skip: Iterable[str] = ()) -> None:
        self.manifest = assignment
        self.selected = None if parts is None else set(parts)
        self.skip = set(skip)  # test names left out (the project's own tests skip slow trained tests with it)
        self.collection_errors: list[str] = []
        unknown = (self.selected or set()) - {p.cell for p in assignment.parts}
        if unknown:
            raise ValueError(f"{assignment.id} has no parts {sorted(unknown)}")

    def pytest_collection_modifyitems(self, config, items):
        totals = {p.cell: 0.0 for p in self.manifest.parts}
        for item in items:
            part, points = item_part(item), item_points(item)
            if part not in totals:
                self.collection_errors.append(f"{item.nodeid}: part {part!r} is not a part of the manifest {self.manifest.id}.toml")
                continue
            totals[part] += points
        for p in self.manifest.parts:
            if abs(totals[p.cell] - p.points) > 1e-9:
                self.collection_errors.append(f"part {p.cell!r}: the tests' points add up to {totals[p.cell]:g}, the manifest says {p.points:g}")
        if self.selected is not None or self.skip:
            keep = [i for i in items if (self.selected is None or item_part(i) in self.selected) and i.name not in self.skip]
            config.hook.pytest_deselected(items=[i for i in items if i not in keep])
            items[:] = keep

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(str(report.longrepr)[-2000:])


def item_part(item) -> str | None:
    marker = item.get_closest_marker("part")
    return str(marker.args[0]) if marker else None


def item_points(item) -> float:
    marker = item.get_closest_marker("points")
    return float(marker.args[0]) if marker else 0.0


def item_name(item) -> str:
    doc = (item.function.__doc__ or "").strip().splitlines()
    return item.name + (f": {doc[0]}" if doc else "")


class GradingPlugin(SuiteChecks):
    """pytest plugin: provides the fixtures and records one TestResult per test."""

    def __init__(self, assignment: assignments.Assignment, student: StudentProxy, client: WorkerClient, parts=None, skip=()) -> None:
        super().__init__(assignment, parts, skip)
        self._student = student
        self._client = client
        self.results: list[TestResult] = []
        self.grader_errors: list[str] = []
        self.sandbox_failure: sandbox.SandboxUnavailable | None = None

    @pytest.fixture(scope="session")
    def student(self) -> StudentProxy:
        return self._student

    @pytest.fixture(scope="session")
    def reference(self):
        return self.manifest.reference()

    @pytest.fixture(scope="session")
    def assignment(self) -> assignments.Assignment:
        return self.manifest

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_teardown(self, item, nextitem):
        """Objects a test created in the worker (models, optimizers) die with the test."""
        with contextlib.suppress(WorkerFailure, StudentError):
            self._client.release_all()

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and not report.passed):
            points, name = item_points(item), item_name(item)
            figures = figures_of(report.user_properties)  # pictures the test drew here: attach(record_property, figure)
            if report.passed:  # a passing test may leave a note for the student: record_property("feedback", text)
                notes = "\n".join(str(v) for k, v in report.user_properties if k == "feedback")
                self.results.append(TestResult(name, points, points, notes, status="passed", figures=figures))
            else:
                if call.excinfo is not None and isinstance(call.excinfo.value, GraderError):
                    self.grader_errors.append(f"{item.name}: {call.excinfo.value}")
                if call.excinfo is not None and isinstance(call.excinfo.value, sandbox.SandboxUnavailable):
                    self.sandbox_failure = call.excinfo.value
                self.results.append(TestResult(name, 0.0, points, feedback(call.excinfo), status="failed", figures=figures))


def feedback(excinfo) -> str:
    """What the student sees for a failed test: the message, never the test's source."""
    if excinfo is None:
        return "failed"
    exc = excinfo.value
    if isinstance(exc, StudentError) and str(exc).startswith("NotImplementedError"):
        text = "Not implemented yet: the function still raises NotImplementedError."
    elif isinstance(exc, StudentError):
        text = quoted(exc, label="Your code raised:")
    elif isinstance(exc, WorkerFailure):
        text = str(exc)
    elif isinstance(exc, GraderError):
        text = "The grader itself failed on this test (not your fault); your TA has been told."
    elif isinstance(exc, AssertionError):
        text = str(exc) or "a check on your result failed"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return clean(text, FEEDBACK_LIMIT)


def zero(assignment_id: str, reason: str, started: float, parts: Iterable[str] | None = None) -> Results:
    """A result of 0 points with a one-line reason (bad file, nothing to grade)."""
    a = assignments.get(assignment_id)
    tests = [TestResult(t.name, 0.0, t.points, reason, status="failed") for t in collect(a, parts)]
    return Results(assignment_id, tests, output=f"Not graded: {reason}", execution_time=time.monotonic() - started)


@dataclasses.dataclass(frozen=True)
class SuiteTest:
    name: str  # as in the results: "test_x: first line of its docstring"
    part: str
    points: float


def collect(a: assignments.Assignment, parts: Iterable[str] | None = None) -> list[SuiteTest]:
    """The suite's tests with their parts and points, without running them (pytest collection only)."""

    class Collector(SuiteChecks):
        def __init__(self) -> None:
            super().__init__(a, parts)
            self.items: list[SuiteTest] = []

        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, config, items):
            super().pytest_collection_modifyitems(config, items)
            self.items = [SuiteTest(item_name(i), item_part(i), item_points(i)) for i in items]

    collector = Collector()
    _run_pytest(a, [collector], extra=["--collect-only"])
    _raise_on_suite_errors(a, collector.collection_errors)
    return collector.items


def _raise_on_suite_errors(a: assignments.Assignment, errors: list[str]) -> None:
    if errors:
        raise RuntimeError(f"the hidden test suite of {a.id} is broken:\n" + "\n".join(errors))


def _run_pytest(a: assignments.Assignment, plugins: list, extra: Iterable[str] = ()) -> int:
    args = [
        str(a.tests_dir),
        "-c", str(assignments.HIDDEN_TESTS / "pytest.ini"),
        "--rootdir", str(assignments.HIDDEN_TESTS),
        "-p", "no:cacheprovider",
        "-p", "no:xdist",
        "-p", "no:timeout",
        "--assert=plain",  # feedback is the message, not the test's source expression
        "-q",
        *extra,
    ]
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = pytest.main(args, plugins=plugins)
    if code in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR, pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise RuntimeError(f"running the hidden tests of {a.id} failed (pytest exit code {int(code)}):\n{out.getvalue()[-3000:]}")
    return code


def worker_limits(a: assignments.Assignment, base: sandbox.Limits | None = None) -> sandbox.Limits:
    """The sandbox limits of this assignment's manifest (on top of ``base`` or the defaults)."""
    m = a.limits
    return dataclasses.replace(base or sandbox.Limits(), submission_budget_s=m.submission_budget_s, call_timeout_s=m.call_timeout_s,
                               threads=m.threads, memory_bytes=int(m.memory_gib * 2**30))


def grade(assignment_id: str, submission: str | Path, limits: sandbox.Limits | None = None, parts: Iterable[str] | None = None,
          skip: Iterable[str] = ()) -> Results:
    """Grade one submission file (all parts, or only ``parts``; the tests named in ``skip`` left out); never raises for
    anything the submission does. Sets this process's torch threads to ``TRUSTED_THREADS``."""
    import torch

    started = time.monotonic()
    torch.set_num_threads(TRUSTED_THREADS)
    a = assignments.get(assignment_id)
    parts = None if parts is None else list(parts)
    # Fail closed before anything of the submission is read: no sandbox that protects the grader, or no course secret
    # for the evaluation sets, and nothing is graded (SandboxUnavailable, MissingSecret).
    sandbox.choose()
    course_secret()
    try:
        notebook = read_submission(submission)
    except SubmissionError as exc:
        return zero(assignment_id, str(exc), started, parts)
    release = a.release()
    extraction = extract(notebook, release)
    if not extraction.cells:
        return zero(assignment_id, "no graded cells found: submit the assignment notebook itself, with its graded cells", started, parts)
    notes = list(extraction.notes)
    cells = preamble_sources(release) + extraction.cells
    with WorkerClient(cells, limits or worker_limits(a), support=a.support_sources()) as client:
        student = StudentProxy(client)
        try:
            for name, error in student.cell_errors.items():
                notes.append(f"cell '{one_line(name)}' raised an error when run, so what it defines may be missing:\n" + quoted(error))
        except (WorkerFailure, StudentError) as exc:
            notes.append("running your notebook's graded cells failed:\n" + quoted(exc))
        plugin = GradingPlugin(a, student, client, parts, skip)
        _run_pytest(a, [plugin])
        if plugin.sandbox_failure is not None:  # a restarted worker could not be confined: no grade at all
            raise plugin.sandbox_failure
        if client.restarts:
            notes.append(f"the worker running your code was restarted {client.restarts} time(s) after a crash or timeout")
    _raise_on_suite_errors(a, plugin.collection_errors)
    if plugin.grader_errors:
        notes.append("GRADER ERROR (tell the course staff): " + "\n".join(plugin.grader_errors))
    return Results(assignment_id, plugin.results, output="\n".join(notes), execution_time=time.monotonic() - started)
