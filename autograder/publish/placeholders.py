"""Placeholders of ``lecture_utils/config.py``: refused for a term, tolerated for a preview.

The configuration ships with a placeholder organisation and Gradescope course
(``config.PLACEHOLDERS``). Publishing them would give students Colab links and a submission link
that lead nowhere. A preview (``--preview``, ``make publish PREVIEW=1``) is published anyway, with
the submission link replaced by "your instructor will give you the submission link".
"""
from __future__ import annotations

import re
from pathlib import Path

from lecture_utils import config


class PublishRefused(RuntimeError):
    """The public tree was not written (placeholders, or something private would be published)."""


def refuse_placeholders(preview: bool) -> list[str]:
    """The placeholder settings in use; raises PublishRefused when there are some and it is no preview."""
    found = config.placeholders_in_use()
    if found and not preview:
        lines = [f"  {name} = {getattr(config, name)!r}" for name in found]
        raise PublishRefused(
            "lecture_utils/config.py still holds placeholders:\n" + "\n".join(lines) + "\n"
            "Set the course's GitHub organisation (GITHUB_ORG) and its Gradescope course (SUBMISSION_URL) there, "
            "then run `make publish` again; or run `make publish PREVIEW=1` to publish a preview in which the "
            "pages say \"" + config.SUBMISSION_LINK_LATER + "\"."
        )
    return found


def published_submission_url(preview: bool) -> str | None:
    """The submission link the public tree shows: none in a preview while the URL is the placeholder."""
    if preview and config.SUBMISSION_URL == config.PLACEHOLDERS["SUBMISSION_URL"]:
        return None
    return config.SUBMISSION_URL


SUBMISSION_URL_LINE = re.compile(r"^SUBMISSION_URL\b.*$", re.M)


def preview_config(published_config: Path) -> None:
    """In the published copy of config.py, set ``SUBMISSION_URL = None`` (no fake link on any page)."""
    text = published_config.read_text()
    matches = SUBMISSION_URL_LINE.findall(text)
    if len(matches) != 1:
        raise PublishRefused(f"{published_config}: expected one `SUBMISSION_URL = ...` line, found {len(matches)}; "
                             "keep the setting on one line in lecture_utils/config.py")
    replacement = "SUBMISSION_URL: str | None = None  # preview: the course's Gradescope link is not set yet"
    published_config.write_text(SUBMISSION_URL_LINE.sub(replacement, text))
