"""The Shapes caption world: a synthetic dataset where we know WHERE every word's object is.

Each image (default 64x64 RGB) holds 1 to 3 non-overlapping objects. An object has a ``shape``
(circle, square, triangle, diamond), a ``colour`` (red, green, blue, yellow, purple) and a ``size``
(small, big: two clearly separated ranges), plus its ``center``, its pixel ``box`` and a boolean
``mask``. Five reference captions per image come from a small grammar with paraphrases::

    1 object : "a big red circle", "there is a big red circle on the left"
    2 objects: "a big red circle above a small blue square",
               "a small blue square is below a big red circle"
    3 objects: "a big red circle to the left of a small blue square and a green triangle",
               "a big red circle above a small blue square which is to the left of a green triangle"

Every token of a caption points at the object it names (``word_objects``: the size, colour and
shape words of a noun phrase hold that object's index; every other word holds -1). That alignment
is what chapter 9 needs to ask whether the attention weights ``alpha_t`` of the word ``y_t`` land
on the right object (Sec. 5.4 of Xu et al., 2015, shows it qualitatively; here it is measured).

Captions are fully determined by the image up to paraphrase:

* relations ("A to the left of B", "A above B", ...) compare object centers along the dominant
  axis, and objects are placed so that every relation a caption uses has a clearly dominant axis
  (``|major| >= min_axis_ratio * |minor|``);
* position words of a single object ("on the left", "at the top", "in the middle") are used only
  where unambiguous;
* by default the objects of one image have distinct colours and distinct shapes, so that "red"
  (or "circle") names exactly one object.

Everything is a pure function of the seed: :func:`generate_shapes` draws image ``i`` from the
``i``-th child of ``numpy.random.SeedSequence(seed)``, so a longer run extends a shorter one, and
:func:`make_shapes_splits` gives each split its own independent child seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sat_core.data.records import ImageLoadError, ImageRecord, Split, normalize_image
from sat_core.errors import ArgumentParser, UserError, command

# ---------------------------------------------------------------------------------------------
# The world: attributes and their appearance
# ---------------------------------------------------------------------------------------------

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
# Clearly distinct colours on a dark grey background (every pair differs by >= 100 in a channel).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 45, 45),
    "green": (40, 185, 70),
    "blue": (50, 95, 235),
    "yellow": (235, 215, 45),
    "purple": (170, 70, 215),
}
SIZES: tuple[str, ...] = ("small", "big")
# In which order a caption names the objects of an image (see ``salience_order``).
NAMING_ORDERS: tuple[str, ...] = ("salience", "any")

# Geometry of each shape in units of its half-extent ``s``: the shape's box reaches
# (left, top, right, bottom) = s * _EXTENT[shape] from its center. The center is the shape's
# centroid (for the triangle: one third of the height above the base), so that relations computed
# from centers agree with where the pixels are. Areas are similar: circle pi*s^2 ~ 3.1 s^2,
# square (1.76 s)^2 ~ 3.1 s^2, diamond 2*(1.2 s)^2 ~ 2.9 s^2, triangle 1.2 s * 2.1 s ~ 2.5 s^2.
_SQUARE_HALF = 0.88
_DIAMOND_HALF = 1.2
_TRI_HALF_BASE = 1.2
_TRI_HEIGHT = 2.1
_EXTENT: dict[str, tuple[float, float, float, float]] = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (_SQUARE_HALF,) * 4,
    "diamond": (_DIAMOND_HALF,) * 4,
    "triangle": (_TRI_HALF_BASE, 2 * _TRI_HEIGHT / 3, _TRI_HALF_BASE, _TRI_HEIGHT / 3),
}


@dataclass(frozen=True)
class ShapesConfig:
    """Every knob of the Shapes world. Lengths are fractions of ``image_size`` unless named *_px.

    ``small_extent`` / ``big_extent``: range of the half-extent ``s`` of small / big objects
    (at 64 px: small circles 11-15 px wide, big ones 20-26 px; an 8x8 feature grid has 8 px cells).
    ``margin``: minimum gap between the boxes of two objects. ``min_axis_ratio``: a relation is used
    only if ``|major offset| >= min_axis_ratio * |minor offset|`` between the two centers.
    ``middle_zone`` / ``side_zone``: a single object is "in the middle" if both center offsets from
    the image center are below ``middle_zone``; "on the left" (etc.) if its dominant offset exceeds
    ``side_zone`` and is clearly dominant (``min_axis_ratio``); otherwise no position words.
    """

    image_size: int = 64
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colours: tuple[str, ...] = tuple(COLOURS)
    small_extent: tuple[float, float] = (0.085, 0.115)
    big_extent: tuple[float, float] = (0.16, 0.20)
    margin: float = 0.04
    min_axis_ratio: float = 1.5
    distinct_attributes: bool = True
    background: tuple[int, int] = (25, 75)
    tint: float = 15.0
    colour_jitter: float = 12.0
    noise_std: float = 8.0
    middle_zone: float = 0.1
    side_zone: float = 0.15
    n_captions: int = 5
    max_attempts: int = 200
    naming_order: str = "salience"

    def __post_init__(self) -> None:
        def bad(msg: str) -> ValueError:
            return ValueError(f"ShapesConfig: {msg}")

        if not isinstance(self.image_size, (int, np.integer)) or self.image_size < 16:
            raise bad(f"image_size must be an int >= 16, got {self.image_size!r}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise bad(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise bad(f"unknown shapes {unknown}; choose a non-empty subset of {list(SHAPES)}")
        unknown = [c for c in self.colours if c not in COLOURS]
        if unknown or not self.colours:
            raise bad(f"unknown colours {unknown}; choose a non-empty subset of {list(COLOURS)}")
        if len(set(self.shapes)) != len(self.shapes) or len(set(self.colours)) != len(self.colours):
            raise bad("shapes and colours must not repeat")
        if self.distinct_attributes and self.max_objects > min(len(self.shapes), len(self.colours)):
            raise bad(
                f"max_objects={self.max_objects} objects cannot have distinct shapes and colours "
                f"with {len(self.shapes)} shapes and {len(self.colours)} colours; lower "
                "max_objects or set distinct_attributes=False"
            )
        (s0, s1), (b0, b1) = self.small_extent, self.big_extent
        if not 0 < s0 <= s1 < b0 <= b1 < 0.5:
            raise bad(
                "need 0 < small_extent[0] <= small_extent[1] < big_extent[0] <= big_extent[1]"
                f" < 0.5 (separated size ranges), got {self.small_extent}, {self.big_extent}"
            )
        span = max(max(e[0] + e[2], e[1] + e[3]) for e in (_EXTENT[sh] for sh in self.shapes))
        if span * b1 * self.image_size + 1 > self.image_size:
            limit = (1 - 1 / self.image_size) / span
            raise bad(f"a big object ({span:.1f} * big_extent[1] * image_size px) does not fit "
                      f"in the image; lower big_extent[1] below {limit:.3f}")
        if self.margin < 0 or self.min_axis_ratio < 1:
            raise bad("margin must be >= 0 and min_axis_ratio >= 1")
        if self.naming_order not in NAMING_ORDERS:
            raise bad(f"naming_order must be one of {NAMING_ORDERS}, got {self.naming_order!r}")
        if self.n_captions < 1 or self.max_attempts < 1:
            raise bad("n_captions and max_attempts must be >= 1")
        lo, hi = self.background
        if not 0 <= lo <= hi <= 255:
            raise bad(f"background must be a (low, high) grey range in 0..255: {self.background}")


# ---------------------------------------------------------------------------------------------
# Objects and images
# ---------------------------------------------------------------------------------------------


@dataclass
class ShapesObject:
    """One object. ``center = (x, y)`` in pixels (x right, y down; pixel ``(r, c)`` covers
    ``[c, c+1) x [r, r+1)``); ``box = (x0, y0, x1, y1)`` with exclusive ``x1, y1``, so that
    ``mask[y0:y1, x0:x1]`` holds every pixel of ``mask`` (H, W) bool."""

    shape: str
    colour: str
    size: str
    center: tuple[float, float]
    box: tuple[int, int, int, int]
    mask: np.ndarray = field(repr=False)
    extent: float = 0.0  # half-extent s in pixels
    rgb: tuple[int, int, int] = (0, 0, 0)  # the fill colour actually painted (palette + jitter)

    @property
    def words(self) -> list[str]:
        """The object's noun phrase without article: ``[size, colour, shape]``."""
        return [self.size, self.colour, self.shape]

    def as_dict(self, with_mask: bool = True) -> dict[str, Any]:
        """Plain dict (JSON-ready when ``with_mask=False``)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "mask"}
        d["center"], d["box"], d["rgb"] = list(self.center), list(self.box), list(self.rgb)
        if with_mask:
            d["mask"] = self.mask
        return d


@dataclass
class ShapesImage:
    """A generated image: pixels (H, W, 3) uint8, its objects and its captions.

    ``word_objects[k][t]`` is the index of the object named by token ``captions[k][t]`` (-1 for
    words that name no object). ``relations[k]`` lists the spatial phrases of caption ``k`` as
    dicts ``{"subject": i, "relation": r, "object": j, "span": [t0, t1]}``: ``r`` in
    left/right/above/below for "i r j"; for position words of a single object ``r`` in
    left/right/top/bottom/middle and ``object`` is -1 (the image frame). ``span`` = token range.
    """

    pixels: np.ndarray = field(repr=False)
    objects: list[ShapesObject]
    captions: list[list[str]]
    raw: list[str]
    word_objects: list[list[int]]
    relations: list[list[dict[str, Any]]]


# ---------------------------------------------------------------------------------------------
# Drawing (vectorised numpy: one boolean test over the pixel grid per object)
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _pixel_centers(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float32) + 0.5
    return c[None, :], c[:, None]  # x (1, W), y (H, 1)


def shape_mask(shape: str, center: tuple[float, float], extent: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of ``shape`` with half-extent ``extent`` px at ``center`` (x, y).

    A pixel belongs to the shape when its center does.
    """
    xs, ys = _pixel_centers(size)
    dx, dy = xs - np.float32(center[0]), ys - np.float32(center[1])
    s = np.float32(extent)
    if shape == "circle":
        return dx * dx + dy * dy <= s * s
    if shape == "square":
        return (np.abs(dx) <= _SQUARE_HALF * s) & (np.abs(dy) <= _SQUARE_HALF * s)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= _DIAMOND_HALF * s
    if shape == "triangle":  # apex up; centroid at the center
        h = _TRI_HEIGHT * s
        depth = dy + 2 * h / 3  # distance below the apex
        return (depth >= 0) & (dy <= h / 3) & (np.abs(dx) <= _TRI_HALF_BASE * s * depth / h)
    raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


# ---------------------------------------------------------------------------------------------
# Relations and positions
# ---------------------------------------------------------------------------------------------


def relation(a: tuple[float, float], b: tuple[float, float]) -> str:
    """Where center ``a`` is relative to ``b`` along the dominant axis: left/right/above/below."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _clear(a: tuple[float, float], b: tuple[float, float], ratio: float) -> bool:
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    return max(dx, dy) >= ratio * min(dx, dy) and max(dx, dy) > 0


def position(center: tuple[float, float], size: int, cfg: ShapesConfig) -> str | None:
    """Where a lone object is in the frame: left/right/top/bottom/middle, or None if ambiguous."""
    dx, dy = center[0] / size - 0.5, center[1] / size - 0.5
    if max(abs(dx), abs(dy)) < cfg.middle_zone:
        return "middle"
    major, minor = max(abs(dx), abs(dy)), min(abs(dx), abs(dy))
    if major <= cfg.side_zone or major < cfg.min_axis_ratio * minor:
        return None
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("to", "the", "left", "of"),
    "right": ("to", "the", "right", "of"),
    "above": ("above",),
    "below": ("below",),
}
_POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on", "the", "left"),
    "right": ("on", "the", "right"),
    "top": ("at", "the", "top"),
    "bottom": ("at", "the", "bottom"),
    "middle": ("in", "the", "middle"),
}

# ---------------------------------------------------------------------------------------------
# The grammar. Slots: {A} = "size colour shape" of role A; {A>B} = where A is relative to B;
# {A@} = where A is in the frame. Every other token is a literal word. Roles are bound to object
# indices; a binding is valid when every {X>Y} it uses is a clear relation.
# ---------------------------------------------------------------------------------------------

_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "a {A}",
        "there is a {A}",
        "a picture of a {A}",
        "a picture with a {A}",
        "there is only a {A}",
        "a single {A}",
        "a {A} {A@}",
        "there is a {A} {A@}",
        "a {A} is {A@}",
        "a picture of a {A} {A@}",
    ),
    2: (
        "a {A} {A>B} a {B}",
        "a {A} is {A>B} a {B}",
        "there is a {A} {A>B} a {B}",
        "a picture of a {A} {A>B} a {B}",
    ),
    3: (
        "a {A} {A>B} a {B} and a {C}",
        "there is a {A} {A>B} a {B} and a {C}",
        "a {A} is {A>B} a {B} and there is a {C}",
        "a {A} {A>B} a {B} and {A>C} a {C}",
        "a {A} is {A>B} a {B} and {A>C} a {C}",
        "a {A} {A>B} a {B} which is {B>C} a {C}",
    ),
}


def _literal_words(template: str) -> set[str]:
    return {t for t in template.split() if not t.startswith("{")}


def shapes_vocabulary(config: ShapesConfig | None = None) -> list[str]:
    """Every word the grammar can produce under ``config`` (sorted). Closed by construction."""
    cfg = config or ShapesConfig()
    words: set[str] = set(SIZES) | set(cfg.colours) | set(cfg.shapes)
    for n in range(cfg.min_objects, cfg.max_objects + 1):
        for template in _TEMPLATES[min(n, 3)]:
            words |= _literal_words(template)
            if "@}" in template:
                words |= {w for ws in _POSITION_WORDS.values() for w in ws}
            if ">" in template:
                words |= {w for ws in _RELATION_WORDS.values() for w in ws}
    return sorted(words)


SHAPES_VOCAB: tuple[str, ...] = tuple(shapes_vocabulary())


@cache
def _parts(template: str) -> tuple[str, ...]:
    return tuple(template.split())


def _render(
    template: str,
    binding: dict[str, int],
    objects: Sequence[ShapesObject],
    rel: dict[tuple[int, int], str | None],
    pos: Sequence[str | None],
) -> tuple[list[str], list[int], list[dict[str, Any]]] | None:
    """Fill a template for a role binding; None if a slot cannot be said unambiguously.

    ``rel[i, j]``: where object i is relative to j (None: no clear dominant axis);
    ``pos[i]``: where object i is in the frame (None: ambiguous)."""
    tokens: list[str] = []
    owners: list[int] = []
    rels: list[dict[str, Any]] = []
    for part in _parts(template):
        if part[0] != "{":
            tokens.append(part)
            owners.append(-1)
            continue
        i = binding[part[1]]
        if len(part) == 3:  # {X}: noun phrase
            tokens += objects[i].words
            owners += [i, i, i]
            continue
        if part[2] == "@":  # {X@}: position in the frame
            name, j, words = pos[i], -1, _POSITION_WORDS
        else:  # {X>Y}: relation of X to Y
            j = binding[part[3]]
            name, words = rel[i, j], _RELATION_WORDS
        if name is None:
            return None
        rels.append({"subject": i, "relation": name, "object": j,
                     "span": [len(tokens), len(tokens) + len(words[name])]})
        tokens += words[name]
        owners += [-1] * len(words[name])
    return tokens, owners, rels


def salience_order(objects: Sequence[ShapesObject]) -> tuple[int, ...]:
    """The order in which captions name objects: big before small, then left to right, then top
    to bottom (centers). People name the most salient thing first; for the book it matters that
    the order is a function of the image, so the word after "a" is predictable from the pixels
    and the attention of every object word can be checked (chapter 9)."""
    return tuple(sorted(range(len(objects)), key=lambda i: (
        objects[i].size != "big", objects[i].center[0], objects[i].center[1])))


def _bindings(objects: Sequence[ShapesObject], rel: dict[tuple[int, int], str | None],
              pos: Sequence[str | None], salience: bool) -> list[list[tuple]]:
    """Per template that fits the layout, its distinct renderings. ``salience``: name the objects
    in :func:`salience_order`, using only the templates that fit it; when none does (a 3-object
    layout whose first two objects have no clear relation), each template takes the first binding
    that fits in the lexicographic order of that ranking. Otherwise: every binding that fits."""
    n = len(objects)
    roles = "ABC"[:n]
    ranked = salience_order(objects)
    passes = ([ranked], list(itertools.permutations(ranked))) if salience else (
        list(itertools.permutations(range(n))),)
    for perms in passes:
        by_template: list[list[tuple]] = []
        for template in _TEMPLATES[n]:
            options: list[tuple] = []
            for perm in perms:
                out = _render(template, dict(zip(roles, perm, strict=True)), objects, rel, pos)
                if out is not None and out not in options:
                    options.append(out)
                    if salience:
                        break
            if options:
                by_template.append(options)
        if by_template:
            return by_template
    return []


def _captions(
    objects: Sequence[ShapesObject], size: int, cfg: ShapesConfig, rng: np.random.Generator
) -> list[tuple[list[str], list[int], list[dict[str, Any]]]]:
    """``cfg.n_captions`` captions: templates visited in random order, round-robin, each with a
    random valid role binding, so that the references vary in both structure and word order."""
    n = len(objects)
    centers = [o.center for o in objects]
    rel = {
        (i, j): relation(centers[i], centers[j])
        if _clear(centers[i], centers[j], cfg.min_axis_ratio) else None
        for i in range(n) for j in range(n) if i != j
    }
    pos = [position(c, size, cfg) for c in centers] if n == 1 else [None] * n
    by_template = _bindings(objects, rel, pos, cfg.naming_order == "salience")
    if not by_template:  # cannot happen with valid layouts; guards against future template edits
        raise RuntimeError(f"no caption template fits this {n}-object layout")
    order = rng.permutation(len(by_template))
    pools = [[by_template[k][m] for m in rng.permutation(len(by_template[k]))] for k in order]
    chosen: list[tuple] = []
    while len(chosen) < cfg.n_captions:
        if not any(pools):  # fewer distinct captions than asked: start over (repeats allowed)
            pools = [list(p) for p in (by_template[k] for k in order)]
        for pool in pools:
            if pool and len(chosen) < cfg.n_captions:
                chosen.append(pool.pop())
    return chosen


def _raw(tokens: list[str]) -> str:
    s = " ".join(tokens)
    return s[0].upper() + s[1:] + "."


# ---------------------------------------------------------------------------------------------
# Layout: rejection sampling of non-overlapping objects with clear relations
# ---------------------------------------------------------------------------------------------


def _sample_attributes(rng: np.random.Generator, cfg: ShapesConfig, n: int):
    replace = not cfg.distinct_attributes
    shapes = [cfg.shapes[k] for k in rng.choice(len(cfg.shapes), n, replace=replace)]
    colours = [cfg.colours[k] for k in rng.choice(len(cfg.colours), n, replace=replace)]
    sizes = [SIZES[k] for k in rng.integers(0, 2, n)]
    ranges = {"small": cfg.small_extent, "big": cfg.big_extent}
    extents = [float(rng.uniform(*ranges[z])) * cfg.image_size for z in sizes]
    return shapes, colours, sizes, extents


def _layout(rng: np.random.Generator, cfg: ShapesConfig, shapes, extents, candidates: int = 64):
    """Centers (x, y) such that boxes (plus margin) never overlap and each object after the first
    has a clear relation to at least one earlier object (so every caption can relate them all).
    Returns None when this draw cannot be completed."""
    S, m = cfg.image_size, cfg.margin * cfg.image_size
    placed: list[tuple[float, float]] = []
    boxes: list[np.ndarray] = []  # (x0, y0, x1, y1) in continuous pixels
    for shape, s in zip(shapes, extents, strict=True):
        ext = np.asarray(_EXTENT[shape]) * s  # left, top, right, bottom
        lo_x, hi_x = ext[0] + 0.5, S - ext[2] - 0.5
        lo_y, hi_y = ext[1] + 0.5, S - ext[3] - 0.5
        if lo_x > hi_x or lo_y > hi_y:  # this object alone is too large for the frame
            return None
        cx = rng.uniform(lo_x, hi_x, candidates)
        cy = rng.uniform(lo_y, hi_y, candidates)
        ok = np.ones(candidates, dtype=bool)
        related = np.zeros(candidates, dtype=bool) if placed else np.ones(candidates, dtype=bool)
        for (px, py), b in zip(placed, boxes, strict=True):
            x0, y0, x1, y1 = cx - ext[0], cy - ext[1], cx + ext[2], cy + ext[3]
            apart = (x1 + m <= b[0]) | (b[2] + m <= x0) | (y1 + m <= b[1]) | (b[3] + m <= y0)
            ok &= apart
            adx, ady = np.abs(cx - px), np.abs(cy - py)
            related |= np.maximum(adx, ady) >= cfg.min_axis_ratio * np.minimum(adx, ady)
        good = np.flatnonzero(ok & related)
        if good.size == 0:
            return None
        k = good[0]
        placed.append((float(cx[k]), float(cy[k])))
        boxes.append(np.array([cx[k] - ext[0], cy[k] - ext[1], cx[k] + ext[2], cy[k] + ext[3]]))
    return placed


def _one_image(rng: np.random.Generator, cfg: ShapesConfig) -> ShapesImage:
    S = cfg.image_size
    n = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(cfg.max_attempts):
        shapes, colours, sizes, extents = _sample_attributes(rng, cfg, n)
        centers = _layout(rng, cfg, shapes, extents)
        if centers is not None:
            break
    else:
        raise RuntimeError(
            f"could not place {n} non-overlapping objects in a {S}x{S} image after "
            f"{cfg.max_attempts} attempts; lower ShapesConfig.max_objects, big_extent or margin"
        )

    # Background: a random grey, a slight random tint, pixel noise (added after painting).
    base = rng.uniform(*cfg.background) + rng.uniform(-cfg.tint, cfg.tint, 3)
    img = np.broadcast_to(base.astype(np.float32), (S, S, 3)).copy()
    objects = []
    for shape, colour, size, s, c in zip(shapes, colours, sizes, extents, centers, strict=True):
        mask = shape_mask(shape, c, s, S)
        if not mask.any():  # only possible for absurd configs; fail loudly rather than silently
            raise RuntimeError(f"empty mask for a {size} {shape} of half-extent {s:.2f}px")
        rgb = np.clip(np.asarray(COLOURS[colour]) + rng.uniform(-1, 1, 3) * cfg.colour_jitter,
                      0, 255)
        img[mask] = rgb
        objects.append(ShapesObject(shape, colour, size, (c[0], c[1]), _mask_box(mask), mask,
                                    s, tuple(int(v) for v in np.rint(rgb))))
    img += rng.normal(0.0, cfg.noise_std, img.shape).astype(np.float32)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    caps = _captions(objects, S, cfg, rng)
    return ShapesImage(
        pixels=pixels,
        objects=objects,
        captions=[t for t, _, _ in caps],
        raw=[_raw(t) for t, _, _ in caps],
        word_objects=[w for _, w, _ in caps],
        relations=[r for _, _, r in caps],
    )


def _seed_sequence(seed: int | Sequence[int] | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(seed)


def generate_shapes(
    n: int,
    seed: int | Sequence[int] | np.random.SeedSequence = 0,
    config: ShapesConfig | None = None,
    progress: bool = False,
) -> list[ShapesImage]:
    """``n`` Shapes images; image ``i`` depends only on ``(seed, i, config)`` (so the first ``k``
    images of a run with ``n > k`` are the images of a run with ``n = k``)."""
    if n < 0:
        raise ValueError(f"generate_shapes: n must be >= 0, got {n}")
    cfg = config or ShapesConfig()
    children = _seed_sequence(seed).spawn(n)
    it = tqdm(children, desc="shapes", disable=not progress)
    return [_one_image(np.random.default_rng(c), cfg) for c in it]


# ---------------------------------------------------------------------------------------------
# Splits (the data contract of ARCHITECTURE.md)
# ---------------------------------------------------------------------------------------------

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class ShapesImageLoader:
    """``Split.load_image`` of a Shapes split: all pixels in one uint8 array (N, H, W, 3), no disk
    I/O. A plain class (not a lambda) so that DataLoader workers can pickle it."""

    def __init__(self, pixels: np.ndarray, split: str) -> None:
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 pixels (N, H, W, 3), got {pixels.dtype} {pixels.shape}"
            )
        self.pixels = pixels
        self.split = split

    def __call__(self, record: ImageRecord) -> torch.Tensor:
        i = record.image_id
        if record.split != self.split or not 0 <= i < len(self.pixels):
            raise ImageLoadError(
                record.filename,
                f"not an image of the Shapes '{self.split}' split ({len(self.pixels)} images); "
                "use the load_image of the split the record came from",
            )
        return normalize_image(self.pixels[i])


def _records(images: Sequence[ShapesImage], split: str) -> list[ImageRecord]:
    return [
        ImageRecord(
            image_id=i,
            filename=f"shapes/{split}/{i:06d}.png",
            split=split,
            captions=[list(c) for c in im.captions],
            raw=list(im.raw),
            extra={"objects": im.objects, "word_objects": im.word_objects,
                   "relations": im.relations},
        )
        for i, im in enumerate(images)
    ]


def make_split(name: str, images: Sequence[ShapesImage]) -> Split:
    """Wrap generated images as a :class:`Split` (records + an in-memory pixel loader)."""
    if not images:
        raise ValueError(f"split '{name}' has no images; ask for at least one")
    pixels = np.stack([im.pixels for im in images])
    loader = ShapesImageLoader(pixels, name)
    return Split(name=name, records=_records(images, name), load_image=loader)


def make_shapes_splits(
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 200,
    seed: int = 0,
    image_size: int = 64,
    progress: bool = False,
    **kw: Any,
) -> dict[str, Split]:
    """The train/val/test splits of the Shapes world. ``**kw`` are :class:`ShapesConfig` fields.

    Each split draws from its own child of ``SeedSequence(seed)`` (train: child 0, val: 1,
    test: 2), so changing ``n_train`` never changes val or test.
    """
    known = {f.name for f in fields(ShapesConfig)}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise TypeError(f"make_shapes_splits: unknown ShapesConfig fields {unknown}; "
                        f"known fields: {sorted(known)}")
    cfg = ShapesConfig(image_size=image_size, **kw)
    children = np.random.SeedSequence(seed).spawn(len(SPLIT_NAMES))
    sizes = dict(zip(SPLIT_NAMES, (n_train, n_val, n_test), strict=True))
    return {
        name: make_split(name, generate_shapes(sizes[name], child, cfg, progress=progress))
        for name, child in zip(SPLIT_NAMES, children, strict=True)
    }


def save_shapes(
    splits: Split | Mapping[str, Split], root: str | Path, progress: bool = True
) -> Path:
    """Write PNGs and a Karpathy-format ``dataset_shapes.json`` under ``root``; return its path.

    Image ``i`` of split ``s`` goes to ``root/shapes/s/{i:06d}.png``; the JSON entry carries
    ``filepath = "shapes/s"`` and ``filename = "{i:06d}.png"`` (the COCO convention), ``imgid``
    numbering all images of the file in order, ``sentences`` with ``tokens``/``raw``, plus the
    Shapes-only fields ``shapes_objects`` (no masks) and per sentence ``word_objects``.
    """
    from PIL import Image

    if isinstance(splits, Split):
        splits = {splits.name: splits}
    root = Path(root)
    images, sentid, imgid = [], 0, 0
    for name, split in splits.items():
        loader = split.load_image
        if not isinstance(loader, ShapesImageLoader):
            raise TypeError(f"save_shapes: split '{name}' was not made by make_shapes_splits "
                            "(its load_image holds no Shapes pixels)")
        out_dir = root / "shapes" / split.name
        out_dir.mkdir(parents=True, exist_ok=True)
        for rec in tqdm(split.records, desc=f"save {name}", disable=not progress):
            Image.fromarray(loader.pixels[rec.image_id]).save(root / rec.filename)
            sents = []
            for k, toks in enumerate(rec.captions):
                sents.append({"tokens": list(toks), "raw": rec.raw[k], "imgid": imgid,
                              "sentid": sentid,
                              "word_objects": list(rec.extra["word_objects"][k])})
                sentid += 1
            images.append({
                "filepath": f"shapes/{split.name}",
                "filename": Path(rec.filename).name,
                "imgid": imgid,
                "split": split.name,
                "sentids": [s["sentid"] for s in sents],
                "sentences": sents,
                "shapes_objects": [_json_object(o) for o in rec.extra["objects"]],
            })
            imgid += 1
    path = root / "dataset_shapes.json"
    path.write_text(json.dumps({"dataset": "shapes", "images": images}))
    return path


def _json_object(o: ShapesObject | Mapping[str, Any]) -> dict[str, Any]:
    d = o.as_dict(with_mask=False) if isinstance(o, ShapesObject) else dict(o)
    d.pop("mask", None)
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


_OWNED_PNG = re.compile(r"\d{6}\.png")


def owned_files(out_dir: Path) -> list[Path]:
    """The files a previous :func:`save_shapes` into ``out_dir`` wrote: ``dataset_shapes.json``
    and the ``shapes/<split>/NNNNNN.png`` images (any other file is someone else's)."""
    found = [out_dir / "dataset_shapes.json"]
    for name in SPLIT_NAMES:
        folder = out_dir / "shapes" / name
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if _OWNED_PNG.fullmatch(p.name))
    return [p for p in found if p.is_file()]


def _check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse an OUT_DIR that is a file, or a non-empty folder without ``--force``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"OUT_DIR {out_dir} is a file — pick a folder (it is made if missing)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise UserError(
            f"OUT_DIR {out_dir} is not empty — pick a new folder, or pass --force to replace the "
            "Shapes files in it (dataset_shapes.json and shapes/<split>/NNNNNN.png; nothing "
            "else is touched)"
        )


def remove_owned_files(out_dir: Path) -> int:
    """Delete :func:`owned_files` and the split folders they leave empty; return how many."""
    files = owned_files(out_dir)
    for path in files:
        path.unlink()
    for folder in [out_dir / "shapes" / name for name in SPLIT_NAMES] + [out_dir / "shapes"]:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return len(files)


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def memory_needed(n_images: int, image_size: int) -> int:
    """Bytes the writer holds for ``n_images`` of ``image_size`` px, roughly: each image's uint8
    pixels twice (the image, the split's array), one image's float32 work arrays four times."""
    return image_size * image_size * 3 * (2 * n_images + 16)


def _check_memory(n_images: int, image_size: int, drawn: int | None = None) -> None:
    """:class:`UserError` if ``n_images`` (``drawn``: with the empty splits' one) do not fit."""
    need = memory_needed(n_images if drawn is None else drawn, image_size)
    have = physical_memory()
    if have is not None and need > have:
        raise UserError(f"{n_images} image(s) of {image_size} px need about "
                        f"{need / 2**30:.0f} GiB of memory, more than this machine's "
                        f"{have / 2**30:.0f} GiB — ask for fewer (--n-train, --n-val, --n-test) "
                        "or smaller (--image-size) images")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m sat_core.data.shapes",
        description="Write the Shapes caption world to OUT_DIR: OUT_DIR/shapes/<split>/NNNNNN.png "
        "and OUT_DIR/dataset_shapes.json in the Karpathy-split format. Each split has its own "
        "child seed, so --n-test 8 writes the first 8 test images that training with the same "
        "--seed and --image-size holds out. OUT_DIR must be empty or new, unless --force.")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder to write into")
    p.add_argument("--n-train", type=int, default=0, help="training images (default 0)")
    p.add_argument("--n-val", type=int, default=0, help="validation images (default 0)")
    p.add_argument("--n-test", type=int, default=8, help="test images (default 8)")
    p.add_argument("--seed", type=int, default=0, help="world seed >= 0 (default 0, the presets')")
    p.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUT_DIR: first delete the Shapes files a previous "
                   "run left there (dataset_shapes.json, shapes/<split>/NNNNNN.png), nothing else")
    args = p.parse_args(argv)
    if min(args.n_train, args.n_val, args.n_test) < 0:
        p.error("--n-train, --n-val and --n-test must be >= 0")
    if args.image_size < 16:
        p.error(f"--image-size must be >= 16, got {args.image_size}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    if not any((args.n_train, args.n_val, args.n_test)):
        p.error("nothing to write: ask for at least one image")
    # was: a MemoryError traceback, or swapping for hours (a split of 0 is drawn as 1: main)
    sizes = (args.n_train, args.n_val, args.n_test)
    _check_memory(sum(sizes), args.image_size, sum(max(n, 1) for n in sizes))
    return args


@command(OSError)
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m sat_core.data.shapes OUT_DIR``: the Shapes world as PNGs + Karpathy JSON.

    A user error (bad option, a non-empty OUT_DIR without ``--force``) is one line, status 2.
    """
    args = _parse_args(argv)
    _check_out_dir(args.out_dir, args.force)
    wanted = dict(zip(SPLIT_NAMES, (args.n_train, args.n_val, args.n_test), strict=True))
    # a split of 0 images is drawn as 1 and dropped (each split has its own seed: no effect)
    splits = make_shapes_splits(*(max(n, 1) for n in wanted.values()), seed=args.seed,
                                image_size=args.image_size, progress=True)
    splits = {name: split for name, split in splits.items() if wanted[name]}
    if args.force and args.out_dir.is_dir():  # only once the new images exist
        removed = remove_owned_files(args.out_dir)
        print(f"--force: removed {removed} file(s) of an earlier run from {args.out_dir}")
    path = save_shapes(splits, args.out_dir)
    for name, split in splits.items():
        print(f"{name}: {len(split.records)} images in {args.out_dir / 'shapes' / name}")
    print(f"wrote {path}")
    return 0


__all__ = [
    "COLOURS", "SHAPES", "SIZES", "SHAPES_VOCAB", "SPLIT_NAMES", "ShapesConfig", "ShapesObject",
    "ShapesImage", "ShapesImageLoader", "generate_shapes", "make_shapes_splits", "make_split",
    "owned_files", "position", "relation", "remove_owned_files", "save_shapes", "shape_mask",
    "shapes_vocabulary",
]


if __name__ == "__main__":
    raise SystemExit(main())
