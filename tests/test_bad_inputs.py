"""Issue 14: every bad input is a one-line error, and nothing is lost or left behind.

The first part is a table of command lines, each run on small files made in ``tmp_path``: it
must exit with status 2, print exactly one line ``error: ...`` on stderr (no traceback), and leave
``tmp_path`` as it found it (same files, same bytes) unless the case says what may change. The
first case of each command runs for real in a subprocess (``sys.executable -m ...``); the others
call the command's ``main(argv)`` in this process, as its ``__main__`` block does (a subprocess
costs seconds of imports, and the suite has a 3-minute budget). The unit tests below it cover what
is simpler to check in-process: images of every bit depth, the Shapes writer's ``--force``, and
downloads killed half-way or fed an HTML page instead of a zip.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from PIL import Image

from sat_core.data import download as dl
from sat_core.data.karpathy import load_image_file, load_karpathy
from sat_core.data.records import ImageLoadError, denormalize_image
from sat_core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------- helpers


def run_module(module: str, *args: object, debug: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m module args`` with this checkout first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "SAT_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if debug:
        env["SAT_DEBUG"] = "1"
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def run_main(module: str, *args: object) -> subprocess.CompletedProcess:
    """``python -m module args`` in this process: the module's ``main(argv)`` (what its
    ``__main__`` block calls), its exit status, stdout and stderr (warnings included). An exception
    that ``main`` lets escape fails the test, as the traceback of a subprocess would."""
    mod = importlib.import_module(module)
    out, err = io.StringIO(), io.StringIO()
    env_debug = os.environ.pop("SAT_DEBUG", None)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            warnings.simplefilter("default")
            try:
                code = mod.main([str(a) for a in args])
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    finally:
        if env_debug is not None:
            os.environ["SAT_DEBUG"] = env_debug
    for w in caught:
        err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno))
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: file -> its bytes, folder -> None."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


SOLVED = "def f(x):\n    # BEGIN SOLUTION\n    return x + 1\n    # END SOLUTION\n\ncheck(f)"
UNSOLVED = 'def f(x):\n    raise NotImplementedError("Your code here")\n\ncheck(f)'


def instructor_notebook() -> nbformat.NotebookNode:
    """A chapter with one exercise and its solution (tagged, marked)."""
    return new_notebook(cells=[
        new_markdown_cell("**Exercise.** Write `f`."),
        new_code_cell(SOLVED, metadata={"tags": ["solution", "hide-input"]}),
    ])


def student_notebook() -> nbformat.NotebookNode:
    """The same chapter as a student copy: no solution left."""
    return new_notebook(cells=[new_markdown_cell("**Exercise.** Write `f`."),
                               new_code_cell(UNSOLVED)])


def write_nb(path: Path, nb: nbformat.NotebookNode) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def write_png(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path)
    return path


def karpathy_mirror(tmp: Path, write_karpathy, name: str = "flickr8k") -> Path:
    """A local mirror: caption_datasets.zip and the images archive of ``name`` (6 PNGs)."""
    src = tmp / "src"
    top = "Flicker8k_Dataset" if name == "flickr8k" else "flickr30k-images"
    write_karpathy(src / f"dataset_{name}.json", src / top, size=(8, 8))
    mirror = tmp / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "caption_datasets.zip", "w") as zf:
        zf.write(src / f"dataset_{name}.json", f"dataset_{name}.json")
    if name == "flickr8k":
        with zipfile.ZipFile(mirror / "Flickr8k_Dataset.zip", "w") as zf:
            for p in sorted((src / top).iterdir()):
                zf.write(p, f"{top}/{p.name}")
    else:
        with tarfile.open(tmp / "flickr30k-images.tar.gz", "w:gz") as tf:
            tf.add(src / top, top)
    return mirror


HTML_PAGE = b"<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>\n"

# ------------------------------------------------------------------ the command-line table


@dataclass(frozen=True)
class Case:
    """One bad command line: ``setup(tmp_path)`` makes the files and returns the arguments.

    ``after(tmp_path, before)`` checks the state afterwards; by default ``tmp_path`` must be
    exactly as before the run (nothing lost, nothing left behind).
    """

    name: str
    module: str
    setup: Callable[[Path], list[object]]
    message: str
    after: Callable[[Path, dict], None] | None = None


def _swapped(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "04.ipynb", instructor_notebook())
    write_nb(tmp / "student" / "04.ipynb", student_notebook())
    return [tmp / "student", tmp / "notebooks"]  # SRC and DST swapped


def _dst_above_src(tmp: Path) -> list[object]:
    write_nb(tmp / "x" / "04.ipynb", instructor_notebook())
    write_nb(tmp / "x" / "sub" / "04.ipynb", student_notebook())
    return [tmp / "x" / "sub", tmp / "x"]


def _dst_above_src_other_names(tmp: Path) -> list[object]:
    write_nb(tmp / "x" / "sub" / "05.ipynb", instructor_notebook())
    return [tmp / "x" / "sub", tmp / "x"]


def _dst_inside_src(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "04.ipynb", instructor_notebook())
    return [tmp / "notebooks", tmp / "notebooks" / "student"]


def _dst_is_src(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "04.ipynb", instructor_notebook())
    return [tmp / "notebooks", tmp / "notebooks" / "." / "sub" / ".."]


def _dst_is_a_file(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "04.ipynb", instructor_notebook())
    (tmp / "out").write_text("my notes\n")
    return [tmp / "notebooks", tmp / "out"]


def _unreadable_dst_notebook(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "04.ipynb", instructor_notebook())
    (tmp / "out").mkdir()
    (tmp / "out" / "04.ipynb").write_text("{ half a notebook, the rest was lost")
    return [tmp / "notebooks", tmp / "out"]


def _later_notebook_broken(tmp: Path) -> list[object]:
    write_nb(tmp / "notebooks" / "01.ipynb", instructor_notebook())
    broken = new_notebook(cells=[new_code_cell("# BEGIN SOLUTION\nx = 1")])  # never closed
    write_nb(tmp / "notebooks" / "02.ipynb", broken)
    return [tmp / "notebooks", tmp / "out"]


def _missing_src(tmp: Path) -> list[object]:
    return [tmp / "no-such-folder", tmp / "out"]


def _non_empty_out_dir(tmp: Path) -> list[object]:
    out = tmp / "out"
    (out / "shapes" / "test").mkdir(parents=True)
    (out / "dataset_shapes.json").write_text('{"dataset": "shapes", "images": ["mine"]}')
    write_png(out / "shapes" / "test" / "000000.png")
    (out / "notes.txt").write_text("keep me\n")
    return [out, "--n-test", "2", "--image-size", "32"]


def _out_dir_is_a_file(tmp: Path) -> list[object]:
    (tmp / "out").write_text("my notes\n")
    return [tmp / "out", "--n-test", "2"]


def _corrupt_image(tmp: Path) -> list[object]:
    (tmp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return ["--checkpoint", tmp / "model.pt", tmp / "broken.png", "--out-dir", tmp / "figs"]


def _missing_checkpoint(tmp: Path) -> list[object]:
    write_png(tmp / "a.png")
    return ["--checkpoint", tmp / "none.pt", tmp / "a.png", "--out-dir", tmp / "figs"]


def _notes_as_checkpoint(tmp: Path) -> list[object]:
    write_png(tmp / "a.png")
    (tmp / "notes.pt").write_text("my notes, not a model\n")
    return ["--checkpoint", tmp / "notes.pt", tmp / "a.png", "--out-dir", tmp / "figs"]


def _foreign_checkpoint(tmp: Path) -> list[object]:
    import torch

    write_png(tmp / "a.png")
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp / "other.pt")  # another project's
    return ["--checkpoint", tmp / "other.pt", tmp / "a.png", "--out-dir", tmp / "figs"]


def _notes(tmp: Path) -> Path:
    (tmp / "notes").write_text("my notes\n")
    return tmp / "notes"


def _submissions(tmp: Path) -> Path:
    """One student's submission of an exercise-free notebook (nothing to grade, fast)."""
    write_nb(tmp / "submitted" / "ann" / "04_soft_attention.ipynb", student_notebook())
    return tmp / "submitted"


def _grade_timeout_nan(tmp: Path) -> list[object]:
    return [_submissions(tmp), "--out", tmp / "grades.csv", "--timeout", "nan"]


def _grade_out_is_a_folder(tmp: Path) -> list[object]:
    (tmp / "reports").mkdir()
    return [_submissions(tmp), "--out", tmp / "reports", "--no-progress"]


def _grade_summary_under_a_file(tmp: Path) -> list[object]:
    return [_submissions(tmp), "--out", tmp / "grades.csv", "--summary",
            _notes(tmp) / "summary.csv", "--no-progress"]


def _dirty_and_broken_notebooks(tmp: Path) -> list[object]:
    nb = new_notebook(cells=[new_code_cell("print(1)")])
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nb.cells[0].execution_count = 1
    write_nb(tmp / "good.ipynb", nb)  # has outputs: clean would rewrite it
    (tmp / "bad.ipynb").write_text("<<<<<<< HEAD\n{\n", encoding="utf-8")  # a merge conflict
    return ["clean", tmp / "good.ipynb", tmp / "bad.ipynb"]


def _no_new_files(tmp: Path, before: dict) -> None:
    """Folders may appear (``data/``), files may not; nothing that was there changes."""
    now = tree(tmp)
    assert {k: v for k, v in now.items() if k in before} == before
    assert [k for k, v in now.items() if k not in before and v is not None] == []


def _html_mirror(tmp: Path, write_karpathy) -> list[object]:
    mirror = karpathy_mirror(tmp, write_karpathy)
    (mirror / "Flickr8k_Dataset.zip").write_bytes(HTML_PAGE)  # what a proxy sends on an error
    return ["flickr8k", "--root", tmp / "data", "--mirror", mirror.as_uri(), "--no-progress"]


def _html_not_trusted(tmp: Path, before: dict) -> None:
    sums = json.loads((tmp / "data" / "checksums.json").read_text())
    assert "Flickr8k_Dataset.zip" not in sums  # the HTML page was not recorded as trusted
    assert "caption_datasets.zip" in sums  # the good archive was (it was extracted)
    ds = tmp / "data" / "flickr8k"
    assert not (ds / "images").exists()
    assert not list(ds.glob(".extract-*")) and not (ds / ".done-Flickr8k_Dataset.zip").exists()


CASES: list[Case] = [
    Case("student: SRC and DST swapped", "sat_core.book.student", _swapped, "holds solutions"),
    Case("student: DST above SRC, same names", "sat_core.book.student", _dst_above_src,
         "contains SRC_DIR"),
    Case("student: DST above SRC, other names", "sat_core.book.student", _dst_above_src_other_names,
         "contains SRC_DIR"),
    Case("student: DST inside SRC", "sat_core.book.student", _dst_inside_src, "is inside SRC_DIR"),
    Case("student: DST is SRC", "sat_core.book.student", _dst_is_src, "is SRC_DIR"),
    Case("student: DST is a file", "sat_core.book.student", _dst_is_a_file, "is a file"),
    Case("student: DST holds an unreadable notebook", "sat_core.book.student",
         _unreadable_dst_notebook, "not a readable notebook"),
    Case("student: a later notebook breaks the convention", "sat_core.book.student",
         _later_notebook_broken, "02.ipynb, cell 0"),
    Case("student: SRC missing", "sat_core.book.student", _missing_src, "is not a folder"),
    Case("student: no arguments", "sat_core.book.student", lambda tmp: [],
         "the following arguments are required"),
    Case("shapes: OUT_DIR not empty", "sat_core.data.shapes", _non_empty_out_dir, "--force"),
    Case("shapes: negative seed", "sat_core.data.shapes",
         lambda tmp: [tmp / "out", "--seed", "-1"], "--seed"),
    Case("shapes: nothing to write", "sat_core.data.shapes",
         lambda tmp: [tmp / "out", "--n-test", "0"], "at least one image"),
    Case("shapes: image too small", "sat_core.data.shapes",
         lambda tmp: [tmp / "out", "--image-size", "8"], "--image-size"),
    Case("shapes: images larger than the memory", "sat_core.data.shapes",
         lambda tmp: [tmp / "out", "--n-test", "1", "--image-size", "100000"],
         "1 image(s) of 100000 px need about"),
    Case("shapes: OUT_DIR is a file", "sat_core.data.shapes",
         _out_dir_is_a_file, "is a file"),
    Case("shapes: unknown option", "sat_core.data.shapes",
         lambda tmp: [tmp / "out", "--colour", "red"], "unrecognized arguments"),
    Case("caption: corrupt image", "sat_core.caption", _corrupt_image, "broken.png"),
    Case("caption: missing checkpoint", "sat_core.caption", _missing_checkpoint, "none.pt"),
    Case("caption: not a checkpoint", "sat_core.caption", _notes_as_checkpoint,
         "notes.pt is truncated or not a checkpoint"),
    Case("caption: a pickle of something else", "sat_core.caption", _foreign_checkpoint,
         "other.pt is not a sat_core checkpoint"),
    Case("caption: no image", "sat_core.caption", lambda tmp: ["--checkpoint", "x.pt"],
         "the following arguments are required"),
    Case("train: negative --grad-clip", "sat_core.train",
         lambda tmp: ["--grad-clip", "-1", "--out-dir", tmp / "run"], "--grad-clip"),
    Case("book: clean a notebook that is not JSON", "sat_core.book.build",
         _dirty_and_broken_notebooks, "bad.ipynb is not a readable notebook"),
    Case("book: unknown subcommand", "sat_core.book.build", lambda tmp: ["frobnicate"],
         "invalid choice: 'frobnicate'"),
    Case("book: --timeout not a number", "sat_core.book.build",
         lambda tmp: ["build", "--timeout", "soon"], "invalid float value: 'soon'"),
    Case("grade: SUBMISSIONS_DIR missing", "sat_core.book.grade",
         lambda tmp: [tmp / "submitted", "--out", tmp / "grades.csv"], "is not a folder"),
    Case("grade: no notebooks", "sat_core.book.grade",
         lambda tmp: [(tmp / "submitted" / "ann").mkdir(parents=True) or tmp / "submitted",
                      "--out", tmp / "grades.csv"], "no notebooks in"),
    Case("grade: --timeout nan", "sat_core.book.grade", _grade_timeout_nan, "--timeout must be a finite"),
    Case("grade: --out is a folder", "sat_core.book.grade", _grade_out_is_a_folder,
         "--out {tmp}/reports is a folder — give a file name such as"),
    Case("grade: --summary under a file", "sat_core.book.grade", _grade_summary_under_a_file,
         "is a file, not a folder"),
    Case("nbgrader_export: NOTEBOOKS_DIR missing", "sat_core.book.nbgrader_export",
         lambda tmp: [tmp / "notebooks", tmp / "course"], "is not a folder"),
    Case("download: unknown dataset", "sat_core.data.download",
         lambda tmp: ["imagenet", "--root", tmp / "data"], "invalid choice"),
    Case("download: mirror unreachable", "sat_core.data.download",
         lambda tmp: ["flickr8k", "--root", tmp / "data", "--mirror", (tmp / "gone").as_uri(),
                      "--no-progress"], "failed", _no_new_files),
    Case("download: --root is a file", "sat_core.data.download",
         lambda tmp: ["flickr8k", "--root", _notes(tmp), "--mirror", (tmp / "gone").as_uri(),
                      "--no-progress"], "--root {tmp}/notes is a file, not a folder"),
    Case("download: images archive missing", "sat_core.data.download",
         lambda tmp: ["flickr30k", "--root", tmp / "data", "--images-archive",
                      tmp / "none.tar.gz", "--mirror", (tmp / "gone").as_uri(), "--no-progress"],
         "none.tar.gz", _no_new_files),
]


# the first case of each command runs in a subprocess, the others in this process (run_main)
_SUBPROCESS = {next(c.name for c in CASES if c.module == m) for m in {c.module for c in CASES}}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_command_line_is_one_line_and_loses_nothing(case: Case, tmp_path: Path) -> None:
    args = case.setup(tmp_path)
    before = tree(tmp_path)
    run = run_module if case.name in _SUBPROCESS else run_main
    proc = run(case.module, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert case.message.format(tmp=tmp_path) in lines[0]
    assert " — " in lines[0], lines[0]  # error: <what> — <what to do>
    assert "Traceback" not in proc.stderr
    if case.after is None:
        assert tree(tmp_path) == before  # nothing lost, nothing left behind
    else:
        case.after(tmp_path, before)


def test_html_page_saved_as_the_zip(tmp_path, write_karpathy):
    args = _html_mirror(tmp_path, write_karpathy)
    proc = run_module("sat_core.data.download", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
    assert "Flickr8k_Dataset.zip" in lines[0] and "neither a zip nor a tar" in lines[0]
    _html_not_trusted(tmp_path, {})


def test_sat_debug_shows_the_traceback(tmp_path):
    args = _swapped(tmp_path)
    before = tree(tmp_path)
    proc = run_module("sat_core.book.student", *args, debug=True)
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "holds solutions" in proc.stderr
    assert tree(tmp_path) == before


# One bad input per command, with SAT_DEBUG=1: main lets the error out, so `python -m ...` prints
# the traceback for a bug report; the same inputs are one line without it (CASES above).
DEBUG_CASES: list[tuple[str, Callable[[Path], list[object]], str]] = [
    ("sat_core.book.student", _swapped, "holds solutions"),
    ("sat_core.data.shapes", _non_empty_out_dir, "--force"),
    ("sat_core.caption", _missing_checkpoint, "none.pt"),
    ("sat_core.evaluate", lambda tmp: ["--checkpoint", tmp / "none.pt"], "none.pt"),
    ("sat_core.train", lambda tmp: ["--grad-clip", "-1", "--out-dir", tmp / "run"],
     "--grad-clip"),
    ("sat_core.data.download", lambda tmp: ["flickr8k", "--root", tmp / "data", "--mirror",
                                            (tmp / "gone").as_uri(), "--no-progress"], "failed"),
    ("sat_core.book.build", _dirty_and_broken_notebooks, "bad.ipynb is not a readable notebook"),
    ("sat_core.book.grade", lambda tmp: [tmp / "submitted", "--out", tmp / "g.csv"], "submitted"),
    ("sat_core.book.nbgrader_export", lambda tmp: [tmp / "notebooks", tmp / "course"], "notebooks"),
]


@pytest.mark.parametrize(("module", "setup", "message"), DEBUG_CASES,
                         ids=[c[0].rsplit(".", 1)[1] for c in DEBUG_CASES])
def test_sat_debug_lets_every_command_show_the_traceback(module, setup, message, tmp_path,
                                                         monkeypatch, capsys):
    args = [str(a) for a in setup(tmp_path)]
    before = tree(tmp_path)
    monkeypatch.setenv("SAT_DEBUG", "1")
    with pytest.raises(Exception, match=message.replace(".", r"\.")) as info:
        importlib.import_module(module).main(args)
    assert not isinstance(info.value, SystemExit)
    assert "error:" not in capsys.readouterr().err  # the traceback instead of the line
    _no_new_files(tmp_path, before)  # nothing lost, no file left behind


# ------------------------------------------------------------------------------ the student


def test_student_copy_may_overwrite_an_older_student_copy(tmp_path):
    from sat_core.book.student import main

    write_nb(tmp_path / "notebooks" / "04.ipynb", instructor_notebook())
    write_nb(tmp_path / "out" / "04.ipynb", student_notebook())  # last `make student`
    assert main([str(tmp_path / "notebooks"), str(tmp_path / "out")]) == 0
    text = "".join(c.source for c in nbformat.read(tmp_path / "out" / "04.ipynb", 4).cells)
    assert 'raise NotImplementedError("Your code here")' in text and "x + 1" not in text


@pytest.mark.parametrize("cell", [
    new_code_cell("x = 1", metadata={"tags": ["solution"]}),
    new_code_cell("# BEGIN SOLUTION\nx = 1\n# END SOLUTION"),
    new_markdown_cell(":::{admonition} Answers\n:class: dropdown\nIt is 1.\n:::"),
], ids=["tag", "markers", "answers"])
def test_every_kind_of_solution_is_protected(tmp_path, cell):
    from sat_core.book.student import StudentCopyError, make_student_copy

    write_nb(tmp_path / "src" / "a.ipynb", student_notebook())
    dst = write_nb(tmp_path / "dst" / "a.ipynb", new_notebook(cells=[cell]))
    before = dst.read_bytes()
    with pytest.raises(StudentCopyError, match="holds solutions"):
        make_student_copy(tmp_path / "src", tmp_path / "dst")
    assert dst.read_bytes() == before


# ------------------------------------------------------------------------------- the Shapes


def test_shapes_force_replaces_only_its_own_files(tmp_path, capsys):
    from sat_core.data.shapes import main

    out = tmp_path / "out"
    assert main([str(out), "--n-test", "5", "--n-train", "2", "--image-size", "32"]) == 0
    (out / "notes.txt").write_text("keep me\n")
    write_png(out / "shapes" / "test" / "my_drawing.png")
    old_json = (out / "dataset_shapes.json").read_bytes()
    capsys.readouterr()

    assert main([str(out), "--n-test", "2", "--image-size", "32", "--seed", "3"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "dataset_shapes.json").read_bytes() == old_json  # refused: nothing touched

    assert main([str(out), "--n-test", "2", "--image-size", "32", "--seed", "3", "--force"]) == 0
    data = json.loads((out / "dataset_shapes.json").read_text())
    assert [im["filename"] for im in data["images"]] == ["000000.png", "000001.png"]
    assert sorted(p.name for p in (out / "shapes" / "test").iterdir()) == [
        "000000.png", "000001.png", "my_drawing.png"]  # stale 000002-000004 gone, mine kept
    assert not (out / "shapes" / "train").exists()  # the old train split is gone too
    assert (out / "notes.txt").read_text() == "keep me\n"


def test_shapes_refuses_more_images_than_the_memory_holds():
    from sat_core.data.shapes import _check_memory, memory_needed, physical_memory

    have = physical_memory()
    assert have is not None and have > 2**28  # Linux says
    n = have // (memory_needed(2, 64) - memory_needed(1, 64)) + 1  # more than fit
    with pytest.raises(UserError, match=rf"^{n} image\(s\) of 64 px need about .* — ask for"):
        _check_memory(n, 64)
    _check_memory(n // 4, 64)  # a quarter of it is fine


# ------------------------------------------------------------------------------- the images


def loaded_pixels(path: Path, size: int) -> np.ndarray:
    """What the loader feeds the model, as 0..255 values (its normalisation undone)."""
    x = load_image_file(path, image_size=size)
    return denormalize_image(x) * 255.0


def grey(values: list[list[float]]) -> np.ndarray:
    """(H, W) grey levels -> the (H, W, 3) RGB the loader should give."""
    a = np.asarray(values, dtype=np.float64)
    return np.repeat(a[..., None], 3, axis=-1)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    levels = np.array([[0, 257 * 10], [65535, 32896]], dtype=np.uint16)
    Image.fromarray(levels).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    got = loaded_pixels(tmp_path / "deep.png", 2)
    np.testing.assert_allclose(got, grey([[0, 10], [255, 128]]), atol=1e-3)


@pytest.mark.parametrize(("values", "expected"), [
    ([[0.0, 0.2], [0.6, 1.0]], [[0, 51], [153, 255]]),  # in [0, 1]: times 255
    ([[-5.0, 8.0], [30.0, 40.0]], [[0, 51], [191, 255]]),  # else: negatives 0, the max 255
], ids=["unit-range", "any-range"])
def test_32_bit_float_tiff(tmp_path, values, expected):
    Image.fromarray(np.array(values, dtype=np.float32)).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    np.testing.assert_allclose(loaded_pixels(tmp_path / "f.tif", 2), grey(expected), atol=1e-3)


@pytest.mark.parametrize(("values", "expected"), [
    ([[0, 2570], [65535, -3]], [[0, 10], [255, 0]]),  # 16-bit levels stored as int32
    ([[0, 100000], [51000, 255000]], [[0, 100], [51, 255]]),  # wider: scaled by the max
], ids=["16-bit-range", "wider"])
def test_32_bit_integer_tiff(tmp_path, values, expected):
    Image.fromarray(np.array(values, dtype=np.int32)).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    np.testing.assert_allclose(loaded_pixels(tmp_path / "i.tif", 2), grey(expected), atol=1e-3)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    rgb = np.zeros((16, 32, 3), np.uint8)  # stored 32 wide, 16 high: red left, blue right
    rgb[:, :16] = (255, 0, 0)
    rgb[:, 16:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    got = loaded_pixels(tmp_path / "phone.jpg", 16)  # upright: red on top, blue below
    np.testing.assert_allclose(got[3, 12], [255, 0, 0], atol=12)  # top right quadrant
    np.testing.assert_allclose(got[12, 3], [0, 0, 255], atol=12)  # bottom left quadrant


def test_karpathy_split_reads_a_16_bit_image(tiny_karpathy):
    path = tiny_karpathy.path_of(0)
    Image.fromarray(np.full((12, 20), 257 * 200, np.uint16)).save(path)  # replaces image 0
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, image_size=4)
    rec = next(r for r in splits["train"].records if r.image_id == 0)
    got = denormalize_image(splits["train"].load_image(rec)) * 255.0
    np.testing.assert_allclose(got, np.full((4, 4, 3), 200.0), atol=1e-3)


def test_truncated_16_bit_png_names_the_file(tmp_path):
    Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(
        tmp_path / "deep.png")
    data = (tmp_path / "deep.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png") as info:
        load_image_file(tmp_path / "cut.png", image_size=8)
    assert info.value.path == str(tmp_path / "cut.png")


def test_caption_accepts_the_images_the_loader_reads(tmp_path):
    from sat_core.caption import check_images

    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "f.tif")
    check_images([tmp_path / "deep.png", tmp_path / "f.tif"])  # no error
    (tmp_path / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 12)
    with pytest.raises(ImageLoadError, match="broken.tif"):
        check_images([tmp_path / "deep.png", tmp_path / "broken.tif"])


# ---------------------------------------------------------------------------- the downloads


KILL_HALF_WAY = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from sat_core.data import download as dl

    real_extract, seen = dl.safe_extract, []

    def extract_half_then_die(archive, dest, *, only=None):
        def first_half(name):
            if only is not None and not only(name):
                return False
            if name.endswith(".png"):
                seen.append(name)
                return len(seen) <= 3
            return True
        real_extract(archive, dest, only=first_half)
        if seen:  # the images archive: killed with 3 of its 6 images written
            os.kill(os.getpid(), signal.SIGKILL)
        return real_extract(archive, dest, only=only)

    dl.safe_extract = extract_half_then_die
    dl.prepare_dataset(sys.argv[1], sys.argv[2], mirror=sys.argv[3] or None,
                       images_archive=sys.argv[4] or None, progress=False)
""")

KILL_WHILE_PLACING = textwrap.dedent("""
    import os, shutil, signal, sys
    from sat_core.data import download as dl

    placed = set()

    def dying(real):
        def move(src, dst, *args, **kw):
            if ".extract-" in str(src) and str(src).endswith(".png"):
                placed.add(str(src))
                if len(placed) > 3:  # killed with 3 of the 6 images in place
                    os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kw)
        return move

    shutil.move, os.replace, os.rename = dying(shutil.move), dying(os.replace), dying(os.rename)
    dl.prepare_dataset(sys.argv[1], sys.argv[2], mirror=sys.argv[3] or None,
                       images_archive=sys.argv[4] or None, progress=False)
""")


def run_script(script: str, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)


def test_extraction_killed_half_way_is_redone(tmp_path, write_karpathy):
    mirror = karpathy_mirror(tmp_path, write_karpathy)
    root = tmp_path / "data"
    killed = run_script(KILL_HALF_WAY, "flickr8k", root, mirror.as_uri(), "")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ds = root / "flickr8k"
    assert not (ds / ".done-Flickr8k_Dataset.zip").exists()
    assert not (ds / "images").exists() or not any((ds / "images").iterdir())
    assert list(ds.glob(".extract-*"))  # the kill left its temp folder, as a real kill does

    assert dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False) == ds
    assert len(list((ds / "images").glob("*.png"))) == 6
    assert list(ds.glob(".extract-*")) == []  # the killed run's temp folder was removed
    assert (ds / ".done-Flickr8k_Dataset.zip").exists()


def test_killed_while_placing_the_images_is_never_ready_with_part(tmp_path, write_karpathy):
    mirror = karpathy_mirror(tmp_path, write_karpathy, "flickr30k")
    archive = tmp_path / "flickr30k-images.tar.gz"
    root = tmp_path / "data"
    first = run_script(KILL_WHILE_PLACING, "flickr30k", root, mirror.as_uri(), archive)
    assert first.returncode in (0, -signal.SIGKILL), first.stderr
    images = root / "flickr30k" / "images"
    try:  # a rerun without the archive: either it is all there, or it says what is missing
        dl.prepare_dataset("flickr30k", root, progress=False)
    except dl.ManualDownloadRequired:
        assert not images.exists() or not any(images.iterdir())
    else:
        assert len(list(images.glob("*.png"))) == 6
    assert list((root / "flickr30k").glob(".extract-*")) == []


def test_a_finished_extraction_killed_before_it_was_moved_is_moved_on_rerun(
        tmp_path, write_karpathy, monkeypatch):
    mirror = karpathy_mirror(tmp_path, write_karpathy, "flickr30k")
    archive = tmp_path / "flickr30k-images.tar.gz"
    root = tmp_path / "data"

    real_commit = dl._commit_stage

    def killed(stage: Path, ds_dir: Path) -> None:
        if json.loads((stage / dl.STAGE_MARKER).read_text())["target"] != "images":
            return real_commit(stage, ds_dir)  # the captions JSON goes into place
        raise KeyboardInterrupt  # stands for a kill: the images' stage stays, marked complete

    with monkeypatch.context() as m:
        m.setattr(dl, "_commit_stage", killed)
        m.setattr(dl.shutil, "rmtree", lambda *a, **k: None)  # a killed run cleans nothing
        with pytest.raises(KeyboardInterrupt):
            dl.prepare_dataset("flickr30k", root, mirror=mirror.as_uri(), images_archive=archive,
                               progress=False)
    ds = root / "flickr30k"
    assert [p for p in ds.glob(".extract-*") if (p / dl.STAGE_MARKER).exists()]
    archive.unlink()  # the rerun needs no archive: the finished extraction is in the stage
    dl.prepare_dataset("flickr30k", root, progress=False)
    assert len(list((ds / "images").glob("*.png"))) == 6
    assert list(ds.glob(".extract-*")) == []


def test_interrupted_extraction_leaves_nothing_behind(tmp_path, write_karpathy, monkeypatch):
    mirror = karpathy_mirror(tmp_path, write_karpathy)
    root = tmp_path / "data"
    real = dl.safe_extract

    def interrupted(archive, dest, *, only=None):
        real(archive, dest, only=only)
        if Path(archive).name == "Flickr8k_Dataset.zip":
            raise KeyboardInterrupt

    monkeypatch.setattr(dl, "safe_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    ds = root / "flickr8k"
    assert not (ds / "images").exists() and list(ds.glob(".extract-*")) == []
    monkeypatch.setattr(dl, "safe_extract", real)
    dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    assert len(list((ds / "images").glob("*.png"))) == 6


def test_bad_download_is_not_trusted_and_the_good_one_is_accepted(tmp_path, write_karpathy):
    mirror = karpathy_mirror(tmp_path, write_karpathy)
    good = (mirror / "Flickr8k_Dataset.zip").read_bytes()
    (mirror / "Flickr8k_Dataset.zip").write_bytes(HTML_PAGE)
    root = tmp_path / "data"
    with pytest.raises(dl.NoSourceLeft, match="neither a zip nor a tar") as e:
        dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    assert isinstance(e.value.__cause__, dl.ArchiveError)
    sums = json.loads((root / "checksums.json").read_text())
    assert "Flickr8k_Dataset.zip" not in sums
    assert not (root / "downloads" / "Flickr8k_Dataset.zip").exists()  # not kept: next source

    (mirror / "Flickr8k_Dataset.zip").write_bytes(good)  # the server is back
    dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    sums = json.loads((root / "checksums.json").read_text())
    assert sums["Flickr8k_Dataset.zip"] == sha(good)
    assert len(list((root / "flickr8k" / "images").glob("*.png"))) == 6


def test_corrupt_zip_is_an_archive_error_naming_it(tmp_path, write_karpathy):
    mirror = karpathy_mirror(tmp_path, write_karpathy)
    data = bytearray((mirror / "Flickr8k_Dataset.zip").read_bytes())
    start = data.index(b"\x89PNG")  # damage the first image's bytes: its CRC no longer matches
    data[start + 20: start + 30] = b"\xff" * 10
    (mirror / "Flickr8k_Dataset.zip").write_bytes(bytes(data))
    root = tmp_path / "data"
    with pytest.raises(dl.NoSourceLeft, match="Flickr8k_Dataset.zip.*is corrupt") as e:
        dl.prepare_dataset("flickr8k", root, mirror=mirror.as_uri(), progress=False)
    assert isinstance(e.value.__cause__, dl.ArchiveError)
    ds = root / "flickr8k"
    assert not (ds / "images").exists() and list(ds.glob(".extract-*")) == []
    assert "Flickr8k_Dataset.zip" not in json.loads((root / "checksums.json").read_text())


# ------------------------------------------------------------------------------ the training


def call_main(main: Callable[[list[str]], int], argv: list[str]) -> int | str | None:
    """``main(argv)``'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def assert_one_line_error(status: object, err: str, message: str) -> None:
    """Status 2, and stderr is one line ``error: <what> — <what to do>`` holding ``message``."""
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert " — " in lines[0] and "Traceback" not in err
# In-process (``main(argv)`` with capsys): the same one-line checks as the table above, without
# a torch import per case. ``load_data`` is replaced by a trap: every bad option must be refused
# before any data is loaded, and ``tmp_path`` must stay empty (nothing written, no out-dir made).


def _file_out_dir(tmp: Path) -> list[str]:
    (tmp / "run").write_text("my notes\n")
    return ["--out-dir", str(tmp / "run")]


def _out_dir_under_a_file(tmp: Path) -> list[str]:
    (tmp / "notes").write_text("my notes\n")
    return ["--out-dir", str(tmp / "notes" / "run")]


def _read_only_out_dir(tmp: Path) -> list[str]:
    (tmp / "ro").mkdir()
    (tmp / "ro").chmod(0o555)
    return ["--out-dir", str(tmp / "ro" / "run")]


def deny_writes_under(folder: Path, monkeypatch) -> None:
    """Creating a file under ``folder`` fails with EACCES, as the kernel answers a user (root,
    who runs CI's containers, may write into a folder without write permission)."""
    import errno

    real_open = os.open

    def guarded(path, flags, *args, **kw):
        if flags & os.O_CREAT and Path(path).is_relative_to(folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", guarded)


def _locked_out_dir(tmp: Path) -> list[str]:
    (tmp / "run").mkdir()  # a run in progress: this very process holds the lock
    (tmp / "run" / ".lock").write_text(json.dumps({"pid": os.getpid(), "started": "now"}))
    return ["--out-dir", str(tmp / "run")]


TRAIN_BAD: list[tuple[str, Callable[[Path], list[str]] | list[str], str]] = [
    ("grad-clip", ["--grad-clip", "-1"], "grad_clip (--grad-clip) is -1.0; it must be"),
    ("lr-nan", ["--lr", "nan"], "lr (--lr) is nan"),
    ("lr-zero", ["--lr", "0"], "lr (--lr) is 0.0"),
    ("lr-decay", ["--lr-decay", "-1"], "--lr-decay"),
    ("alpha-c", ["--alpha-c", "-5"], "--alpha-c"),
    ("weight-decay", ["--weight-decay", "-1"], "--weight-decay"),
    ("lambda-e-inf", ["--lambda-e", "inf"], "--lambda-e"),
    ("dropout-1", ["--dropout", "1"], "--dropout"),
    ("hard-mix", ["--hard-mix", "1.5"], "--hard-mix"),
    ("epochs", ["--epochs", "0"], "epochs (--epochs) is 0"),
    ("batch-size", ["--batch-size", "0"], "--batch-size"),
    ("seed", ["--seed", "-3"], "--seed"),
    ("shapes-seed", ["--shapes-seed", "-1"], "--shapes-seed"),
    ("image-size", ["--image-size", "8"], "--image-size"),
    ("plateau-decay-1", ["--lr-schedule", "plateau", "--lr-decay", "1"], "plateau"),
    ("step-every-0", ["--lr-schedule", "step", "--lr-decay-epochs", "0"], "--lr-decay-epochs"),
    ("lr-not-a-number", ["--lr", "fast"], "invalid float value"),
    ("device-banana", ["--device", "banana"], "'banana' is not a device"),
    ("device-cuda", ["--device", "cuda:7"], "--device cuda:7"),
    ("out-dir-is-a-file", _file_out_dir, "is a file, not a folder"),
    ("out-dir-under-a-file", _out_dir_under_a_file, "is a file, not a folder"),
    ("out-dir-read-only", _read_only_out_dir, "cannot write in"),
    ("out-dir-in-use", _locked_out_dir, f"in use by training process {os.getpid()}"),
    ("resume-missing", ["--resume", "none.pt"], "none.pt does not exist"),
]


@pytest.mark.parametrize(("setup", "message"), [c[1:] for c in TRAIN_BAD],
                         ids=[c[0] for c in TRAIN_BAD])
def test_bad_training_option_is_refused_before_any_work(setup, message, tmp_path, capsys,
                                                        monkeypatch):
    import sat_core.train as tr

    if setup is _read_only_out_dir and os.geteuid() == 0:  # root writes anywhere: as for a user
        deny_writes_under(tmp_path / "ro", monkeypatch)

    def trap(cfg):
        raise AssertionError("the data were loaded before the options were checked")

    monkeypatch.setattr(tr, "load_data", trap)
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path) if callable(setup) else [*setup, "--out-dir", str(tmp_path / "run")]
    before = tree(tmp_path)
    status = call_main(tr.main, [*args, "--features-dir", str(tmp_path / "features")])
    assert_one_line_error(status, capsys.readouterr().err, message)
    assert tree(tmp_path) == before


def test_every_numeric_training_option_has_a_range():
    import math
    import typing
    from dataclasses import fields

    from sat_core.config import RANGES, ConfigError, TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    numeric = [f.name for f in fields(TrainConfig) if hints[f.name] in (int, float)]
    assert sorted(numeric) == sorted(RANGES)
    for name in numeric:
        bad = [-1] if hints[name] is int else [-1.0, math.nan, math.inf]
        for value in bad:
            with pytest.raises(ConfigError, match=rf"^{name} \(--{name.replace('_', '-')}\) is"):
                TrainConfig(**{name: value})
    TrainConfig()  # the defaults, and every preset, pass
    from sat_core.config import PRESETS, preset
    for name in PRESETS:
        preset(name)


def test_devices_this_machine_lacks_are_one_line_errors(monkeypatch):
    import torch

    from sat_core.device import DeviceError, pick_device
    from sat_core.errors import UserError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"--device cuda: CUDA is not available .* — use"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DeviceError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        pick_device("cuda:2")
    with pytest.raises(UserError, match="'banana' is not a device"):
        pick_device("banana")
    assert pick_device("cpu").type == "cpu"


# ---------------------------------------------------------------------- evaluate and caption


def _report_folder(tmp: Path) -> list[str]:
    (tmp / "report").mkdir()
    return ["--checkpoint", str(tmp / "model.pt"), "--out", str(tmp / "report")]


DECODE_BAD: list[tuple[str, str, Callable[[Path], list[str]] | list[str], str]] = [
    ("caption-beam-0", "caption", ["--checkpoint", "m.pt", "a.png", "--beam-size", "0"],
     "--beam-size must be >= 1"),
    ("caption-length-norm-nan", "caption", ["--checkpoint", "m.pt", "a.png", "--length-norm",
                                            "nan"], "--length-norm must be a finite number"),
    ("caption-out-dir-file", "caption", lambda tmp: [
        "--checkpoint", "m.pt", "a.png", "--out-dir", str(write_png(tmp / "x.png"))],
     "is a file, not a folder"),
    ("evaluate-beam-0", "evaluate", ["--checkpoint", "m.pt", "--beam-size", "0"],
     "--beam-size must be >= 1"),
    ("evaluate-batch-0", "evaluate", ["--checkpoint", "m.pt", "--batch-size", "0"],
     "--batch-size must be >= 1"),
    ("evaluate-split", "evaluate", ["--checkpoint", "m.pt", "--split", "dev"],
     "argument --split: invalid choice: 'dev'"),
    ("evaluate-length-norm", "evaluate", ["--checkpoint", "m.pt", "--length-norm=-inf"],
     "--length-norm must be a finite number"),
    ("evaluate-out-is-a-folder", "evaluate", _report_folder, "--out"),
]

# the same through main with the real loader: a checkpoint that cannot be used is one line too
CHECKPOINT_BAD: list[tuple[str, Callable[[Path], list[str]], str]] = [
    ("folder", lambda tmp: [(tmp / "run").mkdir() or str(tmp / "run")],
     "run is a folder — pass a file such as"),
    ("truncated", lambda tmp: [str(_notes_as_checkpoint(tmp)[1])],
     "notes.pt is truncated or not a checkpoint"),
    ("foreign", lambda tmp: [str(_foreign_checkpoint(tmp)[1])],
     "other.pt is not a sat_core checkpoint"),
]


@pytest.mark.parametrize(("setup", "message"), [c[1:] for c in CHECKPOINT_BAD],
                         ids=[c[0] for c in CHECKPOINT_BAD])
def test_evaluate_with_a_checkpoint_it_cannot_use(setup, message, tmp_path, capsys):
    import sat_core.evaluate

    args = setup(tmp_path)
    before = tree(tmp_path)
    status = call_main(sat_core.evaluate.main, ["--checkpoint", *args, "--out",
                                                str(tmp_path / "report.json")])
    assert_one_line_error(status, capsys.readouterr().err, message)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("command", "setup", "message"), [c[1:] for c in DECODE_BAD],
                         ids=[c[0] for c in DECODE_BAD])
def test_bad_decoding_option_is_refused_before_the_model_is_loaded(
        command, setup, message, tmp_path, capsys, monkeypatch):
    import sat_core.caption
    import sat_core.evaluate

    def trap(*args, **kw):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(sat_core.evaluate, "load_captioner", trap)
    monkeypatch.chdir(tmp_path)
    args = setup(tmp_path) if callable(setup) else setup
    before = tree(tmp_path)
    main = sat_core.caption.main if command == "caption" else sat_core.evaluate.main
    assert_one_line_error(call_main(main, args), capsys.readouterr().err, message)
    assert tree(tmp_path) == before


def test_evaluate_out_folder_is_refused_before_decoding(tmp_path, capsys, monkeypatch):
    # the case: --out pointing at a folder failed only after all the decoding
    import sat_core.evaluate as ev

    monkeypatch.setattr(ev, "decode_split", lambda *a, **k: pytest.fail("decoded"))
    (tmp_path / "report").mkdir()
    with pytest.raises(UserError, match=r"--out .*report is a folder — give a file name"):
        ev.evaluate_checkpoint(tmp_path / "none.pt", out=tmp_path / "report")


# ------------------------------------------------- training: lock, Ctrl-C, resume, references

# A run of a few milliseconds a step: 4 Shapes images of 32 px, 20 captions, 10 batches an epoch.
TINY_RUN = ["--n-train", "4", "--n-val", "1", "--n-test", "1", "--image-size", "32",
            "--encoder-channels", "8", "--embed-dim", "8", "--hidden-dim", "16", "--attn-dim", "8",
            "--batch-size", "2", "--fine-tune", "--val-max-len", "4", "--no-progress",
            "--test-metrics", "none", "--num-threads", "1", "--checkpoint-every", "0"]


def steps_csv(out: Path) -> list[dict[str, str]]:
    import csv

    with (out / "steps.csv").open() as f:
        return list(csv.DictReader(f))


def test_resume_with_a_new_lr_trains_with_it(tmp_path, capsys):
    import sat_core.train as tr
    from sat_core.checkpoint import load_checkpoint

    out = tmp_path / "run"
    first = [*TINY_RUN, "--lr", "0.01", "--warmup-steps", "8", "--max-steps", "6",
             "--log-every", "1", "--checkpoint-every", "1", "--out-dir", str(out)]
    assert tr.main([*first, "--stop-after-steps", "2"]) == 0
    last = out / "last.pt"
    kept = tree(out)
    capsys.readouterr()
    # what a resume cannot apply is refused, naming it; nothing is touched
    for change, named in ((["--optimizer", "rmsprop"], "--optimizer adam -> rmsprop"),
                          (["--batch-size", "4"], "--batch-size 2 -> 4 in the middle of an epoch"),
                          (["--lr-schedule", "plateau"], "--lr-schedule constant -> plateau")):
        assert_one_line_error(tr.main(["--resume", str(last), *change]),
                              capsys.readouterr().err, named)
        assert tree(out) == kept

    assert tr.main(["--resume", str(last), "--lr", "0.002"]) == 0
    assert "'lr': (0.01, 0.002)" in capsys.readouterr().err  # announced ...
    rows = steps_csv(out)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    # ... and used: lr(step) = base * (step + 1) / 8 in the warm-up, with the new base after step 2
    for r in rows:
        base = 0.01 if int(r["step"]) <= 2 else 0.002
        assert float(r["lr"]) == pytest.approx(base * (int(r["step"]) + 1) / 8, rel=1e-5), r
    ckpt = load_checkpoint(last)
    assert ckpt["config"].lr == 0.002 and ckpt["step"] == 6
    group = ckpt["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == 0.002 and group["lr"] == pytest.approx(0.002 * 7 / 8)
    assert ckpt["scheduler"]["base_lrs"] == [0.002]


def test_ctrl_c_saves_the_current_step_and_prints_the_command_that_resumes(tmp_path):
    import sat_core.train as tr
    from sat_core.checkpoint import load_checkpoint

    out = tmp_path / "run"
    argv = [*TINY_RUN, "--epochs", "1000", "--log-every", "1", "--out-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SAT_DEBUG", None)
    # SIGINT at its default in the child, as in a terminal, even where this process ignores it
    # (a background job): train leaves an ignored SIGINT ignored
    proc = subprocess.Popen([sys.executable, "-m", "sat_core.train", *argv],
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not (out / "steps.csv").exists() or len(steps_csv(out)) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        # a second run into the same out-dir is refused while the first one trains
        assert call_main(tr.main, argv) == 2
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err
    step = int(steps_csv(out)[-1]["step"])  # the last step done, logged before the save
    assert lines[-1] == (f"stopped by Ctrl-C after step {step}; saved {out / 'last.pt'} — "
                         f"resume with: python -m sat_core.train --resume {out / 'last.pt'}")
    assert load_checkpoint(out / "last.pt")["step"] == step  # not the last epoch's end: this step
    assert not (out / ".lock").exists()

    (out / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # an interrupted save
    command = lines[-1].split("resume with: python -m sat_core.train ")[1].split()
    assert tr.main([*command, "--max-steps", str(step + 2)]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == step + 2
    assert not (out / ".last.pt.k1ll3d.tmp").exists() and not (out / ".lock").exists()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers live in the main thread")
def test_a_second_ctrl_c_stops_at_once(tmp_path, capsys, monkeypatch):
    import sat_core.train as tr

    # as in a terminal (a background job, e.g. CI started with `&`, inherits SIGINT ignored)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tr._CtrlC() as ctrl_c:
            signal.raise_signal(signal.SIGINT)
            assert ctrl_c.requested  # the first one only asks the loop to save and stop
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        # a job started with SIGINT ignored keeps ignoring it: Ctrl-C meant for its shell
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with tr._CtrlC() as ctrl_c:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
            assert not ctrl_c.requested
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, outer)
    capsys.readouterr()

    def stopped_at_once(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr, "train", stopped_at_once)
    assert tr.main(["--out-dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "second Ctrl-C" in err[0] and "no checkpoint was written" in err[0]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"an earlier checkpoint")
    assert tr.main(["--out-dir", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"--resume {tmp_path / 'run' / 'last.pt'}")


def test_a_stale_lock_is_taken_over_and_leftovers_are_removed(tmp_path, capsys):
    from sat_core.out_dir import claim_out_dir

    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid no longer runs
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": gone.pid, "started": "yesterday"}))
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half")  # torch.save killed half-way
    (out / ".log.json.tmp").write_text("{")
    (out / "last.pt").write_bytes(b"keep me")
    (out / ".report.json.tmp").write_text("{")  # not the run's: an evaluate writing its report
    with claim_out_dir(out):
        assert json.loads((out / ".lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"taking over the stale lock {out / '.lock'} of process {gone.pid}" in err
    assert "removed 2 temporary file(s) of an interrupted save" in err
    assert sorted(p.name for p in out.iterdir()) == [".report.json.tmp", "last.pt"]  # unlocked
    with claim_out_dir(tmp_path / "new" / "run"):  # created, then nothing written there
        pass
    assert not (tmp_path / "new").exists()


def test_temp_files_of_killed_pretraining_saves_are_removed(tmp_path):
    from sat_core.pretrain import remove_dead_temp_files

    gone = subprocess.Popen(["true"])
    gone.wait()
    path = tmp_path / "encoders" / "small.pt"
    path.parent.mkdir()
    dead = path.with_name(f".small.pt.{gone.pid}.tmp")  # killed during torch.save
    live = path.with_name(f".small.pt.{os.getpid()}.tmp")  # a save in progress
    dead.write_bytes(b"half")
    live.write_bytes(b"half")
    assert remove_dead_temp_files(path) == [dead]
    assert not dead.exists() and live.exists()


def _empty_caption(data: dict) -> str:
    data["images"][1]["sentences"][2]["tokens"] = []
    return "(id 1) of the train split has an empty reference caption (number 3)"


def _no_val_images(data: dict) -> str:
    for im in data["images"]:
        if im["split"] == "val":
            im["split"] = "train"
    return "the val split of"


def _no_captions(data: dict) -> str:
    data["images"][4]["sentences"] = []
    return "(id 4) of the train split has no reference caption"  # restval: folded into train


@pytest.mark.parametrize("damage", [_empty_caption, _no_val_images, _no_captions])
def test_bad_references_stop_the_run_before_the_first_epoch(damage, tiny_data_root, tmp_path,
                                                             capsys, monkeypatch):
    import sat_core.train as tr

    monkeypatch.setattr(tr, "_train_epoch", lambda loop: pytest.fail("an epoch started"))
    json_path = tiny_data_root / "flickr8k" / "dataset_flickr8k.json"
    data = json.loads(json_path.read_text())
    message = damage(data)
    json_path.write_text(json.dumps(data))
    before = tree(tmp_path)
    status = tr.main(["--dataset", "flickr8k", "--data-root", str(tiny_data_root),
                      "--image-size", "16", "--out-dir", str(tmp_path / "run"),
                      "--test-metrics", "bleu", "--no-progress"])
    err = capsys.readouterr().err
    assert_one_line_error(status, err, message)
    assert str(json_path) in err or "split of" in err  # the file to fix, or the split
    assert tree(tmp_path) == before  # no out-dir, no vocab.json: nothing written


def _latin1_json(root: Path) -> str:
    path = root / "flickr8k" / "dataset_flickr8k.json"
    path.write_bytes(path.read_text().replace("child", "enfant é").encode("latin-1"))
    return "is not UTF-8 text"


def _missing_image(root: Path) -> str:
    (root / "flickr8k" / "images" / "1000268201_00abcdef.png").unlink()
    return "1000268201_00abcdef.png: file not found"


def _malformed_json(root: Path) -> str:
    path = root / "flickr8k" / "dataset_flickr8k.json"
    path.write_text(path.read_text()[:-40])  # cut short: a download or an edit that stopped
    return f"{path} is not valid JSON"


def _json_without_images(root: Path) -> str:
    path = root / "flickr8k" / "dataset_flickr8k.json"
    path.write_text(json.dumps({"dataset": "flickr8k"}))
    return "'images'"


@pytest.mark.parametrize("damage", [_latin1_json, _missing_image, _malformed_json,
                                    _json_without_images])
def test_a_broken_dataset_is_one_line_naming_the_file(damage, tiny_data_root, tmp_path, capsys):
    import sat_core.train as tr

    message = damage(tiny_data_root)
    before = tree(tmp_path)
    status = tr.main(["--dataset", "flickr8k", "--data-root", str(tiny_data_root),
                      "--image-size", "16", "--encoder-channels", "8", "--out-dir",
                      str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and lines[-1].startswith("error: ") and message in lines[-1], err
    assert " — " in lines[-1] and "Traceback" not in err  # error: <what> — <what to do>
    _no_new_files(tmp_path, before)  # the feature cache's half-built folder is gone too


def test_a_size_this_machine_cannot_hold_is_one_line(tmp_path, capsys):
    # a Shapes image of 10^6 px a side: numpy's MemoryError (10.9 TiB) was a traceback
    import sat_core.train as tr

    status = tr.main(["--n-train", "4", "--n-val", "1", "--n-test", "1", "--image-size",
                      "1000000", "--out-dir", str(tmp_path / "run"), "--features-dir",
                      str(tmp_path / "features"), "--no-progress"])
    assert_one_line_error(status, capsys.readouterr().err, "error: out of memory (")
    assert list(tmp_path.iterdir()) == []  # no run folder, no feature cache


def test_offline_pretrained_weights_are_one_line_in_the_command_s_terms(tiny_data_root, tmp_path,
                                                                       capsys, monkeypatch):
    # the case: --encoder vgg19 on a machine without internet and no cached weights
    import urllib.error

    import torch

    import sat_core.train as tr

    def offline(url, dst, *args, **kw):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    before = tree(tmp_path)
    status = tr.main(["--dataset", "flickr8k", "--data-root", str(tiny_data_root),
                      "--encoder", "vgg19", "--encoder-weights", "default", "--image-size", "32",
                      "--out-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert [ln for ln in lines if not ln.startswith("Downloading: ")] == lines[-1:], err  # torch's
    assert lines[-1].startswith("error: could not download the pretrained weights VGG19_"), err
    assert " — " in lines[-1] and "Temporary failure in name resolution" in lines[-1]
    assert "--encoder-weights none" in lines[-1] and "weights=None" not in lines[-1]
    assert "--encoder-weights /path/to/vgg19-dcbb9e9d.pth" in lines[-1]
    _no_new_files(tmp_path, before)  # no run folder, no feature cache, no half-written weights


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_resumed_schedules_take_the_new_rate_and_decay(schedule):
    # what _resume does to a loaded optimizer + schedule, without training: the new base rate
    # times what the schedule has done so far (cosine: its factor at this step; plateau: the
    # decays it made), and plateau's new factor and patience
    import torch

    import sat_core.train as tr
    from sat_core.config import TrainConfig
    from sat_core.losses import MovingAverageBaseline

    old = TrainConfig(lr=0.01, lr_schedule=schedule, lr_decay=0.5, epochs=2)
    new = TrainConfig(lr=0.003, lr_schedule=schedule, lr_decay=0.2, lr_decay_epochs=7, epochs=2,
                      weight_decay=0.1, baseline_decay=0.5)
    model = torch.nn.Linear(2, 2)
    opt = tr.make_optimizer(old, model)
    sched = tr.make_scheduler(old, opt, steps_per_epoch=10)
    for _ in range(8):  # plateau: no gain for 7 epochs > patience 5, so one decay
        opt.step()
        sched.step(0.0) if schedule == "plateau" else sched.step()
    saved = (opt.state_dict(), sched.state_dict())

    opt2 = tr.make_optimizer(new, model)
    sched2 = tr.make_scheduler(new, opt2, steps_per_epoch=10)
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    optim = tr._Optim(opt2, sched2, None, MovingAverageBaseline(momentum=0.9), None)
    tr._apply_settings(new, old, optim)
    group = opt2.param_groups[0]
    if schedule == "cosine":
        assert group["lr"] == pytest.approx(0.003 * tr.lr_factor(new, 10)(8))
        sched2.step()
        assert group["lr"] == pytest.approx(0.003 * tr.lr_factor(new, 10)(9))
    else:
        decays = opt.param_groups[0]["lr"] / 0.01
        assert decays < 1 and group["lr"] == pytest.approx(0.003 * decays)
        assert (sched2.factor, sched2.patience) == (0.2, 7)
    assert group["initial_lr"] == 0.003 and group["weight_decay"] == 0.1
    assert optim.baseline.momentum == 0.5


def test_a_disk_that_fills_up_during_a_save_loses_nothing(tmp_path, capsys, monkeypatch):
    # a real run whose second checkpoint save hits a full disk half-way through torch.save
    import errno

    import torch

    import sat_core.train as tr
    from sat_core.checkpoint import load_checkpoint

    real_save, saves = torch.save, []

    def fills_up(obj, f, *args, **kw):
        saves.append(1)
        if len(saves) < 2:
            return real_save(obj, f, *args, **kw)
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fills_up)
    out = tmp_path / "run"
    status = tr.main([*TINY_RUN, "--max-steps", "4", "--checkpoint-every", "1", "--out-dir",
                      str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(saves) == 2, err
    assert err[-1].startswith("error: ") and "free some disk space" in err[-1], err
    assert "--resume" in err[-1] and not any("Traceback" in ln for ln in err)
    assert load_checkpoint(out / "last.pt")["step"] == 1  # the first save is intact
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no .tmp, lock
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run resumes from it
    assert tr.main(["--resume", str(out / "last.pt")]) == 0
    assert load_checkpoint(out / "last.pt")["step"] == 4


@pytest.mark.parametrize("code, advice", [
    (28, "free some disk space"),  # ENOSPC: a full disk while saving a checkpoint
    (13, "permissions"),  # EACCES
])
def test_a_full_disk_or_no_permission_is_one_line_with_what_to_do(code, advice, tmp_path, capsys,
                                                                  monkeypatch):
    import errno

    import sat_core.train as tr

    assert code in (errno.ENOSPC, errno.EACCES)
    path = tmp_path / "run" / "last.pt"

    def disk_full(*args, **kw):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(tr, "train", disk_full)
    assert tr.main(["--out-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0]
    assert os.strerror(code) in err[0] and advice in err[0] and "Traceback" not in err[0]
