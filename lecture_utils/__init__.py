"""Student-facing helpers for *Deep Learning for Computer Vision, Part 3*.

Nothing in this package solves a graded task: it picks devices, seeds, trains
generic models, draws figures and packages a notebook for submission.
"""
from lecture_utils.device import get_device, seed_everything
from lecture_utils.colab import in_colab, setup

__all__ = ["get_device", "seed_everything", "in_colab", "setup"]
__version__ = "0.1.0"
