"""Build the executable book: papermill runs the chapters, Jupyter Book 1.x renders them.

``python -m sat_core.book build`` (what ``make book`` runs):

1. stage a copy of the book in ``_build/stage/`` (``_config.yml``, ``_toc.yml``, ``book/``,
   ``notebooks/``), so the sources are never touched;
2. execute every chapter notebook of ``_toc.yml``, in order, with papermill at its default
   parameters (cwd = its staged folder, kernel = this environment's ``python3``), tag the
   ``injected-parameters`` cell ``remove-cell``, and record the run times in
   ``_build/notebook_times.json``;
3. run ``jupyter-book build`` on the staged copy (``execute_notebooks: 'off'``: the pages show the
   papermill outputs) with ``-W -n --keep-going``; the site lands in ``_build/html``.

4. build the student edition into ``_build/html-student`` (:func:`build_student`): the executed
   notebooks of step 2 without solutions (:func:`sat_core.book.student.student_notebook` with
   ``keep_outputs``: nothing is executed again), staged in ``_build/stage-student`` with the same
   ``_config.yml``, ``_toc.yml`` and pages, except that the Colab buttons open the committed
   student notebooks (``student/notebooks/``, written by ``make student``), the instructor's
   guide is replaced by a page about the edition and the root page says which edition it is.
   ``python -m sat_core.book build-student`` builds only this edition from ``_build/stage``.

Checkpoints: chapters read ``artifacts_dir = "../artifacts"`` (relative to ``notebooks/``). The
stage links ``_build/stage/artifacts`` (and ``data``) to the repository's own folders, so running
the chapters in order lets chapter 6's checkpoint serve chapters 8-9, in the book as in JupyterLab.

``python -m sat_core.book set-repository URL [--branch B]`` points the book at its public
repository: ``_config.yml`` holds the setting, every copy is rewritten (see
:mod:`sat_core.book.repository`).

``python -m sat_core.book browser-test`` opens the built site in headless Chromium
(``tests/site/test_site.py``, run by pytest). MathJax normally comes from a CDN; the test serves a
local copy fetched once with ``npm pack mathjax@3`` into ``_build/mathjax/`` (see
:func:`ensure_mathjax`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sat_core.errors import ArgumentParser, debug_enabled, report

ROOT = Path(__file__).resolve().parents[2]
KERNEL_NAME = "python3"
CELL_TIMEOUT_S = 4 * 3600  # per cell: chapter 10 trains for real on a GPU
STAGE_LINKS = ("artifacts", "data")  # shared with the sources, never copied
INJECTED_TAG = "injected-parameters"
MATHJAX_SPEC = "mathjax@3"


class BookError(RuntimeError):
    """The book cannot be built; the message says what is wrong and what to do next."""


class NotebookFailed(BookError):
    """A chapter raised while papermill executed it."""

    def __init__(
        self, notebook: str, output: Path, cell: int | None, source: str, ename: str, evalue: str
    ) -> None:
        self.notebook = notebook
        self.output = output
        self.cell = cell
        self.ename = ename
        self.evalue = evalue
        where = f"cell In [{cell}]" if cell is not None else "a cell"
        first = next((ln.strip() for ln in (source or "").splitlines() if ln.strip()), "")
        if first:
            where += f" (starting {first[:60]!r})"
        super().__init__(
            f"notebook {notebook} failed in {where}: {ename}: {evalue}\n"
            f"the executed notebook, with the full traceback, is at {output}"
        )


# --------------------------------------------------------------------------- table of contents


def toc_entries(root: Path = ROOT) -> list[str]:
    """Every ``file:`` of ``_toc.yml`` (root first, then parts/chapters/sections, in order)."""
    toc_path = Path(root) / "_toc.yml"
    if not toc_path.exists():
        raise BookError(f"{toc_path} not found: run from the repository root (or pass --root)")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    out: list[str] = [toc["root"]] if "root" in toc else []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                if key in node:
                    walk(node[key])

    walk({k: v for k, v in toc.items() if k != "root"})
    return out


def resolve_entry(root: Path, entry: str) -> Path | None:
    """The source file of a toc entry (``.ipynb`` or ``.md``), or None when it is missing."""
    for suffix in (".ipynb", ".md"):
        path = Path(root) / f"{entry}{suffix}"
        if path.exists():
            return path
    return None


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks listed in ``_toc.yml``, in reading (and execution) order."""
    out = []
    for entry in toc_entries(root):
        path = resolve_entry(root, entry)
        if path is None:
            raise BookError(
                f"_toc.yml lists {entry!r} but neither {entry}.ipynb nor {entry}.md exists; "
                "add the file or remove the entry"
            )
        if path.suffix == ".ipynb":
            out.append(path)
    return out


# --------------------------------------------------------------------------- executing notebooks


def kernel_python(kernel_name: str = KERNEL_NAME) -> str:
    """The interpreter the Jupyter kernel ``kernel_name`` starts (first word of its argv)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        return KernelSpecManager().get_kernel_spec(kernel_name).argv[0]
    except NoSuchKernel as err:
        raise BookError(
            f"no Jupyter kernel named {kernel_name!r}: run `make setup` (it installs this "
            "environment's kernel with `python -m ipykernel install --sys-prefix --name python3`)"
        ) from err


def check_kernel(kernel_name: str = KERNEL_NAME) -> None:
    """Warn when the kernel would run another Python than this environment's."""
    exe = kernel_python(kernel_name)
    if exe in ("python", "python3", sys.executable):
        return
    try:
        same = Path(exe).resolve().parent == Path(sys.executable).resolve().parent
    except OSError:
        same = False
    if not same:
        print(
            f"warning: kernel {kernel_name!r} runs {exe}, not this environment's "
            f"{sys.executable}; if imports fail, remove the user-level kernel "
            f"(`jupyter kernelspec remove {kernel_name}`) or re-run `make setup`",
            file=sys.stderr,
        )


def tag_injected_cell(path: Path, tag: str = "remove-cell") -> bool:
    """Tag papermill's ``injected-parameters`` cell with ``tag``; True when there was one."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    found = False
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if INJECTED_TAG in tags:
            found = True
            if tag not in tags:
                tags.append(tag)
    if found:
        nbformat.write(nb, path)
    return found


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widget_views(path: Path) -> int:
    """Remove the outputs that only a live kernel can draw (ipywidgets views); return how many.

    papermill keeps no widget state, so on a static page such an output is an empty box: a
    tqdm progress bar leaves a blank gap, a slider shows nothing. Their ``text/plain`` copy is the
    widget's *first* state ("0%| | 0/322"), not a better fallback, so the whole output goes. What
    the page should show instead is printed (a training log) or drawn in advance
    (:mod:`sat_core.stepper`).
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
        dropped += len(cell.outputs) - len(keep)
        cell.outputs = keep
    if dropped:
        nbformat.write(nb, path)
    return dropped


HEADLESS_PARAMETERS: dict[str, Any] = {"live_widgets": False}
"""Parameters every papermill run passes to the notebooks that declare them: no frontend is
there to draw a live ipywidgets control, and a cell that builds one exchanges widget messages
with a client that has no use for them (where pyzmq's asyncio poll misses the wake-up for the
cell's reply, papermill waits out the whole cell timeout: 600 s once in the tests' chapter 9)."""


def headless_parameters(path: Path) -> dict[str, Any]:
    """The :data:`HEADLESS_PARAMETERS` that the notebook ``path`` declares in its parameters
    cell (papermill warns about, and injects anyway, parameters a notebook does not declare)."""
    import papermill as pm

    declared = pm.inspect_notebook(str(path))
    return {k: v for k, v in HEADLESS_PARAMETERS.items() if k in declared}


def execute_notebook(
    src: Path,
    dst: Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: Path | None = None,
    kernel_name: str = KERNEL_NAME,
    timeout: float = CELL_TIMEOUT_S,
) -> float:
    """Execute ``src`` with papermill into ``dst``; return the wall time in seconds.

    ``cwd`` defaults to ``dst``'s folder. :data:`HEADLESS_PARAMETERS` that ``src`` declares come
    first, ``parameters`` override them. On an error, raises :class:`NotebookFailed` naming the
    notebook, the cell and the exception; papermill has then written the failed notebook to ``dst``.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise BookError(f"notebook {src} not found")
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(src),
            str(dst),
            parameters={**headless_parameters(src), **(parameters or {})},
            kernel_name=kernel_name,
            cwd=str(cwd or dst.parent),
            progress_bar=False,
            execution_timeout=timeout,
            # the kernel's own log (e.g. "running over TCP without encryption") is noise here
            extra_arguments=["--log-level=CRITICAL"],
        )
    except PapermillExecutionError as err:
        raise NotebookFailed(
            src.name, dst, err.exec_count, err.source, err.ename, err.evalue
        ) from None
    seconds = time.perf_counter() - t0
    tag_injected_cell(dst)
    drop_widget_views(dst)
    return seconds


def read_notebook(path: Path) -> Any:
    """``nbformat.read(path)``; :class:`BookError` naming the file if it is missing or is not a
    notebook (not JSON, not UTF-8, not the notebook format)."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise BookError(f"{path} not found — check the path")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as e:  # noqa: BLE001 (nbformat raises many kinds: each names no file)
        reason = " ".join(str(e).split())[:120] or type(e).__name__
        raise BookError(f"{path} is not a readable notebook ({type(e).__name__}: {reason}) — "
                        "restore it (e.g. git checkout -- FILE) or leave it out") from None


def clean_notebook(path: Path) -> bool:
    """Strip outputs, execution counts, widget state and papermill metadata; True if changed.

    What ``tests/test_notebooks.py`` asks of a committed notebook; the command line is
    ``python -m sat_core.book clean NOTEBOOK...``.
    """
    import nbformat

    path = Path(path)
    nb = read_notebook(path)
    before = nbformat.writes(nb)
    for key in ("widgets", "papermill"):
        nb.metadata.pop(key, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    after = nbformat.writes(nb)
    if after != before:
        nbformat.write(nb, path)
    return after != before


# --------------------------------------------------------------------------- staging


STUDENT = "student"  # the student edition: _build/stage-student -> _build/html-student


@dataclass
class Stage:
    """The staged copy of the book that papermill and Jupyter Book work in.

    ``edition`` is "" for the book itself (``_build/stage`` -> ``_build/html``) or
    :data:`STUDENT` (``_build/stage-student`` -> ``_build/html-student``).
    """

    root: Path  # the repository
    build: Path  # <root>/_build
    edition: str = ""

    @property
    def suffix(self) -> str:
        return f"-{self.edition}" if self.edition else ""

    @property
    def dir(self) -> Path:
        return self.build / f"stage{self.suffix}"

    @property
    def html(self) -> Path:
        return self.build / f"html{self.suffix}"

    @property
    def output(self) -> Path:
        """``--path-output`` of jupyter-book, which writes ``<output>/_build/html``: the
        repository for the book (so ``_build/html``), a folder of its own for an edition."""
        return self.build.parent if not self.edition else self.build / f"jb{self.suffix}"

    @property
    def times(self) -> Path:
        return self.build / "notebook_times.json"

    def staged(self, src: Path) -> Path:
        return self.dir / Path(src).relative_to(self.root)


def prepare_stage(stage: Stage) -> None:
    """Copy the book's sources into the stage (chapter notebooks are written by papermill)."""
    root, sdir = stage.root, stage.dir
    sdir.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, sdir / name)
    if (sdir / "book").exists():
        shutil.rmtree(sdir / "book")
    if (root / "book").exists():
        shutil.copytree(root / "book", sdir / "book")
    # Everything of notebooks/ but the notebooks themselves (figures, small data files).
    if (root / "notebooks").exists():
        shutil.copytree(
            root / "notebooks",
            sdir / "notebooks",
            ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"),
            dirs_exist_ok=True,
        )
    for name in STAGE_LINKS:
        target = (root / name).resolve()
        target.mkdir(parents=True, exist_ok=True)
        link = sdir / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and link.resolve() == target:
                continue
            if link.is_dir() and not link.is_symlink():
                shutil.rmtree(link)
            else:
                link.unlink()
        link.symlink_to(target, target_is_directory=True)


def load_times(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def format_times(times: dict[str, float]) -> str:
    """A small text table of notebook run times (seconds), with the total."""
    width = max([len(n) for n in times] + [len("notebook")])
    lines = [f"{'notebook':<{width}}  {'seconds':>8}", f"{'-' * width}  {'-' * 8}"]
    lines += [f"{name:<{width}}  {sec:8.1f}" for name, sec in times.items()]
    lines += [f"{'-' * width}  {'-' * 8}", f"{'total':<{width}}  {sum(times.values()):8.1f}"]
    return "\n".join(lines)


def execute_chapters(
    stage: Stage,
    notebooks: Sequence[Path],
    parameters: dict[str, Any],
    *,
    timeout: float = CELL_TIMEOUT_S,
) -> dict[str, float]:
    """Execute ``notebooks`` (in order) into the stage; return {notebook stem: seconds}."""
    from tqdm.auto import tqdm

    times: dict[str, float] = {}
    bar = tqdm(notebooks, desc="executing notebooks", unit="nb", file=sys.stdout)
    for src in bar:
        bar.set_postfix_str(src.stem)
        dst = stage.staged(src)
        times[src.stem] = execute_notebook(src, dst, parameters, cwd=dst.parent, timeout=timeout)
        tqdm.write(f"  {src.relative_to(stage.root)}: {times[src.stem]:.1f} s")
    return times


def jupyter_book_command(stage: Stage, strict: bool = True) -> list[str]:
    """The ``jupyter-book build`` command line; its HTML lands in ``<output>/_build/html``.

    ``--path-output P`` makes Jupyter Book write ``P/_build/html``: P is ``build``'s parent for
    the book, so the site is ``<build>/html`` (see :attr:`Stage.output`).
    """
    if stage.build.name != "_build":
        raise BookError(f"the build folder must be called _build (got {stage.build})")
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(stage.dir)]
    cmd += ["--path-output", str(stage.output), "--builder", "html", "--all"]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    return cmd


def build(
    root: Path = ROOT,
    *,
    execute: bool = True,
    only: Sequence[str] = (),
    parameters: dict[str, Any] | None = None,
    strict: bool = True,
    timeout: float = CELL_TIMEOUT_S,
    student: bool = True,
) -> Path:
    """Execute the chapters and build the HTML; return the ``_build/html`` folder.

    With ``student`` (the default) the student edition follows (:func:`build_student`)."""
    root = Path(root).resolve()
    stage = Stage(root, root / "_build")
    chapters = chapter_notebooks(root)
    if only:
        wanted = set(only)
        unknown = wanted - {p.stem for p in chapters} - {p.name for p in chapters}
        if unknown:
            names = ", ".join(p.stem for p in chapters)
            raise BookError(f"--only: unknown notebook(s) {sorted(unknown)}; known: {names}")
        run = [p for p in chapters if p.stem in wanted or p.name in wanted]
    else:
        run = list(chapters) if execute else []
    prepare_stage(stage)

    if run:
        check_kernel()
        params = dict(parameters or {})
        times = execute_chapters(stage, run, params, timeout=timeout)
        record = load_times(stage.times) if only else {}
        record.setdefault("notebooks", {}).update({k: round(v, 2) for k, v in times.items()})
        record.setdefault("parameters", {}).update({k: params for k in times})
        stage.times.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print("\nnotebook run times (papermill):")
        print(format_times(times))
        print(f"(saved to {stage.times.relative_to(root)})\n")

    for src in chapters:  # pages without a fresh execution
        dst = stage.staged(src)
        if not dst.exists():
            print(f"note: {src.name} has not been executed; its page will have no outputs")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)

    run_jupyter_book(stage, strict=strict)
    if student:
        build_student(root, strict=strict)
    return stage.html


def run_jupyter_book(stage: Stage, *, strict: bool = True) -> Path:
    """``jupyter-book build`` of ``stage.dir`` into ``stage.html``; return ``stage.html``."""
    root = stage.root
    cmd = jupyter_book_command(stage, strict=strict)
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise BookError(
            f"jupyter-book build failed (exit {proc.returncode}); the warnings/errors are listed "
            "above. Fix them in the sources (book/, notebooks/), not in "
            f"{stage.dir.relative_to(root)}"
        )
    built = stage.output / "_build" / "html"
    if built != stage.html and built.is_dir():  # an edition: move its site into place
        shutil.rmtree(stage.html, ignore_errors=True)
        built.rename(stage.html)
    index = stage.html / "index.html"
    if not index.exists():
        raise BookError(f"jupyter-book finished but {index} is missing")
    print(f"built {stage.html.relative_to(root)} in {time.perf_counter() - t0:.1f} s")
    return stage.html


# --------------------------------------------------------------------------- student edition

STUDENT_NOTE = """:::{note}
This is the **student edition** of the book: each exercise is an open cell for you to fill in
(its check tells you whether your answer is right), and the answers to the questions are left
out. The Colab button of a chapter opens its notebook without solutions.
:::
"""

STUDENT_GUIDE = """# {title}

This is the student edition of the book. It shows the same chapters, run with the same
parameters, with three differences:

* every exercise is an open cell: the worked solution is replaced by
  `raise NotImplementedError("Your code here")`, and the check call below it stays, so running
  the cell with your code tells you whether it is right and, if not, what is wrong;
* the answers to the questions of the "think" exercises are left out;
* the *Colab* entry of a chapter's rocket button opens the chapter's notebook without solutions
  (the repository's `{path}`).

The instructor's guide (how exercises are written, handed out and graded) is in the instructor's
copy of the book.
"""


def student_config(text: str) -> str:
    """The student edition's ``_config.yml``: the same settings, the title marked as the student
    edition, and ``repository: path_to_book`` moved into
    :data:`sat_core.book.student.STUDENT_DIR`, so a chapter's Colab button opens
    ``student/notebooks/NN.ipynb`` of the same repository and branch (Jupyter Book builds
    ``{colab}/github/{org}/{repo}/blob/{branch}/{path_to_book}/{page}.ipynb``)."""
    from sat_core.book.student import STUDENT_DIR

    config = yaml.safe_load(text) or {}
    repo = config.get("repository")
    if not isinstance(repo, dict) or not repo.get("url"):
        raise BookError("_config.yml has no `repository: url:`, so the student edition's Colab "
                        "buttons would open nothing: run `python -m sat_core.book set-repository`")
    base = str(repo.get("path_to_book") or "").strip("/")
    repo["path_to_book"] = f"{base}/{STUDENT_DIR}" if base else STUDENT_DIR
    config["title"] = f"{config.get('title', 'The book')} (student edition)"
    return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)


def student_guide(instructors_md: str) -> str:
    """The page that replaces the instructor's guide in the student edition (same title)."""
    from sat_core.book.student import STUDENT_DIR

    m = re.search(r"^# (.+)$", instructors_md, flags=re.M)
    return STUDENT_GUIDE.format(title=m.group(1).strip() if m else "For instructors",
                                path=f"{STUDENT_DIR}/notebooks/")


def with_student_note(page_md: str) -> str:
    """``page_md`` with :data:`STUDENT_NOTE` after its first ``# `` title (or at the top)."""
    m = re.search(r"^# .+\n", page_md, flags=re.M)
    at = m.end() if m else 0
    return page_md[:at] + "\n" + STUDENT_NOTE + "\n" + page_md[at:]


def stage_student(stage: Stage, student: Stage) -> dict[str, int]:
    """Copy the executed ``stage`` into ``student``'s folder as the student edition.

    Chapters: :func:`sat_core.book.student.student_notebook` with ``keep_outputs`` (solutions and
    their outputs, answer dropdowns and toggle tags removed; every other output kept). Pages:
    ``book/instructors.md`` replaced by :func:`student_guide`, the root page given
    :data:`STUDENT_NOTE`; ``_config.yml`` by :func:`student_config`. Links (``artifacts``,
    ``data``) stay links. Returns {chapter stem: code solutions removed}.
    """
    import nbformat

    from sat_core.book.student import student_notebook

    src, dst = stage.dir, student.dir
    entries = toc_entries(src) if (src / "_toc.yml").exists() else []
    missing = [e for e in entries if resolve_entry(src, e) is None] or (
        [] if entries else ["_toc.yml"])
    if missing:
        raise BookError(f"{src} holds no executed book ({', '.join(missing)} missing): run "
                        "`make book` (or `python -m sat_core.book build`) first")
    chapters = chapter_notebooks(src)
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("*.ipynb"))
    removed: dict[str, int] = {}
    for path in chapters:
        rel = path.relative_to(src)
        nb = read_notebook(path)
        if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
            print(f"note: {rel} has no outputs (not executed?); its student page will have none")
        page, removed[path.stem] = student_notebook(nb, rel.as_posix(), keep_outputs=True)
        nbformat.write(page, dst / rel)
    (dst / "_config.yml").write_text(
        student_config((src / "_config.yml").read_text(encoding="utf-8")), encoding="utf-8")
    guide = dst / "book" / "instructors.md"
    if guide.exists():
        guide.write_text(student_guide(guide.read_text(encoding="utf-8")), encoding="utf-8")
    root_page = resolve_entry(dst, toc_entries(dst)[0])
    if root_page is not None and root_page.suffix == ".md":
        root_page.write_text(with_student_note(root_page.read_text(encoding="utf-8")),
                             encoding="utf-8")
    return removed


def build_student(root: Path = ROOT, *, strict: bool = True) -> Path:
    """Build the student edition into ``_build/html-student`` from the executed
    ``_build/stage`` (nothing is executed); return that folder.

    Warns when the committed student notebooks that its Colab buttons open
    (``student/notebooks/``) do not match ``notebooks/`` (``make student`` updates them).
    """
    from sat_core.book.student import student_copy_drift

    root = Path(root).resolve()
    stage = Stage(root, root / "_build")
    student = Stage(root, root / "_build", STUDENT)
    t0 = time.perf_counter()
    removed = stage_student(stage, student)
    print(f"staged the student edition in {student.dir.relative_to(root)}: "
          f"{sum(removed.values())} solution(s) removed from {len(removed)} chapter(s)")
    for problem in student_copy_drift(root):
        print(f"warning: the student edition's Colab buttons open {problem}", file=sys.stderr)
    run_jupyter_book(student, strict=strict)
    print(f"student edition: {time.perf_counter() - t0:.1f} s in all")
    return student.html


# --------------------------------------------------------------------------- browser test


def ensure_mathjax(build_dir: Path = ROOT / "_build") -> Path:
    """A local copy of MathJax 3 (the CDN is unreachable in tests); return its package folder.

    ``npm pack mathjax@3`` downloads the package tarball from the npm registry once; it is
    unpacked to ``<build_dir>/mathjax/package`` (holding ``es5/tex-mml-chtml.js``, the file
    Sphinx loads from ``https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js``).
    """
    build_dir = Path(build_dir)
    package = build_dir / "mathjax" / "package"
    if (package / "es5" / "tex-mml-chtml.js").exists():
        return package
    npm = shutil.which("npm")
    if npm is None:
        raise BookError(
            "npm is needed once to fetch MathJax 3 for the browser test (apt-get install npm), "
            f"or unpack the mathjax@3 npm package to {package} yourself"
        )
    build_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [npm, "pack", MATHJAX_SPEC, "--pack-destination", str(build_dir), "--silent"],
        capture_output=True,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise BookError(f"`npm pack {MATHJAX_SPEC}` failed: {proc.stderr.strip()[-500:]}")
    tarball = build_dir / lines[-1].strip()
    tmp = build_dir / "mathjax.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(package.parent, ignore_errors=True)
    tmp.rename(package.parent)
    tarball.unlink()
    if not (package / "es5" / "tex-mml-chtml.js").exists():
        raise BookError(f"{tarball.name} has no es5/tex-mml-chtml.js: is it MathJax 3?")
    return package


def browser_test(root: Path = ROOT, pytest_args: Sequence[str] = ()) -> int:
    """Run ``tests/site`` with pytest against ``_build/html`` and ``_build/html-student``;
    return pytest's exit code."""
    root = Path(root).resolve()
    if not (root / "_build" / "html" / "index.html").exists():
        raise BookError("_build/html is missing: run `make book` first")
    if not (root / "_build" / f"html-{STUDENT}" / "index.html").exists():
        raise BookError(f"_build/html-{STUDENT} is missing: run `make book`, or "
                        "`python -m sat_core.book build-student` after a build without it")
    ensure_mathjax(root / "_build")
    cmd = [sys.executable, "-m", "pytest", str(root / "tests" / "site"), *pytest_args]
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=root, env={**os.environ, "SAT_BOOK_ROOT": str(root)}).returncode


# --------------------------------------------------------------------------- command line


def _clean(paths: Sequence[Path]) -> int:
    """``clean``: every notebook is read first, so one bad file (named, status 2) stops the
    command before any other is rewritten."""
    try:
        for path in paths:
            read_notebook(path)
    except BookError as err:
        if debug_enabled():
            raise
        return report(err)
    for path in paths:
        print(f"{path}: {'cleaned' if clean_notebook(path) else 'already clean'}")
    return 0


def add_set_repository_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``set-repository URL [--branch B]`` subcommand (see :mod:`sat_core.book.repository`)."""
    r = sub.add_parser(
        "set-repository",
        help="point the book at its public GitHub repository: _config.yml (Colab buttons), "
        "every notebook's install cell, README badges and links",
    )
    r.add_argument("url", help="https://github.com/OWNER/NAME")
    r.add_argument("--branch", default="main", help="the branch the book is published from "
                   "(default: %(default)s)")
    return r


def set_repository_command(args: argparse.Namespace) -> int:
    """Run ``set-repository``: list what changed; a bad URL or branch is one ``error:`` line,
    exit status 2."""
    from sat_core.book.repository import RepositoryError, read_repository, set_repository

    try:
        changed = set_repository(args.root, args.url, args.branch)
    except RepositoryError as err:
        if debug_enabled():
            raise
        return report(err)
    root, repo = Path(args.root).resolve(), read_repository(args.root)
    for path in changed:
        print(f"updated {path.resolve().relative_to(root)}")
    print(f"the book points at {repo.url}, branch {repo.branch}"
          + ("" if changed else " (nothing to change)") + f"; its site: {repo.pages}")
    return 0


def _add_build_parsers(sub: Any) -> None:
    """The ``build`` and ``build-student`` subcommands."""
    b = sub.add_parser("build", help="execute the notebooks and build _build/html, then the "
                       "student edition _build/html-student (see build-student)")
    b.add_argument(
        "--no-execute",
        action="store_true",
        help="do not run the notebooks: reuse the ones already executed in _build/stage",
    )
    b.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        default=(),
        help="execute only these notebooks (stem like 04_soft_attention); the others keep "
        "their last executed version",
    )
    b.add_argument(
        "--parameters",
        type=json.loads,
        default=None,
        metavar="JSON",
        help="papermill parameters for every notebook, e.g. '{\"smoke\": true}' (default: none, "
        "i.e. each notebook's own defaults)",
    )
    b.add_argument("--timeout", type=float, default=CELL_TIMEOUT_S,
                   help="per-cell timeout in seconds (default: %(default)s)")
    b.add_argument(
        "--no-strict", action="store_true", help="do not turn Sphinx warnings into errors"
    )
    b.add_argument("--no-student", action="store_true",
                   help="do not build the student edition (_build/html-student) afterwards")
    student_help = (
        "build only the student edition, _build/html-student, from the notebooks already "
        "executed in _build/stage (nothing runs again): solutions, their outputs and the "
        "answer dropdowns removed, exercise cells open, Colab buttons opening the committed "
        "student/notebooks/ (make student); `build` ends with it"
    )
    s = sub.add_parser("build-student", help=student_help, description=student_help)
    s.add_argument(
        "--no-strict", action="store_true", help="do not turn Sphinx warnings into errors"
    )


def _parser() -> argparse.ArgumentParser:
    """``python -m sat_core.book``'s command line (usage errors: one ``error:`` line, status 2)."""
    parser = ArgumentParser(
        prog="python -m sat_core.book",
        description="Execute the chapter notebooks with papermill and build the book with "
        "Jupyter Book 1.x (into _build/html, and its student edition without solutions into "
        "_build/html-student), or test the built sites in a headless browser.",
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="repository root (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_set_repository_parser(sub)
    _add_build_parsers(sub)
    t = sub.add_parser("browser-test", help="check the built site in headless Chromium (pytest)")
    t.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    c = sub.add_parser(
        "clean", help="strip outputs, execution counts and widget state from notebooks (in place)"
    )
    c.add_argument("notebooks", nargs="+", type=Path, metavar="NOTEBOOK")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "set-repository":
        return set_repository_command(args)

    try:
        if args.command == "build":
            if args.parameters is not None and not isinstance(args.parameters, dict):
                parser.error("--parameters must be a JSON object, e.g. '{\"smoke\": true}'")
            build(
                args.root,
                execute=not args.no_execute,
                only=args.only,
                parameters=args.parameters,
                strict=not args.no_strict,
                timeout=args.timeout,
                student=not args.no_student,
            )
            return 0
        if args.command == "build-student":
            build_student(args.root, strict=not args.no_strict)
            return 0
        if args.command == "clean":
            return _clean(args.notebooks)
        return browser_test(args.root, args.pytest_args)
    except BookError as err:
        if debug_enabled():
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
