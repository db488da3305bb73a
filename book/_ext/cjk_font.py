"""The book's Chinese glyphs as a web font, so that the Chinese terms display without a system CJK font.

``book/_static/fonts/course-cjk.woff`` is Noto Sans CJK SC (SIL Open Font License, from Debian's
``fonts-noto-cjk``) reduced to the characters the book's sources use: about 0.1 % of the font.
``book/_static/course.css`` declares it with a ``unicode-range``, so a browser downloads it only for
pages with Chinese text and uses it for those characters alone.

As a Sphinx extension (``_config.yml``) it rewrites the subset at the start of ``make book`` when a
source uses a character the subset lacks and the Noto font is installed; without the font it says so
and leaves the file as it is (``tests/test_book.py`` then fails on the missing characters).

    python book/_ext/cjk_font.py           # rewrite the subset from the sources
    python book/_ext/cjk_font.py --check   # exit 1 if a character of the sources is missing from it
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1]
FONT_FILE = BOOK / "_static" / "fonts" / "course-cjk.woff"
SYSTEM_FONT = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SYSTEM_FONT_NAME = "Noto Sans CJK SC"
# CJK punctuation, radicals, ideographs, full-width forms: what the web font is for (course.css's unicode-range)
CJK = re.compile(r"[\u2e80-\u2fdf\u3000-\u303f\u31c0-\u31ef\u3200-\u32ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")
SOURCE_SUFFIXES = {".md", ".yml", ".bib", ".py"}


def used_characters() -> set[str]:
    chars: set[str] = set()
    for path in BOOK.rglob("*"):
        if path.suffix in SOURCE_SUFFIXES and "_build" not in path.parts and path.is_file():
            chars.update(CJK.findall(path.read_text(encoding="utf-8")))
    return chars


def font_characters(path: Path = FONT_FILE) -> set[str]:
    if not path.exists():
        return set()
    from fontTools.ttLib import TTFont

    with TTFont(path) as font:
        return {chr(code) for code in font.getBestCmap()}


def write_subset(chars: set[str]) -> None:
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    collection = TTCollection(SYSTEM_FONT)
    font = next(f for f in collection.fonts if f["name"].getDebugName(1) == SYSTEM_FONT_NAME)
    options = subset.Options()
    options.flavor = "woff"            # zlib; woff2 would need the brotli module
    options.layout_features = ["*"]
    options.name_IDs = ["*"]           # keeps the copyright and the licence (OFL) in the file
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(ord(c) for c in chars))
    subsetter.subset(font)
    FONT_FILE.parent.mkdir(parents=True, exist_ok=True)
    font.flavor = "woff"
    font.recalcTimestamp = False      # the same characters give the same file
    font.save(FONT_FILE)


def missing() -> set[str]:
    return used_characters() - font_characters()


def update(log=print) -> None:
    lacking = missing()
    if not lacking:
        return
    if not SYSTEM_FONT.exists():
        log(f"cjk_font: {len(lacking)} Chinese characters ({''.join(sorted(lacking))}) are not in {FONT_FILE.name}; "
            f"install fonts-noto-cjk and rebuild to add them")
        return
    write_subset(used_characters())
    log(f"cjk_font: wrote {FONT_FILE.relative_to(BOOK)} ({FONT_FILE.stat().st_size // 1024} KiB, {len(used_characters())} characters)")


def setup(app):
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    app.connect("builder-inited", lambda app: update(logger.info))
    return {"parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":
    if "--check" in sys.argv:
        lacking = missing()
        print(f"{len(used_characters())} Chinese characters in the sources; missing from {FONT_FILE.name}: {''.join(sorted(lacking)) or 'none'}")
        sys.exit(1 if lacking else 0)
    if SYSTEM_FONT.exists():
        write_subset(used_characters())
        print(f"wrote {FONT_FILE} ({FONT_FILE.stat().st_size // 1024} KiB)")
    else:
        update()
