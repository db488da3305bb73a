"""Trusted side of the wire format shared with ``worker_main.py``.

Values from the worker are loaded with ``torch.load(weights_only=True)``: a hostile payload can
at worst be data, never code. Before loading, its size is bounded — the whole frame, the pickled
Python objects in it (a 30-million-element list would otherwise take gigabytes here) and the number
of tensors — and after loading, ``check_plain`` rejects anything but the plain types.
"""
from __future__ import annotations

import io
import os
import select
import struct
import time
import warnings
import zipfile

import torch

MARK = "\x00kind"
MAX_FRAME = 512 << 20  # bytes in one reply, tensors included
MAX_PICKLE = 4 << 20  # bytes of pickled Python objects (lists, dicts, numbers, strings) in one reply
MAX_TENSORS = 20_000  # tensor storages in one reply
TOO_BIG = "return tensors (or a few numbers), not long Python lists, strings or thousands of tensors"


class FrameTimeout(Exception):
    """The worker did not answer within the allowed time."""


class FrameEOF(Exception):
    """The worker closed its end of the pipe (it exited or crashed)."""


def encode_frame(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    return struct.pack(">Q", len(data)) + data


def read_frame(fd: int, deadline: float):
    header = _read_exact(fd, 8, deadline)
    (n,) = struct.unpack(">Q", header)
    if n > MAX_FRAME:
        raise ValueError(f"the worker sent a {n}-byte reply, over the {MAX_FRAME}-byte limit")
    body = _read_exact(fd, n, deadline)
    check_size(body)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - anything but plain data is refused
        raise ValueError(f"the worker's reply holds something other than plain data ({type(exc).__name__})") from None


def check_size(body: bytes) -> None:
    """Refuse, before unpickling, a reply whose Python objects or tensor count exceed the limits."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ValueError("the worker's reply is not in torch.save's format") from None
    pickled = sum(e.file_size for e in entries if e.filename.endswith("data.pkl"))
    if pickled > MAX_PICKLE:
        raise ValueError(f"your code returned {pickled / 2**20:.1f} MiB of Python objects (limit {MAX_PICKLE / 2**20:.0f} MiB): {TOO_BIG}")
    storages = sum(1 for e in entries if "/data/" in e.filename and not e.filename.rsplit("/", 1)[-1].startswith("."))
    if storages > MAX_TENSORS:
        raise ValueError(f"your code returned {storages} tensors (limit {MAX_TENSORS}): {TOO_BIG}")


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
MAX_NODES = 500_000  # values visited when walking one reply; a shared list counts each time it is reached
MAX_DEPTH = 40


def check_plain(value) -> None:
    """Raise ValueError unless ``value`` is built only of plain tensors, scalars and containers.

    The walk is bounded by the number of values *visited*, not by bytes or distinct objects: pickle shares
    references, so a few hundred bytes can hold a list that holds the same list three times, 38 levels deep
    (3**38 values when walked). Such a reply is refused after ``MAX_NODES`` visits, in well under a second.
    """
    budget = MAX_NODES
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ValueError(f"your code returned over {MAX_NODES} values (counting shared ones each time they are reached): {TOO_BIG}")
        if depth > MAX_DEPTH:
            raise ValueError("reply nested too deeply")
        kind = type(item)
        if kind in PLAIN_SCALARS or kind is torch.Tensor:
            continue
        if kind in (list, tuple):
            stack.extend((v, depth + 1) for v in item)
            continue
        if isinstance(item, dict) and kind.__module__ in ("builtins", "collections"):
            for k, v in item.items():
                if type(k) not in PLAIN_SCALARS:
                    raise ValueError(f"reply has a dict key of type {type(k).__name__}")
                stack.append((v, depth + 1))
            continue
        raise ValueError(f"reply holds a {kind.__name__}")
