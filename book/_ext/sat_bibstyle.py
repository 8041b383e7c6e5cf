"""Author-year labels for the reference list, so that it reads like the citations in the chapters.

The chapters cite with ``bibtex_reference_style: author_year`` ("Xu et al., 2015"), but the
reference list takes its labels from the pybtex style, and the default ``alpha`` labels them
``[XBK+15]``. This module registers a pybtex style, ``authoryear``: the formatting of ``unsrt``,
entries sorted by author, year and title, and labels written the way the citations are (one
author: "Lin, 2004"; two: "Karpathy and Fei-Fei, 2015"; more: "Xu et al., 2015"; a letter is
appended when two entries would share a label). ``_config.yml`` loads it as a local extension and
makes it the default style; ``book/references.md`` names it in its ``{bibliography}`` directive.
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle


def _last_names(person) -> str:
    parts = person.rich_prelast_names + person.rich_last_names
    return " ".join(part.render_as("text") for part in parts)


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels like the author-year citations: "Xu et al., 2015"."""

    def format_label(self, entry) -> str:
        persons = entry.persons.get("author") or entry.persons.get("editor") or []
        names = [_last_names(p) for p in persons]
        if not names:
            who = entry.key
        elif len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} and {names[1]}"
        else:
            who = f"{names[0]} et al."
        year = entry.fields.get("year", "")
        return f"{who}, {year}" if year else who

    def format_labels(self, sorted_entries):
        labels = [self.format_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + chr(ord("a") + seen[label])
                seen[label] += 1


class AuthorYearStyle(UnsrtStyle):
    """unsrt's formatting, sorted by author, year and title, with author-year labels."""

    default_sorting_style = "author_year_title"
    default_label_style = "authoryear"


register_plugin("pybtex.style.labels", "authoryear", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def setup(app):
    """A Sphinx extension only so that Jupyter Book imports it (and registers the style)."""
    return {"parallel_read_safe": True, "parallel_write_safe": True}
