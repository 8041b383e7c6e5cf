"""Tests of sat_core.grounding: hand-made alphas and masks with known answers, and the alignment."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sat_core.data.records import Split
from sat_core.data.shapes import make_shapes_splits
from sat_core.grounding import (
    attention_grounding,
    cell_box,
    cell_overlaps,
    object_word_steps,
    peak_hit,
    score_caption,
    summarize,
    word_type,
)
from sat_core.text import Vocabulary


def one_hot(i: int, L: int) -> torch.Tensor:
    a = torch.full((L,), 0.01)
    a[i] = 1.0
    return a / a.sum()


def square_mask(y0: int, y1: int, x0: int, x1: int, size: int = 8) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------- geometry
def test_cell_box_row_major_and_uneven_grids():
    assert cell_box(0, (2, 2), (4, 4)) == (0, 2, 0, 2)
    assert cell_box(1, (2, 2), (4, 4)) == (0, 2, 2, 4)  # i = r * w + c: (0, 1) is top right
    assert cell_box(2, (2, 2), (4, 4)) == (2, 4, 0, 2)
    assert cell_box(5, (2, 3), (4, 6)) == (2, 4, 4, 6)
    # 3 rows over 8 pixels: floor(8r/3) -> 0, 2, 5, 8
    assert [cell_box(3 * r, (3, 3), (8, 8))[:2] for r in range(3)] == [(0, 2), (2, 5), (5, 8)]
    with pytest.raises(IndexError, match="outside the 2x2 grid"):
        cell_box(4, (2, 2), (4, 4))


def test_cell_overlaps_by_hand():
    mask = square_mask(4, 8, 6, 8)  # 4 rows x 2 cols in the bottom-right cell of a 2x2 grid
    np.testing.assert_allclose(cell_overlaps(mask, (2, 2)), [0, 0, 0, 8 / 16])


@pytest.mark.parametrize("grid, size", [((8, 8), (64, 64)), ((3, 5), (8, 13)), ((7, 7), (64, 50)),
                                        ((6, 2), (4, 3))])
def test_cell_overlaps_match_counting_each_cell_box(grid, size):
    """Random masks, grids that do and do not divide the image (and more rows than pixels):
    every fraction equals the mean of the mask over :func:`cell_box`'s rectangle (0 if empty)."""
    rng = np.random.default_rng(sum(grid) + sum(size))
    for _ in range(5):
        mask = rng.random(size) < rng.random()
        want = []
        for i in range(grid[0] * grid[1]):
            y0, y1, x0, x1 = cell_box(i, grid, size)
            cell = mask[y0:y1, x0:x1]
            want.append(cell.mean() if cell.size else 0.0)
        assert cell_overlaps(mask, grid).tolist() == want  # exact, not approximately


# ------------------------------------------------------------------------------- a peak
def test_peak_inside_outside():
    mask = square_mask(4, 8, 4, 8)  # exactly cell 3 of a 2x2 grid
    assert peak_hit(one_hot(3, 4), mask, (2, 2)) == (True, 3, 0.25)
    assert peak_hit(one_hot(0, 4), mask, (2, 2)) == (False, 0, 0.25)
    assert peak_hit(one_hot(1, 4), mask, (2, 2))[0] is False


def test_peak_at_borders():
    # one pixel just right of the vertical border: belongs to cell 1, not to cell 0
    mask = square_mask(0, 1, 4, 5)
    assert peak_hit(one_hot(1, 4), mask, (2, 2))[0] is True
    assert peak_hit(one_hot(0, 4), mask, (2, 2))[0] is False
    # that pixel covers 1/16 of cell 1: a stricter overlap rule rejects it
    assert peak_hit(one_hot(1, 4), mask, (2, 2), min_overlap=0.1)[0] is False
    # a 2x2 blob centred on the grid's corner touches all four cells: chance 1
    corner = square_mask(3, 5, 3, 5)
    for i in range(4):
        assert peak_hit(one_hot(i, 4), corner, (2, 2)) == (True, i, 1.0)


def test_uniform_baseline_by_hand():
    # 4x4 grid of 2x2-pixel cells; the mask touches cells (0,0), (0,1), (1,0), (1,1) and (3,3)
    mask = square_mask(1, 3, 1, 3) | square_mask(7, 8, 7, 8)
    _, _, chance = peak_hit(one_hot(0, 16), mask, (4, 4))
    assert chance == pytest.approx(5 / 16)
    # and a uniformly random peak really hits that often
    rng = np.random.default_rng(0)
    hits = [peak_hit(one_hot(int(i), 16), mask, (4, 4))[0] for i in rng.integers(0, 16, 4000)]
    assert np.mean(hits) == pytest.approx(5 / 16, abs=0.03)


def test_ties_go_to_first_location_and_bad_sizes_are_explained():
    mask = square_mask(0, 4, 0, 4)
    assert peak_hit(torch.full((4,), 0.25), mask, (2, 2))[:2] == (True, 0)
    with pytest.raises(ValueError, match="alpha has 5 weights.*2x2"):
        peak_hit(torch.ones(5), mask, (2, 2))


# ------------------------------------------------------------------------------- alignment
def test_object_word_steps_are_token_positions():
    tokens = ["a", "big", "red", "circle", "above", "a", "blue", "square"]
    objs = [-1, 0, 0, 0, -1, -1, 1, 1]
    assert object_word_steps(tokens, objs) == [
        (1, "big", 0), (2, "red", 0), (3, "circle", 0), (6, "blue", 1), (7, "square", 1)]
    with pytest.raises(ValueError, match="same caption"):
        object_word_steps(tokens, objs[:-1])
    assert [word_type(w) for w in ("big", "red", "circle", "above")] == [
        "size", "colour", "shape", "other"]


def test_score_caption_uses_row_t_for_token_t():
    """alpha row t (the step that predicts tokens[t]) peaks on the object; row t + 1 does not."""
    masks = [square_mask(0, 4, 0, 4), square_mask(4, 8, 4, 8)]  # cells 0 and 3
    tokens = ["a", "red", "circle", "above", "a", "blue", "square"]
    objs = [-1, 0, 0, -1, -1, 1, 1]
    peaks = [1, 0, 0, 1, 1, 3, 3, 2]  # 7 words + <end>; rows of non-object words: cell 1 (empty)
    alphas = torch.stack([one_hot(p, 4) for p in peaks])
    words = score_caption(alphas, tokens, objs, masks, (2, 2))
    assert [(w.step, w.word, w.hit) for w in words] == [
        (1, "red", True), (2, "circle", True), (5, "blue", True), (6, "square", True)]
    # the off-by-one reading (row t + 1 for token t) would score 2 of 4
    shifted = score_caption(alphas[1:], tokens, objs, masks, (2, 2))
    assert sum(w.hit for w in shifted) == 2
    with pytest.raises(ValueError, match="one row per predicted word"):
        score_caption(alphas[:3], tokens, objs, masks, (2, 2))


def test_summarize_by_type_by_hand():
    mask = square_mask(0, 4, 0, 4)
    w = score_caption(torch.stack([one_hot(p, 4) for p in [0, 0, 3, 0]]),
                      ["a", "big", "red", "circle"], [-1, 0, 0, 0], [mask], (2, 2))
    r = summarize(w)
    assert (r.n_words, r.hit_rate, r.baseline) == (3, pytest.approx(2 / 3), pytest.approx(0.25))
    # rows: "a" -> 0, "big" -> 0 (hit), "red" -> 3 (miss), "circle" -> 0 (hit)
    assert r.by_type["size"]["hit_rate"] == 1.0 and r.by_type["colour"]["hit_rate"] == 0.0
    assert [m.word for m in r.misses] == ["red"]
    assert "all" in r.table()


# ------------------------------------------------------------------------------- end to end
class OracleDecoder(nn.Module):
    """Teacher-forced fake: alpha_t peaks on the object of the word predicted at step t
    (``shift=0``), or of the INPUT word y_{t-1} (``shift=-1``, the off-by-one)."""

    def __init__(self, split: Split, vocab: Vocabulary, grid: tuple[int, int], shift: int = 0):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.cfg = SimpleNamespace(attention="soft")
        self.split, self.vocab, self.grid, self.shift = split, vocab, grid, shift
        self.modes: list[str] = []

    def forward(self, a, captions_in, lengths, mode="soft"):
        self.modes.append(mode)
        B, T = captions_in.shape
        L = self.grid[0] * self.grid[1]
        alpha = torch.full((B, T, L), 1.0 / L)
        for b in range(B):
            record = self.split.records[int(a[b, 0, 0])]
            words = self.vocab.decode(captions_in[b, 1:lengths[b]].tolist())
            c = [list(x) for x in record.captions].index(words)  # which reference is it?
            objs = record.extra["word_objects"][c]
            for t in range(int(lengths[b])):
                k = t + self.shift
                if 0 <= k < len(objs) and objs[k] >= 0:
                    mask = record.extra["objects"][objs[k]].mask
                    alpha[b, t] = one_hot(int(np.argmax(cell_overlaps(mask, self.grid))), L)
        return SimpleNamespace(alpha=alpha)


@pytest.fixture(scope="module")
def tiny_shapes():
    split = make_shapes_splits(n_train=1, n_val=1, n_test=6, image_size=32)["test"]
    vocab = Vocabulary.build([c for r in split.records for c in r.captions], min_count=1)
    L, D = 16, 3
    feats = Split(split.name, split.records,
                  lambda r: torch.full((L, D), float(r.image_id)))
    return feats, vocab


def test_oracle_hits_everything_and_the_off_by_one_does_not(tiny_shapes):
    split, vocab = tiny_shapes
    oracle = OracleDecoder(split, vocab, (4, 4))
    res = attention_grounding(oracle, split, vocab, grid=(4, 4), batch_size=4)
    n_expected = sum(len(object_word_steps(c, wo)) for r in split.records
                     for c, wo in zip(r.captions, r.extra["word_objects"], strict=True))
    assert res.n_words == n_expected > 0
    assert res.hit_rate == 1.0 and res.misses == []
    assert 0 < res.baseline < 0.6
    assert {"colour", "shape"} <= set(res.by_type) <= {"size", "colour", "shape"}
    assert oracle.modes and set(oracle.modes) == {"soft"}

    wrong = attention_grounding(OracleDecoder(split, vocab, (4, 4), shift=-1), split, vocab,
                                grid=(4, 4), captions_per_image=2, limit=3)
    assert wrong.hit_rate < 1.0 and wrong.misses
    assert {m.image_index for m in wrong.misses} <= {0, 1, 2}
    assert {m.caption_index for m in wrong.misses} <= {0, 1}


def test_non_shapes_split_is_refused(tiny_shapes):
    split, vocab = tiny_shapes
    record = split.records[0]
    bare = Split("test", [type(record)(record.image_id, record.filename, "test", record.captions,
                                       record.raw, {})], split.load_image)
    with pytest.raises(ValueError, match="needs a Shapes split"):
        attention_grounding(OracleDecoder(split, vocab, (4, 4)), bare, vocab, grid=(4, 4))
