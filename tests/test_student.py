"""The student copy: solutions replaced by NotImplementedError, everything else intact."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sat_core.book.student import (
    ANSWERS_NOTE,
    PLACEHOLDER,
    StudentCopyError,
    main,
    make_student_copy,
    strip_answers,
    strip_solution,
    student_notebook,
)

ROOT = Path(__file__).resolve().parents[1]

EXERCISE = '''def soft_attention(e, a):
    """Return the context and the weights."""
    # BEGIN SOLUTION
    alpha = e.softmax(-1)
    z = (alpha.unsqueeze(-1) * a).sum(1)
    return z, alpha
    # END SOLUTION


check_soft_attention(soft_attention)'''

TWO_BLOCKS = '''# BEGIN SOLUTION
answer = 42
# END SOLUTION
print("between")
def f(x):
    if x:
        # BEGIN SOLUTION
        return x + 1
        # END SOLUTION
    return 0'''


def make_notebook() -> nbformat.NotebookNode:
    nb = new_notebook(
        cells=[
            new_markdown_cell("# 4. Soft attention\n\n$\\alpha_{ti}$ sums to one."),
            new_code_cell("device = 'auto'\nsmoke = False", metadata={"tags": ["parameters"]}),
            new_markdown_cell("**Exercise.** Write `soft_attention`."),
            new_code_cell(EXERCISE, metadata={"tags": ["solution", "hide-input"]}),
            new_code_cell(TWO_BLOCKS, metadata={"tags": ["solution", "hide-input", "remove-output"]}),
            new_code_cell("x = 1  # plain code\nprint(x)"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    nb.cells[5].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells[5].execution_count = 3
    return nb


def test_strip_solution_keeps_signature_and_check_and_indents_the_placeholder():
    out, n = strip_solution(EXERCISE)
    assert n == 1
    assert out.split("\n") == [
        "def soft_attention(e, a):",
        '    """Return the context and the weights."""',
        '    raise NotImplementedError("Your code here")',
        "",
        "",
        "check_soft_attention(soft_attention)",
    ]
    out, n = strip_solution(TWO_BLOCKS)
    assert n == 2
    assert out.split("\n") == [
        PLACEHOLDER,
        'print("between")',
        "def f(x):",
        "    if x:",
        "        " + PLACEHOLDER,
        "    return 0",
    ]


def test_student_code_raises_not_implemented_when_checked():
    out, _ = strip_solution(EXERCISE)
    seen = []

    def check_soft_attention(fn):
        seen.append(fn.__name__)
        fn(None, None)

    with pytest.raises(NotImplementedError, match="Your code here"):
        exec(compile(out, "<student cell>", "exec"), {"check_soft_attention": check_soft_attention})
    assert seen == ["soft_attention"]


def test_student_notebook_removes_solutions_and_nothing_else():
    nb = make_notebook()
    original = copy.deepcopy(nb)
    student, removed = student_notebook(nb, "04.ipynb")
    assert removed == 3
    assert nb == original  # the input notebook is not modified
    nbformat.validate(student)
    assert len(student.cells) == len(nb.cells)
    text = "\n".join(c.source for c in student.cells)
    for gone in ("BEGIN SOLUTION", "END SOLUTION", "alpha = e.softmax", "answer = 42", "x + 1"):
        assert gone not in text
    # the solution cells: placeholder in, toggle tags out, other tags kept
    assert PLACEHOLDER in student.cells[3].source
    assert "check_soft_attention(soft_attention)" in student.cells[3].source
    assert "tags" not in student.cells[3].metadata
    assert student.cells[4].metadata["tags"] == ["remove-output"]
    # every other cell is unchanged (ids, metadata, source); code outputs are cleared
    for i in (0, 1, 2, 5):
        assert student.cells[i].source == nb.cells[i].source
        assert student.cells[i].metadata == nb.cells[i].metadata
    assert [c.id for c in student.cells] == [c.id for c in nb.cells]
    assert student.cells[5].outputs == [] and student.cells[5].execution_count is None
    assert student.metadata == nb.metadata


@pytest.mark.parametrize(
    ("source", "tags", "message"),
    [
        ("x = 1", ["solution", "hide-input"], "tagged 'solution' but has no"),
        ("# BEGIN SOLUTION\nx = 1\n# END SOLUTION", [], "not tagged 'solution'"),
        ("# BEGIN SOLUTION\nx = 1", ["solution"], "never closed"),
        ("x = 1\n# END SOLUTION", ["solution"], "line 2: END SOLUTION without BEGIN"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION", ["solution"], "inside another"),
    ],
)
def test_broken_conventions_name_the_notebook_and_cell(source, tags, message):
    nb = new_notebook(cells=[new_markdown_cell("hi"), new_code_cell(source, metadata={"tags": tags})])
    with pytest.raises(StudentCopyError, match=message) as info:
        student_notebook(nb, "07_hard_attention.ipynb")
    assert "07_hard_attention.ipynb, cell 1" in str(info.value)


def test_make_student_copy_writes_valid_notebooks_and_leaves_sources(tmp_path):
    src = tmp_path / "notebooks"
    (src / "sub").mkdir(parents=True)
    nbformat.write(make_notebook(), src / "04_soft_attention.ipynb")
    nbformat.write(new_notebook(cells=[new_code_cell("1 + 1")]), src / "sub" / "extra.ipynb")
    (src / ".ipynb_checkpoints").mkdir()
    nbformat.write(make_notebook(), src / ".ipynb_checkpoints" / "04-checkpoint.ipynb")
    before = {p: p.read_bytes() for p in src.rglob("*.ipynb")}

    report = make_student_copy(src, tmp_path / "student")
    assert report == {"04_soft_attention.ipynb": (3, 0), "sub/extra.ipynb": (0, 0)}
    assert {p: p.read_bytes() for p in src.rglob("*.ipynb")} == before
    written = nbformat.read(tmp_path / "student" / "04_soft_attention.ipynb", as_version=4)
    nbformat.validate(written)
    assert "BEGIN SOLUTION" not in "".join(c.source for c in written.cells)
    assert not (tmp_path / "student" / ".ipynb_checkpoints").exists()


def test_command_line(tmp_path, capsys):
    src = tmp_path / "nb"
    src.mkdir()
    nbformat.write(make_notebook(), src / "04.ipynb")
    assert main([str(src), str(tmp_path / "out")]) == 0
    assert "04.ipynb: 3 solution(s) removed" in capsys.readouterr().out
    assert main([str(src), str(src / "student")]) == 2  # inside the sources: refused
    assert "pick a folder outside the sources" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "NotImplementedError" in capsys.readouterr().out


def test_the_book_notebooks_follow_the_convention(tmp_path):
    report = make_student_copy(ROOT / "notebooks", tmp_path / "student")
    assert set(report) == {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    for rel in report:
        nb = nbformat.read(tmp_path / "student" / rel, as_version=4)
        text = "".join(c.source for c in nb.cells)
        assert "BEGIN SOLUTION" not in text
        assert "{admonition} Answers" not in text and ":class: dropdown" not in text
        assert text.count(ANSWERS_NOTE) == report[rel][1]
    # the chapters whose exercises ask questions do hand out answers in the book
    assert sum(answers for _, answers in report.values()) >= 8


ANSWERED = """**Exercise 2 (think).** Why does the baseline not bias the estimate?

:::{admonition} Answers
:class: dropdown
Because E[d log p(s|a)/dW] = 0.

::::{note}
a nested block, still part of the answer
::::
:::

**Exercise 3.** Next one."""


def test_strip_answers_keeps_the_question_and_what_follows():
    out, n = strip_answers(ANSWERED)
    assert n == 1
    assert out.split("\n") == [
        "**Exercise 2 (think).** Why does the baseline not bias the estimate?",
        "",
        ANSWERS_NOTE,
        "",
        "**Exercise 3.** Next one.",
    ]
    assert strip_answers("::::{admonition} Answer\nx\n::::\n")[0] == ANSWERS_NOTE + "\n"
    assert strip_answers(":::{admonition} Note\nkept\n:::") == (":::{admonition} Note\nkept\n:::", 0)
    with pytest.raises(StudentCopyError, match="never closed"):
        strip_answers(":::{admonition} Answers\nno end", "ch.ipynb, cell 3")


def test_student_notebook_removes_markdown_answers(tmp_path):
    nb = new_notebook(cells=[new_markdown_cell(ANSWERED), new_code_cell("x = 1")])
    student, removed = student_notebook(nb, "07.ipynb")
    assert removed == 0
    assert "E[d log p" not in student.cells[0].source and ANSWERS_NOTE in student.cells[0].source
    assert "E[d log p" in nb.cells[0].source  # the caller's notebook is untouched
