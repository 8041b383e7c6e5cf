"""What ``last.pt`` holds besides the weights, so that :mod:`sat_core.train` resumes bit for bit.

:class:`RunState` is the loop's position and record: the epoch in progress, the batches of it
already done, the optimizer steps, the best validation BLEU-4, the per-epoch history and the
running sums of the epoch. :func:`rng_states` and :func:`restore_rng_states` carry every random
state of every rank: the global CPU/CUDA generators (dropout masks) and hard attention's own
generator (the sampled locations s~ and the 0.5 mixing coins of Sec. 4.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from sat_core.checkpoint import capture_rng_state, restore_rng_state, to_plain
from sat_core.distributed import Dist


@dataclass
class RunState:
    """Everything that moves during training and goes into ``last.pt``."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps done in total
    best: dict[str, Any] = field(default_factory=lambda: {"bleu4": None, "epoch": None,
                                                          "step": None, "bad_epochs": 0})
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("loss", "nll", "tokens", "batches", "time", "entropy"), 0.0))

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        """The state saved in ``ckpt`` (a loaded ``last.pt``)."""
        return cls(epoch=ckpt["epoch"], batch_in_epoch=ckpt["batch_in_epoch"], step=ckpt["step"],
                   best=ckpt["best"], history=ckpt["history"], epoch_stats=ckpt["epoch_stats"])


def rng_states(run: Dist, hard_gen: torch.Generator) -> dict[str, Any]:
    """Every rank's random states, for the checkpoint (a collective: every rank takes part)."""
    return {"ranks": run.gather(to_plain(capture_rng_state({"hard": hard_gen})))}


def restore_rng_states(rng: dict[str, Any], run: Dist, hard_gen: torch.Generator) -> None:
    """This rank's random states from a checkpoint's ``rng`` (those of rank r of the run that
    wrote it, modulo its number of processes)."""
    ranks = rng["ranks"]
    restore_rng_state(ranks[run.rank % len(ranks)], {"hard": hard_gen})
