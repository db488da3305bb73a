"""Trusted side of the wire format shared with ``worker_main.py``.

Values from the worker are loaded with ``torch.load(weights_only=True)``: a hostile payload can
at worst be data, never code. After loading, ``check_plain`` rejects anything but the plain types.
"""
from __future__ import annotations

import io
import os
import select
import struct
import time
import warnings

import torch

MARK = "\x00kind"
MAX_FRAME = 1 << 30


class FrameTimeout(Exception):
    """The worker did not answer within the allowed time."""


class FrameEOF(Exception):
    """The worker closed its end of the pipe (it exited or crashed)."""


def encode_frame(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    return struct.pack(">Q", len(data)) + data


def write_frame(fd: int, payload) -> None:
    view = memoryview(encode_frame(payload))
    while view:
        view = view[os.write(fd, view) :]


def read_frame(fd: int, deadline: float):
    header = _read_exact(fd, 8, deadline)
    (n,) = struct.unpack(">Q", header)
    if n > MAX_FRAME:
        raise ValueError(f"the worker sent a {n}-byte reply, over the {MAX_FRAME}-byte limit")
    body = _read_exact(fd, n, deadline)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything but plain data is refused
        raise ValueError(f"the worker's reply holds something other than plain data ({type(exc).__name__})") from None


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrameTimeout()
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            raise FrameTimeout()
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise FrameEOF()
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


PLAIN_SCALARS = (type(None), bool, int, float, str)


def check_plain(value, depth: int = 0) -> None:
    """Raise ValueError unless ``value`` is built only of plain tensors, scalars and containers."""
    if depth > 40:
        raise ValueError("reply nested too deeply")
    if type(value) in PLAIN_SCALARS or type(value) is torch.Tensor:
        return
    if type(value) in (list, tuple):
        for v in value:
            check_plain(v, depth + 1)
        return
    if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
        for k, v in value.items():
            if type(k) not in PLAIN_SCALARS:
                raise ValueError(f"reply has a dict key of type {type(k).__name__}")
            check_plain(v, depth + 1)
        return
    raise ValueError(f"reply holds a {type(value).__name__}")
