"""Chapter 2 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch02 import (
    TOKENIZE_SENTENCES,
    check_encode_caption,
    check_tokenize,
    exercise_vocabulary,
)


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
    lookup = {s: t for (s, _), t in zip(TOKENIZE_SENTENCES, by_hand, strict=True)}
    check_tokenize(lambda s: list(lookup[s]))  # the reference agrees with the hand-written tokens


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
    assert "test input 5 of 6" in msg
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
    assert "test input 2 of 4" in msg
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
