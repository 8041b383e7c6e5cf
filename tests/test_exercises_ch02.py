"""Chapter 2 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch02 import (
    TOKENIZE_BOUNDARIES,
    TOKENIZE_SENTENCES,
    _is_punct,
    check_encode_caption,
    check_tokenize,
    exercise_vocabulary,
    random_sentences,
)
from sat_core.text import tokenize


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- tokenize


def test_the_cases_hold_what_the_rule_gives_by_hand():
    # written out by hand from the rule: lower-case, delete punctuation, split on whitespace
    by_hand = [
        ["a", "dog", "runs"],
        ["a", "dog", "doesnt", "like", "the", "other", "dog"],
        ["two", "men", "in", "tshirts", "one", "in", "a", "hat"],
        ["a", "child", "jumps", "into", "the", "pool"],
        ["the", "mans", "red", "bike", "costs", "350", "new"],
        [],
    ]
    assert [tokenize(s) for s, _ in TOKENIZE_SENTENCES] == by_hand
    assert [tokenize(s) for s, _ in TOKENIZE_BOUNDARIES] == [[], ["dog"]]


def test_a_correct_answer_written_differently_passes(capsys):
    def char_loop(sentence):
        kept = []
        for ch in sentence.lower():
            if ch in string.punctuation or unicodedata.category(ch).startswith("P"):
                continue
            kept.append(ch)
        return "".join(kept).split()

    check_tokenize(char_loop)
    assert capsys.readouterr().out.startswith("✓ the Karpathy tokenization rule")


def test_punctuation_kept_is_named():
    msg = failure(check_tokenize, lambda s: s.lower().split())
    assert "punctuation '.' is left" in msg
    assert "expected ['a', 'dog', 'runs'], got ['a', 'dog', 'runs', '.']" in msg


def test_punctuation_replaced_by_a_space_is_explained():
    msg = failure(check_tokenize, lambda s: re.sub(r"[^\w\s]", " ", s.lower()).split())
    assert "apostrophe inside a word" in msg
    assert "DELETED, not replaced by a space" in msg


def test_ascii_only_punctuation_misses_curly_quotes():
    table = str.maketrans("", "", string.punctuation)
    msg = failure(check_tokenize, lambda s: s.lower().translate(table).split())
    assert "test input 5 of 14" in msg
    assert "Unicode punctuation '’“”' is left" in msg
    assert "unicodedata.category" in msg


def test_split_on_single_spaces_and_no_lowercase():
    table = str.maketrans("", "", string.punctuation)
    msg = failure(check_tokenize, lambda s: s.lower().translate(table).split(" "))
    assert "split(' ') keeps empty strings" in msg
    assert "DELETED" not in msg  # the empty strings are not a punctuation-splitting mistake
    msg = failure(check_tokenize, lambda s: s.translate(table).split())
    assert "lower-case the sentence first" in msg


def test_a_string_instead_of_a_list():
    msg = failure(check_tokenize, lambda s: " ".join(s.lower().split()))
    assert "should be a list of 3 values, got a str" in msg
    assert "return a list of str" in msg


# --------------------------------------------------------------------------- encode


def test_encode_reference_and_an_independent_answer_pass(capsys):
    vocab = exercise_vocabulary()
    # by hand: a=4 big=5 red=6 circle=7 small=8 blue=9 square=10 above=11 is=12
    assert vocab.stoi["a"] == 4 and vocab.stoi["is"] == 12

    def mine(tokens, v, max_len=None):
        words = tokens if max_len is None else tokens[:max_len]
        ids = [v.start_id] + [v.stoi[w] if w in v.stoi else v.unk_id for w in words]
        return torch.tensor(ids + [v.end_id], dtype=torch.long)

    check_encode_caption(mine)
    assert capsys.readouterr().out.startswith("✓ encoding a caption as ids")
    assert mine(["a", "big", "orange", "circle"], vocab).tolist() == [1, 4, 5, 3, 7, 2]


def test_encode_missing_specials():
    msg = failure(check_encode_caption,
                  lambda t, v, m: torch.tensor([v.stoi.get(w, 3) for w in t[:m]]))
    assert "expected [1, 4, 5, 6, 7, 2], got [4, 5, 6, 7]" in msg
    assert "wrap the words in <start> (id 1) and <end> (id 2)" in msg
    msg = failure(check_encode_caption,
                  lambda t, v, m: torch.tensor([1] + [v.stoi.get(w, 3) for w in t[:m]]))
    assert "both <start> and <end> are needed" in msg


def test_encode_unknown_word_key_error_is_explained():
    msg = failure(check_encode_caption,
                  lambda t, v, m: torch.tensor([1] + [v.stoi[w] for w in t[:m]] + [2]))
    assert "test input 2 of 13" in msg
    assert "KeyError 'orange'" in msg and "must become <unk> (id 3)" in msg
    assert "your function raised ExerciseFailed" not in msg


def test_encode_truncating_after_the_specials_drops_end():
    msg = failure(check_encode_caption,
                  lambda t, v, m: torch.tensor(v.encode(t)[:m] if m else v.encode(t)))
    assert "max_len=4 words" in msg
    assert "cutting after adding them drops <end>" in msg
    msg = failure(check_encode_caption, lambda t, v, m: torch.tensor(v.encode(t)))
    assert "keep at most max_len=4 words" in msg


def test_encode_wrong_type_or_dtype():
    msg = failure(check_encode_caption, lambda t, v, m: v.encode(t[:m]))
    assert "should be a torch.Tensor, got list" in msg
    msg = failure(check_encode_caption,
                  lambda t, v, m: torch.tensor(v.encode(t[:m]), dtype=torch.float32))
    assert "dtype torch.float32, expected torch.int64" in msg
    assert "pass your function itself" in failure(check_encode_caption, 42)


# --------------------------------------------------------------------------- wrong answers


def test_random_sentences_are_seeded_and_varied():
    assert random_sentences(6, seed=2) == random_sentences(6, seed=2)
    text = "".join(random_sentences(6, seed=2))
    assert "\t" in text and "\n" in text and any(c.isupper() for c in text)


def _delete_punct(s: str) -> str:
    return "".join(ch for ch in s if not _is_punct(ch))


def _encode(v, words) -> torch.Tensor:
    return torch.tensor([v.start_id] + [v.stoi.get(w, v.unk_id) for w in words] + [v.end_id])


WRONG_ANSWERS = [
    pytest.param(check_tokenize, lambda s: _delete_punct(s).split(),
                 "lower-case the sentence first", id="tokenize: no lower-casing"),
    pytest.param(check_tokenize, lambda s: _delete_punct(s.lower()).split(" "),
                 "split with str.split() and no argument", id="tokenize: split(' ')"),
    pytest.param(check_tokenize,
                 lambda s: s.lower().translate(str.maketrans("", "", string.punctuation)).split(),
                 "Unicode punctuation", id="tokenize: ASCII punctuation only"),
    pytest.param(check_tokenize,
                 lambda s: "".join(" " if _is_punct(c) else c for c in s.lower()).split(),
                 "DELETED, not replaced by a space", id="tokenize: punctuation -> space"),
    pytest.param(check_tokenize,
                 lambda s: [w for w in (w.strip(string.punctuation + "“”’—")
                                        for w in s.lower().split()) if w],
                 "punctuation \"'\" is left", id="tokenize: strip word edges only"),
    pytest.param(check_encode_caption,
                 lambda t, v, m: _encode(v, t[:m])[1:-1], "wrap the words in <start>",
                 id="encode: no <start>/<end>"),
    pytest.param(check_encode_caption,
                 lambda t, v, m: torch.tensor([1] + [v.stoi[w] for w in t[:m]] + [2]),
                 "must become <unk> (id 3)", id="encode: KeyError on unknown words"),
    pytest.param(check_encode_caption,
                 lambda t, v, m: _encode(v, t)[:m] if m else _encode(v, t),
                 "cutting after adding them drops <end>", id="encode: truncate after specials"),
    pytest.param(check_encode_caption,
                 lambda t, v, m: _encode(v, t if m is None else t[:m - 1]),
                 "off by one: keep exactly max_len=4 words", id="encode: tokens[:max_len - 1]"),
    pytest.param(check_encode_caption,
                 lambda t, v, m: _encode(v, t if m is None or len(t) <= m else t[:m + 1]),
                 "off by one: keep exactly max_len=4 words", id="encode: tokens[:max_len + 1]"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
