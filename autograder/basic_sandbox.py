"""The basic sandbox (opt-in, ``--allow-basic-sandbox``): for machines where bubblewrap cannot run.

It never runs students' code as root (as root, the worker is ``nobody``), and the worker cannot
read or write what the grader protects: ``solutions/``, the grader package with its hidden tests,
the git history, the bundles, the course secret, and the results and logs of other submissions.
Where the kernel has Landlock, the worker confines itself to the system libraries, the Python
environment and ``lecture_utils`` (read) and its own temporary directory (write); elsewhere only
file permissions stand between it and the grader's files.

Either way the protection is *proven* before any student code runs: a probe started exactly like
the worker (same user, same Landlock rules, same limits) tries to read and write each protected
path. If it can, or if it cannot run Python, grading is refused with the fix (``SandboxUnavailable``).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from pathlib import Path

from autograder import landlock
from autograder.assignments import COURSE_ROOT, PACKAGE_DIR
from autograder.sandbox import Confinement, Limits, SandboxUnavailable, WorkDir, _nobody, make_preexec, scrubbed_env

PROTECT_ENV = "GRADER_PROTECT"  # more paths to protect, os.pathsep-separated (the CLI adds --out's and the batch's folders)
SYSTEM_READ = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
               "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime", "/dev", "/proc/cpuinfo", "/proc/self",
               "/sys/devices/system/cpu", "/sys/fs/cgroup")

_PROBE = r"""
import json, os, sys
spec, report = json.loads(sys.argv[1]), {"imports": None, "read": [], "write": [], "uid": os.getuid()}
try:
    import torch, lecture_utils  # what the worker imports
except BaseException as exc:
    report["imports"] = f"{type(exc).__name__}: {exc}"
for path in spec["read"]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as f:
                f.read(1)
        report["read"].append(path)
    except OSError:
        pass
for folder in spec["write"]:
    name = os.path.join(folder, f".grader-probe-{os.getpid()}")
    try:
        os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        report["write"].append(folder)
        os.unlink(name)
    except OSError:
        pass
print(json.dumps(report))
"""


def protected_roots() -> list[Path]:
    """What the worker must neither read nor write (those that exist here)."""
    from autograder.secret import secret_file

    roots = [COURSE_ROOT / "solutions", PACKAGE_DIR, COURSE_ROOT / ".git", COURSE_ROOT / "dist", secret_file()]
    roots += [Path(p) for p in os.environ.get(PROTECT_ENV, "").split(os.pathsep) if p]
    return [r.resolve() for r in roots if r.exists()]


def protect(*paths: Path | str) -> None:
    """Add ``paths`` (an output folder, the batch's results) to what the basic sandbox must keep from the worker."""
    known = [p for p in os.environ.get(PROTECT_ENV, "").split(os.pathsep) if p]
    os.environ[PROTECT_ENV] = os.pathsep.join(dict.fromkeys([*known, *(str(Path(p).resolve()) for p in paths)]))


def _sample_files(root: Path, per_dir: int = 2, limit: int = 60) -> list[str]:
    """``root`` and a few files of each of its folders: what a submission would try to open by name."""
    if root.is_file():
        return [str(root)]
    found = [str(root)]
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files)[:per_dir]]
        if len(found) >= limit:
            break
    return found[:limit]


def worker_rules(workdir: Path | str) -> tuple[list[str], list[str]]:
    """Landlock rules of a basic worker: (read and execute below, also write below)."""
    import lecture_utils

    paths = sysconfig.get_paths()
    candidates = [*SYSTEM_READ, sys.base_prefix, sys.prefix, paths["stdlib"], paths["purelib"], paths["platlib"],
                  str(Path(sys.executable).resolve()), str(Path(lecture_utils.__file__).resolve().parent)]
    protected = protected_roots()
    read = []
    for c in dict.fromkeys(os.path.realpath(p) for p in candidates):
        # A read rule that covers something protected (the Python environment inside the checkout's root, say) is left out.
        if not any(Path(prot) == Path(c) or Path(prot).is_relative_to(c) for prot in protected):
            read.append(c)
    return read, [str(workdir), "/dev/null"]


def confine_fn(confinement: Confinement, workdir: Path | str) -> Callable[[], None] | None:
    """What the worker's preexec runs to confine itself (Landlock), or None where Landlock is not available."""
    if confinement.mode != "basic" or not confinement.landlock_abi:
        return None
    read, write = worker_rules(workdir)
    abi = confinement.landlock_abi
    return lambda: landlock.restrict(read, write, abi)


def confinement(note: str) -> Confinement:
    """The basic sandbox, once the probe showed that it protects the grader here; SandboxUnavailable otherwise."""
    user = _nobody()
    if os.geteuid() == 0 and user is None:
        raise SandboxUnavailable("grading refused: the basic sandbox never runs students' code as root, and there is no user "
                                 "`nobody` to run it as. Fix: `useradd --system --no-create-home nobody`, or install bubblewrap.")
    abi = landlock.abi_version()
    if os.geteuid() != 0 and not abi:
        raise SandboxUnavailable("grading refused: without bubblewrap and not root, the basic sandbox would run students' code as "
                                 "your own user, who can read the solutions; this kernel has no Landlock (Linux >= 5.13) to "
                                 "prevent it. Fix: `sudo apt-get install bubblewrap`, or grade as root.")
    chosen = Confinement("basic", user, note, abi)
    problems = _probe(chosen)
    if problems:
        raise SandboxUnavailable("grading refused: the basic sandbox cannot protect the grader here, so no student code runs.\n"
                                 + "\n".join(f"  - {p}" for p in problems)
                                 + "\n  fix: install bubblewrap (`apt-get install bubblewrap`), which needs none of this.")
    return chosen


def _probe(chosen: Confinement) -> list[str]:
    """Start a probe exactly like a basic worker; what it could do that it must not (empty: protected)."""
    roots = protected_roots()
    readable = [f for r in roots for f in _sample_files(r)]
    host_tmp = Path(tempfile.gettempdir()).resolve()
    shared = [Path(p) for p in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(p)]  # where anyone may write, on most hosts
    writable = [str(p) for p in dict.fromkeys([COURSE_ROOT, *[r if r.is_dir() else r.parent for r in roots], host_tmp, *shared])]
    workdir = WorkDir(chosen.user)
    who = chosen.user.pw_name if chosen.user else "your user"
    try:
        run = subprocess.run(
            [sys.executable, "-I", "-B", "-c", _PROBE, json.dumps({"read": readable, "write": writable})],
            preexec_fn=make_preexec(Limits(), chosen.user, switch_user=True, workdir=None, confine=confine_fn(chosen, workdir.path)),
            cwd=workdir.path, env=scrubbed_env(str(workdir.path), 1), capture_output=True, text=True, timeout=180,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"Python cannot run as {who} ({exc}): {_unreachable(chosen)}"]
    finally:
        workdir.cleanup()
    try:
        report = json.loads(run.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = " ".join(run.stderr.split())[-300:]
        return [f"Python cannot run as {who} ({tail or f'exit status {run.returncode}'}): {_unreachable(chosen)}"]
    problems = []
    if report["uid"] == 0:
        problems.append("the probe ran as root")
    if report["imports"]:
        problems.append(f"as {who}, the worker cannot import torch and lecture_utils ({report['imports'][:200]}): {_unreachable(chosen)}")
    for root in roots:  # one line per protected folder, however many of its files were readable
        if any(Path(path) == root or Path(path).is_relative_to(root) for path in report["read"]):
            problems.append(f"{who} can read {root} (`chmod -R o-rwx {root}`)")
    for path in report["write"]:
        problems.append(f"{who} can write into {path}")
    return problems


def _unreachable(chosen: Confinement) -> str:
    """Which folder on the way to the Python environment the worker's user cannot search, with the fix."""
    if chosen.user is None:
        return "check the Python environment's permissions"
    for target in (Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()):
        for folder in [*reversed(target.parents), target]:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                return (f"{folder} is not searchable by others, so {chosen.user.pw_name} cannot reach {target}; "
                        f"use a Python environment outside it, or `chmod o+x {folder}`")
    return "check the Python environment's permissions"
