"""Tests of sat_core.features: the float16 memory-mapped cache of annotation vectors."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from sat_core.data.records import ImageRecord, Split
from sat_core.encoder import build_encoder
from sat_core.features import (
    INDEX_NAME,
    FeatureCache,
    FeatureCacheError,
    MissingFeaturesError,
    build_feature_cache,
    cached_split,
)

IDS = [10, 3, 7, 0, 42]  # not 0..N-1 on purpose: rows and image_ids differ


def tiny_split(fail_at: int | None = None, on_call=None) -> tuple[Split, dict[int, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    images = {i: torch.randn(3, 32, 32, generator=gen) * 3 for i in IDS}
    records = [ImageRecord(i, f"shapes/{i:06d}.png", "train", [["a", "red", "circle"]]) for i in IDS]
    calls = []

    def load_image(record):
        calls.append(record.image_id)
        if on_call is not None:
            on_call(len(calls))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("disk on fire")
        return images[record.image_id]

    return Split("train", records, load_image), images


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    enc = build_encoder("small", channels=8, fine_tune=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for m in enc.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return enc


def fresh(encoder, image):
    with torch.no_grad():
        return encoder.eval()(image[None])[0]


def test_cached_matches_fresh_within_float16(encoder, tmp_path):
    split, images = tiny_split()
    encoder = copy.deepcopy(encoder)
    encoder.set_fine_tune(True)  # a trainable encoder in train mode: the build must use eval mode
    encoder.train()
    cache = build_feature_cache(encoder, split, tmp_path / "c", batch_size=2, progress=False)
    assert encoder.training  # mode restored after the build
    assert len(cache) == 5 and (cache.num_locations, cache.feature_dim) == (16, 10)
    assert cache.grid == (4, 4) and cache.image_ids == IDS
    for i in IDS:
        a = cache[i]
        assert a.dtype == torch.float32 and a.shape == (16, 10)
        ref = fresh(encoder, images[i])
        assert ref.abs().max() > 0.5  # a meaningful comparison, not zeros against zeros
        # float16 keeps 11 significant bits: relative error <= 2^-11 (+ tiny absolute slack for
        # subnormals and for batch-of-2 vs batch-of-1 rounding in the convolution)
        assert torch.all((a - ref).abs() <= ref.abs() * 2**-11 + 1e-6)
    # the file on disk really is float16 (N, L, D), row r = IDS[r]
    raw = np.load(tmp_path / "c" / "features.npy")
    assert raw.dtype == np.float16 and raw.shape == (5, 16, 10)
    assert np.array_equal(raw[1].astype(np.float32), cache[3].numpy())
    index = json.loads((tmp_path / "c" / INDEX_NAME).read_text())
    assert index["complete"] is True and index["encoder"] == "small"
    assert index["image_size"] == [32, 32] and index["dtype"] == "float16"
    assert index["filenames"][4] == "shapes/000042.png"


def test_reopen_and_expect_encoder(encoder, tmp_path):
    split, _ = tiny_split()
    built = build_feature_cache(encoder, split, tmp_path / "c", batch_size=3, progress=False)
    again = FeatureCache.open(tmp_path / "c", expect_encoder="small")
    assert len(again) == 5 and again.image_ids == IDS
    for i in IDS:
        assert torch.equal(again[i], built[i])
    assert torch.equal(FeatureCache.open(tmp_path / "c" / INDEX_NAME)[7], built[7])
    # a pickled cache (DataLoader worker) reopens the memmap instead of carrying the array
    clone = pickle.loads(pickle.dumps(again))
    assert clone._features is None and torch.equal(clone[42], built[42])
    with pytest.raises(FeatureCacheError, match=r"c was built with the 'small' encoder.*'vgg19'"):
        FeatureCache.open(tmp_path / "c", expect_encoder="vgg19")
    with pytest.raises(MissingFeaturesError, match="image_id 5 is not in the feature cache"):
        again[5]


def test_cached_split_swaps_the_loader(encoder, tmp_path):
    split, _ = tiny_split()
    cache = build_feature_cache(encoder, split, tmp_path / "c", progress=False)
    cs = cached_split(split, cache)
    assert cs.records is split.records and cs.name == "train"
    for r in cs.records:
        assert torch.equal(cs.load_image(r), cache[r.image_id])
    # a record whose image is not in the cache
    extra = ImageRecord(99, "shapes/000099.png", "train", [["x"]])
    bigger = Split("train", [*split.records, extra], split.load_image)
    with pytest.raises(MissingFeaturesError, match=r"1 of the 6 images.*\[99\]"):
        cached_split(bigger, cache)
    with pytest.raises(MissingFeaturesError, match="image_id 99"):
        cache.loader()(extra)
    # same image_id, another file: a cache of another dataset
    other = Split("train", [ImageRecord(3, "flickr/3.jpg", "train", [])], split.load_image)
    with pytest.raises(FeatureCacheError, match="'flickr/3.jpg' in the split but 'shapes/000003.png'"):
        cached_split(other, cache)


def test_interrupted_build_leaves_no_complete_cache(encoder, tmp_path):
    path = tmp_path / "c"
    seen = {}

    def look_mid_build(n_calls):
        if n_calls == 4:  # rows 0..1 written (batch_size 2); the 2nd batch is being loaded
            seen["final_exists"] = path.exists()
            (partial,) = tmp_path.glob(f"c.partial-{os.getpid()}-*")  # this build's own
            seen["partial_complete"] = json.loads((partial / INDEX_NAME).read_text())["complete"]
            with pytest.raises(FeatureCacheError, match="incomplete"):
                FeatureCache.open(partial)

    split, _ = tiny_split(fail_at=4, on_call=look_mid_build)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_feature_cache(encoder, split, path, batch_size=2, progress=False)
    assert seen == {"final_exists": False, "partial_complete": False}
    assert not path.exists() and not list(tmp_path.glob("c.partial*"))
    with pytest.raises(FeatureCacheError, match="no feature cache at .*c;"):
        FeatureCache.open(path)
    # a rebuild works
    split, images = tiny_split()
    cache = build_feature_cache(encoder, split, path, batch_size=2, progress=False)
    assert torch.allclose(cache[42], fresh(encoder, images[42]), rtol=2**-10, atol=1e-6)


def test_failed_rebuild_keeps_the_old_cache_and_stale_partial_is_replaced(encoder, tmp_path):
    path = tmp_path / "c"
    split, images = tiny_split()
    old = build_feature_cache(encoder, split, path, progress=False)[10].clone()
    broken, _ = tiny_split(fail_at=2)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_feature_cache(encoder, broken, path, progress=False)
    assert torch.equal(FeatureCache.open(path)[10], old)
    # a killed build leaves <path>.partial behind: open() points at it, a rebuild replaces it
    (tmp_path / "d.partial").mkdir()
    (tmp_path / "d.partial" / "junk").write_text("x")
    with pytest.raises(FeatureCacheError, match="interrupted build left .*d.partial"):
        FeatureCache.open(tmp_path / "d")
    cache = build_feature_cache(encoder, split, tmp_path / "d", progress=False)
    assert len(cache) == 5 and not (tmp_path / "d.partial").exists()


def test_wrong_files_get_clear_errors(encoder, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(FeatureCacheError, match=r"junk.bin is not a feature cache"):
        FeatureCache.open(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureCacheError, match=r"empty is not a feature cache"):
        FeatureCache.open(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / INDEX_NAME).write_text(json.dumps({"images": []}))
    with pytest.raises(FeatureCacheError, match=r"other.index.json is not a feature-cache index"):
        FeatureCache.open(tmp_path / "other")
    (tmp_path / "other" / INDEX_NAME).write_text("{not json")
    with pytest.raises(FeatureCacheError, match=r"other.index.json is not valid JSON"):
        FeatureCache.open(tmp_path / "other")
    # a cache whose index says incomplete, or whose array does not match its index
    split, _ = tiny_split()
    build_feature_cache(encoder, split, tmp_path / "c", progress=False)
    index_file = tmp_path / "c" / INDEX_NAME
    index = json.loads(index_file.read_text())
    index_file.write_text(json.dumps({**index, "complete": False}))
    with pytest.raises(FeatureCacheError, match=r"c is incomplete"):
        FeatureCache.open(tmp_path / "c")
    index_file.write_text(json.dumps({**index, "feature_dim": 12}))
    with pytest.raises(FeatureCacheError, match=r"the cache is corrupt"):
        FeatureCache.open(tmp_path / "c")
    # never overwrite something that is not a cache
    with pytest.raises(FeatureCacheError, match="refusing to replace .*empty"):
        build_feature_cache(encoder, split, tmp_path / "empty", progress=False)


def test_images_of_different_sizes_are_refused(encoder, tmp_path):
    records = [ImageRecord(i, f"img{i}.png", "val", []) for i in range(3)]
    sizes = {0: 32, 1: 32, 2: 40}
    split = Split("val", records, lambda r: torch.zeros(3, sizes[r.image_id], sizes[r.image_id]))
    with pytest.raises(FeatureCacheError, match=r"img2.png has shape \(3, 40, 40\)"):
        build_feature_cache(encoder, split, tmp_path / "c", batch_size=3, progress=False)
    with pytest.raises(FeatureCacheError, match=r"img2.png has size \(40, 40\)"):
        build_feature_cache(encoder, split, tmp_path / "c", batch_size=2, progress=False)
    assert not (tmp_path / "c").exists()


def test_concurrent_builds_of_one_cache_both_succeed(encoder, tmp_path):
    # two runs that build one cache key at the same time (issue 14): each writes its own
    # partial folder; the one that finishes second keeps the first one's cache
    path = tmp_path / "c"
    both_started = threading.Barrier(2, timeout=30)
    results, errors = [], []

    def build():
        split, _ = tiny_split(on_call=lambda n: both_started.wait() if n == 2 else None)
        try:
            results.append(build_feature_cache(encoder, split, path, batch_size=2,
                                               progress=False))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)
            both_started.abort()

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 2
    _, images = tiny_split()
    assert torch.allclose(FeatureCache.open(path)[42], fresh(encoder, images[42]),
                          rtol=2**-10, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no partial, no old left


def test_a_killed_builds_partial_is_removed_by_the_next_build(encoder, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    left = tmp_path / f"c.partial-{int(dead.stdout)}-x1y2"  # a build killed mid-way
    left.mkdir()
    (left / INDEX_NAME).write_text("{}")
    split, _ = tiny_split()
    build_feature_cache(encoder, split, tmp_path / "c", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
