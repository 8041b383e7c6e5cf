"""Processes for :mod:`sat_core.train`: one, or several under ``torchrun``.

:func:`setup_distributed` reads torchrun's environment and :class:`Dist` says where this process
stands (``rank`` of ``world``, on ``device``) and wraps the few collectives the loop needs; with
one process every collective is the identity, so the loop reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from sat_core.config import TrainConfig
from sat_core.device import pick_device


@dataclass
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we called init_process_group (and must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (a collective)."""
        if not self.distributed:
            return [obj]
        every: list[Any] = [None] * self.world
        dist.all_gather_object(every, obj)
        return every

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the ranks (``t`` itself with one process)."""
        if not self.distributed:
            return t
        total = t.to(self.device).clone()
        dist.all_reduce(total)
        return total / self.world

    def close(self) -> None:
        """Destroy the process group if :func:`setup_distributed` created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; init the process group (gloo/nccl) if > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device)
    if world <= 1:
        return Dist(0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device, owns)
