"""Hostile and broken submissions, graded end to end through the real pipeline.

Each case must give exactly the score honest code would get (usually 0 for the tests it touches),
finish normally with a clear message, and leave nothing behind.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import sandbox
from conftest import ROOT, cell_by_id, release_nb, solution_nb, with_cells

A1 = "a1_pytorch"
BUBBLEWRAP_PROBLEM = sandbox.bubblewrap_problem()  # grading refuses without it; these tests say why they cannot run
BUBBLEWRAP = BUBBLEWRAP_PROBLEM is None
needs_bubblewrap = pytest.mark.skipif(not BUBBLEWRAP, reason=f"needs the bubblewrap sandbox: {BUBBLEWRAP_PROBLEM}")


def sol(gid: str) -> str:
    return cell_by_id(solution_nb(A1), gid).source


def replaced(gid: str, old: str, new: str) -> str:
    source = sol(gid)
    assert old in source, old
    return source.replace(old, new)


STEAL = r'''
import os
FOUND = []
for top in ("/", os.path.expanduser("~"), "/work", "/tmp", "/autograder", "/root"):
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath.startswith(("/proc", "/sys", "/usr")):
            dirnames[:] = []
            continue
        FOUND += [os.path.join(dirpath, f) for f in filenames if f in ("a1_pytorch.ipynb", "test_part1_backprop.py")]
for path in FOUND:
    if path.endswith(".ipynb") and "solutions" in path:
        import json
        cells = json.load(open(path))["cells"]
        for c in cells:
            if c["cell_type"] == "code" and c.get("metadata", {}).get("nbgrader", {}).get("solution"):
                exec("".join(c["source"]), globals())
def found_files():
    return FOUND
'''

FAKE_RESULTS = r'''
import json, os
fake = json.dumps({"score": 100, "max_score": 100, "tests": [{"name": "all", "score": 100, "max_score": 100}]})
for d in {os.getcwd(), "/tmp", "/autograder/results", os.path.dirname(os.getcwd()), "/", os.path.expanduser("~")}:
    try:
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "results.json"), "w").write(fake)
    except OSError:
        pass
for dirpath, dirnames, filenames in os.walk("/"):
    if dirpath.startswith(("/proc", "/sys", "/usr", "/dev")):
        dirnames[:] = []
        continue
    if "results.json" in filenames:
        try:
            open(os.path.join(dirpath, "results.json"), "w").write(fake)
        except OSError:
            pass
'''

MONKEYPATCH = r'''
import builtins, torch, torch.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.testing.assert_close = lambda *a, **k: None
torch.Tensor.__eq__ = lambda self, other: True
builtins.isinstance = lambda *a: True
def manual_two_layer_step(x, y, w1, w2, lr):
    return torch.zeros(()), w1, w2
'''

PICKLE_FRAME = r'''
import os, pickle, struct, sys
class Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/grader-pwned-by-frame",))
data = pickle.dumps({"ok": True, "cells": [], "value": Boom()})
os.write(int(sys.argv[2]), struct.pack(">Q", len(data)) + data)
'''

# A reply frame written straight to the pipe: a list that holds the same list three times, 38 levels deep. A few hundred
# bytes pickled, 3**38 values when walked: the grader must refuse it after a bounded walk, not hang.
REPLY_BOMB = r'''
import io, os, struct, sys, time, torch
def _bomb_and_wait():
    value = []
    for _ in range(38):
        value = [value, value, value]
    buf = io.BytesIO()
    torch.save({"ok": True, "value": value}, buf)
    os.write(int(sys.argv[2]), struct.pack(">Q", len(buf.getvalue())) + buf.getvalue())
    time.sleep(60)
'''

CHEAT_TENSOR = '''
class Cheat(torch.Tensor):
    def __eq__(self, other):
        return True
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return True
'''

# name: (base, {grade_id: new source}, expected score, substring of the feedback, fast?)
CASES = {
    "sys_exit_at_import": ("solution", {"manual_step": "import sys\nsys.exit(0)\n" + sol("manual_step")}, 85, "SystemExit", True),
    "os_exit_at_import": ("solution", {"sigmoid": "import os\nos._exit(0)\n" + sol("sigmoid")}, 0, "exited with status 0", False),
    "system_exit_in_a_call": ("solution", {"sigmoid": replaced("sigmoid", "    return Sigmoid.apply(x)\n", "    raise SystemExit('bye')\n")}, 98, "SystemExit", False),
    "keyboard_interrupt_at_import": ("solution", {"graphs": "raise KeyboardInterrupt\n" + sol("graphs")}, 95, "KeyboardInterrupt", False),
    "infinite_loop_at_import": ("release", {"manual_step": "while True:\n    pass\n"}, 0, "timed out", False),
    "infinite_loop_in_a_call": ("solution", {"sigmoid": replaced("sigmoid", "    return Sigmoid.apply(x)\n", "    while True:\n        pass\n")}, 98, "timed out", False),
    "memory_blow_up": ("solution", {"manual_step": replaced("manual_step", "    pre_act = x.mm(w1)", "    torch.empty(40 * 2**30, dtype=torch.uint8).fill_(1)\n    pre_act = x.mm(w1)")}, 85, "memory", False),
    "monkeypatching_torch_and_builtins": ("release", {"manual_step": MONKEYPATCH}, 0, "", True),
    "tensor_subclass_with_custom_eq": ("solution", {"sigmoid": CHEAT_TENSOR + replaced("sigmoid", "    return Sigmoid.apply(x)\n", "    return Sigmoid.apply(x).as_subclass(Cheat)\n")}, 98, "expected a Tensor", False),
    "reply_bomb_of_shared_lists": ("solution", {"sigmoid": REPLY_BOMB + replaced("sigmoid", "    return Sigmoid.apply(x)\n", "    _bomb_and_wait()\n")}, 98, "counting shared ones", True),
    "pickle_frame_on_the_pipe": ("release", {"manual_step": PICKLE_FRAME}, 0, "torch.save", False),
    "printing_100_MB": ("solution", {"sigmoid": replaced("sigmoid", "    return Sigmoid.apply(x)\n", "    import sys\n    sys.stdout.write('x' * (100 * 2**20))\n    sys.stdout.flush()\n    return Sigmoid.apply(x)\n")}, 98, "File too large", False),
    "calling_torch_optim_where_forbidden": ("solution", {"optimizers": replaced(
        "optimizers",
        '''        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ### BEGIN SOLUTION
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad''',
        '''        if not hasattr(self, "_inner"):
            self._inner = torch.optim.SGD(self.param_groups, lr=self.defaults["lr"], momentum=self.defaults["momentum"], weight_decay=self.defaults["weight_decay"])
        return self._inner.step(closure)
        loss = None
        ### BEGIN SOLUTION
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad''')}, 88, "must implement the update itself", False),
    "unicode_and_a_huge_cell": ("solution", {gid: "# 中文注释 ✓ — ünïcödé 🚀\n" + ("# filler line\n" * 60_000 if gid == "graphs" else "") + sol(gid) for gid in ("manual_step", "graphs")}, 100, "", False),
}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if CASES[n][4] else pytest.mark.slow) for n in CASES])
def test_hostile_submission_gets_what_honest_code_would(grade, name):
    base, changes, expected, message, _ = CASES[name]
    nb = with_cells(solution_nb(A1) if base == "solution" else release_nb(A1), changes)
    start = time.monotonic()
    results = grade(nb)
    elapsed = time.monotonic() - start
    feedback = results.output + "\n".join(t.output for t in results.tests)
    assert results.score == expected, f"{name}: {results.score} points\n{feedback[:3000]}"
    assert message.lower() in feedback.lower(), feedback[:3000]
    assert elapsed < 120, f"{name} took {elapsed:.0f} s"
    assert not Path("/tmp/grader-pwned-by-frame").exists()


@needs_bubblewrap
def test_solutions_and_hidden_tests_are_invisible_to_the_worker(grade, tmp_path):
    from autograder.client import StudentProxy, WorkerClient

    with WorkerClient([("steal", STEAL)]) as client:
        student = StudentProxy(client)
        assert student.found_files() == []
        assert "ModuleNotFoundError" in str(_raises(lambda: student.lib("autograder.assignments").get()))
        own = student.lib("os.getuid")()
        assert own == (65534 if os.geteuid() == 0 else os.getuid())
    results = grade(with_cells(release_nb(A1), {"manual_step": STEAL}))
    assert results.score == 0


@needs_bubblewrap
def test_worker_has_no_network():
    from autograder.client import StudentError, StudentProxy, WorkerClient

    code = "import socket\ndef connect(host, port):\n    socket.create_connection((host, port), timeout=3)\n"
    with WorkerClient([("net", code)]) as client:
        for host in ("127.0.0.1", "10.0.0.1", "1.1.1.1"):
            with pytest.raises(StudentError, match="(Network is unreachable|Connection refused|Errno)"):
                StudentProxy(client).connect(host, 80)


def _raises(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


@pytest.mark.slow
def test_fork_bomb_is_bounded_and_cleaned_up(grade):
    spawn = "import subprocess\n_procs = []\nfor _ in range(500):\n    _procs.append(subprocess.Popen(['sleep', '300']))\n"
    results = grade(with_cells(solution_nb(A1), {"graphs": spawn + sol("graphs")}))
    if BUBBLEWRAP:  # 64 processes at most: the 65th fork fails, so the cell's functions are missing
        assert results.score == 95 and "BlockingIOError" in results.output or "Resource temporarily unavailable" in results.output
    else:
        assert results.score >= 95
    time.sleep(1)
    leftovers = subprocess.run(["pgrep", "-f", "sleep 300"], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"{len(leftovers)} sleepers survived the worker"


@pytest.mark.slow
def test_fake_results_json_cannot_replace_the_real_one(tmp_path):
    nb = with_cells(release_nb(A1), {"manual_step": FAKE_RESULTS})
    sub = tmp_path / "submission.ipynb"
    import nbformat

    nbformat.write(nb, sub)
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "autograder", "grade", "--assignment", A1, str(sub), "--out", str(out)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["score"] == 0
    if BUBBLEWRAP:
        assert not (tmp_path / "results.json.fake").exists()
