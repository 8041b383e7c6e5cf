"""House style that a linter does not check: no function of ``sat_core`` is longer than a screen.

Every function and method (nested ones too) is measured with :mod:`ast`, from its first decorator
to its last line, docstring and comments included. ``MAX_LINES`` is the limit; ``TOO_LONG`` lists
the functions that were longer when the rule came in (issue 12), each with its length then. The
list may only shrink: a listed function may not grow, and one that fits (or is gone) must leave
the list. ``sat_core/train.py``, the loop the book shows, may never be on it.

The layout of ARCHITECTURE.md holds too: the book and instructor tooling (``sat_core/book/``) is
imported by no other module and no chapter.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sat_core

MAX_LINES = 60
PACKAGE = Path(sat_core.__file__).parent

# name -> its length in lines when the rule came in; emptied (issue 12): every function fits now
TOO_LONG: dict[str, int] = {}


def function_lengths() -> dict[str, int]:
    """``"path/in/sat_core.py::Class.method"`` -> lines, for every function of the package."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, module: str, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([d.lineno for d in child.decorator_list] + [child.lineno])
                name = f"{module}::{prefix}{child.name}"
                lengths[name] = max(lengths.get(name, 0), child.end_lineno - first + 1)
                visit(child, module, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, module, f"{prefix}{child.name}.")
            else:
                visit(child, module, prefix)

    for path in sorted(PACKAGE.rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), path.relative_to(PACKAGE).as_posix(), "")
    return lengths


def test_no_function_is_longer_than_a_screen():
    lengths = function_lengths()
    new = {k: n for k, n in lengths.items() if n > MAX_LINES and k not in TOO_LONG}
    grown = {k: (TOO_LONG[k], n) for k, n in lengths.items() if k in TOO_LONG and n > TOO_LONG[k]}
    assert not new, f"longer than {MAX_LINES} lines, split them: " + ", ".join(
        f"{k} ({n})" for k, n in sorted(new.items(), key=lambda kv: -kv[1]))
    assert not grown, "allow-listed functions grew (listed -> now): " + ", ".join(
        f"{k} ({a} -> {b})" for k, (a, b) in grown.items())


def test_the_allow_list_only_shrinks():
    lengths = function_lengths()
    stale = [k for k in TOO_LONG if lengths.get(k, 0) <= MAX_LINES]
    assert not stale, f"these fit in {MAX_LINES} lines now (or are gone): delete them from " \
        f"TOO_LONG: {stale}"
    assert not [k for k in TOO_LONG if k.startswith("train.py::")]


def test_the_training_loop_reads_on_one_screen():
    train = {k: n for k, n in function_lengths().items() if k.startswith("train.py::")}
    assert train and max(train.values()) <= MAX_LINES, sorted(train.items(), key=lambda kv: -kv[1])


def _imported_modules(source: str, filename: str) -> set[str]:
    """Every module an ``import``/``from ... import`` of ``source`` names (absolute imports)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_the_book_tooling_imports_it():
    """``sat_core/book/`` (build, student copies, grading) sits on top: no other module of the
    package and no chapter notebook imports it, so the model, data and training never need it."""
    import nbformat

    def book(names: set[str]) -> list[str]:
        return sorted(n for n in names if n == "sat_core.book" or n.startswith("sat_core.book."))

    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith("book/") and (hits := book(_imported_modules(path.read_text(), rel))):
            offenders[rel] = hits
    for path in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code":
                continue
            # IPython's %magic and !shell lines are no Python: a `pass` keeps the indentation
            source = "\n".join(line[: len(line) - len(line.lstrip())] + "pass"
                                if line.lstrip().startswith(("%", "!")) else line
                                for line in cell.source.splitlines())
            if hits := book(_imported_modules(source, path.name)):
                offenders[path.name] = hits
    assert not offenders, f"only sat_core/book/ may import sat_core.book: {offenders}"
