"""Attention you can step through on a static page: word by word, without a kernel.

A slider from ``ipywidgets`` redraws its figure by calling Python, so on the book's static HTML
pages (and in any notebook viewer) it shows nothing. :func:`attention_stepper` instead draws every
frame once, as it executes: one picture per word of the caption, the image lit where that word's
weights alpha_t (Eq. 5) are large. It returns a small self-contained HTML block:

* the caption's words are the control: each is a radio-button label, so a click (or the arrow
  keys once a word has the focus) shows that word's map. This part is plain HTML and CSS, with no
  script at all, so it works wherever HTML is shown;
* a range slider moves through the words too (one line of inline JavaScript; where scripts are
  not run, the words still work).

In a live notebook the same object displays the same control; the chapter's ``ipywidgets``
slider remains for readers who want Python in the loop.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib import pyplot as plt

from sat_core.viz import upsample_attention

_CSS = """
#{id} {{font: 14px/1.4 system-ui, sans-serif; margin: 0.5em 0;}}
#{id} > input[type=radio] {{position: absolute; opacity: 0; width: 1px; height: 1px;}}
#{id} .sat-words {{display: flex; flex-wrap: wrap; gap: 4px; margin: 6px 0;}}
#{id} .sat-words label {{padding: 1px 6px; border: 1px solid #bbb; border-radius: 4px;
  cursor: pointer; background: #f6f6f6;}}
#{id} .sat-frame {{display: none; margin: 0;}}
#{id} .sat-frame img {{width: {px}px; height: {px}px; image-rendering: pixelated;
  border: 1px solid #ccc;}}
#{id} .sat-frame figcaption {{font-size: 13px; color: #333;}}
#{id} input[type=range] {{width: {px}px;}}
"""


def _png_data_uri(rgb: np.ndarray) -> str:
    """A float (H, W, 3) image in [0, 1] as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    plt.imsave(buf, np.clip(rgb, 0.0, 1.0), format="png")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def attention_frames(image: np.ndarray, alphas: torch.Tensor | np.ndarray,
                     grid: tuple[int, int], scale: int = 4) -> list[np.ndarray]:
    """One ``(scale*H, scale*W, 3)`` picture per step t: the image lit where alpha_t is large.

    Each map is :func:`~sat_core.viz.upsample_attention` of alpha_t scaled to its own maximum,
    applied as ``image * (0.35 + 0.65 * map)`` (as in chapter 9's figures), so the brightest
    region is where the model looked when it emitted word t.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"attention_frames: image must be (H, W, 3), got {image.shape}")
    a = np.asarray(alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas,
                   dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"attention_frames: alphas must be (T, L={grid[0] * grid[1]}) for the "
                         f"grid {grid}, got shape {a.shape}")
    big = image.repeat(scale, axis=0).repeat(scale, axis=1)
    frames = []
    for alpha_t in a:
        heat = upsample_attention(alpha_t, grid, big.shape[:2])
        heat = heat / max(float(heat.max()), 1e-12)
        frames.append(big * (0.35 + 0.65 * heat[..., None]))
    return frames


@dataclass
class AttentionStepper:
    """The HTML control of :func:`attention_stepper` (shown by Jupyter via ``_repr_html_``)."""

    html: str

    def _repr_html_(self) -> str:
        return self.html


def attention_stepper(
    image: np.ndarray,
    alphas: torch.Tensor | np.ndarray,
    words: Sequence[str],
    grid: tuple[int, int],
    *,
    betas: torch.Tensor | np.ndarray | Sequence[float] | None = None,
    size_px: int = 256,
    title: str = "",
) -> AttentionStepper:
    """A word-by-word attention viewer that works on a static page (see the module docstring).

    ``alphas`` ``(T, L)`` holds alpha_t of the step that emitted ``words[t]``; ``betas`` (T,)
    the gate of Sec. 4.2.1, shown beside each word when given. The first word is selected.
    """
    words = [str(w) for w in words]
    if not words:
        raise ValueError("attention_stepper: no words to step through")
    a = np.asarray(alphas.detach().cpu() if isinstance(alphas, torch.Tensor) else alphas)
    if a.ndim != 2 or a.shape[0] != len(words):
        raise ValueError(f"attention_stepper: alphas must be (T, L) with T = {len(words)} words, "
                         f"got shape {a.shape}")
    b = None if betas is None else np.asarray(
        betas.detach().cpu() if isinstance(betas, torch.Tensor) else betas, dtype=float).ravel()
    if b is not None and b.shape[0] != len(words):
        raise ValueError(f"attention_stepper: {b.shape[0]} betas for {len(words)} words")
    uris = [_png_data_uri(f) for f in attention_frames(image, a, grid)]
    # A stable id from the content: rebuilding the book gives the same page.
    uid = "sat-step-" + hashlib.sha1("".join(uris + words).encode()).hexdigest()[:10]
    return AttentionStepper(_stepper_html(uid, uris, words, b, size_px, title))


def _stepper_html(uid: str, uris: Sequence[str], words: Sequence[str],
                  betas: np.ndarray | None, size_px: int, title: str) -> str:
    """Radios (state), word labels and a slider (controls), one <figure> per word (frames)."""
    n = len(words)
    rules = [_CSS.format(id=uid, px=size_px)]
    for t in range(n):
        rules.append(f"#{uid}-{t}:checked ~ .sat-frames .f{t} {{display: block;}}")
        rules.append(f"#{uid}-{t}:checked ~ .sat-words label[for={uid}-{t}] "
                     "{background: #ffd54f; border-color: #e0a800; font-weight: 600;}")
        rules.append(f"#{uid}-{t}:focus-visible ~ .sat-words label[for={uid}-{t}] "
                     "{outline: 2px solid #1976d2;}")
    radios = "".join(
        f'<input type="radio" name="{uid}" id="{uid}-{t}" value="{t}"'
        f'{" checked" if t == 0 else ""} onchange="document.getElementById(\'{uid}-r\')'
        f'.value=this.value">' for t in range(n))
    labels = "".join(f'<label for="{uid}-{t}">{html.escape(w)}</label>'
                     for t, w in enumerate(words))
    slider = (f'<input type="range" id="{uid}-r" min="0" max="{n - 1}" value="0" '
              f'aria-label="word" oninput="document.getElementById(\'{uid}-\'+this.value)'
              '.checked=true">')
    frames = []
    for t, (uri, w) in enumerate(zip(uris, words, strict=True)):
        gate = "" if betas is None else f", β = {betas[t]:.2f}"
        cap = f"t = {t + 1}: “{html.escape(w)}”{gate}"
        frames.append(f'<figure class="sat-frame f{t}"><img src="{uri}" alt="attention map for '
                      f'word {t + 1}, {html.escape(w)}"><figcaption>{cap}</figcaption></figure>')
    head = f"<div class=\"sat-title\">{html.escape(title)}</div>" if title else ""
    return (f'<div class="sat-stepper" id="{uid}"><style>{"".join(rules)}</style>{head}{radios}'
            f'<div class="sat-words">{labels}</div>{slider}'
            f'<div class="sat-frames">{"".join(frames)}</div></div>')


__all__ = ["AttentionStepper", "attention_frames", "attention_stepper"]
