"""Sphinx extension: chapters are numbered by their lecture (12, 13, 14, 15), not 1, 2, 3, 4.

The book has one chapter per lecture, in folders ``ch<lecture>/``. Sphinx (with Jupyter Book's
``sphinx-multitoc-numbering``) numbers the numbered parts' chapters 1, 2, …; this extension then
replaces the chapter number of every page in ``ch<N>/`` by ``N``: headings (``13.5. Non-maximum
suppression``), the sidebar, the previous/next links and table/figure numbers (``Table 12.1``).
"""
from __future__ import annotations

import re

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment.collectors.toctree import TocTreeCollector

CHAPTER_FOLDER = re.compile(r"^ch(\d+)/")


def lecture_of(docname: str) -> int | None:
    match = CHAPTER_FOLDER.match(docname)
    return int(match[1]) if match else None


def _renumber(env) -> None:
    for docname, secnums in env.toc_secnumbers.items():
        lecture = lecture_of(docname)
        if lecture is None:
            continue
        for anchor, number in secnums.items():
            if number:
                secnums[anchor] = (lecture, *number[1:])
        targets = list(env.tocs[docname].findall(nodes.reference)) if docname in env.tocs else []
        if docname in env.titles:
            targets.append(env.titles[docname])
        for node in targets:
            if node.get("secnumber"):
                node["secnumber"] = [lecture, *node["secnumber"][1:]]


def _collector_classes(cls=TocTreeCollector):
    yield cls
    for sub in cls.__subclasses__():
        yield from _collector_classes(sub)


def _patch(app: Sphinx, config) -> None:
    """Wrap every section numbering in use: Sphinx's (patched by sphinx-multitoc-numbering at its
    setup) and the one of sphinx-external-toc's collector, which renumbers after it."""
    for cls in _collector_classes():
        inner = cls.__dict__.get("assign_section_numbers")
        if inner is None or getattr(inner, "_by_lecture", False):
            continue

        def assign_section_numbers(self, env, _inner=inner):
            old = {doc: dict(nums) for doc, nums in env.toc_secnumbers.items()}
            rewrite = _inner(self, env)
            _renumber(env)
            return sorted(set(rewrite) | {doc for doc, nums in env.toc_secnumbers.items() if nums != old.get(doc)})

        assign_section_numbers._by_lecture = True
        cls.assign_section_numbers = assign_section_numbers


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _patch)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
