"""The sandboxed worker: the ONLY process that executes student code.

Started by ``autograder.client.WorkerClient`` as ``python -I -B worker_main.py RFD WFD`` from a
fresh temporary directory, it reads framed requests from fd RFD and writes framed replies to fd
WFD. Frames are ``8-byte big-endian length + torch.save(payload)``; payloads are loaded with
``torch.load(weights_only=True)`` on both sides, so only tensors, numbers, strings, lists,
tuples and dicts ever cross. Objects that cannot cross (modules, optimizers, ...) stay here and
are referred to by integer handles.

This file is self-contained on purpose (stdlib + torch only): it is copied next to the student
code and must not need anything from the grader's package.
"""
from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import os
import struct
import sys
import traceback
import types

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MARK = "\x00kind"  # key that tags a dict as an encoded non-plain value
MAX_DEPTH = 32
STUDENT_MODULE = "student_submission"


# ----------------------------------------------------------------------------- framing
def read_frame(fd: int):
    header = _read_exact(fd, 8)
    if header is None:
        return None
    (n,) = struct.unpack(">Q", header)
    body = _read_exact(fd, n)
    return torch.load(io.BytesIO(body), weights_only=True)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_frame(fd: int, payload) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    view = memoryview(struct.pack(">Q", len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


# ----------------------------------------------------------------------------- state
def import_path(path: str):
    """The object named by a dotted path such as ``torch.nn.Linear`` or ``torch.optim.SGD.step``."""
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))
    return obj


class Worker:
    def __init__(self) -> None:
        self.module = types.ModuleType(STUDENT_MODULE)
        self.module.__dict__["__builtins__"] = builtins
        sys.modules[STUDENT_MODULE] = self.module
        self.handles: dict[int, object] = {}
        self.next_handle = 1

    # -- values crossing to the grader
    def encode(self, value, depth: int = 0):
        if depth > MAX_DEPTH:
            return self.handle(value)
        if value is None or type(value) in (bool, int, float, str):
            return value
        if type(value) in (torch.Tensor, torch.nn.Parameter):
            return value.detach().to("cpu").clone()
        if type(value) is torch.dtype:
            return {MARK: "dtype", "name": str(value)}
        if type(value) is torch.device:
            return {MARK: "device", "name": str(value)}
        if type(value) is torch.Size:
            return tuple(int(v) for v in value)
        if type(value) in (list, tuple):
            return type(value)(self.encode(v, depth + 1) for v in value)
        if type(value) is dict or (isinstance(value, dict) and type(value).__module__ == "collections"):
            if all(type(k) in (str, int, float, bool) for k in value):
                return {k: self.encode(v, depth + 1) for k, v in value.items()}
        return self.handle(value)

    def handle(self, obj) -> dict:
        hid = self.next_handle
        self.next_handle += 1
        self.handles[hid] = obj
        cls = type(obj)
        return {MARK: "handle", "id": hid, "type": f"{cls.__module__}.{cls.__qualname__}"}

    # -- values coming from the grader
    def decode(self, value):
        if isinstance(value, dict):
            kind = value.get(MARK)
            if kind == "handle":
                return self.handles[value["id"]]
            if kind == "dtype":
                return getattr(torch, value["name"].split(".")[-1])
            if kind == "device":
                return torch.device(value["name"])
            return {k: self.decode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.decode(v) for v in value)
        return value

    def resolve(self, target: dict):
        kind = target["kind"]
        if kind == "student":
            obj = self.module
        elif kind == "lib":
            return import_path(target["path"])
        elif kind == "handle":
            obj = self.handles[target["id"]]
        elif kind == "helper":
            return HELPERS[target["path"]]
        else:
            raise ValueError(f"unknown target kind {kind!r}")
        for part in filter(None, target.get("path", "").split(".")):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                if kind == "student":
                    raise AttributeError(f"your notebook does not define {target['path']!r}") from None
                raise
        return obj

    # -- requests
    def serve(self, rfd: int, wfd: int) -> None:
        while True:
            request = read_frame(rfd)
            if request is None:
                return
            try:
                reply = self.dispatch(request)
            except BaseException as exc:  # noqa: BLE001 - everything student code raises is reported
                reply = {"ok": False, "error": f"{type(exc).__name__}: {_short(exc)}", "traceback": student_traceback(exc)}
            try:
                write_frame(wfd, reply)
            except Exception as exc:  # noqa: BLE001
                write_frame(wfd, {"ok": False, "error": f"the result could not be sent back to the grader ({type(exc).__name__}: {_short(exc)})"})

    def dispatch(self, request: dict) -> dict:
        op = request["op"]
        if op == "load":
            return {"ok": True, "cells": [[name, self.run_cell(name, src)] for name, src in request["cells"]]}
        if op == "getattr":
            return {"ok": True, "value": self.encode(self.resolve(request["target"]))}
        if op == "release":
            for hid in request["ids"]:
                self.handles.pop(hid, None)
            return {"ok": True}
        if op == "call":
            fn = self.resolve(request["target"])
            args = self.decode(request.get("args", ()))
            kwargs = self.decode(request.get("kwargs", {}))
            watch = request.get("watch") or []
            with OpCounter(enabled=bool(request.get("count_ops"))) as ops, CallCounter(watch) as calls:
                result = fn(*args, **kwargs)
            reply = {"ok": True, "value": self.encode(result)}
            if request.get("count_ops"):
                reply["ops"] = dict(ops.counts)
            if watch:
                reply["calls"] = dict(calls.counts)
            return reply
        if op == "ping":
            return {"ok": True, "value": "pong"}
        raise ValueError(f"unknown op {op!r}")

    def run_cell(self, name: str, source: str) -> str | None:
        try:
            code = compile(source, f"<cell {name}>", "exec")
            with contextlib.redirect_stdout(sys.__stderr__):
                exec(code, self.module.__dict__)  # noqa: S102 - this is the sandbox
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
            return f"{type(exc).__name__}: {_short(exc)}\n{student_traceback(exc)}".rstrip()
        return None


def _short(exc: BaseException, limit: int = 2000) -> str:
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001
        text = "<unprintable error>"
    return text if len(text) <= limit else text[:limit] + " ..."


def student_traceback(exc: BaseException, limit: int = 4000) -> str:
    """The traceback frames that belong to the student's cells only."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell ")]
    text = "".join(traceback.format_list(frames))
    return text[-limit:]


# ----------------------------------------------------------------------------- counting
class OpCounter(TorchDispatchMode):
    """Counts every ATen (and custom, e.g. torchvision::nms) op dispatched during a call."""

    def __init__(self, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.counts: dict[str, int] = {}

    def __enter__(self):
        return super().__enter__() if self.enabled else self

    def __exit__(self, *exc):
        return super().__exit__(*exc) if self.enabled else None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class CallCounter:
    """Wraps Python functions named by dotted path (``torch.autograd.grad``) and counts calls."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.counts = {p: 0 for p in paths}
        self.saved: list[tuple[object, str, object]] = []

    def __enter__(self):
        for path in self.paths:
            owner_path, _, attr = path.rpartition(".")
            try:
                owner = import_path(owner_path)
                original = getattr(owner, attr)
            except Exception:  # noqa: BLE001 - an absent path simply cannot be called
                continue
            self.saved.append((owner, attr, original))
            setattr(owner, attr, self._wrap(path, original))
        return self

    def _wrap(self, path: str, original):
        counts = self.counts

        def counted(*args, **kwargs):
            counts[path] += 1
            return original(*args, **kwargs)

        return counted

    def __exit__(self, *exc):
        for owner, attr, original in reversed(self.saved):
            setattr(owner, attr, original)
        return None


# ----------------------------------------------------------------------------- helpers
def _is_instance(obj, class_path: str) -> bool:
    cls = import_path(class_path)
    return isinstance(obj, cls)


def _function_backward(function_cls, inputs, needs_grad, grad_outputs):
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


def _vjp(fn, inputs, grad_output, needs_grad=None):
    """Forward ``fn(*inputs)`` with autograd on, then ``torch.autograd.grad`` against grad_output."""
    needs_grad = needs_grad or [isinstance(x, torch.Tensor) and x.is_floating_point() for x in inputs]
    xs = [x.detach().requires_grad_(bool(m)) if isinstance(x, torch.Tensor) and x.is_floating_point() else x for x, m in zip(inputs, needs_grad)]
    out = fn(*xs)
    wrt = [x for x, m in zip(xs, needs_grad) if m]
    grads = torch.autograd.grad(out, wrt, grad_output, allow_unused=True)
    it = iter(grads)
    return out, [next(it) if m else None for m in needs_grad]


def _graph_nodes(graph_module):
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


def _set_grads(module, grads):
    for name, p in module.named_parameters():
        g = grads.get(name)
        p.grad = None if g is None else g.to(p.device, p.dtype).clone()
    return None


def _backward_mse(model, x, y):
    """Accumulate the gradient of mse_loss(model(x), y) into the model's parameters; return the loss."""
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()
    return loss.detach()


HELPERS = {
    "backward_mse": _backward_mse,
    "is_instance": _is_instance,
    "function_backward": _function_backward,
    "vjp": _vjp,
    "graph_nodes": _graph_nodes,
    "set_grads": _set_grads,
    "type_name": lambda obj: f"{type(obj).__module__}.{type(obj).__qualname__}",
}


def main() -> None:
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(int(os.environ.get("GRADER_THREADS", "1")))
    # Student prints must never reach the protocol pipe: fd 1 and 2 are files set up by the parent.
    write_frame(wfd, {"ok": True, "hello": f"python {sys.version.split()[0]}, torch {torch.__version__}, uid {os.getuid()}"})
    Worker().serve(rfd, wfd)


if __name__ == "__main__":
    main()
