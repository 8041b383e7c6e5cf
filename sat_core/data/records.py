"""The records every dataset is made of, whatever its source (Karpathy JSON or the Shapes world).

A split is a list of :class:`ImageRecord` plus a function that turns a record into the tensor the
model reads: a normalised image ``(3, H, W)``, or cached annotation vectors ``(L, D)``
(see ``sat_core.features``). Swapping that one function is how a chapter moves from images to
features, or from Shapes to Flickr8k.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sat_core.errors import UserError

# ImageNet statistics used by every torchvision encoder (and, for uniformity, by Shapes).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageLoadError(RuntimeError):
    """An image could not be read. The message always names the file (``path``), then the
    ``reason`` and `` — `` what to do (``advice``) where they are given."""

    def __init__(self, path: str, reason: str, advice: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.advice = advice
        what = f"cannot load image {self.path}" + (f": {reason}" if reason else "")
        super().__init__(f"{what} — {advice}" if advice else what)


class ReferencesError(UserError, ValueError):
    """A split has no images, or an image has no (or an empty) reference caption."""


@dataclass
class ImageRecord:
    """One image and its reference captions.

    ``image_id`` is the image's index in its source list (``imgid`` in the Karpathy JSON);
    ``captions`` are tokenized references (lower case, no punctuation); ``extra`` holds what is
    specific to a dataset (Shapes: ``objects`` and ``word_objects``; COCO: ``cocoid``).
    """

    image_id: int
    filename: str
    split: str
    captions: list[list[str]]
    raw: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Split:
    """A named split: its records and how to turn a record into a model input."""

    name: str
    records: list[ImageRecord]
    load_image: Callable[[ImageRecord], torch.Tensor]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_captions(self) -> int:
        return sum(len(r.captions) for r in self.records)


def normalize_image(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` pixels -> float ``(3, H, W)`` tensor with the ImageNet normalisation."""
    x = torch.as_tensor(np.asarray(pixels))
    if x.ndim != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) RGB pixels, got shape {tuple(x.shape)}")
    x = x.permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def denormalize_image(x: torch.Tensor) -> np.ndarray:
    """Inverse of :func:`normalize_image`, for drawing: ``(3, H, W)`` -> ``(H, W, 3)`` in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(3, 1, 1)
    img = (x.detach().float() * std + mean).clamp(0, 1)
    return img.permute(1, 2, 0).cpu().numpy()


def check_references(splits: dict[str, Split], names: tuple[str, ...], source: str) -> None:
    """Raise :class:`ReferencesError` unless each split in ``names`` has images, every image has
    at least one reference caption and no caption is empty; checked before any training, so a
    bad dataset stops a run at once (not at the end of its first epoch). ``source`` names where
    the captions come from (a file, or the Shapes world) for the message."""
    for name in names:
        split = splits.get(name)
        if split is None or not split.records:
            raise ReferencesError(f"the {name} split of {source} has no images — every split "
                                  "needs images with reference captions; fix the dataset")
        for record in split.records:
            where = f"image {record.filename} (id {record.image_id}) of the {name} split"
            if not record.captions:
                raise ReferencesError(f"{where} has no reference caption — add one in {source} "
                                      "or remove the image")
            for k, caption in enumerate(record.captions):
                if not any(str(w).strip() for w in caption):
                    raise ReferencesError(f"{where} has an empty reference caption (number "
                                          f"{k + 1}) — fix or remove it in {source}")
