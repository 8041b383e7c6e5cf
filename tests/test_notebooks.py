"""The chapter notebooks: committed clean, parameterised, Colab-ready, in the toc, and they run.

The last group executes EVERY notebook with papermill at smoke parameters
({"smoke": True, "device": "cpu", "artifacts_dir": <one temporary folder for the session>}), in the
order of ``_toc.yml`` so that chapter 6's checkpoint serves chapters 8-9, exactly as ``make book``
does at the default parameters.
"""

from __future__ import annotations

import ast
import json
import re
from importlib.metadata import requires
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from sat_core.book.build import (
    BookError,
    NotebookFailed,
    chapter_notebooks,
    clean_notebook,
    drop_widget_views,
    execute_notebook,
    format_times,
    headless_parameters,
    resolve_entry,
    tag_injected_cell,
    toc_entries,
)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
IN_TOC = chapter_notebooks(ROOT)
SMOKE = {"smoke": True, "device": "cpu"}
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))

ids = [p.stem for p in NOTEBOOKS]


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_chapter_notebooks():
    assert len(NOTEBOOKS) >= 9, "notebooks/ should hold chapters 2-10"


# --------------------------------------------------------------------------- (a) committed clean


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_committed_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts; clear them "
        "(JupyterLab: Edit > Clear Outputs of All Cells) before committing"
    )
    assert "papermill" not in nb.metadata, f"{path.name} is an executed (papermill) copy"
    assert "widgets" not in nb.metadata, f"{path.name} carries saved widget state: clear it"


# --------------------------------------------------------------------------- (b) parameters


def parameters_of(path: Path) -> dict:
    cells = [c for c in read(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters', need exactly 1"
    assert cells[0].cell_type == "code"
    values = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            values[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            values[node.target.id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_parameters_cell(path):
    values = parameters_of(path)
    assert values.get("device") == "auto", f'{path.name}: need device = "auto"'
    assert values.get("smoke") is False, f"{path.name}: need smoke = False"
    assert isinstance(values.get("seed"), int), f"{path.name}: need an integer seed"
    assert values.get("artifacts_dir") == "../artifacts", (
        f'{path.name}: need artifacts_dir = "../artifacts" (the repository\'s artifacts/)'
    )


def keeps_artifacts(path: Path) -> bool:
    """Whether a chapter's artifacts outlive it (checkpoints, feature caches): it uses
    ``artifacts_dir`` for more than ``scratch_dir(artifacts_dir, ...)``, emptied on every run."""
    cells = [c for c in code_cells(read(path)) if "parameters" not in c.metadata.get("tags", [])]
    uses = [ln for c in cells for ln in c.source.splitlines()
            if "artifacts_dir" in ln and not ln.lstrip().startswith("#")]
    return any("scratch_dir(artifacts_dir" not in ln and "artifacts_home(" not in ln
               for ln in uses)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_kept_artifacts_can_live_on_google_drive(path):
    """Chapters whose artifacts outlive them resolve ``artifacts_dir`` with ``artifacts_home``
    (Google Drive on Colab, unchanged elsewhere) before anything else uses it."""
    if not keeps_artifacts(path):
        assert "keep_on_drive" not in parameters_of(path), f"{path.name}: nothing to keep"
        return
    assert parameters_of(path).get("keep_on_drive") == "auto", (
        f'{path.name}: its artifacts outlive it; add keep_on_drive = "auto" to the parameters')
    lines = [ln for c in code_cells(read(path)) if "parameters" not in c.metadata.get("tags", [])
             for ln in c.source.splitlines() if "artifacts_dir" in ln]
    assert lines and lines[0] == (
        "artifacts_dir = artifacts_home(artifacts_dir, keep_on_drive)  # on Colab: Google Drive?"
    ), f"{path.name}: resolve artifacts_dir with artifacts_home before using it"
    assert sum("artifacts_home(" in ln for ln in lines) == 1


# --------------------------------------------------------------------------- (c) Colab


def colab_install_line(source: str) -> tuple[str, str]:
    """(the `if "google.colab" in sys.modules:` line, the pip line inside it)."""
    lines = source.splitlines()
    guard = next(
        (i for i, ln in enumerate(lines) if re.match(r'if\s+"google\.colab"\s+in\s+sys\.modules', ln)),
        None,
    )
    assert guard is not None, 'the first code cell must test `if "google.colab" in sys.modules:`'
    body = [ln for ln in lines[guard + 1 :] if ln.strip()]
    pip = next((ln for ln in body if re.match(r"\s+[%!]pip install ", ln)), None)
    assert pip is not None, "the Colab branch must `%pip install` sat_core"
    return lines[guard], pip


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids)
def test_first_code_cell_installs_sat_core_on_colab_only(path):
    source = code_cells(read(path))[0].source
    assert "import sys" in source
    _, pip = colab_install_line(source)
    repo = CONFIG["repository"]
    assert f"git+{repo['url']}@{repo['branch']}" in pip, (
        f"{path.name}: install from {repo['url']} at branch {repo['branch']}"
    )
    assert "sat_core" in pip
    # nothing that would replace Colab's own torch
    assert not re.search(r"(^|\s)(-U|--upgrade|--force-reinstall|--upgrade-strategy)\b", pip)
    assert not re.search(r"\btorch", pip.split("git+")[0]), "do not pip install torch on Colab"


def test_sat_core_sets_only_lower_bounds_on_torch():
    """The Colab cell relies on this: pip keeps an installed torch that satisfies >= bounds."""
    deps = [d.split(";")[0].strip() for d in requires("sat_core") or []]
    pinned = [d for d in deps if re.match(r"(torch|torchvision)\b", d)]
    assert pinned, "sat_core should declare its torch requirement"
    for dep in pinned:
        assert re.fullmatch(r"(torch|torchvision)\s*>=\s*[\d.]+", dep), f"{dep}: lower bound only"


def test_colab_links_point_at_this_repository():
    repo = CONFIG["repository"]
    assert repo.get("branch"), "Jupyter Book defaults to 'master': Colab links would break"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["execute"]["execute_notebooks"] == "off"


# --------------------------------------------------------------------------- (d) toc


def test_every_notebook_is_in_the_toc_and_every_entry_exists():
    entries = toc_entries(ROOT)
    missing = [e for e in entries if resolve_entry(ROOT, e) is None]
    assert not missing, f"_toc.yml entries without a file: {missing}"
    assert len(entries) == len(set(entries)), "an entry is listed twice in _toc.yml"
    assert {p.name for p in IN_TOC} == {p.name for p in NOTEBOOKS}, (
        "notebooks/ and _toc.yml disagree: add new chapters to _toc.yml"
    )


def test_toc_parsing_on_a_hand_made_toc(tmp_path):
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n"
        "  - caption: A\n    chapters:\n      - file: nb/one\n        sections:\n"
        "          - file: nb/two\n  - caption: B\n    chapters:\n      - file: three\n"
    )
    assert toc_entries(tmp_path) == ["intro", "nb/one", "nb/two", "three"]
    (tmp_path / "nb").mkdir()
    (tmp_path / "intro.md").write_text("# hi\n")
    (tmp_path / "three.md").write_text("# three\n")
    nbformat.write(new_notebook(), tmp_path / "nb" / "one.ipynb")
    with pytest.raises(BookError, match="lists 'nb/two' but neither"):
        chapter_notebooks(tmp_path)
    nbformat.write(new_notebook(), tmp_path / "nb" / "two.ipynb")
    assert [p.name for p in chapter_notebooks(tmp_path)] == ["one.ipynb", "two.ipynb"]


def test_format_times_table():
    table = format_times({"02_a": 1.0, "10_b": 2.25}).splitlines()
    assert table[0].split() == ["notebook", "seconds"]
    assert table[2].split() == ["02_a", "1.0"] and table[3].split() == ["10_b", "2.2"]
    assert table[-1].split() == ["total", "3.2"]


def test_tag_injected_cell(tmp_path):
    nb = new_notebook(
        cells=[
            new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
            new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
        ]
    )
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert tag_injected_cell(path)
    tags = [c.metadata.get("tags") for c in read(path).cells]
    assert tags == [["parameters"], ["injected-parameters", "remove-cell"]]
    nbformat.write(new_notebook(cells=[new_code_cell("1")]), path)
    assert not tag_injected_cell(path)


def test_drop_widget_views_keeps_every_other_output(tmp_path):
    from nbformat.v4 import new_output

    bar = new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2},
        "text/plain": "epoch 1/10:   0%|          | 0/322"})
    log = new_output("stream", name="stdout", text="epoch 1: loss 1.0\n")
    fig = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    nb = new_notebook(cells=[new_code_cell("train()", outputs=[bar, log, bar]),
                             new_code_cell("plot()", outputs=[fig]), new_markdown_cell("text")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert drop_widget_views(path) == 2
    cells = read(path).cells
    assert [o.get("text") for o in cells[0].outputs] == ["epoch 1: loss 1.0\n"]
    assert list(cells[1].outputs[0].data) == ["image/png", "text/plain"]
    assert drop_widget_views(path) == 0


# --------------------------------------------------------------------------- (e) execution


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    """One folder for the whole session: checkpoints flow from chapter 6 to chapters 8-9."""
    return tmp_path_factory.mktemp("artifacts")


def test_headless_parameters_go_only_to_the_notebooks_that_declare_them(tmp_path):
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    paths = {}
    for name, params in (("declares", "x = 1\nlive_widgets = True"), ("silent", "x = 1")):
        paths[name] = tmp_path / f"{name}.ipynb"
        cells = [new_code_cell(params, metadata={"tags": ["parameters"]})]
        nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}),
                       paths[name])
    assert headless_parameters(paths["declares"]) == {"live_widgets": False}
    assert headless_parameters(paths["silent"]) == {}
    ch9 = next(p for p in NOTEBOOKS if p.stem.startswith("09"))
    assert headless_parameters(ch9) == {"live_widgets": False}  # its ipywidgets slider
    assert parameters_of(ch9)["live_widgets"] is True  # live in JupyterLab and Colab


@pytest.mark.slow
@pytest.mark.notebook
def test_papermill_machinery_injects_tags_and_reports_failures(tmp_path):
    cells = [
        new_markdown_cell("# t"),
        new_code_cell("x = 1\nlive_widgets = True", metadata={"tags": ["parameters"]}),
        new_code_cell("print(x * 10, live_widgets)"),
        new_code_cell("assert x < 3, 'x is too big'"),
    ]
    src = tmp_path / "tiny.ipynb"
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": kernelspec}), src)
    out = tmp_path / "out" / "tiny.ipynb"
    seconds = execute_notebook(src, out, {"x": 2}, cwd=tmp_path)
    assert seconds > 0
    nb = read(out)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    assert nb.cells.index(injected[0]) == 2  # right after the parameters cell
    assert nb.cells[3].outputs[0]["text"] == "20 False\n"  # a declared headless parameter too
    assert "papermill" not in read(src).metadata  # the source is untouched
    # `python -m sat_core.book clean` turns the executed copy back into a committable notebook
    assert clean_notebook(out) and not clean_notebook(out)
    cleaned = read(out)
    assert "papermill" not in cleaned.metadata
    assert all(not c.outputs and c.execution_count is None for c in code_cells(cleaned))
    assert [c.source for c in cleaned.cells] == [c.source for c in nb.cells]

    with pytest.raises(NotebookFailed) as info:
        execute_notebook(src, out, {"x": 5}, cwd=tmp_path)
    msg = str(info.value)
    assert "notebook tiny.ipynb failed in cell In [4]" in msg
    assert "AssertionError: x is too big" in msg and str(out) in msg
    failed = read(out)  # papermill wrote the failed notebook, traceback included
    assert any(o.get("output_type") == "error" for c in code_cells(failed) for o in c.outputs)


@pytest.mark.slow
@pytest.mark.notebook
def _xdist_group(path: Path) -> str:
    """Chapters 6-9 share checkpoints (one artifacts_dir per worker): one pytest-xdist group;
    the chapters that stand alone make the other, so the two halves run side by side."""
    return "notebooks-trained" if path.stem[:2] in {"06", "07", "08", "09"} else "notebooks-alone"


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.xdist_group(_xdist_group(p))) for p in IN_TOC],
    ids=[p.stem for p in IN_TOC])
def test_notebook_runs_at_smoke_parameters(path, artifacts_dir, tmp_path):
    params = {**SMOKE, "artifacts_dir": str(artifacts_dir)}
    try:
        execute_notebook(path, tmp_path / path.name, params, cwd=path.parent, timeout=600)
    except NotebookFailed as err:
        pytest.fail(str(err), pytrace=False)
    nb = read(tmp_path / path.name)
    errors = [o for c in code_cells(nb) for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, json.dumps(errors)[:500]
