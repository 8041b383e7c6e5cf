"""One-line errors for the command-line tools.

A mistake in what the user asked for (a wrong path, a folder that would be overwritten, a bad
option) is not a bug: the command prints ONE line ``error: <what> — <what to do>`` on stderr and
exits with status 2, without a traceback. A command opts in with :func:`command`::

    @command(StudentCopyError, OSError)
    def main(argv=None) -> int: ...

and builds its parser with :class:`ArgumentParser` (usage errors become one line too). Set the
environment variable ``SAT_DEBUG=1`` to get the full traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

DEBUG_ENV = "SAT_DEBUG"
EXIT_USER_ERROR = 2  # argparse's status for a usage error; every user error of a command uses it

Main = Callable[[Sequence[str] | None], int]


class UserError(Exception):
    """A mistake in the input: the message says what is wrong and what to do about it."""


def debug_enabled() -> bool:
    """Whether ``SAT_DEBUG`` asks for tracebacks (set and not ``0``/``false``/``no``)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# What to do about the operating system's errors a user can fix (errno -> advice).
OS_ADVICE = {
    errno.ENOSPC: "free some disk space (or pick a folder on another disk) and run the command "
                  "again; a training run resumes from its last checkpoint with --resume",
    errno.EDQUOT: "free some of your disk quota and run the command again",
    errno.EACCES: "check the folder's permissions, or choose a folder you can write to",
    errno.EROFS: "the disk is read-only: choose a folder on a writable disk",
    errno.ENOTDIR: "a part of the path is a file, not a folder: pick another path",
    errno.EISDIR: "it is a folder: give the path of a file",
}


MEMORY_ADVICE = ("ask for less (smaller images, smaller batches, fewer images) or use a machine "
                 "with more memory")


def error_line(err: BaseException | str) -> str:
    """``error: <message>`` on one line (line breaks and runs of spaces become one space); an
    :class:`OSError` a user can fix (a full disk, no permission) gets what to do about it."""
    text = " ".join(str(err).split()) or type(err).__name__
    advice = OS_ADVICE.get(getattr(err, "errno", None)) if isinstance(err, OSError) else None
    if isinstance(err, MemoryError):
        text, advice = f"out of memory ({text})", MEMORY_ADVICE
    return f"error: {text} — {advice}" if advice else f"error: {text}"


def report(err: BaseException | str) -> int:
    """Print :func:`error_line` on stderr; return :data:`EXIT_USER_ERROR`."""
    print(error_line(err), file=sys.stderr)
    return EXIT_USER_ERROR


def command(*errors: type[BaseException]) -> Callable[[Main], Main]:
    """Decorate a command's ``main(argv) -> int``: a :class:`UserError`, or one of ``errors``,
    becomes one line on stderr and exit status 2 (re-raised when ``SAT_DEBUG=1``); so does a
    :class:`MemoryError` (a size this machine cannot hold, e.g. ``--image-size 100000``)."""
    caught = (UserError, MemoryError, *errors)

    def decorate(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return main(argv)
            except caught as err:
                if debug_enabled():
                    raise
                return report(err)

        return run

    return decorate


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one ``error:`` line, status 2."""

    def error(self, message: str) -> NoReturn:
        print(error_line(f"{message} — see `{self.prog} --help`"), file=sys.stderr)
        self.exit(EXIT_USER_ERROR)


__all__ = [
    "DEBUG_ENV", "EXIT_USER_ERROR", "ArgumentParser", "UserError", "command", "debug_enabled",
    "error_line", "report",
]
