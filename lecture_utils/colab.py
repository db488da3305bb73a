"""Setup-cell logic: after the notebook's first cell made sure lecture_utils is installed, say in one
line what it did and, in Colab, warn when the runtime has no GPU."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NO_GPU_WARNING = (
    "WARNING: this Colab runtime has no GPU; the training cells will be slow. "
    "Runtime > Change runtime type > Hardware accelerator: a GPU (e.g. T4) > Save, then run the notebook again from the top."
)


def in_colab() -> bool:
    """True when running inside Google Colab."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except ModuleNotFoundError:  # no `google` package at all
        return False


def _gpu_name() -> str | None:
    """The CUDA device's name, or None without one (imports torch: call it only in Colab)."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def setup(installed_from: str | None = None) -> str:
    """The one-line status the setup cell prints; in Colab without a GPU it also prints a warning.

    Args:
        installed_from: what the cell just pip-installed (its pip arguments), or None when
            lecture_utils was already importable and pip did not run.
    """
    import lecture_utils

    version = getattr(lecture_utils, "__version__", "?")
    where = Path(lecture_utils.__file__).parent
    if not in_colab():
        did = f"installed from {installed_from}" if installed_from else "already installed"
        return f"local: lecture_utils {version} {did} ({where})"
    did = f"installed lecture_utils {version} from {installed_from}" if installed_from else f"lecture_utils {version} already installed, nothing to do"
    gpu = _gpu_name()
    if gpu is None:
        print(NO_GPU_WARNING, file=sys.stderr)
        return f"Colab: {did}; no GPU (see the warning)"
    return f"Colab: {did}; GPU: {gpu}"
