"""How the worker process is confined.

Two layers, the strongest available is used and reported (``describe()``):

* **bubblewrap** (Debian package ``bubblewrap``): the worker runs in new mount, PID, network, IPC
  and UTS namespaces. Its filesystem view holds only the system libraries (``/usr``), the Python
  installation and virtual environment (read-only), ``lecture_utils`` (read-only), an empty ``/tmp``
  and its own working directory: ``solutions/``, the hidden tests, the grader's package and output
  files do not exist there. There is no network (only an unconfigured loopback). When the grader
  runs as root, the worker drops to ``nobody`` inside the sandbox (``setpriv``).
* **basic** (fallback when bubblewrap is missing or cannot create namespaces): a fresh temporary
  directory, ``nobody`` when that user can run the environment's Python, nothing else.

Both add a scrubbed environment, its own session / process group, and rlimits on CPU time,
address space, file size (which also bounds captured output), open files and processes.
"""
from __future__ import annotations

import os
import pwd
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("worker_main.py")
NOBODY_UID = 65534


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
    extra_processes: int = 64  # RLIMIT_NPROC = processes the worker's user has now + this
    threads: int = 1  # torch intra-op threads in the worker


def scrubbed_env(home: str, threads: int) -> dict[str, str]:
    """A minimal environment: nothing from the grader's (tokens, paths, proxies) leaks in."""
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
@dataclass(frozen=True)
class Confinement:
    mode: str  # "bubblewrap" | "basic"
    user: pwd.struct_passwd | None  # the account the worker runs as, None = the grader's own
    note: str = ""  # why a weaker mode was chosen


_CHOICE: dict[str, Confinement] = {}


def _nobody() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


def choose() -> Confinement:
    """The strongest confinement available here (cached for the process)."""
    if "choice" not in _CHOICE:
        requested = os.environ.get("GRADER_SANDBOX", "auto")
        if requested != "basic" and shutil.which("bwrap") and (os.geteuid() != 0 or shutil.which("setpriv")):
            _CHOICE["choice"] = Confinement("bubblewrap", _nobody())
        else:
            why = "GRADER_SANDBOX=basic" if requested == "basic" else "bubblewrap is not installed (apt-get install bubblewrap)"
            _CHOICE["choice"] = _basic(why)
    return _CHOICE["choice"]


def fall_back(reason: str) -> Confinement:
    """Called when a bubblewrap worker could not start: use the basic mode from now on."""
    _CHOICE["choice"] = _basic(f"bubblewrap could not start the worker ({reason})")
    return _CHOICE["choice"]


def _basic(note: str) -> Confinement:
    user = _nobody()
    if user is not None and not _can_run_python_as(user):
        user = None
        note += "; the Python environment is not readable by nobody, so the worker runs as root"
    return Confinement("basic", user, note)


def _can_run_python_as(user: pwd.struct_passwd) -> bool:
    try:
        probe = subprocess.run(
            [sys.executable, "-I", "-c", "import torch"],
            preexec_fn=make_preexec(Limits(), user, switch_user=True),
            cwd="/", env=scrubbed_env("/tmp", 1), capture_output=True, timeout=120,
        )
        return probe.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def describe() -> str:
    """One line on how the worker is confined here (for logs and the TA)."""
    c = choose()
    who = f"as user {c.user.pw_name}" if c.user else ("as root" if os.geteuid() == 0 else "as the current user")
    if c.mode == "bubblewrap":
        return f"worker sandbox: bubblewrap (own mount/PID/network namespaces, minimal read-only filesystem) {who}, rlimits, scrubbed environment"
    return f"worker sandbox: basic (temp dir, rlimits, scrubbed environment) {who} — {c.note}"


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


class WorkDir:
    """A fresh temporary directory holding a copy of the worker script, owned by the worker's user."""

    def __init__(self, user: pwd.struct_passwd | None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="grader-worker-"))
        shutil.copy(WORKER_SCRIPT, self.path / WORKER_SCRIPT.name)
        os.chmod(self.path, 0o700)
        if user is not None:
            for p in (self.path, self.path / WORKER_SCRIPT.name):
                os.chown(p, user.pw_uid, user.pw_gid)
        self.script = self.path / WORKER_SCRIPT.name
        self.stdout = self.path.parent / f"{self.path.name}.out"  # outside the worker's reach

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self.stdout.unlink(missing_ok=True)


def make_preexec(limits: Limits, user: pwd.struct_passwd | None, switch_user: bool):
    """Run in the child between fork and exec: rlimits, then (basic mode) the user switch."""
    uid = user.pw_uid if user is not None else os.getuid()
    nproc = _count_processes(uid) + limits.extra_processes

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_time_s, limits.cpu_time_s + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if switch_user and user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    return preexec


def _readonly_paths() -> list[Path]:
    """What the worker may read: the Python installation, the venv, and lecture_utils."""
    import lecture_utils

    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.prefix), Path(lecture_utils.__file__).resolve().parent}
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not any(purelib.is_relative_to(p) for p in paths):
        paths.add(purelib)
    return sorted(paths, key=lambda p: len(p.parts))


def _ancestors(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for p in paths:
        for parent in reversed(p.parents):
            if parent != Path("/") and parent not in seen:
                seen.append(parent)
    return seen


def bwrap_prefix(workdir: Path, user: pwd.struct_passwd | None) -> list[str]:
    args = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime"):
        args += ["--ro-bind-try", etc, etc]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    readonly = _readonly_paths()
    # bubblewrap creates missing parents 0700; the worker's user must be able to walk them
    for parent in _ancestors(readonly + [workdir]):
        # /tmp is the tmpfs mounted above (its sub-folders need creating); /usr, /proc, /dev exist already
        if str(parent) != "/tmp" and not str(parent).startswith(("/usr/", "/proc/", "/dev/")) and str(parent) not in ("/usr", "/proc", "/dev"):
            args += ["--perms", "0755", "--dir", str(parent)]
    for p in readonly:
        args += ["--ro-bind", str(p), str(p)]
    args += ["--bind", str(workdir), str(workdir), "--chdir", str(workdir)]
    if user is not None:  # root: drop to the unprivileged user inside the sandbox
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "setpriv", f"--reuid={user.pw_uid}",
                 f"--regid={user.pw_gid}", "--clear-groups", "--inh-caps=-all", "--no-new-privs", "--"]
    return args


def worker_command(confinement: Confinement, workdir: WorkDir, rfd: int, wfd: int) -> list[str]:
    # -I: ignore PYTHON* variables, user site and the script's neighbours; -B: no .pyc files.
    python = [sys.executable, "-I", "-B", str(workdir.script), str(rfd), str(wfd)]
    if confinement.mode == "bubblewrap":
        return bwrap_prefix(workdir.path, confinement.user) + python
    return python
