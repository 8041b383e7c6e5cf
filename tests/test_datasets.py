from __future__ import annotations

import sys
import types

import pytest
import torch
from torch.utils.data import DataLoader

from sat_core.data.batching import LengthGroupedBatchSampler, collate_captions, collate_images
from sat_core.data.datasets import (
    CaptionDataset,
    ImageDataset,
    build_vocabulary,
    load_splits,
)
from sat_core.data.karpathy import load_karpathy
from sat_core.data.records import ImageRecord, Split
from sat_core.text import Vocabulary


def _no_io(record):
    raise AssertionError(f"image of {record.filename} was loaded")


def _split(captions_per_image, load_image=_no_io) -> Split:
    records = [ImageRecord(i, f"{i}.png", "train", caps) for i, caps in enumerate(captions_per_image)]
    return Split("train", records, load_image)


def test_caption_dataset_one_item_per_caption():
    vocab = Vocabulary(["a", "dog", "cat", "runs"])  # a=4 dog=5 cat=6 runs=7
    split = _split([[["a", "dog", "runs"], ["a", "cat"]], [["dog"]]],
                   load_image=lambda r: torch.full((3, 2, 2), float(r.image_id)))
    ds = CaptionDataset(split, vocab)
    assert len(ds) == 3
    expected = [([1, 4, 5, 7, 2], 0), ([1, 4, 6, 2], 0), ([1, 5, 2], 1)]
    for i, (ids, idx) in enumerate(expected):
        image, caption, image_index = ds[i]
        assert caption.dtype == torch.long and caption.tolist() == ids
        assert image_index == idx
        assert torch.equal(image, torch.full((3, 2, 2), float(idx)))


def test_lengths_need_no_image_io_and_unknowns_become_unk():
    vocab = Vocabulary(["a"])
    ds = CaptionDataset(_split([[["a", "b", "c"], []], [["a"]]]), vocab)
    assert ds.lengths == [5, 2, 3]
    assert ds.image_indices == [0, 0, 1]
    assert ds._captions[0].tolist() == [1, 4, 3, 3, 2]


def test_max_len_truncates_words_and_keeps_end():
    vocab = Vocabulary(["w1", "w2", "w3", "w4"])  # ids 4..7
    ds = CaptionDataset(_split([[["w1", "w2", "w3", "w4"], ["w1"]]]), vocab, max_len=2)
    assert ds.lengths == [4, 3]
    assert ds._captions[0].tolist() == [1, 4, 5, 2]
    with pytest.raises(ValueError, match="max_len"):
        CaptionDataset(_split([]), vocab, max_len=0)


def test_image_dataset_one_item_per_image(tiny_karpathy):
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, image_size=4)
    ds = ImageDataset(splits["train"])
    assert len(ds) == 4  # images 0, 1, 4 (restval), 5
    image, refs, index = ds[1]
    assert refs == tiny_karpathy.tokens(1) and len(refs) == 3 and index == 1
    assert image.shape == (3, 4, 4)
    images, references, idx = collate_images([ds[0], ds[1]])
    assert images.shape == (2, 3, 4, 4) and idx.tolist() == [0, 1]
    assert references == [tiny_karpathy.tokens(0), tiny_karpathy.tokens(1)]


def test_build_vocabulary_uses_train_captions_only(tiny_karpathy):
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root)
    vocab = build_vocabulary(splits["train"], min_count=1, max_size=None)
    assert "zebra" not in vocab  # only in a val caption
    assert "tshirt" not in vocab  # only in a test caption
    assert "rainbow" in vocab  # restval caption, folded into train
    train_words = {w for r in splits["train"].records for c in r.captions for w in c}
    assert set(vocab.itos[4:]) == train_words
    assert vocab.itos[4] == "a"  # the most frequent word
    assert len(build_vocabulary(splits["train"], max_size=5)) == 9
    # counted by hand over images 0, 1, 4, 5: a 11, dog 6, in 4, of 3, the 3, then 2s
    assert build_vocabulary(splits["train"], min_count=3).itos[4:] == ["a", "dog", "in", "of", "the"]


def test_dataloader_with_length_grouped_batches(tiny_karpathy):
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, image_size=4)
    vocab = build_vocabulary(splits["train"])
    ds = CaptionDataset(splits["train"], vocab)
    sampler = LengthGroupedBatchSampler(ds.lengths, batch_size=2, seed=3)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate_captions)
    seen = []
    for batch in loader:
        assert (batch.lengths == batch.lengths[0]).all()
        assert batch.captions.shape == (len(batch), int(batch.lengths[0]))
        assert (batch.captions[:, 0] == vocab.start_id).all()
        assert (batch.captions[:, -1] == vocab.end_id).all()
        assert batch.images.shape == (len(batch), 3, 4, 4)
        for row, img_idx in zip(batch.captions, batch.image_index, strict=True):
            words = vocab.decode(row)
            assert words in splits["train"].records[int(img_idx)].captions
            seen.append(" ".join(words))
    all_caps = sorted(" ".join(c) for r in splits["train"].records for c in r.captions)
    assert sorted(seen) == all_caps


def test_load_splits_reads_the_conventional_layout(tiny_data_root):
    splits = load_splits("flickr8k", data_root=tiny_data_root, image_size=6, restval=None)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    x = splits["val"].load_image(splits["val"].records[0])
    assert x.shape == (3, 6, 6)


def test_load_splits_missing_dataset_says_how_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_splits("flickr8k", data_root=tmp_path / "data")
    msg = str(e.value)
    assert "dataset_flickr8k.json" in msg
    assert f"python -m sat_core.data.download flickr8k --root {tmp_path / 'data'}" in msg
    with pytest.raises(FileNotFoundError, match="manual step"):
        load_splits("flickr30k", data_root=tmp_path)


def test_load_splits_missing_image_folder(tiny_data_root):
    (tiny_data_root / "flickr8k" / "images").rename(tiny_data_root / "flickr8k" / "elsewhere")
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_splits("flickr8k", data_root=tiny_data_root)


def test_load_splits_unknown_dataset():
    with pytest.raises(ValueError, match="shapes"):
        load_splits("imagenet")


def test_load_splits_dispatches_shapes(monkeypatch):
    calls = []

    def make_shapes_splits(n_train, n_val, n_test, seed=0, image_size=64, **kw):
        calls.append(dict(n_train=n_train, n_val=n_val, n_test=n_test, seed=seed,
                          image_size=image_size, **kw))
        return {"train": "T"}

    fake = types.ModuleType("sat_core.data.shapes")
    fake.make_shapes_splits = make_shapes_splits
    monkeypatch.setitem(sys.modules, "sat_core.data.shapes", fake)
    out = load_splits("shapes", shapes=dict(n_train=5, n_val=2, n_test=1, seed=7), image_size=32)
    assert out == {"train": "T"}
    assert calls == [dict(n_train=5, n_val=2, n_test=1, seed=7, image_size=32)]
    load_splits("shapes", shapes=dict(n_train=1, n_val=1, n_test=1, image_size=16), image_size=32)
    assert calls[-1]["image_size"] == 16  # an explicit Shapes option wins
    with pytest.raises(TypeError, match="restval"):
        load_splits("shapes", shapes={}, restval=None)
