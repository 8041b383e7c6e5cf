"""Keeping a chapter's artifacts on Google Drive when it runs on Colab.

A Colab runtime is recycled after a disconnect or a few idle hours, and its disk with it: the
checkpoints chapter 6 trains for chapters 8-9, the feature caches, and a training run of hours
in chapter 10 would be lost. Google Drive, mounted at ``/content/drive``, survives. Chapters
6-10 have one parameter, ``keep_on_drive``, and resolve their ``artifacts_dir`` with
:func:`artifacts_home` right after the parameters cell:

* ``"auto"`` (the default): on Colab with Drive mounted, use
  ``/content/drive/MyDrive/show-attend-tell/artifacts``; on Colab without Drive, stay local and
  print one line saying how to keep them; anywhere else, ``artifacts_dir`` unchanged;
* ``"yes"``: use Drive, mounting it first if needed (Colab asks for permission); where that is
  impossible, stop with a :class:`DriveUnavailable` error that says what to do;
* ``"no"``: ``artifacts_dir`` unchanged, always.

Off Colab nothing changes, so ``make book`` and the tests see the same paths as before. Colab is
recognised by its module ``google.colab`` being imported (it always is in a Colab kernel, and
the install cell tests the same thing); the tests inject ``colab``, ``mount_root`` and ``mount``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from sat_core.errors import UserError

MOUNT_ROOT = Path("/content/drive")  # where Colab mounts Google Drive
BOOK_FOLDER = "show-attend-tell"  # the book's folder in "My Drive"
CHOICES = ("auto", "yes", "no")

__all__ = ["BOOK_FOLDER", "CHOICES", "MOUNT_ROOT", "DriveUnavailable", "artifacts_home",
           "drive_folder", "drive_mounted", "on_colab"]


class DriveUnavailable(UserError):
    """``keep_on_drive = "yes"`` and Google Drive cannot be used; the message says what to do."""


def on_colab() -> bool:
    """Whether this Python runs in a Google Colab kernel (its ``google.colab`` is imported)."""
    return "google.colab" in sys.modules


def drive_folder(mount_root: str | os.PathLike[str] = MOUNT_ROOT) -> Path:
    """The book's folder on a mounted Drive: ``<mount_root>/MyDrive/show-attend-tell``."""
    return Path(mount_root) / "MyDrive" / BOOK_FOLDER


def drive_mounted(mount_root: str | os.PathLike[str] = MOUNT_ROOT) -> bool:
    """Whether Google Drive is mounted at ``mount_root`` (its ``MyDrive`` folder is there)."""
    return (Path(mount_root) / "MyDrive").is_dir()


def _colab_mount(mount_root: Path) -> None:
    """Mount Drive with Colab's own function (it asks the reader for permission)."""
    from google.colab import drive  # only importable on Colab

    drive.mount(str(mount_root))


def _choice(keep_on_drive: str | bool) -> str:
    if keep_on_drive is True or keep_on_drive is False:
        return "yes" if keep_on_drive else "no"
    choice = str(keep_on_drive).strip().lower()
    if choice not in CHOICES:
        raise ValueError(f'keep_on_drive must be "auto", "yes" or "no", got {keep_on_drive!r}')
    return choice


def artifacts_home(
    artifacts_dir: str | os.PathLike[str],
    keep_on_drive: str | bool = "auto",
    *,
    colab: bool | None = None,
    mount_root: str | os.PathLike[str] = MOUNT_ROOT,
    mount: Callable[[Path], None] | None = None,
) -> str:
    """Where a chapter keeps its artifacts: ``artifacts_dir``, or its folder on Google Drive.

    ``keep_on_drive`` is ``"auto"``, ``"yes"`` or ``"no"`` (``True``/``False`` mean yes/no); see
    the module's docstring. The Drive folder is ``<mount_root>/MyDrive/show-attend-tell/artifacts``,
    created when missing. ``colab`` (default: :func:`on_colab`) and ``mount`` (default: Colab's
    ``drive.mount``) are there for the tests. Returns a string, as the parameter came in, so that a
    chapter's later ``Path(artifacts_dir)`` and messages stay as they were off Colab.
    """
    choice = _choice(keep_on_drive)
    local = os.fspath(artifacts_dir)
    if choice == "no":
        return local
    colab = on_colab() if colab is None else colab
    root = Path(mount_root)
    if not colab:
        if choice == "yes":
            raise DriveUnavailable(
                'keep_on_drive = "yes" needs Google Colab (its Drive mount); here, set '
                f'keep_on_drive = "no" and the artifacts stay in {local}')
        return local
    if not drive_mounted(root):
        if choice == "auto":
            print(f'Google Drive is not mounted: artifacts stay in {local} and are lost with this '
                  'runtime; to keep them, set keep_on_drive = "yes" (mounts Drive) and run again')
            return local
        try:
            (mount or _colab_mount)(root)
        except Exception as err:  # Colab raises plain exceptions (refused, timed out, ...)
            raise DriveUnavailable(
                f"could not mount Google Drive at {root} ({type(err).__name__}: {err}); run "
                "`from google.colab import drive; drive.mount('/content/drive')` in a cell and "
                'accept, or set keep_on_drive = "no" to keep the artifacts on this runtime'
            ) from err
        if not drive_mounted(root):
            raise DriveUnavailable(
                f"Google Drive was mounted but {root / 'MyDrive'} is missing; remount it with "
                "`drive.mount('/content/drive', force_remount=True)`, or set "
                'keep_on_drive = "no"')
    home = drive_folder(root) / "artifacts"
    home.mkdir(parents=True, exist_ok=True)
    print(f'artifacts on Google Drive: {home} (keep_on_drive = "no": {local}, lost with the '
          "runtime)")
    return str(home)
