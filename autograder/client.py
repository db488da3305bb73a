"""Trusted side of the worker: start it, talk to it, restart it, and the proxies tests use.

    client = WorkerClient(cells)              # cells: [(grade_id, source)] of the submission
    student = StudentProxy(client)
    student.box_iou(a, b)                      # runs in the worker, the result is plain data
    net = student.TwoLayerNet(4, 8, 2)         # a module stays in the worker: a RemoteObject
    net(x); net.state_dict()
    r = student.call("nms", boxes, scores, 0.5, count_ops=True)   # r.value, r.ops
"""
from __future__ import annotations

import hashlib
import os
import select
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from autograder import basic_sandbox, sandbox
from autograder.sanitize import quoted
from autograder.protocol import MARK, FrameEOF, FrameTimeout, check_plain, encode_frame, read_frame


class StudentError(Exception):
    """The student's code raised an exception; the message is theirs, with their traceback."""


class WorkerFailure(Exception):
    """The worker timed out, crashed or sent something that is not plain data."""


class GraderError(Exception):
    """The grader's own support code failed in the worker: a bug to report, not the student's fault."""


@dataclass
class CallResult:
    value: Any
    ops: dict[str, int] = field(default_factory=dict)  # ATen / custom ops dispatched (count_ops)
    calls: dict[str, int] = field(default_factory=dict)  # watched functions and kernels (watch, watch_ops)
    lines: int = 0  # lines of the student's cells executed (count_lines)


class WorkerClient:
    """One worker process at a time; a dead or hung worker is killed and restarted on next use."""

    def __init__(self, cells: list[tuple[str, str]], limits: sandbox.Limits | None = None,
                 support: list[tuple[str, str]] = ()) -> None:
        self.cells = list(cells)
        self.support = list(support)  # the grader's modules, loaded before the cells
        self.limits = limits or sandbox.Limits()
        self.confinement = sandbox.choose()
        self.proc: subprocess.Popen | None = None
        self.generation = 0
        self.cell_errors: dict[str, str] = {}
        self.restarts = 0
        self.load_failure: str | None = None
        self.time_used = 0.0  # seconds spent waiting for the worker, against limits.submission_budget_s
        self._workdir: sandbox.WorkDir | None = None

    # -- life cycle
    def start(self) -> None:
        if self.load_failure is not None:
            raise WorkerFailure(self.load_failure)
        self.close()
        if self.generation:
            self.restarts += 1
        self._spawn()
        try:
            self._exchange(None, self.limits.start_timeout_s, what="starting the sandboxed worker")
        except WorkerFailure as exc:
            # No student code has run yet: the sandbox itself failed (no namespaces here?). Refuse (SandboxUnavailable),
            # or, where the course allowed it, use the basic sandbox and say so in the results.
            reason = " ".join(str(exc).split())[-300:]
            if self.confinement.mode != "bubblewrap":
                raise sandbox.SandboxUnavailable(f"grading refused: the basic sandbox could not start the worker ({reason})") from None
            self.confinement = sandbox.fall_back(reason)
            self._spawn()
            self._exchange(None, self.limits.start_timeout_s, what="starting the worker")
        self.generation += 1
        try:
            reply = self._exchange({"op": "load", "support": self.support, "cells": self.cells}, self.limits.load_timeout_s, what="running your notebook's graded cells")
        except GraderError:
            self.close()
            raise
        except (WorkerFailure, StudentError) as exc:
            # Loading is deterministic: do not retry it for every test.
            self.load_failure = f"{exc}"
            raise WorkerFailure(self.load_failure) from None
        self.cell_errors = {name: err for name, err in reply["cells"] if err}
        self._kill_strays()

    def _kill_strays(self) -> None:
        """Processes the student's code left running between requests would compete with the next call."""
        if self.proc is not None and self.proc.poll() is None and self._workdir is not None:
            sandbox.kill_strays(self.proc.pid, self._workdir.cgroup)

    def _spawn(self) -> None:
        self.close()
        self._workdir = workdir = sandbox.WorkDir(self.confinement.user, self.limits)
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        out = open(workdir.stdout, "wb")
        try:
            self.proc = subprocess.Popen(
                sandbox.worker_command(self.confinement, workdir, to_child_r, from_child_w),
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir.path,
                env=sandbox.scrubbed_env(str(workdir.path), self.limits.threads),
                preexec_fn=sandbox.make_preexec(self.limits, self.confinement.user, switch_user=self.confinement.mode == "basic", workdir=workdir,
                                                confine=basic_sandbox.confine_fn(self.confinement, workdir.path)),
                start_new_session=True,  # its own process group, killed as a whole
            )
        except subprocess.SubprocessError as exc:  # the confinement itself failed in the child: no student code ran
            raise sandbox.SandboxUnavailable(f"grading refused: the worker could not be confined ({exc})") from None
        finally:
            out.close()
            os.close(to_child_r)
            os.close(from_child_w)

    def ensure_started(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.start()

    def close(self) -> None:
        if self.proc is not None:
            sandbox.kill_tree(self.proc.pid, self._workdir.cgroup if self._workdir else None)
            self.proc.wait()
            for fd in (self._to_child, self._from_child):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.proc = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> WorkerClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def output_tail(self, n: int = 1500) -> str:
        """The last ``n`` characters the student's code printed."""
        if self._workdir is None or not self._workdir.stdout.exists():
            return ""
        with open(self._workdir.stdout, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - n))
            return f.read().decode("utf-8", "replace")

    # -- requests
    def _exchange(self, payload: dict | None, timeout: float, what: str) -> dict:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        try:
            if payload is not None:  # None: only read (the worker's hello)
                self._write(encode_frame(payload), deadline)
            reply = read_frame(self._from_child, deadline)
            check_plain(reply)
        except FrameTimeout:
            self.close()
            raise WorkerFailure(f"timed out after {timeout:.0f} s while {what} (an infinite loop, or far too slow); the worker was restarted") from None
        except (FrameEOF, BrokenPipeError):
            code = self.proc.wait() if self.proc else None
            tail = self.output_tail(600)
            self.close()
            how = f"killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
            hint = " (memory or CPU-time limit?)" if code is not None and code < 0 else ""
            raise WorkerFailure(f"your code {how}{hint} while {what}; the worker was restarted." + (f"\n{quoted(tail, label='Last output:')}" if tail else "")) from None
        except ValueError as exc:
            self.close()
            raise WorkerFailure(f"{exc} while {what}") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            self.close()
            raise WorkerFailure(f"the worker sent a malformed reply while {what}")
        if not reply["ok"] and reply.get("grader_error"):
            raise GraderError(f"the grader's support code failed in the worker: {reply.get('error')}\n{reply.get('traceback', '')}")
        if not reply["ok"]:
            message = str(reply.get("error", "unknown error"))
            tb = str(reply.get("traceback") or "").strip()
            raise StudentError(message + (f"\nTraceback (your code):\n{tb}" if tb else ""))
        return reply

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameTimeout()
            _, ready, _ = select.select([], [self._to_child], [], remaining)
            if ready:
                view = view[os.write(self._to_child, view[: 1 << 16]) :]

    def request(self, payload: dict, timeout: float | None = None, what: str = "running your code") -> dict:
        left = self.limits.submission_budget_s - self.time_used
        if left <= 0:
            raise WorkerFailure(f"not run: your code used the whole time budget of this submission ({self.limits.submission_budget_s:.0f} s)")
        started = time.monotonic()
        try:
            self.ensure_started()
            return self._exchange(self._encode(payload), min(timeout or self.limits.call_timeout_s, left), what)
        finally:
            self.time_used += time.monotonic() - started
            self._kill_strays()

    def call(self, target: dict, args=(), kwargs=None, *, count_ops: bool = False, count_lines: bool = False, watch=(),
             watch_ops=(), timeout: float | None = None) -> CallResult:
        """Call ``target`` in the worker. ``watch``: dotted paths of Python functions to count (however
        the student reached them); ``watch_ops``: operators (``torchvision::nms``) counted from every thread."""
        name = target.get("path") or "object"
        reply = self.request(
            {"op": "call", "target": target, "args": tuple(args), "kwargs": dict(kwargs or {}), "count_ops": count_ops,
             "count_lines": count_lines, "watch": list(watch), "watch_ops": list(watch_ops)},
            timeout,
            what=f"calling {name}",
        )
        lines = reply.get("lines", 0)
        return CallResult(self._decode(reply.get("value")), reply.get("ops", {}), reply.get("calls", {}), lines if type(lines) is int else 0)

    def release_all(self) -> None:
        """Drop every object the worker keeps for the tests (called when a test ends)."""
        if self.proc is not None and self.proc.poll() is None and self.load_failure is None:
            self.request({"op": "release", "ids": "all"}, what="releasing objects")

    def getattr(self, target: dict) -> Any:
        return self._decode(self.request({"op": "getattr", "target": target}, what=f"reading {target.get('path')}")["value"])

    # -- values
    def _encode(self, value):
        if isinstance(value, RemoteObject):
            if value._generation != self.generation:
                raise WorkerFailure("this object lived in a worker that was restarted after a crash or timeout")
            return {MARK: "handle", "id": value._id}
        if isinstance(value, torch.dtype):
            return {MARK: "dtype", "name": str(value)}
        if isinstance(value, torch.device):
            return {MARK: "device", "name": str(value)}
        if isinstance(value, torch.Tensor):
            return value.detach().cpu()
        if isinstance(value, (list, tuple)):
            return type(value)(self._encode(v) for v in value)
        if isinstance(value, dict):
            return {k: self._encode(v) for k, v in value.items()}
        return value

    def _decode(self, value):
        if isinstance(value, dict):
            kind = value.get(MARK)
            if kind == "handle":
                return RemoteObject(self, int(value["id"]), str(value.get("type", "?")))
            if kind == "dtype":
                return getattr(torch, str(value["name"]).split(".")[-1])
            if kind == "device":
                return torch.device(str(value["name"]))
            return {k: self._decode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._decode(v) for v in value)
        return value


class RemoteObject:
    """An object that lives in the worker (a module, an optimizer, a class ...)."""

    __slots__ = ("_client", "_id", "_type", "_generation")

    def __init__(self, client: WorkerClient, hid: int, type_name: str) -> None:
        self._client = client
        self._id = hid
        self._type = type_name
        self._generation = client.generation

    def _target(self, path: str = "") -> dict:
        if self._generation != self._client.generation:
            raise WorkerFailure("this object lived in a worker that was restarted after a crash or timeout")
        return {"kind": "handle", "id": self._id, "path": path}

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return self._client.getattr(self._target(name))

    def __call__(self, *args, **kwargs):
        return self._client.call(self._target(), args, kwargs).value

    def __getitem__(self, key):
        return self._client.call(self._target("__getitem__"), (key,)).value

    def __len__(self) -> int:
        n = self._client.call(self._target("__len__")).value
        if type(n) is not int or n < 0:
            raise WorkerFailure(f"len() of {self._type} returned {type(n).__name__}, not a count")
        return n

    def call_method(self, name: str, *args, count_ops: bool = False, count_lines: bool = False, watch=(), watch_ops=(), **kwargs) -> CallResult:
        return self._client.call(self._target(name), args, kwargs, count_ops=count_ops, count_lines=count_lines, watch=watch, watch_ops=watch_ops)

    @property
    def remote_type(self) -> str:
        return self._type

    def __repr__(self) -> str:
        return f"<remote {self._type}>"


class RemotePath:
    """A dotted name resolved in the worker when called (``student.Sigmoid.apply``)."""

    def __init__(self, client: WorkerClient, kind: str, path: str) -> None:
        self._client, self._kind, self._path = client, kind, path

    def __getattr__(self, name: str) -> RemotePath:
        if name.startswith("__"):
            raise AttributeError(name)
        return RemotePath(self._client, self._kind, f"{self._path}.{name}" if self._path else name)

    def __call__(self, *args, **kwargs):
        return self._client.call({"kind": self._kind, "path": self._path}, args, kwargs).value

    def get(self):
        """Fetch the named object itself (plain data, or a RemoteObject)."""
        return self._client.getattr({"kind": self._kind, "path": self._path})


class StudentProxy:
    """What hidden tests see as ``student``: the notebook's names, plus library and helper access."""

    def __init__(self, client: WorkerClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> RemotePath:
        if name.startswith("__"):
            raise AttributeError(name)
        return RemotePath(self._client, "student", name)

    def call(self, path: str, *args, count_ops: bool = False, count_lines: bool = False, watch=(), watch_ops=(),
             timeout: float | None = None, **kwargs) -> CallResult:
        """Call ``path`` in the student's namespace and also return op / line / watched-call counts."""
        return self._client.call({"kind": "student", "path": path}, args, kwargs, count_ops=count_ops, count_lines=count_lines,
                                 watch=watch, watch_ops=watch_ops, timeout=timeout)

    def lib(self, path: str) -> RemotePath:
        """A library object built in the worker, e.g. ``student.lib("torch.nn.Linear")(4, 2)``."""
        return RemotePath(self._client, "lib", path)

    def helper(self, name: str) -> RemotePath:
        """A function of the grader's support modules in the worker (``vjp``, ``is_instance``, a training recipe ...)."""
        return RemotePath(self._client, "helper", name)

    def call_helper(self, name: str, *args, timeout: float | None = None, **kwargs) -> CallResult:
        """Call a support function with a longer time limit (training recipes)."""
        return self._client.call({"kind": "helper", "path": name}, args, kwargs, timeout=timeout)

    @property
    def submission_digest(self) -> str:
        """A digest of the submission's graded code, computed here: what per-submission secrets are derived from."""
        digest = hashlib.sha256()
        for name, source in self._client.cells:
            digest.update(f"{len(name)}:{name}{len(source)}:{source}".encode())
        return digest.hexdigest()

    @property
    def cell_errors(self) -> dict[str, str]:
        self._client.ensure_started()
        return dict(self._client.cell_errors)
