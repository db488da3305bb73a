"""Run a command on this machine as if bubblewrap were not installed: a private mount namespace (``unshare``, root).

Inside it, ``bwrap`` is covered by ``/dev/null`` (so it is not an executable any more), and every folder on the way
to the Python environment and the checkout that others cannot search (``/root`` holding pyenv, say) is replaced by a
searchable tmpfs that holds only what grading needs, so the basic sandbox's ``nobody`` can start Python. Nothing of
this is visible outside the command.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def available() -> str | None:
    """None when commands can be run this way here, else why not (a skip reason)."""
    if os.geteuid() != 0:
        return "needs root (a private mount namespace)"
    if shutil.which("unshare") is None:
        return "needs unshare (util-linux)"
    return None


def _needed() -> list[Path]:
    return [Path(p).resolve() for p in (sys.base_prefix, sys.prefix, ROOT)]


def _setup_script() -> str:
    """Shell commands (run inside the namespace) that hide bwrap and open the way to the needed folders."""
    # The original folders stay reachable below a tmpfs of the namespace's own (nothing is created on the host's disk).
    lines = ["set -e", "keep=/mnt", "mkdir -p $keep", "mount -t tmpfs -o mode=0700 tmpfs $keep"]
    blocked: dict[Path, set[str]] = {}
    for target in _needed():
        for folder in [*reversed(target.parents), target]:
            if folder != target and not folder.stat().st_mode & 0o001:
                blocked.setdefault(folder, set()).add(target.relative_to(folder).parts[0])
                break
    for i, (folder, children) in enumerate(sorted(blocked.items())):
        q = shlex.quote(str(folder))
        lines += [f"mkdir $keep/{i}", f"mount --bind {q} $keep/{i}", f"mount -t tmpfs -o mode=0755 tmpfs {q}"]
        for child in sorted(children):
            c = shlex.quote(child)
            lines += [f"if [ -d $keep/{i}/{c} ]; then mkdir {q}/{c}; else touch {q}/{c}; fi", f"mount --bind $keep/{i}/{c} {q}/{c}"]
    bwrap = shutil.which("bwrap")
    if bwrap:
        lines.append(f"mount --bind /dev/null {shlex.quote(bwrap)}")
    return "\n".join(lines)


def command(argv: list[str]) -> list[str]:
    """``argv`` run in a private mount namespace where bubblewrap is hidden and the basic sandbox can run."""
    return ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", _setup_script() + '\nexec "$@"', "hidden-bwrap", *argv]
