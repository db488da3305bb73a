"""The Colab setup cell: one template (lecture_utils/config.py SETUP_CELL) at the top of every notebook
that imports lecture_utils; it installs the student package of the public tree (`make publish`) once, says
in one line what it did, warns in Colab without a GPU; published notebooks run from it in a fresh venv."""
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
from lecture_utils import config
from lecture_utils.config import PIP_INSTALL_TARGET, SETUP_CELL
from published import fresh_venv, publish_preview

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


COLAB = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')  # what Colab has imported\n"
NO_PIP = "import subprocess\ndef no_pip(*a, **k): raise AssertionError(f'pip ran: {a}')\nsubprocess.run = no_pip\n"


@pytest.fixture(scope="module")
def public(tmp_path_factory) -> Path:
    return publish_preview(tmp_path_factory.mktemp("published") / "public")


def _install_args(public: Path, tmp: Path) -> str:
    """DL4CV_PIP_INSTALL: the student package from (a copy of) the published tree, without an index."""
    return f"--no-index --no-build-isolation {shutil.copytree(public, tmp / 'public-copy')}"


def test_the_setup_cell_outside_colab_without_lecture_utils_says_how_to_install(tmp_path):
    venv = fresh_venv(tmp_path)
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", NO_PIP + SETUP_CELL], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0 and f"pip install {PIP_INSTALL_TARGET}" in proc.stderr, proc.stderr[-2000:]


def test_the_setup_cell_in_colab_installs_once_then_only_reports(public, tmp_path):
    """Colab stand-in (google.colab imported, no lecture_utils, no GPU here): the first run pip-installs the
    student package and prints one line plus the no-GPU warning; the second run does not call pip and
    takes less than 2 s."""
    venv = fresh_venv(tmp_path)
    script = COLAB + f"""
import time
cell = {SETUP_CELL!r}
namespace = {{}}
start = time.monotonic(); exec(cell, namespace); first = time.monotonic() - start
{NO_PIP}
start = time.monotonic(); exec(cell, namespace); second = time.monotonic() - start
import lecture_utils
print("TIMES", first, second, lecture_utils.__file__)
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DL4CV_PIP_INSTALL": _install_args(public, tmp_path)}
    proc = subprocess.run([str(venv / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *status, times = proc.stdout.splitlines()
    _, first, second, where = times.split()
    assert len(status) == 2, proc.stdout
    assert status[0].startswith("Colab: installed lecture_utils ") and "no GPU" in status[0], status
    assert status[1].startswith("Colab: lecture_utils ") and "already installed, nothing to do" in status[1], status
    assert proc.stderr.count("Runtime > Change runtime type") == 2, proc.stderr[-2000:]
    assert float(second) < 2.0, f"the second run took {float(second):.2f} s"
    assert Path(where).resolve().is_relative_to(venv.resolve()), f"lecture_utils came from {where}, not the fresh venv"
    print(f"setup cell in the Colab stand-in: first run {float(first):.1f} s (pip), second {float(second) * 1000:.0f} ms")


def _kernel(venv: Path, tmp: Path, monkeypatch) -> str:
    """A Jupyter kernel running ``venv``'s Python (found through JUPYTER_PATH)."""
    kernels = tmp / "jupyter" / "kernels" / "fresh"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "fresh venv", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp / "jupyter"))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return "fresh"


@pytest.mark.slow
def test_published_notebooks_run_from_their_setup_cell_in_a_fresh_venv(public, tmp_path, monkeypatch):
    """A chapter notebook and an assignment notebook of the public tree, in a venv without the course package:
    the first cell installs the student package (from the published tree: DL4CV_PIP_INSTALL, no internet),
    then the chapter runs top to bottom, and the assignment (its graded cells filled with the solution, as a
    student would) runs to its export cell."""
    from nbclient import NotebookClient

    from conftest import solution_nb, with_cells

    monkeypatch.setenv("DL4CV_PIP_INSTALL", _install_args(public, tmp_path))
    assignment = "a1_pytorch"
    release = nbformat.read(public / "assignments" / assignment / f"{assignment}.ipynb", as_version=4)
    solved = with_cells(release, {c.metadata["nbgrader"]["grade_id"]: c.source for c in solution_nb(assignment).cells
                                  if c.metadata.get("nbgrader", {}).get("solution")})
    cases = [("ch12/devices_frameworks", nbformat.read(public / "book" / "ch12" / "devices_frameworks.ipynb", as_version=4)),
             (assignment, solved)]
    for name, nb in cases:
        start = time.monotonic()
        work = tmp_path / name.replace("/", "_")
        work.mkdir(parents=True)
        venv = fresh_venv(work)  # one each: the first notebook installs lecture_utils into its venv
        kernel = _kernel(venv, work, monkeypatch)
        first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        assert nb.cells[first_code].source == SETUP_CELL
        nb.cells.insert(first_code, nbformat.v4.new_code_cell("import importlib.util\nassert importlib.util.find_spec('lecture_utils') is None"))
        nb.cells.append(nbformat.v4.new_code_cell("import lecture_utils\nprint(lecture_utils.__file__)"))
        nbformat.write(nb, work / f"{name.split('/')[-1]}.ipynb")
        NotebookClient(nb, kernel_name=kernel, timeout=600, resources={"metadata": {"path": str(work)}}).execute()
        where = nb.cells[-1].outputs[0]["text"].strip()
        assert Path(where).resolve().is_relative_to(venv.resolve()), f"{name}: lecture_utils came from {where}, not from the fresh venv"
        said = nb.cells[first_code + 1].outputs[0]["text"]
        assert said.startswith("local: lecture_utils ") and "installed from --no-index" in said, said
        if name == assignment:
            text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
            assert "All good: upload the file above." in text and config.SUBMISSION_LINK_LATER in text, text[-2000:]
        print(f"{name} from the public tree in a fresh venv: {time.monotonic() - start:.1f} s")
