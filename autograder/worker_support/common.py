"""Grader support every assignment loads first in the worker (before any student cell).

The worker-side grader code lives in modules that each manifest lists (``support = [...]``, in load order):
the shared ones in ``autograder/worker_support/``, an assignment's own in ``hidden_tests/<id>/support.py``.
Each is sent to the worker as source and run there as a private module (never importable by, nor part of,
the student's namespace); a module sees the public functions of the modules loaded before it, and
``STUDENT_MODULE`` (the name of the student's namespace in ``sys.modules``) and ``import_path`` (the object
named by a dotted path). The public functions are what
hidden tests reach with ``student.helper(name)``; the worker captures them when it loads the module, so a
student cell that later rebinds a name cannot change which function a test calls. Support code needs only the
standard library, torch, torchvision and lecture_utils (what the worker has).
"""
import torch


def is_instance(obj, class_path: str) -> bool:
    """isinstance(obj, <class named by class_path>), e.g. ``torch.nn.Module``."""
    return isinstance(obj, import_path(class_path))  # noqa: F821 - given by the worker


def type_name(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def function_backward(function_cls, inputs, needs_grad, grad_outputs):
    """Run ``function_cls.apply(*inputs)`` then call its ``backward`` directly on the real ctx.

    Returns (output, raw tuple returned by backward, number of saved tensors).
    """
    xs = [x.detach().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x, m in zip(inputs, needs_grad)]
    out = function_cls.apply(*xs)
    ctx = out.grad_fn
    if ctx is None:
        return out, None, 0
    grads = function_cls.backward(ctx, *grad_outputs)
    if not isinstance(grads, tuple):
        grads = (grads,)
    return out, tuple(grads), len(ctx.saved_tensors)


def vjp(fn, inputs, grad_output, needs_grad=None):
    """Forward ``fn(*inputs)`` with autograd on, then ``torch.autograd.grad`` against grad_output."""
    needs_grad = needs_grad or [isinstance(x, torch.Tensor) and x.is_floating_point() for x in inputs]
    xs = [x.detach().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x, m in zip(inputs, needs_grad)]
    out = fn(*xs)
    wrt = [x for x, m in zip(xs, needs_grad) if m]
    grads = torch.autograd.grad(out, wrt, grad_output, allow_unused=True)
    it = iter(grads)
    return out, [next(it) if m else None for m in needs_grad]


def list_input_vjp(fn, inputs, grad_outputs):
    """Gradients of ``sum_l <fn(inputs)[l], grad_outputs[l]>`` with respect to each tensor of the list
    ``inputs``, for modules whose forward takes one list of tensors (an FPN)."""
    leaves = [x.detach().requires_grad_() for x in inputs]
    outputs = list(fn(leaves))
    grads = torch.autograd.grad(outputs, leaves, list(grad_outputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def graph_nodes(graph_module):
    """(op, target) strings of an FX ``GraphModule``'s nodes, plus the called modules' types."""
    nodes = []
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:
        target = node.target
        if node.op == "call_module":
            described = type(modules[target]).__name__
        elif callable(target):
            described = getattr(target, "__name__", None) or str(target)
            described = str(target) if hasattr(target, "_schema") else described
        else:
            described = str(target)
        nodes.append((node.op, described))
    return nodes


def set_grads(module, grads):
    """Set each parameter's ``.grad`` from ``grads`` (name -> Tensor or None)."""
    for name, p in module.named_parameters():
        g = grads.get(name)
        p.grad = None if g is None else g.to(p.device, p.dtype).clone()
    return None


def backward_mse(model, x, y):
    """Accumulate the gradient of mse_loss(model(x), y) into the model's parameters; return the loss."""
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss.detach()


def call_with_snapshot(fn, args):
    """Call ``fn(*args)`` and report whether it changed its arguments in place (``call_with_deep_snapshot``: tensors,
    list lengths, dict keys, at any depth) and whether it returned one of their tensors itself.

    Returns (result, [changed? per argument], [aliased? per argument]); returned tensors are searched one level deep.
    """
    def tensors(value):
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, (list, tuple)):
            return [v for v in value if isinstance(v, torch.Tensor)]
        if isinstance(value, dict):
            return [v for v in value.values() if isinstance(v, torch.Tensor)]
        return []

    result, changed = call_with_deep_snapshot(fn, args)
    returned = tensors(result)
    aliased = [any(r is t for r in returned for t in tensors(a)) for a in args]
    return result, changed, aliased


def module_training_flags(module):
    """[(name, training)] of the module and all its sub-modules."""
    return [(name, bool(m.training)) for name, m in module.named_modules()]


def parameter_grads(module):
    """{name: copy of the parameter's .grad (None when it has none)} of a module."""
    return {name: None if p.grad is None else p.grad.detach().clone() for name, p in module.named_parameters()}


def function_mutations(function_cls, inputs, needs_grad, grad_outputs):
    """Run ``function_cls.apply`` (inputs requiring grad per ``needs_grad``), then its ``backward``
    directly on the real ctx; report what either pass changed in place.

    Returns {"inputs": [changed? per input], "grad_outputs": [changed? per grad_output]}.
    """
    def changed(before, after):
        return [isinstance(a, torch.Tensor) and (a.dtype != b.dtype or not torch.equal(a.detach(), b)) for b, a in zip(before, after)]

    before_in = [x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    before_g = [g.detach().clone() for g in grad_outputs]
    xs = [x.detach().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x, m in zip(inputs, needs_grad)]
    ctx = getattr(function_cls.apply(*xs), "grad_fn", None)
    if ctx is not None:
        function_cls.backward(ctx, *grad_outputs)
    return {"inputs": changed(before_in, inputs), "grad_outputs": changed(before_g, grad_outputs)}


def _snapshot(value, depth=0):
    """A copy of ``value``'s tensors inside its lists, tuples and dicts (up to 8 levels)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if depth >= 8:
        return None
    if isinstance(value, dict):
        return {k: _snapshot(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_snapshot(v, depth + 1) for v in value]
    return None


def _same(before, value, depth=0) -> bool:
    """``value`` still matches its ``_snapshot``: tensors' values, dtypes and shapes, lists' lengths, dicts' keys."""
    if isinstance(value, torch.Tensor):
        return isinstance(before, torch.Tensor) and before.dtype == value.dtype and before.shape == value.shape and torch.equal(before, value.detach())
    if depth >= 8:
        return True
    if isinstance(value, dict):
        return isinstance(before, dict) and list(before) == list(value) and all(_same(before[k], value[k], depth + 1) for k in value)
    if isinstance(value, (list, tuple)):
        return isinstance(before, list) and len(before) == len(value) and all(_same(b, v, depth + 1) for b, v in zip(before, value))
    return True


def call_with_deep_snapshot(fn, args):
    """Call ``fn(*args)`` and report, per argument, whether anything inside it changed: a tensor's
    values or dtype, a list's / tuple's length, a dict's keys, at any depth (up to 8 levels).

    Returns (result, [changed? per argument]).
    """
    before = [_snapshot(a) for a in args]
    result = fn(*args)
    return result, [not _same(b, a) for b, a in zip(before, args)]


from torch.utils._python_dispatch import TorchDispatchMode as _TorchDispatchMode  # noqa: E402

_current_autograd_node = torch._C._current_autograd_node  # captured before any student cell runs


class _EngineOps(_TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if _current_autograd_node() is not None:
            self.names.add(func._schema.name)
        return func(*args, **(kwargs or {}))


def call_watching_autograd_engine(fn, args):
    """Call ``fn(*args)``; also return the operators that the autograd engine ran during the call in
    this thread (dispatched while a backward node executes). Non-empty when ``fn`` used reverse-mode
    autograd, however it reached the engine (even its C++ entry point). Returns (result, sorted names)."""
    mode = _EngineOps()
    with mode:
        result = fn(*args)
    return result, sorted(mode.names)


def function_forward(function_cls, inputs, needs_grad):
    """``function_cls.apply(*inputs)`` with the inputs requiring grad per ``needs_grad``.

    Returns (output, ctx): ctx is the output's grad_fn (None when autograd recorded nothing), which a
    test can pass to ``function_cls.backward`` to run the backward pass directly."""
    xs = [x.detach().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x, m in zip(inputs, needs_grad)]
    out = function_cls.apply(*xs)
    return out, getattr(out, "grad_fn", None)
