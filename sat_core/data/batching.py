"""Batches of captions, and the paper's length-grouped sampler.

Xu et al. (2015, Sec. 4.3) speed up training by building each minibatch from captions of the
*same length*: no step of the recurrence is wasted on padding. :class:`LengthGroupedBatchSampler`
does that; :func:`collate_captions` still pads, so any sampler works with the same model code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Sampler


@dataclass
class CaptionBatch:
    """A training batch.

    ``images``: ``(B, 3, H, W)`` images or ``(B, L, D)`` annotation vectors ``a``;
    ``captions``: ``(B, T_max)`` ids, ``[<start>, w.., <end>]`` padded with ``<pad>`` = 0;
    ``lengths``: ``(B,)`` the ``T_i`` of each caption; ``image_index``: ``(B,)`` index in the
    split. The decoder reads ``captions[:, :-1]`` and predicts ``captions[:, 1:]`` for
    ``lengths - 1`` steps.
    """

    images: torch.Tensor
    captions: torch.Tensor
    lengths: torch.Tensor
    image_index: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CaptionBatch:
        """A copy of the batch on ``device``."""
        return CaptionBatch(
            *(t.to(device, non_blocking=non_blocking) for t in
              (self.images, self.captions, self.lengths, self.image_index))
        )

    def __len__(self) -> int:
        return self.captions.shape[0]


def pad_captions(
    captions: Sequence[torch.Tensor], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[LongTensor[T_i]]`` -> ``(B, T_max)`` padded with ``pad_id``, and lengths ``(B,)``."""
    lengths = torch.tensor([len(c) for c in captions], dtype=torch.long)
    out = torch.full((len(captions), int(lengths.max()) if len(captions) else 0), pad_id,
                     dtype=torch.long)
    for i, c in enumerate(captions):
        out[i, : len(c)] = torch.as_tensor(c, dtype=torch.long)
    return out, lengths


def collate_captions(items: Sequence[tuple[torch.Tensor, torch.Tensor, int]]) -> CaptionBatch:
    """``CaptionDataset`` items -> :class:`CaptionBatch` (captions padded with 0)."""
    if not items:
        raise ValueError("collate_captions got an empty list of items")
    images, caps, index = zip(*items, strict=True)
    captions, lengths = pad_captions(caps)
    return CaptionBatch(
        torch.stack(images), captions, lengths, torch.tensor(index, dtype=torch.long)
    )


def collate_images(
    items: Sequence[tuple[torch.Tensor, list[list[str]], int]],
) -> tuple[torch.Tensor, list[list[list[str]]], torch.Tensor]:
    """``ImageDataset`` items -> ``(images (B, ...), refs [B][n_refs][words], index (B,))``."""
    if not items:
        raise ValueError("collate_images got an empty list of items")
    images, refs, index = zip(*items, strict=True)
    return torch.stack(images), list(refs), torch.tensor(index, dtype=torch.long)


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices whose captions all have the same length (Sec. 4.3).

    Indices are grouped by ``lengths[i]``; each group is cut into batches of ``batch_size``, its
    leftover forming one smaller batch (dropped with ``drop_last``). With ``shuffle`` the indices
    inside each group and the order of the batches are shuffled, deterministically from
    ``(seed, epoch)``: call :meth:`set_epoch` before each epoch, like ``DistributedSampler``.

    With ``num_replicas > 1`` (DistributedDataParallel) every rank builds the same batch list and
    takes every ``num_replicas``-th batch starting at ``rank``; the last ``n_batches %
    num_replicas`` batches of the (shuffled) list are left out so that all ranks do the same number
    of steps and no index is seen twice in an epoch (which batches are left out changes each epoch).
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}"
            )
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.num_replicas, self.rank = drop_last, num_replicas, rank
        self.epoch = 0
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(lengths):
            groups.setdefault(int(t), []).append(i)
        self.groups = [groups[t] for t in sorted(groups)]

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (the same on every rank)."""
        self.epoch = epoch

    def _num_batches_total(self) -> int:
        per = (lambda n: n // self.batch_size) if self.drop_last else (
            lambda n: math.ceil(n / self.batch_size))
        return sum(per(len(g)) for g in self.groups)

    def __len__(self) -> int:
        return self._num_batches_total() // self.num_replicas

    def batches(self) -> list[list[int]]:
        """All batches of this epoch, before the split between ranks."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        out: list[list[int]] = []
        for group in self.groups:
            if self.shuffle:
                group = [group[j] for j in torch.randperm(len(group), generator=g).tolist()]
            for start in range(0, len(group), self.batch_size):
                batch = group[start : start + self.batch_size]
                if len(batch) < self.batch_size and self.drop_last:
                    continue
                out.append(batch)
        if self.shuffle:
            out = [out[j] for j in torch.randperm(len(out), generator=g).tolist()]
        return out

    def __iter__(self) -> Iterator[list[int]]:
        out = self.batches()
        usable = len(out) - len(out) % self.num_replicas
        yield from out[self.rank : usable : self.num_replicas]
