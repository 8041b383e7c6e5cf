"""Paths as a reader should see them: relative to where they run, never the build machine's.

A page of the book is read on another machine than the one that built it, so an output such as
``/tmp/sat-ch02-pz0e_yct`` or ``/home/ci/repo/artifacts/...`` tells the reader nothing and leaks
the build machine. Chapters therefore keep their scratch files under the artifacts folder they
already share (:func:`scratch_dir`), and messages show paths with :func:`shown_path`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def shown_path(path: str | os.PathLike[str], max_up: int = 2) -> str:
    """``path`` for a message: relative to the working directory when it is inside it or at most
    ``max_up`` folders above it (``../artifacts/features``), else under ``~`` when it is in the
    home folder (``~/.cache/torch``), else as it is."""
    p = Path(path).expanduser()
    absolute = p if p.is_absolute() else Path.cwd() / p
    try:
        rel = Path(os.path.relpath(absolute, Path.cwd()))
    except ValueError:  # another drive on Windows
        rel = None
    if rel is not None and rel.parts[:max_up + 1] != ("..",) * (max_up + 1):
        return str(rel)
    home = Path.home()
    if absolute.is_relative_to(home):
        return str(Path("~") / absolute.relative_to(home))
    return str(path)


def scratch_dir(artifacts_dir: str | os.PathLike[str], name: str) -> Path:
    """An empty folder ``<artifacts_dir>/scratch/<name>`` for a chapter's throw-away files.

    Emptied on every call, so a chapter run twice starts from the same state; it is given back
    as the relative path it was asked for, so what a chapter prints stays readable anywhere.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"scratch_dir: name must be one folder name, got {name!r}")
    path = Path(artifacts_dir) / "scratch" / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


__all__ = ["scratch_dir", "shown_path"]
