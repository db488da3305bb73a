"""End-to-end grading of a1_pytorch: subtly wrong code (and library calls that do the exercise, however they are
reached) loses exactly its points with feedback that says why, and correct alternatives keep full marks. The checks
every assignment gets (solution 100, release 0, one part alone) are in test_grading_assignments.py."""
import pytest

from conftest import solution_nb, solution_source, suite_parts, with_cells

A1 = "a1_pytorch"


def _mutate(cell_source: str, old, new: str | None = None) -> str:
    """Replace ``old`` by ``new`` in a cell; ``old`` may also be a list of (old, new) pairs, applied in order."""
    pairs = old if new is None else [(old, new)]
    for before, after in pairs:
        assert cell_source.count(before) == 1, f"mutation anchor not found exactly once: {before!r}"
        cell_source = cell_source.replace(before, after)
    return cell_source


def _changed(changes: dict) -> dict:
    return {gid: _mutate(_sol(gid), *(change if isinstance(change, tuple) else (change,))) for gid, change in changes.items()}


def _sol(grade_id):
    return solution_source(A1, grade_id)


# Each mutant: {cell: (old, new) | [(old, new), ...]}, the tests that must fail (and only tests of the changed cells may),
# and optionally the text every one of their feedbacks must contain.
MUTANTS = {
    "subtle-1": (
        {
            "manual_step": ("    pre_act = x.mm(w1)", "    w1 = w1.detach().requires_grad_()\n    (x.mm(w1).clamp(min=0).mm(w2) - y).pow(2).sum().backward()\n    pre_act = x.mm(w1.detach())"),
            "sigmoid": ("        ctx.save_for_backward(out)", "        ctx.save_for_backward(x)"),
            "linear_function": ("        if ctx.needs_input_grad[0]:", "        if True:"),
            "smooth_l1_function": ("        grad_target = -grad if ctx.needs_input_grad[1] else None", "        grad_target = None"),
            "optimizers": ('state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)', 'state["momentum_buffer"].mul_(group["momentum"]).add_(d_p, alpha=1 - group["momentum"])'),
            "training": ("            optimizer.zero_grad()\n", ""),
        },
        ["test_manual_step_uses_no_autograd", "test_sigmoid_backward", "test_sigmoid_gradcheck", "test_linear_needs_input_grad",
         "test_smooth_l1_backward", "test_smooth_l1_gradcheck", "test_sgd_momentum_weight_decay", "test_train_model_sgd_momentum"],
    ),
    "subtle-2": (
        {
            "optimizers": ('denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])',
                           'denom = (state["exp_avg_sq"] / bias_correction2).add(group["eps"]).sqrt()'),
            "training": ("            running += batch_loss.item()\n            batches += 1",
                         "            running += batch_loss.item() * len(inputs)\n            batches += len(inputs)"),
            "modules": ("        return (self.linear1(x) * self.linear2(x)).clamp(min=0)", "        return self.linear1(x) * self.linear2(x)"),
        },
        ["test_adam_eps_placement", "test_train_model_uneven_batches", "test_parallel_block", "test_build_parallel_model"],
    ),
    "subtle-3": (
        {
            "optimizers": ('                    grad = grad.add(p, alpha=group["weight_decay"])\n', '                    p.mul_(1 - group["lr"] * group["weight_decay"])\n'),
            "training": ("    images = torch.stack([image for image, _ in batch], dim=0)", "    images = torch.stack([image for image, _ in batch], dim=0)\n    batch = sorted(batch, key=lambda b: len(b[1]['boxes']))"),
            "linear_function": ("            grad_bias = flat_grad.sum(dim=0)", "            grad_bias = flat_grad.mean(dim=0)"),
        },
        ["test_adam_weight_decay_and_betas", "test_adam_param_groups_and_missing_grads", "test_detection_collate_variable_boxes", "test_linear_backward", "test_linear_gradcheck"],
    ),
    "subtle-4": (
        {
            "optimizers": ('                state["step"] += 1\n', '                state["step"] += 1\n                self.state["global_step"] = self.state.get("global_step", 0) + 1\n                state["step"] = max(state["step"], self.state["global_step"] // max(1, sum(len(g["params"]) for g in self.param_groups)))\n'),
            "manual_step": ("    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)", "    grad_pre = grad_out.mm(w2.t())"),
        },
        ["test_adam_param_groups_and_missing_grads", "test_manual_step_matches_autograd", "test_manual_step_dead_relu_units"],
    ),
}


# ----------------------------------------------------------------------------- evasions
# Where writing the function is the exercise, calling the library instead must cost ALL of that
# function's points, with a message that says so, however the call is reached: directly, through a
# reference saved at cell level, from another thread, or by a name built at run time.
_MANUAL_START = "    pre_act = x.mm(w1)"


def _manual_by_autograd(grad_call: str) -> str:
    """manual_two_layer_step computed by autograd (correct values), then the original (dead) code."""
    return (
        "    a1, a2 = w1.detach().requires_grad_(), w2.detach().requires_grad_()\n"
        "    with torch.enable_grad():\n"
        "        loss = (x.mm(a1).clamp(min=0).mm(a2) - y).pow(2).sum()\n"
        f"        g1, g2 = {grad_call}(loss, [a1, a2])\n"
        "    return loss.detach(), w1 - lr * g1, w2 - lr * g2\n" + _MANUAL_START
    )


_MANUAL_IN_THREAD = (
    "    import threading\n"
    "    box = {}\n\n"
    "    def work():\n"
    "        a1, a2 = w1.detach().requires_grad_(), w2.detach().requires_grad_()\n"
    "        loss = (x.mm(a1).clamp(min=0).mm(a2) - y).pow(2).sum()\n"
    "        loss.backward()\n"
    "        box['out'] = (loss.detach(), w1 - lr * a1.grad, w2 - lr * a2.grad)\n\n"
    "    thread = threading.Thread(target=work)\n"
    "    thread.start()\n"
    "    thread.join()\n"
    "    return box['out']\n" + _MANUAL_START
)
_SGD_START = '        for group in self.param_groups:\n            for p in group["params"]:'


def _sgd_by_torch(make_class: str, run: str = "self._torch_sgd.step()") -> str:
    """SGDMomentum.step delegated to a torch.optim.SGD over the same param groups."""
    return (
        '        if "_torch_sgd" not in self.__dict__:\n'
        f'            self._torch_sgd = {make_class}(self.param_groups, lr=self.defaults["lr"])\n'
        f"        {run}\n"
        "        return loss\n" + _SGD_START
    )


_ADAM_START = '        for group in self.param_groups:\n            beta1, beta2 = group["betas"]\n'
_ADAM_BY_CAPTURED_FUNCTIONAL = (
    _ADAM_START
    + "            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []\n"
    '            for p in group["params"]:\n'
    "                if p.grad is None:\n"
    "                    continue\n"
    "                state = self.state[p]\n"
    "                if not state:\n"
    '                    state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))\n'
    '                params.append(p); grads.append(p.grad); exp_avgs.append(state["exp_avg"])\n'
    '                exp_avg_sqs.append(state["exp_avg_sq"]); steps.append(state["step"])\n'
    "            _adam_update(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=False, amsgrad=False, beta1=beta1, beta2=beta2,\n"
    '                         lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)\n'
    "        return loss\n" + _ADAM_START
)
_TRAIN_START = "    model_device = next(model.parameters()).device\n"


def _train_by_fit(fit: str) -> str:
    return f"    return {fit}(model, loader, optimizer, lambda m, b: loss_fn(m(b[0]), b[1]), epochs=epochs, progress=False).loss\n" + _TRAIN_START


_TRAIN_FIT_IN_THREAD = (
    "    import threading\n"
    "    from lecture_utils.train import fit\n"
    "    box = {}\n"
    "    thread = threading.Thread(target=lambda: box.setdefault('history', fit(model, loader, optimizer, lambda m, b: loss_fn(m(b[0]), b[1]), epochs=epochs, progress=False)))\n"
    "    thread.start()\n"
    "    thread.join()\n"
    "    return box['history'].loss\n" + _TRAIN_START
)
_LINEAR_GRAD_X = "            grad_x = grad_output.matmul(weight)"


def _linear_grad_x_by_autograd(grad_call: str) -> str:
    return (
        "            with torch.enable_grad():\n"
        "                xx = x.detach().requires_grad_()\n"
        f"                (grad_x,) = {grad_call}(xx.matmul(weight.detach().t()), xx, grad_output)"
    )


_SMOOTH_L1_RETURN = "        return torch.where(abs_diff < beta, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)"
_SIGMOID_BACKWARD = "        return grad_output * out * (1.0 - out)"

_ALL_TESTS = {
    "manual_step": ["test_manual_step_matches_autograd", "test_manual_step_float32_and_learning_rates", "test_manual_step_dead_relu_units",
                    "test_manual_step_uses_no_autograd", "test_manual_step_leaves_inputs_unchanged"],
    "sgd": ["test_sgd_momentum_weight_decay", "test_sgd_without_momentum", "test_sgd_param_groups", "test_sgd_skips_parameters_without_grad",
            "test_sgd_uses_accumulated_gradients", "test_sgd_leaves_gradients_alone"],
    "adam": ["test_adam_defaults", "test_adam_weight_decay_and_betas", "test_adam_eps_placement", "test_adam_param_groups_and_missing_grads",
             "test_adam_leaves_gradients_alone"],
    "train_model": ["test_train_model_sgd_momentum", "test_train_model_uneven_batches", "test_train_model_edge_cases", "test_train_model_trains_in_train_mode"],
    "sigmoid": ["test_sigmoid_forward", "test_sigmoid_backward", "test_sigmoid_gradcheck", "test_sigmoid_saves_for_backward", "test_sigmoid_leaves_inputs_unchanged"],
    "linear": ["test_linear_forward", "test_linear_backward", "test_linear_needs_input_grad", "test_linear_gradcheck", "test_linear_leaves_inputs_unchanged"],
    "smooth_l1": ["test_smooth_l1_forward", "test_smooth_l1_backward", "test_smooth_l1_gradcheck", "test_smooth_l1_leaves_inputs_unchanged"],
}
MUTANTS.update({
    "evasion-direct": (
        {
            "manual_step": (_MANUAL_START, _manual_by_autograd("torch.autograd.grad")),
            "optimizers": (_SGD_START, _sgd_by_torch("torch.optim.SGD")),
            "training": (_TRAIN_START, "    import lecture_utils.train\n" + _train_by_fit("lecture_utils.train.fit")),
            "linear_function": (_LINEAR_GRAD_X, _linear_grad_x_by_autograd("torch.autograd.grad")),
            "smooth_l1_function": (_SMOOTH_L1_RETURN, "        return F.smooth_l1_loss(input, target, reduction='none', beta=beta)"),
            "sigmoid": (_SIGMOID_BACKWARD, "        return torch.ops.aten.sigmoid_backward(grad_output, out)"),
        },
        _ALL_TESTS["manual_step"] + _ALL_TESTS["sgd"] + _ALL_TESTS["train_model"] + _ALL_TESTS["linear"] + _ALL_TESTS["smooth_l1"] + _ALL_TESTS["sigmoid"],
        "must not use",
    ),
    "evasion-captured": (
        {
            "manual_step": [("def manual_two_layer_step(", "_grad = torch.autograd.grad\n\n\ndef manual_two_layer_step("),
                            (_MANUAL_START, _manual_by_autograd("_grad"))],
            "optimizers": [("class Adam(torch.optim.Optimizer):", "_adam_update = torch.optim._functional.adam\n\n\nclass Adam(torch.optim.Optimizer):"),
                           (_ADAM_START, _ADAM_BY_CAPTURED_FUNCTIONAL)],
            "training": [("def train_model(", "from lecture_utils.train import fit as _fit\n\n\ndef train_model("), (_TRAIN_START, _train_by_fit("_fit"))],
            "linear_function": [("class LinearFunction(", "_autograd_grad = torch.autograd.grad\n\n\nclass LinearFunction("),
                                (_LINEAR_GRAD_X, _linear_grad_x_by_autograd("_autograd_grad"))],
            "sigmoid": [("class Sigmoid(", "_sigmoid_backward = torch.ops.aten.sigmoid_backward\n\n\nclass Sigmoid("),
                        (_SIGMOID_BACKWARD, "        return _sigmoid_backward(grad_output, out)")],
        },
        _ALL_TESTS["manual_step"] + _ALL_TESTS["adam"] + _ALL_TESTS["train_model"] + _ALL_TESTS["linear"] + _ALL_TESTS["sigmoid"],
        "must not use",
    ),
    "evasion-thread": (
        {
            "manual_step": (_MANUAL_START, _MANUAL_IN_THREAD),
            "optimizers": (_SGD_START, "        import threading\n" + _sgd_by_torch(
                "torch.optim.SGD", "thread = threading.Thread(target=self._torch_sgd.step)\n        thread.start()\n        thread.join()")),
            "training": (_TRAIN_START, _TRAIN_FIT_IN_THREAD),
            "smooth_l1_function": (_SMOOTH_L1_RETURN, "        return torch.ops.aten.smooth_l1_loss(input, target, 0, beta)"),
        },
        _ALL_TESTS["manual_step"] + _ALL_TESTS["sgd"] + _ALL_TESTS["train_model"] + _ALL_TESTS["smooth_l1"],
        "must not use",
    ),
    "evasion-getattr": (
        {
            "manual_step": (_MANUAL_START, _manual_by_autograd('getattr(torch.autograd, "gr" + "ad")')),
            "optimizers": (_SGD_START, _sgd_by_torch('getattr(torch.optim, "S" + "GD")')),
            "training": (_TRAIN_START, "    import importlib\n" + _train_by_fit('getattr(importlib.import_module("lecture_utils." + "train"), "f" + "it")')),
            "smooth_l1_function": (_SMOOTH_L1_RETURN, "        return getattr(F, 'smooth_l1' + '_loss')(input, target, reduction='none', beta=beta)"),
            # the autograd engine's C++ entry point, below every Python function there is to watch
            "linear_function": (_LINEAR_GRAD_X, _linear_grad_x_by_autograd(
                "(lambda out, xx, g: torch.autograd.Variable._execution_engine.run_backward((out,), (g,), False, False, (xx,), False, False))")),
        },
        _ALL_TESTS["manual_step"] + _ALL_TESTS["sgd"] + _ALL_TESTS["train_model"] + _ALL_TESTS["smooth_l1"] + _ALL_TESTS["linear"],
        "must not use",
    ),
    # ------------------------------------------------------------------------- semantics
    "subtle-5": (
        {
            "manual_step": ("    return loss, w1 - lr * grad_w1, w2 - lr * grad_w2", "    w1 -= lr * grad_w1\n    w2 -= lr * grad_w2\n    return loss, w1, w2"),
            "optimizers": ('                    d_p = d_p.add(p, alpha=group["weight_decay"])', '                    d_p = d_p.add_(p, alpha=group["weight_decay"])'),
            "training": ("    model.train()\n", "    model.eval()\n"),
            "graphs": ("    exported = torch.export.export(model.eval(), (example_input,))", "    exported = torch.export.export(model, (example_input,))"),
            "smooth_l1_function": ("        grad = grad_output * slope", "        grad = grad_output.mul_(slope)"),
        },
        ["test_manual_step_leaves_inputs_unchanged", "test_sgd_leaves_gradients_alone", "test_train_model_trains_in_train_mode",
         "test_capture_eval_mode_graph", "test_smooth_l1_leaves_inputs_unchanged"],
    ),
    "subtle-6": (
        {
            "training": ("    targets = [target for _, target in batch]", "    targets = tuple(target for _, target in batch)"),
            "optimizers": ('                        state["momentum_buffer"] = d_p.clone()', '                        state["momentum_buffer"] = d_p'),
            "sigmoid": (_SIGMOID_BACKWARD, "        return grad_output.mul_(out * (1.0 - out))"),
        },
        ["test_detection_collate_variable_boxes", "test_detection_collate_in_dataloader", "test_sgd_leaves_gradients_alone",
         "test_sigmoid_leaves_inputs_unchanged"],
    ),
    "subtle-7": (
        {
            "training": ("    model.train()\n", ""),
            "optimizers": ('                    grad = grad.add(p, alpha=group["weight_decay"])', '                    grad = grad.add_(p, alpha=group["weight_decay"])'),
        },
        ["test_train_model_trains_in_train_mode", "test_adam_leaves_gradients_alone"],
    ),
})


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_a1_subtly_wrong_code_loses_exactly_its_points(grade, mutant):
    changes, must_fail, *message = MUTANTS[mutant]
    results = grade(with_cells(solution_nb(A1), _changed(changes)))
    failed = sorted(t.name.split(":")[0] for t in results.tests if t.status != "passed")
    missing = [name for name in must_fail if name not in failed]
    assert not missing, f"these tests should catch the mutant but passed: {missing}"
    outputs = {t.name.split(":")[0]: t.output for t in results.tests}
    for fragment in message:  # what the student is told, in every test that catches the mutant
        unclear = [name for name in must_fail if fragment not in outputs[name]]
        assert not unclear, f"the feedback of {unclear} does not say {fragment!r}: {[outputs[n] for n in unclear][:2]}"
    parts = suite_parts(A1)
    collateral = [n for n in failed if parts[n] not in changes]
    assert not collateral, f"tests of untouched functions failed: {collateral}"


ALTERNATIVES = {
    # the solution written differently: each set is graded as one notebook and must keep 100 points
    "set-1": {
        "sigmoid": ("        out = 1.0 / (1.0 + torch.exp(-x))", "        out = torch.sigmoid(x)"),
        "linear_function": ("        out = x.matmul(weight.t())", "        out = torch.einsum('...i,oi->...o', x, weight)"),
        "optimizers": ('                        state["momentum_buffer"] = d_p.clone()',
                       '                        state["momentum_buffer"] = torch.zeros_like(p).add_(d_p)'),
        "training": ("            optimizer.zero_grad()\n            batch_loss = loss_fn(model(inputs), targets)\n            batch_loss.backward()\n            optimizer.step()",
                     "            batch_loss = loss_fn(model(inputs), targets)\n            batch_loss.backward()\n            optimizer.step()\n            optimizer.zero_grad(set_to_none=False)"),
        "graphs": ("    exported = torch.export.export(model.eval(), (example_input,))\n    return exported.module()", "    return torch.fx.symbolic_trace(model.eval())"),
        "manual_step": ("    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)", "    grad_pre = grad_out.mm(w2.t())\n    grad_pre[pre_act < 0] = 0"),
    },
    # written differently again: torch.where for the ReLU mask, expit, einsum, clamp for the Huber slope,
    # a foreach update and an out-of-place weight decay, train mode restored afterwards with
    # zero_grad(set_to_none=True), collate through zip + list, export of a copy of the model
    "set-2": {
        "manual_step": ("    grad_pre = grad_out.mm(w2.t()) * (pre_act > 0).to(pre_act.dtype)",
                        "    grad_pre = torch.where(pre_act > 0, grad_out.mm(w2.t()), torch.zeros_like(pre_act))"),
        "sigmoid": ("        out = 1.0 / (1.0 + torch.exp(-x))", "        out = torch.special.expit(x)"),
        "linear_function": ("            grad_weight = flat_grad.t().mm(x.reshape(-1, x.shape[-1]))",
                            "            grad_weight = torch.einsum('...o,...i->oi', grad_output, x)"),
        "smooth_l1_function": ("            slope = torch.where(diff.abs() < ctx.beta, diff / ctx.beta, diff.sign())",
                               "            slope = (diff / ctx.beta).clamp(-1.0, 1.0)"),
        "optimizers": [('                p.add_(d_p, alpha=-group["lr"])', '                torch._foreach_add_([p], [d_p], alpha=-group["lr"])'),
                       ('                    grad = grad.add(p, alpha=group["weight_decay"])', '                    grad = grad + group["weight_decay"] * p')],
        "training": [("    model.train()\n", "    was_training = model.training\n    model.train(True)\n"),
                     ("    return epoch_losses\n", "    model.train(was_training)\n    return epoch_losses\n"),
                     ("            optimizer.zero_grad()\n", "            optimizer.zero_grad(set_to_none=True)\n"),
                     ("    images = torch.stack([image for image, _ in batch], dim=0)\n    targets = [target for _, target in batch]\n",
                      "    images, targets = zip(*batch)\n    images, targets = torch.stack(images), list(targets)\n")],
        "graphs": ("    exported = torch.export.export(model.eval(), (example_input,))",
                   "    import copy\n    exported = torch.export.export(copy.deepcopy(model).eval(), (example_input,))"),
    },
}


@pytest.mark.parametrize("variant", sorted(ALTERNATIVES))
def test_a1_correct_alternatives_keep_full_marks(grade, variant):
    results = grade(with_cells(solution_nb(A1), _changed(ALTERNATIVES[variant])))
    assert results.score == 100, [(t.name, t.output) for t in results.tests if t.status != "passed"]
