"""Device selection and seeding, shared by every chapter and command."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from sat_core.errors import UserError

DEVICE_HINT = "use --device auto (the best one here) or --device cpu"


class DeviceError(UserError, RuntimeError):
    """A device that does not exist (``banana``) or is not on this machine (CUDA without a GPU)."""


def parse_device(device: str) -> torch.device | None:
    """``torch.device(device)``; None for ``"auto"``; :class:`DeviceError` if not a device name."""
    if device == "auto":
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"--device {device!r} is not a device (auto, cpu, cuda, cuda:1, mps, "
                          f"...) — {DEVICE_HINT}") from None


def check_device(dev: torch.device, name: str) -> torch.device:
    """``dev`` if this machine has it; else :class:`DeviceError` saying what is missing."""
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"--device {name}: CUDA is not available on this machine — "
                              f"{DEVICE_HINT}")
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"--device {name}: this machine has {count} CUDA device(s), "
                              f"cuda:0 to cuda:{count - 1} — pick one of them")
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"--device {name}: Apple's MPS is not available on this machine "
                              f"— {DEVICE_HINT}")
    return dev


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device to run on.

    ``"auto"`` picks CUDA when a GPU is visible, then Apple's MPS, else the CPU.
    Anything else is passed to :class:`torch.device` (``"cpu"``, ``"cuda:1"``, ...); a name
    that is not a device, or a device this machine lacks, raises :class:`DeviceError`.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = parse_device(device)
    assert dev is not None
    return check_device(dev, device)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for a reproducible run."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
