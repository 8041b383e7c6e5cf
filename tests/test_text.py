from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sat_core.text import SPECIALS, Vocabulary, VocabularyError, tokenize

# -- tokenize ---------------------------------------------------------------------------------
# (raw, tokens) pairs as they appear in dataset_flickr8k.json / dataset_coco.json.
KARPATHY_EXAMPLES = [
    ("A child in a pink dress is climbing up a set of stairs in an entry way .",
     "a child in a pink dress is climbing up a set of stairs in an entry way"),
    ("A black dog and a spotted dog are fighting", "a black dog and a spotted dog are fighting"),
    ("A little girl covered in paint sits in front of a painted rainbow with her hands in a bowl .",
     "a little girl covered in paint sits in front of a painted rainbow with her hands in a bowl"),
    ("A man in an orange hat starring at something .",
     "a man in an orange hat starring at something"),
    ("Two motorists are riding along on their vehicle that is oddly designed and colored.",
     "two motorists are riding along on their vehicle that is oddly designed and colored"),
    ("A very clean and well decorated empty bathroom",
     "a very clean and well decorated empty bathroom"),
]


@pytest.mark.parametrize("raw,tokens", KARPATHY_EXAMPLES)
def test_tokenize_matches_karpathy_tokens(raw, tokens):
    assert tokenize(raw) == tokens.split()


def test_tokenize_deletes_punctuation_inside_words():
    assert tokenize("Don't stop") == ["dont", "stop"]
    assert tokenize("A man's T-shirt, (red)!") == ["a", "mans", "tshirt", "red"]
    assert tokenize("Don\u2019t") == ["dont"]  # curly apostrophe, as "don't"
    assert tokenize("  two\tspaces\n  and . lines ") == ["two", "spaces", "and", "lines"]
    assert tokenize("...") == []


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError, match="str"):
        tokenize(["a", "b"])


def _reference_rule(s: str) -> list[str]:
    """The Karpathy preprocessing written independently: lower, delete punctuation, split."""
    return s.lower().translate(str.maketrans("", "", string.punctuation)).split()


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=string.printable, max_size=60))
def test_tokenize_equals_reference_rule_on_ascii(s):
    assert tokenize(s) == _reference_rule(s)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_tokenize_output_is_clean_and_idempotent(s):
    tokens = tokenize(s)
    for t in tokens:
        assert t and not any(ch.isspace() for ch in t)
        assert not any(ch in string.punctuation for ch in t)
    assert tokenize(" ".join(tokens)) == tokens


# -- Vocabulary -------------------------------------------------------------------------------
CAPTIONS = [["b", "a", "c"], ["a", "b"], ["a", "d"]]  # counts: a 3, b 2, c 1, d 1


def test_specials_have_fixed_ids():
    v = Vocabulary()
    assert v.itos == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (v.pad_id, v.start_id, v.end_id, v.unk_id) == (0, 1, 2, 3)
    assert [v.stoi[s] for s in SPECIALS] == [0, 1, 2, 3]
    assert len(v) == 4


def test_build_orders_by_frequency_then_alphabet():
    v = Vocabulary.build(CAPTIONS)
    assert v.itos[4:] == ["a", "b", "c", "d"]  # c and d tie at 1: alphabetical
    assert v.stoi["a"] == 4 and v.stoi["d"] == 7
    assert len(v) == 8 and "c" in v and "zebra" not in v


def test_build_max_size_counts_real_words_only():
    v = Vocabulary.build(CAPTIONS, max_size=3)
    assert v.itos[4:] == ["a", "b", "c"]
    assert len(v) == 7
    assert Vocabulary.build(CAPTIONS, max_size=0).itos == list(SPECIALS)
    assert len(Vocabulary.build(CAPTIONS, max_size=None)) == 8


def test_build_min_count():
    assert Vocabulary.build(CAPTIONS, min_count=2).itos[4:] == ["a", "b"]
    assert Vocabulary.build(CAPTIONS, min_count=4).itos[4:] == []


def test_build_ignores_special_strings_in_captions():
    v = Vocabulary.build([["<unk>", "a", "<pad>"], ["<unk>"]])
    assert v.itos == [*SPECIALS, "a"]


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(CAPTIONS, min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(CAPTIONS, max_size=-1)
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(["a", "a"])
    with pytest.raises(ValueError, match="twice"):
        Vocabulary(["<end>"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefg"), max_size=6), max_size=8), st.randoms())
def test_build_does_not_depend_on_caption_order(caps, rnd):
    shuffled = list(caps)
    rnd.shuffle(shuffled)
    assert Vocabulary.build(caps, max_size=4) == Vocabulary.build(shuffled, max_size=4)


def test_encode_decode_by_hand():
    v = Vocabulary.build(CAPTIONS)  # a=4 b=5 c=6 d=7
    assert v.encode(["b", "zebra", "a"]) == [1, 5, 3, 4, 2]
    assert v.encode(["d"], add_special=False) == [7]
    assert v.decode([1, 5, 3, 4, 2, 0, 0]) == ["b", "<unk>", "a"]
    assert v.decode([1, 4, 2, 6, 7]) == ["a"]  # stops at <end>
    assert v.decode(torch.tensor([1, 6, 0, 7])) == ["c", "d"]  # pads dropped, tensor accepted
    assert v.decode([1, 4, 2], strip_special=False) == ["<start>", "a", "<end>"]
    with pytest.raises(IndexError, match="outside the vocabulary"):
        v.decode([1, 99])


words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(st.lists(words, min_size=1, max_size=20, unique=True), st.data())
def test_round_trip_in_vocabulary(vocab_words, data):
    vocab_words = [w for w in vocab_words if w not in SPECIALS]
    v = Vocabulary(vocab_words)
    if not vocab_words:
        return
    sentence = data.draw(st.lists(st.sampled_from(vocab_words), max_size=12))
    ids = v.encode(sentence)
    assert ids[0] == v.start_id and ids[-1] == v.end_id
    assert v.decode(ids) == sentence


@settings(max_examples=60, deadline=None)
@given(st.lists(words, max_size=10, unique=True), st.lists(words, max_size=10))
def test_unknown_words_map_to_unk(vocab_words, sentence):
    v = Vocabulary([w for w in vocab_words if w not in SPECIALS])
    ids = v.encode(sentence, add_special=False)
    for w, i in zip(sentence, ids, strict=True):
        if w in v.stoi:
            assert v.itos[i] == w
        else:
            assert i == v.unk_id


@settings(max_examples=30, deadline=None)
@given(st.lists(words, max_size=15, unique=True))
def test_save_load_round_trip(vocab_words):
    v = Vocabulary([w for w in vocab_words if w not in SPECIALS])
    with tempfile.TemporaryDirectory() as d:
        path = v.save(Path(d) / "sub" / "vocab.json")
        w = Vocabulary.load(path)
    assert w == v and w.itos == v.itos and w.stoi == v.stoi
    assert w.fingerprint() == v.fingerprint()


def test_fingerprint_tells_vocabularies_apart():
    v1, v2, v3 = Vocabulary(["a", "b"]), Vocabulary(["a", "b"]), Vocabulary(["b", "a"])
    assert v1.fingerprint() == v2.fingerprint() and v1 == v2
    assert v1.fingerprint() != v3.fingerprint() and v1 != v3  # same words, other ids
    assert v1.fingerprint() != Vocabulary(["a"]).fingerprint()
    fp = v1.fingerprint()
    assert len(fp) == 16 and all(c in "0123456789abcdef" for c in fp)


@pytest.mark.parametrize(
    "content,needle",
    [
        ("not json at all", "is not JSON"),
        ("[1, 2, 3]", "no format marker"),
        (json.dumps({"format": "something.else", "itos": ["<pad>"]}), "no format marker"),
        (json.dumps({"format": "sat_core.vocabulary", "version": 1, "itos": ["a", "b"]}),
         "specials"),
        (json.dumps({"format": "sat_core.vocabulary", "version": 1, "itos": "abc"}),
         "list of strings"),
        (json.dumps({"format": "sat_core.vocabulary", "version": 99, "itos": list(SPECIALS)}),
         "version"),
    ],
)
def test_load_rejects_what_is_not_a_vocabulary(tmp_path, content, needle):
    path = tmp_path / "weird.json"
    path.write_text(content)
    with pytest.raises(VocabularyError, match=needle) as e:
        Vocabulary.load(path)
    assert str(path) in str(e.value)


def test_load_missing_file_and_edited_file(tmp_path):
    with pytest.raises(VocabularyError, match="does not exist") as e:
        Vocabulary.load(tmp_path / "nope.json")
    assert "nope.json" in str(e.value)
    path = Vocabulary(["a", "b"]).save(tmp_path / "v.json")
    payload = json.loads(path.read_text())
    payload["itos"][4] = "z"  # edited by hand: fingerprint no longer matches
    path.write_text(json.dumps(payload))
    with pytest.raises(VocabularyError, match="fingerprint"):
        Vocabulary.load(path)
