"""Pretraining the small encoder on what the Shapes world can label: the analogue of ImageNet.

The paper's encoder is VGG-19 *pretrained on ImageNet* and then frozen (Sec. 4.3): its conv5_4
annotation vectors a_i already say what is where before the captioner ever trains. A randomly
initialised CNN that stays frozen says much less: colour survives random filters, shape barely does
(the book's first Shapes models named the wrong shape about half the time). Training the CNN
together with the captioner (``fine_tune``) helps, but costs ~3x the time and gives up the feature
cache.

The Shapes world can label every region of its images, so the small CNN gets its own "ImageNet":

1. cut the image into the encoder's ``(h, w)`` grid of cells (8 x 8 cells of 8 px at 64 px);
2. label each cell with the colour, shape and size of the object that covers most of it (more than
   ``min_overlap`` of its pixels), or *background* (:func:`region_labels`);
3. train the CNN with a 1 x 1 convolution on top (three linear classifiers per cell, one
   cross-entropy each) for a few epochs on the *training* images (:func:`pretrain_small_encoder`);
4. drop the classifier, freeze the CNN (eval mode: BatchNorm uses its running statistics), and
   compute the feature cache once, exactly as for VGG.

Every a_i then describes its own neighbourhood (receptive field 33 px) in terms the captioner can
read, and attention has something to find. The weights are written once per (world, encoder
width, seed) under ``<features dir>/encoders/`` and reused by every run that asks for them
(``--encoder-weights shapes-regions``, the default of the Shapes presets).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from sat_core import fast
from sat_core.data.records import ImageRecord, Split
from sat_core.data.shapes import COLOURS, SHAPES, SIZES
from sat_core.encoder import SmallEncoder
from sat_core.grounding import cell_overlaps

# Class 0 of each head is "background"; then the world's attributes in their fixed order.
REGION_CLASSES: dict[str, tuple[str, ...]] = {
    "colour": ("background", *COLOURS),
    "shape": ("background", *SHAPES),
    "size": ("background", *SIZES),
}
PRETRAIN_VERSION = 1  # part of the cache key: bump when the recipe below changes


def region_labels(record: ImageRecord, grid: tuple[int, int],
                  min_overlap: float = 0.2) -> Tensor:
    """(3, L) class indices of every cell: colour, shape and size of the object covering it.

    A cell belongs to the object that covers the largest fraction of its pixels, if that fraction
    exceeds ``min_overlap``; otherwise it is background (class 0 of every head).
    """
    objects = record.extra["objects"]
    labels = torch.zeros(3, grid[0] * grid[1], dtype=torch.long)
    if not objects:
        return labels
    masks = [np.asarray(o["mask"] if isinstance(o, dict) else o.mask, dtype=bool)
             for o in objects]
    overlap = np.stack([cell_overlaps(m, grid) for m in masks])  # (objects, L)
    classes = np.array([[REGION_CLASSES[k].index(o[k] if isinstance(o, dict) else getattr(o, k))
                         for k in REGION_CLASSES] for o in objects])  # (objects, 3)
    covered = overlap.max(0) > min_overlap
    owner = overlap.argmax(0)[covered]
    labels[:, torch.from_numpy(covered)] = torch.from_numpy(classes[owner].T)
    return labels


class RegionHead(nn.Module):
    """Three linear classifiers per cell (a 1 x 1 convolution): colour, shape, size."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sizes = [len(c) for c in REGION_CLASSES.values()]
        self.proj = nn.Conv2d(channels, sum(self.sizes), kernel_size=1)

    def forward(self, fmap: Tensor) -> list[Tensor]:
        """fmap (B, C, h, w) -> one (B, classes, L) logit tensor per attribute."""
        return list(self.proj(fmap).flatten(2).split(self.sizes, dim=1))


def region_loss(logits: Sequence[Tensor], labels: Tensor) -> Tensor:
    """Sum over the three attributes of the mean cross-entropy over cells; labels (B, 3, L)."""
    return sum(F.cross_entropy(lg, labels[:, k]) for k, lg in enumerate(logits))


@torch.no_grad()
def region_accuracy(encoder: SmallEncoder, head: RegionHead, split: Split,
                    min_overlap: float = 0.2, limit: int = 0) -> dict[str, float]:
    """Accuracy of each head on the cells that hold an object (background cells excluded)."""
    records = split.records[:limit] if limit else split.records
    x = torch.stack([split.load_image(r) for r in records])
    y = torch.stack([region_labels(r, encoder.grid, min_overlap) for r in records])
    encoder.eval()
    logits = head(encoder.cnn(x))
    on_object = y[:, 0] > 0
    return {k: float((lg.argmax(1) == y[:, i])[on_object].float().mean())
            for i, (k, lg) in enumerate(zip(REGION_CLASSES, logits, strict=True))}


def pretrain_small_encoder(
    split: Split,
    *,
    channels: int = 64,
    image_size: int = 64,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 3e-3,
    min_overlap: float = 0.2,
    seed: int = 0,
    context: int = 1,
    progress: bool = True,
) -> tuple[SmallEncoder, RegionHead]:
    """Train a :class:`~sat_core.encoder.SmallEncoder` on the region labels of ``split``.

    Adam with a one-cycle learning rate (warm-up then cosine decay to ~0), BatchNorm in train mode.
    Runs in a forked RNG seeded with ``seed``: the caller's random state is left as it was. Returns
    the encoder, frozen and in eval mode, and the classifier head (for :func:`region_accuracy`).
    """
    x = torch.stack([split.load_image(r) for r in split.records])
    if x.shape[-1] != image_size:
        raise ValueError(f"pretrain_small_encoder: images are {x.shape[-1]} px, expected "
                         f"image_size={image_size}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = SmallEncoder(channels=channels, image_size=image_size, context=context)
        y = torch.stack([region_labels(r, encoder.grid, min_overlap) for r in split.records])
        head = RegionHead(channels)
        x = fast.channels_last(x, encoder.cnn, head)  # speed only (sat_core.fast, trick 6)
        params = [*encoder.cnn.parameters(), *head.parameters()]
        opt = torch.optim.Adam(params, lr=lr)
        per_epoch = max(1, len(x) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * per_epoch)
        encoder.train()
        bar = tqdm(total=epochs * per_epoch, desc="pretraining the encoder", unit="batch",
                   disable=not progress, leave=False)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for b in range(per_epoch):
                idx = order[b * batch_size:(b + 1) * batch_size]
                loss = region_loss(head(encoder.cnn(x[idx])), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        bar.close()
    for module in (encoder, head):
        module.to(memory_format=torch.contiguous_format)
    encoder.set_fine_tune(False)
    encoder.eval()
    encoder.weights_tag = "shapes-regions"
    return encoder, head


def pretrained_weights_path(root: str | Path, *, channels: int, image_size: int, n_train: int,
                            shapes_seed: int, seed: int, context: int = 1) -> Path:
    """Where the pretrained weights of this (world, encoder, seed) live under ``root``."""
    spec = dict(channels=channels, image_size=image_size, n_train=n_train,
                shapes_seed=shapes_seed, seed=seed, version=PRETRAIN_VERSION)
    if context != 1:  # the default keeps the names caches had before it was a setting
        spec["context"] = context
    key = json.dumps(spec, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return Path(root) / "encoders" / f"small-shapes-regions-{image_size}px-{digest}.pt"


def get_pretrained_weights(path: Path, split: Split, *, channels: int, image_size: int,
                           seed: int, context: int = 1, progress: bool = True) -> Path:
    """``path`` if it holds weights already; otherwise pretrain on ``split`` and write it there
    atomically (a temporary file, then a rename), so an interrupted run never leaves half a file."""
    if path.is_file():
        return path
    encoder, _ = pretrain_small_encoder(split, channels=channels, image_size=image_size,
                                        seed=seed, context=context, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temp_files(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(encoder.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def remove_dead_temp_files(path: Path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` beside ``path`` left by saves of processes that no longer
    run (killed half-way); a live process's file is its save in progress and stays."""
    from sat_core.out_dir import pid_alive

    gone = []
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-len(".tmp")]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


__all__ = [
    "PRETRAIN_VERSION", "REGION_CLASSES", "RegionHead", "get_pretrained_weights",
    "pretrain_small_encoder", "pretrained_weights_path", "region_accuracy", "region_labels",
    "region_loss",
]
