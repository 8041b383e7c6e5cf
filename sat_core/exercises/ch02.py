"""Chapter 2 exercises: the Karpathy tokenization rule, and a caption as ids ``<start> .. <end>``.

* :data:`check_tokenize` -- ``my_tokenize(sentence) -> list[str]`` against
  :func:`sat_core.text.tokenize` (lower-case, punctuation deleted, split on whitespace);
* :func:`check_encode_caption` -- ``my_encode(tokens, vocab, max_len) -> LongTensor[T]`` against
  what :class:`sat_core.data.datasets.CaptionDataset` stores: ``[<start>, w_1..w_n, <end>]``,
  unknown words as ``<unk>``, at most ``max_len`` words (``<end>`` always kept).
"""

from __future__ import annotations

import random
import string
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

import torch

from sat_core.exercises._base import Case, ExerciseCheck, ExerciseFailed
from sat_core.text import Vocabulary, tokenize

# --------------------------------------------------------------------------- tokenization

TOKENIZE_SENTENCES: tuple[tuple[str, str], ...] = (
    ("A dog runs .", "Flickr-style spacing before the full stop"),
    ("A dog doesn't like the other dog .", "an apostrophe inside a word"),
    ("Two men in T-shirts, one in a hat!", "a hyphen, a comma and an exclamation mark"),
    ("A   child\tjumps\ninto the  POOL", "runs of spaces, a tab, a newline, capitals"),
    ("The man’s “red” bike costs $3.50 (new).", "curly quotes, a dollar sign, a decimal point"),
    ("...", "punctuation only: no token at all"),
)


TOKENIZE_BOUNDARIES: tuple[tuple[str, str], ...] = (
    ("", "an empty sentence"),
    ("Dog", "a single word"),
)
_PIECES = ("a", "Dog", "RUNS", "t-shirt", "doesn't", "café", "“red”", "(new)", "3.50", "it’s",
           "...", "x", "—", "well-known", "U.S.")
_GAPS = (" ", " ", "  ", "\t", "\n", " \t ")


def random_sentences(n: int, seed: int) -> list[str]:
    """``n`` seeded random sentences: words with punctuation, capitals, runs of whitespace."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_PIECES) + rng.choice(("", "", ",", "!", "?", ";", ":"))
                 for _ in range(rng.randint(1, 7))]
        sentence = "".join(rng.choice(_GAPS) + w for w in words[1:])
        out.append(rng.choice(("", " ")) + words[0] + sentence + rng.choice(("", " .", ".", "\n")))
    return out


def _tokenize_cases() -> list[Case]:
    fixed = [Case((s,), name=why) for s, why in TOKENIZE_SENTENCES + TOKENIZE_BOUNDARIES]
    return fixed + [Case((s,), name=f"random sentence {k + 1}")
                    for k, s in enumerate(random_sentences(6, seed=2))]


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _tokenize_hints(got: Any, expected: list[str], case: Case) -> str | None:
    if not isinstance(got, list) or not all(isinstance(t, str) for t in got):
        return "return a list of str, e.g. ['a', 'dog', 'runs']"
    sentence = case.args[0]
    lines = [f"sentence {sentence!r}: expected {expected}, got {got}"]
    flat = "".join(got)
    if any(t != t.lower() for t in got):
        lines.append("lower-case the sentence first (str.lower)")
    if "" in got or any(t != t.strip() for t in got):
        lines.append("split with str.split() and no argument: split(' ') keeps empty strings "
                     "for double spaces and does not split on tabs or newlines")
    ascii_left = sorted({ch for ch in flat if ch in string.punctuation})
    if ascii_left:
        lines.append(f"punctuation {''.join(ascii_left)!r} is left: delete every character of "
                     "string.punctuation")
    unicode_left = sorted({ch for ch in flat if _is_punct(ch) and ch not in string.punctuation})
    if unicode_left:
        lines.append(f"Unicode punctuation {''.join(unicode_left)!r} is left: delete characters "
                     "whose unicodedata.category(ch) starts with 'P' too")
    if "" not in got and flat == "".join(expected) and len(got) > len(expected):
        lines.append("punctuation is DELETED, not replaced by a space: \"doesn't\" -> "
                     "\"doesnt\", \"T-shirts\" -> \"tshirts\" (one token each)")
    return "\n  hint: ".join(lines)


check_tokenize = ExerciseCheck(
    "the Karpathy tokenization rule",
    reference=tokenize,
    cases=_tokenize_cases,
    hints=(_tokenize_hints,),
)


# --------------------------------------------------------------------------- encoding


def encode_caption(
    tokens: Sequence[str], vocab: Vocabulary, max_len: int | None = None
) -> torch.Tensor:
    """Reference: ``[<start>, w_1 .. w_n, <end>]``, a LongTensor, n <= max_len (CaptionDataset)."""
    words = list(tokens[:max_len]) if max_len is not None else list(tokens)
    return torch.tensor(vocab.encode(words), dtype=torch.long)


def exercise_vocabulary() -> Vocabulary:
    """The small vocabulary the encode exercise uses: ids 4.. are a, big, red, circle, ..."""
    return Vocabulary(["a", "big", "red", "circle", "small", "blue", "square", "above", "is"])


def _encode_cases() -> list[Case]:
    v = exercise_vocabulary()
    fixed = [
        Case((["a", "big", "red", "circle"], v, None), name="known words, no max_len"),
        Case((["a", "big", "orange", "circle"], v, None), name="'orange' is not in the vocabulary"),
        Case((["a", "small", "blue", "square", "is", "above", "a", "big", "red", "circle"], v, 4),
             name="max_len=4 words"),
        Case(([], v, None), name="an empty caption"),
        Case((["circle"], v, 1), name="one word, max_len=1"),
        Case((["a", "red", "circle"], v, 2), name="max_len = number of words - 1"),
        Case((["a", "red", "circle"], v, 3), name="max_len = number of words"),
    ]
    rng = random.Random(20)
    words = v.itos[4:] + ["orange", "tiny"]
    for k in range(6):
        tokens = [rng.choice(words) for _ in range(rng.randint(1, 9))]
        max_len = rng.choice([None, 1, len(tokens) - 1, len(tokens), len(tokens) + 2])
        fixed.append(Case((tokens, v, max_len or None), name=f"random caption {k + 1}, "
                          f"{len(tokens)} words, max_len={max_len or None}"))
    return fixed


def _encode_hints(got: Any, expected: torch.Tensor, case: Case) -> str | None:
    tokens, vocab, max_len = case.args
    exp = expected.tolist()
    if not isinstance(got, torch.Tensor):
        return "return torch.tensor(ids, dtype=torch.long)"
    g = got.tolist()
    lines = [f"tokens {tokens} (max_len={max_len}): expected {exp}, got {g}"]
    if g == exp[1:-1]:
        lines.append(f"wrap the words in <start> (id {vocab.start_id}) and <end> "
                     f"(id {vocab.end_id})")
    elif g == exp[:-1] or g == exp[1:]:
        lines.append("both <start> and <end> are needed: the decoder reads <start> first and "
                     "must learn to stop by predicting <end>")
    elif max_len is not None and len(g) == max_len and g == exp[:max_len]:
        lines.append(f"truncate the WORDS to max_len, then add the specials: {max_len} words + "
                     "<start> + <end>; cutting after adding them drops <end>")
    elif max_len is not None and len(g) == len(tokens) + 2:
        lines.append(f"keep at most max_len={max_len} words (tokens[:max_len])")
    elif max_len is not None and abs(len(g) - len(exp)) == 1 and g[-1:] == exp[-1:]:
        lines.append(f"off by one: keep exactly max_len={max_len} words (tokens[:max_len]) "
                     "between <start> and <end>")
    return "\n  hint: ".join(lines)


_encode_check = ExerciseCheck(
    "encoding a caption as ids",
    reference=encode_caption,
    cases=_encode_cases,
    hints=(_encode_hints,),
)


def check_encode_caption(fn: Callable[..., Any]) -> None:
    """Check ``my_encode(tokens, vocab, max_len) -> LongTensor`` against :func:`encode_caption`.

    A ``KeyError`` on a word outside the vocabulary is explained (it should become ``<unk>``).
    """
    if not callable(fn):
        raise ExerciseFailed(f"{_encode_check.name}: pass your function itself "
                             f"(check_encode_caption(my_fn)), not {type(fn).__name__}")
    vocab = exercise_vocabulary()

    def guarded(tokens: Sequence[str], v: Vocabulary, max_len: int | None = None) -> Any:
        try:
            return fn(tokens, v, max_len)
        except KeyError as e:
            raise ExerciseFailed(
                f"KeyError {e} for the tokens {list(tokens)}: a word outside the vocabulary "
                f"must become <unk> (id {vocab.unk_id}), e.g. vocab.stoi.get(w, vocab.unk_id)"
            ) from None

    try:
        _encode_check(guarded)
    except ExerciseFailed as err:
        # the KeyError explanation arrives wrapped as "your function raised ExerciseFailed: ..."
        # (a wrong answer, explained); any other failure keeps its kind (not attempted, crashed)
        explained = isinstance(err.__cause__, ExerciseFailed)
        kind = ExerciseFailed if explained else type(err)
        raise kind(str(err).replace("your function raised ExerciseFailed: ", "")) \
            from (None if explained else err.__cause__)


__all__ = ["TOKENIZE_BOUNDARIES", "TOKENIZE_SENTENCES", "random_sentences",
           "check_encode_caption", "check_tokenize", "encode_caption",
           "exercise_vocabulary"]
