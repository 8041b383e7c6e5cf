"""Result tables that render as tables everywhere: in Jupyter, and on the book's static pages.

The chapters build their result tables as Markdown pipe tables. Jupyter renders
``display(Markdown(text))`` as a table, but the book's HTML builder shows a Markdown *output* as
one paragraph of raw ``| a | b |`` text. :func:`show_table` displays the same text with an HTML
rendering beside it (``text/html`` first, which every front end prefers, ``text/markdown`` as the
fallback); :func:`markdown_to_html` is that rendering: paragraphs and pipe tables, with inline
``code``, ``**bold**`` and ``$math$`` (written as ``\\(math\\)``, which MathJax typesets on the
page).
"""

from __future__ import annotations

import html
import re
from typing import Any

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\$([^$]+)\$")


def _inline(text: str) -> str:
    """Escape ``text`` for HTML and render its inline code, bold and math."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        code, bold, math = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code, quote=False)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        else:
            out.append(f"\\({html.escape(math, quote=False)}\\)")
        pos = m.end()
    out.append(html.escape(text[pos:], quote=False))
    return "".join(out)


def _cells(line: str) -> list[str]:
    """The cells of one pipe-table row: ``| a | b |`` -> ``["a", "b"]``."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|"):
        body = body[:-1]
    return [c.strip() for c in body.split("|")]


def _is_rule(line: str) -> bool:
    return all(re.fullmatch(r":?-{3,}:?", c) for c in _cells(line))


def _table(lines: list[str]) -> str:
    if len(lines) < 2 or not _is_rule(lines[1]):
        raise ValueError(f"a pipe table needs a header row and a --- row, got {lines[:2]}")
    head = _cells(lines[0])
    aligns = []
    for c in _cells(lines[1]):
        aligns.append("right" if c.endswith(":") and not c.startswith(":")
                      else "center" if c.startswith(":") and c.endswith(":") else "")
    rows = [_cells(line) for line in lines[2:]]
    for i, row in enumerate(rows, start=3):
        if len(row) != len(head):
            raise ValueError(f"row {i} of the table has {len(row)} cells, the header "
                             f"{len(head)}: {lines[i - 1]!r}")

    def cell(tag: str, text: str, k: int) -> str:
        style = f' style="text-align: {aligns[k]}"' if k < len(aligns) and aligns[k] else ""
        return f"<{tag}{style}>{_inline(text)}</{tag}>"

    thead = "<tr>" + "".join(cell("th", c, k) for k, c in enumerate(head)) + "</tr>"
    tbody = "".join("<tr>" + "".join(cell("td", c, k) for k, c in enumerate(r)) + "</tr>"
                    for r in rows)
    # mathjax_process: the book's pages let MathJax typeset only elements of chosen classes
    return (f'<table class="table sat-table mathjax_process"><thead>{thead}</thead>'
            f"<tbody>{tbody}</tbody></table>")


def markdown_to_html(text: str) -> str:
    """Paragraphs and pipe tables of ``text`` (blocks separated by blank lines) as HTML."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    parts = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip()]
        if all(line.lstrip().startswith("|") for line in lines):
            parts.append(_table(lines))
        else:
            text = " ".join(line.strip() for line in lines)
            parts.append(f'<p class="mathjax_process">{_inline(text)}</p>')
    return "\n".join(parts)


def show_table(text: str) -> None:
    """Display Markdown ``text`` (pipe tables, paragraphs) as HTML, with the Markdown beside it."""
    from IPython.display import display

    display({"text/html": markdown_to_html(text), "text/markdown": text}, raw=True)


def ablation_table(figures: dict[str, Any], kind: str) -> str:
    """The ``kind`` ("soft" or "hard") rows of ``benchmarks/bench_shapes_ablation.py``'s JSON
    (``book/data/shapes_ablation.json``) as a Markdown table, for :func:`show_table`."""
    rows = ["| variant | setting | caption accuracy | grounding | size | colour | shape | "
            "test BLEU-4 |", "| --- | --- |" + " --- |" * 6]
    for name, f in figures["variants"].items():
        if not name.startswith(f"{kind}: "):
            continue
        g = f["grounding"]
        setting = ", ".join(f"`{k} = {v!r}`" for k, v in f["overrides"].items()) or "(the recipe)"
        rows.append(f"| {name.removeprefix(f'{kind}: ')} | {setting} | "
                    f"{f['caption_accuracy']:.3f} | {g['all']:.3f} | {g['size']:.3f} | "
                    f"{g['colour']:.3f} | {g['shape']:.3f} | {f['bleu4']:.3f} |")
    if len(rows) == 2:
        raise ValueError(f"the ablation figures hold no {kind!r} variant")
    return "\n".join(rows)


__all__ = ["ablation_table", "markdown_to_html", "show_table"]
