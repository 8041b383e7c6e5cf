"""A miniature Flickr8k / Flickr30k / MS COCO: the real file formats, a few Shapes images.

The real datasets are gigabytes behind slow links; the code that reads them should still be
exercised everywhere (tests, CI, a laptop without internet). This module writes

* :func:`write_karpathy_fixture` -- ``root/<name>/dataset_<name>.json`` in the exact Karpathy-split
  format (same keys, same nesting, interleaved splits, COCO's ``filepath``/``cocoid`` and
  ``restval``) with its JPEG images under ``root/<name>/images/``: the layout
  :func:`sat_core.data.datasets.load_splits` reads. The pictures and captions come from the Shapes
  world (:func:`sat_core.data.shapes.generate_shapes`), so a model trained on the fixture has
  something real to learn.
* :func:`write_fixture_mirror` -- the archives :data:`sat_core.data.download.DATASETS` downloads
  (``caption_datasets.zip``, ``Flickr8k_Dataset.zip``, ``flickr30k-images.tar.gz``,
  ``train2014.zip``, ``val2014.zip``), with the real folder names inside, in a local folder; its
  ``file://`` URL passed as ``mirror=`` makes :func:`~sat_core.data.download.prepare_dataset` run
  the whole download -> checksum -> safe extraction path offline.
* :func:`write_unsafe_zip` -- a "zip-slip" archive (a member named ``../...``), to show that the
  extraction refuses it.

Everything is a pure function of ``seed``: the same arguments write byte-identical files.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from sat_core.data.shapes import ShapesConfig, generate_shapes

FIXTURE_DATASETS: tuple[str, ...] = ("flickr8k", "flickr30k", "coco")
# Folder inside each image archive, as in the real downloads (Flickr8k's is misspelt upstream).
ARCHIVE_TOP: dict[str, str] = {"flickr8k": "Flicker8k_Dataset", "flickr30k": "flickr30k-images"}
_FIXED_TIME = (2015, 2, 10, 0, 0, 0)  # zip entries need a date: a fixed one keeps bytes stable


@dataclass
class KarpathyFixture:
    """What :func:`write_karpathy_fixture` wrote: paths and per-split image counts."""

    name: str
    data_root: Path  # pass as load_splits(name, data_root=...)
    json_path: Path
    image_root: Path
    counts: dict[str, int] = field(default_factory=dict)  # split -> images in the JSON
    files: list[str] = field(default_factory=list)  # image paths relative to image_root

    @property
    def num_images(self) -> int:
        return sum(self.counts.values())


def _check_name(name: str) -> None:
    if name not in FIXTURE_DATASETS:
        raise ValueError(f"unknown fixture dataset {name!r}; expected one of {FIXTURE_DATASETS}")


def _split_plan(name: str, n_train: int, n_val: int, n_test: int, n_restval: int | None,
                rng: np.random.Generator) -> list[str]:
    if n_restval is None:
        n_restval = 2 if name == "coco" else 0
    counts = {"train": n_train, "val": n_val, "test": n_test, "restval": n_restval}
    bad = {k: v for k, v in counts.items() if not isinstance(v, (int, np.integer)) or v < 0}
    if bad:
        raise ValueError(f"image counts must be integers >= 0, got {bad}")
    if n_train < 1 or n_val < 1 or n_test < 1:
        raise ValueError(f"the fixture needs at least one train, val and test image, got "
                         f"n_train={n_train}, n_val={n_val}, n_test={n_test}")
    if n_restval and name != "coco":
        raise ValueError(f"only COCO has a 'restval' split; {name} files have none (n_restval=0)")
    plan = [s for s, n in counts.items() for _ in range(n)]
    return [plan[i] for i in rng.permutation(len(plan))]  # the real files interleave splits


def _entry(name: str, split: str, rng: np.random.Generator) -> dict:
    """The file naming of each dataset (random, but in the real pattern)."""
    if name == "coco":
        folder = "train2014" if split == "train" else "val2014"
        cocoid = int(rng.integers(1, 600_000))
        return {"filepath": folder, "filename": f"COCO_{folder}_{cocoid:012d}.jpg",
                "cocoid": cocoid}
    photo = int(rng.integers(10**9, 4 * 10**9))
    if name == "flickr8k":
        return {"filename": f"{photo}_{int(rng.integers(16**10)):010x}.jpg"}
    return {"filename": f"{photo}.jpg"}


def _jpeg_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_karpathy_fixture(
    data_root: str | Path,
    name: str = "flickr8k",
    *,
    n_train: int = 8,
    n_val: int = 2,
    n_test: int = 2,
    n_restval: int | None = None,
    image_size: int = 64,
    seed: int = 0,
) -> KarpathyFixture:
    """Write a tiny ``name`` dataset under ``data_root/name`` in the real Karpathy layout.

    ``data_root/name/dataset_name.json`` lists ``n_train + n_val + n_test (+ n_restval)`` images
    in a shuffled split order, each with five sentences (``tokens`` by the Karpathy rule, the
    ``raw`` sentence, ``imgid``, ``sentid``), ``sentids``, ``split`` and ``filename`` -- plus
    ``filepath`` and ``cocoid`` for COCO, whose ``restval`` split defaults to 2 images (0 for
    Flickr, which has none). Images are ``image_size`` px JPEGs under ``data_root/name/images/``
    (COCO: in ``train2014/`` or ``val2014/``). Existing files there are overwritten.
    """
    _check_name(name)
    rng = np.random.default_rng(np.random.SeedSequence([seed, FIXTURE_DATASETS.index(name)]))
    plan = _split_plan(name, n_train, n_val, n_test, n_restval, rng)
    shapes = generate_shapes(len(plan), seed=[seed, 7], config=ShapesConfig(image_size=image_size))
    base = Path(data_root) / name
    image_root = base / "images"
    images, files, sentid, seen = [], [], 0, set()
    for imgid, (split, im) in enumerate(zip(plan, shapes, strict=True)):
        entry = _entry(name, split, rng)
        while entry["filename"] in seen:  # astronomically rare; keep names unique anyway
            entry = _entry(name, split, rng)
        seen.add(entry["filename"])
        rel = "/".join(filter(None, (entry.get("filepath"), entry["filename"])))
        sentences = []
        for tokens, raw in zip(im.captions, im.raw, strict=True):
            sentences.append({"tokens": list(tokens), "raw": raw, "imgid": imgid,
                              "sentid": sentid})
            sentid += 1
        entry.update(sentids=[s["sentid"] for s in sentences], imgid=imgid,
                      sentences=sentences, split=split)
        images.append(entry)
        path = image_root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg_bytes(im.pixels))
        files.append(rel)
    json_path = base / f"dataset_{name}.json"
    json_path.write_text(json.dumps({"images": images, "dataset": name}), encoding="utf-8")
    counts = {s: plan.count(s) for s in ("train", "val", "test", "restval") if s in plan}
    return KarpathyFixture(name, Path(data_root), json_path, image_root, counts, files)


# --------------------------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------------------------


def _zip(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in members:
            zf.writestr(zipfile.ZipInfo(arcname, date_time=_FIXED_TIME), data)


def _tar_gz(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    import gzip

    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tf:
        for arcname, data in members:
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tf.addfile(info, io.BytesIO(data))


def write_fixture_mirror(
    mirror_dir: str | Path,
    datasets: Iterable[str] = FIXTURE_DATASETS,
    **fixture_kw: int,
) -> str:
    """Write the download archives of ``datasets`` into ``mirror_dir``; return its ``file://`` URL.

    Archive names and their inside layout are those of the real downloads:
    ``caption_datasets.zip`` (every ``dataset_<name>.json`` at its top level),
    ``Flickr8k_Dataset.zip`` (``Flicker8k_Dataset/<file>.jpg``), ``flickr30k-images.tar.gz``
    (``flickr30k-images/<file>.jpg``), ``train2014.zip`` and ``val2014.zip``
    (``train2014/COCO_train2014_<id>.jpg``, ...). The files inside are exactly those
    :func:`write_karpathy_fixture` writes with the same ``fixture_kw`` (``n_train``, ``seed``, ...),
    so ``prepare_dataset(name, root, mirror=url)`` reproduces that fixture under ``root/name``.
    """
    names = list(dict.fromkeys(datasets))
    if not names:
        raise ValueError("write_fixture_mirror: name at least one dataset")
    for name in names:
        _check_name(name)
    mirror = Path(mirror_dir)
    mirror.mkdir(parents=True, exist_ok=True)
    captions: list[tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="sat-fixture-") as tmp:
        for name in names:
            fx = write_karpathy_fixture(tmp, name, **fixture_kw)
            captions.append((fx.json_path.name, fx.json_path.read_bytes()))
            if name == "coco":
                for folder in ("train2014", "val2014"):
                    _zip(mirror / f"{folder}.zip",
                         [(f, (fx.image_root / f).read_bytes()) for f in sorted(fx.files)
                          if f.startswith(folder + "/")])
                continue
            members = [(f"{ARCHIVE_TOP[name]}/{f}", (fx.image_root / f).read_bytes())
                       for f in sorted(fx.files)]
            if name == "flickr8k":
                _zip(mirror / "Flickr8k_Dataset.zip", members)
            else:
                _tar_gz(mirror / "flickr30k-images.tar.gz", members)
    _zip(mirror / "caption_datasets.zip", captions)
    return mirror.resolve().as_uri()


def write_unsafe_zip(path: str | Path, member: str = "../escaped.txt") -> Path:
    """A zip whose member ``member`` would land outside the extraction folder ("zip slip").

    It also holds one harmless file first, so a careless extractor would write something before
    failing; :func:`sat_core.data.download.safe_extract` checks every member before writing any.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _zip(path, [("images/ok.txt", b"harmless\n"), (member, b"this file escaped the folder\n")])
    return path


__all__ = [
    "ARCHIVE_TOP", "FIXTURE_DATASETS", "KarpathyFixture", "write_fixture_mirror",
    "write_karpathy_fixture", "write_unsafe_zip",
]
