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

import csv
import json
import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
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


# ------------------------------------------------------------------------------------------------
# Attention maps (chapters 4 and 9) and training curves (chapter 6)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(H, W)`` map, reflecting at the borders (so a constant map
    stays constant)."""
    for dim in (0, 1):
        radius = min(max(1, math.ceil(3 * sigma)), x.shape[dim] - 1)
        if radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, -1, 1) if dim == 0 else (
            kernel / kernel.sum()).view(1, 1, 1, -1)
        pad = (0, 0, radius, radius) if dim == 0 else (radius, radius, 0, 0)
        x = F.conv2d(F.pad(x[None, None], pad, mode="reflect"), kernel)[0, 0]
    return x


def upsample_attention(
    alpha: torch.Tensor | np.ndarray,
    grid: tuple[int, int],
    size: tuple[int, int],
    smooth: bool = True,
) -> np.ndarray:
    """Spread the weights alpha_t (L,) of Eq. (5) over the image: an ``(H, W)`` map, size (H, W).

    Location i = r * w + c of the ``grid = (h, w)`` is the image cell (r, c) (the encoder's
    row-major flattening). ``smooth=False`` paints every cell with its weight (nearest
    neighbour); ``smooth=True`` interpolates bilinearly and blurs with a Gaussian of a quarter of
    a cell, like the paper's figures (``pyramid_expand`` of the authors' code). The values stay on
    alpha's scale (a constant alpha gives a constant map); normalise for display.
    """
    h, w = grid
    a = torch.as_tensor(np.asarray(alpha, dtype=np.float64)).reshape(-1)
    if a.numel() != h * w:
        raise ValueError(f"upsample_attention: alpha has {a.numel()} weights, the grid {h}x{w} "
                         f"has {h * w} locations; pass the encoder's grid (encoder.grid)")
    H, W = size
    cells = a.view(1, 1, h, w)
    if not smooth:
        return F.interpolate(cells, size=(H, W), mode="nearest")[0, 0].numpy()
    up = F.interpolate(cells, size=(H, W), mode="bilinear", align_corners=False)[0, 0]
    sigma = 0.25 * min(H / h, W / w)
    return (_gaussian_blur(up, sigma) if sigma >= 0.5 else up).numpy()


def attention_overlay(
    image: np.ndarray,
    alphas: torch.Tensor | np.ndarray,
    words: Sequence[str],
    grid: tuple[int, int],
    *,
    smooth: bool = True,
    betas: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    cols: int = 5,
) -> Figure:
    """Where the model looked for each word (the paper's Fig. 2, 3 and 5).

    ``image`` is float ``(H, W, 3)`` in [0, 1]; ``alphas`` ``(T, L)`` holds alpha_t of the step
    that emitted ``words[t]`` (``Hypothesis.alphas``). The first panel is the image; then one
    panel per word: the image darkened where alpha_t is small, the upsampled map of
    :func:`upsample_attention` (scaled to its maximum) drawn over it with transparency, titled
    with the word (and the gate beta_t of Sec. 4.2.1 when ``betas`` is given).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"attention_overlay: image must be (H, W, 3), got {image.shape}")
    alphas = np.asarray(alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas,
                        dtype=np.float64)
    if alphas.ndim != 2 or alphas.shape[0] != len(words):
        raise ValueError(f"attention_overlay: alphas must be (T, L) with T = {len(words)} words, "
                         f"got shape {alphas.shape}")
    if betas is not None:
        betas = np.asarray(betas.detach().cpu() if isinstance(betas, torch.Tensor) else betas,
                           dtype=np.float64).reshape(-1)
        if betas.shape[0] != len(words):
            raise ValueError(f"attention_overlay: {betas.shape[0]} betas for {len(words)} words")
    H, W = image.shape[:2]
    panels = len(words) + 1
    cols = max(1, min(cols, panels))
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(image, interpolation="nearest")
    axes[0, 0].set_title("image", fontsize=9)
    for t, word in enumerate(words):
        ax = axes.flat[t + 1]
        heat = upsample_attention(alphas[t], grid, (H, W), smooth=smooth)
        heat = heat / max(float(heat.max()), 1e-12)
        ax.imshow(image * (0.35 + 0.65 * heat[..., None]), interpolation="nearest")
        ax.imshow(heat, cmap="gray", alpha=0.45, vmin=0.0, vmax=1.0,
                  interpolation="nearest" if not smooth else "bilinear")
        title = word if betas is None else f"{word}  (β={betas[t]:.2f})"
        ax.set_title(title, fontsize=9)
    return fig


def _read_log(log: Any) -> list[dict[str, Any]]:
    """The per-epoch rows of a training log: a run folder, log.json, log.csv, a dict, or rows."""
    if isinstance(log, (str, os.PathLike)):
        path = Path(log)
        if path.is_dir():
            path = path / "log.json"
        if not path.exists():
            raise FileNotFoundError(f"training log {path} does not exist; pass the run folder of "
                                    "sat_core.train (it holds log.json and log.csv)")
        if path.suffix == ".csv":
            with path.open() as f:
                return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                        for row in csv.DictReader(f)]
        try:
            log = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"training log {path} is not valid JSON ({e})") from None
    if isinstance(log, Mapping):
        if "history" not in log:
            raise ValueError("training log has no 'history' (the per-epoch rows of log.json)")
        log = log["history"]
    return [dict(row) for row in log]


def plot_training_curves(log: Any) -> Figure:
    """Training loss and validation BLEU-4 per epoch, from the log that ``sat_core.train`` writes.

    ``log`` is a run folder, a path to ``log.json`` or ``log.csv``, the loaded ``log.json`` dict,
    or its list of rows (fields ``epoch``, ``train_loss``, optional ``train_nll``, ``val_bleu4``).
    """
    rows = _read_log(log)
    if not rows:
        raise ValueError("training log has no epochs yet; train for at least one epoch")
    for field in ("epoch", "train_loss", "val_bleu4"):
        if field not in rows[0]:
            raise ValueError(f"training log rows have no {field!r} field (found {sorted(rows[0])})")

    def column(name: str) -> tuple[list[float], list[float]]:
        pairs = [(float(r["epoch"]), float(r[name])) for r in rows if r.get(name) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    ax_loss.plot(*column("train_loss"), marker="o", label="loss (NLL + penalty)")
    if any(r.get("train_nll") is not None for r in rows):
        ax_loss.plot(*column("train_nll"), marker=".", linestyle="--", label="word NLL")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss per word")
    ax_loss.legend(fontsize=8)
    ax_bleu.plot(*column("val_bleu4"), marker="o", color="tab:green")
    ax_bleu.set_xlabel("epoch")
    ax_bleu.set_ylabel("validation BLEU-4")
    for ax in (ax_loss, ax_bleu):
        ax.grid(alpha=0.3)
    return fig


__all__ = [
    "OBJECT_COLOURS", "attention_overlay", "draw_objects", "plot_training_curves", "record_image",
    "shapes_gallery", "upsample_attention",
]
