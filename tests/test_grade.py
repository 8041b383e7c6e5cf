"""``python -m sat_core.book.grade``: a class of generated chapter-4 submissions, graded once.

The submissions are made from the real notebook: the instructor's copy (all correct), the student
copy of :mod:`sat_core.book.student` (nothing attempted), and edits of the instructor's exercise cells
(a wrong answer, an endless loop, a crash, a missing check call), plus a notebook that is not JSON
and a student who submitted nothing.
"""

from __future__ import annotations

import copy
import csv
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from sat_core.book.grade import GradeError, exercises_of, find_cell, main, points_of, setup_imports
from sat_core.book.student import student_notebook

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "04_soft_attention.ipynb"
TIMEOUT = 3.0


def edited(nb: nbformat.NotebookNode, check: str, old: str, new: str) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose exercise cell calling ``check`` has ``old`` replaced by ``new``."""
    nb = copy.deepcopy(nb)
    cell = next(c for c in nb.cells if f"{check}(" in c.source and "solution" in
                c.metadata.get("tags", []))
    assert old in cell.source, (check, old)
    cell.source = cell.source.replace(old, new)
    return nb


def make_class(folder: Path) -> None:
    """Seven students' chapter-4 submissions (the expected grades are in EXPECTED)."""
    nb = nbformat.read(ROOT / "notebooks" / CHAPTER, as_version=4)
    soft_body = "    # BEGIN SOLUTION\n    e = torch.tanh("
    gate_body = "    # BEGIN SOLUTION\n    beta = "
    subs = {
        "ada": nb,
        "bob": student_notebook(nb)[0],
        "cyd": edited(nb, "check_soft_attention", "e = torch.tanh(", "e = torch.relu("),
        "dan": edited(nb, "check_soft_attention", soft_body,
                      "    while True:\n        pass\n" + soft_body),
        "eve": edited(nb, "check_gate", gate_body, '    raise ValueError("boom")\n' + gate_body),
        "gus": edited(edited(nb, "check_soft_attention", "check_soft_attention(my_soft_attention)",
                             "# check_soft_attention(my_soft_attention)"),
                      "check_soft_attention", "dim=1)", "dim=0)"),
    }
    subs["gus"].cells.insert(-1, new_code_cell("import no_such_module_for_grading"))
    subs["gus"] = edited(subs["gus"], "check_gate", "def my_gated_context",
                         "import no_such_module_for_grading\n\n\ndef my_gated_context")
    for student, notebook in subs.items():
        (folder / student).mkdir(parents=True)
        nbformat.write(notebook, folder / student / CHAPTER)
    (folder / "fay").mkdir()
    (folder / "fay" / CHAPTER).write_text('{"cells": [', encoding="utf-8")
    (folder / "hal").mkdir()  # submitted nothing


# student -> ((status, points) of soft_attention (2 points), of gate (1 point))
EXPECTED = {
    "ada": (("passed", 2), ("passed", 1)),
    "bob": (("not attempted", 0), ("not attempted", 0)),
    "cyd": (("failed", 0), ("passed", 1)),
    "dan": (("timeout", 0), ("passed", 1)),
    "eve": (("passed", 2), ("error", 0)),
    "fay": (("error", 0), ("error", 0)),
    "gus": (("failed", 0), ("error", 0)),
    "hal": (("not attempted", 0), ("not attempted", 0)),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One grading run of the class: (rows by (student, exercise), summary rows, stdout, rows).

    One test uses it (pytest-xdist would run a module fixture once per worker that runs a test).
    """
    tmp = tmp_path_factory.mktemp("grade")
    make_class(tmp / "submitted")
    out = tmp / "out" / "grades.csv"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main([str(tmp / "submitted"), "--out", str(out), "--timeout", str(TIMEOUT),
                       "--jobs", "2", "--no-progress"])
    assert status == 0
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    with open(out.with_name("grades_summary.csv"), newline="", encoding="utf-8") as f:
        summary = {r["student"]: r for r in csv.DictReader(f)}
    return {(r["student"], r["exercise"]): r for r in rows}, summary, buf.getvalue(), rows


def test_a_class_is_graded_exercise_by_exercise(graded):
    """The exact statuses and points, the feedback, and the summary of one grading run."""
    check_rows(graded)
    check_feedback(graded)
    check_summary(graded)


def check_rows(graded):
    rows, _, _, ordered = graded
    assert list(ordered[0]) == ["student", "notebook", "exercise", "points", "max_points",
                                "status", "feedback"]
    assert len(ordered) == 2 * len(EXPECTED)
    got = {s: tuple((rows[s, ex]["status"], int(rows[s, ex]["points"]))
                    for ex in ("soft_attention", "gate")) for s in EXPECTED}
    assert got == EXPECTED
    assert {(r["notebook"], r["exercise"], r["max_points"]) for r in ordered} == {
        (CHAPTER, "soft_attention", "2"), (CHAPTER, "gate", "1")}


def check_feedback(graded):
    rows = graded[0]
    assert rows["ada", "gate"]["feedback"].startswith("✓ the gating scalar beta")
    assert "not attempted yet" in rows["bob", "soft_attention"]["feedback"]
    assert "nonlinearity" in rows["cyd", "soft_attention"]["feedback"]
    assert f"still running after {TIMEOUT:g} s" in rows["dan", "soft_attention"]["feedback"]
    assert "ValueError: boom" in rows["eve", "gate"]["feedback"]
    assert "not valid JSON" in rows["fay", "gate"]["feedback"]
    # the check runs although gus commented its call out; the failed import is named
    assert "softmax over the batch" in rows["gus", "soft_attention"]["feedback"]
    assert "ModuleNotFoundError" in rows["gus", "gate"]["feedback"]
    assert rows["hal", "gate"]["feedback"] == f"no {CHAPTER} submitted"


def check_summary(graded):
    _, summary, stdout, _ = graded
    assert {s: (r["points"], r["max_points"], r["percent"]) for s, r in summary.items()} == {
        s: (str(sum(p for _, p in exp)), "3", str(round(100 * sum(p for _, p in exp) / 3, 1)))
        for s, exp in EXPECTED.items()}
    assert summary["dan"]["timeout"] == "1" and summary["dan"]["passed"] == "1"
    assert stdout.splitlines()[0].split() == ["student", "points", "max_points", "percent",
                                              "passed", "failed", "not", "attempted", "error",
                                              "timeout"]
    assert "graded 16 exercise(s) of 8 student(s)" in stdout


def test_exercises_and_points_come_from_the_instructor_notebooks():
    nb = nbformat.read(ROOT / "notebooks" / CHAPTER, as_version=4)
    assert [(e.name, e.check, e.function, e.points) for e in exercises_of(nb, CHAPTER)] == [
        ("soft_attention", "check_soft_attention", "my_soft_attention", 2.0),
        ("gate", "check_gate", "my_gated_context", 1.0)]
    assert points_of(new_code_cell("x = 1")) == 1.0  # the default
    with pytest.raises(GradeError, match="sat.points must be a number"):
        points_of(new_code_cell("x = 1", metadata={"sat": {"points": "two"}}))
    # a student's cell is found by its check call even without the tags
    student = copy.deepcopy(nb)
    for cell in student.cells:
        cell.metadata.pop("tags", None)
    gate = exercises_of(nb, CHAPTER)[1]
    assert find_cell(student, gate) == find_cell(nb, gate) is not None
    assert "import torch" in setup_imports(nb)


def test_command_line_help_and_one_line_errors(tmp_path):
    run = [sys.executable, "-m", "sat_core.book.grade"]
    helped = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert helped.returncode == 0 and "SUBMISSIONS_DIR" in helped.stdout
    assert "not attempted" in " ".join(helped.stdout.split())
    missing = subprocess.run(run + [str(tmp_path / "nope")], capture_output=True, text=True,
                             cwd=ROOT)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("error: SUBMISSIONS_DIR")
