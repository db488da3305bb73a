"""Shared checks of the a5 hidden tests.

Every call of a graded function goes through ``call`` (or ``student_vjp`` for gradients, ``kit.calls``): the worker
watches the library functions and kernels that would do the function's job (``forbidden.toml``, as the notebook
lists them)."""
import torch

from autograder.hidden_tests.kit.calls import GradedCalls
from autograder.hidden_tests.kit.checks import check_output  # noqa: F401 - the part tests import it from here

GRADED = GradedCalls("a5_segmentation")
call, student_vjp = GRADED.call, GRADED.vjp


def check_gradients(student, name, inputs, needs_grad, reference, what, grad_seed=0):
    """``GRADED.check_gradients`` with the output gradient drawn from ``grad_seed``."""
    GRADED.check_gradients(student, name, inputs, needs_grad, reference, what, torch.Generator().manual_seed(grad_seed))
