"""Chapter 9 exercise check: the right answer passes, the usual mistakes fail with an explanation."""

from __future__ import annotations

import numpy as np
import pytest

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch09 import check_peak_hit


def failure(fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check_peak_hit(fn)
    return str(info.value)


def cells(mask, grid, transpose=False):
    h, w = grid
    H, W = mask.shape
    out = []
    for i in range(h * w):
        r, c = divmod(i, w)
        if transpose:
            c, r = divmod(i, h)
        out.append(bool(mask[r * H // h:(r + 1) * H // h, c * W // w:(c + 1) * W // w].any()))
    return np.array(out)


def by_hand(alpha, mask, grid):
    hits = cells(mask, grid)
    peak = int(alpha.argmax())
    return bool(hits[peak]), peak, float(hits.mean())


def test_correct_answer_passes(capsys):
    check_peak_hit(by_hand)
    assert "✓" in capsys.readouterr().out


def test_pixel_fraction_as_baseline_is_explained():
    def pixel_chance(alpha, mask, grid):
        hit, peak, _ = by_hand(alpha, mask, grid)
        return hit, peak, float(mask.mean())

    assert "not the fraction of pixels" in failure(pixel_chance)


def test_column_major_cells_are_explained():
    def column_major(alpha, mask, grid):
        hits = cells(mask, grid, transpose=True)
        peak = int(alpha.argmax())
        return bool(hits[peak]), peak, float(hits.mean())

    assert "row r = i // w" in failure(column_major)


def test_mask_indexed_x_then_y_is_explained():
    def xy_mask(alpha, mask, grid):
        return by_hand(alpha, mask.T.copy(), grid)

    assert "row r = i // w" in failure(xy_mask)
