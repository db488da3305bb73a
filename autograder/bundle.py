"""Build the Gradescope autograder zip of one assignment.

The zip unpacks to ``/autograder/source`` on Gradescope: ``setup.sh`` installs the pinned
environment once per image, ``run_autograder`` grades ``/autograder/submission`` and writes
``/autograder/results/results.json``. The root can be moved with ``GRADESCOPE_ROOT`` (tests).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from autograder.assignments import COURSE_ROOT, get

SETUP_SH = """#!/usr/bin/env bash
# Gradescope image set-up: a virtual environment with the course's pinned dependencies.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
cd "$ROOT/source"
apt-get update
apt-get install -y python3 python3-venv python3-pip
# The worker sandbox; if the container forbids namespaces the grader falls back and says so.
apt-get install -y bubblewrap || echo "bubblewrap unavailable: the grader will use its basic sandbox"
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
"$ROOT/venv/bin/python" -m pip install -c requirements-lock.txt -e ".[course]"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade the uploaded notebook; every outcome (even a broken upload) ends in a results.json.
set -uo pipefail
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
PY="${{GRADER_PYTHON:-$ROOT/venv/bin/python}}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
submission=$(find "$ROOT/submission" -maxdepth 3 -type f \\( -name '*.ipynb' -o -name '*.zip' -o -name '*.py' \\) \\
             ! -path '*/.ipynb_checkpoints/*' | sort | head -n 1)
GRADER_COURSE_ROOT="$ROOT/source" "$PY" -m autograder grade --assignment {assignment} "${{submission:-$ROOT/submission/missing.ipynb}}" \\
    --out "$ROOT/results/results.json"
"""

INCLUDE = ["autograder", "lecture_utils", "pyproject.toml", "requirements-lock.txt", "README.md"]


def _files(root: Path, assignment_id: str):
    for name in INCLUDE:
        path = root / name
        if path.is_file():
            yield path
        else:
            yield from (p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts)
    yield root / "assignments" / assignment_id / f"{assignment_id}.ipynb"
    yield root / "solutions" / assignment_id / f"{assignment_id}.ipynb"


def build_bundle(assignment_id: str, out: Path | None = None, root: Path = COURSE_ROOT) -> Path:
    if get(assignment_id).status != "released":  # get() fails clearly for an unknown id
        raise ValueError(f"{assignment_id} is not released yet (status {get(assignment_id).status!r} in its manifest)")
    out = out or root / "dist" / f"autograder-{assignment_id}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for scripts_name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER.format(assignment=assignment_id))):
            info = zipfile.ZipInfo(scripts_name)
            info.external_attr = 0o755 << 16
            zf.writestr(info, text)
        for path in _files(root, assignment_id):
            info = zipfile.ZipInfo(str(path.relative_to(root)))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return out
