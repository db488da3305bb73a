"""Checks of what the student's code returned, one policy for every assignment (trusted process)."""
from __future__ import annotations

import torch

from autograder.testing import assert_remote_module, assert_tensor, describe, fail
from lecture_utils.data import CLASSES

# (rtol, atol) by the expected value's dtype. float32: an allowed alternative may sum in another order (errors
# near 1e-6 on values of order one); a wrong formula is off by orders more. float64 leaves room for nothing but
# rounding. Half precision: what torchvision's own tests allow.
TOLERANCES = {torch.float64: (1e-9, 1e-10), torch.float32: (1e-5, 2e-5), torch.float16: (1e-3, 1e-3), torch.bfloat16: (1.6e-2, 1e-2)}


def check_output(got, expected: torch.Tensor, what: str, rtol: float | None = None, atol: float | None = None, check_dtype: bool = True) -> None:
    """``got`` must be a Tensor of ``expected``'s shape (and dtype), close in value (``TOLERANCES`` unless given)."""
    default_rtol, default_atol = TOLERANCES.get(expected.dtype, (0.0, 0.0))
    rtol, atol = default_rtol if rtol is None else rtol, default_atol if atol is None else atol
    if not isinstance(got, torch.Tensor):
        fail(f"{what}: expected a Tensor{list(expected.shape)}, got {describe(got)}")
    assert_tensor(got, expected, what, rtol=rtol, atol=atol, check_dtype=check_dtype)


def build_model(student, class_name: str):
    """``student.<class_name>(len(CLASSES))`` made in the worker with torch's seed 0, checked to be an nn.Module."""
    torch.manual_seed(0)
    model = getattr(student, class_name)(len(CLASSES))
    assert_remote_module(student, model, f"{class_name}({len(CLASSES)})")
    return model
