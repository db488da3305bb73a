# ---
# jupyter:
#   course:
#     assignment: a1_pytorch
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Assignment 1 — PyTorch from the inside (Lecture 12)
#
# In this assignment you build, by hand, the pieces that a deep learning framework gives you:
#
# 1. **Manual backpropagation** of a two-layer ReLU network (no autograd).
# 2. **Custom autograd functions**: `Sigmoid`, `LinearFunction`, `SmoothL1Function`.
# 3. **Modules**: `TwoLayerNet`, `ParallelBlock`, `build_parallel_model`.
# 4. **Optimizers**: `SGDMomentum` and `Adam`, equal to `torch.optim.SGD` / `torch.optim.Adam`.
# 5. **Training and data**: `train_model` and `detection_collate`.
# 6. **Static graphs**: `capture_graph`, which turns a model into an FX graph with `torch.export`.
#
# Write your code only between the lines `# YOUR CODE HERE` and the end of the function, replacing
# `raise NotImplementedError()`. Do not rename functions, change their signatures or delete cells:
# the autograder calls them by name. Small **visible checks** after each part tell you whether
# you are on the right track; the graded tests are more thorough (other shapes, dtypes, edge cases).
#
# **Writing these functions is the exercise.** Where a part says that a library function is *not
# allowed* (autograd in the manual backward pass, `torch.optim` inside your optimizers, ...), the
# grader detects the call — however you reach it: an alias, a reference saved earlier, another thread —
# and gives no points for that function. Unless a function's description says otherwise, it returns
# new tensors and never modifies its arguments in place.
#
# The notebook runs on a CPU in a few minutes; in Colab, any runtime works.

# %% tags=["setup"]
# Setup: installs the course helpers (lecture_utils) in Colab, once. Generated from lecture_utils/config.py.
import importlib, importlib.util, os, subprocess, sys

COURSE_PIP = "git+https://github.com/dl4cv-course/dl4cv-part3@main"
installed_from = None
if importlib.util.find_spec("lecture_utils") is None:
    if "google.colab" not in sys.modules and "DL4CV_PIP_INSTALL" not in os.environ:
        raise ModuleNotFoundError(f"lecture_utils is not installed in this Python: run `pip install {COURSE_PIP}`, then restart the kernel")
    pip_args = os.environ.get("DL4CV_PIP_INSTALL", COURSE_PIP).split()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *pip_args], check=True)
    importlib.invalidate_caches()
    installed_from = " ".join(pip_args)
import lecture_utils.colab

print(lecture_utils.colab.setup(installed_from))

# %% nbgrader={"grade": false, "grade_id": "imports", "locked": true, "schema_version": 3, "solution": false} tags=["preamble"]
# Imports used by your code. The autograder runs this cell (as released) before your graded cells.
import math
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from lecture_utils import get_device, seed_everything

device = get_device()
seed_everything(0)
print("running on", device)

# %% [markdown]
# ## Part 1 — Backpropagation by hand (15 points)
#
# The network of the lecture maps $x \in \mathbb{R}^{N \times D_{in}}$ to
# $\hat y = \mathrm{ReLU}(x W_1) W_2$ and is trained on the summed squared error
# $L = \sum_{n,k} (\hat y_{nk} - y_{nk})^2$. With $h = x W_1$ and $a = \mathrm{ReLU}(h)$ the chain rule gives
#
# $$\frac{\partial L}{\partial \hat y} = 2(\hat y - y), \qquad
#   \frac{\partial L}{\partial W_2} = a^\top \frac{\partial L}{\partial \hat y}, \qquad
#   \frac{\partial L}{\partial h} = \Big(\frac{\partial L}{\partial \hat y} W_2^\top\Big) \odot \mathbb{1}[h > 0], \qquad
#   \frac{\partial L}{\partial W_1} = x^\top \frac{\partial L}{\partial h}.$$
#
# Implement one gradient-descent step **without autograd**.
#
# * **Not allowed:** autograd in any form — `loss.backward()`, `torch.autograd.grad` / `torch.autograd.backward`,
#   `torch.autograd.functional`, `torch.func` (`grad`, `vjp`, `jvp`, ...), forward-mode AD. Tensor operations only.
# * Return the loss at the *current* weights (a scalar tensor) and the *new* weights as **new tensors**:
#   `x`, `y`, `w1` and `w2` must not change (no `w1 -= ...`, no `w1.sub_(...)`), also when `lr = 0`.
# * The result has the dtype of the inputs (float32 in, float32 out).

# %% nbgrader={"grade": false, "grade_id": "manual_step", "locked": false, "schema_version": 3, "solution": true}
def manual_two_layer_step(x: torch.Tensor, y: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, lr: float):
    """One SGD step of y_pred = relu(x @ w1) @ w2 on loss = ((y_pred - y) ** 2).sum(), by hand.

    Args:
        x: Tensor[N, D_in]; y: Tensor[N, D_out]; w1: Tensor[D_in, H]; w2: Tensor[H, D_out]; lr: step size.
    Returns:
        (loss, new_w1, new_w2): loss a scalar Tensor at the current weights, new weights w - lr * grad.
    """
    ### BEGIN SOLUTION
    pre_act = x.mm(w1)
    hidden = pre_act.clamp(min=0)
    residual = hidden.mm(w2) - y
    loss = residual.pow(2).sum()
    grad_out = 2.0 * residual
    grad_w2 = hidden.t().mm(grad_out)
    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)
    grad_w1 = x.t().mm(grad_pre)
    return loss, w1 - lr * grad_w1, w2 - lr * grad_w2
    ### END SOLUTION


# %% tags=["check"]
# A helper for the visible checks of this notebook: inside `with _forbid("torch.autograd.grad", ...)` the
# named library functions raise an error, so a check can tell you that your code calls one of them.
# (Only direct calls are caught here; the graded tests catch every way of calling them.)
import contextlib
from unittest import mock


@contextlib.contextmanager
def _forbid(*names):
    with contextlib.ExitStack() as stack:
        for name in names:
            def _refuse(*args, _name=name, **kwargs):
                raise AssertionError(f"{_name} is not allowed here: writing this part yourself is the exercise")
            stack.enter_context(mock.patch(name, _refuse))
        yield


# Visible check: your gradients against autograd's on a small random problem; no autograd inside
# your step, and w1, w2 left as they were.
_g = torch.Generator().manual_seed(1)
_x, _y = torch.randn(8, 5, generator=_g, dtype=torch.float64), torch.randn(8, 3, generator=_g, dtype=torch.float64)
_w1, _w2 = torch.randn(5, 4, generator=_g, dtype=torch.float64), torch.randn(4, 3, generator=_g, dtype=torch.float64)
_w1_before, _w2_before = _w1.clone(), _w2.clone()
with _forbid("torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad", "torch.func.grad", "torch.func.vjp"):
    _loss, _nw1, _nw2 = manual_two_layer_step(_x, _y, _w1, _w2, 0.01)
assert torch.equal(_w1, _w1_before) and torch.equal(_w2, _w2_before), "manual_two_layer_step must not modify w1 or w2 in place: return new tensors"
_a1, _a2 = _w1.clone().requires_grad_(), _w2.clone().requires_grad_()
_ref = (_x.mm(_a1).clamp(min=0).mm(_a2) - _y).pow(2).sum()
_ref.backward()
assert torch.allclose(_loss, _ref.detach()), f"loss {float(_loss):.6f} differs from {float(_ref):.6f}"
assert torch.allclose(_nw1, _w1 - 0.01 * _a1.grad), "new w1 is wrong: check grad_w1 (ReLU mask? transposes?)"
assert torch.allclose(_nw2, _w2 - 0.01 * _a2.grad), "new w2 is wrong: check grad_w2"
print("manual backprop matches autograd ✓")

# %% [markdown]
# Train the lecture's network for a few hundred steps with your function and plot the loss.
# Note the tiny learning rate: the loss is a *sum* over all elements, so gradients are large.

# %%
seed_everything(0)
N, D_in, H, D_out = 64, 1000, 100, 10
x, y = torch.randn(N, D_in), torch.randn(N, D_out)
w1, w2 = torch.randn(D_in, H), torch.randn(H, D_out)
manual_losses = []
for t in range(300):
    loss, w1, w2 = manual_two_layer_step(x, y, w1, w2, 1e-6)
    manual_losses.append(float(loss))

from lecture_utils.viz import plot_losses

plot_losses({"manual backprop": manual_losses}, title="two-layer net, summed squared error");

# %% [markdown]
# ## Part 2 — Custom autograd functions (28 points)
#
# A `torch.autograd.Function` defines an operation together with its derivative. `forward(ctx, ...)`
# computes the output and stores what backward needs with `ctx.save_for_backward(...)`;
# `backward(ctx, grad_output)` returns one gradient per input of `forward` (`None` for inputs
# that need none — `ctx.needs_input_grad[i]` tells you which ones do).
#
# **2a. Sigmoid.** $\sigma(x) = 1 / (1 + e^{-x})$ and $\sigma'(x) = \sigma(x)(1 - \sigma(x))$: save the
# *output*, not the input. `sigmoid(x)` applies your Function.

# %% nbgrader={"grade": false, "grade_id": "sigmoid", "locked": false, "schema_version": 3, "solution": true}
class Sigmoid(torch.autograd.Function):
    """Elementwise logistic sigmoid with a hand-written backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        out = 1.0 / (1.0 + torch.exp(-x))
        ctx.save_for_backward(out)
        return out
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        ### BEGIN SOLUTION
        (out,) = ctx.saved_tensors
        return grad_output * out * (1.0 - out)
        ### END SOLUTION


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Apply the Sigmoid Function to x (any shape)."""
    ### BEGIN SOLUTION
    return Sigmoid.apply(x)
    ### END SOLUTION


# %% [markdown]
# **2b. Linear.** `LinearFunction.apply(x, weight, bias=None)` computes $x W^\top + b$ exactly like
# `F.linear`: `weight` is `(out_features, in_features)`, `x` has any number of leading dimensions
# `(*, in_features)`, `bias` is `(out_features,)` or `None`. In `backward`, compute a gradient only when
# `ctx.needs_input_grad` asks for it and return `None` otherwise.
#
# **2c. Smooth L1.** `SmoothL1Function.apply(input, target, beta=1.0)` is the elementwise loss of
# `F.smooth_l1_loss(input, target, reduction="none", beta=beta)`:
# $\ell(d) = \tfrac{1}{2} d^2/\beta$ if $|d| < \beta$ else $|d| - \tfrac{1}{2}\beta$, with $d = \text{input} - \text{target}$
# (and $\ell = |d|$ when $\beta = 0$). Gradients flow to both `input` and `target`.
#
# **Rules for the three Functions** (the grader gives no points for a Function that breaks them):
#
# * `backward` computes the gradients by hand. **Not allowed** in `forward` or `backward`: autograd
#   (`.backward()`, `torch.autograd.grad`, `torch.func`, ...) and PyTorch's own backward kernels
#   (e.g. `torch.ops.aten.sigmoid_backward`). `Sigmoid.forward` may use `torch.sigmoid`.
# * `SmoothL1Function` is written with elementary tensor operations: `F.smooth_l1_loss`, `F.huber_loss`
#   and `nn.SmoothL1Loss` are **not allowed** in it.
# * Neither pass modifies its inputs or `grad_output` in place (autograd may share `grad_output` with
#   other branches of the graph): compute new tensors.

# %% nbgrader={"grade": false, "grade_id": "linear_function", "locked": false, "schema_version": 3, "solution": true}
class LinearFunction(torch.autograd.Function):
    """y = x @ weight.T + bias, with a hand-written backward that respects needs_input_grad."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        ### BEGIN SOLUTION
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        out = x.matmul(weight.t())
        if bias is not None:
            out = out + bias
        return out
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        ### BEGIN SOLUTION
        x, weight = ctx.saved_tensors
        grad_x = grad_weight = grad_bias = None
        flat_grad = grad_output.reshape(-1, grad_output.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = grad_output.matmul(weight)
        if ctx.needs_input_grad[1]:
            grad_weight = flat_grad.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = flat_grad.sum(dim=0)
        return grad_x, grad_weight, grad_bias
        ### END SOLUTION


# %% nbgrader={"grade": false, "grade_id": "smooth_l1_function", "locked": false, "schema_version": 3, "solution": true}
class SmoothL1Function(torch.autograd.Function):
    """Elementwise smooth L1 loss between input and target (reduction='none')."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, target: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        ### BEGIN SOLUTION
        diff = input - target
        ctx.save_for_backward(diff)
        ctx.beta = float(beta)
        abs_diff = diff.abs()
        if beta == 0:
            return abs_diff
        return torch.where(abs_diff < beta, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)
        ### END SOLUTION

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        ### BEGIN SOLUTION
        (diff,) = ctx.saved_tensors
        if ctx.beta == 0:
            slope = diff.sign()
        else:
            slope = torch.where(diff.abs() < ctx.beta, diff / ctx.beta, diff.sign())
        grad = grad_output * slope
        grad_input = grad if ctx.needs_input_grad[0] else None
        grad_target = -grad if ctx.needs_input_grad[1] else None
        return grad_input, grad_target, None
        ### END SOLUTION


# %% tags=["check"]
# Visible checks: forward values against torch, and torch.autograd.gradcheck in float64.
_x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
assert torch.allclose(sigmoid(_x), torch.sigmoid(_x)), "sigmoid forward differs from torch.sigmoid"
assert torch.autograd.gradcheck(Sigmoid.apply, (_x,), raise_exception=False), "Sigmoid backward is wrong"
_w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
_b = torch.randn(5, dtype=torch.float64, requires_grad=True)
assert torch.allclose(LinearFunction.apply(_x, _w, _b), F.linear(_x, _w, _b)), "LinearFunction forward differs from F.linear"
assert torch.autograd.gradcheck(LinearFunction.apply, (_x, _w, _b), raise_exception=False), "LinearFunction backward is wrong"
_t = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
assert torch.allclose(SmoothL1Function.apply(_x, _t, 0.5), F.smooth_l1_loss(_x, _t, reduction="none", beta=0.5)), "SmoothL1 forward differs"
assert torch.autograd.gradcheck(lambda a, b: SmoothL1Function.apply(a, b, 0.5), (_x, _t), raise_exception=False), "SmoothL1Function backward is wrong"
# Forward and backward by hand, called directly as autograd would: no autograd and no F.smooth_l1_loss
# inside, and neither the inputs nor grad_output modified in place.
for _fn, _args in ((Sigmoid, (_x,)), (LinearFunction, (_x, _w, _b)), (SmoothL1Function, (_x, _t, 0.5))):
    _before = [a.detach().clone() if torch.is_tensor(a) else a for a in _args]
    with _forbid("torch.Tensor.backward", "torch.autograd.backward", "torch.autograd.grad", "torch.nn.functional.smooth_l1_loss", "torch.nn.functional.huber_loss"):
        _out = _fn.apply(*_args)
        _gout = torch.randn_like(_out)
        _gout_before = _gout.clone()
        _fn.backward(_out.grad_fn, _gout)
    assert all(not torch.is_tensor(a) or torch.equal(a, b) for a, b in zip(_args, _before)), f"{_fn.__name__}.forward modified its inputs in place"
    assert torch.equal(_gout, _gout_before), f"{_fn.__name__}.backward modified grad_output in place"
print("custom autograd functions pass gradcheck ✓")

# %% [markdown]
# ## Part 3 — Modules (15 points)
#
# `TwoLayerNet(D_in, H, D_out)` has two `nn.Linear` layers named `linear1` and `linear2` and computes
# `linear2(relu(linear1(x)))`. `ParallelBlock(D_in, D_out)` has two linear branches `linear1`, `linear2`
# on the same input whose outputs are multiplied element-wise and passed through a ReLU.
# `build_parallel_model(D_in, H, D_out)` returns the lecture's
# `nn.Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H), nn.Linear(H, D_out))`.
# Keep these attribute names: the grader loads weights by name.

# %% nbgrader={"grade": false, "grade_id": "modules", "locked": false, "schema_version": 3, "solution": true}
class TwoLayerNet(nn.Module):
    def __init__(self, D_in: int, H: int, D_out: int) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.linear1 = nn.Linear(D_in, H)
        self.linear2 = nn.Linear(H, D_out)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor[*, D_in] -> Tensor[*, D_out]."""
        ### BEGIN SOLUTION
        return self.linear2(self.linear1(x).clamp(min=0))
        ### END SOLUTION


class ParallelBlock(nn.Module):
    def __init__(self, D_in: int, D_out: int) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.linear1 = nn.Linear(D_in, D_out)
        self.linear2 = nn.Linear(D_in, D_out)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor[*, D_in] -> relu(linear1(x) * linear2(x)): Tensor[*, D_out]."""
        ### BEGIN SOLUTION
        return (self.linear1(x) * self.linear2(x)).clamp(min=0)
        ### END SOLUTION


def build_parallel_model(D_in: int, H: int, D_out: int) -> nn.Sequential:
    """Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H), Linear(H, D_out))."""
    ### BEGIN SOLUTION
    return nn.Sequential(ParallelBlock(D_in, H), ParallelBlock(H, H), nn.Linear(H, D_out))
    ### END SOLUTION


# %% tags=["check"]
_net = TwoLayerNet(6, 5, 2)
assert sorted(n for n, _ in _net.named_parameters()) == ["linear1.bias", "linear1.weight", "linear2.bias", "linear2.weight"]
assert _net(torch.randn(3, 6)).shape == (3, 2)
_pm = build_parallel_model(6, 5, 2)
assert _pm(torch.randn(3, 6)).shape == (3, 2) and len(_pm) == 3
print("modules have the right structure ✓")

# %% [markdown]
# ## Part 4 — Optimizers (24 points)
#
# An optimizer owns `param_groups` (lists of parameters with their hyper-parameters) and a
# per-parameter `state` dict. `step()` updates every parameter that has a gradient, under
# `torch.no_grad()`. Match PyTorch exactly (read the pseudo-code in the `torch.optim.SGD` and
# `torch.optim.Adam` docs):
#
# * **SGD with momentum** (dampening 0, no Nesterov): $g \leftarrow \nabla + \lambda p$;
#   $b \leftarrow g$ on the first step, else $b \leftarrow \mu b + g$; $p \leftarrow p - \eta b$
#   (no buffer at all when $\mu = 0$).
# * **Adam** with L2 weight decay: $g \leftarrow \nabla + \lambda p$; $m \leftarrow \beta_1 m + (1-\beta_1) g$;
#   $v \leftarrow \beta_2 v + (1-\beta_2) g^2$; $p \leftarrow p - \eta \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}$.
#
# Parameters whose `.grad` is `None` are skipped (not even decayed). Not part of this exercise:
# SGD's `dampening` (always 0), `nesterov` and `maximize`; Adam's `amsgrad` and `maximize`; `foreach` / `fused`.
#
# * **Not allowed:** `torch.optim` optimizers (`torch.optim.SGD`, `torch.optim.Adam`, `AdamW`, ...) and their
#   functional forms (`torch.optim._functional.sgd` / `adam`, the fused kernels) inside your classes:
#   `step` writes the update with tensor operations. (Inheriting from `torch.optim.Optimizer` for
#   `param_groups`, `state` and `zero_grad` is what the skeleton does, and is fine.)
# * `step` reads `p.grad` but **never modifies it**: the weight-decayed gradient is a new tensor, and the
#   momentum buffer / moments are the optimizer's own tensors (not `p.grad` itself, which
#   `zero_grad(set_to_none=False)` zeroes in place).

# %% nbgrader={"grade": false, "grade_id": "optimizers", "locked": false, "schema_version": 3, "solution": true}
class SGDMomentum(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter with a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ### BEGIN SOLUTION
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group["weight_decay"] != 0:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                if group["momentum"] != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d_p.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                    d_p = state["momentum_buffer"]
                p.add_(d_p, alpha=-group["lr"])
        ### END SOLUTION
        return loss


class Adam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError("invalid Adam hyper-parameters")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        """Update every parameter with a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        ### BEGIN SOLUTION
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                bias_correction1 = 1 - beta1 ** state["step"]
                bias_correction2 = 1 - beta2 ** state["step"]
                denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / bias_correction1)
        ### END SOLUTION
        return loss


# %% tags=["check"]
# Visible check: 20 steps of your optimizers against torch.optim on the same problem, with
# zero_grad(set_to_none=False); step must leave p.grad alone and must not call torch.optim.
def _run(opt_cls, steps=20, **kw):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = opt_cls(model.parameters(), **kw)
    data = torch.randn(16, 4)
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        model(data).pow(2).mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads)), f"{opt_cls.__name__}.step modified p.grad in place"
    return model.weight.detach()

_torch_sgd = _run(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.01)
_torch_sgd_no_decay = _run(torch.optim.SGD, lr=0.1, momentum=0.9)
_torch_adam = _run(torch.optim.Adam, lr=0.01, weight_decay=0.01)
with _forbid("torch.optim.SGD.step", "torch.optim.Adam.step", "torch.optim.sgd.sgd", "torch.optim.adam.adam",
             "torch.optim._functional.sgd", "torch.optim._functional.adam"):
    assert torch.allclose(_run(SGDMomentum, lr=0.1, momentum=0.9, weight_decay=0.01), _torch_sgd, atol=1e-6), "SGDMomentum differs from torch.optim.SGD"
    assert torch.allclose(_run(SGDMomentum, lr=0.1, momentum=0.9), _torch_sgd_no_decay, atol=1e-6), "SGDMomentum without weight decay differs from torch.optim.SGD"
    assert torch.allclose(_run(Adam, lr=0.01, weight_decay=0.01), _torch_adam, atol=1e-6), "Adam differs from torch.optim.Adam"
print("optimizers match torch.optim ✓")

# %% [markdown]
# ## Part 5 — Training loop and data loading (13 points)
#
# `train_model(model, loader, optimizer, loss_fn, epochs)` runs the canonical loop: put the model in
# **train mode** (`model.train()`: the caller may hand it over in eval mode, and BatchNorm / Dropout behave
# differently in the two modes), then for every `(inputs, targets)` batch **zero the gradients**, compute
# `loss_fn(model(inputs), targets)`, backpropagate and step. Move each batch to the device of the model's
# parameters. Return the list of per-epoch **mean batch losses** (plain Python floats; every batch counts
# once, whatever its size). **Not allowed:** `lecture_utils.train.fit` — write the loop yourself.
#
# Detection datasets return a different number of boxes per image, so the default collate (which
# stacks everything) fails. `detection_collate(batch)` takes a list of `(image, target)` pairs —
# `image` a Tensor[C, H, W] (all the same size), `target` a dict with `"boxes"` Tensor[N_i, 4] and
# `"labels"` Tensor[N_i] — and returns `(images, targets)`: the images stacked into Tensor[B, C, H, W]
# (with the images' dtype) and the targets as a **list** (not a tuple) of the B dicts, in order and unchanged.
# The batch itself is not modified.

# %% nbgrader={"grade": false, "grade_id": "training", "locked": false, "schema_version": 3, "solution": true}
def train_model(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, loss_fn, epochs: int) -> list[float]:
    """Train for `epochs` passes over `loader`; return the mean batch loss of each epoch."""
    ### BEGIN SOLUTION
    model_device = next(model.parameters()).device
    model.train()
    epoch_losses = []
    for _ in range(epochs):
        running, batches = 0.0, 0
        for inputs, targets in loader:
            inputs, targets = inputs.to(model_device), targets.to(model_device)
            optimizer.zero_grad()
            batch_loss = loss_fn(model(inputs), targets)
            batch_loss.backward()
            optimizer.step()
            running += batch_loss.item()
            batches += 1
        epoch_losses.append(running / max(batches, 1))
    return epoch_losses
    ### END SOLUTION


def detection_collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[torch.Tensor, list[dict]]:
    """[(image Tensor[C, H, W], {"boxes": Tensor[N_i, 4], "labels": Tensor[N_i]}), ...] -> (Tensor[B, C, H, W], [dict, ...])."""
    ### BEGIN SOLUTION
    images = torch.stack([image for image, _ in batch], dim=0)
    targets = [target for _, target in batch]
    return images, targets
    ### END SOLUTION


# %% tags=["check"]
from torch.utils.data import DataLoader, TensorDataset

_model = nn.Linear(3, 1)
_loader = DataLoader(TensorDataset(torch.randn(10, 3), torch.randn(10, 1)), batch_size=4)
with _forbid("lecture_utils.train.fit"):
    _hist = train_model(_model, _loader, torch.optim.SGD(_model.parameters(), lr=0.1), nn.MSELoss(), epochs=3)
assert isinstance(_hist, list) and len(_hist) == 3 and all(isinstance(v, float) for v in _hist), "train_model must return one float per epoch"
# A model handed over in eval mode: BatchNorm must see the batches in train mode (its statistics update).
_bn_model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).eval()
train_model(_bn_model, _loader, torch.optim.SGD(_bn_model.parameters(), lr=0.1), nn.MSELoss(), epochs=1)
assert int(_bn_model[1].num_batches_tracked) == 3, "train_model must put the model in train mode (model.train()): BatchNorm did not update its statistics"
_batch = [(torch.rand(3, 8, 12), {"boxes": torch.rand(k, 4), "labels": torch.ones(k, dtype=torch.int64)}) for k in (0, 2, 5)]
_imgs, _tgts = detection_collate(_batch)
assert _imgs.shape == (3, 3, 8, 12) and [t["boxes"].shape[0] for t in _tgts] == [0, 2, 5]
assert isinstance(_tgts, list), f"detection_collate must return the targets as a list, got {type(_tgts).__name__}"
assert [len(t["boxes"]) for _, t in _batch] == [0, 2, 5], "detection_collate must not modify the batch"
print("training loop and collate work ✓")

# %% [markdown]
# Compare your two optimizers on the lecture's `ParallelBlock` model, trained with your loop.

# %%
seed_everything(0)
X, Y = torch.randn(512, 20), torch.randn(512, 1)
curves = {}
for name, make_opt in {"SGD + momentum": lambda p: SGDMomentum(p, lr=1e-3), "Adam": lambda p: Adam(p, lr=1e-3)}.items():
    seed_everything(0)
    model = build_parallel_model(20, 32, 1).to(device)
    loader = DataLoader(TensorDataset(X, Y), batch_size=64, shuffle=True)
    curves[name] = train_model(model, loader, make_opt(model.parameters()), nn.MSELoss(), epochs=30)
plot_losses(curves, title="ParallelBlock model: your optimizers", logy=False);

# %% [markdown]
# ## Part 6 — Dynamic and static graphs (5 points)
#
# PyTorch builds the graph *dynamically*, while your Python code runs. For deployment and
# compilers we often want a *static* graph. In PyTorch 1.x that was TorchScript (`torch.jit.script`);
# PyTorch 2 captures graphs with `torch.export` (and `torch.compile` uses the same machinery).
# `capture_graph(model, example_input)` must return a `torch.fx.GraphModule` whose graph computes
# `model(x)` for inputs shaped like `example_input` — use `torch.export.export(...)` and `.module()`.
# The graph is the **eval-mode** graph (what you deploy: BatchNorm with its running statistics, no
# dropout), whatever mode the model is in when you get it: put the model in eval mode first.

# %% nbgrader={"grade": false, "grade_id": "graphs", "locked": false, "schema_version": 3, "solution": true}
def capture_graph(model: nn.Module, example_input: torch.Tensor) -> torch.fx.GraphModule:
    """Capture model's forward on example_input as an FX GraphModule (via torch.export)."""
    ### BEGIN SOLUTION
    exported = torch.export.export(model.eval(), (example_input,))
    return exported.module()
    ### END SOLUTION


# %% tags=["check"]
_gm = capture_graph(TwoLayerNet(4, 8, 2), torch.randn(3, 4))
assert isinstance(_gm, torch.fx.GraphModule), "capture_graph must return a torch.fx.GraphModule"
print([str(n.target) for n in _gm.graph.nodes if n.op == "call_function"])
# A model in train mode is captured as its eval-mode graph: no dropout left in it.
_dropout_gm = capture_graph(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5)).train(), torch.randn(2, 4))
_xin = torch.randn(2, 4)
assert torch.equal(_dropout_gm(_xin), _dropout_gm(_xin)), "capture_graph must capture the eval-mode graph (model.eval() first): the graph still applies dropout"

# %% [markdown]
# The computational graph autograd built for the two-layer net, drawn from its `grad_fn` chain:

# %%
from lecture_utils.viz import autograd_edges, draw_graph

_w1 = torch.randn(5, 4, requires_grad=True)
_w2 = torch.randn(4, 3, requires_grad=True)
_out = (torch.randn(2, 5).mm(_w1).clamp(min=0).mm(_w2) - torch.randn(2, 3)).pow(2).sum()
edges, labels = autograd_edges(_out, {id(_w1): "w1", id(_w2): "w2"})
draw_graph(edges, labels, title="autograd graph of the loss");

# %% [markdown]
# ## Submit
#
# Save the notebook, then run the cell below. It checks that every graded cell is present and
# implemented, runs the visible checks in a fresh process, and writes `a1_pytorch_submission.ipynb`
# (downloaded automatically in Colab). Upload that file.

# %%
from lecture_utils import submit

submit.export("a1_pytorch.ipynb")
