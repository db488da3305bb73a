"""Calling the student's graded code in the worker, watched for the library calls that would do its job.

Writing a function is the exercise where the notebook says so: each assignment's table of the library
functions, operators and kernels a graded function must not use is data (``hidden_tests/<id>/forbidden.toml``,
read by ``GradedCalls``). The worker counts calls of the function objects themselves (captured references,
aliases and other threads included); a call that used one fails the test with a message naming it and saying
what to do instead."""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import torch

from autograder.client import RemoteObject, StudentError
from autograder.hidden_tests.kit.checks import check_output
from autograder.testing import call_checked, fail

HIDDEN_TESTS = Path(__file__).resolve().parent.parent

# The grader's own backward pass runs autograd (and convolution_backward): not watched while it runs.
GRADER_BACKWARD_CALLS = ("torch.autograd.grad", "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian", "torch.func.vjp",
                         "torch.func.jacrev")
GRADER_BACKWARD_KERNELS = ("aten::convolution_backward",)


@dataclass(frozen=True)
class Rule:
    """What one graded function (or the assembled models) must not use."""
    calls: tuple[str, ...] = ()      # dotted paths of Python functions
    operators: tuple[str, ...] = ()  # operator names counted at the autograd level ('torchvision::nms')
    kernels: tuple[str, ...] = ()    # operator-name prefixes seen at any dispatch level ('aten::upsample')
    instead: str = ""                # what to do instead, for the message

    @classmethod
    def parse(cls, spec: dict, groups: dict[str, list[str]]) -> Rule:
        def expand(names):
            bare = [name for name in names if "." not in name and "::" not in name and name not in groups]
            if bare:
                raise ValueError(f"forbidden.toml: {bare} are neither groups nor dotted paths / operator names")
            return tuple(item for name in names for item in (groups[name] if name in groups else [name]))

        unknown = set(spec) - {"calls", "operators", "kernels", "instead"}
        if unknown:
            raise ValueError(f"forbidden.toml: unknown keys {sorted(unknown)}")
        return cls(expand(spec.get("calls", ())), expand(spec.get("operators", ())), expand(spec.get("kernels", ())), spec.get("instead", ""))


class GradedCalls:
    """The graded functions of one assignment, called in the worker under their rules."""

    def __init__(self, assignment_id: str):
        table = tomllib.loads((HIDDEN_TESTS / assignment_id / "forbidden.toml").read_text())
        groups = table.get("groups", {})
        self.rules = {name: Rule.parse(spec, groups) for name, spec in table.get("functions", {}).items()}
        self.models = Rule.parse(table.get("models", {}), groups)

    def rule(self, name: str) -> Rule:
        if name not in self.rules:
            raise KeyError(f"{name!r} is not a graded function of forbidden.toml (known: {', '.join(self.rules)})")
        return self.rules[name]

    def call(self, student, name: str, *args, timeout: float | None = None, **kwargs):
        """``student.<name>(*args, **kwargs)`` in the worker; fails (no points) if it used what its rule forbids."""
        rule = self.rule(name)
        result = call_checked(student, name, *args, forbid=rule.calls, forbid_ops=rule.operators, hint=rule.instead, count_ops=bool(rule.kernels),
                              timeout=timeout, **kwargs)
        _check_kernels(name, rule, rule.kernels, result.ops)
        return result.value

    def vjp(self, student, name: str, inputs, grad_output, needs_grad):
        """(output, [gradient per input or None]) of ``student.<name>(*inputs)`` by autograd in the worker, watched
        like ``call`` except for the grader's own backward pass."""
        rule = self.rule(name)
        fn, vjp = student.__getattr__(name).get(), student.helper("vjp").get()
        if not isinstance(vjp, RemoteObject):
            fail("the grader could not reach its helper 'vjp'")
        kernels = tuple(k for k in rule.kernels if k not in GRADER_BACKWARD_KERNELS)
        try:
            result = call_checked(vjp, "__call__", fn, list(inputs), grad_output, list(needs_grad), forbid=[c for c in rule.calls if c not in GRADER_BACKWARD_CALLS],
                                  forbid_ops=rule.operators, hint=rule.instead, label=name, count_ops=bool(kernels))
            _check_kernels(name, rule, kernels, result.ops)
        except StudentError:
            # a forbidden operator runs below autograd while it is watched, so its output has no gradient and the
            # backward pass fails first: name the forbidden call, which is the real reason
            self.call(student, name, *inputs)
            raise
        value = result.value
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not isinstance(value[1], list):
            fail(f"{name}: the grader could not run the backward pass")
        return value

    def check_gradients(self, student, name: str, inputs, needs_grad, reference, what: str, generator: torch.Generator | None = None) -> None:
        """Output and gradients of ``student.<name>(*inputs)`` (autograd in the worker) == those of ``reference(*inputs)``
        for a random output gradient (drawn from ``generator``), for every input marked in ``needs_grad``."""
        leaves = [x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor) and m else x for x, m in zip(inputs, needs_grad)]
        want = reference(*leaves)
        grad_out = torch.randn(want.shape, generator=generator, dtype=want.dtype)
        positions = [i for i, m in enumerate(needs_grad) if m]
        want_grads = torch.autograd.grad(want, [leaves[i] for i in positions], grad_out)
        out, grads = self.vjp(student, name, inputs, grad_out, needs_grad)
        check_output(out, want.detach(), what)
        for i, want_grad in zip(positions, want_grads):
            if grads[i] is None:
                fail(f"{what}: no gradient reaches argument {i} (keep the computation differentiable)")
            check_output(grads[i], want_grad, f"gradient of {what} with respect to argument {i}")

    def watched(self, target, method: str, *args, what: str, rule: str | None = None, **kwargs):
        """``target.<method>(*args)`` (a student function when target is the student proxy, a method of a module
        made in the worker otherwise) watched for the models the assignment's parts replace (``[models]``), or for
        the graded ``rule``'s calls."""
        watch = self.rule(rule) if rule else self.models
        return call_checked(target, method, *args, forbid=watch.calls, forbid_ops=watch.operators, hint=watch.instead, label=what, **kwargs).value

    def with_references(self, student, helper: str, *args, what: str):
        """The support helper ``helper(*args)`` in the worker (the student's code run with the earlier parts'
        functions bound to references), watched like ``watched``."""
        fn = student.helper(helper).get()
        if not isinstance(fn, RemoteObject):
            fail(f"the grader could not reach its helper {helper!r}")
        return call_checked(fn, "__call__", *args, forbid=self.models.calls, hint=self.models.instead, label=what).value


def _check_kernels(name: str, rule: Rule, kernels: tuple[str, ...], ops: dict | None) -> None:
    """Fail when an operator with a forbidden prefix ran during the call (any dispatch level)."""
    used = sorted(op for op, n in (ops or {}).items() if n and op.startswith(kernels)) if kernels else []
    if used:
        fail(f"{name} must not run PyTorch's own kernels for this ({', '.join(used)}): writing it is the exercise ({rule.instead})")
