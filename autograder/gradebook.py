"""Write autograder scores into nbgrader's gradebook (SQLite), so ``nbgrader export`` has them.

nbgrader stores grades per *grade cell*. The hidden tests play that role here: the assignment's
notebook gets one grade cell per hidden test (``max_score`` = its points), and each student's
submission gets an ``auto_score`` per test. ``nbgrader export`` then lists every student's total.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry


def record(db_path: Path, assignment_id: str, results: dict[str, Path]) -> int:
    """Record ``{student_id: results.json path}`` for ``assignment_id``; return how many were written."""
    from autograder.release import env_with_scripts

    os.environ.update(PATH=env_with_scripts()["PATH"])  # nbgrader's Gradebook runs `alembic`
    url = f"sqlite:///{Path(db_path).resolve()}"
    written = 0
    with warnings.catch_warnings(), Gradebook(url) as gb:
        warnings.simplefilter("ignore")  # nbgrader's SQLAlchemy usage warns about autoflush internals
        gb.update_or_create_assignment(assignment_id)
        gb.update_or_create_notebook(assignment_id, assignment_id)
        for student, result_path in sorted(results.items()):
            data = json.loads(Path(result_path).read_text())
            for test in data["tests"]:
                gb.update_or_create_grade_cell(_cell(test), assignment_id, assignment_id,
                                               max_score=float(test["max_score"]), cell_type="code")
            gb.update_or_create_student(student)
            try:
                gb.find_submission(assignment_id, student)
            except MissingEntry:
                gb.add_submission(assignment_id, student)
            for test in data["tests"]:
                grade = gb.find_grade(_cell(test), assignment_id, assignment_id, student)
                grade.auto_score = float(test["score"])
                grade.manual_score = None
            gb.db.commit()
            written += 1
    return written


def scores(db_path: Path, assignment_id: str) -> dict[str, float]:
    """Each student's total for ``assignment_id`` as the gradebook computes it."""
    with Gradebook(f"sqlite:///{Path(db_path).resolve()}") as gb:
        return {s.student.id: float(s.score) for s in gb.assignment_submissions(assignment_id)}


def _cell(test: dict) -> str:
    return test["name"].split(":")[0]
