"""Part 1: sigmoid_focal_loss against torchvision.ops.sigmoid_focal_loss, values and gradients."""
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as reference_focal_loss

from .helpers import GRADED, call, check_output, student_vjp
from autograder.client import StudentError
from autograder.testing import assert_inputs_unchanged, describe, fail, numerical_gradcheck

REDUCTIONS = ("none", "mean", "sum")


def logits_and_targets(shape, generator, dtype=torch.float32, scale=3.0, positive_rate=0.3):
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    y = (torch.rand(shape, generator=generator) < positive_rate).to(torch.float64)
    return x.to(dtype), y.to(dtype)


def describe_case(x, alpha, gamma, reduction):
    return f"sigmoid_focal_loss(Tensor{list(x.shape)} {str(x.dtype)[6:]}, alpha={alpha}, gamma={gamma}, reduction={reduction!r})"


@pytest.mark.part("focal_loss")
@pytest.mark.points(5)
def test_focal_loss_matches_torchvision(student):
    """== torchvision for every reduction, several alphas and gammas, float32 and float64, shapes [N, C] and [B, N, C], no elements"""
    g = torch.Generator().manual_seed(0)
    settings = [(0.25, 2), (0.5, 1), (0.9, 0.5), (0.0, 3), (1.0, 1.5), (0.25, 2.0)]
    for dtype in (torch.float32, torch.float64):
        for shape in ((40, 3), (2, 17, 5)):
            x, y = logits_and_targets(shape, g, dtype)
            for alpha, gamma in settings:
                for reduction in REDUCTIONS:
                    got = call(student, "sigmoid_focal_loss", x, y, alpha, gamma, reduction)
                    check_output(got, reference_focal_loss(x, y, alpha, gamma, reduction), describe_case(x, alpha, gamma, reduction))
    x, y = logits_and_targets((300, 4), g, positive_rate=0.02)  # mostly negatives, the detector's case
    check_output(call(student, "sigmoid_focal_loss", x, y), reference_focal_loss(x, y), "sigmoid_focal_loss with the defaults (alpha=0.25, gamma=2, 'none')")
    for reduction in ("none", "sum"):
        empty = torch.zeros(0, 3)
        check_output(call(student, "sigmoid_focal_loss", empty, empty, 0.25, 2, reduction), reference_focal_loss(empty, empty, 0.25, 2, reduction),
                     f"sigmoid_focal_loss without elements (reduction={reduction!r})")


@pytest.mark.part("focal_loss")
@pytest.mark.points(2)
def test_focal_loss_alpha_off_and_gamma_zero(student):
    """alpha=-1 switches the class weighting off; gamma=0 is the binary cross-entropy (times alpha_t); another reduction, or an alpha outside [0, 1] other than -1, raises ValueError"""
    g = torch.Generator().manual_seed(1)
    x, y = logits_and_targets((25, 6), g, torch.float64)
    for gamma in (2, 1.5, 0):
        for reduction in REDUCTIONS:
            check_output(call(student, "sigmoid_focal_loss", x, y, -1, gamma, reduction), reference_focal_loss(x, y, -1, gamma, reduction),
                         describe_case(x, -1, gamma, reduction) + " (alpha -1: no weighting)")
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    check_output(call(student, "sigmoid_focal_loss", x, y, -1, 0, "none"), bce, "sigmoid_focal_loss(alpha=-1, gamma=0) must be the binary cross-entropy")
    weight = 0.3 * y + 0.7 * (1 - y)
    check_output(call(student, "sigmoid_focal_loss", x, y, 0.3, 0, "sum"), (weight * bce).sum(),
                 "sigmoid_focal_loss(alpha=0.3, gamma=0, 'sum') must be the sum of alpha_t * binary cross-entropy")
    # torchvision raises ValueError for another reduction (silently reducing otherwise hides a typo) and for an alpha
    # outside [0, 1] other than -1
    for alpha, wrong in ((0.25, "meen"), (0.25, "Sum"), (0.25, "batchmean"), (-0.5, "sum"), (1.5, "none"), (-2, "mean")):
        setting = f"reduction={wrong!r}" if alpha == 0.25 else f"alpha={alpha}"
        try:
            got = call(student, "sigmoid_focal_loss", x, y, alpha, 2, wrong)
        except StudentError as exc:
            if not str(exc).startswith("ValueError"):
                fail(f"sigmoid_focal_loss(..., {setting}) must raise ValueError like torchvision, it raised {str(exc).splitlines()[0][:120]}")
        else:
            fail(f"sigmoid_focal_loss(..., {setting}) must raise ValueError like torchvision, it returned {describe(got)}")


@pytest.mark.part("focal_loss")
@pytest.mark.points(3)
def test_focal_loss_extreme_logits(student):
    """logits up to +-100 (and +-1e4) with both targets: finite losses and gradients equal to torchvision's, float32 and float64"""
    big = torch.tensor([-1e4, -100.0, -90.0, -50.0, -20.0, -5.0, 0.0, 5.0, 20.0, 50.0, 90.0, 100.0, 1e4])
    for dtype in (torch.float32, torch.float64):
        x = big.repeat(2).to(dtype)
        y = torch.cat([torch.zeros(len(big)), torch.ones(len(big))]).to(dtype)
        for alpha, gamma in ((0.25, 2), (-1, 0), (0.5, 1)):
            for reduction in ("none", "sum"):
                what = describe_case(x, alpha, gamma, reduction) + " at logits up to +-100"
                want_x = x.clone().requires_grad_()
                want = reference_focal_loss(want_x, y, alpha, gamma, reduction)
                grad_out = torch.ones_like(want)
                (want_grad,) = torch.autograd.grad(want, want_x, grad_out)
                out, grads = student_vjp(student, "sigmoid_focal_loss", [x, y, alpha, gamma, reduction], grad_out, [True, False, False, False, False])
                if isinstance(out, torch.Tensor) and not bool(torch.isfinite(out).all()):
                    fail(f"{what}: the loss is not finite ({out.flatten().tolist()[:8]}...): take the cross-entropy from the logits "
                         "(F.binary_cross_entropy_with_logits), never log(sigmoid(x))")
                check_output(out, want.detach(), what, rtol=1e-5, atol=1e-5)
                if grads[0] is None:
                    fail(f"{what}: no gradient reaches the logits")
                if not bool(torch.isfinite(grads[0]).all()):
                    fail(f"{what}: the gradient is not finite: {grads[0].tolist()}")
                check_output(grads[0], want_grad, f"gradient of {what}", rtol=1e-5, atol=1e-6)


@pytest.mark.part("focal_loss")
@pytest.mark.points(4)
def test_focal_loss_gradients(student):
    """the gradient with respect to the logits (autograd) == torchvision's for every reduction, float32 and float64; float64 gradcheck"""
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.float64):
        x, y = logits_and_targets((12, 5), g, dtype)
        for alpha, gamma in ((0.25, 2), (0.75, 1), (-1, 3), (0.25, 0)):
            for reduction in REDUCTIONS:
                GRADED.check_gradients(student, "sigmoid_focal_loss", [x, y, alpha, gamma, reduction], [True, False, False, False, False],
                                       reference_focal_loss, describe_case(x, alpha, gamma, reduction), g)
    x, y = logits_and_targets((2, 3), g, torch.float64, scale=2.0)
    for reduction in ("none", "mean"):
        numerical_gradcheck(
            lambda logits: call(student, "sigmoid_focal_loss", logits, y, 0.25, 2, reduction),
            lambda inputs, g_out: student_vjp(student, "sigmoid_focal_loss", [inputs[0], y, 0.25, 2, reduction], g_out, [True] + [False] * 4)[1],
            [x], [0], f"sigmoid_focal_loss (reduction={reduction!r})")


@pytest.mark.part("focal_loss")
@pytest.mark.points(1)
def test_focal_loss_leaves_inputs_unchanged(student):
    """the logits and targets are not modified in place; the result is a new tensor"""
    g = torch.Generator().manual_seed(3)
    x, y = logits_and_targets((10, 4), g)
    check_output(call(student, "sigmoid_focal_loss", x, y, 0.25, 2, "mean"), reference_focal_loss(x, y, 0.25, 2, "mean"), "sigmoid_focal_loss(reduction='mean')")
    for reduction in REDUCTIONS:
        assert_inputs_unchanged(student, "sigmoid_focal_loss", [x, y, 0.25, 2, reduction], f"sigmoid_focal_loss(reduction={reduction!r})")
    assert_inputs_unchanged(student, "sigmoid_focal_loss", [x, y, -1, 0, "none"], "sigmoid_focal_loss(alpha=-1, gamma=0)")
