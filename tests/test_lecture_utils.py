"""Student helpers: device, seeding, plotting, training loop, submission export."""
import shutil

import matplotlib
import nbformat
import pytest
import torch

matplotlib.use("Agg")

from conftest import ROOT, cell_by_id, release_nb, solution_nb, with_cells
from lecture_utils import get_device, seed_everything, submit
from lecture_utils.colab import in_colab, setup
from lecture_utils.train import fit, move_to
from lecture_utils.viz import autograd_edges, draw_graph, plot_losses


def test_get_device_prefers_an_available_device(monkeypatch):
    assert get_device().type in {"cuda", "mps", "cpu"}
    assert get_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="not available"):
        assert get_device("cuda").type in {"mps", "cpu"}


def test_seed_everything_is_reproducible():
    seed_everything(3)
    a = torch.randn(5)
    g = seed_everything(3)
    assert torch.equal(a, torch.randn(5))
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=torch.Generator().manual_seed(3)))


def test_colab_setup_outside_colab():
    assert not in_colab()
    assert setup().startswith("local")


def test_autograd_edges_walks_the_graph_of_the_two_layer_net():
    w1, w2 = torch.randn(5, 4, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    loss = (torch.randn(2, 5).mm(w1).clamp(min=0).mm(w2)).pow(2).sum()
    edges, labels = autograd_edges(loss, {id(w1): "w1", id(w2): "w2"})
    assert {"w1", "w2", "Mm", "Clamp", "Pow", "Sum"} <= set(labels.values())
    assert len(edges) == 6
    ax = draw_graph(edges, labels)
    assert len(ax.texts) == len(labels) + len(edges)  # one box per node, one arrow per edge
    assert plot_losses({"a": [3, 2, 1]}).get_lines()


def test_fit_trains_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])
    batches = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    history = fit(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), lambda m, b: torch.nn.functional.mse_loss(m(b[0]), b[1]),
                  epochs=20, checkpoint=tmp_path / "ckpt.pt", progress=False)
    assert len(history.loss) == 20 and history.loss[-1] < 0.05 * history.loss[0]
    assert set(torch.load(tmp_path / "ckpt.pt")) == {"model", "optimizer", "epoch"}
    parts = fit(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), lambda m, b: {"a": m(b[0]).abs().mean(), "b": m(b[0]).pow(2).mean()}, max_steps=2, progress=False)
    assert set(parts.parts[0]) == {"a", "b"}
    assert move_to({"x": [torch.ones(1)]}, "cpu")["x"][0].device.type == "cpu"


def _copy(nb, tmp_path, name="a1_pytorch.ipynb"):
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_export_accepts_the_solution(tmp_path):
    report = submit.export(_copy(solution_nb("a1_pytorch"), tmp_path))
    assert report.ok, str(report)
    assert report.checks_passed >= 5
    assert (tmp_path / "a1_pytorch_submission.ipynb").exists()


def test_export_reports_stubs_missing_cells_and_failing_checks(tmp_path):
    nb = release_nb("a1_pytorch")
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "graphs"]
    report = submit.export(_copy(nb, tmp_path))
    text = str(report)
    assert not report.ok
    assert "graded cell 'graphs' is missing" in text
    assert "still contains `raise NotImplementedError()`" in text
    assert report.checks_failed and "NotImplementedError" in report.checks_failed[0]


def test_export_catches_a_wrong_answer_through_the_visible_checks(tmp_path):
    sol = solution_nb("a1_pytorch")
    wrong = cell_by_id(sol, "sigmoid").source.replace("grad_output * out * (1.0 - out)", "grad_output * out")
    report = submit.check(with_cells(sol, {"sigmoid": wrong}), "x.ipynb")
    assert any("Sigmoid backward is wrong" in c for c in report.checks_failed), report.checks_failed


def test_export_of_a_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="save it first"):
        submit.export(tmp_path / "nope.ipynb")
