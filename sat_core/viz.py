"""Pictures for the book: dataset galleries (and, in later chapters, attention overlays).

Every function draws with matplotlib's object API (``fig, axes = plt.subplots(...)``), returns the
:class:`~matplotlib.figure.Figure` and never calls ``plt.show()``, so it works under the headless
Agg backend (tests, papermill) as well as inline in a notebook.

Building blocks, reusable by the attention overlays of chapters 4 and 9:

* :func:`record_image` -- a record's pixels as float ``(H, W, 3)`` in [0, 1];
* :func:`draw_objects` -- Shapes masks and boxes over an image, labelled with object indices
  (the indices that ``word_objects`` of the captions point to).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sat_core.data.records import ImageRecord, Split, denormalize_image

# Outline colours for object 0, 1, 2, ... (matplotlib's tab10). The objects keep their own pixels;
# what lies outside every mask is dimmed, so the masks stand out whatever the palette.
OBJECT_COLOURS: tuple[str, ...] = tuple(plt.get_cmap("tab10").colors)  # type: ignore[attr-defined]


def _get(obj: Any, name: str) -> Any:
    """Field ``name`` of a Shapes object, whether a dataclass or a plain dict."""
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def record_image(split: Split, record: ImageRecord) -> np.ndarray:
    """The pixels of ``record`` as float ``(H, W, 3)`` in [0, 1] (undoing the normalisation)."""
    x = split.load_image(record)
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(
            f"split '{split.name}' returns {tuple(x.shape)} for {record.filename}, not an image "
            "(3, H, W); a feature-cache loader cannot be drawn, use the split's image loader"
        )
    return denormalize_image(x)


def draw_objects(ax: Axes, image: np.ndarray, objects: Sequence[Any], dim: float = 0.35) -> None:
    """Draw ``image`` with everything outside the objects' masks dimmed by ``dim``; outline each
    mask and its box, and write its index at the box corner, in ``OBJECT_COLOURS[index]``."""
    image = np.asarray(image, dtype=np.float64)
    inside = np.zeros(image.shape[:2], dtype=bool)
    for obj in objects:
        inside |= np.asarray(_get(obj, "mask"), dtype=bool)
    ax.imshow(np.where(inside[..., None], image, image * dim), interpolation="nearest")
    for k, obj in enumerate(objects):
        colour = OBJECT_COLOURS[k % len(OBJECT_COLOURS)]
        mask = np.asarray(_get(obj, "mask"), dtype=float)
        ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.0)
        x0, y0, x1, y1 = _get(obj, "box")
        # imshow puts pixel (r, c) on [c - 0.5, c + 0.5]: the exclusive box edge x1 is x1 - 0.5.
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False,
                               edgecolor=colour, linewidth=0.8, linestyle="--"))
        ax.text(x0 - 0.5, y0 - 0.5, str(k), color="white", fontsize=7, va="bottom", ha="left",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5})


def _object_legend(objects: Sequence[Any]) -> str:
    return "\n".join(
        f"{k}: {_get(o, 'size')} {_get(o, 'colour')} {_get(o, 'shape')}"
        for k, o in enumerate(objects)
    )


def _caption_block(captions: Sequence[Sequence[str]], width: int = 30) -> str:
    return "\n".join(textwrap.fill(" ".join(c), width=width, subsequent_indent="  ")
                     for c in captions)


def _no_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def shapes_gallery(split: Split, n: int = 8, show_masks: bool = True, seed: int = 0) -> Figure:
    """``n`` random images of ``split`` (chosen by ``seed``), their reference captions underneath
    and, if ``show_masks``, a second row with each object's mask and box labelled by its index."""
    if n < 1:
        raise ValueError(f"shapes_gallery: n must be >= 1, got {n}")
    if len(split) == 0:
        raise ValueError(f"shapes_gallery: split '{split.name}' is empty")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
    records = [split.records[i] for i in chosen]
    if show_masks and any("objects" not in r.extra for r in records):
        raise ValueError(f"split '{split.name}' has no Shapes objects (record.extra['objects']); "
                         "use show_masks=False or a split from make_shapes_splits")

    rows, cols = (2 if show_masks else 1), len(records)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 3.3 * rows), squeeze=False,
                             layout="constrained")
    for c, rec in enumerate(records):
        image = record_image(split, rec)
        ax = axes[0, c]
        ax.imshow(image, interpolation="nearest")
        ax.set_title(f"#{rec.image_id}", fontsize=8)
        ax.set_xlabel(_caption_block(rec.captions), fontsize=6, loc="left")
        _no_ticks(ax)
        if show_masks:
            ax = axes[1, c]
            draw_objects(ax, image, rec.extra["objects"])
            ax.set_xlabel(_object_legend(rec.extra["objects"]), fontsize=7, loc="left")
            _no_ticks(ax)
    fig.suptitle(f"Shapes '{split.name}': images, captions, object masks", fontsize=10)
    return fig


__all__ = ["OBJECT_COLOURS", "draw_objects", "record_image", "shapes_gallery"]
