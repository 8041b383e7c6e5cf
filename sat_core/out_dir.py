"""One training run per output folder: checks, a lock, and the leftovers of interrupted saves.

:func:`claim_out_dir` is what :mod:`sat_core.train` does with ``--out-dir`` before it loads any
data: the folder must be a folder (not a file) and writable; a lock file ``.lock`` holding the
process id keeps a second run out while the first one runs (two runs would interleave
``steps.csv`` and overwrite each other's checkpoints); a lock left by a process that no longer
runs (killed, machine rebooted) is taken over with a message. A run refreshes its lock's
modification time every :data:`HEARTBEAT_S` seconds, so the lock of another machine (a Colab runtime
that disconnected, its run folder on Google Drive) is known to be abandoned once it is older than
:data:`STALE_AFTER_S`, and is taken over too. The temporary files of a save that
was interrupted (``.last.pt.*.tmp``, ``.log.json.tmp``, ...) are removed. On the way out the lock
is released, and a folder the run created but never wrote to is removed again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sat_core.errors import UserError

LOCK_NAME = ".lock"
HEARTBEAT_S = 60.0  # a running run touches its lock this often
STALE_AFTER_S = 300.0  # another machine's lock untouched this long: its run is gone
# What a run writes atomically (a temporary ``.<name>.tmp`` or ``.<name>.<random>.tmp`` beside
# it, then a rename): only these temporary files are a run's own to clean up.
RUN_FILES = ("last.pt", "best.pt", "log.csv", "log.json", "run.json", "test_scores.json")


class OutDirError(UserError):
    """The output folder cannot be used: a file, read-only, or in use by another run."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (signal 0: nothing is sent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        return True
    except OSError:
        return False
    return True


def check_writable_dir(path: Path, flag: str = "--out-dir") -> None:
    """Raise :class:`OutDirError` if ``path`` (or the first of its parents that exists) is a
    file, or if a file cannot be created there. Writes nothing that stays."""
    if path.exists() and not path.is_dir():
        raise OutDirError(f"{flag} {path} is a file, not a folder — pick a folder (or move the "
                          "file away)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutDirError(f"{flag} {path}: {existing} is a file, not a folder — pick another "
                          f"{flag}")
    try:
        fd = os.open(existing / f".write-test-{os.getpid()}.tmp",
                     os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except OSError as e:
        raise OutDirError(f"{flag} {path}: cannot write in {existing} ({e.strerror}) — make it "
                          f"writable or pick another {flag}") from None
    os.close(fd)
    os.unlink(existing / f".write-test-{os.getpid()}.tmp")


def check_out_file(path: Path, flag: str = "--out", example: str = "report.json") -> None:
    """Raise :class:`OutDirError` unless a file can be written at ``path``: not an existing
    folder, in a folder that is (or can be made) writable. Writes nothing that stays."""
    path = Path(path)
    if path.is_dir():
        raise OutDirError(f"{flag} {path} is a folder — give a file name such as "
                          f"{path / example}")
    check_writable_dir(path.parent, flag=f"{flag}'s folder")


def _read_lock(lock: Path) -> dict:
    try:
        info = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}  # half written (killed while taking it) or unreadable: nobody holds it
    return info if isinstance(info, dict) else {}


def _try_lock(lock: Path) -> bool:
    """Create ``lock`` with this process's id; False if it exists already."""
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv}, f)
    return True


def acquire_lock(folder: Path) -> Path:
    """Lock ``folder`` for this process (``folder/.lock``); take over the lock of a process that
    no longer runs, with a message on stderr. :class:`OutDirError` if a live run holds it."""
    lock = folder / LOCK_NAME
    for _ in range(3):
        if _try_lock(lock):
            return lock
        info = _read_lock(lock)
        pid, host = info.get("pid"), info.get("host")
        if host not in (None, socket.gethostname()):
            idle = _lock_age(lock)
            if idle < STALE_AFTER_S:
                wait = max(1, math.ceil((STALE_AFTER_S - idle) / 60))
                raise OutDirError(
                    f"--out-dir {folder} is locked by process {pid} on {host}, which touched "
                    f"it {idle:.0f} s ago — wait for that run or pick another --out-dir; if it "
                    f"no longer runs (a Colab runtime that disconnected), run again in {wait} "
                    f"min, when its lock is stale, or delete {lock} now")
            print(f"taking over the lock {lock} of process {pid} on {host}: untouched for "
                  f"{idle / 60:.0f} min, that run is gone", file=sys.stderr)
            lock.unlink(missing_ok=True)
            continue
        if isinstance(pid, int) and pid_alive(pid):
            raise OutDirError(f"--out-dir {folder} is in use by training process {pid} (since "
                              f"{info.get('started', '?')}) — wait for it to finish or pick "
                              "another --out-dir")
        print(f"taking over the stale lock {lock} of process {pid}, which no longer runs",
              file=sys.stderr)
        lock.unlink(missing_ok=True)
    raise OutDirError(f"--out-dir {folder}: could not take its lock {lock} — another run keeps "
                      "taking it; pick another --out-dir")


def _lock_age(lock: Path) -> float:
    """Seconds since ``lock`` was last touched (0 if it just vanished)."""
    try:
        return max(0.0, time.time() - lock.stat().st_mtime)
    except OSError:
        return 0.0


@contextlib.contextmanager
def heartbeat(lock: Path, every: float = HEARTBEAT_S) -> Iterator[None]:
    """Touch ``lock`` every ``every`` seconds (a daemon thread) while the block runs, so other
    machines can tell a live run's lock from an abandoned one."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            with contextlib.suppress(OSError):
                os.utime(lock)

    thread = threading.Thread(target=beat, name="out-dir-lock-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def release_lock(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    if _read_lock(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files of interrupted atomic saves of :data:`RUN_FILES` in
    ``folder`` (call it holding the folder's lock: no other run is writing them). Returns them."""
    gone = [p for name in RUN_FILES for p in folder.glob(f".{name}*.tmp") if p.is_file()]
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


@contextlib.contextmanager
def claim_out_dir(folder: str | os.PathLike, *, main: bool = True) -> Iterator[Path]:
    """Check, create and lock ``folder`` for one run (rank 0: ``main``; other ranks only
    check); clean the leftovers of interrupted saves. On exit the lock is released and a folder
    that this call created and nobody wrote to is removed."""
    path = Path(folder)
    if not main:
        yield path
        return
    check_writable_dir(path)
    created = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    path.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(path)
    try:
        gone = remove_stale_temp_files(path)
        if gone:
            print(f"removed {len(gone)} temporary file(s) of an interrupted save in {path}: "
                  + ", ".join(p.name for p in gone), file=sys.stderr)
        with heartbeat(lock):
            yield path
    finally:
        release_lock(lock)
        for folder in created:  # what this call created, if nothing was written there
            if any(folder.iterdir()):
                break
            folder.rmdir()


__all__ = [
    "HEARTBEAT_S", "LOCK_NAME", "RUN_FILES", "STALE_AFTER_S", "OutDirError", "acquire_lock",
    "check_out_file", "check_writable_dir", "claim_out_dir", "heartbeat", "pid_alive",
    "release_lock", "remove_stale_temp_files",
]
