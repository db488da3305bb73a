"""Sphinx extension: one author–year citation style for the whole book, in the text and in the list.

sphinxcontrib-bibtex draws the labels of the bibliography list from a pybtex *label style*; the
stock ones are numbers or ``alpha`` abbreviations (``[LDollarG+17]``: LaTeX accents spelled out).
This extension registers

* the pybtex label style ``course_author_year``: ``Girshick, 2015``, ``Felzenszwalb and Huttenlocher,
  2004``, ``Lin et al., 2017a`` (names decoded from LaTeX; ``a``/``b`` tell apart same-label entries);
* the pybtex formatting style ``course_author_year`` (``plain``: sorted by author, year, title) that
  uses it.

* the sphinxcontrib-bibtex reference style ``course_author_year``: citations by that label, several
  separated by semicolons (the labels hold a comma).

With ``bibtex_default_style`` and ``bibtex_reference_style`` both ``course_author_year``
(book/_config.yml) a citation in the text shows the same label as its entry in the list:
``[Paszke et al., 2019]``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinxcontrib.bibtex.plugin import register_plugin as register_reference_style
from sphinxcontrib.bibtex.style.referencing import BracketStyle
from sphinxcontrib.bibtex.style.referencing.label import LabelReferenceStyle

NAME = "course_author_year"


def _last_name(person) -> str:
    """A person's last name as readers write it: ``Dollár``, ``Van Gool``."""
    parts = [*person.rich_prelast_names, *person.rich_last_names]
    return " ".join(part.render_as("text") for part in parts)  # rich names: LaTeX accents decoded


class AuthorYearLabelStyle(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [self.format_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + chr(ord("a") + seen[label])
                seen[label] += 1

    def format_label(self, entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [_last_name(p) for p in persons]
        # "and others" in BibTeX is a person called "others": always at least three authors
        if len(names) >= 3 or (len(names) == 2 and names[1] == "others"):
            who = f"{names[0]} et al."
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        elif names:
            who = names[0]
        else:
            who = entry.fields.get("key", entry.key)
        return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearStyle(PlainStyle):
    default_label_style = NAME


def _semicolons() -> BracketStyle:
    return BracketStyle(sep="; ")  # labels hold a comma: [Lin et al., 2017a; Lin et al., 2017b]


@dataclass
class AuthorYearLabelReferenceStyle(LabelReferenceStyle):
    """Cite by label (the author-year label above), several citations separated by semicolons."""

    bracket_parenthetical: BracketStyle = field(default_factory=_semicolons)
    bracket_textual: BracketStyle = field(default_factory=_semicolons)
    bracket_label: BracketStyle = field(default_factory=_semicolons)


def setup(app: Sphinx) -> dict:
    register_reference_style("sphinxcontrib.bibtex.style.referencing", NAME, AuthorYearLabelReferenceStyle, force=True)
    register_plugin("pybtex.style.labels", NAME, AuthorYearLabelStyle, force=True)
    register_plugin("pybtex.style.formatting", NAME, AuthorYearStyle, force=True)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
