"""An nbgrader course from the chapter notebooks: ``python -m sat_core.book.nbgrader_export``.

``python -m sat_core.book.nbgrader_export notebooks COURSE_DIR [--assignment NAME]
[--chapters 04 05]`` writes ``COURSE_DIR/source/NAME/NN_name.ipynb`` (nbgrader's source folder,
the instructor's version) and, when missing, a minimal ``COURSE_DIR/nbgrader_config.py``. Then,
in COURSE_DIR, ``nbgrader generate_assignment NAME`` makes the student version (``release/``) and
``nbgrader autograde NAME`` grades ``submitted/STUDENT/NAME/``.

Each book notebook becomes an nbgrader notebook (cell metadata schema 3):

* an exercise cell (tagged ``solution``, ending with ``check_X(my_fn)``, see
  ``sat_core.book.grade``) is split in two: the answer cell -- the cell without its check call, with
  the book's ``# BEGIN SOLUTION`` / ``# END SOLUTION`` lines rewritten as nbgrader's
  ``### BEGIN SOLUTION`` / ``### END SOLUTION`` (``generate_assignment`` replaces the region by
  ``raise NotImplementedError()``) -- marked ``solution`` (editable, not graded), and an autograded
  test cell, ``from sat_core.exercises import check_X`` + ``check_X(my_fn)``, marked ``grade`` and
  ``locked`` with the exercise's points (its metadata ``sat.points``, 1 when absent). The checks
  raise ``ExerciseFailed`` on a wrong, unattempted or crashing answer, so the test cell ends in an
  error and nbgrader gives it 0 points; it gets all of them when the check passes. The test cell
  imports its check itself: an answer cell whose import was deleted still gets graded.
* the folded answers of the "think" exercises (``:::{admonition} Answers`` blocks) are removed
  from the markdown (as in the student copy of ``sat_core.book.student``): nbgrader has no place
  for an answer that is shown but not graded.
* every other cell is read-only (``locked``): nbgrader's autograde restores it from the source, so
  what a submission changed there (the parameters, say) does not count.
* the ``parameters`` cell gets the smoke values ``smoke = True``, ``device = "cpu"`` (the sizes
  ``make test`` runs every chapter at: seconds on a CPU), so that autograde, which executes the
  whole notebook, is fast; ``--book-parameters`` keeps the book's defaults (real training in
  chapters 6-9: minutes per submission).
* ``--exercises-only`` keeps only the exercises (:func:`exercise_cells`: the title, the Colab
  install cell, each exercise's statement, answer and test cells) and one read-only cell of the
  chapter's imports they read -- the same assumption as ``sat_core.book.grade``: an exercise relies
  on the notebook's imports only. The chapter itself is in the book; autograde then runs a notebook
  in about the time it takes to start a kernel and import torch, not the chapter's (chapter 4 on
  2 busy cores: under 10 s a submission instead of about 25 s). Every chapter's reference answers
  get all their points this way under nbgrader's autograde (checked by hand for chapters 2-10).

Outputs are cleared; the tags that fold the answer in the book (``solution``, ``hide-input``) go.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell

from sat_core.book.grade import Exercise, exercises_of, names_used, setup_imports
from sat_core.book.student import BEGIN, END, TOGGLE_TAGS, strip_answers
from sat_core.errors import ArgumentParser, UserError, command

DEFAULT_ASSIGNMENT = "show_attend_tell"
SMOKE_PARAMETERS: dict[str, Any] = {"smoke": True, "device": "cpu"}
NBGRADER_BEGIN = "### BEGIN SOLUTION"
NBGRADER_END = "### END SOLUTION"
SCHEMA_VERSION = 3
ASSIGNMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
CELL_TIMEOUT = 600  # seconds nbgrader's autograde lets one cell run (its default, 30, is short)

CONFIG_TEXT = f'''"""The course's nbgrader configuration.

Written by python -m sat_core.book.nbgrader_export.
"""

import os

c = get_config()  # noqa: F821 (nbgrader defines it when it reads this file)

# This folder is the course: source/, release/, submitted/, autograded/, gradebook.db.
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
# Seconds one cell may run under `nbgrader autograde` (nbgrader's default is 30).
c.Execute.timeout = {CELL_TIMEOUT}
'''


class NbgraderExportError(UserError, ValueError):
    """A notebook breaks the exercise convention, or the export would overwrite files."""


def nbgrader_metadata(grade_id: str, *, solution: bool = False, grade: bool = False,
                      locked: bool = False, points: float | None = None) -> dict[str, Any]:
    """A cell's ``nbgrader`` metadata (schema 3); ``points`` only for a graded cell."""
    meta: dict[str, Any] = {"grade": grade, "grade_id": grade_id, "locked": locked,
                            "schema_version": SCHEMA_VERSION, "solution": solution}
    if grade:
        if points is None:
            raise ValueError(f"graded cell {grade_id} needs points")
        meta["points"] = points
    return meta


def _literal(value: Any) -> str:
    """``value`` as Python source, strings in double quotes (the notebooks' style)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def set_parameters(source: str, values: Mapping[str, Any], where: str = "parameters cell") -> str:
    """``source`` of a parameters cell with the top-level assignments of ``values`` replaced
    (``smoke = False  # ...`` -> ``smoke = True  # ...``: the comment stays)."""
    lines = source.split("\n")
    missing = dict(values)
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not (isinstance(target, ast.Name) and target.id in missing):
            continue
        if value.lineno != value.end_lineno:
            raise NbgraderExportError(f"{where}: {target.id} spans several lines; write it on one")
        line = lines[value.lineno - 1]
        lines[value.lineno - 1] = (line[:value.col_offset] + _literal(missing.pop(target.id))
                                   + line[value.end_col_offset:])
    if missing:
        raise NbgraderExportError(f"{where} has no {', '.join(missing)} = ...: every chapter's "
                                  "parameters cell sets smoke and device (notebooks/TEMPLATE.md)")
    return "\n".join(lines)


def nbgrader_markers(source: str) -> str:
    """The book's ``# BEGIN SOLUTION`` / ``# END SOLUTION`` lines as nbgrader's markers."""
    out = []
    for line in source.split("\n"):
        begin = BEGIN.match(line)
        if begin:
            line = begin.group(1) + NBGRADER_BEGIN
        elif END.match(line):
            line = line[: len(line) - len(line.lstrip())] + NBGRADER_END
        out.append(line)
    return "\n".join(out)


def split_exercise(source: str, exercise: Exercise, where: str = "cell") -> tuple[str, str]:
    """(answer cell, test cell) of an exercise cell: the answer is the cell without its
    ``check_X(my_fn)`` call, in nbgrader's markers; the test imports the check and calls it."""
    lines = source.split("\n")
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise NbgraderExportError(f"{where}: the exercise cell is not plain Python ({err})"
                                  ) from err
    calls = [s for s in tree.body if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call)
             and isinstance(s.value.func, ast.Name) and s.value.func.id == exercise.check]
    for stmt in reversed(calls):
        del lines[stmt.lineno - 1: stmt.end_lineno]
    answer = nbgrader_markers("\n".join(lines).rstrip() + "\n").rstrip("\n")
    if NBGRADER_BEGIN not in answer:
        raise NbgraderExportError(f"{where}: no '# BEGIN SOLUTION' ... '# END SOLUTION' block to "
                                  "hand to nbgrader: mark the answer (notebooks/TEMPLATE.md)")
    test = (f"# Autograded test: {exercise.points:g} point(s) when the check passes.\n"
            f"from sat_core.exercises import {exercise.check}\n\n"
            f"{exercise.check}({exercise.function})")
    return answer, test


def _plain_cell(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``cell`` without outputs, execution count and the book's toggle tags."""
    cell = copy.deepcopy(cell)
    if cell.cell_type == "code":
        cell.outputs, cell.execution_count = [], None
    tags = [t for t in cell.metadata.get("tags", []) if t not in TOGGLE_TAGS]
    if tags:
        cell.metadata["tags"] = tags
    else:
        cell.metadata.pop("tags", None)
    return cell


def _is_exercise(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and "solution" in cell.metadata.get("tags", [])


def exercise_cells(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of the cells an exercises-only notebook keeps, in order: the title (first
    markdown cell), the first code cell (the Colab install), and around each exercise the
    markdown cells since the previous code cell (its statement), the exercise, and the markdown
    cells after the last exercise (the "think" exercises)."""
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    exercises = [i for i in code if _is_exercise(nb.cells[i])]
    keep = set(code[:1]) | {next((i for i, c in enumerate(nb.cells)
                                  if c.cell_type == "markdown"), 0)}
    for i in exercises:
        keep.add(i)
        j = i - 1
        while j >= 0 and nb.cells[j].cell_type != "code":
            keep.add(j)
            j -= 1
    if exercises:
        keep |= set(range(exercises[-1] + 1, len(nb.cells))) - set(code)
    return sorted(keep)


def _setup_cell(nb: nbformat.NotebookNode) -> str:
    """The chapter's import statements the exercise cells read (``sat_core.book.grade``'s setup)."""
    needed = set().union(*(names_used(c.source) for c in nb.cells if _is_exercise(c)))
    others = copy.copy(nb)
    others.cells = [c for c in nb.cells if c.cell_type == "code" and not _is_exercise(c)]
    imports = setup_imports(others, None, needed)
    return "# The chapter's imports that the exercises use.\n" + "\n".join(imports)


def nbgrader_notebook(nb: nbformat.NotebookNode, name: str = "notebook",
                      parameters: Mapping[str, Any] | None = None, exercises_only: bool = False,
                      ) -> tuple[nbformat.NotebookNode, list[Exercise]]:
    """The nbgrader source version of a book notebook and its exercises (module docstring).

    ``parameters``: values set in the ``parameters`` cell (None: the book's defaults).
    ``exercises_only``: keep only the cells of :func:`exercise_cells` plus one cell of the
    imports the exercises read (``--exercises-only``; the parameters are then not needed).
    Raises :class:`NbgraderExportError` naming the cell when the notebook breaks the convention.
    """
    exercises = exercises_of(nb, name)
    by_cell = iter(exercises)
    cells = []
    parameters_set = parameters is None or exercises_only
    kept = set(exercise_cells(nb)) if exercises_only else set(range(len(nb.cells)))
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), -1)
    for i, cell in enumerate(nb.cells):
        if i not in kept:
            continue
        where = f"{name}, cell {i}"
        new = _plain_cell(cell)
        if cell.cell_type == "markdown":
            new.source, _ = strip_answers(cell.source, where)
        is_exercise = _is_exercise(cell)
        if not is_exercise and ("BEGIN SOLUTION" in new.source or "END SOLUTION" in new.source):
            raise NbgraderExportError(
                f"{where} mentions BEGIN SOLUTION / END SOLUTION but is no exercise: nbgrader "
                "would cut it there; reword it (or tag the cell 'solution')")
        if is_exercise:
            ex = next(by_cell)
            answer, test = split_exercise(cell.source, ex, where)
            new.source = answer
            new.metadata["nbgrader"] = nbgrader_metadata(ex.name, solution=True)
            test_cell = new_code_cell(test, metadata={"nbgrader": nbgrader_metadata(
                f"test_{ex.name}", grade=True, locked=True, points=ex.points)})
            cells += [new, test_cell]
            continue
        if "parameters" in cell.metadata.get("tags", []) and parameters is not None:
            new.source = set_parameters(cell.source, parameters, f"{name}, parameters cell {i}")
            parameters_set = True
        new.metadata["nbgrader"] = nbgrader_metadata(f"cell_{i:03d}", locked=True)
        cells.append(new)
        if exercises_only and i == first_code:  # after the Colab install: the imports
            cells.append(new_code_cell(_setup_cell(nb), metadata={
                "nbgrader": nbgrader_metadata("setup_imports", locked=True)}))
    if not parameters_set:
        raise NbgraderExportError(f"{name} has no cell tagged 'parameters' to set "
                                  f"{', '.join(parameters or {})} in: add one "
                                  "(notebooks/TEMPLATE.md) or pass --book-parameters")
    out = copy.deepcopy(nb)
    out.cells = cells
    for key in ("papermill", "widgets"):
        out.metadata.pop(key, None)
    if (out.nbformat, out.nbformat_minor) >= (4, 5):  # cell ids: the grade ids (unique)
        for cell in out.cells:
            cell["id"] = cell.metadata["nbgrader"]["grade_id"]
    return out, exercises


def select_notebooks(notebooks_dir: Path, chapters: Sequence[str] | None = None) -> list[Path]:
    """The chapter notebooks ``NN_name.ipynb`` of ``notebooks_dir``; with ``chapters``
    (``["04", "5"]``), only those numbers."""
    if not notebooks_dir.is_dir():
        raise NbgraderExportError(f"NOTEBOOKS_DIR {notebooks_dir} is not a folder — pass the "
                                  "book's notebooks/")
    found = sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if chapters:
        wanted = {c.zfill(2) for c in chapters}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise NbgraderExportError(
                f"no chapter {', '.join(sorted(unknown))} in {notebooks_dir} (there are "
                f"{', '.join(p.name[:2] for p in found) or 'none'}) — check --chapters")
        found = [p for p in found if p.name[:2] in wanted]
    if not found:
        raise NbgraderExportError(f"no chapter notebooks NN_name.ipynb in {notebooks_dir} — "
                                  "pass the book's notebooks/")
    return found


def export(notebooks_dir: Path, course_dir: Path, assignment: str = DEFAULT_ASSIGNMENT,
           chapters: Sequence[str] | None = None,
           parameters: Mapping[str, Any] | None = SMOKE_PARAMETERS,
           force: bool = False, exercises_only: bool = False) -> dict[Path, list[Exercise]]:
    """Write ``course_dir/source/<assignment>/NN_name.ipynb`` for the chapters, and
    ``course_dir/nbgrader_config.py`` when missing. Returns {written path: its exercises}.

    All or nothing: every notebook is converted (and nbgrader's metadata validated, when nbgrader
    is installed) before the first file is written; an existing notebook is replaced only with
    ``force``.
    """
    if not ASSIGNMENT_NAME.fullmatch(assignment):
        raise NbgraderExportError(f"--assignment {assignment!r}: use letters, digits, '_', '-' "
                                  "and '.' (nbgrader makes it a folder and a database key)")
    notebooks_dir, course_dir = Path(notebooks_dir).resolve(), Path(course_dir).resolve()
    if course_dir == notebooks_dir or notebooks_dir in course_dir.parents:
        raise NbgraderExportError(f"COURSE_DIR {course_dir} is inside NOTEBOOKS_DIR — pick a "
                                  "folder outside the book's notebooks, e.g. ../sat-course")
    folder = course_dir / "source" / assignment
    converted = {}
    for path in select_notebooks(notebooks_dir, chapters):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception as err:  # nbformat raises several types for a broken file
            raise NbgraderExportError(f"{path} is not a readable notebook: {err}") from err
        out, exercises = nbgrader_notebook(nb, path.name, parameters, exercises_only)
        if not exercises:
            continue  # no exercise: nothing to grade
        nbformat.validate(out)
        _validate_with_nbgrader(out, path.name)
        target = folder / path.name
        if target.exists() and not force:
            raise NbgraderExportError(f"{target} exists (an instructor may have edited it) — "
                                      "move it away, or pass --force to replace it")
        converted[target] = (out, exercises)
    if not converted:
        raise NbgraderExportError("none of the chosen notebooks has exercises — check --chapters")
    folder.mkdir(parents=True, exist_ok=True)
    for target, (out, _) in converted.items():
        nbformat.write(out, target)
    config = course_dir / "nbgrader_config.py"
    if not config.exists():
        config.write_text(CONFIG_TEXT, encoding="utf-8")
    return {target: exercises for target, (_, exercises) in converted.items()}


def _validate_with_nbgrader(nb: nbformat.NotebookNode, name: str) -> None:
    """nbgrader's own check of the cell metadata (skipped when nbgrader is not installed)."""
    try:
        from nbgrader.nbgraderformat import MetadataValidator, ValidationError
    except ImportError:
        return
    try:
        MetadataValidator().validate_nb(nb)
    except ValidationError as err:  # a bug of this module, not of the user's input
        raise RuntimeError(f"{name}: nbgrader rejects the exported metadata: {err}") from err


@command(NbgraderExportError, OSError)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sat_core.book.nbgrader_export NOTEBOOKS_DIR COURSE_DIR``; errors: one line."""
    parser = ArgumentParser(
        prog="python -m sat_core.book.nbgrader_export",
        description="Write an nbgrader source folder from the book's notebooks: "
        "COURSE_DIR/source/ASSIGNMENT/NN_name.ipynb with each exercise's solution between "
        "nbgrader's '### BEGIN SOLUTION' / '### END SOLUTION' markers and its check as an "
        "autograded test cell worth the exercise's points (metadata sat.points), every other "
        "cell read-only, the folded answers removed, the parameters at smoke size; plus "
        "COURSE_DIR/nbgrader_config.py when missing. Then, in COURSE_DIR: "
        "'nbgrader generate_assignment ASSIGNMENT' and 'nbgrader autograde ASSIGNMENT'.",
    )
    parser.add_argument("notebooks", type=Path, metavar="NOTEBOOKS_DIR",
                        help="the book's notebooks (the instructor's copy, with solutions)")
    parser.add_argument("course", type=Path, metavar="COURSE_DIR",
                        help="the nbgrader course folder (made if missing)")
    parser.add_argument("--assignment", default=DEFAULT_ASSIGNMENT,
                        help=f"the assignment's name (default: {DEFAULT_ASSIGNMENT})")
    parser.add_argument("--chapters", nargs="+", metavar="NN",
                        help="only these chapters, e.g. --chapters 04 05 (default: every chapter "
                        "with exercises)")
    parser.add_argument("--book-parameters", action="store_true",
                        help="keep the book's parameters (smoke = False: autograde trains the "
                        "real models, minutes per submission) instead of smoke = True, "
                        "device = 'cpu'")
    parser.add_argument("--exercises-only", action="store_true",
                        help="only the exercises: their statements, the chapter's imports they "
                        "use, the answer and test cells (the chapter itself stays in the book; "
                        "autograde then runs a notebook in seconds)")
    parser.add_argument("--force", action="store_true",
                        help="replace notebooks already in COURSE_DIR/source/ASSIGNMENT")
    args = parser.parse_args(argv)
    written = export(args.notebooks, args.course, args.assignment, args.chapters,
                     None if args.book_parameters else SMOKE_PARAMETERS, args.force,
                     args.exercises_only)
    for path, exercises in written.items():
        points = sum(ex.points for ex in exercises)
        print(f"{path}: {len(exercises)} exercise(s), {points:g} point(s)")
    print(f"next: cd {args.course} && nbgrader generate_assignment {args.assignment}")
    return 0


__all__ = ["DEFAULT_ASSIGNMENT", "SMOKE_PARAMETERS", "NbgraderExportError", "exercise_cells",
           "export", "main",
           "nbgrader_markers", "nbgrader_metadata", "nbgrader_notebook", "select_notebooks",
           "set_parameters", "split_exercise"]


if __name__ == "__main__":
    sys.exit(main())
