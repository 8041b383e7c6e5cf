"""Chapter 3 exercises: the receptive field of a conv stack, and flattening to annotation vectors.

* :data:`check_receptive_field` -- ``my_rf(layers) -> (size, stride, start)`` for a stack of square
  layers given as ``(kernel, stride, padding)``, against
  :func:`sat_core.encoder.receptive_field_geometry` run on the same stack built as ``nn.Conv2d``;
* :data:`check_flatten_annotations` -- ``my_flatten(fmap) -> a``: a feature map (B, D, h, w) to
  annotation vectors a (B, L, D), L = h * w, location ``i = row * w + col`` (Sec. 3.1.1), against
  :meth:`sat_core.encoder.Encoder.forward`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from sat_core.encoder import Encoder, receptive_field_geometry
from sat_core.exercises._base import Case, ExerciseCheck

Layer = tuple[int, int, int]  # (kernel, stride, padding) of a square layer

# --------------------------------------------------------------------------- receptive field


def receptive_field_of(layers: Sequence[Layer]) -> tuple[int, int, int]:
    """Reference: ``(size, stride, start)`` of one output cell, via sat_core's layer walk."""
    with torch.device("meta"):  # no memory: only the layer list matters
        stack = nn.Sequential(*(nn.Conv2d(1, 1, k, stride=s, padding=p) for k, s, p in layers))
    return receptive_field_geometry(stack)


RF_STACKS: tuple[tuple[str, tuple[Layer, ...]], ...] = (
    ("one 3x3 conv", ((3, 1, 1),)),
    ("3x3 convs with padding 1, strides 1, 2, 2, 2", ((3, 1, 1), (3, 2, 1), (3, 2, 1),
                                                          (3, 2, 1))),
    ("7x7 stride 2 then a 3x3 stride 2 pool (a ResNet stem)", ((7, 2, 3), (3, 2, 1))),
    ("VGG-like: conv, conv, 2x2 pool, conv", ((3, 1, 1), (3, 1, 1), (2, 2, 0), (3, 1, 1))),
    ("5x5 conv without padding, 1x1 conv", ((5, 1, 0), (1, 1, 0))),
)


RF_BOUNDARIES: tuple[tuple[str, tuple[Layer, ...]], ...] = (
    ("a single 1x1 conv: one pixel", ((1, 1, 0),)),
    ("stride 1 everywhere", ((3, 1, 1), (5, 1, 2), (3, 1, 0))),
)


def random_stacks(n: int, seed: int) -> list[tuple[Layer, ...]]:
    """``n`` seeded random stacks of 1-5 layers: kernel 1-7, stride 1-3, padding 0..kernel//2."""
    rng = random.Random(seed)
    stacks = []
    for _ in range(n):
        layers = []
        for _ in range(rng.randint(1, 5)):
            k = rng.randint(1, 7)
            layers.append((k, rng.randint(1, 3), rng.randint(0, k // 2)))
        stacks.append(tuple(layers))
    return stacks


def _rf_cases() -> list[Case]:
    named = list(RF_STACKS + RF_BOUNDARIES) + [
        (f"random stack {i + 1}", st) for i, st in enumerate(random_stacks(6, seed=3))]
    return [Case(([list(layer) for layer in stack],), name=name) for name, stack in named]


def _rf_alternatives(layers: Sequence[Layer]) -> dict[str, tuple[int, int, int]]:
    """What the usual slips compute, to recognise them."""
    size, stride, start = 1, 1, 0
    no_jump_size = 1
    late_size, late_stride = 1, 1
    for k, s, p in layers:
        start -= p * stride
        size += (k - 1) * stride
        no_jump_size += k - 1
        late_stride *= s
        late_size += (k - 1) * late_stride  # the stride updated before the size
        stride *= s
    return {"no_jump": (no_jump_size, stride, start), "late": (late_size, stride, start),
            "no_start": (size, stride, 0)}


def _rf_hints(got: Any, expected: tuple[int, int, int], case: Case) -> str | None:
    layers = case.args[0]
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return "return three integers: (size, stride, start)"
    got = tuple(int(v) for v in got)
    alt = _rf_alternatives(layers)
    lines = [f"layers (kernel, stride, padding) {[tuple(x) for x in layers]}: expected "
             f"(size, stride, start) = {expected}, got {got}"]
    if got == alt["no_jump"] != expected:
        lines.append("a layer with kernel k adds (k - 1) input pixels times the product of the "
                     "strides BEFORE it (the 'jump' between neighbouring cells), not k - 1")
    elif got == alt["late"] != expected:
        lines.append("grow the size with the stride accumulated before this layer, then "
                     "multiply the stride by this layer's stride")
    elif got == alt["no_start"] != expected:
        lines.append("padding shifts the window: start -= padding * (stride before the layer); "
                     "cell 0 starts left of pixel 0 when the input is padded")
    elif got[1] != expected[1]:
        lines.append("the stride of a cell is the product of all the layers' strides")
    return "\n  hint: ".join(lines)


check_receptive_field = ExerciseCheck(
    "the receptive field of a conv stack",
    reference=receptive_field_of,
    cases=_rf_cases,
    hints=(_rf_hints,),
)

# --------------------------------------------------------------------------- flattening


class _GivenFeatureMap(Encoder):
    """An encoder whose CNN is a given feature map: runs Encoder.forward's flattening on it."""

    def __init__(self, fmap: torch.Tensor) -> None:
        super().__init__(feature_dim=fmap.shape[1], grid=tuple(fmap.shape[2:]), image_size=0)
        self.fmap = fmap

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.fmap

    def blocks(self) -> list[nn.Module]:
        return []


def flatten_annotations(fmap: torch.Tensor) -> torch.Tensor:
    """Reference: (B, D, h, w) -> a (B, L, D), i = row * w + col, as ``Encoder.forward`` does."""
    encoder = _GivenFeatureMap(fmap)
    return encoder(torch.zeros(fmap.shape[0], 3, 1, 1, device=fmap.device))


def _flatten_cases() -> list[Case]:
    g = torch.Generator().manual_seed(3)
    return [
        Case((torch.randn(2, 5, 3, 4, generator=g),), name="B=2, D=5, h=3, w=4"),
        Case((torch.randn(1, 3, 2, 2, generator=g),), name="B=1, D=3, h=w=2"),
        Case((torch.randn(3, 4, 1, 6, generator=g).requires_grad_(),),
             name="B=3, D=4, h=1, w=6, requires_grad"),
        Case((torch.randn(2, 3, 1, 1, generator=g),), name="a single location (h=w=1)"),
        Case((torch.randn(1, 1, 4, 1, generator=g),), name="B=1, D=1, h=4, w=1"),
    ] + [Case((torch.randn(*shape, generator=g),), name=f"random shape {shape}")
         for shape in (tuple(int(x) for x in torch.randint(1, 6, (4,), generator=g))
                       for _ in range(4))]


def _flatten_hints(got: Any, expected: torch.Tensor, case: Case) -> str | None:
    fmap = case.args[0].detach()
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape:
        return None
    b, d, h, w = fmap.shape
    g = got.detach()
    if torch.equal(g, expected.detach()):  # right values: the problem lies elsewhere (autograd)
        return None
    if torch.equal(g, fmap.reshape(b, h * w, d)):
        return ("a reshape/view straight to (B, L, D) mixes channels and positions: flatten the "
                "spatial dimensions to (B, D, L) first, then swap the last two")
    if torch.equal(g, fmap.transpose(2, 3).reshape(b, d, h * w).transpose(1, 2)):
        return "column-major order (i = col * h + row): the book numbers locations row by row"
    return None


check_flatten_annotations = ExerciseCheck(
    "annotation vectors from a feature map (Sec. 3.1.1)",
    reference=flatten_annotations,
    cases=_flatten_cases,
    hints=(_flatten_hints,),
)

__all__ = ["RF_BOUNDARIES", "RF_STACKS", "random_stacks",
           "check_flatten_annotations", "check_receptive_field",
           "flatten_annotations", "receptive_field_of"]
