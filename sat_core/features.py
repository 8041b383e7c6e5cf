"""The feature cache: compute the annotation vectors a_1..a_L of a dataset once, read them forever.

The paper keeps its encoder frozen (Sec. 4.3: "we use the Oxford VGGnet pretrained on ImageNet
without finetuning"), so a = CNN(image) (Sec. 3.1.1) is the same every epoch: computing it once
turns an hour-long epoch of VGG forward passes into reads from disk. A cache is a directory holding

* ``features.npy``: float16 array (N, L, D), memory-mapped on reading (half the bytes of float32,
  ~2.8 GB for Flickr8k with VGG-19; a row is read only when asked for);
* ``index.json``: format marker, encoder name and weights, L, D, grid, dtype, image size, the
  ``image_ids`` and ``filenames`` of rows 0..N-1, and a ``complete`` flag.

A build writes into ``<path>.partial-<pid>-...`` (its own: two runs building one cache at the
same time never touch each other's files) and renames it to ``<path>`` only once every row is
written and the index says ``complete: true``; an interrupted build therefore never leaves
anything that looks like a complete cache at ``<path>``, and the next build removes what it
left. When two builds of one cache race, the one that finishes second keeps the first one's.

Reading: ``cache = FeatureCache.open(path)``; ``cache[image_id]`` -> float32 (L, D);
``cached_split(split, cache)`` swaps the split's image loader for ``cache.loader()``, so every
dataset of ``sat_core.data`` yields features instead of images (pair with
``build_encoder("precomputed", feature_dim=D, grid=grid)``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sat_core.data.records import ImageRecord, Split
from sat_core.device import pick_device

FORMAT = "sat_core.feature_cache"
VERSION = 1
INDEX_NAME = "index.json"
FEATURES_NAME = "features.npy"
DTYPE = "float16"


class FeatureCacheError(RuntimeError):
    """A path is not a usable feature cache; the message names it and says what to do."""


class MissingFeaturesError(FeatureCacheError, KeyError):
    """An image asked for is not in the cache."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def _new_partial(path: Path) -> Path:
    """A new folder where this build writes the cache ``path``: ``<path>.partial-<pid>-<random>``
    (a build of its own even beside another one in this process, in another thread)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{path.name}.partial-{os.getpid()}-", dir=path.parent))


def _leftovers(path: Path) -> list[Path]:
    """What interrupted builds of ``path`` left: ``.partial`` / ``.old`` folders (of this code,
    with a process id, or of older code, without one) whose process no longer runs."""
    from sat_core.out_dir import pid_alive

    found = []
    for p in path.parent.glob(f"{path.name}.*"):
        kind, _, rest = p.name[len(path.name) + 1:].partition("-")
        pid = rest.split("-")[0]
        if kind in ("partial", "old") and p.is_dir() and not (
                pid.isdigit() and (int(pid) == os.getpid() or pid_alive(int(pid)))):
            found.append(p)
    return found


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class FeatureCache:
    """A complete cache on disk: ``cache[image_id]`` -> annotation vectors a, float32 (L, D)."""

    def __init__(self, path: Path, index: dict[str, Any]) -> None:
        self.path = path
        self.index = index
        self.encoder_name: str = index["encoder"]
        self.num_locations: int = index["num_locations"]
        self.feature_dim: int = index["feature_dim"]
        self.grid: tuple[int, int] = tuple(index["grid"])
        self.image_ids: list[int] = list(index["image_ids"])
        self.filenames: list[str] = list(index["filenames"])
        self._row = {image_id: row for row, image_id in enumerate(self.image_ids)}
        self._features: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | os.PathLike, *, expect_encoder: str | None = None) -> FeatureCache:
        """Open and validate the cache at ``path`` (its directory, or its index.json)."""
        path = Path(path)
        if path.is_file() and path.name in (INDEX_NAME, FEATURES_NAME):
            path = path.parent
        rebuild = "build it with sat_core.features.build_feature_cache(encoder, split, path)"
        if not path.exists():
            hint = ""
            left = _leftovers(path)
            if left:
                hint = f" (an interrupted build left {left[0]}; rebuilding replaces it)"
            raise FeatureCacheError(f"no feature cache at {path}{hint}; {rebuild}")
        index_file = path / INDEX_NAME
        if not path.is_dir() or not index_file.is_file():
            raise FeatureCacheError(
                f"{path} is not a feature cache (expected a directory holding {INDEX_NAME} and "
                f"{FEATURES_NAME}); {rebuild}"
            )
        try:
            index = json.loads(index_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FeatureCacheError(f"{index_file} is not valid JSON ({e}); {rebuild}") from e
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise FeatureCacheError(
                f"{index_file} is not a feature-cache index (no format marker {FORMAT!r}); "
                f"{rebuild}"
            )
        if index.get("version") != VERSION:
            raise FeatureCacheError(
                f"feature cache {path} has format version {index.get('version')}, this code "
                f"reads version {VERSION}; rebuild it"
            )
        if not index.get("complete", False):
            raise FeatureCacheError(
                f"feature cache {path} is incomplete (an interrupted build?); rebuild it: {rebuild}"
            )
        if expect_encoder is not None and index["encoder"] != expect_encoder:
            raise FeatureCacheError(
                f"feature cache {path} was built with the {index['encoder']!r} encoder, not "
                f"{expect_encoder!r}; use a cache of that encoder or rebuild one"
            )
        cache = cls(path, index)
        n, L, D = len(cache.image_ids), cache.num_locations, cache.feature_dim
        if len(cache.filenames) != n or len(cache._row) != n:
            raise FeatureCacheError(f"index {index_file} is corrupt (image_ids vs filenames)")
        features = cache.features
        if features.shape != (n, L, D) or features.dtype != np.dtype(index["dtype"]):
            raise FeatureCacheError(
                f"{path / FEATURES_NAME} holds {features.dtype} {features.shape}, the index says "
                f"{index['dtype']} {(n, L, D)}; the cache is corrupt: rebuild it"
            )
        return cache

    @property
    def features(self) -> np.ndarray:
        """The memory-mapped (N, L, D) float16 array (opened on first use, read-only)."""
        if self._features is None:
            file = self.path / FEATURES_NAME
            try:
                self._features = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise FeatureCacheError(f"cannot read {file} ({e}); rebuild the cache") from e
        return self._features

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get the path, not a pickled copy of the whole array.
        state = self.__dict__.copy()
        state["_features"] = None
        return state

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._row

    def row(self, image_id: int) -> int:
        """Row of ``image_id`` in ``features``."""
        try:
            return self._row[image_id]
        except KeyError:
            raise MissingFeaturesError(
                f"image_id {image_id} is not in the feature cache {self.path} "
                f"({len(self)} images, split {self.index.get('split')!r}); rebuild the cache "
                "for this split"
            ) from None

    def __getitem__(self, image_id: int) -> torch.Tensor:
        """Annotation vectors a of one image: float32 (L, D)."""
        return torch.from_numpy(np.array(self.features[self.row(image_id)], dtype=np.float32))

    def loader(self) -> Callable[[ImageRecord], torch.Tensor]:
        """A ``Split.load_image`` replacement: record -> float32 (L, D) annotation vectors."""
        return CachedFeatureLoader(self)

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.path)!r}, encoder={self.encoder_name!r}, N={len(self)}, "
            f"L={self.num_locations}, D={self.feature_dim})"
        )


class CachedFeatureLoader:
    """record -> cached a (L, D); checks the filename so another dataset's cache cannot slip in."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def check(self, record: ImageRecord) -> int:
        row = self.cache.row(record.image_id)
        cached_name = self.cache.filenames[row]
        if cached_name != record.filename:
            raise FeatureCacheError(
                f"image_id {record.image_id} is {record.filename!r} in the split but "
                f"{cached_name!r} in the feature cache {self.cache.path}: the cache was built "
                "from another dataset or split; rebuild it"
            )
        return row

    def __call__(self, record: ImageRecord) -> torch.Tensor:
        self.check(record)
        return self.cache[record.image_id]


def cached_split(split: Split, cache: FeatureCache) -> Split:
    """The same split whose ``load_image`` returns cached features (L, D) instead of images.

    Every record must be in the cache (same image_id and filename), checked now rather than
    in the middle of an epoch.
    """
    loader = CachedFeatureLoader(cache)
    missing = [r.image_id for r in split.records if r.image_id not in cache]
    if missing:
        raise MissingFeaturesError(
            f"{len(missing)} of the {len(split)} images of split {split.name!r} are not in the "
            f"feature cache {cache.path} (image_ids {missing[:5]}...); build the cache from this "
            "split with build_feature_cache"
        )
    for record in split.records:
        loader.check(record)
    return replace(split, load_image=loader)


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


class _Images(Dataset):
    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str]:
        record = self.split.records[i]
        return self.split.load_image(record), record.filename


def _stack(items: list[tuple[torch.Tensor, str]]) -> tuple[torch.Tensor, list[str]]:
    images, names = zip(*items, strict=True)
    first = images[0].shape
    for image, name in zip(images, names, strict=True):
        if image.ndim != 3 or image.shape != first:
            raise FeatureCacheError(
                f"image {name} has shape {tuple(image.shape)} but {names[0]} has {tuple(first)}: "
                "the split's load_image must return (3, H, W) images of one size"
            )
    return torch.stack(images), list(names)


def _write_index(directory: Path, index: dict[str, Any]) -> None:
    tmp = directory / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index))
    os.replace(tmp, directory / INDEX_NAME)


def _is_cache_dir(path: Path) -> bool:
    try:
        return json.loads((path / INDEX_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def build_feature_cache(
    encoder: nn.Module,
    split: Split,
    path: str | os.PathLike,
    *,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = True,
) -> FeatureCache:
    """Run the (frozen) encoder over every image of ``split`` and store a (N, L, D) as float16.

    The encoder runs in eval mode under ``torch.inference_mode`` (its train/eval mode is restored
    afterwards; it is moved to ``device``). Rows follow ``split.records``. The cache is written to
    ``<path>.partial`` and renamed to ``path`` at the very end, replacing an older cache there.
    """
    path = Path(path)
    _check_buildable(split, path)
    dev = pick_device(device)
    was_training = encoder.training
    encoder.to(dev).eval()
    started = time.time()
    for left in _leftovers(path):  # of killed builds
        shutil.rmtree(left, ignore_errors=True)
    partial = _new_partial(path)
    index: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "encoder": getattr(encoder, "name", type(encoder).__name__),
        "weights": getattr(encoder, "weights_tag", None),
        "split": split.name,
        "dtype": DTYPE,
        "complete": False,
    }
    try:
        batches = DataLoader(
            _Images(split), batch_size=batch_size, shuffle=False, num_workers=num_workers,
            collate_fn=_stack,
        )
        _write_features(encoder, batches, split.records, partial, index, dev, progress)
        index["complete"] = True
        _write_index(partial, index)
        _swap_in(partial, path, started)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        encoder.train(was_training)
    return FeatureCache.open(path)


def _check_buildable(split: Split, path: Path) -> None:
    """Refuse, before any work, a split that cannot index a cache (no records, duplicate
    image_ids) and a ``path`` that holds something other than a feature cache."""
    if not split.records:
        raise ValueError(f"split {split.name!r} has no records: nothing to cache at {path}")
    ids = [int(r.image_id) for r in split.records]
    if len(set(ids)) != len(ids):
        raise ValueError(f"split {split.name!r} has duplicate image_ids; cannot index a cache")
    if path.exists() and not _is_cache_dir(path):
        raise FeatureCacheError(
            f"refusing to replace {path}: it exists and is not a feature cache; choose another path"
        )


def _write_features(
    encoder: nn.Module,
    batches: DataLoader,
    records: list[ImageRecord],
    partial: Path,
    index: dict[str, Any],
    dev: torch.device,
    progress: bool,
) -> None:
    """Encode every batch and write its rows of a into ``partial/features.npy``, in the order of
    ``records``; the file is created at the first batch, which fixes L, D and the image size."""
    n = len(records)
    features = None
    row = 0
    with torch.inference_mode(), tqdm(
        total=n, desc=f"caching {index['encoder']} features", unit="img", disable=not progress
    ) as bar:
        for images, names in batches:
            a = encoder(images.to(dev))
            if a.ndim != 3 or a.shape[0] != images.shape[0]:
                raise FeatureCacheError(
                    f"the encoder returned shape {tuple(a.shape)}, expected (B, L, D)"
                )
            if features is None:  # the first batch fixes L, D and the image size
                features = _open_features(encoder, images, a, records, partial, index)
            elif list(images.shape[-2:]) != index["image_size"]:
                raise FeatureCacheError(
                    f"image {names[0]} has size {tuple(images.shape[-2:])}, the first "
                    f"images {tuple(index['image_size'])}: resize them in load_image"
                )
            a16 = a.to(torch.float16)
            if not torch.isfinite(a16).all():
                raise FeatureCacheError(
                    f"annotation vectors of {names} overflow float16 (|a| > 65504)"
                )
            features[row : row + len(names)] = a16.cpu().numpy()
            row += len(names)
            bar.update(len(names))
    assert features is not None and row == n
    features.flush()
    del features


def _open_features(
    encoder: nn.Module,
    images: torch.Tensor,
    a: torch.Tensor,
    records: list[ImageRecord],
    partial: Path,
    index: dict[str, Any],
) -> np.memmap:
    """At the first batch: complete ``index`` with L, D, the grid, the image size and the rows'
    image_ids and filenames, create the (N, L, D) float16 file and write the index (still
    ``complete: false``)."""
    n = len(records)
    _, L, D = a.shape
    grid = _grid_of(encoder, images.shape[-2:], L)
    index.update(
        num_locations=L, feature_dim=D, grid=list(grid),
        image_size=list(images.shape[-2:]), image_ids=[int(r.image_id) for r in records],
        filenames=[r.filename for r in records], num_images=n,
    )
    features = np.lib.format.open_memmap(
        partial / FEATURES_NAME, mode="w+", dtype=np.float16, shape=(n, L, D)
    )
    _write_index(partial, index)  # complete: false
    return features


def _grid_of(encoder: nn.Module, size: Any, L: int) -> tuple[int, int]:
    """(h, w) of the annotation grid for images of ``size``; (L, 1) for an unknown encoder."""
    grid_for = getattr(encoder, "grid_for", None)
    grid = tuple(grid_for(int(size[0]), int(size[1]))) if grid_for else (L, 1)
    if grid[0] * grid[1] != L:
        raise FeatureCacheError(
            f"the encoder returned L = {L} locations, its grid_for{tuple(size)} says {grid}"
        )
    return grid


def _swap_in(partial: Path, path: Path, started: float) -> None:
    """Rename the finished ``partial`` directory to ``path``, replacing an older cache there. A
    complete cache that appeared at ``path`` since this build ``started`` was built by another
    process at the same time, from the same inputs: it is kept and ``partial`` removed."""
    index = path / INDEX_NAME
    if _is_cache_dir(path) and index.stat().st_mtime >= started:
        shutil.rmtree(partial)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{path.name}.old-{os.getpid()}-", dir=path.parent))
    old.rmdir()  # a free name for the old cache
    if path.exists():
        try:
            path.rename(old)
        except FileNotFoundError:  # another build moved it away first
            pass
    try:
        partial.rename(path)
    except OSError:
        if not _is_cache_dir(path):
            raise
        shutil.rmtree(partial)  # another build put its cache there in between: keep that one
    shutil.rmtree(old, ignore_errors=True)
