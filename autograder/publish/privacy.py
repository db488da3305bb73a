"""The last check before the public tree is handed over: nothing private in it.

Private are the instructor's material (solutions, the grader and its hidden tests, the project's own
tests and benchmarks, nbgrader's database), nbgrader's solution markers in any file, and the
course secret that seeds the trained tests' evaluation sets (``.grader-secret`` or
``GRADER_SECRET``, kept outside git). The project's tests check the published tree again, line by
line against every solution block (tests/test_publish.py).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from autograder.assignments import COURSE_ROOT

PRIVATE_NAMES = {
    "solutions", "autograder", "hidden_tests", "tests", "benchmarks", "dist", "submitted", "autograded",
    "nbgrader_config.py", "gradebook.db", "requirements-lock.txt", ".grader-secret", ".jupyter_cache",
}
PRIVATE_SUFFIXES = (".egg-info",)
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### BEGIN MARK SCHEME")


def course_secrets() -> list[str]:
    """The course secret(s) known here, as text: the GRADER_SECRET variable and the secret file."""
    found = [os.environ["GRADER_SECRET"].strip()] if os.environ.get("GRADER_SECRET", "").strip() else []
    path = Path(os.environ.get("GRADER_SECRET_FILE") or COURSE_ROOT / ".grader-secret")
    if path.is_file():
        text = path.read_text(errors="replace").strip()
        if text:
            found.append(text)
    return found


def private_content(root: Path, secrets: Iterable[str] = ()) -> list[str]:
    """What in the tree at ``root`` must not be published, one line each (empty: nothing)."""
    problems = []
    needles = [s.encode() for s in secrets if len(s) >= 16]  # a short value would match by chance
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if ".git" in rel.parts[:1]:
            continue
        private = [p for p in rel.parts if p in PRIVATE_NAMES or p.endswith(PRIVATE_SUFFIXES)]
        if private:
            problems.append(f"{rel}: private material ({private[0]})")
            continue
        if not path.is_file():
            continue
        data = path.read_bytes()
        problems += [f"{rel}: contains the nbgrader marker {m!r}" for m in MARKERS if m.encode() in data]
        if any(n in data for n in needles):
            problems.append(f"{rel}: contains the course secret")
    return problems
