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
        Case((peaked(1, 0, 5), _blob(8, 2, 4, 2, 4), (1, 1)), name="a single location (1x1)"),
        Case((peaked(6, 4, 6), _blob(12, 0, 0, 0, 0), (2, 3)), name="an empty mask: chance 0"),
        Case((peaked(6, 1, 7), _blob(12, 0, 12, 0, 12), (3, 2)), name="a full mask: chance 1"),
        Case((_tied(16, (3, 12), 8), _blob(16, 8, 16, 0, 16), (4, 4)),
             name="two tied maxima (3 and 12): the first is the peak"),
    ] + [_random_case(k) for k in range(4)]


def _tied(L: int, at: tuple[int, int], seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    e = torch.randn(L, generator=g)
    e[list(at)] = e.max() + 2.0
    return torch.softmax(e, dim=0)


def _random_case(k: int) -> Case:
    """A random grid (1..5 x 1..5), mask size and rectangle, and a random alpha."""
    g = torch.Generator().manual_seed(90 + k)
    h, w = (int(x) for x in torch.randint(1, 6, (2,), generator=g))
    size = int(torch.randint(8, 33, (), generator=g))
    y0, y1 = sorted(int(x) for x in torch.randint(0, size + 1, (2,), generator=g))
    x0, x1 = sorted(int(x) for x in torch.randint(0, size + 1, (2,), generator=g))
    alpha = torch.softmax(3 * torch.randn(h * w, generator=g), dim=0)
    return Case((alpha, _blob(size, y0, y1, x0, x1), (h, w)),
                name=f"random {k + 1}: grid {h}x{w}, mask {size}x{size}")


def _hints(got: Any, expected: Any, case: Case) -> str | None:
    alpha, mask, grid = case.args
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return None
    hit, peak, chance = got
    if isinstance(chance, (float, int)) and abs(chance - float(mask.mean())) < 1e-9 \
            and abs(chance - expected[2]) > 1e-9:
        return ("the baseline is the chance that a uniformly random LOCATION (cell) is a hit: "
                "the fraction of cells that overlap the mask, not the fraction of pixels")
    if isinstance(peak, int) and peak != expected[1] and 0 <= peak < len(alpha) \
            and float(alpha[peak]) == float(alpha[expected[1]]):
        return ("alpha has tied maxima here: the peak is the FIRST of them (what torch.argmax "
                "and np.argmax return)")
    if isinstance(chance, (float, int)) and abs(chance - expected[2] * len(alpha)) < 1e-9 \
            and abs(chance - expected[2]) > 1e-9:
        return "chance is a fraction: the number of cells that overlap the mask divided by L"
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
