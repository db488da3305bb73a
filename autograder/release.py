"""Generate the student release of an assignment from its instructor source.

``solutions/<id>/<id>.py`` (jupytext percent format, the file instructors edit) is converted to
``solutions/<id>/<id>.ipynb`` (the nbgrader source), and nbgrader's ``generate_assignment``
writes ``assignments/<id>/<id>.ipynb`` (solutions replaced by stubs, outputs cleared).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

from autograder.assignments import COURSE_ROOT

VOLATILE_METADATA = ("jupytext", "widgets")


def env_with_scripts() -> dict[str, str]:
    """os.environ with this environment's bin/ first on PATH: nbgrader runs the `alembic` script,
    which is not found when the virtual environment is not activated (make runs .venv/bin/python)."""
    scripts = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    return dict(os.environ, PATH=path if path.split(os.pathsep)[0] == scripts else f"{scripts}{os.pathsep}{path}")


def sync_source(assignment_id: str, root: Path = COURSE_ROOT) -> Path:
    """Write ``<id>.ipynb`` from ``<id>.py`` when the script exists; return the notebook path."""
    folder = root / "solutions" / assignment_id
    script, notebook = folder / f"{assignment_id}.py", folder / f"{assignment_id}.ipynb"
    if script.exists():
        nb = jupytext.read(script)
        for key in VOLATILE_METADATA:
            nb.metadata.pop(key, None)
        for i, cell in enumerate(nb.cells):  # stable ids: jupytext makes random ones
            cell.id = f"cell-{i}"
        # lecture_utils.submit checks the student's copy against this list.
        nb.metadata.setdefault("course", {})["graded_cells"] = [
            c.metadata["nbgrader"]["grade_id"] for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("solution")
        ]
        text = nbformat.writes(nb) + "\n"
        if not notebook.exists() or notebook.read_text() != text:
            notebook.write_text(text)
    return notebook


def run_nbgrader(assignment_id: str, root: Path) -> Path:
    """Run ``nbgrader generate_assignment`` in course directory ``root``; return the release notebook."""
    db = Path(tempfile.mkdtemp(prefix="nbgrader-db-")) / "gradebook.db"
    cmd = [
        sys.executable, "-m", "nbgrader", "generate_assignment", assignment_id,
        "--force", "--log-level=WARN",
        f"--CourseDirectory.root={root}",
        f"--CourseDirectory.db_url=sqlite:///{db}",
    ]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=env_with_scripts())
    shutil.rmtree(db.parent, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment {assignment_id} failed:\n{proc.stdout}\n{proc.stderr}")
    return root / "assignments" / assignment_id / f"{assignment_id}.ipynb"


def generate_release(assignment_id: str, root: Path = COURSE_ROOT) -> Path:
    sync_source(assignment_id, root)
    return run_nbgrader(assignment_id, root)


def generate_into(assignment_id: str, workdir: Path, root: Path = COURSE_ROOT) -> Path:
    """Generate the release in a scratch course directory (used by the freshness test)."""
    (workdir / "solutions").mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "solutions" / assignment_id, workdir / "solutions" / assignment_id, dirs_exist_ok=True)
    shutil.copy(root / "nbgrader_config.py", workdir / "nbgrader_config.py")
    return run_nbgrader(assignment_id, workdir)
