"""The Colab setup cell: one template (lecture_utils/config.py SETUP_CELL) at the top of every notebook
that imports lecture_utils, and a chapter notebook that runs from it where the project is not installed."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import ROOT
from lecture_utils.config import PIP_INSTALL_TARGET, SETUP_CELL

IMPORTS_HELPERS = re.compile(r"^\s*(from|import)\s+lecture_utils\b", re.M)


def course_notebooks() -> list[Path]:
    """Chapter notebooks (what Colab opens from the book) and assignment notebooks (source and release)."""
    paths = sorted((ROOT / "book").glob("ch*/*.ipynb"))
    for folder in ("solutions", "assignments"):
        paths += sorted(p for p in (ROOT / folder).glob("*/*.ipynb") if p.stem == p.parent.name)
    return paths


def test_every_notebook_that_imports_lecture_utils_starts_with_the_setup_cell():
    checked, problems = 0, []
    for path in course_notebooks():
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if not any(IMPORTS_HELPERS.search(c.source) for c in code):
            continue
        checked += 1
        first = code[0]
        if first.source != SETUP_CELL:
            problems.append(f"{path.relative_to(ROOT)}: first code cell is not lecture_utils.config.SETUP_CELL (run `make book`, then `make release`)")
        elif "setup" not in first.metadata.get("tags", []):
            problems.append(f"{path.relative_to(ROOT)}: setup cell is not tagged `setup`")
        elif path.parts[-3] == "book" and "remove-cell" not in first.metadata.get("tags", []):
            problems.append(f"{path.relative_to(ROOT)}: the setup cell should be tagged remove-cell (it does nothing in the book)")
    assert not problems, "\n".join(problems)
    assert checked >= 7 + 2 * 2, f"only {checked} notebooks import lecture_utils"
    assert f'"{PIP_INSTALL_TARGET}"' in SETUP_CELL


def test_the_setup_cell_outside_colab_installs_nothing_and_prints_one_line():
    """In the book build and in a local Jupyter where lecture_utils is installed, the cell only says so."""
    guard = "import subprocess\ndef no_pip(*a, **k): raise AssertionError(f'pip ran: {a}')\nsubprocess.run = no_pip\n"
    proc = subprocess.run([sys.executable, "-c", guard + SETUP_CELL], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("local: lecture_utils ") and "already installed" in lines[0], proc.stdout


def _fresh_venv(tmp: Path) -> Path:
    """A virtual environment without the project: its packages are the course venv's, minus this project.

    The course venv's site-packages is mirrored by symlinks, leaving out the project's own entries
    (its dist-info and the editable-install finder), and added to the new venv with a .pth file: torch
    and friends import as in Colab, lecture_utils does not.
    """
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    deps = tmp / "deps"
    deps.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("dl4cv", "__editable__", "lecture_utils", "autograder", "_virtualenv")) or name.endswith(".pth"):
            continue
        (deps / entry.name).symlink_to(entry)
    venv_site = next((venv / "lib").glob("python*/site-packages"))
    (venv_site / "course_deps.pth").write_text(f"{deps}\n")
    return venv


def _install_source(tmp: Path) -> Path:
    """The checkout as pip would get it from the repository: pyproject, README and the package."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "lecture_utils", src / "lecture_utils", ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.mark.slow
def test_a_chapter_notebook_runs_from_its_setup_cell_without_the_project_installed(tmp_path, monkeypatch):
    """Colab, locally: a fresh venv without lecture_utils; the notebook's own first cell installs it.

    The setup cell honours DL4CV_PIP_INSTALL (pip arguments, no internet here): the install source is
    the checkout instead of the GitHub URL of lecture_utils/config.py, without a package index.
    """
    from nbclient import NotebookClient

    start = time.monotonic()
    venv = _fresh_venv(tmp_path)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util, torch; print(importlib.util.find_spec('lecture_utils'))"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert probe.stdout.strip() == "None", f"lecture_utils must not be importable before the setup cell: {probe.stdout}{probe.stderr}"

    kernels = tmp_path / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("DL4CV_PIP_INSTALL", f"--no-index --no-build-isolation {_install_source(tmp_path)}")
    monkeypatch.setenv("MPLBACKEND", "Agg")

    notebook = ROOT / "book" / "ch12" / "devices_frameworks.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert nb.cells[first_code].source == SETUP_CELL
    nb.cells.insert(first_code, nbformat.v4.new_code_cell("import importlib.util\nassert importlib.util.find_spec('lecture_utils') is None"))
    nb.cells.append(nbformat.v4.new_code_cell("import lecture_utils, sys\nprint(lecture_utils.__file__)\nprint(sys.prefix)"))
    work = tmp_path / "work"
    work.mkdir()
    NotebookClient(nb, kernel_name="fresh", timeout=300, resources={"metadata": {"path": str(work)}}).execute()

    where, prefix = nb.cells[-1].outputs[0]["text"].split()
    assert Path(prefix).resolve() == venv.resolve()
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"lecture_utils came from {where}, not from the fresh venv"
    print(f"chapter notebook from a fresh venv through its setup cell: {time.monotonic() - start:.1f} s")
