from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_core.data.batching import (
    CaptionBatch,
    LengthGroupedBatchSampler,
    collate_captions,
    collate_images,
)


def _items():
    return [
        (torch.full((3, 2, 2), 0.0), torch.tensor([1, 5, 6, 2]), 7),
        (torch.full((3, 2, 2), 1.0), torch.tensor([1, 2]), 3),
        (torch.full((3, 2, 2), 2.0), torch.tensor([1, 8, 2]), 7),
    ]


def test_collate_captions_pads_with_zero():
    b = collate_captions(_items())
    assert isinstance(b, CaptionBatch) and len(b) == 3
    assert b.captions.tolist() == [[1, 5, 6, 2], [1, 2, 0, 0], [1, 8, 2, 0]]
    assert b.lengths.tolist() == [4, 2, 3]
    assert b.image_index.tolist() == [7, 3, 7]
    assert b.images.shape == (3, 3, 2, 2) and b.images[:, 0, 0, 0].tolist() == [0.0, 1.0, 2.0]
    assert b.captions.dtype == b.lengths.dtype == b.image_index.dtype == torch.long


def test_collate_features_instead_of_images():
    items = [(torch.randn(5, 4), torch.tensor([1, 2]), i) for i in range(2)]
    assert collate_captions(items).images.shape == (2, 5, 4)


def test_batch_to_moves_every_tensor():
    b = collate_captions(_items())
    m = b.to("meta")
    assert all(t.device.type == "meta" for t in (m.images, m.captions, m.lengths, m.image_index))
    assert b.images.device.type == "cpu"  # a copy, the original is untouched


def test_collate_images_and_empty_input():
    refs = [[["a", "dog"], ["dog"]], [["cat"]]]
    items = [(torch.zeros(3, 2, 2), refs[0], 4), (torch.ones(3, 2, 2), refs[1], 9)]
    images, references, index = collate_images(items)
    assert images.shape == (2, 3, 2, 2) and references == refs and index.tolist() == [4, 9]
    with pytest.raises(ValueError, match="empty"):
        collate_images([])
    with pytest.raises(ValueError, match="empty"):
        collate_captions([])


# -- LengthGroupedBatchSampler ---------------------------------------------------------------
LENGTHS = [3, 4, 3, 5, 3, 4, 3, 3]  # length 3: 5 items, length 4: 2, length 5: 1


def test_batches_by_hand_without_shuffle():
    s = LengthGroupedBatchSampler(LENGTHS, batch_size=2, shuffle=False)
    assert list(s) == [[0, 2], [4, 6], [7], [1, 5], [3]]
    assert len(s) == 5
    s = LengthGroupedBatchSampler(LENGTHS, batch_size=2, shuffle=False, drop_last=True)
    assert list(s) == [[0, 2], [4, 6], [1, 5]]
    assert len(s) == 3


def test_every_index_once_and_equal_lengths_inside_a_batch():
    s = LengthGroupedBatchSampler(LENGTHS, batch_size=2, seed=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == 5
        assert sorted(i for b in batches for i in b) == list(range(len(LENGTHS)))
        for b in batches:
            assert len({LENGTHS[i] for i in b}) == 1 and 1 <= len(b) <= 2


def test_shuffle_is_deterministic_in_seed_and_epoch():
    lengths = [i % 4 for i in range(200)]
    a = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5)
    b = LengthGroupedBatchSampler(lengths, batch_size=8, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again replays the same epoch
    epoch2 = list(a)
    a.set_epoch(3)
    assert list(a) != epoch2
    assert list(LengthGroupedBatchSampler(lengths, batch_size=8, seed=6)) != list(
        LengthGroupedBatchSampler(lengths, batch_size=8, seed=5))


def test_rank_shares_are_disjoint_and_equal():
    lengths = [i % 3 for i in range(23)]  # groups of 8, 8, 7 -> batches of 3: 3 + 3 + 3 = 9
    shares = []
    for rank in range(4):
        s = LengthGroupedBatchSampler(lengths, batch_size=3, seed=2, num_replicas=4, rank=rank)
        s.set_epoch(1)
        shares.append(list(s))
        assert len(shares[-1]) == len(s) == 9 // 4
    flat = [i for share in shares for b in share for i in b]
    assert len(flat) == len(set(flat))  # disjoint
    full = LengthGroupedBatchSampler(lengths, batch_size=3, seed=2)
    full.set_epoch(1)
    assert [b for share in zip(*shares, strict=True) for b in share] == list(full)[:8]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedBatchSampler(LENGTHS, batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedBatchSampler(LENGTHS, batch_size=2, num_replicas=2, rank=2)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(2, 7), max_size=60),
    st.integers(1, 9),
    st.booleans(),
    st.integers(1, 3),
    st.integers(0, 5),
)
def test_properties_against_brute_force(lengths, batch_size, drop_last, num_replicas, epoch):
    counts = Counter(lengths)
    per = (lambda n: n // batch_size) if drop_last else (lambda n: math.ceil(n / batch_size))
    total = sum(per(n) for n in counts.values())
    seen = []
    for rank in range(num_replicas):
        s = LengthGroupedBatchSampler(lengths, batch_size, drop_last=drop_last,
                                      num_replicas=num_replicas, rank=rank, seed=epoch)
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s) == total // num_replicas
        for b in batches:
            assert len({lengths[i] for i in b}) == 1
            assert 1 <= len(b) <= batch_size and (not drop_last or len(b) == batch_size)
        seen += [i for b in batches for i in b]
    assert len(seen) == len(set(seen))
    if num_replicas == 1 and not drop_last:
        assert sorted(seen) == list(range(len(lengths)))
    if drop_last and num_replicas == 1:
        assert len(seen) == sum(n - n % batch_size for n in counts.values())
