"""Grade one submission: extract its cells, start the worker, run the hidden pytest suite.

The hidden tests run HERE, in the trusted process, with two fixtures:
``student`` (a proxy whose calls run in the sandboxed worker) and ``reference``
(the instructor's solution module). Scores are computed from plain data only.
"""
from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import pytest

from autograder import assignments, sandbox
from autograder.client import StudentError, StudentProxy, WorkerClient, WorkerFailure
from autograder.notebook import SubmissionError, extract, preamble_sources, read_submission
from autograder.results import Results, TestResult

FEEDBACK_LIMIT = 1500


class GradingPlugin:
    """pytest plugin: provides the fixtures and records one TestResult per test."""

    def __init__(self, student: StudentProxy, reference) -> None:
        self._student = student
        self._reference = reference
        self.results: list[TestResult] = []
        self.collection_errors: list[str] = []

    @pytest.fixture(scope="session")
    def student(self) -> StudentProxy:
        return self._student

    @pytest.fixture(scope="session")
    def reference(self):
        return self._reference

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        if report.when == "call" or (report.when == "setup" and not report.passed):
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker else 0.0
            doc = (item.function.__doc__ or "").strip().splitlines()
            name = f"{item.name}" + (f": {doc[0]}" if doc else "")
            if report.passed:
                self.results.append(TestResult(name, points, points, "", status="passed"))
            else:
                self.results.append(TestResult(name, 0.0, points, feedback(call.excinfo), status="failed"))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collection_errors.append(str(report.longrepr)[-2000:])


def feedback(excinfo) -> str:
    """What the student sees for a failed test: the message, never the test's source."""
    if excinfo is None:
        return "failed"
    exc = excinfo.value
    if isinstance(exc, StudentError) and str(exc).startswith("NotImplementedError"):
        text = "Not implemented yet: the function still raises NotImplementedError."
    elif isinstance(exc, StudentError):
        text = f"Your code raised {exc}"
    elif isinstance(exc, WorkerFailure):
        text = str(exc)
    elif isinstance(exc, AssertionError):
        text = str(exc) or "a check on your result failed"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= FEEDBACK_LIMIT else text[:FEEDBACK_LIMIT] + " ..."


def zero(assignment_id: str, reason: str, started: float) -> Results:
    """A result of 0 points with a one-line reason (bad file, nothing to grade)."""
    a = assignments.get(assignment_id)
    tests = [TestResult(t.name, 0.0, t.max_score, reason, status="failed") for t in _test_points(a)]
    return Results(assignment_id, tests, output=f"Not graded: {reason}", execution_time=time.monotonic() - started)


def _test_points(a: assignments.Assignment) -> list[TestResult]:
    """The suite's tests and points, without running them (pytest collection only)."""

    class Collector:
        def __init__(self) -> None:
            self.items: list[TestResult] = []

        def pytest_collection_modifyitems(self, items):
            for item in items:
                marker = item.get_closest_marker("points")
                doc = (item.function.__doc__ or "").strip().splitlines()
                self.items.append(TestResult(item.name + (f": {doc[0]}" if doc else ""), 0.0, float(marker.args[0]) if marker else 0.0))

    collector = Collector()
    _run_pytest(a, [collector], extra=["--collect-only"])
    return collector.items


def _run_pytest(a: assignments.Assignment, plugins: list, extra: list[str] = ()) -> int:
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
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return pytest.main(args, plugins=plugins)


def grade(assignment_id: str, submission: str | Path, limits: sandbox.Limits | None = None) -> Results:
    """Grade one submission file; never raises for anything the submission does."""
    started = time.monotonic()
    a = assignments.get(assignment_id)
    try:
        notebook = read_submission(submission)
    except SubmissionError as exc:
        return zero(assignment_id, str(exc), started)
    release = a.release()
    extraction = extract(notebook, release)
    if not extraction.cells:
        return zero(assignment_id, "no graded cells found: submit the assignment notebook itself, with its graded cells", started)
    notes = list(extraction.notes)
    with WorkerClient(preamble_sources(release) + extraction.cells + a.worker_support, limits) as client:
        student = StudentProxy(client)
        try:
            for name, error in student.cell_errors.items():
                notes.append(f"cell '{name}' raised an error when run, so what it defines may be missing:\n    " + error.replace("\n", "\n    "))
        except (WorkerFailure, StudentError) as exc:
            notes.append(f"running your notebook's graded cells failed: {exc}")
        plugin = GradingPlugin(student, a.reference())
        _run_pytest(a, [plugin])
        if client.restarts:
            notes.append(f"the worker running your code was restarted {client.restarts} time(s) after a crash or timeout")
    if plugin.collection_errors:
        raise RuntimeError("the hidden test suite failed to load:\n" + "\n".join(plugin.collection_errors))
    return Results(assignment_id, plugin.results, output="\n".join(notes), execution_time=time.monotonic() - started)
