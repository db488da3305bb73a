"""Write the public repository: copy what students use, add the public-only files, check, swap in.

The tree is built next to its destination and checked (:mod:`.privacy`) before it replaces the
previous one; a ``.git`` folder in the destination (a clone of the public repository) is kept, so
publishing a new version is `make publish`, then commit and push from ``build/public``.
"""
from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from autograder.assignments import COURSE_ROOT, all_assignments
from autograder.publish.placeholders import PublishRefused, preview_config, published_submission_url, refuse_placeholders
from autograder.publish.privacy import course_secrets, private_content
from lecture_utils import __version__ as PACKAGE_VERSION
from lecture_utils import config

TEMPLATE = Path(__file__).resolve().parent / "template"
# Template file -> its path in the public tree.
TEMPLATE_FILES = {
    "README.md": "README.md",
    "LICENSE": "LICENSE",
    "pyproject.toml": "pyproject.toml",
    "gitignore": ".gitignore",
    ".github/workflows/pages.yml": ".github/workflows/pages.yml",
}
# Never copied from book/: build output and caches, the MyST sources the notebooks are generated
# from (edited in the course repository), the script that generates them (it needs solutions/).
BOOK_SKIP = {"_build", "_src", "__pycache__", ".ipynb_checkpoints", ".jupyter_cache", "sync_sources.py"}
PACKAGE_SKIP = {"__pycache__", ".ipynb_checkpoints"}


def pages_url() -> str:
    return f"https://{config.GITHUB_ORG.lower()}.github.io/{config.GITHUB_REPO}/"


def _copy_tree(src: Path, dst: Path, skip: set[str]) -> None:
    shutil.copytree(src, dst, ignore=lambda _d, names: [n for n in names if n in skip or n.endswith(".pyc")])


def assignments_table() -> str:
    """The student README's list of assignments: Colab link and due date, from the manifests and config."""
    rows = ["| assignment | lecture | notebook | due |", "|---|---|---|---|"]
    for a in all_assignments():
        path = f"assignments/{a.id}/{a.id}.ipynb"
        due = config.DUE_DATES.get(a.id, "announced in class")
        rows.append(f"| {a.title} (`{a.id}`) | {a.lecture} | [Open in Colab]({config.colab_url(path)}) · [`{path}`]({path}) | {due} |")
    return "\n".join(rows)


def submission_sentence(preview: bool) -> str:
    url = published_submission_url(preview)
    if url:
        return f"Upload that file to [{config.SUBMISSION_SITE}]({url}) by the due date above."
    return f"Upload that file to {config.SUBMISSION_SITE} by the due date above: {config.SUBMISSION_LINK_LATER}."


def template_values(preview: bool) -> dict[str, str]:
    note = ("> **Preview.** This is a preview of the course repository: its links to Colab and to "
            f"{config.SUBMISSION_SITE} are not final.\n\n") if preview else ""
    return {
        "@TITLE@": "Deep Learning for Computer Vision, Part 3",
        "@AUTHOR@": "DL4CV course team",
        "@YEAR@": str(datetime.date.today().year),
        "@ORG@": config.GITHUB_ORG,
        "@REPO@": config.GITHUB_REPO,
        "@BRANCH@": config.GITHUB_BRANCH,
        "@REPOSITORY_URL@": config.REPOSITORY_URL,
        "@PIP_INSTALL_TARGET@": config.PIP_INSTALL_TARGET,
        "@PAGES_URL@": pages_url(),
        "@VERSION@": PACKAGE_VERSION,
        "@PREVIEW_NOTE@": note,
        "@ASSIGNMENTS@": assignments_table(),
        "@SUBMISSION@": submission_sentence(preview),
    }


def render(text: str, values: dict[str, str]) -> str:
    for token, value in values.items():
        text = text.replace(token, value)
    return text


def write_tree(dst: Path, preview: bool, root: Path = COURSE_ROOT) -> None:
    """Write the public tree into the new folder ``dst``."""
    dst.mkdir(parents=True)
    _copy_tree(root / "book", dst / "book", BOOK_SKIP)
    _copy_tree(root / "lecture_utils", dst / "lecture_utils", PACKAGE_SKIP)
    for a in all_assignments():
        release = root / "assignments" / a.id / f"{a.id}.ipynb"
        if not release.is_file():
            raise PublishRefused(f"{release.relative_to(root)} is missing: run `make release` first")
        (dst / "assignments" / a.id).mkdir(parents=True)
        shutil.copyfile(release, dst / "assignments" / a.id / release.name)
    if published_submission_url(preview) is None:
        preview_config(dst / "lecture_utils" / "config.py")
    values = template_values(preview)
    for name, target in TEMPLATE_FILES.items():
        out = dst / target
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render((TEMPLATE / name).read_text(), values))
    left = sorted({tok for f in TEMPLATE_FILES for tok in values if tok in (dst / TEMPLATE_FILES[f]).read_text()})
    if left:  # a value that itself contains a token: refuse rather than publish half-filled files
        raise PublishRefused(f"template tokens left unfilled: {left}")


def _swap_in(new: Path, out: Path) -> None:
    """Replace the contents of ``out`` by those of ``new``, keeping ``out/.git``."""
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():
        if entry.name == ".git":
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for entry in new.iterdir():
        shutil.move(str(entry), out / entry.name)
    new.rmdir()


def publish(out: Path, preview: bool = False, root: Path = COURSE_ROOT) -> Path:
    """Write the public repository into ``out``; raise PublishRefused (nothing written) when it may not be.

    Args:
        out: destination folder (e.g. ``build/public``); its ``.git`` is kept, everything else replaced.
        preview: publish although lecture_utils/config.py holds placeholders (pages then say
            that the instructor gives the submission link).
        root: the course repository.
    """
    out = Path(out).resolve()
    placeholders = refuse_placeholders(preview)
    staging = out.parent / f".{out.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_tree(staging, preview, root)
        problems = private_content(staging, course_secrets())
        if problems:
            raise PublishRefused("the public tree would contain private material:\n  " + "\n  ".join(problems[:30]))
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if placeholders:
        print(f"preview: placeholders kept for {', '.join(placeholders)} (links point to {config.REPOSITORY_URL})")
    return out
