"""Setup-cell logic: install the course helpers in Colab, check them elsewhere."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from lecture_utils.config import PIP_INSTALL_TARGET


def in_colab() -> bool:
    """True when running inside Google Colab."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def setup(quiet: bool = True) -> str:
    """What the first cell of every assignment does; returns a one-line status.

    In Colab, pip-installs ``lecture_utils`` from the course repository (see
    ``lecture_utils.config``). Elsewhere it only checks that the package is
    importable and tells the student how to install it if not.
    """
    if in_colab():
        cmd = [sys.executable, "-m", "pip", "install", PIP_INSTALL_TARGET]
        if quiet:
            cmd.insert(4, "-q")
        subprocess.run(cmd, check=True)
        return f"Colab: installed lecture_utils from {PIP_INSTALL_TARGET}"
    if importlib.util.find_spec("lecture_utils") is None:  # pragma: no cover - we are inside it
        raise ImportError("lecture_utils is not installed: run `make course` (or `pip install -e .`) in the course repository")
    return "local: lecture_utils is importable"
