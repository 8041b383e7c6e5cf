"""The Colab install path, run here: the notebooks' first cell on a machine that already has torch.

Colab ships torch (and ipykernel) outside any virtual environment; the first cell of every chapter
runs ``%pip install "sat_core[eval,widgets] @ git+<repository>@<branch>"`` when ``google.colab``
is imported. This test builds sat_core's wheel, makes a fresh virtual environment whose only
packages are a "system" folder of links to this environment's torch, torchvision and ipykernel
(with everything they need, as Colab's preinstalled packages are), simulates Colab with a fake
``google/colab/__init__.py`` imported when the kernel starts, and runs chapter 4 at smoke size
there with papermill. The install cell is taken as it is, with only the ``git+URL@BRANCH`` of the
book's repository replaced by the wheel's ``file://`` URL (pip cannot reach GitHub here). Then:
pip kept that torch (same version, same files, nothing installed over it), sat_core came from the
wheel with the cell's extras, and the chapter ran without an error.

Slow (a minute or two: pip installs the other dependencies from its cache or the registry), so it
has its own marker: ``make test-colab`` runs it, ``make test`` does not (``.ci/run`` does both).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

from sat_core.book.build import NotebookFailed, execute_notebook
from sat_core.book.repository import PATTERNS, read_repository

pytestmark = [pytest.mark.colab, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "notebooks" / "04_soft_attention.ipynb"
PREINSTALLED = ("torch", "torchvision", "ipykernel")  # what Colab has and the chapter needs
KERNEL = "colab-sim"
SITE = Path(sysconfig.get_paths()["purelib"])
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no sat_core of ours


def run_in(python: Path, code: str) -> dict:
    """Run ``code`` (which prints one JSON object) with ``python``; return the object."""
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                         env=CLEAN_ENV, cwd=python.parents[2])  # not the repository's root
    return json.loads(out.stdout)


def closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require (extras left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9._-]+", req)[0])
    return list(seen.values())


def link_system_packages(names: tuple[str, ...], dest: Path) -> None:
    """``dest``: links to the top-level files and folders of ``closure(names)`` (Colab's
    dist-packages, in miniature; nothing is copied)."""
    dest.mkdir(parents=True)
    for dist in closure(names):
        for file in dist.files or []:
            top = Path(file).parts[0]
            src = Path(dist.locate_file(top))
            if top in ("..", "__pycache__") or not src.exists() or (dest / top).exists():
                continue
            (dest / top).symlink_to(src, target_is_directory=src.is_dir())


def build_wheel(out: Path) -> Path:
    """sat_core's wheel, built from a copy of the sources (the tree gets no build/ folder)."""
    src = out / "src"
    shutil.copytree(ROOT / "sat_core", src / "sat_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(src)], check=True)
    (wheel,) = out.glob("sat_core-*.whl")
    return wheel


def make_colab_env(tmp: Path) -> Path:
    """A fresh venv whose "system" packages are :data:`PREINSTALLED`, with a Jupyter kernel that
    imports a fake ``google.colab`` at start; returns the venv's python."""
    env = tmp / "colab-env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    site = Path(run_in(python, "import json, sysconfig; "
                       "print(json.dumps(sysconfig.get_paths()['purelib']))"))
    link_system_packages(PREINSTALLED, tmp / "dist-packages")
    (site / "colab_dist_packages.pth").write_text(f"{tmp / 'dist-packages'}\n")
    fake = tmp / "fake-colab" / "google" / "colab"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('"""Stands for Colab\'s module in tests."""\n')
    spec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.exec_lines=['import google.colab']"],
        "display_name": "Python 3 (simulated Colab)", "language": "python",
        "env": {"PYTHONPATH": str(tmp / "fake-colab")},  # not the test's own sat_core
    }
    kernel = tmp / "jupyter" / "kernels" / KERNEL
    kernel.mkdir(parents=True)
    (kernel / "kernel.json").write_text(json.dumps(spec))
    return python


def colab_notebook(src: Path, dst: Path, wheel: Path) -> str:
    """``src`` with its install line pointing at ``wheel``; returns the new install line."""
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code")
    repo = read_repository(ROOT)
    spec = PATTERNS["pip"].search(cell.source)
    assert spec and repo.same_as(spec["owner"], spec["name"], spec["branch"])
    cell.source = cell.source.replace(spec[0], wheel.resolve().as_uri())
    nbformat.write(nb, dst)
    return next(ln for ln in cell.source.splitlines() if "pip install" in ln)


def probe(python: Path) -> dict:
    code = ("import json, torch, sat_core, pycocoevalcap, ipywidgets, importlib.metadata as m; "
            "print(json.dumps({'torch': torch.__version__, 'torch_file': torch.__file__, "
            "'sat_core': sat_core.__file__, 'direct_url': m.distribution('sat_core')"
            ".read_text('direct_url.json')}))")
    return run_in(python, code)


def test_the_install_cell_keeps_colabs_torch_and_the_chapter_runs(tmp_path, monkeypatch):
    import torch

    wheel = build_wheel(tmp_path / "wheel")
    python = make_colab_env(tmp_path)
    before = probe_torch(python)
    assert before["version"] == torch.__version__  # the "system" torch is visible, as on Colab
    line = colab_notebook(CHAPTER, tmp_path / CHAPTER.name, wheel)
    assert re.search(r'%pip install --quiet "sat_core\[eval,widgets\] @ file://', line), line

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    params = {"smoke": True, "device": "cpu", "artifacts_dir": str(tmp_path / "artifacts")}
    try:
        execute_notebook(tmp_path / CHAPTER.name, tmp_path / "out" / CHAPTER.name, params,
                         cwd=tmp_path, kernel_name=KERNEL, timeout=600)
    except NotebookFailed as err:
        pytest.fail(str(err), pytrace=False)

    after = probe(python)
    assert after["torch"] == before["version"] and after["torch_file"] == before["file"]
    site = Path(after["sat_core"]).parents[1]
    assert site.is_relative_to(tmp_path / "colab-env"), after  # sat_core from the wheel...
    assert wheel.name in json.loads(after["direct_url"])["url"]  # ...that the cell installed
    assert not list(site.glob("torch*")), "pip installed a torch over Colab's"
    assert not (site / "torch").exists() and SITE.resolve() not in Path(after["sat_core"]).parents


def probe_torch(python: Path) -> dict:
    return run_in(python, "import json, torch; print(json.dumps({'version': torch.__version__, "
                          "'file': torch.__file__}))")
