"""The course secret: where the trained tests' evaluation seeds come from. Never in git.

The shapes renderer is public, so whoever knows an evaluation seed can render the evaluation set
and its ground truth. The seeds are therefore derived (HMAC-SHA256) from a course secret that the
teaching team keeps outside the repository:

* ``GRADER_SECRET``: the secret itself, as hex (e.g. a CI or Gradescope variable); else
* ``GRADER_SECRET_FILE``: a file holding it; else
* ``<course root>/.grader-secret`` (git-ignored; ``make secret`` creates it, mode 0600; the
  Gradescope bundle carries a copy).

The same secret gives the same seeds, hence the same grades. A new term: ``make secret NEW=1``
(``python -m autograder secret --new``) and rebuild the bundles.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from autograder.assignments import COURSE_ROOT

SECRET_ENV = "GRADER_SECRET"
SECRET_FILE_ENV = "GRADER_SECRET_FILE"
DEFAULT_FILE = COURSE_ROOT / ".grader-secret"
SECRET_BYTES = 32


class MissingSecret(RuntimeError):
    """There is no course secret here: the trained tests cannot make their evaluation sets."""


def secret_file() -> Path:
    return Path(os.environ.get(SECRET_FILE_ENV) or DEFAULT_FILE)


def course_secret() -> bytes:
    """The secret's bytes; raises MissingSecret with the fix when it is missing or malformed."""
    text, where = os.environ.get(SECRET_ENV), f"${SECRET_ENV}"
    if not text:
        path = secret_file()
        where = str(path)
        try:
            text = path.read_text()
        except OSError:
            raise MissingSecret(
                f"no course secret: {path} does not exist and ${SECRET_ENV} is not set. The trained tests derive "
                f"their evaluation sets from it. Create one with `make secret` (or `python -m autograder secret`), or "
                f"copy the course's secret file there; every grader of the course must use the same one.") from None
    try:
        value = bytes.fromhex(text.strip())
    except ValueError:
        value = b""
    if len(value) < 16:
        raise MissingSecret(f"the course secret in {where} is not a hex string of at least 16 bytes; "
                            f"make a new one with `python -m autograder secret --new`")
    return value


def evaluation_seed(name: str) -> int:
    """A 62-bit seed for the evaluation set called ``name`` (e.g. ``"a3_two_stage/faster_rcnn"``)."""
    digest = hmac.new(course_secret(), f"evaluation-seed:{name}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 2


def create(path: Path | None = None, replace: bool = False) -> tuple[Path, bool]:
    """Write a new random secret to ``path`` (mode 0600) unless one is there; (path, whether it was written)."""
    path = path or secret_file()
    if path.exists() and not replace:
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(SECRET_BYTES) + "\n")
    os.replace(tmp, path)
    return path, True
