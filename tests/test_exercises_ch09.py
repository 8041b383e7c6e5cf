"""Chapter 9 exercise check: the right answer passes, the usual mistakes fail with an explanation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


# --------------------------------------------------------------------------- wrong answers


def peak_with(transpose=False, chance="cells", last_max=False, mask_t=False):
    """peak_hit with one slip: column-major cells, another baseline, the last tied maximum."""
    def answer(alpha, mask, grid):
        hits = cells(mask.T.copy() if mask_t else mask, grid, transpose=transpose)
        a = torch.as_tensor(alpha)
        peak = len(a) - 1 - int(a.flip(0).argmax()) if last_max else int(a.argmax())
        base = {"cells": hits.mean(), "pixels": mask.mean(), "count": hits.sum()}[chance]
        return bool(hits[peak]), peak, float(base)
    return answer


WRONG_ANSWERS = [
    pytest.param(peak_with(chance="pixels"), "not the fraction of pixels", id="pixel fraction"),
    pytest.param(peak_with(chance="count"), "chance is a fraction", id="count of cells"),
    pytest.param(peak_with(transpose=True), "row r = i // w", id="column-major cells"),
    pytest.param(peak_with(mask_t=True), "row r = i // w", id="mask indexed [x, y]"),
    pytest.param(peak_with(last_max=True), "the peak is the FIRST of them", id="last tied max"),
]


@pytest.mark.parametrize("answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(answer, hint):
    assert hint in failure(answer)
