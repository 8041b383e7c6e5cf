"""Chapter 10 exercise: sharding an epoch's batches between the processes of a torchrun job.

:data:`check_shard_batches` -- ``my_shard(batches, num_replicas, rank) -> list`` against what
:class:`sat_core.data.batching.LengthGroupedBatchSampler` yields on each rank: drop the last
``len(batches) % num_replicas`` batches (so that every rank takes the same number of steps), then
rank ``r`` takes batches ``r, r + R, r + 2R, ...`` (R = ``num_replicas``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from sat_core.data.batching import LengthGroupedBatchSampler
from sat_core.exercises._base import Case, ExerciseCheck


class _GivenBatches(LengthGroupedBatchSampler):
    """The sampler with a fixed list of batches: only its split between ranks is exercised."""

    def __init__(self, batches: Sequence[list[int]], num_replicas: int, rank: int) -> None:
        super().__init__([1], 1, shuffle=False, num_replicas=num_replicas, rank=rank)
        self._given = [list(b) for b in batches]

    def batches(self) -> list[list[int]]:
        return [list(b) for b in self._given]


def shard_batches(batches: Sequence[list[int]], num_replicas: int, rank: int) -> list[list[int]]:
    """Reference: the batches ``rank`` of ``num_replicas`` processes trains on in this epoch."""
    return list(_GivenBatches(batches, num_replicas, rank))


def _epoch(n_batches: int) -> list[list[int]]:
    """``n_batches`` batches of made-up dataset indices (batch k holds 10k .. 10k + 2)."""
    return [[10 * k, 10 * k + 1, 10 * k + 2] for k in range(n_batches)]


def _cases() -> list[Case]:
    fixed = [
        Case((_epoch(8), 2, 0), name="8 batches, 2 processes, rank 0"),
        Case((_epoch(8), 2, 1), name="8 batches, 2 processes, rank 1"),
        Case((_epoch(10), 4, 3), name="10 batches, 4 processes, rank 3"),
        Case((_epoch(10), 4, 0), name="10 batches, 4 processes, rank 0"),
        Case((_epoch(5), 1, 0), name="5 batches, a single process"),
        Case((_epoch(3), 4, 2), name="3 batches, 4 processes: nothing to do"),
        Case((_epoch(3), 3, 2), name="as many batches as processes: one each"),
        Case((_epoch(7), 4, 1), name="7 batches, 4 processes: drop 3 (num_replicas - 1)"),
        Case((_epoch(1), 1, 0), name="one batch, one process"),
    ]
    rng = random.Random(10)
    for k in range(5):
        n, world = rng.randint(0, 12), rng.randint(1, 4)
        rank = rng.randrange(world)
        fixed.append(Case((_epoch(n), world, rank),
                          name=f"random {k + 1}: {n} batches, {world} processes, rank {rank}"))
    return fixed


def _hints(got: Any, expected: list[list[int]], case: Case) -> str | None:
    batches, world, rank = case.args
    if not isinstance(got, list):
        return "return a list of batches (each a list of dataset indices)"
    ids = set(range(len(batches)))
    got_ids = [next((k for k, b in enumerate(batches) if b == g), None) for g in got]
    lines = [f"{len(batches)} batches, rank {rank} of {world}: expected batches "
             f"{[batches.index(e) for e in expected]}, got "
             f"{[k if k is not None else '?' for k in got_ids]}"]
    usable = len(batches) - len(batches) % world
    if None in got_ids or not set(got_ids) <= ids:
        lines.append("return whole batches from the list, unchanged")
    elif got_ids == list(range(rank, len(batches), world)) and usable != len(batches):
        lines.append(f"drop the last len(batches) % num_replicas = {len(batches) - usable} "
                     "batches first: otherwise ranks take different numbers of steps, and under "
                     "DistributedDataParallel the ranks with one step more wait forever in the "
                     "gradient all-reduce for the others")
    elif got_ids == list(range(len(batches) - usable + rank, len(batches), world)) \
            and usable != len(batches):
        lines.append("drop the LAST len(batches) % num_replicas batches, not the first ones")
    elif got_ids == list(range(len(batches))) or got_ids == list(range(usable)):
        lines.append("every rank takes only its share (every num_replicas-th batch from rank), "
                     "or each batch would be trained on num_replicas times per epoch")
    else:
        per = usable // world
        if got_ids == list(range(rank * per, (rank + 1) * per)):
            lines.append("contiguous blocks are disjoint too, but the convention here (and in "
                         "sat_core) interleaves: rank r takes batches r, r + R, r + 2R, ...")
    return "\n  hint: ".join(lines)


check_shard_batches = ExerciseCheck(
    "sharding batches between processes",
    reference=shard_batches,
    cases=_cases,
    hints=(_hints,),
)

__all__ = ["check_shard_batches", "shard_batches"]
