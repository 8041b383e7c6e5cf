"""Exercise checks: ``check_*`` functions that grade a reader's answer and explain what is wrong.

The framework lives in :mod:`sat_core.exercises._base` (:class:`ExerciseCheck`, :func:`check`,
:func:`compare`, :class:`ExerciseFailed`); each chapter's checks live in ``chNN.py``
(e.g. ``sat_core.exercises.ch04.check_soft_attention``). For convenience every ``check_*`` of a
chapter module can also be imported from here: ``from sat_core.exercises import
check_soft_attention`` finds it in whichever ``chNN`` module defines it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from typing import Any

from sat_core.exercises._base import (
    Case,
    ExerciseCheck,
    ExerciseCrashed,
    ExerciseFailed,
    ExerciseNotAttempted,
    check,
    compare,
)

__all__ = ["Case", "ExerciseCheck", "ExerciseCrashed", "ExerciseFailed", "ExerciseNotAttempted",
           "check", "compare"]

_CHAPTER = re.compile(r"ch\d\d$")


def chapter_modules() -> list[str]:
    """Names of the chapter modules (``chNN``) in this package, sorted."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if _CHAPTER.match(m.name))


def __getattr__(name: str) -> Any:
    """Find ``check_*`` names in the chapter modules (imported only when asked for)."""
    if not name.startswith("check_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for mod in chapter_modules():
        module = importlib.import_module(f"{__name__}.{mod}")
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(
        f"no exercise check named {name!r} in sat_core.exercises "
        f"(chapter modules: {', '.join(chapter_modules()) or 'none yet'})"
    )
