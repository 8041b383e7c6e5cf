"""PyTorch datasets over a :class:`~sat_core.data.records.Split`, and one entry point for splits.

Training sees the data *per caption*: every (image, caption) pair is one example, so an image with
five references is seen five times per epoch. Evaluation sees it *per image*: the model writes one
caption per image, scored against all its references (BLEU / METEOR, Sec. 5.2).

On-disk layout that :func:`load_splits` expects (what ``python -m sat_core.data.download`` makes)::

    data_root/flickr8k/dataset_flickr8k.json     data_root/flickr8k/images/<filename>.jpg
    data_root/flickr30k/dataset_flickr30k.json   data_root/flickr30k/images/<filename>.jpg
    data_root/coco/dataset_coco.json             data_root/coco/images/{train2014,val2014}/<f>.jpg
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from sat_core.data.karpathy import load_karpathy
from sat_core.data.records import Split
from sat_core.text import Vocabulary

KARPATHY_DATASETS = ("flickr8k", "flickr30k", "coco")


class CaptionDataset(Dataset):
    """One item per caption: ``(image or features, caption_ids, image_index)``.

    ``caption_ids`` is a ``LongTensor[T_i]`` ``[<start>, w_1, ..., w_n, <end>]``: ``T_i = n + 2``.
    With ``max_len`` a caption longer than ``max_len`` words keeps its first ``max_len`` words
    (``<end>`` is still appended, so ``T_i <= max_len + 2``). ``image_index`` is the position of
    the image in ``split.records`` (the index a feature cache or :class:`ImageDataset` uses).
    Captions are encoded once here; images are loaded lazily by ``split.load_image``.
    """

    def __init__(self, split: Split, vocab: Vocabulary, max_len: int | None = None) -> None:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        self.split, self.vocab, self.max_len = split, vocab, max_len
        self._captions: list[torch.Tensor] = []
        self._image_index: list[int] = []
        for idx, record in enumerate(split.records):
            for tokens in record.captions:
                words = tokens[:max_len] if max_len is not None else tokens
                self._captions.append(torch.tensor(vocab.encode(words), dtype=torch.long))
                self._image_index.append(idx)

    def __len__(self) -> int:
        return len(self._captions)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        idx = self._image_index[i]
        return self.split.load_image(self.split.records[idx]), self._captions[i], idx

    @property
    def lengths(self) -> list[int]:
        """``T_i`` of every item (words + 2), without loading any image."""
        return [len(c) for c in self._captions]

    @property
    def image_indices(self) -> list[int]:
        """``image_index`` of every item, without loading any image."""
        return list(self._image_index)


class ImageDataset(Dataset):
    """One item per image: ``(image or features, references, image_index)``.

    ``references`` is the list of all tokenized reference captions of the image. Each test image
    is decoded exactly once and scored against all its references, as in the paper's evaluation.
    (A popular PyTorch tutorial iterates the per-caption dataset at test time, which decodes every
    image five times and weights images by their number of captions; we do not.)
    """

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, list[list[str]], int]:
        record = self.split.records[i]
        return self.split.load_image(record), record.captions, i


def build_vocabulary(
    train_split: Split, min_count: int = 1, max_size: int | None = 10000
) -> Vocabulary:
    """The vocabulary of a training split (never build it from val/test captions)."""
    return Vocabulary.build(
        (tokens for r in train_split.records for tokens in r.captions),
        min_count=min_count,
        max_size=max_size,
    )


def dataset_paths(dataset: str, data_root: str | Path = "data") -> tuple[Path, Path]:
    """``(json_path, image_root)`` of a Karpathy dataset in the conventional layout."""
    if dataset not in KARPATHY_DATASETS:
        raise ValueError(
            f"unknown Karpathy dataset {dataset!r}; expected one of {KARPATHY_DATASETS}"
        )
    base = Path(data_root) / dataset
    return base / f"dataset_{dataset}.json", base / "images"


def load_splits(
    dataset: str,
    *,
    data_root: str | Path = "data",
    image_size: int | None = None,
    shapes: dict[str, Any] | None = None,
    **kw: Any,
) -> dict[str, Split]:
    """Load the splits of ``dataset``: ``"shapes"``, ``"flickr8k"``, ``"flickr30k"`` or ``"coco"``.

    * ``"shapes"`` calls ``sat_core.data.shapes.make_shapes_splits(**shapes)`` (``image_size``,
      when given, is passed on unless ``shapes`` sets it).
    * The Karpathy datasets are read from ``data_root`` in the layout of this module's docstring;
      ``image_size`` (default 224) and ``**kw`` (``restval``, ``resize``, ``on_error``) go to
      :func:`~sat_core.data.karpathy.load_karpathy`.
    """
    if dataset == "shapes":
        from sat_core.data.shapes import make_shapes_splits  # lazy: Shapes is optional here

        if kw:
            raise TypeError(f"options {sorted(kw)} do not apply to shapes; pass shapes={{...}}")
        args = dict(shapes or {})
        if image_size is not None:
            args.setdefault("image_size", image_size)
        return make_shapes_splits(**args)
    if dataset not in KARPATHY_DATASETS:
        raise ValueError(
            f"unknown dataset {dataset!r}; expected 'shapes' or one of {KARPATHY_DATASETS}"
        )
    json_path, image_root = dataset_paths(dataset, data_root)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"{dataset} is not prepared: {json_path} does not exist. Download it with "
            f"`python -m sat_core.data.download {dataset} --root {data_root}`"
            + (" (Flickr30k images need a manual step: the command explains it)"
               if dataset == "flickr30k" else "")
        )
    if not image_root.is_dir():
        raise FileNotFoundError(
            f"{dataset}: image folder {image_root} does not exist. Prepare it with "
            f"`python -m sat_core.data.download {dataset} --root {data_root}`"
        )
    if image_size is not None:
        kw["image_size"] = image_size
    return load_karpathy(json_path, image_root, **kw)

