"""Make text that a submission influenced safe to show: on the TA's terminal, in logs, on Gradescope.

Student code controls exception messages, printed output, cell errors and names. Before any of it
reaches a sink it goes through :func:`clean` (no ANSI escapes or control characters, no lone
surrogates, bounded length and line count). Text that is shown *as the student's* goes through
:func:`quoted`, so that it can never pass for a line the grader wrote (``PASS  test_x  5/5``).
"""
from __future__ import annotations

import re

DEFAULT_LIMIT = 4000
DEFAULT_MAX_LINES = 200

# ANSI/VT escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks), and 2-byte ESC codes.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?|\x1b[PX^_][^\x1b\n]*(?:\x1b\\)?|\x1b[ -/]*[0-~]?|\x9b[0-?]*[ -/]*[@-~]")
# Everything else that moves the cursor, rings, switches charsets or reorders text (bidi overrides),
# except \t and \n; \r and the Unicode line separators become \n (handled before this runs).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_NEWLINES = re.compile(r"\r\n?|[\u2028\u2029\x85\x0b\x0c]")
# A line the grader itself prints in a summary (``  PASS  name  5/5``, ``== a1: 100 / 100 points``).
_GRADER_LINE = re.compile(r"^[ \t]*(?:PASS|FAIL|==)(?:[ \t]|$)", re.M)


def clean(text: object, limit: int = DEFAULT_LIMIT, max_lines: int = DEFAULT_MAX_LINES) -> str:
    """``text`` as printable, bounded text: no escapes or control characters but ``\\n`` and ``\\t``,
    lone surrogates and undecodable bytes replaced by U+FFFD, at most ``max_lines`` lines and
    ``limit`` characters, with a marker saying how much was cut."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    elif not isinstance(text, str):
        try:
            text = str(text)
        except Exception as exc:  # noqa: BLE001 - a student's __str__ may do anything
            text = f"<unprintable {type(text).__name__}: {type(exc).__name__}>"
    window = 4 * limit + 4096  # enough to fill `limit` after cleaning; the rest is only counted
    unread = max(len(text) - window, 0)
    text = _SURROGATE.sub("\ufffd", text[:window])
    text = _CONTROL.sub("", _ANSI.sub("", _NEWLINES.sub("\n", text)))
    lines = text.split("\n")
    count = len(lines) - text.endswith("\n")  # a final newline does not start another line
    if count > max_lines:
        return _cap("\n".join(lines[:max_lines]), limit) + f"\n... ({count - max_lines} more lines)"
    return _cap(text, limit, unread)


def _cap(text: str, limit: int, unread: int = 0) -> str:
    """``text`` cut to ``limit`` characters, saying how many more there were."""
    more = max(len(text) - limit, 0) + unread
    return text[:limit] + f"... ({more} more characters)" if more else text


def one_line(text: object, limit: int = 200) -> str:
    """:func:`clean` for a name or a title: a single line."""
    return " ".join(clean(text, limit, max_lines=20).split("\n")).strip()


def defang(text: str) -> str:
    """Prefix ``| `` to every line of ``text`` that looks like one the grader prints (``PASS …``)."""
    if not _GRADER_LINE.search(text):
        return text
    return "\n".join("| " + ln if _GRADER_LINE.match(ln) else ln for ln in text.split("\n"))


def quoted(text: object, label: str = "your code said:", limit: int = DEFAULT_LIMIT, max_lines: int = 50) -> str:
    """Student-originated ``text``, cleaned and marked as such::

        your code said:
            | ZeroDivisionError: division by zero
            |   (each line of it, indented and prefixed)

    Use it for anything the student's code produced: exception messages, printed output, cell errors.
    """
    body = clean(text, limit, max_lines)
    return label + "\n" + "\n".join("    | " + ln for ln in body.split("\n"))
