"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)`` and validated.

A checkpoint holds everything a run needs to continue *exactly* where it stopped: the weights,
the optimizer and lr-scheduler state, the vocabulary (its word list), the config, the position
(epoch, step, batches done inside the epoch), the moving-average baseline of hard attention, and
every random-number state (torch CPU/CUDA, NumPy, Python, the generators used for sampling).

Two promises:

* **atomic** -- :func:`save_checkpoint` writes a temporary file in the same folder, fsyncs it,
  then ``os.replace``-s it over the target: a crash leaves the previous checkpoint intact.
* **plain** -- the content is only tensors, dicts, lists/tuples, str, int, float, bool and None,
  so :func:`load_checkpoint` can use ``weights_only=True`` (no arbitrary code runs on load).
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sat_core.config import ARCHITECTURE_FIELDS, TrainConfig
from sat_core.text import Vocabulary

FORMAT = "sat_core.checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: missing, truncated, foreign, or made for another model."""


# --- plain data -------------------------------------------------------------------------------


def to_plain(obj: Any, where: str = "checkpoint") -> Any:
    """Convert ``obj`` to what ``torch.load(weights_only=True)`` accepts, or raise naming the key.

    NumPy arrays become tensors, NumPy scalars Python numbers, paths strings; tensors, dicts,
    lists, tuples, str, int, float, bool and None pass through (recursively).
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; use str or int keys")
            out[k] = to_plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, list):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj))
    raise TypeError(
        f"{where} is a {type(obj).__name__}, which torch.load(weights_only=True) cannot read; "
        "store tensors, dicts, lists, str, int, float, bool or None"
    )


# --- random-number states ---------------------------------------------------------------------


def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG state of this process as plain data: torch (CPU, CUDA), NumPy, Python, and
    the named ``generators`` (e.g. the one that samples hard-attention locations)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(np_state[0]),
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None
) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when as many devices are visible).

    The state's tensors may sit on any device (a checkpoint loaded with ``map_location="cuda"``);
    they are read on the CPU."""
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npd = state["numpy"]
    np.random.set_state((
        npd["bit_generator"], npd["key"].cpu().numpy().astype(np.uint32), npd["pos"],
        npd["has_gauss"], npd["cached_gaussian"],
    ))
    pyd = state["python"]
    random.setstate((pyd["version"], tuple(int(x) for x in pyd["internal"].cpu().tolist()),
                     pyd["gauss_next"]))
    saved = state.get("generators") or {}
    for name, g in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"the checkpoint has no state for the random generator {name!r}")
        g.set_state(saved[name].cpu())


# --- save -------------------------------------------------------------------------------------


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _state(obj: Any) -> Any:
    if obj is None:
        return None
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    return obj


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not possible on every OS / file system)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def save_checkpoint(
    path: str | Path,
    *,
    model: nn.Module | Mapping[str, torch.Tensor],
    optimizer: Any = None,
    scheduler: Any = None,
    vocab: Vocabulary,
    config: TrainConfig,
    epoch: int = 0,
    step: int = 0,
    baseline: Any = None,
    rng: Mapping[str, Any] | None = None,
    best: Any = None,
    history: list | None = None,
    **extra: Any,
) -> Path:
    """Atomically write a checkpoint that ``torch.load(path, weights_only=True)`` can read.

    ``model``/``optimizer``/``scheduler``/``baseline`` may be objects (their ``state_dict()`` is
    stored) or state dicts; the model is unwrapped from DDP/compile first. ``rng`` comes from
    :func:`capture_rng_state`; ``best`` and ``history`` are plain (metrics so far); ``extra``
    keys (e.g. ``batch_in_epoch``, ``scaler``) are stored as they are, after conversion.
    """
    if isinstance(model, nn.Module):
        model = unwrap_model(model).state_dict()
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": dict(model),
        "optimizer": _state(optimizer),
        "scheduler": _state(scheduler),
        "vocab": {"itos": list(vocab.itos), "fingerprint": vocab.fingerprint()},
        "config": config.to_dict(),
        "epoch": int(epoch),
        "step": int(step),
        "baseline": _state(baseline),
        "rng": rng,
        "best": best,
        "history": history if history is not None else [],
    }
    for k, v in extra.items():
        payload[k] = _state(v)
    return atomic_torch_save(to_plain(payload), path)


# --- load -------------------------------------------------------------------------------------


def _read(path: Path, map_location: Any) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist — check the path (a run writes "
                              "<out-dir>/last.pt and best.pt)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder — pass a file such as {path}/best.pt")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip: a text file, a cut-off copy
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint (not the zip archive torch.save writes) — "
            "if it was copied, copy it again; else use the previous file (best.pt / last.pt) or "
            "retrain")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} is not a plain sat_core checkpoint: torch.load(weights_only=True) refused it "
            f"({str(e).splitlines()[0]}) — only load checkpoints written by sat_core.train"
        ) from None
    except Exception as e:  # truncated zips fail in many ways (RuntimeError, KeyError, EOF...)
        raise CheckpointError(
            f"{path} is truncated or not a checkpoint ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0]}) — if a run was "
            "interrupted, use the previous file (best.pt / last.pt) or retrain"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a sat_core checkpoint (no '{FORMAT}' marker) — pass a checkpoint "
            "that sat_core.train wrote (<out-dir>/best.pt or last.pt)"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {obj.get('version')!r}; this code reads version "
            f"{VERSION} — retrain, or use the sat_core version that wrote it"
        )
    return obj


def load_checkpoint(
    path: str | Path,
    *,
    vocab: Vocabulary | None = None,
    config: TrainConfig | None = None,
    map_location: Any = "cpu",
) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` and check it fits the current run.

    Returns the stored dict with ``"vocab"`` as a :class:`Vocabulary` and ``"config"`` as a
    :class:`TrainConfig`; other keys: ``model``, ``optimizer``, ``scheduler``, ``epoch``,
    ``step``, ``baseline``, ``rng``, ``best``, ``history`` and any extras saved.
    With ``vocab``: raise if the checkpoint's vocabulary differs (fingerprints). With ``config``:
    raise naming the architecture fields (:data:`~sat_core.config.ARCHITECTURE_FIELDS`) that
    differ. All errors are :class:`CheckpointError` and name the file.
    """
    path = Path(path)
    ckpt = _read(path, map_location)
    try:
        ckpt_vocab = Vocabulary(ckpt["vocab"]["itos"][4:])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: its vocabulary is unreadable ({e}) — use the "
                              "previous checkpoint (best.pt / last.pt) or retrain") from None
    if vocab is not None and vocab.fingerprint() != ckpt_vocab.fingerprint():
        raise CheckpointError(
            f"checkpoint {path} was trained with a vocabulary of {len(ckpt_vocab)} words "
            f"(fingerprint {ckpt_vocab.fingerprint()}), the current one has {len(vocab)} words "
            f"({vocab.fingerprint()}) — use the vocab.json saved beside the checkpoint "
            "(Vocabulary.load), or train a new model in another --out-dir"
        )
    known = {k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__}
    if len(known) < len(ckpt["config"]):
        dropped = sorted(set(ckpt["config"]) - set(known))
        warnings.warn(f"{path}: ignoring config fields this code does not know: {dropped}",
                      stacklevel=2)
    ckpt_config = TrainConfig.from_dict(known)  # fields it lacks: their LEGACY_DEFAULTS
    if config is not None:
        diff = {
            k: (getattr(ckpt_config, k), getattr(config, k))
            for k in ARCHITECTURE_FIELDS if getattr(ckpt_config, k) != getattr(config, k)
        }
        if diff:
            listed = ", ".join(f"{k}: {a!r} (checkpoint) vs {b!r} (current)"
                               for k, (a, b) in diff.items())
            raise CheckpointError(
                f"checkpoint {path} was made for another architecture: {listed} — pass the same "
                "options as the run that wrote it, or train in another --out-dir"
            )
    ckpt["vocab"] = ckpt_vocab
    ckpt["config"] = ckpt_config
    return ckpt


__all__ = [
    "CheckpointError", "atomic_torch_save", "capture_rng_state", "load_checkpoint",
    "restore_rng_state", "save_checkpoint", "to_plain", "unwrap_model",
]
