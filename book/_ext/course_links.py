"""Sphinx extension: repository links, Colab launch buttons and badges from lecture_utils.config.

The GitHub organisation, repository and branch are configured once, in ``lecture_utils/config.py``.
This extension copies them into the theme's launch-button options and provides the ``colab`` role:

    {colab}`assignments/a1_pytorch/a1_pytorch.ipynb`

renders an "Open in Colab" badge (a local SVG, so it works offline) linking to that notebook.
"""
from __future__ import annotations

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
    app.add_role("colab", colab_role)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
