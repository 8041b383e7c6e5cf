"""Caption metrics (Chapter 8): BLEU written out for the book, and the official COCO evaluation.

Xu et al. (2015) report BLEU-1..4 (Papineni et al., 2002) and METEOR in Table 1. This module has

* :func:`corpus_bleu` -- BLEU from scratch, small enough to read in one sitting. It reproduces
  ``pycocoevalcap.bleu.Bleu`` (the COCO caption evaluation code) to floating point, including its
  tiny smoothing constants, so the number the book derives by hand IS the number papers report.
* :func:`coco_scores` -- the official metrics through ``pycocoevalcap``: BLEU-1..4, METEOR 1.5,
  ROUGE-L and CIDEr-D, each image scored once against all of its references, after the PTB
  tokenizer. METEOR and the PTB tokenizer run in Java; without Java the other metrics still run.
* :data:`PAPER_TABLE1` and :func:`format_table1` -- the paper's numbers and a Table-1 layout.

BLEU in the paper's notation (Papineni et al., 2002, Sec. 2): for a corpus of hypotheses ``c`` with
reference sets ``R``,

    p_n  = sum_c sum_{g in n-grams(c)} min(count_c(g), max_{r in R} count_r(g))
           / sum_c sum_{g in n-grams(c)} count_c(g)             (modified n-gram precision)
    BP   = 1 if C > R_eff else exp(1 - R_eff / C)               (brevity penalty)
    BLEU-N = BP * exp( sum_{n=1..N} (1/N) log p_n )             (geometric mean of p_1..p_N)

with ``C`` the total hypothesis length and ``R_eff`` the sum over sentences of the reference
length closest to the hypothesis length (ties -> the shorter reference).
"""

from __future__ import annotations

import math
import re
import shutil
import warnings
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BleuResult",
    "CocoScores",
    "JavaMissingWarning",
    "METRICS",
    "PAPER_TABLE1",
    "bleu_counts",
    "brevity_penalty",
    "closest_ref_length",
    "coco_scores",
    "corpus_bleu",
    "format_table1",
    "java_available",
    "ngram_counts",
    "ptb_tokenize",
    "simple_tokenize",
]

# ---------------------------------------------------------------------------------------------
# BLEU, from scratch
# ---------------------------------------------------------------------------------------------

# pycocoevalcap's BleuScorer computes every precision as (matches + TINY) / (total + SMALL):
# SMALL avoids 0/0 when a corpus has no n-grams of some order, TINY keeps log() finite when
# there is no match. We use the same two constants so that our numbers equal the official ones.
_TINY = 1e-15
_SMALL = 1e-9


def ngram_counts(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    """How many times each n-gram (a tuple of ``n`` consecutive tokens) occurs in ``tokens``."""
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def brevity_penalty(c: float, r: float) -> float:
    """BLEU's brevity penalty (Papineni et al., 2002, Sec. 2.2.2): 1 if c > r else exp(1 - r/c).

    ``c`` is the (corpus) hypothesis length, ``r`` the effective reference length. Modified
    precision alone rewards short hypotheses ("the" scores p_1 = 1); BP pays them back. An empty
    hypothesis (c = 0) gets BP = 0, the limit of exp(1 - r/c) as c -> 0.
    """
    if c < 0 or r < 0:
        raise ValueError(f"brevity_penalty: lengths must be >= 0, got c={c}, r={r}")
    if c > r:
        return 1.0
    if c == 0:
        return 0.0
    return math.exp(1.0 - r / c)


def closest_ref_length(hyp_len: int, ref_lens: Iterable[int]) -> int:
    """The reference length closest to ``hyp_len``; a tie goes to the SHORTER reference.

    This is pycocoevalcap's ``'closest'`` option (``min((abs(l - c), l))``) and nltk's rule.
    """
    return min(ref_lens, key=lambda length: (abs(length - hyp_len), length))


@dataclass(frozen=True)
class BleuResult:
    """Corpus BLEU and everything needed to recompute it by hand.

    ``bleu[n-1]`` is BLEU-n; ``precisions[n-1]`` the plain modified precision p_n =
    ``matches[n-1] / totals[n-1]`` (0.0 when the corpus has no n-gram of that order);
    ``hyp_len`` = C, ``ref_len`` = R_eff, ``ratio`` = C / R_eff.
    """

    bleu: list[float]
    precisions: list[float]
    brevity_penalty: float
    hyp_len: int
    ref_len: int
    ratio: float
    matches: list[int]
    totals: list[int]


def _check_corpus(hypotheses: Any, references: Any) -> None:
    if not isinstance(hypotheses, Sequence) or isinstance(hypotheses, str):
        raise TypeError("corpus_bleu: hypotheses must be a list of token lists, one per sentence")
    if not isinstance(references, Sequence) or isinstance(references, str):
        raise TypeError("corpus_bleu: references must be a list (one per hypothesis) of lists "
                        "of token lists")
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} "
                         "reference sets; give exactly one list of references per hypothesis")
    if not hypotheses:
        raise ValueError("corpus_bleu: the corpus is empty; give at least one hypothesis")
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if isinstance(hyp, str) or not all(isinstance(w, str) for w in hyp):
            raise TypeError(f"corpus_bleu: hypotheses[{i}] must be a list of str tokens, got "
                            f"{hyp!r:.60}; split sentences into tokens first (e.g. s.split())")
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise ValueError(f"corpus_bleu: references[{i}] must be a non-empty list of token "
                             f"lists, got {refs!r:.60}")
        for j, ref in enumerate(refs):
            if isinstance(ref, str) or not all(isinstance(w, str) for w in ref):
                raise TypeError(f"corpus_bleu: references[{i}][{j}] must be a list of str "
                                f"tokens, got {ref!r:.60}")
            if len(ref) == 0:
                raise ValueError(f"corpus_bleu: references[{i}][{j}] is empty; drop empty "
                                 "captions from the references")


def bleu_counts(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
) -> tuple[list[int], list[int], int, int]:
    """What BLEU divides, summed over the corpus: ``(matches, totals, C, R_eff)``.

    ``matches[n-1]`` is the numerator of p_n (clipped n-gram matches, step 1 of
    :func:`corpus_bleu`), ``totals[n-1]`` its denominator (hypothesis n-grams), ``C`` the total
    hypothesis length and ``R_eff`` the effective reference length (step 2).
    """
    matches = [0] * max_n  # clipped n-gram matches, summed over the corpus
    totals = [0] * max_n  # hypothesis n-grams, summed over the corpus
    hyp_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references, strict=True):
        hyp_len += len(hyp)
        ref_len += closest_ref_length(len(hyp), (len(r) for r in refs))
        for n in range(1, max_n + 1):
            hyp_counts = ngram_counts(hyp, n)
            max_ref_counts: Counter[tuple[str, ...]] = Counter()
            for ref in refs:
                max_ref_counts |= ngram_counts(ref, n)  # element-wise max over references
            matches[n - 1] += sum((hyp_counts & max_ref_counts).values())  # clipped counts
            totals[n - 1] += max(0, len(hyp) - n + 1)
    return matches, totals, hyp_len, ref_len


def corpus_bleu(
    hypotheses: Sequence[Sequence[str]],
    references: Sequence[Sequence[Sequence[str]]],
    max_n: int = 4,
) -> BleuResult:
    """Corpus-level BLEU-1..``max_n`` (Papineni et al., 2002), as the COCO evaluation computes it.

    ``hypotheses[i]`` is a tokenized caption, ``references[i]`` the tokenized references of the
    same image. Counts are summed over the corpus BEFORE dividing (micro average), so BLEU of a
    corpus is not the mean of sentence BLEUs.

    1. Clipping: a hypothesis n-gram counts at most as often as it occurs in the ONE reference
       where it is most frequent (``Counter | Counter`` is the element-wise max over references,
       ``Counter & Counter`` the element-wise min with the hypothesis).
    2. Effective reference length: per sentence, the reference length closest to the
       hypothesis length, ties -> shorter (:func:`closest_ref_length`), summed over the corpus.
    3. BLEU-n = BP * exp((1/n) sum_{k<=n} log p_k), with each p_k computed as
       ``(matches + 1e-15) / (total + 1e-9)`` exactly as pycocoevalcap's ``BleuScorer`` does.

    Agreement: equal to ``pycocoevalcap.bleu.bleu.Bleu(max_n).compute_score`` (the official
    numbers) up to float rounding (tests: 1e-6; in practice <= 1e-9 relative).

    Differences from ``nltk.translate.bleu_score.corpus_bleu`` (weights ``(1/n,)*n``, no
    smoothing), all checked in ``tests/test_metrics.py``:

    * Same clipping, same closest-reference length with ties to the shorter one, same BP; when
      every hypothesis has >= ``max_n`` tokens and every order has a match, the two agree to
      ~1e-9 (the epsilons above).
    * No match at some order k: nltk's p_k is 0, it warns and returns ~0 for BLEU-n, n >= k
      (exactly 0 if there is no unigram match at all). Here -- as in pycocoevalcap -- p_k is
      1e-15 / total, so BLEU-n is small but positive (e.g. ~1e-4 for BLEU-4).
    * Hypotheses shorter than n: nltk divides each sentence's n-gram matches by
      ``max(1, count)``, i.e. adds 1 to the corpus n-gram total for each such hypothesis;
      here (and in pycocoevalcap) such a sentence adds 0. nltk's p_n is then lower.
    """
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"corpus_bleu: max_n must be a positive int, got {max_n!r}")
    _check_corpus(hypotheses, references)

    matches, totals, hyp_len, ref_len = bleu_counts(hypotheses, references, max_n)
    bp = brevity_penalty(hyp_len, ref_len)
    log_p = [math.log((m + _TINY) / (t + _SMALL)) for m, t in zip(matches, totals, strict=True)]
    bleu = [bp * math.exp(sum(log_p[:n]) / n) for n in range(1, max_n + 1)]
    precisions = [m / t if t else 0.0 for m, t in zip(matches, totals, strict=True)]
    return BleuResult(
        bleu=bleu,
        precisions=precisions,
        brevity_penalty=bp,
        hyp_len=hyp_len,
        ref_len=ref_len,
        ratio=hyp_len / ref_len,
        matches=matches,
        totals=totals,
    )


# ---------------------------------------------------------------------------------------------
# Tokenization: the PTB tokenizer of the COCO evaluation (Java), or a pure-Python stand-in
# ---------------------------------------------------------------------------------------------

JAVA_INSTALL_HINT = (
    "install a Java runtime (8 or newer) and make sure `java` is on PATH -- Debian/Ubuntu: "
    "`sudo apt-get install default-jre-headless`; macOS: `brew install openjdk`; conda: "
    "`conda install -c conda-forge openjdk`; Colab has Java already"
)


class JavaMissingWarning(UserWarning):
    """Java is not on PATH: METEOR is skipped and the PTB tokenizer is replaced."""


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (needed by METEOR and the PTB tokenizer)."""
    return shutil.which("java") is not None


def _one_line(caption: str) -> str:
    # str.split() with no argument splits on every Unicode whitespace, including the line
    # separators Java honours (\r, \x85, \u2028, \u2029): one caption must stay one line.
    return " ".join(caption.split())


_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_WORD = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[^\W_]+(?:[-.][^\W_]+)*")


def simple_tokenize(caption: str) -> list[str]:
    """Pure-Python stand-in for the PTB tokenizer: lower case, punctuation removed.

    Like PTB it splits the clitics ``'s n't 're 've 'll 'd 'm`` ("isn't" -> "is n't") and keeps
    hyphenated words and decimals whole ("black-and-white", "3.5"). Unlike PTB it drops every
    symbol (PTB keeps "&", "%", "$" and writes brackets as "-lrb-"/"-rrb-", which the COCO code
    then fails to remove because it lower-cases first). On ordinary captions the two agree.
    """
    return _WORD.findall(_CLITIC.sub(r" \1", caption.lower()))


def _import_pycocoevalcap(what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(f"pycocoevalcap.{what}")
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("the COCO caption metrics need pycocoevalcap: "
                          "`pip install 'pycocoevalcap>=1.2'`") from err


def ptb_tokenize(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenize captions with pycocoevalcap's ``PTBTokenizer`` (Stanford CoreNLP, one JVM run).

    ``captions`` maps an id to a list of raw sentences; the result maps the same id to the same
    number of tokenized sentences, each a space-joined string, lower case, punctuation removed
    (exactly what the COCO metrics consume). Raises ``RuntimeError`` if Java is missing.
    """
    if not java_available():
        raise RuntimeError(f"ptb_tokenize: Java was not found on PATH; {JAVA_INSTALL_HINT}, or "
                           "use simple_tokenize() instead")
    lines: dict[Hashable, list[str]] = {}
    to_java: dict[int, list[dict[str, str]]] = {}
    where: list[tuple[Hashable, int]] = []  # (id, position) of each caption sent to Java
    for key, sentences in captions.items():
        if isinstance(sentences, str) or not isinstance(sentences, Sequence):
            raise TypeError(f"ptb_tokenize: captions[{key!r}] must be a list of str, "
                            f"got {type(sentences).__name__}")
        lines[key] = [""] * len(sentences)
        for j, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"ptb_tokenize: captions[{key!r}][{j}] must be a str, "
                                f"got {type(sentence).__name__}")
            text = _one_line(sentence)
            if text:  # empty captions never reach Java (they could shift its output lines)
                to_java[len(where)] = [{"caption": text}]
                where.append((key, j))
    if to_java:
        tokenizer = _import_pycocoevalcap("tokenizer.ptbtokenizer").PTBTokenizer()
        out = tokenizer.tokenize(to_java)
        if len(out) != len(to_java) or any(len(out.get(i, ())) != 1 for i in to_java):
            raise RuntimeError(f"ptb_tokenize: the PTB tokenizer returned {len(out)} of "
                               f"{len(to_java)} captions; check that `java -version` works")
        for i, (key, j) in enumerate(where):
            lines[key][j] = out[i][0]
    return lines


# ---------------------------------------------------------------------------------------------
# The official COCO caption evaluation
# ---------------------------------------------------------------------------------------------

METRICS = ("BLEU", "METEOR", "ROUGE_L", "CIDEr")


class CocoScores(dict):
    """``dict`` metric name -> corpus score (0..1; CIDEr-D 0..10), plus what produced it.

    Keys: ``Bleu_1`` .. ``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr`` (pycocoevalcap's names;
    ``CIDEr`` is CIDEr-D). Attributes:

    * ``per_image``: metric -> {image_id: score of that image alone} (CIDEr-D's IDF still
      comes from the whole corpus);
    * ``skipped``: metric -> why it was not computed (e.g. METEOR without Java);
    * ``tokenizer``: ``"ptb"``, ``"simple"`` (no Java) or ``"none"`` (``tokenize=False``).
    """

    def __init__(
        self,
        scores: Mapping[str, float],
        *,
        per_image: Mapping[str, Mapping[Hashable, float]],
        skipped: Mapping[str, str],
        tokenizer: str,
    ) -> None:
        super().__init__(scores)
        self.per_image = {k: dict(v) for k, v in per_image.items()}
        self.skipped = dict(skipped)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return (f"CocoScores({dict.__repr__(self)}, skipped={self.skipped!r}, "
                f"tokenizer={self.tokenizer!r})")


def _name_ids(ids: list[Hashable], limit: int = 10) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{len(ids)} id(s): {shown}{more}"


def _check_coco_inputs(
    hypotheses: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> None:
    if not isinstance(hypotheses, Mapping) or not isinstance(references, Mapping):
        raise TypeError("coco_scores: hypotheses and references must be dicts keyed by image id")
    if not hypotheses:
        raise ValueError("coco_scores: no hypotheses given; pass {image_id: caption}")
    no_refs = [k for k in hypotheses if k not in references]
    if no_refs:
        raise ValueError(f"coco_scores: hypotheses without references for {_name_ids(no_refs)}; "
                         "every hypothesis id must be a key of references")
    no_hyp = [k for k in references if k not in hypotheses]
    if no_hyp:
        raise ValueError(f"coco_scores: references without a hypothesis for {_name_ids(no_hyp)}; "
                         "pass references restricted to the scored images, e.g. "
                         "{k: references[k] for k in hypotheses}")
    for k, hyp in hypotheses.items():
        if not isinstance(hyp, str):
            raise TypeError(f"coco_scores: hypotheses[{k!r}] must be one caption string, got "
                            f"{type(hyp).__name__}; join tokens with ' '.join(tokens)")
    for k, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence) or len(refs) == 0:
            raise ValueError(f"coco_scores: references[{k!r}] must be a non-empty list of "
                             f"caption strings, got {refs!r:.60}")
        for j, ref in enumerate(refs):
            if not isinstance(ref, str):
                raise TypeError(f"coco_scores: references[{k!r}][{j}] must be a caption string, "
                                f"got {type(ref).__name__}; for token lists use ' '.join(tokens)")


def _canonical_metrics(metrics: Iterable[str]) -> list[str]:
    by_lower = {m.lower(): m for m in METRICS} | {"cider-d": "CIDEr", "rouge-l": "ROUGE_L"}
    if isinstance(metrics, str):
        metrics = [metrics]
    chosen: list[str] = []
    for name in metrics:
        canonical = by_lower.get(str(name).lower())
        if canonical is None:
            raise ValueError(f"coco_scores: unknown metric {name!r}; choose from {METRICS}")
        if canonical not in chosen:
            chosen.append(canonical)
    if not chosen:
        raise ValueError(f"coco_scores: no metric requested; choose from {METRICS}")
    return chosen


def _close_meteor(meteor: Any) -> None:
    # pycocoevalcap's Meteor holds a lock during compute_score and never releases it if that
    # raises; its __del__ would then block forever. Release it, and stop the JVM now.
    if meteor.lock.locked():
        meteor.lock.release()
    meteor.meteor_p.stdin.close()
    meteor.meteor_p.kill()
    meteor.meteor_p.wait()


def _meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    meteor = _import_pycocoevalcap("meteor.meteor").Meteor()  # starts the METEOR 1.5 JVM
    try:
        score, per_image = meteor.compute_score(gts, res)
    finally:
        _close_meteor(meteor)
    return float(score), [float(s) for s in per_image]


def coco_scores(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    *,
    metrics: Iterable[str] = METRICS,
    tokenize: bool = True,
) -> CocoScores:
    """The COCO caption evaluation (pycocoevalcap) of one caption per image.

    ``hypotheses``: {image_id: generated caption}; ``references``: {image_id: [reference
    captions]} with exactly the same ids. Each image is scored ONCE against ALL its references
    (never once per reference). Returns a :class:`CocoScores` dict with ``Bleu_1``..``Bleu_4``,
    ``METEOR``, ``ROUGE_L``, ``CIDEr`` for the requested ``metrics``.

    * ``CIDEr`` is pycocoevalcap's ``Cider``, i.e. CIDEr-D (Vedantam et al., 2015): clipped
      n-gram TF-IDF cosine with a Gaussian length penalty (sigma = 6), times 10. Its IDF is
      computed from THESE references, so it needs several images (one image always scores 0).
    * ``tokenize=True`` runs the PTB tokenizer on hypotheses and references (one JVM start);
      ``tokenize=False`` uses the captions as given (already tokenized, space-separated).
    * Without Java, ONE :class:`JavaMissingWarning` says so and what to install; METEOR is
      skipped (recorded in ``.skipped``), :func:`simple_tokenize` replaces the PTB tokenizer
      (``.tokenizer == "simple"``), and BLEU, ROUGE-L and CIDEr-D are still computed.
    """
    chosen = _canonical_metrics(metrics)
    _check_coco_inputs(hypotheses, references)
    ids = list(hypotheses)
    has_java, skipped = _java_for(chosen, tokenize)
    tokenizer, res, gts = _tokenized(hypotheses, references, ids, tokenize, has_java)
    scores, per_image = _official_scores(chosen, gts, res, ids, skipped)
    return CocoScores(scores, per_image=per_image, skipped=skipped, tokenizer=tokenizer)


def _java_for(chosen: list[str], tokenize: bool) -> tuple[bool, dict[str, str]]:
    """Whether Java runs, and the metrics skipped without it (METEOR), for :func:`coco_scores`.

    Java is looked for only when needed (PTB tokenizer, METEOR); when it is missing, ONE
    :class:`JavaMissingWarning` says what is lost and what to install.
    """
    skipped: dict[str, str] = {}
    needs_java = tokenize or "METEOR" in chosen
    has_java = java_available() if needs_java else False
    if needs_java and not has_java:
        lost = []
        if "METEOR" in chosen:
            lost.append("METEOR is skipped")
            skipped["METEOR"] = "Java not found on PATH"
        if tokenize:
            lost.append("a simple lower-case/no-punctuation tokenizer replaces the PTB tokenizer "
                        "(scores may differ slightly from the official ones)")
        warnings.warn(f"coco_scores: Java was not found on PATH, so {'; '.join(lost)}. To get "
                      f"the official numbers, {JAVA_INSTALL_HINT}.", JavaMissingWarning,
                      stacklevel=3)  # where coco_scores was called
    return has_java, skipped


def _tokenized(
    hypotheses: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    ids: list[Hashable],
    tokenize: bool,
    has_java: bool,
) -> tuple[str, dict[int, list[str]], dict[int, list[str]]]:
    """``(tokenizer, res, gts)``: the name of the tokenizer used (``"ptb"``, ``"simple"`` or
    ``"none"``) and the tokenized hypotheses and references keyed 0..N-1, as pycocoevalcap
    takes them."""
    # Index images 0..N-1; hypotheses and references are tokenized together (one JVM start).
    raw: dict[Hashable, list[str]] = {}
    for i, k in enumerate(ids):
        raw[("hyp", i)] = [hypotheses[k]]
        raw[("ref", i)] = list(references[k])
    if tokenize and has_java:
        tokenizer = "ptb"
        tokenized = ptb_tokenize(raw)
    elif tokenize:
        tokenizer = "simple"
        tokenized = {key: [" ".join(simple_tokenize(s)) for s in v] for key, v in raw.items()}
    else:
        tokenizer = "none"
        tokenized = {key: [_one_line(s) for s in v] for key, v in raw.items()}
    res = {i: tokenized[("hyp", i)] for i in range(len(ids))}
    gts = {i: tokenized[("ref", i)] for i in range(len(ids))}
    return tokenizer, res, gts


def _official_scores(
    chosen: list[str],
    gts: dict[int, list[str]],
    res: dict[int, list[str]],
    ids: list[Hashable],
    skipped: Mapping[str, str],
) -> tuple[dict[str, float], dict[str, dict[Hashable, float]]]:
    """The ``chosen`` pycocoevalcap metrics of ``res`` against ``gts``: the corpus scores and,
    per metric, each image's own (keyed by the caller's ``ids``)."""
    scores: dict[str, float] = {}
    per_image: dict[str, dict[Hashable, float]] = {}

    def record(name: str, corpus: float, each: Sequence[float]) -> None:
        scores[name] = float(corpus)
        per_image[name] = {k: float(s) for k, s in zip(ids, each, strict=True)}

    for metric in chosen:
        if metric == "BLEU":
            bleu, each = _import_pycocoevalcap("bleu.bleu").Bleu(4).compute_score(
                gts, res, verbose=0)
            for n in range(4):
                record(f"Bleu_{n + 1}", bleu[n], each[n])
        elif metric == "METEOR" and "METEOR" not in skipped:
            record("METEOR", *_meteor(gts, res))
        elif metric == "ROUGE_L":
            record("ROUGE_L", *_import_pycocoevalcap("rouge.rouge").Rouge().compute_score(gts, res))
        elif metric == "CIDEr":
            if len(ids) < 2:
                warnings.warn("coco_scores: CIDEr-D takes its IDF from the evaluated references; "
                              "with a single image every weight is log(1) = 0 and CIDEr-D is 0",
                              stacklevel=3)  # where coco_scores was called
            record("CIDEr", *_import_pycocoevalcap("cider.cider").Cider().compute_score(gts, res))
    return scores, per_image


# ---------------------------------------------------------------------------------------------
# The paper's Table 1
# ---------------------------------------------------------------------------------------------

# Xu et al. (2015), Table 1: single models with a VGG encoder, scores x100 as printed.
# Checked against the paper and several independent public reproductions quoting the table.
PAPER_TABLE1: dict[str, dict[str, dict[str, float]]] = {
    "flickr8k": {
        "soft": {"Bleu_1": 67.0, "Bleu_2": 44.8, "Bleu_3": 29.9, "Bleu_4": 19.5, "METEOR": 18.93},
        "hard": {"Bleu_1": 67.0, "Bleu_2": 45.7, "Bleu_3": 31.4, "Bleu_4": 21.3, "METEOR": 20.30},
    },
    "flickr30k": {
        "soft": {"Bleu_1": 66.7, "Bleu_2": 43.4, "Bleu_3": 28.8, "Bleu_4": 19.1, "METEOR": 18.49},
        "hard": {"Bleu_1": 66.9, "Bleu_2": 43.9, "Bleu_3": 29.6, "Bleu_4": 19.9, "METEOR": 18.46},
    },
    "coco": {
        "soft": {"Bleu_1": 70.7, "Bleu_2": 49.2, "Bleu_3": 34.4, "Bleu_4": 24.3, "METEOR": 23.90},
        "hard": {"Bleu_1": 71.8, "Bleu_2": 50.4, "Bleu_3": 35.7, "Bleu_4": 25.0, "METEOR": 23.04},
    },
}

_DATASET_NAMES = {"flickr8k": "Flickr8k", "flickr30k": "Flickr30k", "coco": "MS COCO"}
_ALIASES = {"mscoco": "coco", "coco2014": "coco"}

# (key in the scores dict, column title, decimals after x100)
_COLUMNS = (
    ("Bleu_1", "BLEU-1", 1),
    ("Bleu_2", "BLEU-2", 1),
    ("Bleu_3", "BLEU-3", 1),
    ("Bleu_4", "BLEU-4", 1),
    ("METEOR", "METEOR", 2),
    ("ROUGE_L", "ROUGE-L", 1),
    ("CIDEr", "CIDEr-D", 1),
)


def _dataset_key(dataset: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", dataset.lower())
    return _ALIASES.get(key, key)


def format_table1(
    scores: Mapping[str, float], *, dataset: str | None = None, model_name: str = "ours"
) -> str:
    """A plain-text table laid out like the paper's Table 1, scores x100.

    Rows are models: the paper's Soft- and Hard-Attention rows when ``dataset`` is one of
    ``flickr8k``, ``flickr30k``, ``coco`` (as in :data:`PAPER_TABLE1`), then ``model_name`` with
    ``scores`` (a :func:`coco_scores` result: values in 0..1, CIDEr-D in 0..10). Columns:
    BLEU-1..4, METEOR, then ROUGE-L and CIDEr-D, which the paper did not report ("-").
    """
    known = [key for key, _, _ in _COLUMNS if key in scores]
    if not known:
        raise ValueError("format_table1: scores has none of the keys "
                         f"{[key for key, _, _ in _COLUMNS]}; pass the dict coco_scores returns")
    for key in known:
        value = scores[key]
        upper = 10.0 if key == "CIDEr" else 1.0
        if not isinstance(value, (int, float)) or not 0.0 <= value <= upper:
            raise ValueError(f"format_table1: scores[{key!r}] = {value!r} is outside 0..{upper:g}; "
                             "pass raw coco_scores values (the table multiplies by 100 itself)")

    rows: list[tuple[str, list[str]]] = []
    notes: list[str] = []
    title = "Table 1 layout (Xu et al., 2015), scores x100"
    if dataset is not None:
        key = _dataset_key(dataset)
        if key in PAPER_TABLE1:
            title += f" -- {_DATASET_NAMES[key]}"
            for attention in ("soft", "hard"):
                paper = PAPER_TABLE1[key][attention]
                cells = [f"{paper[k]:.{d}f}" if k in paper else "-" for k, _, d in _COLUMNS]
                rows.append((f"{attention.capitalize()}-Attention (paper)", cells))
            notes.append("The paper reports no ROUGE-L or CIDEr-D (-).")
        else:
            title += f" -- {dataset}"
            notes.append(f"The paper reports no numbers for dataset {dataset!r} "
                         f"(known: {', '.join(PAPER_TABLE1)}).")
    ours = [f"{100 * scores[k]:.{d}f}" if k in scores else "-" for k, _, d in _COLUMNS]
    rows.append((model_name, ours))
    notes.append("CIDEr-D is pycocoevalcap's CIDEr.")
    if isinstance(scores, CocoScores) and scores.skipped:
        notes.extend(f"{m} skipped for {model_name}: {why}." for m, why in scores.skipped.items())

    headers = [header for _, header, _ in _COLUMNS]
    name_width = max(len("Model"), *(len(name) for name, _ in rows))
    widths = [max(len(h), *(len(cells[c]) for _, cells in rows)) for c, h in enumerate(headers)]

    def line(name: str, cells: Sequence[str]) -> str:
        padded = [c.rjust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join([name.ljust(name_width), *padded])

    out = [title, line("Model", headers), line("-" * name_width, ["-" * w for w in widths])]
    out += [line(name, cells) for name, cells in rows]
    out += notes
    return "\n".join(out)
