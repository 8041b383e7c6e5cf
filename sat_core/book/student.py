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

``python -m sat_core.book.student SRC_DIR DST_DIR`` writes the copy. It refuses a DST_DIR that is
SRC_DIR, inside it or above it, and never overwrites a notebook that holds solutions
(:func:`holds_solutions`): swapping the two folders cannot wipe the instructor's copy.

``make student`` writes it to :data:`STUDENT_DIR` ``/notebooks/``, which is committed: the Colab
buttons of the student edition of the site (``_build/html-student``,
:mod:`sat_core.book.build`) open those files from GitHub, so they must be on the published
branch. :func:`student_copy_drift` (``tests/test_student.py``) lists every committed copy that
no longer matches ``notebooks/``.

The student edition's pages are the *executed* notebooks of the book with the same changes
(``student_notebook(nb, keep_outputs=True)``): every other cell keeps its outputs, a solution
cell loses its own (the check's "✓ correct" line would be false under the open stub).
:func:`solution_snippets` lists the text that only solutions hold, for the tests to look for.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

from sat_core.errors import ArgumentParser, UserError, command

BEGIN = re.compile(r"^(\s*)#\s*BEGIN SOLUTION\b")
END = re.compile(r"^\s*#\s*END SOLUTION\b")
PLACEHOLDER = 'raise NotImplementedError("Your code here")'
ANSWER_OPEN = re.compile(r"^\s*(:{3,})\{admonition\}\s*Answer")
ANSWERS_NOTE = "*(The answers are in the instructor's copy.)*"
SOLUTION_TAG = "solution"
TOGGLE_TAGS = ("solution", "hide-input")
STUDENT_DIR = "student"  # the committed student notebooks: <root>/student/notebooks/NN.ipynb
MIN_CODE_SNIPPET = 12  # characters of a solution line worth looking for
MIN_ANSWER_WORDS = 6  # words of a run of answer prose worth looking for


class StudentCopyError(UserError, ValueError):
    """A notebook breaks the exercise convention (the message names the notebook and the cell),
    or the copy would overwrite the sources or a notebook that holds solutions."""


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
    nb: nbformat.NotebookNode, name: str = "notebook", *, keep_outputs: bool = False
) -> tuple[nbformat.NotebookNode, int]:
    """A copy of ``nb`` without solutions; returns (copy, number of code solutions removed).

    The folded Answers of markdown cells go too (:func:`strip_answers`). Outputs and execution
    counts are cleared, or with ``keep_outputs`` (the student edition of the site, built from
    executed notebooks) kept in every cell but the solution cells, whose outputs always go.

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
                    "'# END SOLUTION' block — mark the answer, or remove the tag"
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
                "(and 'hide-input') — tag it so the book folds the answer away"
            )
        elif keep_outputs:
            continue
        cell.outputs = []
        cell.execution_count = None
    return nb, removed


def holds_solutions(nb: nbformat.NotebookNode) -> bool:
    """Whether ``nb`` still holds answers: a cell tagged ``solution``, a ``# BEGIN SOLUTION`` /
    ``# END SOLUTION`` line, or a folded ``Answers`` admonition (an instructor's notebook)."""
    for cell in nb.cells:
        lines = cell.source.split("\n")
        if SOLUTION_TAG in cell.get("metadata", {}).get("tags", []):
            return True
        if cell.cell_type == "code" and any(BEGIN.match(ln) or END.match(ln) for ln in lines):
            return True
        if cell.cell_type == "markdown" and any(ANSWER_OPEN.match(ln) for ln in lines):
            return True
    return False


def _check_folders(src_dir: Path, dst_dir: Path) -> tuple[Path, Path]:
    """Resolved (src, dst); refuse a DST_DIR equal to, inside or above SRC_DIR, or a file."""
    src, dst = Path(src_dir).resolve(), Path(dst_dir).resolve()
    outside = "pick a folder outside the sources, e.g. _build/student"
    if not src.is_dir():
        raise StudentCopyError(f"SRC_DIR {src} is not a folder of notebooks — check the path "
                               "(the chapters are in notebooks/)")
    if dst == src:
        raise StudentCopyError(f"DST_DIR {dst} is SRC_DIR: the copies would replace the "
                               f"notebooks — {outside}")
    if src in dst.parents:
        raise StudentCopyError(f"DST_DIR {dst} is inside SRC_DIR {src} — {outside}")
    if dst in src.parents:
        raise StudentCopyError(f"DST_DIR {dst} contains SRC_DIR {src}: the copies would land "
                               f"beside its notebooks — {outside}")
    if dst.exists() and not dst.is_dir():
        raise StudentCopyError(f"DST_DIR {dst} is a file — pick a folder (it is made if missing)")
    return src, dst


def _check_destination(dst: Path) -> None:
    """Refuse to overwrite ``dst`` unless it is missing or a notebook without solutions."""
    if not dst.exists():
        return
    try:
        nb = nbformat.read(dst, as_version=4)
    except Exception as err:  # nbformat raises several types for a broken file
        raise StudentCopyError(
            f"{dst} exists and is not a readable notebook ({type(err).__name__}), so it is not "
            "overwritten — move it away or pick another DST_DIR"
        ) from err
    if holds_solutions(nb):
        raise StudentCopyError(
            f"{dst} holds solutions and would be overwritten by a copy without them (SRC_DIR "
            "and DST_DIR swapped?) — the order is SRC_DIR DST_DIR, e.g. notebooks _build/student"
        )


def _student_copies(
    src_dir: Path,
) -> dict[Path, tuple[nbformat.NotebookNode, int, int]]:
    """{relative path: (student copy, code solutions removed, Answers removed)} of ``src_dir``."""
    notebooks = sorted(p for p in src_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise StudentCopyError(f"no notebooks (*.ipynb) in {src_dir} — check SRC_DIR")
    copies = {}
    for src in notebooks:
        rel = src.relative_to(src_dir)
        try:
            nb = nbformat.read(src, as_version=4)
        except Exception as err:  # nbformat raises several types for a broken file
            raise StudentCopyError(f"{src} is not a readable notebook: {err}") from err
        student, removed = student_notebook(nb, str(rel))
        answers = sum(strip_answers(c.source)[1] for c in nb.cells if c.cell_type == "markdown")
        nbformat.validate(student)
        copies[rel] = (student, removed, answers)
    return copies


def make_student_copy(src_dir: Path, dst_dir: Path) -> dict[str, tuple[int, int]]:
    """Write every notebook of ``src_dir`` without solutions to ``dst_dir``.

    Returns {relative notebook path: (code solutions removed, Answers blocks removed)}. The copies
    are validated by nbformat. All or nothing: every notebook is converted and every destination
    checked before the first file is written. Raises :class:`StudentCopyError` when ``dst_dir``
    is ``src_dir``, inside it or above it, or when a file it would replace holds solutions
    (:func:`holds_solutions`) or is not a notebook: an instructor's notebook is never overwritten.
    """
    src_dir, dst_dir = _check_folders(src_dir, dst_dir)
    copies = _student_copies(src_dir)
    for rel in copies:
        _check_destination(dst_dir / rel)
    report: dict[str, tuple[int, int]] = {}
    for rel, (student, removed, answers) in copies.items():
        dst = dst_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(student, dst)
        report[str(rel)] = (removed, answers)
    return report


def student_copy_drift(root: Path) -> list[str]:
    """What differs between ``<root>/student/notebooks`` and the student copies of
    ``<root>/notebooks`` (one line per notebook: missing, outdated or extra); empty when the
    committed copy is up to date. ``make student`` brings it up to date."""
    src, dst = Path(root) / "notebooks", Path(root) / STUDENT_DIR / "notebooks"
    fix = "run `make student` and commit student/"
    expected = {rel: nb for rel, (nb, _, _) in _student_copies(src).items()}
    problems = []
    for rel, nb in expected.items():
        path = dst / rel
        if not path.is_file():
            problems.append(f"{path.relative_to(root)} is missing — {fix}")
        elif nbformat.read(path, as_version=4) != nb:
            problems.append(
                f"{path.relative_to(root)} is outdated (notebooks/{rel} changed) — {fix}")
    if dst.is_dir():
        for path in sorted(dst.rglob("*.ipynb")):
            rel = path.relative_to(dst)
            if rel not in expected and ".ipynb_checkpoints" not in rel.parts:
                problems.append(f"{path.relative_to(root)} has no notebooks/{rel} — delete it")
    return problems


_CODE_OR_MATH = re.compile(r"`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", re.S)
_WORD_RUN = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)+")


def normalize_text(text: str) -> str:
    """``text`` with every run of whitespace one space (how a page's text is compared)."""
    return " ".join(text.split())


def solution_snippets(nb: nbformat.NotebookNode) -> list[str]:
    """Pieces of text that only the solutions of ``nb`` hold, as a rendered page shows them.

    Code: each line between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (whitespace normalised,
    at least :data:`MIN_CODE_SNIPPET` characters). Answers: every run of at least
    :data:`MIN_ANSWER_WORDS` plain words of a folded Answers block (math, code and punctuation
    cut the runs; emphasis marks removed). A piece that the student copy also holds (a line the
    chapter writes elsewhere) is left out: finding it on a page proves nothing.
    """
    student_text = normalize_text(" ".join(
        c.source.replace("*", "") for c in student_notebook(nb)[0].cells))
    found: list[str] = []
    for cell in nb.cells:
        lines = cell.source.split("\n")
        if cell.cell_type == "code":
            inside = False
            for line in lines:
                if BEGIN.match(line) or END.match(line):
                    inside = bool(BEGIN.match(line))
                elif inside and len(line.strip()) >= MIN_CODE_SNIPPET:
                    found.append(normalize_text(line))
        elif cell.cell_type == "markdown":
            fence: str | None = None
            block: list[str] = []
            for line in lines:
                if fence is None:
                    opened = ANSWER_OPEN.match(line)
                    fence = opened.group(1) if opened else None
                elif line.strip() == fence:
                    fence = None
                elif not line.lstrip().startswith(":"):  # the :class: option, nested fences
                    block.append(line)
            text = normalize_text(_CODE_OR_MATH.sub(" | ", " ".join(block).replace("*", "")))
            found += [run for run in _WORD_RUN.findall(text)
                      if len(run.split()) >= MIN_ANSWER_WORDS]
    return list(dict.fromkeys(s for s in found if s not in student_text))


@command(StudentCopyError, OSError)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sat_core.book.student SRC_DIR DST_DIR``; a user error is one line, status 2."""
    parser = ArgumentParser(
        prog="python -m sat_core.book.student",
        description="Copy the notebooks of SRC_DIR to DST_DIR with every exercise solution "
        "(# BEGIN SOLUTION ... # END SOLUTION in cells tagged 'solution') replaced by "
        'raise NotImplementedError("Your code here"), and every folded ":::{admonition} '
        'Answers" block of the markdown removed. DST_DIR must lie outside SRC_DIR; a notebook '
        "there that holds solutions is never overwritten.",
    )
    parser.add_argument("src_dir", type=Path, metavar="SRC_DIR", help="folder of the notebooks")
    parser.add_argument("dst_dir", type=Path, metavar="DST_DIR", help="where to write the copy")
    args = parser.parse_args(argv)
    report = make_student_copy(args.src_dir, args.dst_dir)
    for rel, (removed, answers) in report.items():
        print(f"{rel}: {removed} solution(s) removed, {answers} answer block(s) removed")
    print(f"wrote {len(report)} notebook(s) to {args.dst_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
