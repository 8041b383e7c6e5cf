"""Chapter 10 exercise check: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import pytest

from sat_core.data.batching import LengthGroupedBatchSampler
from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch10 import check_shard_batches, shard_batches


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_shard_batches(fn)
    return str(info.value)


def test_reference_by_hand():
    epoch = [[k] for k in range(10)]
    # 10 batches, 4 ranks: drop the last 2, then rank r takes r, r + 4
    assert shard_batches(epoch, 4, 0) == [[0], [4]]
    assert shard_batches(epoch, 4, 3) == [[3], [7]]
    assert shard_batches(epoch, 1, 0) == epoch
    assert shard_batches(epoch[:3], 4, 2) == []


def test_reference_is_what_the_real_sampler_yields():
    lengths = [3, 5, 5, 4, 3, 3, 5, 4, 4, 4, 6, 3, 5]
    full = LengthGroupedBatchSampler(lengths, 2, seed=7)
    full.set_epoch(2)
    epoch = full.batches()
    for rank in range(3):
        sampler = LengthGroupedBatchSampler(lengths, 2, seed=7, num_replicas=3, rank=rank)
        sampler.set_epoch(2)
        assert shard_batches(epoch, 3, rank) == list(sampler)
    # the shards are disjoint and cover all but the dropped tail
    shards = [b for rank in range(3) for b in shard_batches(epoch, 3, rank)]
    assert sorted(map(tuple, shards)) == sorted(map(tuple, epoch[: len(epoch) - len(epoch) % 3]))


def test_a_correct_answer_passes(capsys):
    def mine(batches, num_replicas, rank):
        usable = len(batches) - len(batches) % num_replicas
        return [batches[k] for k in range(rank, usable, num_replicas)]

    check_shard_batches(mine)
    assert capsys.readouterr().out.startswith("✓ sharding batches between processes")


def test_forgetting_to_drop_the_tail_is_explained():
    msg = failure(lambda b, n, r: b[r::n])
    assert "10 batches, 4 processes, rank 0" in msg
    assert "expected batches [0, 4], got [0, 4, 8]" in msg
    assert "drop the last len(batches) % num_replicas = 2 batches" in msg
    assert "wait forever" in msg


def test_every_rank_taking_everything_is_explained():
    msg = failure(lambda b, n, r: list(b))
    assert "rank 0 of 2" in msg and "every rank takes only its share" in msg


def test_contiguous_blocks_are_recognised():
    def blocks(b, n, r):
        per = (len(b) - len(b) % n) // n
        return b[r * per:(r + 1) * per]

    msg = failure(blocks)
    assert "rank 0 of 2" in msg and "expected batches [0, 2, 4, 6], got [0, 1, 2, 3]" in msg
    assert "interleaves" in msg


def test_wrong_type():
    assert "return a list of batches" in failure(lambda b, n, r: tuple(b[r::n]))


# --------------------------------------------------------------------------- wrong answers


def blocks(b, n, r):
    per = (len(b) - len(b) % n) // n
    return b[r * per:(r + 1) * per]


WRONG_ANSWERS = [
    pytest.param(lambda b, n, r: b[r::n], "drop the last len(batches) % num_replicas",
                 id="tail not dropped"),
    pytest.param(lambda b, n, r: b[len(b) % n:][r::n], "not the first ones",
                 id="head dropped instead"),
    pytest.param(lambda b, n, r: list(b), "every rank takes only its share", id="everything"),
    pytest.param(blocks, "interleaves", id="contiguous blocks"),
    pytest.param(lambda b, n, r: tuple(b[r::n]), "return a list of batches", id="a tuple"),
]


@pytest.mark.parametrize("answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(answer, hint):
    assert hint in failure(answer)
