"""Does attention land on the object a word names? A measure for the Shapes world (chapter 9).

Sec. 5.4 of Xu et al. (2015) shows *qualitatively* that the weights alpha_t (Eq. (4)-(5)) of the
step that emits a word look at the thing the word names. In the Shapes world every token of a
reference caption knows its object (``record.extra["word_objects"]``), and every object has a
pixel mask, so the claim can be counted:

1. teacher-force each REFERENCE caption ``[<start>, w_1, ..., w_n, <end>]`` through the decoder;
   step t (0-based) reads y_{t-1} and *predicts* w_{t+1}, so row t of ``DecoderOutput.alpha`` is
   the attention of token ``tokens[t]`` (alignment: :func:`object_word_steps`; using row t + 1,
   the step whose *input* is the word, is the classic off-by-one);
2. take the peak location i* = argmax_i alpha_ti and map it to its pixel cell of the ``(h, w)``
   grid (location i = r * w + c, :func:`cell_box`);
3. score a HIT when that cell overlaps the named object's mask (more than ``min_overlap`` of the
   cell's pixels, default: any pixel);
4. compare with a UNIFORM baseline: the chance that a location drawn uniformly at random would
   have been a hit (the fraction of the L cells that are hits), averaged over the same words.

:func:`attention_grounding` returns the hit rate, the baseline, a breakdown by word type
(size / colour / shape words) and every miss, for a failure gallery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from sat_core.data.records import Split
from sat_core.data.shapes import COLOURS, SHAPES, SIZES
from sat_core.text import Vocabulary

WORD_TYPES: dict[str, str] = {
    **{w: "size" for w in SIZES}, **{w: "colour" for w in COLOURS}, **{w: "shape" for w in SHAPES},
}


def word_type(word: str) -> str:
    """``"size"``, ``"colour"``, ``"shape"`` or ``"other"`` for a Shapes word."""
    return WORD_TYPES.get(word, "other")


def object_word_steps(tokens: Sequence[str],
                      word_objects: Sequence[int]) -> list[tuple[int, str, int]]:
    """``(t, word, object)`` for every object word of a reference caption.

    ``tokens`` are the caption's words WITHOUT ``<start>``/``<end>``; ``word_objects[t]`` is the
    object index of ``tokens[t]`` (-1: no object). ``t`` is both the token's position and the
    decoder step that predicts it: teacher forcing feeds ``y_{t-1}`` (``<start>`` at t = 0) and
    step t emits ``tokens[t]``, so alpha_t = ``DecoderOutput.alpha[:, t]`` belongs to it.
    """
    if len(tokens) != len(word_objects):
        raise ValueError(f"object_word_steps: {len(tokens)} tokens but {len(word_objects)} "
                         "word_objects entries; they must be the same caption's")
    return [(t, w, int(o)) for t, (w, o) in enumerate(zip(tokens, word_objects, strict=True))
            if int(o) >= 0]


def cell_box(index: int, grid: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixel rectangle ``(y0, y1, x0, x1)`` (exclusive ends) of location ``index`` = r * w + c.

    The ``(h, w)`` grid tiles an ``(H, W)`` image: row r covers pixel rows
    ``floor(r H / h) .. floor((r + 1) H / h)``, the same for columns (exact when h divides H).
    """
    h, w = grid
    H, W = size
    if not 0 <= index < h * w:
        raise IndexError(f"cell_box: location {index} outside the {h}x{w} grid")
    r, c = divmod(int(index), w)
    return (r * H) // h, ((r + 1) * H) // h, (c * W) // w, ((c + 1) * W) // w


def cell_overlaps(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(L,) fraction of each cell's pixels that lie inside the boolean ``mask`` (H, W).

    Cells as :func:`cell_box` draws them. All L counts at once from the mask's integral image
    (exact integer counts, so the same fractions as counting cell by cell); an empty cell (more
    grid rows than pixel rows) gets 0.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"cell_overlaps: mask must be (H, W), got shape {mask.shape}")
    h, w = grid
    H, W = mask.shape
    integral = np.zeros((H + 1, W + 1), dtype=np.int64)
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    ys = (np.arange(h + 1) * H) // h  # row r spans ys[r] .. ys[r + 1]
    xs = (np.arange(w + 1) * W) // w
    inside = (integral[ys[1:, None], xs[None, 1:]] - integral[ys[:-1, None], xs[None, 1:]]
              - integral[ys[1:, None], xs[None, :-1]] + integral[ys[:-1, None], xs[None, :-1]])
    pixels = np.diff(ys)[:, None] * np.diff(xs)[None, :]
    return np.divide(inside, pixels, out=np.zeros((h, w)), where=pixels > 0).reshape(-1)


def peak_hit(alpha: Tensor | np.ndarray, mask: np.ndarray, grid: tuple[int, int],
             min_overlap: float = 0.0) -> tuple[bool, int, float]:
    """Is the peak of alpha_t (L,) on the object? -> ``(hit, peak index, uniform chance)``.

    Hit: the peak cell's overlap with ``mask`` exceeds ``min_overlap``. Chance: the fraction of
    the L cells that would be hits, i.e. the hit probability of a uniformly random peak. Ties go
    to the first (lowest) index, like ``argmax``.
    """
    a = np.asarray(alpha.detach().cpu() if isinstance(alpha, Tensor) else alpha,
                   dtype=np.float64).reshape(-1)
    if a.size != grid[0] * grid[1]:
        raise ValueError(f"peak_hit: alpha has {a.size} weights, the grid {grid[0]}x{grid[1]} "
                         f"has {grid[0] * grid[1]} locations; pass the encoder's grid")
    hits = cell_overlaps(mask, grid) > min_overlap
    peak = int(np.argmax(a))
    return bool(hits[peak]), peak, float(hits.mean())


@dataclass
class GroundedWord:
    """One object word of one reference caption and where its attention peaked."""

    image_index: int
    caption_index: int
    step: int  # = token index: alpha_t of the step that predicts this word
    word: str
    word_type: str
    object_index: int
    peak: int  # location i* = argmax alpha_t
    hit: bool
    chance: float  # hit probability of a uniformly random location
    alpha: Tensor = field(repr=False)  # (L,)
    tokens: list[str] = field(default_factory=list, repr=False)


@dataclass
class GroundingResult:
    """Hit rate vs the uniform baseline, overall and per word type, and every miss."""

    hit_rate: float
    baseline: float
    n_words: int
    by_type: dict[str, dict[str, float]]  # type -> {"hit_rate", "baseline", "n"}
    misses: list[GroundedWord]
    words: list[GroundedWord] = field(repr=False, default_factory=list)

    def table(self) -> str:
        """A small text table: one line per word type plus the total."""
        lines = [f"{'words':<8}{'n':>6}{'hit rate':>10}{'uniform':>10}"]
        for name, row in self.by_type.items():
            lines.append(f"{name:<8}{int(row['n']):>6}{row['hit_rate']:>10.3f}"
                         f"{row['baseline']:>10.3f}")
        lines.append(f"{'all':<8}{self.n_words:>6}{self.hit_rate:>10.3f}{self.baseline:>10.3f}")
        return "\n".join(lines)


def summarize(words: Sequence[GroundedWord]) -> GroundingResult:
    """Aggregate scored words into a :class:`GroundingResult` (rates are means over words)."""
    def rates(ws: Sequence[GroundedWord]) -> dict[str, float]:
        n = len(ws)
        return {"hit_rate": sum(w.hit for w in ws) / n if n else float("nan"),
                "baseline": sum(w.chance for w in ws) / n if n else float("nan"), "n": n}

    by_type = {}
    for kind in ("size", "colour", "shape", "other"):
        ws = [w for w in words if w.word_type == kind]
        if ws:
            by_type[kind] = rates(ws)
    total = rates(words)
    return GroundingResult(hit_rate=total["hit_rate"], baseline=total["baseline"],
                           n_words=len(words), by_type=by_type,
                           misses=[w for w in words if not w.hit], words=list(words))


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def score_caption(alphas: Tensor | np.ndarray, tokens: Sequence[str], word_objects: Sequence[int],
                  masks: Sequence[np.ndarray], grid: tuple[int, int], *, image_index: int = 0,
                  caption_index: int = 0, min_overlap: float = 0.0) -> list[GroundedWord]:
    """Score every object word of one caption given its teacher-forced alphas ``(>= n, L)``.

    Row t of ``alphas`` must be alpha_t of the step that predicts ``tokens[t]``
    (``DecoderOutput.alpha[b]``; a trailing row for ``<end>`` is allowed and ignored).
    """
    alphas = torch.as_tensor(np.asarray(alphas.detach().cpu() if isinstance(alphas, Tensor)
                                        else alphas, dtype=np.float32))
    if alphas.dim() != 2 or alphas.shape[0] < len(tokens):
        raise ValueError(f"score_caption: need alphas (T >= {len(tokens)}, L), one row per "
                         f"predicted word, got shape {tuple(alphas.shape)}")
    out = []
    for t, word, obj in object_word_steps(tokens, word_objects):
        if obj >= len(masks):
            raise ValueError(f"score_caption: word {word!r} names object {obj} but the image has "
                             f"{len(masks)} objects")
        hit, peak, chance = peak_hit(alphas[t], masks[obj], grid, min_overlap)
        out.append(GroundedWord(image_index, caption_index, t, word, word_type(word), obj, peak,
                                hit, chance, alphas[t].clone(), list(tokens)))
    return out


def _parts(model: Any) -> tuple[Any, Any, tuple[int, int] | None]:
    """(encode function, decoder, grid or None) of a Captioner or a bare decoder."""
    if hasattr(model, "decoder"):
        enc = getattr(model, "encoder", None)
        grid = tuple(enc.grid) if enc is not None and hasattr(enc, "grid") else None
        return model.encode, model.decoder, grid
    return (lambda x: x), model, None


@torch.no_grad()
def attention_grounding(
    model: Any,
    split: Split,
    vocab: Vocabulary,
    *,
    grid: tuple[int, int] | None = None,
    mode: str | None = None,
    limit: int = 0,
    captions_per_image: int = 0,
    min_overlap: float = 0.0,
    batch_size: int = 64,
    progress: bool = False,
) -> GroundingResult:
    """Fraction of object words whose attention peak falls on the object, vs a uniform baseline.

    Args:
        model: a ``Captioner`` (images are encoded) or an ``AttentionDecoder`` fed with what
            ``split.load_image`` returns (then ``(L, D)`` features).
        split: a Shapes split (records with ``extra["objects"]`` masks and ``word_objects``).
        vocab: the model's vocabulary.
        grid: ``(h, w)`` of the annotation grid; default: the encoder's ``grid``, else a square.
        mode: decoder mode for teacher forcing; default ``"soft"`` for soft models and
            ``"hard-expect"`` for hard ones (alpha_t is then the multinoulli of Eq. (8)).
        limit: score the first ``limit`` images only (0: all).
        captions_per_image: the first k references of each image (0: all of them).
        min_overlap: a hit needs the peak cell's overlap with the mask to exceed this.
    """
    encode, decoder, enc_grid = _parts(model)
    if mode is None:
        attention = getattr(getattr(decoder, "cfg", None), "attention", "soft")
        mode = "soft" if attention == "soft" else "hard-expect"
    records = split.records[:limit] if limit else split.records
    for r in records[:1]:
        if "word_objects" not in r.extra or "objects" not in r.extra:
            raise ValueError(f"attention_grounding: record {r.filename} has no word_objects / "
                             "objects; the measure needs a Shapes split (load_splits('shapes'))")
    device = next(decoder.parameters()).device
    was_training = decoder.training
    decoder.eval()
    words: list[GroundedWord] = []
    try:
        for start in tqdm(range(0, len(records), batch_size), desc="grounding", unit="batch",
                          disable=not progress):
            chunk = records[start:start + batch_size]
            x = torch.stack([split.load_image(r) for r in chunk]).to(device)
            a = encode(x)
            g = grid or enc_grid
            if g is None:
                g = _square_grid(a.shape[1])
            alpha, owners = teacher_force_references(decoder, a, chunk, vocab, mode=mode,
                                                     captions_per_image=captions_per_image)
            for i, (j, c) in enumerate(owners):
                words += _score_reference(alpha[i], records[start + j], c, g,
                                          image_index=start + j, min_overlap=min_overlap)
    finally:
        decoder.train(was_training)
    return summarize(words)


def _square_grid(L: int) -> tuple[int, int]:
    """``(side, side)`` for L = side * side locations; any other L needs the grid to be given."""
    side = int(round(L ** 0.5))
    if side * side != L:
        raise ValueError(f"attention_grounding: L = {L} is not square; pass grid=(h, w)")
    return (side, side)


@torch.no_grad()
def teacher_force_references(
    decoder: Any,
    a: Tensor,
    records: Sequence[Any],
    vocab: Vocabulary,
    *,
    mode: str = "soft",
    captions_per_image: int = 0,
) -> tuple[Tensor, list[tuple[int, int]]]:
    """alpha of every reference caption of ``records``, teacher-forced through ``decoder``.

    ``a`` (B, L, D) holds the records' annotation vectors; each caption ``[<start>, w_1, ...,
    <end>]`` is fed shifted by one (Sec. 3.1.2), so row t of its alpha (T, L) is the attention
    of the step that predicts ``tokens[t]`` (Eq. (4)-(5)). Returns alpha (N, T, L), float32 on
    the CPU, and for each of its N rows ``(j, c)``: caption c of ``records[j]``.
    """
    device = next(decoder.parameters()).device
    rows, caps, owners = [], [], []
    for j, r in enumerate(records):
        k = captions_per_image or len(r.captions)
        for c, tokens in enumerate(r.captions[:k]):
            caps.append(torch.tensor(vocab.encode(tokens)))
            rows.append(j)
            owners.append((j, c))
    lengths = torch.tensor([len(c) for c in caps])
    ids = torch.zeros(len(caps), int(lengths.max()), dtype=torch.long)
    for i, c in enumerate(caps):
        ids[i, :len(c)] = c
    out = decoder(a[torch.tensor(rows, device=a.device)], ids[:, :-1].to(device),
                  (lengths - 1).to(device), mode=mode)
    return out.alpha.float().cpu(), owners  # (N, T, L): row t predicts tokens[t]


def _score_reference(alpha: Tensor, record: Any, c: int, grid: tuple[int, int], *,
                     image_index: int, min_overlap: float) -> list[GroundedWord]:
    """:func:`score_caption` of reference caption ``c`` of a Shapes ``record``: its tokens, the
    objects they name (``word_objects``) and the objects' masks."""
    masks = [np.asarray(_get(o, "mask"), dtype=bool) for o in record.extra["objects"]]
    aligned = record.extra["word_objects"][c]
    return score_caption(alpha, record.captions[c], aligned, masks, grid,
                         image_index=image_index, caption_index=c, min_overlap=min_overlap)
