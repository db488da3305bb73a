"""The assignment notebooks run top to bottom as a student would run them (CPU)."""
import shutil

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from conftest import ASSIGNMENT_IDS, ROOT


@pytest.fixture(autouse=True)
def one_thread_kernels(monkeypatch):
    """The kernels train on one thread, like the grader's recipe: with the other test process beside them on a 2-core
    machine, two threads each only fight (a3's training cell ran past 10 minutes that way in a fresh-clone run)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")


def execute(path, cwd):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_solution_notebook_runs_top_to_bottom_and_exports(assignment_id, tmp_path):
    src = tmp_path / f"{assignment_id}.ipynb"
    shutil.copy(ROOT / "solutions" / assignment_id / f"{assignment_id}.ipynb", src)
    nb = execute(src, tmp_path)
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "All good: upload the file above." in outputs, outputs[-2000:]
    assert (tmp_path / f"{assignment_id}_submission.ipynb").exists()
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert images >= 2, "the notebook should draw its plots"


@pytest.mark.slow
@pytest.mark.parametrize("assignment_id", ASSIGNMENT_IDS)
def test_release_notebook_stops_at_the_first_unimplemented_function(assignment_id, tmp_path):
    src = tmp_path / f"{assignment_id}.ipynb"
    shutil.copy(ROOT / "assignments" / assignment_id / f"{assignment_id}.ipynb", src)
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        execute(src, tmp_path)
