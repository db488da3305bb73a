"""Grading fails closed: no strong sandbox (or no course secret), no grade; the opt-in basic sandbox protects the grader.

Held-out exploit kinds, each must get 0 and leave nothing behind in every mode that grades:
- READ: walk the filesystem (and try the checkout's own paths), find the solution notebook, execute its solution cells;
  read the hidden tests and the course secret.
- PLANT: write files into the grader package, its hidden tests, the results folder and the host's /tmp.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import hidden_bwrap
from autograder.assignments import HIDDEN_TESTS, PACKAGE_DIR
from autograder.results import validate
from autograder.secret import evaluation_seed, secret_file
from conftest import ROOT, release_nb, solution_nb, with_cells, write_nb

A1 = "a1_pytorch"
NO_BWRAP = {"GRADER_BWRAP": "/nonexistent/bwrap"}  # a switch the sandbox honours: bubblewrap "not installed"

READ = r'''
import json, os
FOUND = []
CHECKOUT = {root!r}
for top in (CHECKOUT, "/", os.path.expanduser("~"), "/work", "/tmp", "/autograder", "/root"):
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath.startswith(("/proc", "/sys", "/usr", "/dev")):
            dirnames[:] = []
            continue
        FOUND += [os.path.join(dirpath, f) for f in filenames if f in ("a1_pytorch.ipynb", "test_part1_backprop.py", ".grader-secret")]
for path in [*FOUND, CHECKOUT + "/solutions/a1_pytorch/a1_pytorch.ipynb"]:
    try:
        if path.endswith(".ipynb") and "solutions" in path:
            for c in json.load(open(path))["cells"]:
                if c["cell_type"] == "code" and c.get("metadata", {{}}).get("nbgrader", {{}}).get("solution"):
                    exec("".join(c["source"]), globals())
    except OSError:
        pass
'''

PLANT = r'''
import os
for folder in {targets!r}:
    try:
        with open(os.path.join(folder, "planted-by-student.txt"), "w") as f:
            f.write("pwned")
    except OSError:
        pass
'''


def _planted(targets: list[str]) -> list[str]:
    return [t for t in targets if os.path.exists(os.path.join(t, "planted-by-student.txt"))]


def _grade_cli(submission: Path, out: Path, *extra: str, env: dict | None = None, wrap=lambda argv: argv, timeout=600):
    argv = wrap([sys.executable, "-m", "autograder", "grade", "--assignment", A1, str(submission), "--out", str(out), *extra])
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})


def _exploits(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """The two held-out kinds as a1 submissions: (read, plant, folders the plant targets)."""
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    host_tmp.chmod(0o777)  # the host's /tmp is writable by everyone; so is this stand-in
    targets = [str(PACKAGE_DIR), str(HIDDEN_TESTS), str(HIDDEN_TESTS / A1), str(tmp_path), str(host_tmp), "/tmp", str(ROOT)]
    read = write_nb(with_cells(release_nb(A1), {"manual_step": READ.format(root=str(ROOT))}), tmp_path / "read.ipynb")
    plant = write_nb(with_cells(release_nb(A1), {"manual_step": PLANT.format(targets=targets)}), tmp_path / "plant.ipynb")
    return read, plant, targets


# ----------------------------------------------------------------------------- refusal
def test_grade_refuses_without_bubblewrap_and_says_how_to_fix_it(tmp_path):
    marker = tmp_path / "student-code-ran"
    marker.parent.chmod(0o777)
    nb = with_cells(solution_nb(A1), {"manual_step": f"open({str(marker)!r}, 'w').write('x')\n"})
    start = time.monotonic()
    run = _grade_cli(write_nb(nb, tmp_path / "s.ipynb"), tmp_path / "results.json", env=NO_BWRAP)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "grading refused" in run.stderr and "apt-get install bubblewrap" in run.stderr and "--allow-basic-sandbox" in run.stderr
    assert "PASS" not in run.stdout and not marker.exists()
    data = json.loads((tmp_path / "results.json").read_text())
    validate(data)
    assert data["score"] == 0 and data["tests"] == []
    assert "unavailable" in data["output"] and "course staff" in data["output"]
    assert time.monotonic() - start < 60


def test_grade_batch_refuses_before_touching_a_submission(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    write_nb(solution_nb(A1), subs / "alice.ipynb")
    run = subprocess.run([sys.executable, "-m", "autograder", "grade-batch", "--assignment", A1, str(subs), "--csv", str(tmp_path / "g.csv")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, **NO_BWRAP})
    assert run.returncode == 2, run.stdout + run.stderr
    assert "apt-get install bubblewrap" in run.stderr
    assert not list((subs / "_grading").glob("*.json")) and not (tmp_path / "g.csv").exists()


def test_a_missing_course_secret_refuses_grading(tmp_path):
    run = _grade_cli(write_nb(solution_nb(A1), tmp_path / "s.ipynb"), tmp_path / "r.json", env={"GRADER_SECRET_FILE": str(tmp_path / "none"), "GRADER_SECRET": ""})
    assert run.returncode == 2 and "make secret" in run.stderr, run.stderr
    assert "unavailable" in json.loads((tmp_path / "r.json").read_text())["output"]


def test_unknown_sandbox_policy_is_refused():
    run = subprocess.run([sys.executable, "-m", "autograder", "sandbox"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "GRADER_SANDBOX": "none"})
    assert run.returncode == 2 and "not a sandbox policy" in run.stdout


@pytest.mark.skipif(hidden_bwrap.available() is not None, reason=f"hiding bubblewrap {hidden_bwrap.available()}")
def test_really_missing_bubblewrap_is_refused_and_the_opt_in_names_the_basic_sandbox():
    """bwrap hidden for real (a private mount namespace), not by the switch: the same refusal."""
    refused = subprocess.run(hidden_bwrap.command([sys.executable, "-m", "autograder", "sandbox"]), capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 2 and "bubblewrap is not installed" in refused.stdout, refused.stdout + refused.stderr
    basic = subprocess.run(hidden_bwrap.command([sys.executable, "-m", "autograder", "sandbox", "--allow-basic-sandbox"]),
                           capture_output=True, text=True, cwd=ROOT)
    assert basic.returncode == 0 and "BASIC" in basic.stdout, basic.stdout + basic.stderr
    assert "as user " in basic.stdout and "as root" not in basic.stdout


# ----------------------------------------------------------------------------- the exploits, per mode
def test_bubblewrap_worker_cannot_read_the_solutions_nor_plant_files(tmp_path):
    read, plant, targets = _exploits(tmp_path)
    for sub in (read, plant):
        run = _grade_cli(sub, tmp_path / f"{sub.stem}.json")
        assert run.returncode == 0, run.stderr
        assert "worker sandbox: bubblewrap" in run.stdout
        assert json.loads((tmp_path / f"{sub.stem}.json").read_text())["score"] == 0, run.stdout[-3000:]
    assert _planted(targets) == []


@pytest.mark.slow
@pytest.mark.skipif(hidden_bwrap.available() is not None, reason=f"hiding bubblewrap {hidden_bwrap.available()}")
def test_basic_sandbox_grades_the_solution_and_stops_both_exploits(tmp_path):
    """Opt-in basic sandbox on a machine without bubblewrap: the solution keeps 100, the exploits get 0 and plant nothing."""
    read, plant, targets = _exploits(tmp_path)
    solution = write_nb(solution_nb(A1), tmp_path / "solution.ipynb")
    for sub, expected in ((solution, 100), (read, 0), (plant, 0)):
        run = _grade_cli(sub, tmp_path / f"{sub.stem}.json", "--allow-basic-sandbox", wrap=hidden_bwrap.command)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "worker sandbox: BASIC" in run.stdout and "as user nobody" in run.stdout, run.stdout[-1500:]
        assert json.loads((tmp_path / f"{sub.stem}.json").read_text())["score"] == expected, (sub.stem, run.stdout[-3000:])
    assert _planted(targets) == []


WORKER_VIEW = r'''
import json, os, sys
sys.path.insert(0, {tests!r})
from autograder import sandbox
from autograder.client import StudentProxy, WorkerClient
sandbox.allow_basic()
probe = """
import os
def uid():
    return os.getuid()
def can_read(path):
    try:
        with open(path, "rb") as f:
            f.read(1)
        return True
    except OSError:
        return False
def canwrite_nb(folder):
    try:
        with open(os.path.join(folder, "planted-by-student.txt"), "w") as f:
            f.write("x")
        return True
    except OSError:
        return False
"""
with WorkerClient([("probe", probe)]) as client:
    s = StudentProxy(client)
    print(json.dumps({{"mode": client.confinement.mode, "uid": s.uid(), "read": {{p: s.can_read(p) for p in {read!r}}},
                      "write": {{p: s.canwrite_nb(p) for p in {write!r}}}, "own": s.canwrite_nb(".")}}))
'''


@pytest.mark.skipif(hidden_bwrap.available() is not None, reason=f"hiding bubblewrap {hidden_bwrap.available()}")
def test_basic_worker_is_not_root_and_sees_none_of_the_grader(tmp_path):
    read = [str(ROOT / "solutions" / A1 / f"{A1}.ipynb"), str(HIDDEN_TESTS / A1 / "test_part1_backprop.py"), str(secret_file()),
            str(PACKAGE_DIR / "runner.py"), str(ROOT / ".git" / "HEAD")]
    write = [str(PACKAGE_DIR), str(HIDDEN_TESTS), "/tmp", str(tmp_path), str(ROOT)]
    tmp_path.chmod(0o777)
    script = WORKER_VIEW.format(tests=str(ROOT / "tests"), read=read, write=write)
    run = subprocess.run(hidden_bwrap.command([sys.executable, "-c", script]), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    view = json.loads(run.stdout.strip().splitlines()[-1])
    assert view["mode"] == "basic" and view["uid"] != 0 and view["own"]
    assert not any(view["read"].values()), view["read"]
    assert not any(view["write"].values()), view["write"]
    assert _planted(write) == []


# ----------------------------------------------------------------------------- the secret
EVAL_SETS = ("a2_detection_basics/single_object", "a3_two_stage/faster_rcnn", "a4_one_stage/fcos", "a5_segmentation/fcn", "a5_segmentation/mask_rcnn")


def test_evaluation_seeds_come_from_the_secret(monkeypatch):
    seeds = [evaluation_seed(name) for name in EVAL_SETS]
    assert len(set(seeds)) == len(seeds) and all(0 < s < 2**62 for s in seeds)
    assert seeds == [evaluation_seed(name) for name in EVAL_SETS]  # the same secret, the same seeds (same grades)
    monkeypatch.setenv("GRADER_SECRET", "ab" * 32)
    assert all(evaluation_seed(n) != s for n, s in zip(EVAL_SETS, seeds))
    for name in EVAL_SETS:  # every trained test names its set, none keeps a seed of its own
        assert f'"{name}"' in "".join(p.read_text() for p in HIDDEN_TESTS.rglob("test_*.py"))


def test_no_evaluation_seed_or_secret_in_the_repository_or_the_bundles(tmp_path):
    from autograder.bundle import SECRET_NAME, build_bundle
    from autograder.secret import course_secret

    seeds = [evaluation_seed(name) for name in EVAL_SETS]
    needles = [f"{s:x}" for s in seeds] + [f"{s:X}" for s in seeds] + [str(s) for s in seeds] + [course_secret().hex()]
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, tracked):
        path = ROOT / name
        if path.is_file() and path.stat().st_size < 20 * 2**20:
            text = path.read_bytes().decode("utf-8", "replace")
            assert not any(n in text for n in needles), f"{name} holds an evaluation seed or the course secret"
    assert ".grader-secret" in (ROOT / ".gitignore").read_text()
    for path in HIDDEN_TESTS.rglob("*.py"):  # no 62-bit literal left in a hidden test
        assert not re.search(r"0x[0-9A-Fa-f]{14,}", path.read_text()), path
    bundle = build_bundle(A1, tmp_path / "a.zip")
    with zipfile.ZipFile(bundle) as zf:
        for info in zf.infolist():
            text = zf.read(info).decode("utf-8", "replace")
            assert not any(n in text for n in needles[:-1]), f"{info.filename} holds an evaluation seed"
            if course_secret().hex() in text:
                assert info.filename == SECRET_NAME, info.filename
        assert (zf.getinfo(SECRET_NAME).external_attr >> 16) & 0o077 == 0


NO_LANDLOCK = r'''
import sys
from autograder import landlock, sandbox
landlock.abi_version = lambda: 0  # a kernel without Landlock: only file permissions protect the grader
sandbox.allow_basic()
try:
    print(sandbox.describe())
except sandbox.SandboxUnavailable as exc:
    print(exc)
    sys.exit(2)
'''


@pytest.mark.skipif(hidden_bwrap.available() is not None, reason=f"hiding bubblewrap {hidden_bwrap.available()}")
def test_without_landlock_the_probe_refuses_what_file_permissions_leave_readable():
    """The checkout's files are world-readable here: without Landlock, nobody could read them, so grading refuses."""
    run = subprocess.run(hidden_bwrap.command([sys.executable, "-c", NO_LANDLOCK]), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 2, run.stdout + run.stderr[-2000:]
    assert "cannot protect the grader" in run.stdout and f"nobody can read {ROOT / 'solutions'}" in run.stdout, run.stdout
    assert "chmod -R o-rwx" in run.stdout
