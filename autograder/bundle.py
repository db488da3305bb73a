"""Build the Gradescope autograder zip of one assignment.

The zip unpacks to ``/autograder/source`` on Gradescope: ``setup.sh`` installs the pinned
environment once per image, ``run_autograder`` grades ``/autograder/submission`` and writes
``/autograder/results/results.json``. The root can be moved with ``GRADESCOPE_ROOT`` (tests).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from autograder.assignments import COURSE_ROOT, get
from autograder.secret import course_secret

SETUP_SH = """#!/usr/bin/env bash
# Gradescope image set-up: bubblewrap (the worker's sandbox) and a virtual environment with what grading needs:
# the CPU build of the pinned torch/torchvision (grading runs on the CPU) and the `grading` extra, nothing else.
set -euo pipefail
ROOT="${GRADESCOPE_ROOT:-/autograder}"
cd "$ROOT/source"
apt-get update
apt-get install -y python3 python3-venv python3-pip
# Without bubblewrap (or where the container forbids namespaces) grading refuses and results.json says so,
# unless the bundle was built with --allow-basic-sandbox.
apt-get install -y bubblewrap util-linux || echo "bubblewrap could not be installed: grading will refuse (see results.json)"
python3 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --upgrade pip
torch_pins=$(grep -E '^(torch|torchvision)==' requirements-lock.txt)
"$ROOT/venv/bin/python" -m pip install --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" $torch_pins
"$ROOT/venv/bin/python" -m pip install -c requirements-lock.txt -e ".[grading]"
"$ROOT/venv/bin/python" -m autograder sandbox {sandbox_flag}|| true
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade the uploaded notebook; every outcome (a broken upload, a grader that refuses to run) ends in a results.json.
set -uo pipefail
ROOT="${{GRADESCOPE_ROOT:-/autograder}}"
PY="${{GRADER_PYTHON:-$ROOT/venv/bin/python}}"
mkdir -p "$ROOT/results"
cd "$ROOT/source"
submission=$(find "$ROOT/submission" -maxdepth 3 -type f \\( -name '*.ipynb' -o -name '*.zip' -o -name '*.py' \\) \\
             ! -path '*/.ipynb_checkpoints/*' | sort | head -n 1)
GRADER_COURSE_ROOT="$ROOT/source" GRADER_SECRET_FILE="$ROOT/source/{secret_name}" "$PY" -m autograder grade --assignment {assignment} \\
    "${{submission:-$ROOT/submission/missing.ipynb}}" --out "$ROOT/results/results.json" {sandbox_flag}
"""

SECRET_NAME = ".grader-secret"  # the course secret, baked in: the evaluation seeds are derived from it

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


def build_bundle(assignment_id: str, out: Path | None = None, root: Path = COURSE_ROOT, allow_basic_sandbox: bool = False) -> Path:
    """The zip for Gradescope. ``allow_basic_sandbox``: where the container forbids bubblewrap's namespaces, grade in the
    basic sandbox instead of refusing (README: what it does not protect). Raises MissingSecret without a course secret."""
    if get(assignment_id).status != "released":  # get() fails clearly for an unknown id
        raise ValueError(f"{assignment_id} is not released yet (status {get(assignment_id).status!r} in its manifest)")
    secret = course_secret().hex() + "\n"
    out = out or root / "dist" / f"autograder-{assignment_id}.zip"
    out.parent.mkdir(parents=True, exist_ok=True)
    flag = "--allow-basic-sandbox " if allow_basic_sandbox else ""
    scripts = (("setup.sh", SETUP_SH.replace("{sandbox_flag}", flag), 0o755),
               ("run_autograder", RUN_AUTOGRADER.format(assignment=assignment_id, secret_name=SECRET_NAME, sandbox_flag=flag.strip()), 0o755),
               (SECRET_NAME, secret, 0o600))
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for scripts_name, text, mode in scripts:
            info = zipfile.ZipInfo(scripts_name)
            info.external_attr = mode << 16
            zf.writestr(info, text)
        for path in _files(root, assignment_id):
            info = zipfile.ZipInfo(str(path.relative_to(root)))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return out
