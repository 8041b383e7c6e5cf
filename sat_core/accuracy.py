"""Is a generated caption TRUE of its image? Exact caption accuracy in the Shapes world.

BLEU, METEOR and CIDEr (Sec. 5.2 of Xu et al., 2015) count n-grams shared with the references:
"a big red circle above a small blue square" and "a big blue circle above a small red square"
share almost every n-gram, yet the second caption is false. In the Shapes world every image is
described completely by its objects, so a caption can be *judged*:

1. parse it with the world's own grammar (:func:`parse_caption`): each template of
   ``sat_core.data.shapes._TEMPLATES`` is compiled into a token pattern whose slots are noun
   phrases ``{A}`` = ``[size] colour shape``, relations ``{A>B}`` ("to the left of", "above",
   ...) and position words ``{A@}`` ("on the left", "in the middle", ...), so a template added to
   the grammar is understood here too;
2. match the noun phrases one-to-one to the image's objects (all permutations: at most 3! of
   them) and check every attribute word against the matched object;
3. check every spatial phrase against the object centers.

The rules (:func:`judge_caption`), for an image with objects o_1..o_n and centers ``(x, y)`` in
pixels of an ``S x S`` image:

* a caption is RIGHT when it parses, names exactly n noun phrases, and some one-to-one matching of
  phrases to objects gives every phrase the object's colour and shape (and its size, where the
  phrase has a size word: "a red circle" is right for a big red circle) while every relation and
  position word is true under that matching;
* relation "A r B" (r in left/right/above/below) is true iff
  ``shapes.relation(center_A, center_B) == r``: the world's rule, the sign of the offset along the
  dominant axis (``|dx| >= |dy|``: horizontal). Unlike the generator, the judge does not ask for a
  *clearly* dominant axis: the generator avoids ambiguous layouts, the judge has to decide them;
* position words of an object with offsets ``dx = x / S - 0.5``, ``dy = y / S - 0.5`` from the
  image center: left/right/top/bottom are true iff the object lies on that side along the dominant
  axis (``|dx| >= |dy|``: left if ``dx < 0`` else right; otherwise top if ``dy < 0`` else
  bottom); "middle" is true iff ``max(|dx|, |dy|) < config.side_zone``. This is
  ``shapes.position`` without its "ambiguous: say nothing" zone, so every reference is true, and
  an object near the center may be both "in the middle" and "on the left";
* word accuracy: among the one-to-one matchings, the one with the most correct attribute words
  (ties: the most true spatial phrases, then the first in ``itertools.permutations`` order) scores
  every size / colour / shape word of the caption; phrases left without an object (a caption that
  names more objects than the image has) have all their words wrong; an unparsable caption has
  all its size / colour / shape words wrong.

:func:`caption_accuracy` judges a whole split: the fraction of RIGHT captions and the pooled word
accuracy per word type.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from sat_core.data import shapes as _shapes
from sat_core.data.records import ImageRecord
from sat_core.data.shapes import COLOURS, SHAPES, SIZES, ShapesConfig, relation

WORD_KINDS: tuple[str, ...] = ("size", "colour", "shape")
_KIND_OF: dict[str, str] = {
    **{w: "size" for w in SIZES}, **{w: "colour" for w in COLOURS}, **{w: "shape" for w in SHAPES},
}
_SLOT = re.compile(r"^\{([A-Z])(?:>([A-Z])|(@))?\}$")


# ---------------------------------------------------------------------------------------------
# Parsing with the world's grammar
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounPhrase:
    """``[size] colour shape`` as said in a caption (``size`` None: no size word)."""

    size: str | None
    colour: str
    shape: str

    @property
    def words(self) -> list[str]:
        return [w for w in (self.size, self.colour, self.shape) if w is not None]

    def __str__(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class ParsedCaption:
    """A caption read by the grammar.

    ``phrases`` in caption order; ``relations`` as ``(i, r, j)``: phrase i is r of phrase j
    (r in left/right/above/below); ``positions`` as ``(i, p)``: phrase i is at p of the frame
    (p in left/right/top/bottom/middle); ``template``: the grammar template that matched.
    """

    phrases: tuple[NounPhrase, ...]
    relations: tuple[tuple[int, str, int], ...]
    positions: tuple[tuple[int, str], ...]
    template: str


# A compiled template part: ("word", w) | ("phrase", i) | ("relation", i, j) | ("position", i),
# where i, j index the noun phrases in the order the template says them.
_Part = tuple[Any, ...]


def compile_template(template: str) -> tuple[_Part, ...]:
    """Token pattern of a grammar template: literal words and slots with phrase indices.

    Roles (``A``, ``B``, ...) are numbered by the order of their noun-phrase slots ``{X}``, so
    ``"a {A} {A>B} a {B}"`` -> word a, phrase 0, relation (0, 1), word a, phrase 1.
    """
    tokens = template.split()
    roles: dict[str, int] = {}
    for tok in tokens:
        m = _SLOT.match(tok)
        if tok.startswith("{") and m is None:
            raise ValueError(f"template {template!r}: unknown slot {tok!r}")
        if m and m.group(2) is None and m.group(3) is None:
            if m.group(1) in roles:
                raise ValueError(f"template {template!r}: role {m.group(1)} is named twice")
            roles[m.group(1)] = len(roles)

    def index(role: str) -> int:
        if role not in roles:
            raise ValueError(f"template {template!r}: role {role} has no noun phrase {{{role}}}")
        return roles[role]

    parts: list[_Part] = []
    for tok in tokens:
        m = _SLOT.match(tok)
        if m is None:
            parts.append(("word", tok))
        elif m.group(2) is not None:
            parts.append(("relation", index(m.group(1)), index(m.group(2))))
        elif m.group(3) is not None:
            parts.append(("position", index(m.group(1))))
        else:
            parts.append(("phrase", index(m.group(1))))
    return tuple(parts)


@cache
def _compiled(templates: tuple[str, ...]) -> tuple[tuple[str, tuple[_Part, ...]], ...]:
    return tuple((t, compile_template(t)) for t in templates)


def _grammar() -> tuple[tuple[str, tuple[_Part, ...]], ...]:
    """Every template of the world's grammar (read now, so that added templates count)."""
    templates = _shapes._TEMPLATES
    return _compiled(tuple(t for n in sorted(templates) for t in templates[n]))


def _phrase_at(tokens: Sequence[str], i: int) -> tuple[NounPhrase, int] | None:
    """``[size] colour shape`` starting at token i -> (phrase, next index), or None."""
    size = None
    if i < len(tokens) and tokens[i] in SIZES:
        size, i = tokens[i], i + 1
    if i + 1 < len(tokens) and tokens[i] in COLOURS and tokens[i + 1] in SHAPES:
        return NounPhrase(size, tokens[i], tokens[i + 1]), i + 2
    return None


def _phrases_match(words: Mapping[str, tuple[str, ...]], tokens: Sequence[str],
                   i: int) -> Iterator[tuple[str, int]]:
    for name, ws in words.items():
        if tuple(tokens[i:i + len(ws)]) == ws:
            yield name, i + len(ws)


def _match(parts: Sequence[_Part], tokens: Sequence[str], k: int, i: int,
           found: dict[str, list]) -> bool:
    """Backtracking match of ``parts[k:]`` against ``tokens[i:]``; fills ``found`` on success."""
    if k == len(parts):
        return i == len(tokens)
    part = parts[k]
    kind = part[0]
    if kind == "word":
        return i < len(tokens) and tokens[i] == part[1] and _match(parts, tokens, k + 1, i + 1,
                                                                  found)
    if kind == "phrase":
        got = _phrase_at(tokens, i)
        if got is None:
            return False
        found["phrases"][part[1]] = got[0]
        return _match(parts, tokens, k + 1, got[1], found)
    table = _shapes._RELATION_WORDS if kind == "relation" else _shapes._POSITION_WORDS
    for name, nxt in _phrases_match(table, tokens, i):
        entry = (part[1], name, part[2]) if kind == "relation" else (part[1], name)
        found[kind].append(entry)
        if _match(parts, tokens, k + 1, nxt, found):
            return True
        found[kind].pop()
    return False


def parse_caption(tokens: Sequence[str] | str) -> ParsedCaption | None:
    """Read a caption (a list of words; a string is split on spaces) with the Shapes grammar.

    Returns its noun phrases, relations and position words, or None when no template of
    ``shapes._TEMPLATES`` produces it (empty captions, ``<unk>``, repeated or missing words...).
    Templates are tried in order of their object count, then of the grammar.
    """
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    if not toks:
        return None
    for template, parts in _grammar():
        n = sum(p[0] == "phrase" for p in parts)
        found: dict[str, list] = {"phrases": [None] * n, "relation": [], "position": []}
        if _match(parts, toks, 0, 0, found):
            return ParsedCaption(tuple(found["phrases"]), tuple(found["relation"]),
                                 tuple(found["position"]), template)
    return None


# ---------------------------------------------------------------------------------------------
# Judging one caption
# ---------------------------------------------------------------------------------------------


@dataclass
class CaptionJudgement:
    """The verdict on one caption.

    ``words[kind] = (correct, total)`` for kind in size/colour/shape; ``reasons``: why it is wrong
    (empty when right); ``parse``: what the grammar read (None: unparsable); ``matching[i]``: the
    object index of phrase i in the matching used for the words (None: no object left for it).
    """

    right: bool
    parsed: bool
    words: dict[str, tuple[int, int]]
    reasons: list[str]
    parse: ParsedCaption | None = None
    matching: tuple[int | None, ...] | None = None


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, Mapping) else getattr(obj, name)


def _offsets(center: Sequence[float], image_size: int) -> tuple[float, float]:
    return float(center[0]) / image_size - 0.5, float(center[1]) / image_size - 0.5


def frame_side(center: Sequence[float], image_size: int) -> str:
    """left/right/top/bottom: the side of the image center ``center`` lies on, dominant axis."""
    dx, dy = _offsets(center, image_size)
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def position_true(word: str, center: Sequence[float], image_size: int,
                  config: ShapesConfig | None = None) -> bool:
    """Is the position word (left/right/top/bottom/middle) true of an object at ``center``?"""
    if word == "middle":
        dx, dy = _offsets(center, image_size)
        return max(abs(dx), abs(dy)) < (config or ShapesConfig()).side_zone
    if word not in ("left", "right", "top", "bottom"):
        raise ValueError(f"unknown position word {word!r}")
    return frame_side(center, image_size) == word


def _assignments(n_phrases: int, n_objects: int) -> Iterator[tuple[int | None, ...]]:
    """Every one-to-one matching: phrase i -> object a[i] (None when objects run out)."""
    if n_phrases <= n_objects:
        yield from itertools.permutations(range(n_objects), n_phrases)
        return
    for chosen in itertools.permutations(range(n_phrases), n_objects):
        a: list[int | None] = [None] * n_phrases
        for obj, phrase in enumerate(chosen):
            a[phrase] = obj
        yield tuple(a)


def _describe(obj: Any) -> str:
    return f"the {_get(obj, 'size')} {_get(obj, 'colour')} {_get(obj, 'shape')}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def judge_caption(tokens: Sequence[str] | str, objects: Sequence[Any], image_size: int,
                  config: ShapesConfig | None = None) -> CaptionJudgement:
    """Judge one caption against the image's objects (the rules of the module docstring).

    ``objects``: :class:`~sat_core.data.shapes.ShapesObject` s or dicts with the same keys
    (``size``, ``colour``, ``shape``, ``center``); ``image_size``: the image side in pixels;
    ``config``: the world's settings (only ``side_zone`` is used; default ``ShapesConfig()``).
    """
    cfg = config or ShapesConfig()
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    parsed = parse_caption(toks)
    if parsed is None:
        words = {k: (0, sum(_KIND_OF.get(t) == k for t in toks)) for k in WORD_KINDS}
        why = "empty caption" if not toks else (
            f"does not parse with the Shapes grammar: {' '.join(toks)!r}")
        return CaptionJudgement(False, False, words, [why])

    attrs = [{k: _get(o, k) for k in WORD_KINDS} for o in objects]
    centers = [tuple(_get(o, "center")) for o in objects]
    phrases = parsed.phrases

    def word_score(a: tuple[int | None, ...]) -> int:
        return sum(getattr(p, k) == attrs[o][k] for p, o in zip(phrases, a, strict=True)
                   if o is not None for k in WORD_KINDS)

    def spatial(a: tuple[int | None, ...]) -> list[bool]:
        rels = [a[i] is not None and a[j] is not None
                and relation(centers[a[i]], centers[a[j]]) == r for i, r, j in parsed.relations]
        poss = [a[i] is not None and position_true(p, centers[a[i]], image_size, cfg)
                for i, p in parsed.positions]
        return rels + poss

    best = max(_assignments(len(phrases), len(objects)),
               key=lambda a: (word_score(a), sum(spatial(a))))
    reasons: list[str] = []
    if len(phrases) != len(objects):
        reasons.append(f"names {_plural(len(phrases), 'object')}, the image has "
                       f"{len(objects)}")
    words, wrong_words = _judge_words(phrases, best, attrs)
    reasons += wrong_words
    truth = spatial(best)
    n_rel = len(parsed.relations)
    reasons += _relation_reasons(parsed.relations, truth[:n_rel], best, objects, centers)
    reasons += _position_reasons(parsed.positions, truth[n_rel:], best, objects, centers,
                                 image_size, cfg)
    return CaptionJudgement(right=not reasons, parsed=True,
                            words={k: (c, t) for k, (c, t) in words.items()}, reasons=reasons,
                            parse=parsed, matching=best)


def _judge_words(phrases: Sequence[Any], best: tuple[int | None, ...],
                 attrs: list[dict[str, Any]]) -> tuple[dict[str, list[int]], list[str]]:
    """Kind -> [right, said] over the words of the matched phrases, and the reasons: each phrase
    that names no object, each word that is wrong for its object."""
    words = {k: [0, 0] for k in WORD_KINDS}
    reasons: list[str] = []
    for n, (p, o) in enumerate(zip(phrases, best, strict=True)):
        if o is None:
            reasons.append(f"phrase {n + 1} '{p}' names no object of the image")
        for k in WORD_KINDS:
            said = getattr(p, k)
            if said is None:
                continue
            words[k][1] += 1
            if o is not None and said == attrs[o][k]:
                words[k][0] += 1
            elif o is not None:
                reasons.append(f"'{said}' should be '{attrs[o][k]}' (phrase {n + 1}: '{p}')")
    return words, reasons


def _relation_reasons(relations: Sequence[tuple[int, str, int]], truth: Sequence[bool],
                      best: tuple[int | None, ...], objects: Sequence[Any],
                      centers: Sequence[tuple[float, ...]]) -> list[str]:
    """Why each false relation ("to the left of", ...) between the matched objects is false."""
    reasons: list[str] = []
    for (i, r, j), ok in zip(relations, truth, strict=True):
        said = " ".join(_shapes._RELATION_WORDS[r])
        if ok:
            continue
        a, b = best[i], best[j]
        if a is None or b is None:
            reasons.append(f"'{said}' relates a phrase that names no object")
            continue
        actual = " ".join(_shapes._RELATION_WORDS[relation(centers[a], centers[b])])
        reasons.append(f"'{said}' is false: {_describe(objects[a])} is {actual} "
                       f"{_describe(objects[b])}")
    return reasons


def _position_reasons(positions: Sequence[tuple[int, str]], truth: Sequence[bool],
                      best: tuple[int | None, ...], objects: Sequence[Any],
                      centers: Sequence[tuple[float, ...]], image_size: int,
                      cfg: ShapesConfig) -> list[str]:
    """Why each false position ("in the middle", ...) of a matched object is false: where the
    object is, with its offset from the image center."""
    reasons: list[str] = []
    for (i, p), ok in zip(positions, truth, strict=True):
        said = " ".join(_shapes._POSITION_WORDS[p])
        if ok:
            continue
        a = best[i]
        if a is None:
            reasons.append(f"'{said}' places a phrase that names no object")
            continue
        dx, dy = _offsets(centers[a], image_size)
        if p == "middle":
            where = (f"{max(abs(dx), abs(dy)):.2f} of the image side from the center (the "
                     f"middle ends at {cfg.side_zone:.2f})")
        else:
            where = " ".join(_shapes._POSITION_WORDS[frame_side(centers[a], image_size)])
        reasons.append(f"'{said}' is false: {_describe(objects[a])} is {where} "
                       f"(offset from the center dx={dx:+.2f}, dy={dy:+.2f})")
    return reasons


# ---------------------------------------------------------------------------------------------
# A whole split
# ---------------------------------------------------------------------------------------------


def _ratio(correct: int, total: int) -> float:
    return correct / total if total else float("nan")


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


@dataclass
class AccuracyResult:
    """Caption accuracy (fraction of RIGHT captions) and pooled word accuracy per word type."""

    caption_accuracy: float
    word_accuracy: dict[str, float]  # kind -> correct / total (nan when total is 0)
    n_images: int
    n_right: int
    word_counts: dict[str, tuple[int, int]]  # kind -> (correct, total)
    judgements: list[CaptionJudgement] = field(repr=False, default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"caption_accuracy", "word_accuracy": {size, colour, shape}}`` (nan ->
        None, i.e. ``null``)."""
        return {"caption_accuracy": _json_float(self.caption_accuracy),
                "word_accuracy": {k: _json_float(v) for k, v in self.word_accuracy.items()}}

    def table(self) -> str:
        """A small text table: one line per word type plus the captions."""
        lines = [f"{'words':<10}{'right':>7}{'total':>7}{'accuracy':>10}"]
        for kind in WORD_KINDS:
            c, t = self.word_counts[kind]
            lines.append(f"{kind:<10}{c:>7}{t:>7}{self.word_accuracy[kind]:>10.3f}")
        lines.append(f"{'captions':<10}{self.n_right:>7}{self.n_images:>7}"
                     f"{self.caption_accuracy:>10.3f}")
        return "\n".join(lines)


def caption_accuracy(
    hypotheses: Sequence[Sequence[str]],
    records: Sequence[ImageRecord],
    image_size: int,
    config: ShapesConfig | None = None,
) -> AccuracyResult:
    """Judge ``hypotheses[i]`` (a list of words) against the objects of ``records[i]``.

    ``records`` come from a Shapes split (``record.extra["objects"]``); ``image_size`` is the
    world's image side in pixels. See :func:`judge_caption` for the rules.
    """
    if len(hypotheses) != len(records):
        raise ValueError(f"caption_accuracy: {len(hypotheses)} captions for {len(records)} "
                         "records; pass one caption per image")
    judgements = []
    for hyp, rec in zip(hypotheses, records, strict=True):
        if "objects" not in rec.extra:
            raise ValueError(f"caption_accuracy: record {rec.filename} has no objects; the "
                             "measure needs a Shapes split (load_splits('shapes'))")
        judgements.append(judge_caption(hyp, rec.extra["objects"], image_size, config))
    counts = {k: (sum(j.words[k][0] for j in judgements), sum(j.words[k][1] for j in judgements))
              for k in WORD_KINDS}
    n_right = sum(j.right for j in judgements)
    return AccuracyResult(
        caption_accuracy=_ratio(n_right, len(judgements)),
        word_accuracy={k: _ratio(*counts[k]) for k in WORD_KINDS},
        n_images=len(judgements), n_right=n_right, word_counts=counts, judgements=judgements,
    )


__all__ = [
    "WORD_KINDS", "AccuracyResult", "CaptionJudgement", "NounPhrase", "ParsedCaption",
    "caption_accuracy", "compile_template", "frame_side", "judge_caption", "parse_caption",
    "position_true",
]
