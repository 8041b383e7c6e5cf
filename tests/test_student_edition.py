"""The student edition of the site: executed chapters turned into pages without solutions, the
stage that jupyter-book builds into ``_build/html-student``, and the committed student notebooks
that its Colab buttons open. Nothing here runs jupyter-book (the browser test checks the site)."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from sat_core.book.build import (
    STUDENT,
    STUDENT_NOTE,
    BookError,
    Stage,
    chapter_notebooks,
    jupyter_book_command,
    stage_student,
    student_config,
)
from sat_core.book.build import main as book_main
from sat_core.book.student import (
    ANSWERS_NOTE,
    PLACEHOLDER,
    STUDENT_DIR,
    holds_solutions,
    normalize_text,
    solution_snippets,
    student_copy_drift,
    student_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = chapter_notebooks(ROOT)
CHECK_PASSED = "✓ correct on all 11 test inputs\n"


def executed(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` as papermill leaves it: every code cell has an execution count and outputs (a
    solution cell its check's ✓ line, the others a line naming the cell and a figure)."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        cell.execution_count = i + 1
        if "solution" in cell.metadata.get("tags", []):
            cell.outputs = [new_output("stream", name="stdout", text=CHECK_PASSED)]
        else:
            cell.outputs = [new_output("stream", name="stdout", text=f"output of cell {i}\n"),
                            new_output("display_data", data={"image/png": "iVBORw0KGgo=",
                                                             "text/plain": "<Figure>"})]
    return nb


def page_text(nb: nbformat.NotebookNode) -> str:
    """All the text a page built from ``nb`` can show: sources and every output's text."""
    parts = []
    for cell in nb.cells:
        parts.append(cell.source)
        for out in cell.get("outputs", []):
            parts.append(str(out.get("text", "")))
            parts += [str(v) for v in out.get("data", {}).values()]
    return normalize_text("\n".join(parts))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_an_executed_chapter_becomes_a_page_without_solutions(path):
    source = nbformat.read(path, as_version=4)
    run = executed(source)
    page, removed = student_notebook(run, path.name, keep_outputs=True)
    nbformat.validate(page)
    text = page_text(page)

    # no solution source, no solution output, no answer dropdown
    snippets = solution_snippets(source)
    assert snippets, f"{path.name}: no solution text found to look for"
    shown = page_text(run)
    plain = shown.replace("*", "")  # the prose without emphasis marks, as a page shows it
    assert [s for s in snippets if s in shown or s in plain] == snippets  # all were there
    assert [s for s in snippets if s in text or s in text.replace("*", "")] == []
    assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text
    assert CHECK_PASSED.strip() not in text
    assert "{admonition} Answer" not in text and ":class: dropdown" not in text
    assert not holds_solutions(page)

    # the open stubs: one per solution block, in cells that the book shows unfolded
    blocks = sum(c.source.count("# BEGIN SOLUTION") for c in source.cells)
    assert removed == blocks >= 1
    assert text.count(PLACEHOLDER) == blocks
    stubs = [c for c in page.cells if PLACEHOLDER in c.source]
    assert all(not ({"solution", "hide-input"} & set(c.metadata.get("tags", []))) for c in stubs)
    assert all(c.outputs == [] and c.execution_count is None for c in stubs)
    answers = sum(c.source.count("{admonition} Answer") for c in source.cells)
    assert text.count(normalize_text(ANSWERS_NOTE)) == answers

    # every other cell keeps its outputs and execution count, untouched
    for before, after in zip(run.cells, page.cells, strict=True):
        if after.cell_type == "code" and PLACEHOLDER not in after.source:
            assert after.outputs == before.outputs
            assert after.execution_count == before.execution_count
            assert after.source == before.source and after.metadata == before.metadata


def test_solution_snippets_find_code_and_answers_but_not_shared_lines():
    nb = new_notebook(cells=[
        new_markdown_cell("The chapter says: and the softmax only redistributes the attention."),
        new_code_cell("alpha = torch.softmax(e, dim=1)\nprint('shared line of code')"),
        new_code_cell("def f(e):\n    # BEGIN SOLUTION\n    alpha = torch.softmax(e, dim=1)\n"
                      "    beta = torch.sigmoid(h @ W_beta.T)\n    x = 1\n    # END SOLUTION\n",
                      metadata={"tags": ["solution", "hide-input"]}),
        new_markdown_cell("Why?\n\n:::{admonition} Answers\n:class: dropdown\n(a) Because "
                          "$x$ the **largest score** takes almost all\nthe weight, and the "
                          "softmax only redistributes the attention.\n:::"),
    ])
    assert solution_snippets(nb) == [
        "beta = torch.sigmoid(h @ W_beta.T)",  # short `x = 1` and the shared line are left out
        "the largest score takes almost all the weight",  # across lines, emphasis removed
    ]


def test_the_committed_student_notebooks_match_the_chapters():
    assert student_copy_drift(ROOT) == []
    for path in CHAPTERS:
        copy_ = ROOT / STUDENT_DIR / path.relative_to(ROOT)
        nb = nbformat.read(copy_, as_version=4)
        assert not holds_solutions(nb) and PLACEHOLDER in "".join(c.source for c in nb.cells)
        assert all(not c.get("outputs") for c in nb.cells), f"{copy_} has outputs"


def test_drift_names_missing_outdated_and_extra_copies(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.md"))
    shutil.copytree(ROOT / STUDENT_DIR, tmp_path / STUDENT_DIR)
    assert student_copy_drift(tmp_path) == []
    first, second = sorted((tmp_path / "notebooks").glob("*.ipynb"))[:2]
    nb = nbformat.read(first, as_version=4)
    nb.cells.append(new_markdown_cell("a new paragraph"))
    nbformat.write(nb, first)
    (tmp_path / STUDENT_DIR / "notebooks" / second.name).unlink()
    nbformat.write(new_notebook(), tmp_path / STUDENT_DIR / "notebooks" / "99_old.ipynb")
    problems = student_copy_drift(tmp_path)
    assert len(problems) == 3, problems
    assert f"student/notebooks/{first.name} is outdated" in problems[0]
    assert f"student/notebooks/{second.name} is missing" in problems[1]
    assert "student/notebooks/99_old.ipynb has no notebooks/99_old.ipynb" in problems[2]
    assert all("make student" in p or "delete it" in p for p in problems)


def test_student_config_moves_the_colab_path_and_keeps_the_rest():
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    original, student = yaml.safe_load(text), yaml.safe_load(student_config(text))
    assert student["repository"] == {**original["repository"], "path_to_book": STUDENT_DIR}
    assert student["title"] == original["title"] + " (student edition)"
    assert student["execute"]["execute_notebooks"] == "off"  # a string, not YAML's false
    rest = {k: v for k, v in student.items() if k not in ("title", "repository")}
    assert rest == {k: v for k, v in original.items() if k not in ("title", "repository")}
    nested = text.replace('path_to_book: ""', "path_to_book: book/")
    assert yaml.safe_load(student_config(nested))["repository"]["path_to_book"] == "book/student"
    with pytest.raises(BookError, match="set-repository"):
        student_config("title: x\n")


def test_the_student_edition_builds_into_its_own_folders():
    stage = Stage(ROOT, ROOT / "_build", STUDENT)
    assert (stage.dir, stage.html) == (ROOT / "_build/stage-student", ROOT / "_build/html-student")
    cmd = jupyter_book_command(stage)
    assert cmd[2] == str(stage.dir)
    assert cmd[cmd.index("--path-output") + 1] == str(ROOT / "_build" / "jb-student")
    book = Stage(ROOT, ROOT / "_build")
    assert (book.dir, book.html, book.output) == (ROOT / "_build/stage", ROOT / "_build/html", ROOT)


def make_executed_stage(root: Path) -> Stage:
    """A tiny book executed in ``root/_build/stage``: intro, one chapter, the instructor's guide."""
    stage = Stage(root, root / "_build")
    sdir = stage.dir
    (sdir / "book").mkdir(parents=True)
    (sdir / "notebooks").mkdir()
    shutil.copy2(ROOT / "_config.yml", sdir / "_config.yml")
    (sdir / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: notebooks/04_soft_attention\n"
        "  - file: book/instructors\n", encoding="utf-8")
    (sdir / "book" / "intro.md").write_text("# Introduction\n\nHello.\n", encoding="utf-8")
    shutil.copy2(ROOT / "book" / "instructors.md", sdir / "book" / "instructors.md")
    (sdir / "notebooks" / "figure.svg").write_text("<svg/>", encoding="utf-8")
    chapter = nbformat.read(ROOT / "notebooks" / "04_soft_attention.ipynb", as_version=4)
    nbformat.write(executed(chapter), sdir / "notebooks" / "04_soft_attention.ipynb")
    (root / "artifacts").mkdir()
    (sdir / "artifacts").symlink_to(root / "artifacts", target_is_directory=True)
    return stage


def test_stage_student_derives_the_edition_from_the_executed_stage(tmp_path):
    stage = make_executed_stage(tmp_path)
    before = {p: p.read_bytes() for p in stage.dir.rglob("*") if p.is_file()}
    student = Stage(tmp_path, tmp_path / "_build", STUDENT)
    assert stage_student(stage, student) == {"04_soft_attention": 2}
    assert {p: p.read_bytes() for p in stage.dir.rglob("*") if p.is_file()} == before

    sdir = student.dir
    page = nbformat.read(sdir / "notebooks" / "04_soft_attention.ipynb", as_version=4)
    run = nbformat.read(stage.dir / "notebooks" / "04_soft_attention.ipynb", as_version=4)
    assert page == student_notebook(run, "notebooks/04_soft_attention.ipynb", keep_outputs=True)[0]
    assert (sdir / "notebooks" / "figure.svg").read_text(encoding="utf-8") == "<svg/>"
    assert (sdir / "artifacts").is_symlink()
    assert (sdir / "_toc.yml").read_bytes() == (stage.dir / "_toc.yml").read_bytes()
    config = yaml.safe_load((sdir / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"]["path_to_book"] == STUDENT_DIR
    guide = (sdir / "book" / "instructors.md").read_text(encoding="utf-8")
    assert guide.startswith("# For instructors\n") and "student edition" in guide
    assert "BEGIN SOLUTION" not in guide and "grade.py" not in guide and "```" not in guide
    intro = (sdir / "book" / "intro.md").read_text(encoding="utf-8")
    assert intro.startswith("# Introduction\n") and STUDENT_NOTE in intro and "Hello." in intro

    # a second run starts from scratch (no leftovers of the first)
    (sdir / "notebooks" / "stale.ipynb").write_text("{}", encoding="utf-8")
    stage_student(stage, student)
    assert not (sdir / "notebooks" / "stale.ipynb").exists()


def test_build_student_without_an_executed_book_says_what_to_run(tmp_path, capsys):
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, tmp_path / name)
    assert book_main(["--root", str(tmp_path), "build-student"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run `make book`" in err
    assert not (tmp_path / "_build" / "html-student").exists()


def test_build_student_help_describes_it(capsys):
    with pytest.raises(SystemExit) as info:
        book_main(["build-student", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "_build/html-student" in out and "_build/stage" in out and "Colab" in out
    with pytest.raises(SystemExit):
        book_main(["build", "--help"])
    assert "--no-student" in capsys.readouterr().out


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_no_other_cell_uses_an_exercise_function(path):
    """The student pages keep every output but the exercises' own: that is right only while no
    other cell computes with a function that an exercise cell defines (its output would show
    what the solution computes)."""
    nb = nbformat.read(path, as_version=4)
    solutions = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    defined = {n for c in solutions for n in re.findall(r"^def (\w+)", c.source, flags=re.M)}
    users = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c not in solutions
             and any(re.search(rf"\b{n}\b", c.source) for n in defined)]
    assert users == [], f"{path.name}: cells {users} use {sorted(defined)}"
