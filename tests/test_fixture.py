"""The Karpathy-format fixture and its fake download mirror (sat_core.data.fixture)."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sat_core.data.datasets import load_splits
from sat_core.data.download import ChecksumError, UnsafeArchiveError, prepare_dataset, safe_extract
from sat_core.data.fixture import (
    write_fixture_mirror,
    write_karpathy_fixture,
    write_unsafe_zip,
)
from sat_core.data.shapes import ShapesConfig, generate_shapes

SMALL = dict(n_train=3, n_val=1, n_test=1, image_size=32)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), hidden bookkeeping files left out."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the JSON format


@pytest.mark.parametrize("name", ["flickr8k", "flickr30k", "coco"])
def test_json_has_the_karpathy_structure(tmp_path, name):
    fx = write_karpathy_fixture(tmp_path, name, n_train=5, n_val=2, n_test=3, image_size=32)
    assert fx.json_path == tmp_path / name / f"dataset_{name}.json"
    data = json.loads(fx.json_path.read_text())
    assert data["dataset"] == name
    images = data["images"]
    expected_counts = {"train": 5, "val": 2, "test": 3} | ({"restval": 2} if name == "coco" else {})
    counts = {s: sum(e["split"] == s for e in images) for s in expected_counts}
    assert counts == expected_counts == fx.counts
    order = [e["split"] for e in images]
    assert order != sorted(order, key=["train", "restval", "val", "test"].index)  # interleaved
    keys = {"filename", "imgid", "sentids", "sentences", "split"}
    if name == "coco":
        keys |= {"filepath", "cocoid"}
    all_sentids = []
    for i, entry in enumerate(images):
        assert set(entry) == keys
        assert entry["imgid"] == i
        assert len(entry["sentences"]) == 5
        assert entry["sentids"] == [s["sentid"] for s in entry["sentences"]]
        all_sentids += entry["sentids"]
        for s in entry["sentences"]:
            assert set(s) == {"tokens", "raw", "imgid", "sentid"}
            assert s["imgid"] == i
            # the Karpathy rule by hand for these sentences: "A big red circle." -> lower, no "."
            assert s["raw"][0].isupper() and s["raw"].endswith(".")
            assert s["tokens"] == s["raw"][:-1].lower().split()
        if name == "coco":
            folder = "train2014" if entry["split"] == "train" else "val2014"
            assert entry["filepath"] == folder
            assert entry["filename"] == f"COCO_{folder}_{entry['cocoid']:012d}.jpg"
        elif name == "flickr8k":
            assert re.fullmatch(r"\d{10}_[0-9a-f]{10}\.jpg", entry["filename"])
        else:
            assert re.fullmatch(r"\d{10}\.jpg", entry["filename"])
    assert all_sentids == list(range(5 * len(images)))
    assert len({e["filename"] for e in images}) == len(images)


def test_images_are_the_shapes_pictures_as_jpeg(tmp_path):
    fx = write_karpathy_fixture(tmp_path, "flickr8k", **SMALL)
    images = json.loads(fx.json_path.read_text())["images"]
    shapes = generate_shapes(len(images), seed=[0, 7], config=ShapesConfig(image_size=32))
    decoded = []
    for entry, im in zip(images, shapes, strict=True):
        path = fx.image_root / entry["filename"]
        with Image.open(path) as pic:
            assert pic.format == "JPEG" and pic.mode == "RGB" and pic.size == (32, 32)
            decoded.append(np.asarray(pic, dtype=np.float64))
        assert [s["tokens"] for s in entry["sentences"]] == im.captions
    # JPEG is lossy (and the Shapes pixel noise is hard to compress), so compare distances: each
    # file is close to its own Shapes image and at least twice as far from every other one.
    dist = np.array([[np.abs(d - im.pixels).mean() for im in shapes] for d in decoded])
    own = np.diag(dist)
    assert (own < 12).all()
    others = dist + np.diag(np.full(len(own), np.inf))
    assert (2 * own < others.min(axis=1)).all()


def test_same_seed_same_bytes_other_seed_other_files(tmp_path):
    a = _tree(write_karpathy_fixture(tmp_path / "a", "coco", **SMALL).data_root)
    b = _tree(write_karpathy_fixture(tmp_path / "b", "coco", **SMALL).data_root)
    c = _tree(write_karpathy_fixture(tmp_path / "c", "coco", seed=1, **SMALL).data_root)
    assert a == b
    assert a.keys() != c.keys()


def test_loader_reads_the_fixture_and_folds_restval(tmp_path):
    fx = write_karpathy_fixture(tmp_path, "coco", n_train=4, n_val=2, n_test=1, n_restval=3,
                                image_size=32)
    splits = load_splits("coco", data_root=tmp_path, image_size=32)
    assert {k: len(v) for k, v in splits.items()} == {"train": 7, "val": 2, "test": 1}
    data = json.loads(fx.json_path.read_text())["images"]
    by_id = {e["imgid"]: e for e in data}
    for split in splits.values():
        for r in split.records:
            e = by_id[r.image_id]
            assert r.filename == f"{e['filepath']}/{e['filename']}"
            assert r.captions == [s["tokens"] for s in e["sentences"]]
            assert r.extra["cocoid"] == e["cocoid"]
    x = splits["train"].load_image(splits["train"].records[0])
    assert x.shape == (3, 32, 32)


def test_bad_arguments_are_explained(tmp_path):
    with pytest.raises(ValueError, match="unknown fixture dataset 'mscoco'.*flickr8k"):
        write_karpathy_fixture(tmp_path, "mscoco")
    with pytest.raises(ValueError, match="only COCO has a 'restval' split"):
        write_karpathy_fixture(tmp_path, "flickr8k", n_restval=1)
    with pytest.raises(ValueError, match="at least one train, val and test image"):
        write_karpathy_fixture(tmp_path, "flickr30k", n_val=0)
    with pytest.raises(ValueError, match="name at least one dataset"):
        write_fixture_mirror(tmp_path, datasets=[])


# --------------------------------------------------------------------------- the mirror


def test_mirror_archives_have_the_real_names_and_layout(tmp_path):
    url = write_fixture_mirror(tmp_path / "m", **SMALL)
    m = tmp_path / "m"
    assert url == m.resolve().as_uri() and url.startswith("file://")
    assert sorted(p.name for p in m.iterdir()) == sorted([
        "caption_datasets.zip", "Flickr8k_Dataset.zip", "flickr30k-images.tar.gz",
        "train2014.zip", "val2014.zip"])
    with zipfile.ZipFile(m / "caption_datasets.zip") as zf:
        assert sorted(zf.namelist()) == [
            "dataset_coco.json", "dataset_flickr30k.json", "dataset_flickr8k.json"]
    with zipfile.ZipFile(m / "Flickr8k_Dataset.zip") as zf:
        assert all(n.startswith("Flicker8k_Dataset/") for n in zf.namelist())
        assert len(zf.namelist()) == 5
    with tarfile.open(m / "flickr30k-images.tar.gz") as tf:
        assert all(n.startswith("flickr30k-images/") for n in tf.getnames())
    for folder in ("train2014", "val2014"):
        with zipfile.ZipFile(m / f"{folder}.zip") as zf:
            assert zf.namelist() and all(
                re.fullmatch(rf"{folder}/COCO_{folder}_\d{{12}}\.jpg", n) for n in zf.namelist())
    # byte-stable archives: a second mirror has the same sha256 for every file
    write_fixture_mirror(tmp_path / "m2", **SMALL)
    assert {p.name: _sha256(p) for p in m.iterdir()} == {
        p.name: _sha256(p) for p in (tmp_path / "m2").iterdir()}


@pytest.mark.parametrize("name", ["flickr8k", "flickr30k", "coco"])
def test_prepare_dataset_from_the_mirror_reproduces_the_fixture(tmp_path, name):
    url = write_fixture_mirror(tmp_path / "mirror", datasets=[name], **SMALL)
    root = tmp_path / "data"
    ds_dir = prepare_dataset(name, root, mirror=url, progress=False)
    direct = write_karpathy_fixture(tmp_path / "direct", name, **SMALL)
    assert _tree(ds_dir) == _tree(direct.data_root / name)
    sums = json.loads((root / "checksums.json").read_text())
    for archive, digest in sums.items():
        assert digest == _sha256(tmp_path / "mirror" / archive)
    splits = load_splits(name, data_root=root, image_size=32)
    assert len(splits["test"]) == 1


def test_a_changed_archive_fails_its_recorded_checksum(tmp_path):
    url = write_fixture_mirror(tmp_path / "mirror", datasets=["flickr8k"], **SMALL)
    root = tmp_path / "data"
    prepare_dataset("flickr8k", root, mirror=url, progress=False)
    # upstream changes (or a transfer corrupts) the archive; the local copy is gone
    write_fixture_mirror(tmp_path / "mirror", datasets=["flickr8k"], seed=5, **SMALL)
    (root / "downloads" / "Flickr8k_Dataset.zip").unlink()
    (root / "flickr8k" / ".done-Flickr8k_Dataset.zip").unlink()
    with pytest.raises(ChecksumError, match="sha256 mismatch for Flickr8k_Dataset.zip"):
        prepare_dataset("flickr8k", root, mirror=url, progress=False)
    assert not (root / "downloads" / "Flickr8k_Dataset.zip").exists()


def test_unsafe_zip_is_refused_before_anything_is_written(tmp_path):
    archive = write_unsafe_zip(tmp_path / "evil.zip")
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["images/ok.txt", "../escaped.txt"]
    dest = tmp_path / "out" / "dest"
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./escaped\.txt'"):
        safe_extract(archive, dest)
    assert not (tmp_path / "out" / "escaped.txt").exists()
    assert not (dest / "images" / "ok.txt").exists()
