"""How the worker process is confined.

Two layers, the strongest available is used and reported (``describe()``):

* **bubblewrap** (Debian package ``bubblewrap``): the worker runs in new mount, PID, network, IPC
  and UTS namespaces. Its filesystem view holds only the system libraries (``/usr``), the Python
  installation and virtual environment (read-only, at ``/opt/python`` and ``/opt/venv``),
  ``lecture_utils`` (read-only, at ``/opt/course``) and one size-limited tmpfs at ``/sandbox``: its
  working directory, ``HOME``, ``TMPDIR`` and ``/tmp``. ``solutions/``, the hidden tests, the grader's
  package and output files do not exist there, no host path of the checkout appears in its paths,
  environment or command line, and there is no ``/proc`` (only ``/proc/cpuinfo``), so no mount table
  or other process can be read. There is no network (only an unconfigured loopback). When the grader
  runs as root, the worker drops to ``nobody`` inside the sandbox (``setpriv``).
* **basic** (fallback when bubblewrap is missing or cannot create namespaces): a fresh temporary
  directory, ``nobody`` when that user can run the environment's Python, nothing else.

Both add a scrubbed environment, its own session / process group, and rlimits on CPU time,
address space, file size (which also bounds captured output), open files and processes. Where a
cgroup hierarchy is writable (v2, or v1 as on this course's Debian VMs), each worker and everything
it starts also get their own cgroup: a CPU quota, a task count and a memory limit (``WorkerCgroup``).
"""
from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("worker_main.py")
NOBODY_UID = 65534
WORKER_TASKS = 16  # tasks of the worker itself in its cgroup: bubblewrap (2), python and its threads

# Where things appear inside the bubblewrap sandbox: neutral paths, never a host path of the checkout.
SANDBOX_HOME = "/sandbox"  # working directory, HOME, TMPDIR; /tmp points into it. One size-limited tmpfs.
PYTHON_VIEW = "/opt/python"  # the base Python installation (unless it lives in /usr)
VENV_VIEW = "/opt/venv"  # the virtual environment
COURSE_VIEW = "/opt/course"  # what an editable install maps to the checkout: lecture_utils only
WORKER_VIEW = "/opt/worker/worker_main.py"


@dataclass(frozen=True)
class Limits:
    call_timeout_s: float = 20.0  # wall clock per request (a test may ask for more, e.g. training)
    submission_budget_s: float = 300.0  # wall clock for all requests of one submission
    load_timeout_s: float = 30.0  # wall clock to execute the notebook's cells
    start_timeout_s: float = 90.0  # wall clock for the worker to import torch and say hello
    cpu_time_s: int = 600  # RLIMIT_CPU for the whole worker lifetime
    memory_bytes: int = 6 * 2**30  # RLIMIT_AS (importing the CUDA build of torch maps ~3.5 GiB)
    file_size_bytes: int = 64 * 2**20  # RLIMIT_FSIZE (also bounds captured stdout/stderr)
    open_files: int = 256  # RLIMIT_NOFILE
    extra_processes: int = 64  # RLIMIT_NPROC = processes the worker's user has now + this; cgroup pids.max
    threads: int = 1  # torch intra-op threads in the worker
    disk_bytes: int = 256 * 2**20  # bubblewrap: the worker's tmpfs (/sandbox and /tmp together)
    cpus: float | None = None  # cgroup: CPUs' worth of time for the worker and all it starts (None: `threads`)
    total_memory_bytes: int = 4 * 2**30  # cgroup: memory of the worker and all it starts, its tmpfs included


def scrubbed_env(home: str, threads: int) -> dict[str, str]:
    """A minimal environment: nothing from the grader's (tokens, paths, proxies) leaks in.

    Under bubblewrap, ``HOME`` and ``TMPDIR`` are replaced by the sandbox's own paths (``--setenv``).
    """
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "MPLBACKEND": "Agg",
        "CUDA_VISIBLE_DEVICES": "",  # grading is on the CPU: deterministic and equal for everyone
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "GRADER_THREADS": str(threads),
    }


# ----------------------------------------------------------------------------- which confinement
POLICY_ENV = "GRADER_SANDBOX"  # strong (default) | allow-basic (--allow-basic-sandbox) | basic (always basic)
BWRAP_ENV = "GRADER_BWRAP"  # the bubblewrap binary (default: bwrap on PATH); tests point it elsewhere to hide it
POLICIES = ("strong", "allow-basic", "basic")


class SandboxUnavailable(RuntimeError):
    """No sandbox that protects the grader can be set up here: no student code may run (fail closed)."""


@dataclass(frozen=True)
class Confinement:
    mode: str  # "bubblewrap" | "basic"
    user: pwd.struct_passwd | None  # the account the worker runs as, None = the grader's own (never root)
    note: str = ""  # why a weaker mode was chosen
    landlock_abi: int = 0  # basic mode: the worker confines its filesystem view with Landlock (0: not available)


_CHOICE: dict[str, Confinement] = {}


def policy() -> str:
    value = os.environ.get(POLICY_ENV, "strong")
    value = "strong" if value in ("", "auto") else value
    if value not in POLICIES:
        raise SandboxUnavailable(f"{POLICY_ENV}={value!r} is not a sandbox policy: use one of {', '.join(POLICIES)}")
    return value


def allow_basic() -> None:
    """The TA's opt-in (--allow-basic-sandbox): the basic sandbox where bubblewrap cannot run. Inherited by batch jobs."""
    if policy() == "strong":
        os.environ[POLICY_ENV] = "allow-basic"
        _CHOICE.clear()


def _nobody() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def choose() -> Confinement:
    """The confinement grading uses here (cached for the process): bubblewrap, or the basic sandbox where the course
    opted in to it. Raises SandboxUnavailable, with what is missing and the fix, where neither can protect the grader."""
    if "choice" not in _CHOICE:
        wanted = policy()
        if wanted == "basic":
            _CHOICE["choice"] = _basic(f"{POLICY_ENV}=basic")
        else:
            problem = bubblewrap_problem()
            if problem is None:
                _CHOICE["choice"] = Confinement("bubblewrap", _nobody())
            elif wanted == "allow-basic":
                _CHOICE["choice"] = _basic(problem[0])
            else:
                raise SandboxUnavailable(refusal(*problem))
    return _CHOICE["choice"]


def fall_back(reason: str) -> Confinement:
    """Called when a bubblewrap worker could not start: the basic sandbox if the course allows it, else refuse."""
    problem = (f"bubblewrap could not start the worker ({reason})", NAMESPACES_FIX)
    if policy() == "strong":
        _CHOICE.clear()
        raise SandboxUnavailable(refusal(*problem))
    _CHOICE["choice"] = _basic(problem[0])
    return _CHOICE["choice"]


def refusal(problem: str, fix: str) -> str:
    return (f"grading refused: the strong sandbox for students' code cannot be set up here, and no student code runs without it.\n"
            f"  what is missing: {problem}\n"
            f"  fix: {fix}\n"
            f"  or, only on a machine that holds nothing else secret, allow the weaker basic sandbox with "
            f"--allow-basic-sandbox (README, \"What the sandbox does, and its limits\").")


def _sudo() -> str:
    return "" if os.geteuid() == 0 else "sudo "


NAMESPACES_FIX = ("let bubblewrap create namespaces: run the grader as root, or enable unprivileged user namespaces "
                  "(Debian: `sudo sysctl -w kernel.unprivileged_userns_clone=1`; Ubuntu 24.04: "
                  "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`); in a container, allow them "
                  "(e.g. docker run --security-opt seccomp=unconfined --security-opt apparmor=unconfined)")


def bwrap_binary() -> str | None:
    configured = os.environ.get(BWRAP_ENV)
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which("bwrap")


def bubblewrap_problem() -> tuple[str, str] | None:
    """None when bubblewrap can confine a worker here; else (what is missing, the command that fixes it)."""
    bwrap = bwrap_binary()
    if bwrap is None:
        where = f" (at {os.environ[BWRAP_ENV]}, from ${BWRAP_ENV})" if os.environ.get(BWRAP_ENV) else ""
        return f"bubblewrap is not installed{where}", f"`{_sudo()}apt-get install bubblewrap` (or `make system-deps` as root)"
    if os.geteuid() == 0 and (shutil.which("setpriv") is None or _nobody() is None):
        return ("the worker cannot drop root inside bubblewrap (setpriv from util-linux, or the user nobody, is missing)",
                "`apt-get install util-linux` and make sure the user `nobody` exists")
    args = [*_namespace_args(bwrap), "--dev", "/dev", *_drop_root_args(_nobody()), "true"]  # the worker's namespaces and user switch
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap ({bwrap}) could not run: {exc}", NAMESPACES_FIX
    if run.returncode != 0:
        said = " ".join((run.stderr or run.stdout).split())[-300:] or f"exit status {run.returncode}"
        return f"bubblewrap ({bwrap}) cannot create its namespaces here: {said}", NAMESPACES_FIX
    return None


def _namespace_args(bwrap: str) -> list[str]:
    """bubblewrap with the worker's namespaces and the host's system directories, read-only: /usr, and /bin, /lib ...
    as the host has them (symlinks into /usr, or directories)."""
    args = [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    return args


def _drop_root_args(user: pwd.struct_passwd | None) -> list[str]:
    """As root: drop to the unprivileged ``user`` inside the sandbox (setpriv); nothing otherwise."""
    if user is None:
        return []
    return ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "setpriv", f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all", "--no-new-privs", "--"]


def _basic(note: str) -> Confinement:
    """The basic sandbox, after proving here that it protects the grader; SandboxUnavailable where it cannot."""
    from autograder import basic_sandbox

    return basic_sandbox.confinement(note)


def describe(limits: Limits | None = None) -> str:
    """One line on how the worker is confined here (for logs and the TA); raises SandboxUnavailable like choose()."""
    limits = limits or Limits()
    c = choose()
    who = f"as user {c.user.pw_name}" if c.user else "as the current user"
    if c.mode == "bubblewrap":
        text = (f"worker sandbox: bubblewrap (own mount/PID/network namespaces, minimal read-only filesystem, "
                f"{_mib(limits.disk_bytes)} MiB of disk) {who}, rlimits, scrubbed environment")
    else:
        from autograder import landlock

        view = landlock.describe(c.landlock_abi) if c.landlock_abi else "file permissions only"
        text = (f"worker sandbox: BASIC (opted in; temp dir, {view}, rlimits, scrubbed environment; the grader's files "
                f"checked unreadable) {who} — {c.note}")
    return f"{text}; {cgroup_support().describe(limits)}"


def _mib(n: int) -> int:
    return n // 2**20


# ----------------------------------------------------------------------------- cgroups
CONTROLLERS = ("cpu", "pids", "memory")
CPU_PERIOD_US = 100_000


@dataclass(frozen=True)
class CgroupSupport:
    """Where this process can create worker cgroups: version 2, 1, or 0 (none; ``note`` says why)."""

    version: int
    parents: dict[str, Path] = field(default_factory=dict)  # controller -> directory the worker cgroups go in
    note: str = ""

    def describe(self, limits: Limits) -> str:
        if not self.version:
            return f"no cgroups ({self.note}): CPU shared through one core per batch job, processes bounded per user"
        parts = {"cpu": f"{_cpus(limits):g} CPU", "pids": f"{limits.extra_processes + WORKER_TASKS} tasks",
                 "memory": f"{_mib(limits.total_memory_bytes)} MiB"}
        held = ", ".join(parts[c] for c in CONTROLLERS if c in self.parents)
        return f"cgroup v{self.version} per worker ({held})" + (f"; {self.note}" if self.note else "")


_CGROUPS: dict[str, CgroupSupport] = {}


def cgroup_support() -> CgroupSupport:
    """Detect once per process whether worker cgroups can be made (``GRADER_CGROUPS=off`` disables them)."""
    if "support" not in _CGROUPS:
        if os.environ.get("GRADER_CGROUPS", "auto") == "off":
            _CGROUPS["support"] = CgroupSupport(0, note="GRADER_CGROUPS=off")
        else:
            try:
                _CGROUPS["support"] = _detect_cgroups()
            except OSError as exc:
                _CGROUPS["support"] = CgroupSupport(0, note=f"cannot read the cgroup set-up: {exc}")
    return _CGROUPS["support"]


def _own_cgroups() -> dict[str, str]:
    """controller ("" for the v2 hierarchy) -> this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(",") if controllers else [""]:
            own[c] = path
    return own


def _detect_cgroups() -> CgroupSupport:
    own = _own_cgroups()
    mounts = [line.split()[1:4] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mnt, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            parent = Path(mnt) / own[""].lstrip("/")
            if re.fullmatch(r"grader-\d+-main", parent.name):  # a grader above moved itself into a leaf: share its parent
                parent = parent.parent
            usable = _enable_v2(parent)
            if usable:
                return CgroupSupport(2, usable, _missing(usable))
    parents: dict[str, Path] = {}
    for c in CONTROLLERS:
        for mnt, fstype, opts in mounts:
            if fstype == "cgroup" and c in opts.split(",") and c in own and _can_make_child(Path(mnt) / own[c].lstrip("/")):
                parents[c] = Path(mnt) / own[c].lstrip("/")
                break
    if parents:
        return CgroupSupport(1, parents, _missing(parents))
    return CgroupSupport(0, note="no writable cgroup hierarchy with the cpu, pids or memory controller")


def _cpus(limits: Limits) -> float:
    """The CPU quota: ``limits.cpus``, by default one CPU per torch thread of the worker."""
    return float(limits.threads) if limits.cpus is None else limits.cpus


def _missing(usable: dict[str, Path]) -> str:
    missing = [c for c in CONTROLLERS if c not in usable]
    return f"not available: {', '.join(missing)}" if missing else ""


def _can_make_child(parent: Path) -> bool:
    probe = parent / f"grader-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


def _enable_v2(parent: Path) -> dict[str, Path]:
    """Turn on cpu/pids/memory for the children of ``parent`` (cgroup v2); the controllers that work."""
    try:
        available = set((parent / "cgroup.controllers").read_text().split())
    except OSError:
        return {}
    wanted = [c for c in CONTROLLERS if c in available]
    if not wanted:
        return {}

    def enabled() -> set[str]:
        return set((parent / "cgroup.subtree_control").read_text().split())

    try:
        for c in wanted:
            if c not in enabled():
                (parent / "cgroup.subtree_control").write_text(f"+{c}")
    except OSError:
        # "no internal processes": a cgroup with processes cannot enable controllers for its children.
        # Move this process into a leaf of its own and try once more (works in a delegated scope).
        for stale in parent.glob("grader-*-main"):  # leaves of graders that have exited
            with contextlib.suppress(OSError):
                stale.rmdir()
        leaf = parent / f"grader-{os.getpid()}-main"
        try:
            leaf.mkdir(exist_ok=True)
            (leaf / "cgroup.procs").write_text("0")
            for c in wanted:
                if c not in enabled():
                    (parent / "cgroup.subtree_control").write_text(f"+{c}")
        except OSError:  # other processes live there too: move back, no cgroups
            with contextlib.suppress(OSError):
                (parent / "cgroup.procs").write_text("0")
                leaf.rmdir()
            return {}
    return {c: parent for c in wanted if c in enabled()} if _can_make_child(parent) else {}


class WorkerCgroup:
    """The cgroup of one worker (one directory per v1 controller, one in v2), with its limits set."""

    _counter = itertools.count()

    def __init__(self, dirs: dict[str, Path], version: int) -> None:
        self.dirs = dirs
        self.version = version
        self._procs_files = sorted({str(d / "cgroup.procs") for d in dirs.values()})  # for join_self, after fork

    @classmethod
    def create(cls, limits: Limits) -> WorkerCgroup | None:
        """A new cgroup named ``grader-<grader pid>-<n>`` with the limits set; None where unsupported."""
        support = cgroup_support()
        if not support.version:
            return None
        _register_exit_sweep()
        name = f"grader-{os.getpid()}-{next(cls._counter)}"
        group = cls({c: parent / name for c, parent in support.parents.items()}, support.version)
        try:
            for d in set(group.dirs.values()):
                d.mkdir()
            group._write_limits(limits)
        except OSError:
            group.remove()
            return None
        return group

    def _write_limits(self, limits: Limits) -> None:
        quota = max(1000, int(_cpus(limits) * CPU_PERIOD_US))
        pids = limits.extra_processes + WORKER_TASKS
        if self.version == 2:
            settings = {"cpu": [("cpu.max", f"{quota} {CPU_PERIOD_US}")], "pids": [("pids.max", str(pids))],
                        "memory": [("memory.max", str(limits.total_memory_bytes)), ("memory.swap.max", "0")]}
        else:
            settings = {"cpu": [("cpu.cfs_period_us", str(CPU_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))],
                        "pids": [("pids.max", str(pids))], "memory": [("memory.limit_in_bytes", str(limits.total_memory_bytes))]}
        for c, d in self.dirs.items():
            for name, value in settings[c]:
                if name != "memory.swap.max" or (d / name).exists():  # swap accounting may be off
                    (d / name).write_text(value)

    @property
    def bounds_tasks(self) -> bool:
        return "pids" in self.dirs

    def join_self(self) -> bool:
        """Move the calling process into the cgroup (run in the child before exec; no allocation-heavy work)."""
        try:
            for path in self._procs_files:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
            return True
        except OSError:
            return False

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in set(self.dirs.values()):
            try:
                found.update(int(p) for p in (d / "cgroup.procs").read_text().split())
            except OSError:
                continue
        return found

    def kill(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup, also those in their own sessions; True once it is empty."""
        any_dir = next(iter(self.dirs.values()), None)
        if self.version == 2 and any_dir is not None and (any_dir / "cgroup.kill").exists():
            try:
                (any_dir / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > deadline:
                return False
            for pid in pids:
                _sigkill(pid)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left in the cgroup and delete it (retrying while the killed processes exit)."""
        self.kill()
        for d in set(self.dirs.values()):
            for _ in range(100):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def reap_cgroups(grader_pid: int) -> int:
    """Kill and remove every worker cgroup a grader process made (after it died or was killed); how many."""
    support = cgroup_support()
    names = {d.name for parent in support.parents.values() for d in parent.glob(f"grader-{grader_pid}-[0-9]*") if d.is_dir()}
    for name in names:
        WorkerCgroup({c: parent / name for c, parent in support.parents.items()}, support.version).remove()
    return len(names)


def reap(grader_pid: int) -> None:
    """After a grader process died (killed by a batch timeout): its workers' cgroups and temporary files."""
    reap_cgroups(grader_pid)
    for kind in ("worker", "view"):
        for leftover in Path(tempfile.gettempdir()).glob(f"grader-{kind}-{grader_pid}-*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


_SWEEP: list[bool] = []


def _register_exit_sweep() -> None:
    if not _SWEEP:
        _SWEEP.append(True)
        atexit.register(reap_cgroups, os.getpid())


def _sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time, command name) of every process now, from /proc."""
    table: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            table[int(entry.name)] = (int(rest[1]), int(rest[19]), comm)
    return table


def _descendants(pid: int, table: dict[int, tuple[int, int, str]]) -> list[int]:
    """``pid``'s descendants, also those that left its session or process group."""
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int, cgroup: WorkerCgroup | None = None) -> None:
    """SIGKILL a worker and everything it started: its process group, its descendants, its cgroup."""
    doomed = _descendants(pid, _process_table())
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in [pid, *doomed]:
        _sigkill(p)
    if cgroup is not None:
        cgroup.kill()


def kill_strays(pid: int, cgroup: WorkerCgroup | None = None) -> int:
    """SIGKILL every process the student's code started, keeping the worker itself; how many were killed.

    For use between requests: ``pid`` is the worker as started (bubblewrap, or python in basic mode).
    Kept are ``pid`` and, below bubblewrap, the oldest child at each level down to the Python worker;
    killed is everything else in its cgroup or below it (processes in their own sessions included).
    """
    table = _process_table()
    keep, current = {pid}, pid
    while current in table and table[current][2] == "bwrap":
        children = [p for p, (parent, _, _) in table.items() if parent == current]
        if not children:
            break
        current = min(children, key=lambda p: table[p][1])
        keep.add(current)
    strays = ((cgroup.pids() if cgroup is not None else set()) | set(_descendants(pid, table))) - keep
    for p in strays:
        _sigkill(p)
    return len(strays)


# ----------------------------------------------------------------------------- process set-up
def _count_processes(uid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(list((entry / "task").iterdir()))
            except OSError:
                continue
    return count


_LOCAL = threading.local()  # the WorkDir made last in this thread, for make_preexec(workdir=<default>)


class WorkDir:
    """A fresh temporary directory holding a copy of the worker script, owned by the worker's user.

    It also owns the worker's cgroup (made with ``limits``, or by ``make_preexec``), which
    ``cleanup()`` kills and removes. Under bubblewrap the worker does not see this directory: it
    works in its own tmpfs (``SANDBOX_HOME``) and the script is mounted read-only at ``WORKER_VIEW``.
    """

    def __init__(self, user: pwd.struct_passwd | None, limits: Limits | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"grader-worker-{os.getpid()}-"))  # named for reap()
        shutil.copy(WORKER_SCRIPT, self.path / WORKER_SCRIPT.name)
        os.chmod(self.path, 0o700)
        if user is not None:
            for p in (self.path, self.path / WORKER_SCRIPT.name):
                os.chown(p, user.pw_uid, user.pw_gid)
        self.script = self.path / WORKER_SCRIPT.name
        self.stdout = self.path.parent / f"{self.path.name}.out"  # outside the worker's reach
        self.limits = limits or Limits()
        self.cgroup: WorkerCgroup | None = WorkerCgroup.create(limits) if limits is not None else None
        self._cgroup_tried = limits is not None
        _LOCAL.workdir = self

    def attach_cgroup(self, limits: Limits) -> WorkerCgroup | None:
        """The worker's cgroup, made with ``limits`` if it does not exist yet."""
        if not self._cgroup_tried:
            self._cgroup_tried = True
            self.cgroup = WorkerCgroup.create(limits)
        return self.cgroup

    def cleanup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None
        shutil.rmtree(self.path, ignore_errors=True)
        self.stdout.unlink(missing_ok=True)


_LAST = object()


def make_preexec(limits: Limits, user: pwd.struct_passwd | None, switch_user: bool, workdir: WorkDir | None | object = _LAST,
                 confine: Callable[[], None] | None = None):
    """Run in the child between fork and exec: join the worker's cgroup, rlimits, ``confine`` (basic mode: Landlock),
    then (basic mode) the user switch; a basic worker that would still be root is refused.

    ``workdir``: the worker's WorkDir, whose cgroup the child joins; by default the WorkDir made last
    in this thread (so a client that does not pass it still gets the cgroup); None: no cgroup.
    """
    if workdir is _LAST:
        workdir, _LOCAL.workdir = getattr(_LOCAL, "workdir", None), None
    cgroup = workdir.attach_cgroup(limits) if isinstance(workdir, WorkDir) else None
    uid = user.pw_uid if user is not None else os.getuid()
    nproc = _count_processes(uid) + limits.extra_processes
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]

    def preexec() -> None:
        joined = cgroup is not None and cgroup.join_self()
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_time_s, limits.cpu_time_s + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # RLIMIT_NPROC counts every process of the user, other submissions' workers included: where the
        # cgroup bounds this worker's tasks, it is the bound and the per-user limit is not narrowed.
        limit = nproc_hard if joined and cgroup.bounds_tasks else nproc
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        if confine is not None:
            confine()
        if switch_user and user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        if switch_user and (os.getuid() == 0 or os.geteuid() == 0):
            raise PermissionError("the basic sandbox never runs students' code as root")

    return preexec


# ----------------------------------------------------------------------------- the bubblewrap view
class _Mounts:
    """bwrap arguments that build a tree inside the sandbox, making missing parents 0755."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.made: set[str] = {"/"}
        self.bound: list[str] = []  # destinations of binds: what is below them exists already

    def _parents(self, dest: str) -> None:
        for parent in reversed(Path(dest).parents):
            p = str(parent)
            if p not in self.made and not any(p == b or p.startswith(b + "/") for b in self.bound):
                self.args += ["--perms", "0755", "--dir", p]
                self.made.add(p)

    def ro_bind(self, src: Path | str, dest: Path | str) -> None:
        self._parents(str(dest))
        self.args += ["--ro-bind", str(src), str(dest)]
        self.bound.append(str(dest))

    def symlink(self, target: str, dest: str) -> None:
        self._parents(dest)
        self.args += ["--symlink", target, dest]


@dataclass(frozen=True)
class PythonView:
    """How the Python environment and lecture_utils are mounted inside (built once per grader process)."""

    args: tuple[str, ...]  # bwrap arguments
    python: str  # the interpreter as the worker sees it
    env: tuple[tuple[str, str], ...]  # variables set inside (LD_LIBRARY_PATH for a moved libpython)


_VIEW: dict[str, PythonView] = {}


def python_view() -> PythonView:
    if "view" not in _VIEW:
        _VIEW["view"] = _build_python_view()
    return _VIEW["view"]


def _build_python_view() -> PythonView:
    import lecture_utils

    generated = Path(tempfile.mkdtemp(prefix=f"grader-view-{os.getpid()}-"))  # small files mounted over leaky ones
    os.chmod(generated, 0o755)
    atexit.register(shutil.rmtree, generated, True)
    m, env = _Mounts(), []
    base, exe = Path(sys.base_prefix).resolve(), Path(sys.executable).resolve()
    if base.is_relative_to("/usr"):  # a system Python: /usr is mounted as it is
        inner_base = base
    else:
        inner_base = Path(PYTHON_VIEW)
        m.ro_bind(base, inner_base)
        if any((base / "lib").glob("libpython*.so*")):  # its RUNPATH names the host path: point the loader here
            env.append(("LD_LIBRARY_PATH", f"{inner_base}/lib"))
    if exe.is_relative_to(base):
        inner_exe = str(inner_base / exe.relative_to(base))
    else:  # an interpreter outside its prefix (unusual): mounted where it is
        m.ro_bind(exe, exe)
        inner_exe = str(exe)
    renames: dict[Path, str] = {base: str(inner_base)}
    python = inner_exe
    if sys.prefix != sys.base_prefix:  # a virtual environment: rebuilt at VENV_VIEW around its lib/
        venv = Path(sys.prefix).resolve()
        (generated / "pyvenv.cfg").write_text(_pyvenv_cfg(venv, str(Path(inner_exe).parent)))
        (generated / "pyvenv.cfg").chmod(0o644)
        m.ro_bind(generated / "pyvenv.cfg", f"{VENV_VIEW}/pyvenv.cfg")
        m.symlink(inner_exe, f"{VENV_VIEW}/bin/python")
        m.ro_bind(venv / "lib", f"{VENV_VIEW}/lib")
        renames[venv] = VENV_VIEW
        python = f"{VENV_VIEW}/bin/python"
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    inner_purelib = _renamed(purelib, renames)
    if inner_purelib is None:  # site-packages outside the environment (unusual): mounted where it is
        m.ro_bind(purelib, purelib)
        inner_purelib = str(purelib)
    package = Path(lecture_utils.__file__).resolve().parent
    if _renamed(package, renames) is None:  # an editable install: the checkout's lecture_utils, at COURSE_VIEW
        course = package.parent
        m.ro_bind(package, f"{COURSE_VIEW}/{package.name}")
        renames[course] = COURSE_VIEW
        for i, leaky in enumerate(_files_naming(purelib, course)):
            text = leaky.read_text()
            for host, inner in sorted(renames.items(), key=lambda kv: -len(str(kv[0]))):
                text = text.replace(str(host), inner)
            copy = generated / f"{i}-{leaky.name}"
            copy.write_text(text)
            copy.chmod(0o644)
            m.ro_bind(copy, f"{inner_purelib}/{leaky.relative_to(purelib)}")
    return PythonView(tuple(m.args), python, tuple(env))


def _renamed(path: Path, renames: dict[Path, str]) -> str | None:
    for host, inner in sorted(renames.items(), key=lambda kv: -len(str(kv[0]))):
        if path.is_relative_to(host):
            return str(Path(inner) / path.relative_to(host))
    return None


def _pyvenv_cfg(venv: Path, home: str) -> str:
    keep = {"include-system-site-packages": "false", "version": sys.version.split()[0]}
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in keep:
                keep[key.strip()] = value.strip()
    except OSError:
        pass
    return f"home = {home}\n" + "".join(f"{k} = {v}\n" for k, v in keep.items())


def _files_naming(site_packages: Path, course: Path) -> list[Path]:
    """Small files of an editable install that name the checkout (.pth, the finder, direct_url.json)."""
    candidates = [*site_packages.glob("*.pth"), *site_packages.glob("__editable__*.py"),
                  *site_packages.glob("*.egg-link"), *site_packages.glob("*.dist-info/direct_url.json")]
    found = []
    for path in sorted(candidates):
        try:
            if path.stat().st_size < 2**20 and str(course) in path.read_text(errors="replace"):
                found.append(path)
        except OSError:
            continue
    return found


def bwrap_prefix(workdir: WorkDir, user: pwd.struct_passwd | None, limits: Limits | None = None) -> list[str]:
    """bubblewrap's arguments: namespaces, the read-only system and Python view, the worker's tmpfs."""
    limits = limits or workdir.limits
    view = python_view()
    args = _namespace_args(bwrap_binary() or "bwrap")
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime"):
        args += ["--ro-bind-try", etc, etc]
    # No procfs: its mount table and /proc/1/cmdline would name host paths. PyTorch's CPU detection reads cpuinfo.
    args += ["--dev", "/dev", "--perms", "0555", "--dir", "/proc", "--ro-bind-try", "/proc/cpuinfo", "/proc/cpuinfo"]
    args += ["--perms", "01777", "--size", str(limits.disk_bytes), "--tmpfs", SANDBOX_HOME,
             "--perms", "01777", "--dir", f"{SANDBOX_HOME}/tmp", "--symlink", f"{SANDBOX_HOME}/tmp", "/tmp"]
    args += [*view.args, "--perms", "0755", "--dir", str(Path(WORKER_VIEW).parent), "--ro-bind", str(workdir.script), WORKER_VIEW, "--chdir", SANDBOX_HOME,
             "--setenv", "HOME", SANDBOX_HOME, "--setenv", "TMPDIR", f"{SANDBOX_HOME}/tmp"]
    for name, value in view.env:
        args += ["--setenv", name, value]
    return args + _drop_root_args(user)


def worker_command(confinement: Confinement, workdir: WorkDir, rfd: int, wfd: int) -> list[str]:
    """The worker's command line; under bubblewrap the worker's own part names only sandbox paths."""
    # -I: ignore PYTHON* variables, user site and the script's neighbours; -B: no .pyc files.
    if confinement.mode == "bubblewrap":
        return bwrap_prefix(workdir, confinement.user) + [python_view().python, "-I", "-B", WORKER_VIEW, str(rfd), str(wfd)]
    return [sys.executable, "-I", "-B", str(workdir.script), str(rfd), str(wfd)]
