"""Chapter 9 exercise: is an attention peak on the object? (the grounding measure's core).

* :data:`check_peak_hit` -- ``my_peak_hit(alpha, mask, grid) -> (hit, peak, chance)``: for the
  weights alpha_t (L,) of Eq. (5) over an ``(h, w)`` grid (location i = r * w + c, row-major like
  the encoder's flattening) and an object's boolean pixel ``mask`` (H, W): the peak location
  ``peak = argmax_i alpha_i`` (int), whether the peak's cell of pixels overlaps the mask (bool),
  and the uniform baseline ``chance`` = the fraction of the L cells that overlap it (float);
  compared with :func:`sat_core.grounding.peak_hit`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from sat_core.exercises._base import Case, ExerciseCheck
from sat_core.grounding import peak_hit


def _reference(alpha: Tensor, mask: np.ndarray, grid: tuple[int, int]) -> tuple[bool, int, float]:
    return peak_hit(alpha, mask, grid)


def _blob(size: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _cases() -> list[Case]:
    def peaked(L: int, i: int, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        e = torch.randn(L, generator=g)
        e[i] = e.max() + 2.0
        return torch.softmax(e, dim=0)

    return [
        Case((peaked(16, 6, 0), _blob(16, 4, 8, 8, 12), (4, 4)), name="peak inside, 4x4 grid"),
        Case((peaked(16, 9, 1), _blob(16, 4, 8, 8, 12), (4, 4)), name="peak outside"),
        # a blob in row 0, column 2 of a 2x4 grid: (r, c) = (0, 2) is i = 2, not 4 (transposed)
        Case((peaked(8, 2, 2), _blob(16, 1, 3, 9, 11), (2, 4)), name="a 2x4 grid (not square)"),
        Case((peaked(16, 5, 3), _blob(16, 3, 5, 3, 5), (4, 4)),
             name="a blob across the corner of four cells"),
        Case((peaked(64, 27, 4), _blob(32, 12, 20, 25, 27), (8, 8)), name="8x8 grid, thin object"),
    ]


def _hints(got: Any, expected: Any, case: Case) -> str | None:
    alpha, mask, grid = case.args
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return None
    hit, peak, chance = got
    if isinstance(chance, (float, int)) and abs(chance - float(mask.mean())) < 1e-9 \
            and abs(chance - expected[2]) > 1e-9:
        return ("the baseline is the chance that a uniformly random LOCATION (cell) is a hit: "
                "the fraction of cells that overlap the mask, not the fraction of pixels")
    if peak == expected[1] and hit != expected[0]:
        return ("the peak is right but not its cell: location i is row r = i // w and column "
                "c = i % w (row-major, like the encoder's flattening), and the cell covers mask "
                "rows (y) r*H//h .. (r+1)*H//h and columns (x) c*W//w .. (c+1)*W//w")
    return None


check_peak_hit = ExerciseCheck(
    "is the attention peak on the object? (the grounding measure)",
    reference=_reference,
    cases=_cases,
    output_names=("hit", "peak", "chance"),
    rtol=1e-9,
    atol=1e-9,
    hints=(_hints,),
)
