"""Run an assignment's solution notebook on a CUDA GPU and check its functions are device-agnostic.

    python benchmarks/gpu_notebook_check.py a1_pytorch
    python benchmarks/gpu_notebook_check.py book/ch12/*.ipynb      # any notebooks, run in order

Needs only torch, torchvision and matplotlib (no Jupyter): the notebook JSON is read directly, the
set-up and export cells are skipped, and every other code cell runs in order, as in Colab. Then the
graded functions are called on CUDA tensors and compared with the same calls on the CPU.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_notebook(assignment_id: str) -> dict:
    path = ROOT / "solutions" / assignment_id / f"{assignment_id}.ipynb" if not assignment_id.endswith(".ipynb") else Path(assignment_id)
    nb = json.loads(path.read_text())
    namespace: dict = {"__name__": "__main__"}
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or "setup" in cell.get("metadata", {}).get("tags", []) or "submit.export" in src:
            continue
        start = time.perf_counter()
        exec(compile(src, f"<{assignment_id} cell {i}>", "exec"), namespace)
        print(f"cell {i:2d} ok  {time.perf_counter() - start:6.2f} s")
    return namespace


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return torch.allclose(a.detach().cpu().double(), b.detach().cpu().double(), rtol=tol, atol=tol)


def check_a1(ns: dict, device: torch.device) -> list[str]:
    problems = []
    g = torch.Generator().manual_seed(0)
    x, y, w1, w2 = (torch.randn(*s, generator=g) for s in ((16, 8), (16, 3), (8, 5), (5, 3)))
    cpu = ns["manual_two_layer_step"](x, y, w1, w2, 1e-3)
    gpu = ns["manual_two_layer_step"](*(t.to(device) for t in (x, y, w1, w2)), 1e-3)
    if not all(close(a, b) and b.device.type == device.type for a, b in zip(cpu, gpu)):
        problems.append("manual_two_layer_step differs or leaves the device")
    xs = torch.randn(4, 6, device=device, requires_grad=True)
    w = torch.randn(3, 6, device=device, requires_grad=True)
    b = torch.randn(3, device=device, requires_grad=True)
    out = ns["LinearFunction"].apply(xs, w, b)
    out.sum().backward()
    if out.device.type != device.type or not close(w.grad, torch.ones(4, 3, device=device).t() @ xs):
        problems.append("LinearFunction on the GPU")
    s = ns["sigmoid"](xs)
    s.sum().backward()
    if not close(s, torch.sigmoid(xs)):
        problems.append("sigmoid on the GPU")
    for name, ref_cls, kw in (("SGDMomentum", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)), ("Adam", torch.optim.Adam, dict(lr=0.01, weight_decay=0.01))):
        models = []
        for cls in (ns[name], ref_cls):
            torch.manual_seed(0)
            model = torch.nn.Linear(6, 2).to(device)
            opt = cls(model.parameters(), **kw)
            for _ in range(10):
                opt.zero_grad()
                model(torch.ones(5, 6, device=device)).pow(2).sum().backward()
                opt.step()
            models.append(model)
        if not close(models[0].weight, models[1].weight):
            problems.append(f"{name} on the GPU differs from torch.optim")
    model = ns["TwoLayerNet"](6, 8, 2).to(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(20, 6), torch.randn(20, 2)), batch_size=8)
    losses = ns["train_model"](model, loader, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(), 2)
    if len(losses) != 2:
        problems.append("train_model on the GPU")
    gm = ns["capture_graph"](model, torch.randn(3, 6, device=device))
    if not close(gm(torch.ones(3, 6, device=device)), model(torch.ones(3, 6, device=device))):
        problems.append("capture_graph on the GPU")
    return problems


def released_ids() -> list[str]:
    """Released assignments, read from their manifests directly (no grader dependencies needed here)."""
    import tomllib

    manifests = sorted((ROOT / "autograder" / "manifests").glob("*.toml"))
    return [m.stem for m in manifests if tomllib.loads(m.read_text()).get("status") == "released"]


def main() -> int:
    targets = sys.argv[1:] or released_ids()  # default: every released assignment
    if not torch.cuda.is_available():
        print("no CUDA device here: this check is for a GPU machine")
        return 2
    device = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
    if any(t.endswith(".ipynb") for t in targets):
        for notebook in targets:
            start = time.perf_counter()
            ns = run_notebook(notebook)
            print(f"{notebook}: ran in {time.perf_counter() - start:.1f} s")
        return 0
    problems = []
    for assignment_id in targets:
        start = time.perf_counter()
        ns = run_notebook(assignment_id)
        print(f"{assignment_id}: ran top to bottom in {time.perf_counter() - start:.1f} s; device in the notebook: {ns.get('device')}")
        if assignment_id == "a1_pytorch":
            problems += check_a1(ns, device)
    print("device-agnostic checks:", "all passed" if not problems else problems)
    return 1 if problems else 0

if __name__ == "__main__":
    raise SystemExit(main())
