"""Grade a class: ``python -m sat_core.book.grade SUBMISSIONS_DIR --out grades.csv``.

Submissions are laid out like nbgrader's ``submitted`` folder: ``SUBMISSIONS_DIR/STUDENT/`` holds
the student's chapter notebooks ``NN_name.ipynb`` (at any depth, so
``SUBMISSIONS_DIR/STUDENT/ASSIGNMENT/NN_name.ipynb`` works too). The exercises, their checks and
their points come from the instructor's notebooks (``--source``, the book's ``notebooks/``), never
from the submission: a student cannot change the points, drop the check call or rename the check.

An exercise is a code cell tagged ``solution`` that ends with ``check_X(my_fn)``; its points are the
cell metadata ``{"sat": {"points": 2}}`` the author sets (1 when absent). For every student and
every exercise of every notebook that anyone submitted, the grader

1. finds the student's cell that calls ``check_X`` (preferring a cell tagged ``solution``);
2. in a fresh process forked from one that imported torch and the checks once, runs the setup --
   the top-level ``import`` statements of the student's OTHER code cells that bind a name the
   exercise cell reads (an exercise relies only on the notebook's imports; nothing else of the
   chapter is executed: no training, no data) -- then the student's cell without its
   ``check_*(...)`` calls, then the real ``check_X`` on ``my_fn``;
3. kills that process after ``--timeout`` seconds.

So each exercise is graded independently: a failing, unattempted, crashing or never-ending one
does not stop the others. The checks are CPU-sized (the grader hides GPUs and uses one thread per
process); ``--jobs`` processes run at once.

Outputs:

* ``--out`` (CSV): one row per student x exercise, the columns :data:`FIELDS`; ``status`` is one
  of :data:`STATUSES`: ``passed`` (all the points), ``failed`` (the check rejected the answer;
  its explanation is the feedback), ``not attempted`` (the stub still raises
  ``NotImplementedError``, the cell is missing, or the notebook was not submitted), ``error`` (the
  cell or the function raised, the process died, or the notebook is not readable) and
  ``timeout``.
* ``--summary`` (CSV, default ``<out>_summary.csv`` beside ``--out``): one row per student, the
  columns :data:`SUMMARY_FIELDS` (points, max_points, percent, and how many exercises ended in each
  status); the same table is printed at the end.

This is not a sandbox: submissions run with the grader's rights, as with nbgrader.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import multiprocessing as mp
import os
import re
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sat_core.errors import ArgumentParser, UserError, command
from sat_core.out_dir import check_out_file

if TYPE_CHECKING:
    import nbformat

STATUSES = ("passed", "failed", "not attempted", "error", "timeout")
FIELDS = ("student", "notebook", "exercise", "points", "max_points", "status", "feedback")
SUMMARY_FIELDS = ("student", "points", "max_points", "percent") + STATUSES
SOURCE_DIR = Path(__file__).resolve().parents[2] / "notebooks"
SOLUTION_TAG = "solution"
FEEDBACK_CHARS = 4000  # longer feedback (a runaway print, a huge repr) is cut


class GradeError(UserError, ValueError):
    """Wrong input of the grader: a missing folder, no notebooks, a malformed exercise cell."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of an instructor's notebook: its check, the function it checks, its points."""

    notebook: str  # file name, e.g. "04_soft_attention.ipynb"
    name: str  # the check's name without "check_", e.g. "soft_attention"
    check: str  # e.g. "check_soft_attention"
    function: str  # e.g. "my_soft_attention"
    points: float


@dataclass(frozen=True)
class Task:
    """What one grading process runs: setup imports, the student's cell, the check."""

    setup: tuple[str, ...]
    source: str
    check: str
    function: str


@dataclass
class Result:
    """One row of the grades CSV."""

    student: str
    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str
    feedback: str = ""

    def row(self) -> dict[str, Any]:
        """The CSV row: points as ``2`` rather than ``2.0`` when whole."""
        row = {k: getattr(self, k) for k in FIELDS}
        for k in ("points", "max_points"):
            row[k] = _number(row[k])
        return row


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


# --------------------------------------------------------------------------- reading notebooks


def transform(source: str) -> str:
    """A cell's source as plain Python: IPython's magics (``%pip``, ``!ls``) become calls."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return source
    return TransformerManager().transform_cell(source)


def _check_call(stmt: ast.stmt) -> tuple[str, str] | None:
    """``(check name, argument name)`` when ``stmt`` is ``check_X(name)``, else None."""
    if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
        return None
    call = stmt.value
    if isinstance(call.func, ast.Name) and call.func.id.startswith("check_"):
        arg = call.args[0] if len(call.args) == 1 and not call.keywords else None
        return call.func.id, arg.id if isinstance(arg, ast.Name) else ""
    return None


def points_of(cell: nbformat.NotebookNode, where: str = "cell") -> float:
    """The points of an exercise cell: its metadata ``sat.points``, 1 when absent."""
    points = cell.get("metadata", {}).get("sat", {}).get("points", 1)
    if isinstance(points, bool) or not isinstance(points, (int, float)) or points < 0:
        raise GradeError(f"{where}: metadata sat.points must be a number >= 0, got {points!r}")
    return float(points)


def exercises_of(nb: nbformat.NotebookNode, notebook: str) -> list[Exercise]:
    """The exercises of an instructor's notebook, in order (cells tagged ``solution``)."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or SOLUTION_TAG not in cell.metadata.get("tags", []):
            continue
        where = f"{notebook}, cell {i}"
        calls = [c for s in ast.parse(transform(cell.source)).body if (c := _check_call(s))]
        if len(calls) != 1 or not calls[0][1]:
            raise GradeError(f"{where}: an exercise cell must end with one call check_X(my_fn) "
                             f"of its check on its function, found {len(calls)}")
        check, function = calls[0]
        out.append(Exercise(notebook, check.removeprefix("check_"), check, function,
                            points_of(cell, where)))
    return out


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook; a broken one raises :class:`GradeError` saying why in one line."""
    import nbformat  # here: importing it takes seconds, which --help need not wait for

    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GradeError(f"{path.name} is not valid JSON ({err})") from err
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several types for a broken file
        raise GradeError(f"{path.name} is not a readable notebook "
                         f"({type(err).__name__}: {err})") from err


def _bound(stmt: ast.Import | ast.ImportFrom) -> set[str]:
    """The names an import statement binds (``*`` for a star import)."""
    return {(a.asname or a.name).split(".")[0] for a in stmt.names}


def names_used(source: str) -> set[str]:
    """Every name a cell reads (``ast.Name`` loads), empty when it does not parse."""
    try:
        tree = ast.parse(transform(source))
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def setup_imports(nb: nbformat.NotebookNode, skip: int | None = None,
                  needed: set[str] | None = None) -> tuple[str, ...]:
    """The top-level ``import`` statements of the code cells but cell ``skip``, as source.

    With ``needed``, only those that bind one of these names (or ``*``): the graded cell's
    setup, without importing what it never uses (matplotlib, widgets...).
    """
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or i == skip:
            continue
        try:
            tree = ast.parse(transform(cell.source))
        except SyntaxError:
            continue  # that cell's own exercise reports it
        out += [ast.unparse(s) for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))
                and (needed is None or _bound(s) & (needed | {"*"}))]
    return tuple(dict.fromkeys(out))


def find_cell(nb: nbformat.NotebookNode, exercise: Exercise) -> int | None:
    """Index of the student's cell that calls the exercise's check (a tagged one first)."""
    call = re.compile(rf"\b{re.escape(exercise.check)}\s*\(")
    found = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and call.search(c.source)]
    tagged = [i for i in found if SOLUTION_TAG in nb.cells[i].metadata.get("tags", [])]
    return (tagged or found or [None])[0]


# --------------------------------------------------------------------------- one exercise


def _without_checks(source: str) -> ast.Module:
    """The cell's code without its top-level ``check_*(...)`` calls (the grader calls the check)."""
    tree = ast.parse(transform(source), "<exercise cell>")
    tree.body = [s for s in tree.body if _check_call(s) is None]
    return tree


def _error_text(err: BaseException) -> str:
    """``Type: message (cell line N)``: where in the student's cell it was raised, if there."""
    import traceback

    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__)
             if f.filename == "<exercise cell>"]
    where = f" (exercise cell, line {lines[-1]})" if lines else ""
    return f"{type(err).__name__}: {err}{where}"


def run_task(task: Task) -> tuple[str, str]:
    """Run one exercise in THIS process: setup, the student's cell, the check -> (status, feedback).

    The check is looked up before any student code runs, so a cell cannot replace it.
    """
    import sat_core.exercises as exercises
    from sat_core.exercises import ExerciseCrashed, ExerciseFailed, ExerciseNotAttempted

    check = getattr(exercises, task.check)
    ns: dict[str, Any] = {"__name__": "__main__"}
    notes = []
    for stmt in task.setup:
        try:
            exec(stmt, ns)
        except Exception as err:
            notes.append(f"(setup: `{stmt}` failed: {type(err).__name__}: {err})")
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            exec(compile(_without_checks(task.source), "<exercise cell>", "exec"), ns)
            fn = ns.get(task.function)
            if not callable(fn):
                return "error", (f"the exercise cell defines no function {task.function}: keep "
                                 f"the exercise's signature, then {task.check}({task.function})")
            check(fn)
    except ExerciseNotAttempted as err:
        return "not attempted", str(err)
    except ExerciseCrashed as err:
        cause = err.__cause__
        return "error", str(err) + (f"\n  {_error_text(cause)}" if cause else "")
    except ExerciseFailed as err:
        return "failed", str(err)
    except NotImplementedError:
        return "not attempted", "the exercise cell raises NotImplementedError: replace it"
    except BaseException as err:  # the cell itself raised, or called sys.exit
        return "error", " ".join([f"the exercise cell raised {_error_text(err)}", *notes])
    passed = [ln for ln in out.getvalue().splitlines() if ln.startswith("✓")]
    return "passed", passed[-1] if passed else f"✓ {task.check}"


def _child(task: Task, conn: Connection) -> None:
    """A grading process: quiet, one thread; sends ``(status, feedback)`` back through ``conn``."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        import torch

        torch.set_num_threads(1)
        status, feedback = run_task(task)
    except BaseException as err:  # the grader's own failure: report it as an error, not a hang
        status, feedback = "error", f"grading failed: {type(err).__name__}: {err}"
    if len(feedback) > FEEDBACK_CHARS:
        feedback = feedback[:FEEDBACK_CHARS] + " [...]"
    conn.send((status, feedback))
    conn.close()


# --------------------------------------------------------------------------- many exercises


def _finish(conn: Connection, proc: Any) -> tuple[str, str]:
    try:
        result = conn.recv()
    except (EOFError, OSError):
        proc.join(5)
        result = ("error", f"the process grading this exercise died (exit code {proc.exitcode}): "
                           "os._exit, a crash in compiled code, or out of memory?")
    conn.close()
    proc.join(2)
    if proc.is_alive():  # a thread the student started keeps it alive
        proc.kill()
        proc.join()
    return result


def run_tasks(tasks: Sequence[Task], jobs: int, timeout: float,
              done: Any = None) -> list[tuple[str, str]]:
    """Run every task in its own process, ``jobs`` at a time, each killed after ``timeout`` s.

    ``done()`` is called after each task (a progress bar). Forks where the OS can (the children
    inherit the imported torch and checks), spawns elsewhere.
    """
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    results: list[tuple[str, str]] = [("error", "not run")] * len(tasks)
    pending = list(range(len(tasks)))[::-1]
    running: dict[Connection, tuple[int, Any, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                i = pending.pop()
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(tasks[i], send), daemon=True)
                proc.start()
                send.close()
                running[recv] = (i, proc, time.monotonic() + timeout)
            left = min(d for _, _, d in running.values()) - time.monotonic()
            ready = set(wait(list(running), timeout=max(0.0, left)))
            now = time.monotonic()
            for conn, (i, proc, deadline) in list(running.items()):
                if conn in ready:
                    results[i] = _finish(conn, proc)
                elif deadline <= now:
                    proc.kill()
                    proc.join()
                    conn.close()
                    results[i] = ("timeout", f"still running after {timeout:g} s: an endless "
                                             "loop, or far more work than the exercise needs?")
                else:
                    continue
                del running[conn]
                if done:
                    done()
    finally:
        for conn, (_, proc, _) in running.items():
            proc.kill()
            conn.close()
    return results


# --------------------------------------------------------------------------- a class


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def collect_submissions(folder: Path) -> dict[str, dict[str, Path]]:
    """``{student: {notebook file name: path}}`` of ``folder/STUDENT/**/NN_name.ipynb``."""
    if not folder.is_dir():
        raise GradeError(f"SUBMISSIONS_DIR {folder} is not a folder — expected "
                         "SUBMISSIONS_DIR/STUDENT/NN_name.ipynb")
    students: dict[str, dict[str, Path]] = {}
    for student in sorted(p for p in folder.iterdir() if p.is_dir()
                          and not p.name.startswith(".")):
        found: dict[str, Path] = {}
        for path in sorted(student.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            if path.name in found:
                _warn(f"{student.name} submitted {path.name} twice; grading {found[path.name]}")
                continue
            found[path.name] = path
        students[student.name] = found
    if not any(students.values()):
        raise GradeError(f"no notebooks in {folder}/STUDENT/ — expected "
                         "SUBMISSIONS_DIR/STUDENT/NN_name.ipynb (one folder per student)")
    return students


def load_exercises(source: Path, names: Iterable[str]) -> dict[str, list[Exercise]]:
    """``{notebook: [Exercise]}`` from the instructor's notebooks in ``source``."""
    if not source.is_dir():
        raise GradeError(f"--source {source} is not a folder — pass the instructor's notebooks "
                         "(the book's notebooks/)")
    catalogue = {}
    for name in sorted(names):
        path = source / name
        if not path.is_file():
            _warn(f"{name} is not in {source}: not graded")
            continue
        exercises = exercises_of(read_notebook(path), name)
        if exercises:
            catalogue[name] = exercises
    if not catalogue:
        raise GradeError(f"none of the submitted notebooks has exercises in {source} — are the "
                         "files named like the book's chapters (NN_name.ipynb)?")
    return catalogue


def plan(students: dict[str, dict[str, Path]],
         catalogue: dict[str, list[Exercise]]) -> tuple[list[Result], list[Task], list[int]]:
    """The rows (those that need no run already decided), the tasks, and each task's row."""
    results: list[Result] = []
    tasks: list[Task] = []
    slots: list[int] = []
    for student, submitted in students.items():
        for name, exercises in catalogue.items():
            nb, problem = None, ""
            if name not in submitted:
                problem = f"no {name} submitted"
            else:
                try:
                    nb = read_notebook(submitted[name])
                except GradeError as err:
                    problem = str(err)
            for ex in exercises:
                row = Result(student, name, ex.name, 0, ex.points, "not attempted", problem)
                if nb is not None and (i := find_cell(nb, ex)) is None:
                    row.feedback = f"no cell calls {ex.check}(...): the exercise cell is missing"
                elif nb is not None:
                    slots.append(len(results))
                    source = nb.cells[i].source
                    tasks.append(Task(setup_imports(nb, i, names_used(source)), source,
                                      ex.check, ex.function))
                elif name in submitted:
                    row.status = "error"
                results.append(row)
    return results, tasks, slots


def _stub(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError


def warm_up(tasks: Sequence[Task]) -> None:
    """Import the checks and the setup imports, and run each check once on a stub (its cases,
    its reference and their lazy imports, e.g. torch.optim's), here: every fork inherits them."""
    import torch

    import sat_core.exercises as exercises

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # no thread pool before the forks
    try:
        for check in sorted({t.check for t in tasks}):
            with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
                getattr(exercises, check)(_stub)
    finally:
        torch.set_num_threads(threads)
    ns: dict[str, Any] = {}
    for stmt in dict.fromkeys(s for t in tasks for s in t.setup):
        with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
            exec(stmt, ns)


def grade(submissions: Path, source: Path = SOURCE_DIR, *, timeout: float = 60.0, jobs: int = 2,
          progress: bool = True) -> list[Result]:
    """Grade every exercise of every submitted notebook: one :class:`Result` per row."""
    from tqdm import tqdm

    students = collect_submissions(Path(submissions))
    names = {name for found in students.values() for name in found}
    results, tasks, slots = plan(students, load_exercises(Path(source), names))
    os.environ.setdefault("MPLBACKEND", "Agg")
    warm_up(tasks)
    tqdm.monitor_interval = 0  # no monitor thread: the processes are forked
    with tqdm(total=len(tasks), desc="grading", unit="exercise", disable=not progress) as bar:
        outcomes = run_tasks(tasks, max(1, jobs), timeout, done=bar.update)
    for slot, (status, feedback) in zip(slots, outcomes, strict=True):
        row = results[slot]
        row.status, row.feedback = status, feedback
        row.points = row.max_points if status == "passed" else 0
    return results


def summarise(results: Sequence[Result]) -> list[dict[str, Any]]:
    """One row per student: points, max_points, percent and the count of each status."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        row = rows.setdefault(r.student, {"student": r.student, "points": 0.0,
                                          "max_points": 0.0, **dict.fromkeys(STATUSES, 0)})
        row["points"] += r.points
        row["max_points"] += r.max_points
        row[r.status] += 1
    for row in rows.values():
        row["percent"] = round(100 * row["points"] / row["max_points"], 1) \
            if row["max_points"] else 0.0
        row["points"], row["max_points"] = _number(row["points"]), _number(row["max_points"])
    return [{k: row[k] for k in SUMMARY_FIELDS} for row in rows.values()]


def write_csv(path: Path, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` (folders made), a header of ``fields`` first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)


def format_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The per-student summary as an aligned text table."""
    table = [list(SUMMARY_FIELDS)] + [[str(r[k]) for k in SUMMARY_FIELDS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(SUMMARY_FIELDS))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                     for line in table)


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@command(GradeError, OSError)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sat_core.book.grade SUBMISSIONS_DIR --out grades.csv``; user errors: one line."""
    parser = ArgumentParser(
        prog="python -m sat_core.book.grade",
        description="Grade every exercise of every notebook in SUBMISSIONS_DIR/STUDENT/ "
        "(NN_name.ipynb, as in nbgrader's submitted folder), each in its own process with a time "
        "limit, against the checks and points of the instructor's notebooks. Writes one CSV row "
        "per student x exercise (student, notebook, exercise, points, max_points, status, "
        "feedback; status: passed | failed | not attempted | error | timeout) and a per-student "
        "summary CSV (student, points, max_points, percent, and the count of each status), "
        "also printed as a table.",
    )
    parser.add_argument("submissions", type=Path, metavar="SUBMISSIONS_DIR",
                        help="one folder per student, holding the submitted notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"),
                        help="the grades CSV (default: grades.csv)")
    parser.add_argument("--summary", type=Path, default=None,
                        help="the per-student CSV (default: <out>_summary.csv beside --out)")
    parser.add_argument("--source", type=Path, default=SOURCE_DIR,
                        help="the instructor's notebooks: exercises, checks, points "
                        "(default: the book's notebooks/)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds one exercise may run before it is stopped (default: 60)")
    parser.add_argument("--jobs", type=int, default=_default_jobs(),
                        help="exercises graded at once (default: the number of CPU cores)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0 < args.timeout < float("inf") or args.jobs < 1:  # NaN fails too
        parser.error("--timeout must be a finite number > 0 and --jobs >= 1")
    for flag, path in (("--out", args.out), ("--summary", args.summary)):
        if path is not None:  # before the grading, not after it
            check_out_file(path, flag, "grades.csv")
    if "torch" not in sys.modules:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the checks are CPU-sized
    start = time.perf_counter()
    results = grade(args.submissions, args.source, timeout=args.timeout, jobs=args.jobs,
                    progress=not args.no_progress)
    summary_path = args.summary or args.out.with_name(f"{args.out.stem}_summary.csv")
    write_csv(args.out, FIELDS, (r.row() for r in results))
    summary = summarise(results)
    write_csv(summary_path, SUMMARY_FIELDS, summary)
    print(format_summary(summary))
    print(f"graded {len(results)} exercise(s) of {len(summary)} student(s) in "
          f"{time.perf_counter() - start:.1f} s -> {args.out}, {summary_path}")
    return 0


__all__ = ["FIELDS", "STATUSES", "SUMMARY_FIELDS", "Exercise", "GradeError", "Result", "Task",
           "exercises_of", "find_cell", "grade", "load_exercises", "main", "points_of",
           "run_task", "run_tasks", "setup_imports", "summarise"]


if __name__ == "__main__":
    sys.exit(main())
