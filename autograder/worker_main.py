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
import inspect
import io
import os
import struct
import sys
import threading
import traceback
import types
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

MARK = "\x00kind"  # key that tags a dict as an encoded non-plain value
MAX_DEPTH = 32
MAX_ITEMS = 200_000  # Python values (numbers, strings, containers) in one reply; the grader also bounds bytes
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
        # The grader's support functions, captured when loaded (before any student cell runs).
        self.support: dict[str, object] = {}

    # -- values crossing to the grader
    def encode(self, value):
        """``value`` as plain data for torch.save; objects stay here behind handles."""
        self._items_left = MAX_ITEMS
        return self._encode(value, 0)

    def _encode(self, value, depth: int):
        self._items_left -= 1
        if self._items_left < 0:
            raise ValueError(f"your code returned over {MAX_ITEMS} Python values (the grader accepts 4 MiB of Python objects): "
                             "return tensors (or a few numbers), not long Python lists, strings or thousands of tensors")
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
            return type(value)(self._encode(v, depth + 1) for v in value)
        if type(value) is dict or (isinstance(value, dict) and type(value).__module__ == "collections"):
            if all(type(k) in (str, int, float, bool) for k in value):
                return {k: self._encode(v, depth + 1) for k, v in value.items()}
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
            if target["path"] not in self.support:
                raise GraderSupportError(f"the grader has no support function {target['path']!r}")
            return self.support[target["path"]]
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
            try:
                self.load_support(request.get("support", []))
            except BaseException as exc:  # noqa: BLE001 - reported as the grader's failure, not the student's
                return {"ok": False, "grader_error": True, "error": f"{type(exc).__name__}: {_short(exc)}", "traceback": traceback.format_exc()[-3000:]}
            return {"ok": True, "cells": [[name, self.run_cell(name, src)] for name, src in request["cells"]]}
        if op == "getattr":
            return {"ok": True, "value": self.encode(self.resolve(request["target"]))}
        if op == "release":
            ids = request["ids"]
            if ids == "all":
                self.handles.clear()
            else:
                for hid in ids:
                    self.handles.pop(hid, None)
            return {"ok": True}
        if op == "call":
            fn = self.resolve(request["target"])
            args = self.decode(request.get("args", ()))
            kwargs = self.decode(request.get("kwargs", {}))
            watch = request.get("watch") or []
            watch_ops = request.get("watch_ops") or []
            with OpCounter(enabled=bool(request.get("count_ops"))) as ops, LineCounter(enabled=bool(request.get("count_lines"))) as lines, \
                    CallCounter(watch) as calls, KernelWatch(watch_ops) as kernels:
                result = fn(*args, **kwargs)
            reply = {"ok": True, "value": self.encode(result)}
            if request.get("count_ops"):
                reply["ops"] = dict(ops.counts)
            if request.get("count_lines"):
                reply["lines"] = lines.count
            if watch or watch_ops:
                reply["calls"] = {**calls.counts, **kernels.counts}
            return reply
        raise ValueError(f"unknown op {op!r}")

    def load_support(self, modules: list) -> None:
        """Run the grader's support modules, in order, as private modules and capture their public functions.
        Each module sees ``STUDENT_MODULE``, ``import_path`` and the public functions of the modules loaded before it."""
        for name, source in modules:
            module = types.ModuleType(name)
            module.__dict__.update(self.support, STUDENT_MODULE=STUDENT_MODULE, import_path=import_path, __builtins__=builtins)
            exec(compile(source, f"<grader {name}>", "exec"), module.__dict__)  # noqa: S102 - the grader's own code
            for attr, value in vars(module).items():
                if not attr.startswith("_") and callable(value) and getattr(value, "__module__", None) == name:
                    if attr in self.support:
                        raise GraderSupportError(f"support module {name} redefines {attr!r} of an earlier one")
                    self.support[attr] = value

    def run_cell(self, name: str, source: str) -> str | None:
        try:
            code = compile(source, f"<cell {name}>", "exec")
            with contextlib.redirect_stdout(sys.__stderr__):
                exec(code, self.module.__dict__)  # noqa: S102 - this is the sandbox
        except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt included
            return f"{type(exc).__name__}: {_short(exc)}\n{student_traceback(exc)}".rstrip()
        return None


class GraderSupportError(Exception):
    """The grader asked for something its support modules do not provide."""


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
        if name == "aten::convolution" and len(args) > 6 and args[6] is True:
            name = "aten::convolution(transposed)"  # conv_transpose*, however it was reached
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


class LineCounter:
    """Counts the lines of the student's cells executed during a call (a Python loop over boxes
    shows up here even when it does no tensor operation per element)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.count = 0

    def _global(self, frame, event, arg):
        return self._local if event == "call" and frame.f_code.co_filename.startswith("<cell ") else None

    def _local(self, frame, event, arg):
        if event == "line":
            self.count += 1
        return self._local

    def __enter__(self):
        if self.enabled:
            self._previous = sys.gettrace()
            sys.settrace(self._global)
            threading.settrace(self._global)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            sys.settrace(self._previous)
            threading.settrace(None)
        return None


def _trampoline_code(original: types.CodeType, hook) -> types.CodeType | None:
    """A code object with ``original``'s free variables whose body is ``return hook(*a, **kw)``."""
    free = original.co_freevars
    src = "def _outer():\n" + "".join(f"    {v} = None\n" for v in free) + "    def _watched(*args, **kwargs):\n"
    if free:  # reference the free variables so the closure layout matches the original's
        src += f"        ({', '.join(free)},)\n"
    src += "        return '__HOOK__'(*args, **kwargs)\n    return _watched\n"
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "'str' object is not callable": the constant is replaced below
        exec(compile(src, "<grader watch>", "exec"), namespace)  # noqa: S102 - fixed template
    code = namespace["_outer"]().__code__
    if code.co_freevars != free:
        return None
    consts = tuple(hook if c == "__HOOK__" else c for c in code.co_consts)
    return code.replace(co_consts=consts, co_name=original.co_name, co_qualname=original.co_qualname)


class CallCounter:
    """Counts calls of Python functions named by dotted path (``torchvision.ops.nms``).

    The function objects themselves are instrumented for the duration of the call: their
    ``__code__`` is swapped for a counting trampoline, so calls through references the student
    captured earlier (``from torchvision.ops import nms as f``), aliases and other threads are
    all counted. Objects without Python code (C functions) are counted by replacing the attribute.
    """

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.counts = {p: 0 for p in paths}
        self.restore: list = []
        self.codes: dict = {}  # the watched functions' original code objects -> path

    def _profile(self, frame, event, arg):
        """Counts calls that run a watched function's original code (copies made with types.FunctionType share it)."""
        if event == "call":
            path = self.codes.get(frame.f_code)
            if path is not None:
                self.counts[path] += 1

    def __enter__(self):
        for path in self.paths:
            owner_path, _, attr = path.rpartition(".")
            try:
                owner = import_path(owner_path)
                target = inspect_static(owner, attr)
            except Exception:  # noqa: BLE001 - an absent path simply cannot be called
                continue
            fn = getattr(target, "__func__", target)  # classmethod / staticmethod / bound method
            if isinstance(fn, types.FunctionType) and self._swap_code(path, fn):
                continue
            original = getattr(owner, attr)
            setattr(owner, attr, self._counting(path, original))
            self.restore.append(lambda owner=owner, attr=attr, original=original: setattr(owner, attr, original))
        self._watch_copies()
        return self

    def _counting(self, path: str, call):
        counts = self.counts

        def counted(*args, **kwargs):
            counts[path] += 1
            return call(*args, **kwargs)

        return counted

    def _swap_code(self, path: str, fn: types.FunctionType) -> bool:
        original = fn.__code__
        try:  # a decorator's wrapper code is shared by every function it wraps: count the wrapped body's code
            body = inspect.unwrap(fn)
        except ValueError:
            body = fn
        if isinstance(body, types.FunctionType):
            self.codes[body.__code__] = path
        copy = types.FunctionType(original, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
        copy.__kwdefaults__ = fn.__kwdefaults__
        code = _trampoline_code(original, self._counting(path, copy))
        if code is None:
            return False
        fn.__code__ = code
        self.restore.append(lambda: setattr(fn, "__code__", original))
        return True

    def _watch_copies(self) -> None:
        if self.codes:
            self._previous_profile = sys.getprofile()
            sys.setprofile(self._profile)
            threading.setprofile(self._profile)
            self.restore.append(self._unwatch_copies)

    def _unwatch_copies(self) -> None:
        sys.setprofile(self._previous_profile)
        threading.setprofile(None)

    def __exit__(self, *exc):
        for undo in reversed(self.restore):
            undo()
        return None


def inspect_static(owner, attr: str):
    """``owner.attr`` without triggering descriptors (a classmethod stays a classmethod)."""
    if isinstance(owner, type):
        for klass in owner.__mro__:
            if attr in vars(klass):
                return vars(klass)[attr]
    return getattr(owner, attr)


class KernelWatch:
    """Counts dispatcher-level calls of custom operators such as ``torchvision::nms`` from ANY thread.

    A counting kernel is registered for the operator's autograd keys for the duration of the call
    (the dispatcher is process-wide, unlike a TorchDispatchMode); it counts, then runs the real
    kernel below autograd. Direct ``torch.ops.torchvision.nms(...)`` calls are therefore counted too.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.counts = {n: 0 for n in names}
        self.libraries: list = []

    def __enter__(self):
        for name in self.names:
            namespace, _, op_name = name.partition("::")
            try:
                packet = getattr(getattr(torch.ops, namespace), op_name)
                overload = packet.default
            except (AttributeError, RuntimeError):
                continue
            lib = torch.library.Library(namespace, "IMPL")
            counts = self.counts

            def counted(*args, _name=name, _overload=overload, **kwargs):
                counts[_name] += 1
                with torch._C._AutoDispatchBelowAutograd():
                    return _overload(*args, **kwargs)

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for key in ("AutogradCPU", "AutogradCUDA"):
                    lib.impl(op_name, counted, key)
            self.libraries.append(lib)
        return self

    def __exit__(self, *exc):
        for lib in self.libraries:
            lib._destroy()
        return None


def main() -> None:
    rfd, wfd = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(int(os.environ.get("GRADER_THREADS", "1")))
    # Student prints must never reach the protocol pipe: fd 1 and 2 are files set up by the parent.
    write_frame(wfd, {"ok": True, "hello": f"python {sys.version.split()[0]}, torch {torch.__version__}, uid {os.getuid()}"})
    Worker().serve(rfd, wfd)


if __name__ == "__main__":
    main()
