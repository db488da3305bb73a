"""Part 2: conv_transpose2d against F.conv_transpose2d (values and gradients) and conv2d_matrix against F.conv2d /
F.conv_transpose2d."""
import pytest
import torch
import torch.nn.functional as F

from autograder.testing import assert_inputs_unchanged, assert_vectorized, fail

from .helpers import call, check_gradients, check_output

# (C_in, C_out, kernel, stride, padding, output_padding)
SETTINGS = [(3, 4, (3, 3), 1, 0, 0), (3, 4, (3, 3), 2, 1, 1), (2, 5, (2, 4), (2, 3), (0, 1), (1, 2)), (4, 2, (4, 4), 2, 1, 0),
            (1, 1, (1, 1), 1, 0, 0), (2, 3, (3, 2), 3, 2, 2), (3, 3, (5, 3), (1, 2), (2, 1), (0, 1)), (2, 2, (2, 2), 2, 0, 1)]


def tensors(c_in, c_out, kernel, seed, dtype=torch.float64, size=(5, 6), batch=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, c_in, *size, generator=g, dtype=dtype), torch.randn(c_in, c_out, *kernel, generator=g, dtype=dtype),
            torch.randn(c_out, generator=g, dtype=dtype))


def describe_call(x, w, stride, padding, output_padding, bias):
    return (f"conv_transpose2d(Tensor{list(x.shape)} {str(x.dtype)[6:]}, weight Tensor{list(w.shape)}, bias={'None' if bias is None else 'Tensor'}, "
            f"stride={stride}, padding={padding}, output_padding={output_padding})")


@pytest.mark.part("transposed_conv")
@pytest.mark.points(5)
def test_conv_transpose2d_matches_torch(student):
    """== F.conv_transpose2d for strides, paddings and output_paddings (ints and pairs), non-square kernels and inputs, with and without bias, float32 and float64"""
    for dtype in (torch.float64, torch.float32):
        for k, (c_in, c_out, kernel, stride, padding, out_pad) in enumerate(SETTINGS):
            x, w, b = tensors(c_in, c_out, kernel, k, dtype, size=(5, 6) if k % 2 else (4, 7))
            for bias in (None, b):
                check_output(call(student, "conv_transpose2d", x, w, bias, stride, padding, out_pad), F.conv_transpose2d(x, w, bias, stride, padding, out_pad),
                             describe_call(x, w, stride, padding, out_pad, bias))
    x, w, b = tensors(3, 2, (3, 3), 99, size=(1, 1), batch=1)  # one pixel: the kernel itself
    check_output(call(student, "conv_transpose2d", x, w), F.conv_transpose2d(x, w), "conv_transpose2d of a 1x1 input (the defaults)")
    one_d = call(student, "conv_transpose2d", torch.tensor([[[[2.0, 3.0]]]]), torch.tensor([[[[1.0, 10.0, 100.0]]]]), None, (1, 2))
    check_output(one_d, torch.tensor([[[[2.0, 20.0, 203.0, 30.0, 300.0]]]]), "the 1-D example: input (2, 3), kernel (1, 10, 100), stride 2")


@pytest.mark.part("transposed_conv")
@pytest.mark.points(4)
def test_conv_transpose2d_gradients(student):
    """gradients with respect to input, weight and bias (autograd) == F.conv_transpose2d's, float64"""
    for k, (c_in, c_out, kernel, stride, padding, out_pad) in enumerate(SETTINGS[:6]):
        x, w, b = tensors(c_in, c_out, kernel, 10 + k)
        check_gradients(student, "conv_transpose2d", [x, w, b, stride, padding, out_pad], [True, True, True, False, False, False],
                        lambda *a: F.conv_transpose2d(*a), describe_call(x, w, stride, padding, out_pad, b), grad_seed=k)


@pytest.mark.part("transposed_conv")
@pytest.mark.points(1)
def test_conv_transpose2d_is_vectorized_and_pure(student):
    """no Python loop over pixels (the same operations for a 4x5 and a 20x24 input); inputs unchanged"""
    x_small, w, b = tensors(2, 3, (3, 3), 20, size=(4, 5), batch=1)
    x_large, _, _ = tensors(2, 3, (3, 3), 21, size=(20, 24), batch=1)
    call(student, "conv_transpose2d", x_large, w, b, 2, 1, 1)  # no library kernel doing the job
    assert_vectorized(student, "conv_transpose2d", [x_small, w, b, 2, 1, 1], [x_large, w, b, 2, 1, 1], ("a 4x5 input", "a 20x24 input"),
                      hint="one matrix product for all pixels, F.fold to add the copies into place (a loop over the kernel taps is fine)")
    assert_inputs_unchanged(student, "conv_transpose2d", [x_large, w, b, 2, 1, 1], "conv_transpose2d")


MATRIX_SETTINGS = [(1, 1, (3, 3), (4, 4), 1, 0), (2, 3, (3, 2), (5, 6), 1, 0), (3, 2, (3, 3), (6, 5), 2, 1), (2, 2, (2, 4), (7, 4), (2, 1), (1, 2)),
                   (1, 4, (1, 1), (3, 5), 1, 0)]


@pytest.mark.part("transposed_conv")
@pytest.mark.points(5)
def test_conv2d_matrix(student):
    """C has shape [C_out*H_out*W_out, C_in*H*W] in weight's dtype; C @ vec(x) == F.conv2d(x); C.T @ vec(y) == F.conv_transpose2d(y) (the output_padding that restores H x W)"""
    for k, (c_out, c_in, kernel, size, stride, padding) in enumerate(MATRIX_SETTINGS):
        for dtype in (torch.float64, torch.float32):
            g = torch.Generator().manual_seed(30 + k)
            w = torch.randn(c_out, c_in, *kernel, generator=g, dtype=dtype)
            x = torch.randn(1, c_in, *size, generator=g, dtype=dtype)
            y = F.conv2d(x, w, stride=stride, padding=padding)
            what = f"conv2d_matrix(weight Tensor{list(w.shape)} {str(dtype)[6:]}, input_size={size}, stride={stride}, padding={padding})"
            C = call(student, "conv2d_matrix", w, size, stride, padding)
            if not isinstance(C, torch.Tensor) or tuple(C.shape) != (y.numel(), x.numel()):
                fail(f"{what}: expected a Tensor[{y.numel()}, {x.numel()}] (C_out*H_out*W_out, C_in*H*W), got "
                     f"{list(C.shape) if isinstance(C, torch.Tensor) else type(C).__name__}")
            check_output(C, C.new_zeros(C.shape).to(dtype) + C.to(dtype), what + " dtype")  # dtype and plain tensor
            tol = (1e-9, 1e-12) if dtype == torch.float64 else (1e-4, 1e-5)
            check_output(C @ x.reshape(-1), y.reshape(-1), what + ": C @ vec(x) must be vec(F.conv2d(x))", *tol)
            grad = torch.randn(y.shape, generator=g, dtype=dtype)
            plain = F.conv_transpose2d(grad, w, stride=stride, padding=padding)
            out_pad = [size[0] - plain.shape[-2], size[1] - plain.shape[-1]]
            transposed = F.conv_transpose2d(grad, w, stride=stride, padding=padding, output_padding=out_pad)
            check_output(C.t() @ grad.reshape(-1), transposed.reshape(-1), what + ": C.T @ vec(y) must be vec(F.conv_transpose2d(y))", *tol)
