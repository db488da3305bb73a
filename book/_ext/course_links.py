"""Sphinx extension: repository links, Colab launch buttons and badges from lecture_utils.config.

The GitHub organisation, repository and branch are configured once, in ``lecture_utils/config.py``.
This extension copies them into the theme's launch-button options and provides the ``colab`` role:

    {colab}`assignments/a1_pytorch/a1_pytorch.ipynb`

renders an "Open in Colab" badge (a local SVG, so it works offline) linking to that notebook.

Where and by when an assignment is submitted is configured there too (``SUBMISSION_URL``,
``DUE_DATES``); the ``submission`` role writes it into an assignment page:

    {submission}`a1_pytorch`

renders "Upload ``a1_pytorch_submission.ipynb`` to Gradescope by <due date>." with the link (without
one, ``SUBMISSION_URL = None``, it says that the instructor gives the link). On an
assignment page (``assignments/<id>``) the download button of the page header gives the assignment
notebook (copied into the built book as ``assignments/<id>/<id>.ipynb``), not the page's source.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util import logging

from lecture_utils import config as course

LOGGER = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _theme_options(app: Sphinx, cfg) -> None:
    options = dict(cfg.html_theme_options or {})
    options.update(
        repository_url=course.REPOSITORY_URL,
        repository_branch=course.GITHUB_BRANCH,
        path_to_docs="book",
        use_repository_button=True,
    )
    launch = dict(options.get("launch_buttons") or {})
    launch.update(colab_url="https://colab.research.google.com", notebook_interface="classic")
    options["launch_buttons"] = launch
    cfg.html_theme_options = options
    # pydata-sphinx-theme reads the default colour mode from html_context; unset, it logs a console error
    cfg.html_context = {**(cfg.html_context or {}), "default_mode": "light"}


def colab_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    path = text.strip()
    if not (REPO_ROOT / path).is_file():
        msg = inliner.reporter.error(f"colab: {path} does not exist in the repository", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    docname = inliner.document.settings.env.docname
    static = "../" * docname.count("/") + "_static/colab-badge.svg"
    html = f'<a class="colab-badge" href="{course.colab_url(path)}"><img src="{static}" alt="Open in Colab" width="117" height="20"></a>'
    return [nodes.raw(rawtext, html, format="html")], []


def submission_role(name, rawtext, text, lineno, inliner, options=None, content=None):
    assignment = text.strip()
    if not (REPO_ROOT / "assignments" / assignment / f"{assignment}.ipynb").is_file():
        msg = inliner.reporter.error(f"submission: no released assignment {assignment!r}", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    due = course.DUE_DATES.get(assignment)
    if due is None:
        msg = inliner.reporter.error(f"submission: no due date for {assignment} in lecture_utils/config.py DUE_DATES", line=lineno)
        return [inliner.problematic(rawtext, rawtext, msg)], [msg]
    span = nodes.inline(classes=["course-submission"])
    # SUBMISSION_URL None (a preview published before the course link is known): no fake link
    site = (nodes.reference(text=course.SUBMISSION_SITE, refuri=course.SUBMISSION_URL) if course.SUBMISSION_URL
            else nodes.Text(f"{course.SUBMISSION_SITE} ({course.SUBMISSION_LINK_LATER})"))
    span += [
        nodes.Text("Upload "),
        nodes.literal(text=f"{assignment}_submission.ipynb"),
        nodes.Text(" to "),
        site,
        nodes.Text(f" (assignment {assignment}) by "),
        nodes.strong(text=due),
        nodes.Text("."),
    ]
    return [span], []


def _assignment_id(pagename: str) -> str | None:
    parts = pagename.split("/")
    if len(parts) == 2 and parts[0] == "assignments" and (REPO_ROOT / "assignments" / parts[1] / f"{parts[1]}.ipynb").is_file():
        return parts[1]
    return None


def _notebook_download(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """On an assignment page the download button gives the assignment notebook, not the page source."""
    assignment = _assignment_id(pagename)
    if assignment is None:
        return
    for button in context.get("header_buttons", []):
        if button.get("label") != "download-buttons":
            continue
        notebook = {
            "type": "link",
            "url": context["pathto"](f"assignments/{assignment}/{assignment}.ipynb", 1),
            "text": ".ipynb",
            "icon": "fas fa-code",
            "tooltip": "Download the assignment notebook",
            "label": "download-notebook-button",
        }
        button["buttons"] = [notebook, *[b for b in button["buttons"] if b.get("label") == "download-pdf-button"]]
        button["tooltip"] = "Download the assignment notebook"


def _copy_assignment_notebooks(app: Sphinx, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for notebook in sorted((REPO_ROOT / "assignments").glob("*/*.ipynb")):
        # the released assignments: those with a page in the book
        if notebook.stem == notebook.parent.name and (Path(app.srcdir) / "assignments" / f"{notebook.stem}.md").is_file():
            target = Path(app.outdir) / "assignments" / notebook.parent.name / notebook.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(notebook, target)


def _write_root_favicon(app: Sphinx, exception) -> None:
    """Browsers ask every site for ``/favicon.ico``; pages without an icon link (the redirecting
    ``index.html``) would log a 404. Draw the book's icon (``_static/favicon.svg``) as an ICO file."""
    if exception is not None or app.builder.format != "html":
        return
    from PIL import Image, ImageDraw

    scale = 8  # draw large, shrink for smooth edges
    icon = Image.new("RGBA", (32 * scale, 32 * scale), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle([1 * scale, 1 * scale, 31 * scale, 31 * scale], radius=5 * scale,
                           fill="#dbe9f6", outline="#4a7ab7", width=2 * scale)
    draw.rectangle([6 * scale, 7 * scale, 19 * scale, 18 * scale], outline="#e8710a", width=int(2.5 * scale))
    draw.ellipse([14 * scale, 15 * scale, 26 * scale, 27 * scale], outline="#2a9d8f", width=int(2.5 * scale))
    icon.resize((32, 32), Image.LANCZOS).save(Path(app.outdir) / "favicon.ico", sizes=[(32, 32), (16, 16)])


def _dedupe_scripts(app: Sphinx, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts: sphinx-thebe registers its config script twice under Jupyter Book,
    and the second ``const THEBE_JS_URL`` declaration is a JavaScript error on every page."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", str(script)) or "", getattr(script, "attributes", {}).get("body", ""))  # None and "" both mean inline
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _theme_options)
    # last, after the theme has added its own scripts to the page context
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("html-page-context", _notebook_download, priority=900)
    app.connect("build-finished", _copy_assignment_notebooks)
    app.connect("build-finished", _write_root_favicon)
    app.add_role("colab", colab_role)
    app.add_role("submission", submission_role)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
