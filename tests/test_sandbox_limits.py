"""The worker's resource limits: its disk, what it can learn about the host, its share of the CPU.

Issue 15 §3 (disk quota), §4 (host paths visible to student code), issue 14 §5 (one submission
slowing down the one graded beside it).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import nbformat
import pytest

from autograder import sandbox
from autograder.client import StudentProxy, WorkerClient, WorkerFailure
from conftest import ROOT, cell_by_id, solution_nb, with_cells

BUBBLEWRAP_PROBLEM = sandbox.bubblewrap_problem()  # grading refuses without it; these tests say why they cannot run
BUBBLEWRAP = BUBBLEWRAP_PROBLEM is None
needs_bubblewrap = pytest.mark.skipif(not BUBBLEWRAP, reason=f"needs the bubblewrap sandbox: {BUBBLEWRAP_PROBLEM}")
CGROUPS = sandbox.cgroup_support()
needs_cgroups = pytest.mark.skipif(not CGROUPS.version, reason="no writable cgroups here: " + CGROUPS.note)
MARKER = "hog-marker-5d1c"  # a prefix: each test puts its own ``marker`` (below) in the command line of every process it starts

FILL = '''
import os

def fill(chunk_mib=8, file_mib=32):
    """Write files into the working directory and /tmp until something refuses; (bytes written, the error)."""
    written, n, block = 0, 0, b"x" * (chunk_mib << 20)
    try:
        while written < 4 << 30:
            for folder in (".", "/tmp"):
                with open(os.path.join(folder, f"fill{n}.bin"), "wb") as f:
                    for _ in range(file_mib // chunk_mib):
                        f.write(block)
                        f.flush()
                        written += len(block)
                n += 1
    except OSError as exc:
        return written, f"{type(exc).__name__}: {exc}"
    return written, "no error"

def area_size():
    st = os.statvfs(".")
    return st.f_blocks * st.f_frsize
'''

LOOK_AROUND = '''
import glob, json, os, sys

def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"{path}: {type(exc).__name__}"

def what_i_see():
    """Everything a student could print to learn where the grader lives."""
    import lecture_utils, torch
    site = [p for p in sys.path if p.endswith("site-packages")]
    small = [f for s in site for f in glob.glob(s + "/*.pth") + glob.glob(s + "/*.py") + glob.glob(s + "/*.dist-info/direct_url.json")]
    return json.dumps({
        "mountinfo": read("/proc/self/mountinfo"), "cmdline1": read("/proc/1/cmdline"), "cmdline": read("/proc/self/cmdline"),
        "environ1": read("/proc/1/environ"), "cgroup": read("/proc/self/cgroup"), "pyvenv": read(sys.prefix + "/pyvenv.cfg"),
        "executable": sys.executable, "prefix": [sys.prefix, sys.base_prefix, sys.exec_prefix], "path": sys.path,
        "argv": sys.argv, "orig_argv": getattr(sys, "orig_argv", []), "cwd": os.getcwd(), "env": dict(os.environ),
        "modules": [lecture_utils.__file__, torch.__file__, __file__ if "__file__" in globals() else ""],
        "site_files": {f: read(f) for f in small},
        "main": getattr(sys.modules.get("__main__"), "__file__", ""),
    })

def runtime():
    import torch
    return sys.version, torch.backends.cpu.get_cpu_capability()

def lecture_utils_works():
    import lecture_utils
    return lecture_utils.__name__

def grader_package_importable():
    try:
        import autograder
    except ImportError as exc:
        return type(exc).__name__
    return "imported"
'''


@pytest.fixture
def marker(request) -> str:
    """This test's own marker. Tests count the machine's processes by marker, and under xdist a sibling
    test's processes (started beside this one, or still dying on a loaded machine) must not count against it."""
    return f"{MARKER}-{re.sub(r'[^A-Za-z0-9_]', '_', request.node.name)}-{uuid.uuid4().hex[:8]}"


def _marked_processes(marker: str) -> list[str]:
    """The processes now running whose command line contains ``marker``."""
    return subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()


def _marked_processes_after_kill(marker: str, timeout_s: float = 5.0) -> list[str]:
    """The processes with ``marker`` still running once they had ``timeout_s`` to exit.

    ``sandbox.kill_strays`` sends SIGKILL and returns without waiting; a killed process leaves the
    process table only once the kernel has run its exit, which on a loaded machine can come after the
    next (short) request has already returned. A busy loop that the sandbox missed never exits, so
    this still fails on a real survivor.
    """
    deadline = time.monotonic() + timeout_s
    while (left := _marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ----------------------------------------------------------------------------- disk
@needs_bubblewrap
def test_a_worker_that_fills_its_disk_gets_enospc_and_the_host_disk_is_untouched():
    host_tmp = tempfile.gettempdir()
    free_before = shutil.disk_usage(host_tmp).free
    limits = sandbox.Limits()
    with WorkerClient([("fill", FILL)], limits) as client:
        written, error = StudentProxy(client).fill()
        area = StudentProxy(client).area_size()
        host_workdir = client._workdir.path
        on_host = sum(p.stat().st_size for p in host_workdir.rglob("*") if p.is_file())
    assert "No space left on device" in error, error
    assert area == limits.disk_bytes
    assert limits.disk_bytes // 2 <= written <= limits.disk_bytes, written  # cwd and /tmp share the one tmpfs
    assert on_host < 1 << 20, f"{on_host} bytes landed in the host directory {host_workdir}"
    assert shutil.disk_usage(host_tmp).free > free_before - written // 2  # RAM, not disk (margin: other work beside)


def test_the_disk_limit_is_a_field_of_limits_and_reaches_bubblewrap():
    workdir = sandbox.WorkDir(None, sandbox.Limits(disk_bytes=5 * 2**20, cpus=0.5))
    try:
        args = sandbox.bwrap_prefix(workdir, None)
        assert args[args.index("--tmpfs") - 1] == str(5 * 2**20) and args[args.index("--tmpfs") - 2] == "--size"
        assert args[args.index("--tmpfs") + 1] == sandbox.SANDBOX_HOME
    finally:
        workdir.cleanup()


# ----------------------------------------------------------------------------- host paths
@needs_bubblewrap
def test_student_code_sees_no_host_path_of_the_checkout_or_the_grader_temp_dir():
    with WorkerClient([("look", LOOK_AROUND)]) as client:
        student = StudentProxy(client)
        seen = student.what_i_see()
        assert student.lecture_utils_works() == "lecture_utils"
        assert student.grader_package_importable() == "ModuleNotFoundError"
        import torch  # the same interpreter build (its libpython, not the system's) and the same CPU kernels
        assert tuple(student.runtime()) == (sys.version, torch.backends.cpu.get_cpu_capability())
        host_workdir = str(client._workdir.path)
    for host_path in (str(ROOT), str(ROOT.resolve()), host_workdir, "grader-worker-", "grader-view-", sys.prefix, sys.base_prefix):
        assert host_path not in seen, f"{host_path!r} is visible to student code: ...{seen[max(0, seen.find(host_path) - 300):seen.find(host_path) + 200]}..."
    assert "/proc/self/mountinfo: FileNotFoundError" in seen  # no procfs: no mount table to read


# ----------------------------------------------------------------------------- processes and CPU
def test_each_batch_job_has_cores_of_its_own():
    from autograder.batch import job_cpus

    cores = sorted(os.sched_getaffinity(0))
    assert set().union(*(job_cpus(k, 1) for k in range(1))) == set(cores)
    shares = [job_cpus(k, len(cores)) for k in range(len(cores))]
    assert all(len(s) == 1 for s in shares) and set().union(*shares) == set(cores)
    assert all(job_cpus(k, 3 * len(cores)) <= set(cores) for k in range(3 * len(cores)))


@needs_cgroups
def test_a_worker_cgroup_caps_cpu_and_tasks_and_kills_processes_that_left_the_session(marker):
    group = sandbox.WorkerCgroup.create(sandbox.Limits(cpus=0.25, extra_processes=8))
    assert group is not None
    busy = f"import time\nt = time.monotonic()\nwhile time.monotonic() - t < 2: pass\nprint(time.process_time())  # {marker}"
    try:
        if "cpu" in group.dirs:
            out = subprocess.run([sys.executable, "-c", busy], preexec_fn=group.join_self, capture_output=True, text=True, timeout=30)
            assert float(out.stdout) < 1.0, f"{out.stdout} s of CPU in 2 s at a quota of 0.25 CPU"
        if "pids" in group.dirs:
            spawn = f"import subprocess\nps = []\ntry:\n    for _ in range(100):\n        ps.append(subprocess.Popen(['sleep', '30'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))\nexcept OSError as e:\n    print(len(ps), e)  # {marker}"
            out = subprocess.run([sys.executable, "-c", spawn], preexec_fn=group.join_self, capture_output=True, text=True, timeout=30)
            started = int(out.stdout.split()[0])
            assert started <= 8 + sandbox.WORKER_TASKS, out.stdout
        hog = subprocess.Popen([sys.executable, "-c", f"while True: pass  # {marker}"], preexec_fn=group.join_self, start_new_session=True)
        assert hog.pid in group.pids()
    finally:
        group.remove()
    assert hog.wait(timeout=10) == -9
    assert all(not d.exists() for d in group.dirs.values())


def test_kill_tree_reaches_processes_in_their_own_sessions(marker):
    code = (f"import subprocess, sys, time\nfor _ in range(3):\n    subprocess.Popen([sys.executable, '-c', 'while True: pass  # {marker}'], start_new_session=True)\n"
            "time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 20
    while len(_marked_processes(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    sandbox.kill_tree(parent.pid)
    parent.wait()
    time.sleep(0.5)
    assert not _marked_processes(marker)


@needs_bubblewrap
def test_processes_started_in_their_own_sessions_die_with_the_worker(marker):
    hog = f"subprocess.Popen([sys.executable, '-c', 'while True: pass  # {marker}'], start_new_session=True)"
    code = (f"import subprocess, sys, time\n_H = [{hog} for _ in range(5)]\ndef ping():\n    return len(_H)\n"
            f"def stall():\n    _H.extend({hog} for _ in range(5))\n    time.sleep(60)\n")
    with WorkerClient([("hogs", code)]) as client:
        assert StudentProxy(client).ping() == 5
        assert not _marked_processes_after_kill(marker), "processes the cells started outlived the request"
        with pytest.raises(WorkerFailure, match="timed out"):
            client.call({"kind": "student", "path": "stall"}, timeout=3)
    time.sleep(1)
    assert not _marked_processes(marker)
    if CGROUPS.version:
        for parent in CGROUPS.parents.values():
            assert not list(parent.glob(f"grader-{os.getpid()}-[0-9]*")), "a worker cgroup was left behind"


def test_kill_strays_kills_what_the_student_started_and_keeps_the_worker(marker):
    spawn = f"import subprocess, sys\ndef spawn(n):\n    global P\n    P = [subprocess.Popen([sys.executable, '-c', 'while True: pass  # {marker}'], start_new_session=True) for _ in range(n)]\n    return n\n"
    with WorkerClient([("spawn", spawn)]) as client:
        student = StudentProxy(client)
        assert student.spawn(3) == 3
        assert sandbox.kill_strays(client.proc.pid, client._workdir.cgroup) == 3
        time.sleep(0.5)
        assert not _marked_processes(marker)
        assert student.spawn(1) == 1 and client.restarts == 0  # the worker itself lives on


def test_reap_cleans_up_after_a_grader_that_was_killed():
    code = "import time\nfrom autograder import sandbox\nw = sandbox.WorkDir(None, sandbox.Limits())\nprint(w.path, flush=True)\ntime.sleep(60)"
    grader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    workdir = Path(grader.stdout.readline().strip())
    assert workdir.is_dir()
    grader.kill()
    grader.wait()
    sandbox.reap(grader.pid)
    assert not workdir.exists()
    for parent in CGROUPS.parents.values():
        assert not list(parent.glob(f"grader-{grader.pid}-[0-9]*"))


def _leftovers_of_dead_graders(since: float) -> list[str]:
    found = []
    for entry in Path(tempfile.gettempdir()).glob("grader-*"):
        match = re.match(r"grader-(worker|view)-(\d+)-", entry.name)
        if match and not Path(f"/proc/{match[2]}").exists() and entry.stat().st_mtime >= since:
            found.append(entry.name)
    return found


def _hog(marker: str) -> str:
    """Cell code that leaves 40 busy processes in their own sessions, each with ``marker`` in its command line."""
    return f"import subprocess, sys\n_HOGS = [subprocess.Popen([sys.executable, '-c', 'while True: pass  # {marker}'], start_new_session=True) for _ in range(40)]\n"


@pytest.mark.slow
def test_a_hog_graded_beside_an_honest_submission_does_not_lower_its_score(tmp_path, capsys, marker):
    """40 busy processes in their own sessions (issue 14 §5): the honest solution beside them still scores 100."""
    from autograder.batch import grade_batch

    nb = solution_nb("a1_pytorch")
    timings = {}
    for kind in ("honest", "hog"):
        folder = tmp_path / kind
        folder.mkdir()
        nbformat.write(nb, folder / "honest.ipynb")
        other = with_cells(nb, {"graphs": _hog(marker) + cell_by_id(nb, "graphs").source}) if kind == "hog" else nb
        nbformat.write(other, folder / "other.ipynb")
        start, started_at = time.monotonic(), time.time()
        rows = {r.student: r for r in grade_batch("a1_pytorch", folder, folder / "grades.csv", jobs=2, timeout_s=240)}
        timings[kind] = time.monotonic() - start
        assert rows["honest"].score == 100, (kind, rows["honest"], (folder / "_grading" / "honest.log").read_text()[-3000:])
        time.sleep(1)
        assert not _marked_processes(marker), "busy processes survived the batch"
        assert not _leftovers_of_dead_graders(started_at - 1), "a killed grader's temporary files were left behind"
    with capsys.disabled():
        print(f"\nbatch of 2 with --jobs 2: {timings['honest']:.0f} s beside an honest submission, {timings['hog']:.0f} s beside the hog")
