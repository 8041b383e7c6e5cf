"""The student copy: the chapter notebooks with every exercise solution taken out.

Convention (``notebooks/TEMPLATE.md``): an exercise is a markdown cell stating the task followed by
a code cell tagged ``solution`` and ``hide-input`` (a "show the solution" toggle in the book)::

    def soft_attention(a, h):
        # BEGIN SOLUTION
        ...the worked answer...
        # END SOLUTION

    check_soft_attention(soft_attention)

In the student copy the lines from ``# BEGIN SOLUTION`` to ``# END SOLUTION`` become one
``raise NotImplementedError("Your code here")`` at the marker's indentation; the lines above
(the signature) and below (the check) stay, the two tags go, outputs are cleared.

Answers to the questions of "think" exercises sit in markdown, in a folded admonition whose title
starts with "Answer"::

    :::{admonition} Answers
    :class: dropdown
    ...
    :::

In the student copy each such block becomes one line, :data:`ANSWERS_NOTE`; the rest of the cell
(the exercise's text) stays.

``python -m sat_core.student SRC_DIR DST_DIR`` (``make student``) writes the copy.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

BEGIN = re.compile(r"^(\s*)#\s*BEGIN SOLUTION\b")
END = re.compile(r"^\s*#\s*END SOLUTION\b")
PLACEHOLDER = 'raise NotImplementedError("Your code here")'
ANSWER_OPEN = re.compile(r"^\s*(:{3,})\{admonition\}\s*Answer")
ANSWERS_NOTE = "*(The answers are in the instructor's copy.)*"
SOLUTION_TAG = "solution"
TOGGLE_TAGS = ("solution", "hide-input")


class StudentCopyError(ValueError):
    """A notebook breaks the exercise convention; the message names the notebook and the cell."""


def strip_solution(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace each ``# BEGIN SOLUTION`` ... ``# END SOLUTION`` block; return (source, blocks)."""
    out: list[str] = []
    inside, blocks = False, 0
    for n, line in enumerate(source.split("\n"), start=1):
        begin = BEGIN.match(line)
        if begin:
            if inside:
                raise StudentCopyError(f"{where}, line {n}: BEGIN SOLUTION inside another block")
            inside, blocks = True, blocks + 1
            out.append(begin.group(1) + PLACEHOLDER)
        elif END.match(line):
            if not inside:
                raise StudentCopyError(f"{where}, line {n}: END SOLUTION without BEGIN SOLUTION")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise StudentCopyError(f"{where}: BEGIN SOLUTION is never closed by # END SOLUTION")
    return "\n".join(out), blocks


def strip_answers(source: str, where: str = "cell") -> tuple[str, int]:
    """Replace each ``:::{admonition} Answers`` ... ``:::`` block; return (source, blocks)."""
    out: list[str] = []
    fence: str | None = None
    blocks = 0
    for line in source.split("\n"):
        if fence is None:
            opened = ANSWER_OPEN.match(line)
            if opened:
                fence, blocks = opened.group(1), blocks + 1
                out.append(ANSWERS_NOTE)
            else:
                out.append(line)
        elif line.strip() == fence:
            fence = None
    if fence is not None:
        raise StudentCopyError(f"{where}: an Answers admonition is never closed by {fence}")
    return "\n".join(out), blocks


def student_notebook(
    nb: nbformat.NotebookNode, name: str = "notebook"
) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` without solutions; returns (copy, number of code solutions removed).

    The folded Answers of markdown cells go too (:func:`strip_answers`).

    Raises :class:`StudentCopyError` when a ``solution`` cell has no marked block, or a marked
    block sits in a cell not tagged ``solution`` (its answer would show unfolded in the book).
    """
    nb = copy.deepcopy(nb)  # the caller's notebook stays intact
    removed = 0
    for i, cell in enumerate(nb.cells):
        where = f"{name}, cell {i}"
        if cell.cell_type == "markdown":
            cell.source, _ = strip_answers(cell.source, where)
        if cell.cell_type != "code":
            continue
        tags = list(cell.metadata.get("tags", []))
        has_block = any(BEGIN.match(ln) or END.match(ln) for ln in cell.source.split("\n"))
        if SOLUTION_TAG in tags:
            if not has_block:
                raise StudentCopyError(
                    f"{where} is tagged 'solution' but has no '# BEGIN SOLUTION' ... "
                    "'# END SOLUTION' block: mark the answer, or remove the tag"
                )
            cell.source, n = strip_solution(cell.source, where)
            removed += n
            tags = [t for t in tags if t not in TOGGLE_TAGS]
            if tags:
                cell.metadata["tags"] = tags
            else:
                cell.metadata.pop("tags", None)
        elif has_block:
            raise StudentCopyError(
                f"{where} has a '# BEGIN SOLUTION' block but is not tagged 'solution' "
                "(and 'hide-input'): tag it so the book folds the answer away"
            )
        cell.outputs = []
        cell.execution_count = None
    return nb, removed


def make_student_copy(src_dir: Path, dst_dir: Path) -> dict[str, tuple[int, int]]:
    """Write every notebook of ``src_dir`` without solutions to ``dst_dir``.

    Returns {relative notebook path: (code solutions removed, Answers blocks removed)}. The copies
    are validated by nbformat.
    """
    src_dir, dst_dir = Path(src_dir).resolve(), Path(dst_dir).resolve()
    if not src_dir.is_dir():
        raise StudentCopyError(f"{src_dir} is not a folder of notebooks")
    if dst_dir == src_dir or src_dir in dst_dir.parents:
        raise StudentCopyError(
            f"{dst_dir} is (inside) the source folder {src_dir}: pick a folder outside it, "
            "e.g. _build/student"
        )
    notebooks = sorted(p for p in src_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise StudentCopyError(f"no notebooks (*.ipynb) in {src_dir}")
    report: dict[str, tuple[int, int]] = {}
    for src in notebooks:
        rel = src.relative_to(src_dir)
        try:
            nb = nbformat.read(src, as_version=4)
        except Exception as err:  # nbformat raises several types for a broken file
            raise StudentCopyError(f"{src} is not a readable notebook: {err}") from err
        student, removed = student_notebook(nb, str(rel))
        answers = sum(strip_answers(c.source)[1] for c in nb.cells if c.cell_type == "markdown")
        nbformat.validate(student)
        dst = dst_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, dst)
        report[str(rel)] = (removed, answers)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sat_core.student",
        description="Copy the notebooks of SRC_DIR to DST_DIR with every exercise solution "
        "(# BEGIN SOLUTION ... # END SOLUTION in cells tagged 'solution') replaced by "
        'raise NotImplementedError("Your code here"), and every folded ":::{admonition} '
        'Answers" block of the markdown removed.',
    )
    parser.add_argument("src_dir", type=Path, metavar="SRC_DIR", help="folder of the notebooks")
    parser.add_argument("dst_dir", type=Path, metavar="DST_DIR", help="where to write the copy")
    args = parser.parse_args(argv)
    try:
        report = make_student_copy(args.src_dir, args.dst_dir)
    except StudentCopyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for rel, (removed, answers) in report.items():
        print(f"{rel}: {removed} solution(s) removed, {answers} answer block(s) removed")
    print(f"wrote {len(report)} notebook(s) to {args.dst_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
