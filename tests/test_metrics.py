"""Tests for sat_core.metrics: our BLEU against hand computation, pycocoevalcap and nltk; the COCO
evaluation wrapper (with and without Java); the Table-1 formatter.

Java-using tests are few and small: the PTB tokenizer JVM starts in ~0.1-1 s, METEOR's in ~5 s
(it loads its paraphrase tables), so METEOR runs exactly once in this file.
"""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import warnings
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_core.metrics import (
    PAPER_TABLE1,
    CocoScores,
    JavaMissingWarning,
    brevity_penalty,
    closest_ref_length,
    coco_scores,
    corpus_bleu,
    format_table1,
    ptb_tokenize,
    simple_tokenize,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")

# ---------------------------------------------------------------------------------------------
# Strategies: tiny vocabularies so that n-gram matches (and length ties) actually happen.
# ---------------------------------------------------------------------------------------------

VOCAB = ["a", "dog", "cat", "runs", "on", "the"]
sentence = st.lists(st.sampled_from(VOCAB), min_size=0, max_size=10)
reference = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=10)
item = st.tuples(sentence, st.lists(reference, min_size=1, max_size=4))
corpus = st.lists(item, min_size=1, max_size=6)


def pycoco_bleu(hyps: list[list[str]], refs: list[list[list[str]]]) -> list[float]:
    from pycocoevalcap.bleu.bleu import Bleu

    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return score


def nltk_bleu(hyps: list[list[str]], refs: list[list[list[str]]], n: int) -> float:
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns when an order has no match (tested below)
        return nltk_corpus_bleu(refs, hyps, weights=(1.0 / n,) * n)


# ---------------------------------------------------------------------------------------------
# BLEU by hand
# ---------------------------------------------------------------------------------------------


def test_brevity_penalty_by_hand():
    assert brevity_penalty(3, 4) == pytest.approx(0.7165313105737893, rel=1e-12)  # e^(1-4/3)
    assert brevity_penalty(1, 2) == pytest.approx(0.36787944117144233, rel=1e-12)  # e^-1
    assert brevity_penalty(5, 4) == 1.0  # longer than the reference: no penalty
    assert brevity_penalty(4, 4) == 1.0  # equal length: e^0
    assert brevity_penalty(0, 4) == 0.0  # empty hypothesis
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        brevity_penalty(-1, 3)


def test_closest_reference_length_ties_go_to_the_shorter():
    assert closest_ref_length(5, [4, 6]) == 4
    assert closest_ref_length(5, [6, 4]) == 4
    assert closest_ref_length(5, [7, 3, 6]) == 6
    assert closest_ref_length(0, [9, 2]) == 2


def test_clipping_papineni_example():
    # Papineni et al. (2002), Sec. 2.1: "the" x7 against two references gets p_1 = 2/7, because
    # "the" occurs at most twice in a single reference.
    hyp = ["the"] * 7
    refs = ["the cat is on the mat".split(), "there is a cat on the mat".split()]
    result = corpus_bleu([hyp], [refs])
    assert result.matches == [2, 0, 0, 0]
    assert result.totals == [7, 6, 5, 4]
    assert result.precisions[0] == pytest.approx(2 / 7)


def test_two_sentence_corpus_by_hand():
    # Sentence 1: "a cat sat on the mat" vs {"the cat sat on the mat", "a cat is on a mat"}
    #   1-grams 6/6; 2-grams 5/5 ("a cat" from ref 2, the rest from ref 1);
    #   3-grams 3/4 ("a cat sat" nowhere); 4-grams 2/3 ("a cat sat on" nowhere); r = 6.
    # Sentence 2: "dog dog dog" vs {"a dog and a dog", "dog"}
    #   1-grams: "dog" clipped to 2 (max count in ONE reference) -> 2/3; 2-grams 0/2; 3-grams 0/1;
    #   no 4-gram. |5-3| = |1-3| = 2: tie -> the shorter reference, r = 1.
    # Corpus: matches 8,5,3,2 over 9,7,5,3; C = 9 > R = 7 -> BP = 1 (a tie going to the longer
    # reference would give R = 11 and BP = e^(1 - 11/9)).
    hyps = ["a cat sat on the mat".split(), "dog dog dog".split()]
    refs = [
        ["the cat sat on the mat".split(), "a cat is on a mat".split()],
        ["a dog and a dog".split(), ["dog"]],
    ]
    result = corpus_bleu(hyps, refs)
    assert result.matches == [8, 5, 3, 2]
    assert result.totals == [9, 7, 5, 3]
    assert (result.hyp_len, result.ref_len) == (9, 7)
    assert result.brevity_penalty == 1.0
    assert result.ratio == pytest.approx(9 / 7)
    p = [Fraction(8, 9), Fraction(5, 7), Fraction(3, 5), Fraction(2, 3)]
    assert result.precisions == pytest.approx([float(x) for x in p])
    for n in range(1, 5):
        product = math.prod(p[:n])
        assert result.bleu[n - 1] == pytest.approx(float(product) ** (1 / n), rel=1e-8)


def test_corpus_bleu_rejects_bad_input():
    with pytest.raises(TypeError, match=r"hypotheses\[0\] must be a list of str tokens"):
        corpus_bleu(["a dog runs"], [[["a", "dog"]]])  # a string, not tokens
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference sets"):
        corpus_bleu([["a"], ["b"]], [[["a"]]])
    with pytest.raises(ValueError, match=r"references\[0\] must be a non-empty list"):
        corpus_bleu([["a"]], [[]])
    with pytest.raises(ValueError, match=r"references\[0\]\[1\] is empty"):
        corpus_bleu([["a"]], [[["a"], []]])
    with pytest.raises(ValueError, match="corpus is empty"):
        corpus_bleu([], [])
    with pytest.raises(ValueError, match="max_n must be a positive int"):
        corpus_bleu([["a"]], [[["a"]]], max_n=0)


# ---------------------------------------------------------------------------------------------
# BLEU against the official implementation (pycocoevalcap)
# ---------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(corpus)
def test_bleu_matches_pycocoevalcap_on_random_corpora(items):
    hyps = [h for h, _ in items]
    refs = [r for _, r in items]
    ours = corpus_bleu(hyps, refs).bleu
    assert ours == pytest.approx(pycoco_bleu(hyps, refs), rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(
    "hyps, refs",
    [
        ([[]], [[["a", "dog"]]]),  # empty hypothesis
        ([["a", "dog"]], [[["a", "dog", "runs", "on", "grass"]]]),  # shorter than 4-grams
        ([["a", "dog", "runs", "fast"]], [[["a", "dog", "runs", "fast"]]]),  # exact copy
        ([["x", "y", "z", "w", "v"]], [[["a", "b"], ["c"]]]),  # no match at all
        (
            [["a", "cat", "sat", "on", "the", "mat"], ["dog", "dog", "dog"]],
            [[["the", "cat", "sat", "on", "the", "mat"]], [["a", "dog", "and", "a", "dog"], ["dog"]]],
        ),
    ],
)
def test_bleu_matches_pycocoevalcap_hand_cases(hyps, refs):
    assert corpus_bleu(hyps, refs).bleu == pytest.approx(pycoco_bleu(hyps, refs), rel=1e-6, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(corpus, st.randoms(use_true_random=False))
def test_bleu_ignores_reference_and_sentence_order(items, rnd):
    hyps = [h for h, _ in items]
    refs = [r for _, r in items]
    order = list(range(len(items)))
    rnd.shuffle(order)
    shuffled_refs = [rnd.sample(refs[i], len(refs[i])) for i in order]
    shuffled = corpus_bleu([hyps[i] for i in order], shuffled_refs)
    assert shuffled.bleu == pytest.approx(corpus_bleu(hyps, refs).bleu, rel=1e-12, abs=0)


# ---------------------------------------------------------------------------------------------
# BLEU against nltk: where they must agree, and the two documented differences
# ---------------------------------------------------------------------------------------------

long_sentence = st.lists(st.sampled_from(VOCAB), min_size=4, max_size=10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(long_sentence, st.lists(reference, min_size=1, max_size=4)),
                min_size=0, max_size=5),
       long_sentence)
def test_bleu_agrees_with_nltk_when_every_order_matches(items, anchor):
    # Agreement holds when (a) every hypothesis has >= 4 tokens (nltk's per-sentence
    # max(1, count) denominator is then the true count) and (b) every n-gram order has at least
    # one match (nltk's unsmoothed p_n is then > 0). The first sentence is copied from its
    # reference to guarantee (b). Same clipping, same closest-reference length (ties -> shorter),
    # same brevity penalty: the only gap left is pycocoevalcap's 1e-15 / 1e-9 epsilons (~1e-9).
    items = [(anchor, [anchor, ["the", "dog"]])] + items
    hyps = [h for h, _ in items]
    refs = [r for _, r in items]
    ours = corpus_bleu(hyps, refs).bleu
    for n in range(1, 5):
        assert ours[n - 1] == pytest.approx(nltk_bleu(hyps, refs, n), rel=1e-6)


def test_nltk_agrees_on_the_closest_reference_tie_rule():
    # Hypothesis of 5 tokens, references of 4 and 6 tokens: both libraries take r = 4 (shorter).
    # Taking 6 would give BP = e^(1 - 6/5) = 0.82 instead of 1.
    hyps = [["a", "dog", "runs", "on", "grass"]]
    refs = [[["a", "dog", "runs", "on"], ["a", "dog", "runs", "on", "the", "grass"]]]
    result = corpus_bleu(hyps, refs)
    assert result.ref_len == 4 and result.brevity_penalty == 1.0
    for n in range(1, 5):
        assert result.bleu[n - 1] == pytest.approx(nltk_bleu(hyps, refs, n), rel=1e-6)


def test_nltk_differs_when_an_order_has_no_match():
    # "a dog is running on grass" vs "a dog is on the grass": matches 5/6, 2/5, 1/4, 0/3; c = r = 6.
    # nltk (no smoothing) replaces p_4 = 0 by sys.float_info.min and warns: BLEU-4 ~ 1e-77.
    # pycocoevalcap (and we) use p_4 = (0 + 1e-15) / (3 + 1e-9): BLEU-4 ~ 7e-5, small but > 0.
    hyps = [["a", "dog", "is", "running", "on", "grass"]]
    refs = [[["a", "dog", "is", "on", "the", "grass"]]]
    result = corpus_bleu(hyps, refs)
    assert result.matches == [5, 2, 1, 0] and result.totals == [6, 5, 4, 3]
    expected_b4 = (5 / 6 * 2 / 5 * 1 / 4 * (1e-15 / 3)) ** 0.25
    assert result.bleu[3] == pytest.approx(expected_b4, rel=1e-6)
    assert 1e-5 < result.bleu[3] < 1e-4
    from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu

    with pytest.warns(UserWarning, match="0 counts of 4-gram overlaps"):
        nltk_b4 = nltk_corpus_bleu(refs, hyps)
    assert nltk_b4 < 1e-70
    for n in range(1, 4):  # orders 1..3 have matches: the two agree there
        assert result.bleu[n - 1] == pytest.approx(nltk_bleu(hyps, refs, n), rel=1e-6)
    # No unigram match at all: nltk returns exactly 0, we return 1e-15/len (not exactly 0).
    no_match = corpus_bleu([["x", "y"]], [[["a", "b"]]])
    assert nltk_bleu([["x", "y"]], [[["a", "b"]]], 1) == 0
    assert no_match.bleu[0] == pytest.approx(1e-15 / 2, rel=1e-6)


def test_nltk_differs_for_hypotheses_shorter_than_n():
    # nltk divides each sentence's n-gram matches by max(1, count): a 2-token hypothesis adds 1
    # to the corpus 3-gram and 4-gram totals; pycocoevalcap (and we) add 0.
    # Sentence 1: 1-grams 5/6 (no "a" in the reference), 2-grams 4/5, 3-grams 3/4, 4-grams 2/3;
    # sentence 2 ("a dog" vs "a dog runs"): 1-grams 2/2, 2-grams 1/1, no 3- or 4-gram.
    hyps = [["a", "cat", "sat", "on", "the", "mat"], ["a", "dog"]]
    refs = [[["the", "cat", "sat", "on", "the", "mat"]], [["a", "dog", "runs"]]]
    result = corpus_bleu(hyps, refs)
    assert result.matches == [7, 5, 3, 2] and result.totals == [8, 6, 4, 3]
    bp = math.exp(1 - 9 / 8)  # C = 8 < R = 6 + 3
    assert result.brevity_penalty == pytest.approx(bp)
    ours_b4 = bp * (7 / 8 * 5 / 6 * 3 / 4 * 2 / 3) ** 0.25
    nltk_b4 = bp * (7 / 8 * 5 / 6 * 3 / 5 * 2 / 4) ** 0.25  # totals + 1 for the short sentence
    assert result.bleu[3] == pytest.approx(ours_b4, rel=1e-6)
    assert nltk_bleu(hyps, refs, 4) == pytest.approx(nltk_b4, rel=1e-9)
    assert result.bleu[1] == pytest.approx(nltk_bleu(hyps, refs, 2), rel=1e-6)  # n <= 2 agree


# ---------------------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------------------

TYPICAL_CAPTIONS = [
    "A dog runs across the grass.",
    "Two men, one in a red shirt, are playing guitars!",
    "A black-and-white dog's ball isn't moving.",
    "The children aren't in the water; they're on the beach.",
    "A woman holds an umbrella while walking down a busy street...",
    "'Stop' sign on a pole",
]


def test_simple_tokenize_by_hand():
    assert simple_tokenize("A dog's ball, isn't it? A black-and-white photo (3.5 kg)!") == [
        "a", "dog", "'s", "ball", "is", "n't", "it", "a", "black-and-white", "photo", "3.5", "kg",
    ]
    assert simple_tokenize("  ...  ") == []


@needs_java
def test_ptb_tokenize_by_hand_and_agrees_with_simple_tokenize():
    captions = {
        "typical": TYPICAL_CAPTIONS,
        7: ["A man\u2028with a line separator.", "", "Last one!"],  # must stay aligned
        "none": [],
    }
    out = ptb_tokenize(captions)
    assert out[7] == ["a man with a line separator", "", "last one"]
    assert out["none"] == []
    assert out["typical"][2] == "a black-and-white dog 's ball is n't moving"
    assert out["typical"] == [" ".join(simple_tokenize(c)) for c in TYPICAL_CAPTIONS]


def test_ptb_tokenize_without_java_says_what_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(RuntimeError, match="Java was not found.*apt-get install"):
        ptb_tokenize({1: ["a dog"]})


# ---------------------------------------------------------------------------------------------
# coco_scores
# ---------------------------------------------------------------------------------------------

REFS = {
    "dog": ["A dog runs across the grass.", "A brown dog is running on a lawn."],
    "men": ["Two men are playing guitars on a stage.", "Two musicians play guitar."],
    "cat": ["A cat sits on a red mat.", "A kitten is sitting on a rug."],
    "car": ["A red car is parked on the street.", "A car parked next to a building."],
}
GOOD = {"dog": "a dog runs across the grass", "men": "Two men are playing guitars on a stage!"}
WRONG = {"cat": "a plate of food on a table", "car": "a bird flying over the ocean"}


@needs_java
def test_coco_scores_identical_captions_beat_wrong_ones():
    # One corpus, one PTB run and ONE METEOR run: two images whose hypothesis IS a reference
    # (up to case and punctuation, which the PTB tokenizer removes), two with a wrong caption.
    scores = coco_scores({**GOOD, **WRONG}, REFS)
    assert isinstance(scores, CocoScores)
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"}
    assert scores.skipped == {} and scores.tokenizer == "ptb"
    each = scores.per_image
    for good in GOOD:
        assert each["Bleu_4"][good] == pytest.approx(1.0, abs=1e-6)
        assert each["ROUGE_L"][good] == pytest.approx(1.0)
        for wrong in WRONG:
            assert each["METEOR"][good] > each["METEOR"][wrong] + 0.3
            assert each["CIDEr"][good] > each["CIDEr"][wrong] + 1.0
    # Corpus CIDEr-D and ROUGE-L are the per-image means; corpus BLEU is NOT (counts are summed).
    assert 0 < scores["METEOR"] < 1
    assert scores["ROUGE_L"] == pytest.approx(sum(each["ROUGE_L"].values()) / 4)
    assert scores["CIDEr"] == pytest.approx(sum(each["CIDEr"].values()) / 4)
    tokens = {k: [simple_tokenize(r) for r in refs] for k, refs in REFS.items()}
    hyps = {**GOOD, **WRONG}
    own = corpus_bleu([simple_tokenize(hyps[k]) for k in REFS], [tokens[k] for k in REFS])
    assert [scores[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(own.bleu, rel=1e-9)


def test_coco_scores_scores_each_image_once_against_all_references():
    # Each hypothesis equals the SECOND reference of its image: scored against all references
    # at once, BLEU-4 is 1; scored once per reference (a classic bug), it would be far lower.
    refs = {i: [f"a photo number {i} of something", f"the {w} dog runs on the green grass"]
            for i, w in enumerate(["big", "small", "old", "young"])}
    hyps = {i: rs[1] for i, rs in refs.items()}
    scores = coco_scores(hyps, refs, metrics=("BLEU", "ROUGE_L", "CIDEr"), tokenize=False)
    assert scores["Bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE_L"] == pytest.approx(1.0)
    assert "METEOR" not in scores and scores.tokenizer == "none"


def test_coco_bleu_equals_our_corpus_bleu():
    rng = random.Random(0)
    words = "a dog cat man runs sits on the grass red".split()

    def caption(k: int) -> str:
        return " ".join(rng.choice(words) for _ in range(k))

    refs = {i: [caption(rng.randint(3, 9)) for _ in range(rng.randint(1, 5))] for i in range(30)}
    hyps = {i: caption(rng.randint(0, 9)) for i in range(30)}
    scores = coco_scores(hyps, refs, metrics=("BLEU",), tokenize=False)
    own = corpus_bleu([hyps[i].split() for i in refs], [[r.split() for r in refs[i]] for i in refs])
    assert [scores[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(own.bleu, rel=1e-9)


def test_coco_scores_without_java(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)

    def no_jvm(*args, **kwargs):
        raise AssertionError(f"a process was started without Java: {args!r:.80}")

    monkeypatch.setattr(subprocess, "Popen", no_jvm)
    hyps = {**GOOD, **WRONG}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = coco_scores(hyps, REFS)
    java_warnings = [w for w in caught if issubclass(w.category, JavaMissingWarning)]
    assert len(caught) == 1 and len(java_warnings) == 1
    message = str(java_warnings[0].message)
    assert "METEOR is skipped" in message and "apt-get install" in message
    assert set(scores) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    assert set(scores.skipped) == {"METEOR"} and scores.tokenizer == "simple"
    own = corpus_bleu([simple_tokenize(hyps[k]) for k in hyps],
                      [[simple_tokenize(r) for r in REFS[k]] for k in hyps])
    assert [scores[f"Bleu_{n}"] for n in range(1, 5)] == pytest.approx(own.bleu, rel=1e-9)
    assert scores.per_image["ROUGE_L"]["dog"] == pytest.approx(1.0)
    # Nothing that needs Java requested: no warning at all.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = coco_scores(hyps, REFS, metrics=("BLEU", "CIDEr"), tokenize=False)
    assert quiet.skipped == {}


def test_coco_scores_names_mismatched_ids():
    with pytest.raises(ValueError, match=r"hypotheses without references for 2 id\(s\): 'b', 'c'"):
        coco_scores({"a": "x", "b": "y", "c": "z"}, {"a": ["x"]}, tokenize=False)
    with pytest.raises(ValueError, match=r"references without a hypothesis for 1 id\(s\): 7"):
        coco_scores({1: "x"}, {1: ["x"], 7: ["y"]}, tokenize=False)
    with pytest.raises(TypeError, match=r"hypotheses\[1\] must be one caption string"):
        coco_scores({1: ["a", "dog"]}, {1: ["a dog"]}, tokenize=False)
    with pytest.raises(ValueError, match=r"references\[1\] must be a non-empty list"):
        coco_scores({1: "a dog"}, {1: "a dog"}, tokenize=False)
    with pytest.raises(ValueError, match="unknown metric 'SPICE'"):
        coco_scores({1: "a dog"}, {1: ["a dog"]}, metrics=("BLEU", "SPICE"))


def test_cider_on_a_single_image_warns_and_is_zero():
    with pytest.warns(UserWarning, match="single image"):
        scores = coco_scores({1: "a dog runs"}, {1: ["a dog runs"]}, metrics=("CIDEr",),
                             tokenize=False)
    assert scores["CIDEr"] == 0.0


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------

OURS = {"Bleu_1": 0.6512, "Bleu_2": 0.432, "Bleu_3": 0.2876, "Bleu_4": 0.1849,
        "METEOR": 0.19034, "ROUGE_L": 0.4711, "CIDEr": 0.5123}


def test_paper_table1_is_complete_and_consistent():
    assert set(PAPER_TABLE1) == {"flickr8k", "flickr30k", "coco"}
    for dataset in PAPER_TABLE1.values():
        assert set(dataset) == {"soft", "hard"}
        for row in dataset.values():
            assert set(row) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR"}
            bleu = [row[f"Bleu_{n}"] for n in range(1, 5)]
            assert bleu == sorted(bleu, reverse=True)  # BLEU-n never grows with n in the paper
            assert 15 < row["METEOR"] < 25 and 60 < bleu[0] < 75


def test_format_table1_with_paper_rows():
    table = format_table1(OURS, dataset="Flickr8k", model_name="ours")
    lines = table.splitlines()
    assert "Flickr8k" in lines[0]
    assert lines[1].split() == ["Model", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR",
                                "ROUGE-L", "CIDEr-D"]
    assert lines[3].split() == ["Soft-Attention", "(paper)", "67.0", "44.8", "29.9", "19.5",
                                "18.93", "-", "-"]
    assert lines[4].split() == ["Hard-Attention", "(paper)", "67.0", "45.7", "31.4", "21.3",
                                "20.30", "-", "-"]
    assert lines[5].split() == ["ours", "65.1", "43.2", "28.8", "18.5", "19.03", "47.1", "51.2"]
    assert len({len(line) for line in lines[1:6]}) == 1  # columns aligned


def test_format_table1_other_datasets_and_bad_scores():
    coco = format_table1(OURS, dataset="MS-COCO").splitlines()
    assert coco[3].split()[2:7] == ["70.7", "49.2", "34.4", "24.3", "23.90"]
    alone = format_table1(OURS).splitlines()
    assert [line.split()[0] for line in alone[3:4]] == ["ours"] and "(paper)" not in "".join(alone)
    shapes = format_table1(OURS, dataset="shapes")
    assert "(paper)" not in shapes and "no numbers for dataset 'shapes'" in shapes
    partial = format_table1({"Bleu_4": 0.25, "CIDEr": 1.5}).splitlines()
    assert partial[3].split() == ["ours", "-", "-", "-", "25.0", "-", "-", "150.0"]
    with pytest.raises(ValueError, match="outside 0..1"):
        format_table1({"Bleu_4": 24.3})  # already x100
    with pytest.raises(ValueError, match="none of the keys"):
        format_table1({"bleu": 0.3})

