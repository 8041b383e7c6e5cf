"""Library listings in the chapters: folded by default, introduced by what the code computes.

The book shows its real code (``sat_core`` is the single source; a chapter never pastes it), but a
page that opens on 200 lines of source buries the maths it explains. :func:`show_source` therefore
displays a listing folded behind a one-line toggle that says what the code computes (the first
line of its docstring), where it lives and how long it is::

    ▸ Show the code: upsample_attention — Spread the weights alpha_t ... (sat_core/viz.py, 28 lines)

It is an HTML ``<details>`` element, so it folds on the static pages and in notebooks alike, with
no script; ``text/plain`` frontends get the plain source.
"""

from __future__ import annotations

import html
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.display import Code, display

_STYLE = ("<style>details.sat-listing{margin:.4em 0 .8em}"
          "details.sat-listing>summary{cursor:pointer;color:#1a5fb4;font-size:.92em}"
          "details.sat-listing>summary code{font-weight:600}</style>")


@dataclass
class Listing:
    """The source of one object, folded (``open=False``) behind a summary line."""

    name: str
    source: str
    summary: str
    where: str
    open: bool = False

    @property
    def lines(self) -> int:
        return len(self.source.rstrip("\n").splitlines())

    def title(self) -> str:
        what = f" — {self.summary}" if self.summary else ""
        return f"Show the code: {self.name}{what} ({self.where}, {self.lines} lines)"

    def _repr_html_(self) -> str:
        body = Code(self.source, language="python")._repr_html_()
        what = f" — {html.escape(self.summary)}" if self.summary else ""
        head = (f"Show the code: <code>{html.escape(self.name)}</code>{what} "
                f"({html.escape(self.where)}, {self.lines} lines)")
        return (f'{_STYLE}<details class="sat-listing"{" open" if self.open else ""}>'
                f"<summary>{head}</summary>{body}</details>")

    def __repr__(self) -> str:
        return f"{self.title()}\n{self.source}"


def listing(obj: Any, *, open: bool = False) -> Listing:  # noqa: A002 (the HTML attribute)
    """The :class:`Listing` of a function, class or method of ``sat_core``."""
    source = inspect.getsource(obj)
    doc = inspect.getdoc(obj) or ""
    summary = doc.strip().split("\n\n")[0].replace("\n", " ")
    if len(summary) > 110:
        summary = summary[:107].rsplit(" ", 1)[0] + " ..."
    file = Path(inspect.getsourcefile(obj) or "?")
    parts = file.parts
    where = "/".join(parts[parts.index("sat_core"):]) if "sat_core" in parts else file.name
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    return Listing(name=name, source=source, summary=summary, where=where, open=open)


def show_source(obj: Any, *, open: bool = False) -> None:  # noqa: A002
    """Display the source of a ``sat_core`` object, folded: the book's real code, not a copy."""
    display(listing(obj, open=open))


__all__ = ["Listing", "listing", "show_source"]
