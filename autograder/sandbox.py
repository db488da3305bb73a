"""How the worker process is confined: environment, working directory, resource limits, user.

This is the basic layer (issue: foundation). ``Limits`` holds every number in one place so the
hardened sandbox (namespaces, filesystem view) can build on the same interface.
"""
from __future__ import annotations

import os
import pwd
import resource
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORKER_SCRIPT = Path(__file__).with_name("worker_main.py")


@dataclass(frozen=True)
class Limits:
    call_timeout_s: float = 60.0  # wall clock per request
    load_timeout_s: float = 30.0  # wall clock to execute the notebook's cells
    cpu_time_s: int = 600  # RLIMIT_CPU for the whole worker lifetime
    memory_bytes: int = 6 * 2**30  # RLIMIT_AS
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


def unprivileged_user() -> pwd.struct_passwd | None:
    """The account to drop to when the grader runs as root (``nobody``), else None."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


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
        self.stdout = self.path / "stdout.txt"

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make_preexec(limits: Limits, user: pwd.struct_passwd | None):
    """The function run in the child between fork and exec: limits first, then the user drop."""
    uid = user.pw_uid if user is not None else os.getuid()
    nproc = _count_processes(uid) + limits.extra_processes

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_time_s, limits.cpu_time_s + 5))
        resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if user is not None:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)

    return preexec


def worker_command(script: Path, rfd: int, wfd: int) -> list[str]:
    # -I: ignore PYTHON* variables, user site and the script's neighbours; -B: no .pyc files.
    return [sys.executable, "-I", "-B", str(script), str(rfd), str(wfd)]


_USER_PROBE: dict[str, pwd.struct_passwd | None] = {}


def usable_unprivileged_user() -> pwd.struct_passwd | None:
    """``nobody`` if we are root and that user can run the environment's Python with torch.

    Probed once per process: a checkout under a private home directory is not readable by
    ``nobody``, and then the worker runs as the current user (reported by ``describe``).
    """
    if "user" not in _USER_PROBE:
        user = unprivileged_user()
        if user is not None:
            import subprocess

            try:
                probe = subprocess.run(
                    [sys.executable, "-I", "-c", "import torch"],
                    preexec_fn=make_preexec(Limits(), user),
                    cwd="/",
                    env=scrubbed_env("/tmp", 1),
                    capture_output=True,
                    timeout=120,
                )
                if probe.returncode != 0:
                    user = None
            except (OSError, subprocess.SubprocessError):
                user = None
        _USER_PROBE["user"] = user
    return _USER_PROBE["user"]


def describe() -> str:
    """One line on how the worker is confined here (for logs and the TA)."""
    user = usable_unprivileged_user()
    who = f"as user {user.pw_name}" if user else ("as root (could not drop privileges)" if os.geteuid() == 0 else "as the current user")
    return f"worker runs {who} in a fresh temp dir with a scrubbed environment and rlimits (CPU, memory, file size, processes, files)"
