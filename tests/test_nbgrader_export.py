"""The nbgrader export: the book's notebooks as an nbgrader source folder, graded by nbgrader itself.

The last test runs nbgrader's own ``generate_assignment`` and ``autograde`` (its Python API, with
the ``nbgrader_config.py`` the export writes) on chapter 4's exercises, with one correct and one
wrong submission, and reads the scores from nbgrader's gradebook.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import nbformat
import pytest

from sat_core.book.grade import Exercise, exercises_of
from sat_core.book.nbgrader_export import (
    NBGRADER_BEGIN,
    NBGRADER_END,
    NbgraderExportError,
    export,
    main,
    nbgrader_markers,
    set_parameters,
    split_exercise,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTER = "04_soft_attention.ipynb"


def nbgrader_meta(cell: nbformat.NotebookNode) -> dict:
    return cell.metadata.get("nbgrader", {})


def test_set_parameters_replaces_values_and_keeps_comments():
    source = 'device = "auto"  # where\nsmoke = False  # tiny sizes\nseed: int = 0\nsteps = 3'
    out = set_parameters(source, {"smoke": True, "device": "cpu", "seed": 7})
    assert out == 'device = "cpu"  # where\nsmoke = True  # tiny sizes\nseed: int = 7\nsteps = 3'
    with pytest.raises(NbgraderExportError, match="has no smoke"):
        set_parameters("device = 'auto'", {"smoke": True, "device": "cpu"})


def test_split_exercise_moves_the_check_to_a_test_cell():
    source = ('from sat_core.exercises.ch04 import check_gate\n\n\ndef f(x):\n'
              '    """doc"""\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION\n\n\n'
              'check_gate(f)')
    ex = Exercise("nb.ipynb", "gate", "check_gate", "f", 2.0)
    answer, test = split_exercise(source, ex)
    assert answer == ('from sat_core.exercises.ch04 import check_gate\n\n\ndef f(x):\n'
                      f'    """doc"""\n    {NBGRADER_BEGIN}\n    return 2 * x\n    {NBGRADER_END}')
    assert test.splitlines()[1:] == ["from sat_core.exercises import check_gate", "", "check_gate(f)"]
    assert "2 point(s)" in test
    assert nbgrader_markers("x = 1\n  # END SOLUTION") == f"x = 1\n  {NBGRADER_END}"
    with pytest.raises(NbgraderExportError, match="no '# BEGIN SOLUTION'"):
        split_exercise("def f(x):\n    return x\n\ncheck_gate(f)", ex)


def test_chapter_export_has_nbgrader_cells_with_the_books_points(tmp_path):
    written = export(NOTEBOOKS, tmp_path, "ch04", ["04"])
    path = tmp_path / "source" / "ch04" / CHAPTER
    assert list(written) == [path] and (tmp_path / "nbgrader_config.py").is_file()
    book = nbformat.read(NOTEBOOKS / CHAPTER, as_version=4)
    out = nbformat.read(path, as_version=4)
    nbformat.validate(out)
    exercises = exercises_of(book, CHAPTER)
    assert written[path] == exercises and len(exercises) >= 2
    assert len(out.cells) == len(book.cells) + len(exercises)  # one test cell per exercise

    answers = [i for i, c in enumerate(out.cells) if nbgrader_meta(c).get("solution")]
    assert len(answers) == len(exercises)
    for i, ex in zip(answers, exercises, strict=True):
        answer, test = out.cells[i], out.cells[i + 1]
        assert nbgrader_meta(answer) == {"grade": False, "grade_id": ex.name, "locked": False,
                                         "schema_version": 3, "solution": True}
        assert NBGRADER_BEGIN in answer.source and NBGRADER_END in answer.source
        assert "# BEGIN SOLUTION" not in answer.source.replace(NBGRADER_BEGIN, "")
        assert f"{ex.check}(" not in answer.source
        assert nbgrader_meta(test) == {"grade": True, "grade_id": f"test_{ex.name}",
                                       "locked": True, "points": ex.points,
                                       "schema_version": 3, "solution": False}
        assert test.source.endswith(f"{ex.check}({ex.function})")
    assert [ex.points for ex in exercises] == [2.0, 1.0]  # the book's sat.points of chapter 4

    others = [c for c in out.cells if not nbgrader_meta(c).get("solution")
              and not nbgrader_meta(c).get("grade")]
    assert all(nbgrader_meta(c)["locked"] for c in others)
    assert all("tags" not in c.metadata or "solution" not in c.metadata.tags for c in out.cells)
    text = "\n".join(c.source for c in out.cells if c.cell_type == "markdown")
    assert "{admonition} Answers" in "\n".join(c.source for c in book.cells)
    assert "{admonition} Answers" not in text
    params = next(c for c in out.cells if "parameters" in c.metadata.get("tags", []))
    assert "smoke = True" in params.source and 'device = "cpu"' in params.source


def test_every_chapter_exports_with_all_its_points(tmp_path):
    """nbgrader's own metadata validator runs inside export (nbgrader is installed by setup)."""
    pytest.importorskip("nbgrader")
    written = export(NOTEBOOKS, tmp_path, "book")
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    expected = {p.name: exercises_of(nbformat.read(p, as_version=4), p.name) for p in chapters}
    assert {p.name: ex for p, ex in written.items()} == {k: v for k, v in expected.items() if v}
    for path in written:
        out = nbformat.read(path, as_version=4)
        graded = [nbgrader_meta(c) for c in out.cells if nbgrader_meta(c).get("grade")]
        assert sum(m["points"] for m in graded) == sum(ex.points for ex in written[path])


def test_exercises_only_keeps_the_exercises_and_their_imports(tmp_path):
    export(NOTEBOOKS, tmp_path, "ch04", ["04"], exercises_only=True)
    out = nbformat.read(tmp_path / "source" / "ch04" / CHAPTER, as_version=4)
    setup = next(c for c in out.cells if nbgrader_meta(c).get("grade_id") == "setup_imports")
    assert "import torch" in setup.source and "matplotlib" not in setup.source
    assert sum(bool(nbgrader_meta(c).get("grade")) for c in out.cells) == 2
    assert "google.colab" in out.cells[1].source  # the Colab install cell stays
    assert not any("parameters" in c.metadata.get("tags", []) for c in out.cells)


def test_command_refuses_to_overwrite_and_explains(tmp_path, capsys):
    args = [str(NOTEBOOKS), str(tmp_path), "--assignment", "ch04", "--chapters", "04"]
    assert main(args) == 0
    assert "nbgrader generate_assignment ch04" in capsys.readouterr().out
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert main([str(NOTEBOOKS), str(tmp_path), "--chapters", "42"]) == 2
    assert "no chapter 42" in capsys.readouterr().err
    assert main([str(NOTEBOOKS), str(NOTEBOOKS / "course")]) == 2
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


def _submission(release: nbformat.NotebookNode, answers: dict[str, str],
                wrong: dict[str, tuple[str, str]]) -> nbformat.NotebookNode:
    """The released notebook with the reference answers filled in; ``wrong``: {grade_id: (old,
    new)} replaced in that answer."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in answers:
            assert "raise NotImplementedError()" in cell.source  # what generate_assignment left
            cell.source = answers[grade_id]
            if grade_id in wrong:
                old, new = wrong[grade_id]
                assert old in cell.source
                cell.source = cell.source.replace(old, new)
    return nb


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Object of type:Warning")  # nbgrader's own SQLAlchemy use
def test_nbgrader_generates_and_autogrades_a_right_and_a_wrong_submission(tmp_path, monkeypatch):
    pytest.importorskip("nbgrader")
    # nbgrader creates its gradebook by running the `alembic` command: the one of this environment
    # (make test runs .venv/bin/python without .venv/bin on PATH)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    course = tmp_path / "course"
    export(NOTEBOOKS, course, "ch04", ["04"], exercises_only=True)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    assert config.CourseDirectory.root == str(course)  # the written config finds its folder
    api = NbGraderAPI(CourseDirectory(config=config), config=config)

    result = api.generate_assignment("ch04")
    assert result["success"], result["log"]
    release = nbformat.read(course / "release" / "ch04" / CHAPTER, as_version=4)
    source = nbformat.read(course / "source" / "ch04" / CHAPTER, as_version=4)
    assert "BEGIN SOLUTION" not in "\n".join(c.source for c in release.cells)
    answers = {nbgrader_meta(c)["grade_id"]: c.source for c in source.cells
               if nbgrader_meta(c).get("solution")}
    assert set(answers) == {"soft_attention", "gate"}

    # bob forgets to scale the context by beta: a plausible slip that still runs
    wrong = {"gate": ("return beta.unsqueeze(1) * (alpha", "return (alpha")}
    for student, slips in (("alice", {}), ("bob", wrong)):
        folder = course / "submitted" / student / "ch04"
        folder.mkdir(parents=True)
        nbformat.write(_submission(release, answers, slips), folder / CHAPTER)
        result = api.autograde("ch04", student)
        assert result["success"], result["log"]

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        scores = {}
        for student in ("alice", "bob"):
            sub = gb.find_submission("ch04", student)
            scores[student] = (sub.score, sub.max_score,
                               {g.name: g.score for nb in sub.notebooks for g in nb.grades})
    assert scores["alice"] == (3.0, 3.0, {"test_soft_attention": 2.0, "test_gate": 1.0})
    assert scores["bob"] == (2.0, 3.0, {"test_soft_attention": 2.0, "test_gate": 0.0})
    graded = nbformat.read(course / "autograded" / "bob" / "ch04" / CHAPTER, as_version=4)
    errors = [o for c in graded.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ExerciseFailed"]  # the check said why
