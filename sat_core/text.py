"""Words: the tokenizer the Karpathy splits used, and the vocabulary of the decoder's softmax.

The paper (Sec. 3.1) writes a caption as ``y = {y_1, ..., y_C}``, ``y_i`` in ``R^K``, a 1-of-K
encoding over a vocabulary of size ``K``. Here a caption is a list of integer ids: ``<start>``,
the words, ``<end>``; batches are padded with ``<pad>`` (id 0), and words outside the vocabulary
become ``<unk>``. The paper keeps the 10,000 most frequent words (Sec. 5.1).
"""

from __future__ import annotations

import hashlib
import json
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from nltk.tokenize import WhitespaceTokenizer

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS: tuple[str, ...] = (PAD, START, END, UNK)
_FORMAT = "sat_core.vocabulary"
_VERSION = 1

_ASCII_PUNCT = frozenset(string.punctuation)
_whitespace = WhitespaceTokenizer()


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def tokenize(sentence: str) -> list[str]:
    """Split a raw caption into the tokens of the Karpathy splits.

    The rule behind the ``tokens`` field of ``dataset_*.json``: lower-case, delete every
    punctuation character (so ``"don't"`` -> ``"dont"``, ``"t-shirt"`` -> ``"tshirt"``), split on
    whitespace (what ``str.split`` splits on). Besides ASCII punctuation (``string.punctuation``),
    Unicode punctuation such as the curly apostrophe is deleted, so ``"don’t"`` -> ``"dont"`` too.
    Uses nltk's :class:`~nltk.tokenize.WhitespaceTokenizer`, which needs no downloaded data.
    """
    if not isinstance(sentence, str):
        raise TypeError(f"tokenize expects a str, got {type(sentence).__name__}")
    # str.isspace() knows more separators than the regex \s nltk uses (e.g. \x1c-\x1f): map them.
    cleaned = "".join(" " if ch.isspace() else ch for ch in sentence.lower() if not _is_punct(ch))
    return _whitespace.tokenize(cleaned)


class VocabularyError(ValueError):
    """A file that should hold a vocabulary does not. The message names the file."""


class Vocabulary:
    """Bijection between words and ids ``0..K-1``; ids 0-3 are ``<pad> <start> <end> <unk>``.

    Build it from the training captions only (:meth:`build`), save it next to the checkpoint
    (:meth:`save`), and compare :meth:`fingerprint` when loading weights: a model is only
    meaningful with the vocabulary it was trained with.
    """

    pad_id, start_id, end_id, unk_id = 0, 1, 2, 3

    def __init__(self, words: Iterable[str] = ()) -> None:
        """``words``: the real words in id order (ids start at 4, after the specials)."""
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(SPECIALS)}
        for w in words:
            if not isinstance(w, str) or not w:
                raise ValueError(f"vocabulary words must be non-empty strings, got {w!r}")
            if w in self.stoi:
                raise ValueError(f"word {w!r} appears twice (or is a special token)")
            self.stoi[w] = len(self.itos)
            self.itos.append(w)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        min_count: int = 1,
        max_size: int | None = 10000,
    ) -> Vocabulary:
        """Count words over ``token_lists`` and keep the most frequent ones.

        A word is kept when it occurs at least ``min_count`` times; of those, the ``max_size``
        most frequent (real words, specials not counted; ``None`` keeps all). Ties in frequency
        are broken alphabetically, so the result does not depend on the order of the captions.
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 0:
            raise ValueError(f"max_size must be >= 0 or None, got {max_size}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for s in SPECIALS:
            counts.pop(s, None)
        kept = (w for w, c in counts.items() if c >= min_count)
        ranked = sorted(kept, key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls(ranked)

    # -- mapping ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.itos == other.itos

    def __hash__(self) -> int:
        return hash(tuple(self.itos))

    def __repr__(self) -> str:
        return f"Vocabulary(K={len(self)}, fingerprint={self.fingerprint()})"

    def encode(self, tokens: Sequence[str], add_special: bool = True) -> list[int]:
        """Words -> ids (unknown -> ``<unk>``); ``add_special`` wraps them in start/end."""
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        if add_special:
            ids = [self.start_id, *ids, self.end_id]
        return ids

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Ids -> words. With ``strip_special``: stop at ``<end>``, drop ``<pad>`` and ``<start>``.

        ``<unk>`` is kept (it is a prediction the model made). Accepts a list or a 1-D tensor.
        """
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.itos):
                raise IndexError(f"id {i} is outside the vocabulary (K={len(self.itos)})")
            if strip_special:
                if i == self.end_id:
                    break
                if i in (self.pad_id, self.start_id):
                    continue
            words.append(self.itos[i])
        return words

    # -- identity and persistence -------------------------------------------------------------
    def fingerprint(self) -> str:
        """Short sha256 (16 hex digits) of the word list: equal iff the id<->word maps are equal."""
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()[:16]

    def save(self, path: str | Path) -> Path:
        """Write the vocabulary as JSON (with a format marker and its fingerprint)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "fingerprint": self.fingerprint(),
            "itos": self.itos,
        }
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=0), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by :meth:`save`; anything else raises :class:`VocabularyError`."""
        path = Path(path)
        expected = (
            f'expected a JSON object {{"format": "{_FORMAT}", "itos": [...]}} '
            "written by Vocabulary.save"
        )
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VocabularyError(f"vocabulary file {path} does not exist; {expected}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise VocabularyError(f"cannot read vocabulary file {path} ({e}); {expected}") from e
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabularyError(f"{path} is not JSON ({e}); {expected}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise VocabularyError(
                f"{path} is not a sat_core vocabulary (no format marker); {expected}"
            )
        if payload.get("version") != _VERSION:
            raise VocabularyError(
                f"{path} has vocabulary format version {payload.get('version')!r}, "
                f"this code reads version {_VERSION}"
            )
        itos = payload.get("itos")
        if not isinstance(itos, list) or not all(isinstance(w, str) for w in itos):
            raise VocabularyError(f"{path}: 'itos' must be a list of strings; {expected}")
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise VocabularyError(
                f"{path}: the first ids must be the specials {list(SPECIALS)}, "
                f"found {itos[: len(SPECIALS)]}"
            )
        try:
            vocab = cls(itos[len(SPECIALS) :])
        except ValueError as e:
            raise VocabularyError(f"{path}: {e}") from None
        stored = payload.get("fingerprint")
        if stored is not None and stored != vocab.fingerprint():
            raise VocabularyError(
                f"{path}: stored fingerprint {stored} does not match its word list "
                f"({vocab.fingerprint()}); the file was edited or is corrupt"
            )
        return vocab
