"""Tests of sat_core.accuracy: hand-built Shapes images with hand-written right and wrong captions.

Objects are placed by hand on a 64 x 64 image (x right, y down); the expected verdicts are read
off the placements, never computed by the code under test. Only the last tests use generated
images: every reference caption of the world must be judged right.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from sat_core.accuracy import (
    AccuracyResult,
    NounPhrase,
    caption_accuracy,
    judge_caption,
    parse_caption,
)
from sat_core.data import shapes
from sat_core.data.records import ImageRecord
from sat_core.data.shapes import ShapesConfig, ShapesObject, make_shapes_splits, shape_mask

S = 64


def obj(size: str, colour: str, shape: str, x: float, y: float) -> ShapesObject:
    extent = 0.18 * S if size == "big" else 0.1 * S
    mask = shape_mask(shape, (x, y), extent, S)
    return ShapesObject(shape, colour, size, (x, y), (0, 0, 1, 1), mask, extent)


def judge(caption: str, objects, **kw):
    return judge_caption(caption.split(), objects, S, **kw)


def record(objects, i: int = 0) -> ImageRecord:
    return ImageRecord(image_id=i, filename=f"hand/{i}.png", split="test", captions=[],
                       extra={"objects": objects})


# One object on the left, one big red circle; two objects side by side; two stacked.
LONE = [obj("big", "red", "circle", 12, 30)]
SIDE = [obj("big", "red", "circle", 14, 32), obj("small", "blue", "square", 50, 30)]
STACK = [obj("small", "green", "triangle", 30, 12), obj("big", "yellow", "diamond", 34, 50)]


# ------------------------------------------------------------------------------- attributes
def test_right_caption_and_every_word_counted():
    j = judge("there is a big red circle", LONE)
    assert j.right and j.parsed and j.reasons == []
    assert j.words == {"size": (1, 1), "colour": (1, 1), "shape": (1, 1)}


def test_missing_size_word_is_still_right_and_not_counted():
    j = judge("a red circle", LONE)
    assert j.right
    assert j.words == {"size": (0, 0), "colour": (1, 1), "shape": (1, 1)}
    assert judge("a red circle to the left of a small blue square", SIDE).right


@pytest.mark.parametrize("caption, kind, said, truth", [
    ("a small red circle", "size", "small", "big"),
    ("a big blue circle", "colour", "blue", "red"),
    ("a big red square", "shape", "square", "circle"),
])
def test_one_wrong_attribute(caption, kind, said, truth):
    j = judge(caption, LONE)
    assert j.parsed and not j.right
    assert j.words[kind] == (0, 1)
    assert all(j.words[k] == (1, 1) for k in ("size", "colour", "shape") if k != kind)
    assert len(j.reasons) == 1 and f"'{said}' should be '{truth}'" in j.reasons[0]


def test_wrong_attribute_of_the_second_object():
    j = judge("a big red circle to the left of a small blue circle", SIDE)
    assert not j.right
    assert j.words == {"size": (2, 2), "colour": (2, 2), "shape": (1, 2)}
    assert any("'circle' should be 'square'" in r for r in j.reasons)


# ------------------------------------------------------------------------------- object count
def test_too_few_objects():
    j = judge("a big red circle", SIDE)
    assert j.parsed and not j.right
    assert j.reasons == ["names 1 object, the image has 2"]
    assert j.words == {"size": (1, 1), "colour": (1, 1), "shape": (1, 1)}  # its words are right


def test_too_many_objects_extra_phrase_words_are_wrong():
    j = judge("a big red circle to the left of a small blue square", LONE)
    assert not j.right
    assert "names 2 objects, the image has 1" in j.reasons
    assert j.words == {"size": (1, 2), "colour": (1, 2), "shape": (1, 2)}
    assert j.matching == (0, None)


def test_repeated_object():
    # two phrases, two objects, but the same object twice: one phrase matches nothing right
    j = judge("a big red circle to the left of a big red circle", SIDE)
    assert not j.right
    assert j.words == {"size": (1, 2), "colour": (1, 2), "shape": (1, 2)}
    three = SIDE + [obj("small", "green", "triangle", 32, 56)]
    assert judge("a big red circle to the left of a small blue square and a green triangle",
                 three).right
    j = judge("a big red circle to the left of a small blue square and a red circle", three)
    assert not j.right and j.words["shape"] == (2, 3)
    # three phrases for two objects, one repeated
    j = judge("a big red circle to the left of a small blue square and a red circle", SIDE)
    assert not j.right and "names 3 objects, the image has 2" in j.reasons
    assert j.words["shape"] == (2, 3)


def test_matching_is_one_to_one_whatever_the_order():
    # the caption names the objects in the other order than the list: still right
    assert judge("a small blue square to the right of a big red circle", SIDE).right
    assert judge("a small blue square is to the right of a red circle", SIDE).right


# ------------------------------------------------------------------------------- relations
@pytest.mark.parametrize("objects, caption, right", [
    (SIDE, "a red circle to the left of a blue square", True),
    (SIDE, "a red circle to the right of a blue square", False),
    (SIDE, "a blue square to the right of a red circle", True),
    (SIDE, "a blue square to the left of a red circle", False),
    (SIDE, "a red circle above a blue square", False),  # dy = -2 but dx dominates
    (STACK, "a green triangle above a yellow diamond", True),
    (STACK, "a green triangle below a yellow diamond", False),
    (STACK, "a yellow diamond is below a green triangle", True),
    (STACK, "a yellow diamond is above a green triangle", False),
    (STACK, "a green triangle to the left of a yellow diamond", False),  # dx = -4, dy = -38
])
def test_each_relation_true_and_false(objects, caption, right):
    j = judge(caption, objects)
    assert j.parsed and j.right is right, j.reasons
    assert j.words["colour"] == (2, 2) and j.words["shape"] == (2, 2)


def test_false_relation_reason_says_what_is_true():
    j = judge("a big red circle to the right of a small blue square", SIDE)
    assert j.reasons == ["'to the right of' is false: the big red circle is to the left of the "
                         "small blue square"]
    j = judge("a green triangle below a yellow diamond", STACK)
    assert j.reasons == ["'below' is false: the small green triangle is above the big yellow "
                         "diamond"]


def test_subjects_of_the_second_relation():
    # A red circle (left, top), B blue square (right, top), C green triangle (right, bottom)
    objects = [obj("big", "red", "circle", 12, 14), obj("small", "blue", "square", 52, 12),
               obj("small", "green", "triangle", 48, 54)]
    # "which is": B is above C (true); A is NOT above C (A-C is 36 right, 40 down: vertical)
    assert judge("a red circle to the left of a blue square which is above a green triangle",
                 objects).right
    # "and {A>C}": A is above C? dx = -36, dy = -40: vertical, A above C -> true
    assert judge("a red circle is to the left of a blue square and above a green triangle",
                 objects).right
    # with B as subject ("which is") "to the left of" a green triangle is false (B above C)
    j = judge("a red circle to the left of a blue square which is to the left of a green "
              "triangle", objects)
    assert not j.right
    assert j.reasons == ["'to the left of' is false: the small blue square is above the small "
                         "green triangle"]
    # with A as subject, "below" C is false
    j = judge("a red circle is to the left of a blue square and below a green triangle", objects)
    assert not j.right and "the big red circle is above the small green triangle" in j.reasons[0]


def test_a_relation_decides_the_matching_of_identical_phrases():
    # two red circles (distinct_attributes=False worlds): only the relation tells them apart
    objects = [obj("big", "red", "circle", 50, 32), obj("small", "red", "circle", 14, 32)]
    assert judge("a small red circle to the left of a big red circle", objects).right
    assert not judge("a small red circle to the right of a big red circle", objects).right
    assert judge("a red circle to the right of a red circle", objects).right
    # on a tie |dx| == |dy| the world's rule says horizontal
    tie = [obj("big", "red", "circle", 20, 20), obj("small", "blue", "square", 40, 40)]
    assert judge("a red circle to the left of a blue square", tie).right
    assert not judge("a red circle above a blue square", tie).right


# ------------------------------------------------------------------------------- positions
# centers (x, y) -> the position words that are true (side_zone 0.15 of 64 px = 9.6 px)
POSITIONS = {
    (10, 30): {"left"},
    (54, 36): {"right"},
    (30, 8): {"top"},
    (36, 58): {"bottom"},
    (33, 31): {"middle", "right"},   # dx = +1/64, dy = -1/64: right by the dominant axis
    (23, 32): {"middle", "left"},    # dx = -0.14 < side_zone: in the middle AND on the left
    (32, 44): {"bottom"},            # dy = +0.1875 >= side_zone: not in the middle
}
WORDS = {"left": "on the left", "right": "on the right", "top": "at the top",
         "bottom": "at the bottom", "middle": "in the middle"}


@pytest.mark.parametrize("center", list(POSITIONS))
@pytest.mark.parametrize("word", list(WORDS))
def test_each_position_word_true_and_false(center, word):
    objects = [obj("small", "purple", "diamond", *center)]
    j = judge(f"a small purple diamond {WORDS[word]}", objects)
    assert j.parsed and j.words == {"size": (1, 1), "colour": (1, 1), "shape": (1, 1)}
    assert j.right is (word in POSITIONS[center]), (center, word, j.reasons)
    if not j.right:
        assert j.reasons[0].startswith(f"'{WORDS[word]}' is false: the small purple diamond is")


def test_position_reasons_and_side_zone():
    j = judge("a big red circle is on the right", LONE)
    assert "is on the left" in j.reasons[0]
    j = judge("a big red circle in the middle", LONE)
    assert "from the center" in j.reasons[0] and not j.right
    # a wider middle zone makes the same caption right
    assert judge("a big red circle in the middle", LONE, config=ShapesConfig(side_zone=0.35)).right


# ------------------------------------------------------------------------------- the grammar
PHRASES = [NounPhrase("big", "red", "circle"), NounPhrase("small", "blue", "square"),
           NounPhrase(None, "green", "triangle")]
REL_CYCLE = ["left", "above", "right", "below"]


def render(template: str) -> tuple[list[str], list[tuple[int, str, int]], list[tuple[int, str]]]:
    """Fill a template by hand: roles A, B, C -> PHRASES[0..2]; relation slots get left, above,
    right, below in turn; position slots get the position words in turn."""
    words, rels, poss = [], [], []
    for part in template.split():
        m = re.fullmatch(r"\{(\w)(?:>(\w)|(@))?\}", part)
        if m is None:
            words.append(part)
            continue
        a = "ABC".index(m.group(1))
        if m.group(2):
            r = REL_CYCLE[len(rels) % 4]
            rels.append((a, r, "ABC".index(m.group(2))))
            words += shapes._RELATION_WORDS[r]
        elif m.group(3):
            p = list(WORDS)[len(poss) % 5]
            poss.append((a, p))
            words += shapes._POSITION_WORDS[p]
        else:
            words += PHRASES[a].words
    return words, rels, poss


ALL_TEMPLATES = [(n, t) for n, ts in shapes._TEMPLATES.items() for t in ts]


@pytest.mark.parametrize("n, template", ALL_TEMPLATES)
def test_every_template_is_parsed(n, template):
    words, rels, poss = render(template)
    parsed = parse_caption(words)
    assert parsed is not None, words
    assert list(parsed.phrases) == PHRASES[:n]
    assert list(parsed.relations) == rels and list(parsed.positions) == poss
    assert parse_caption(" ".join(words)) == parsed  # a string works too


def test_the_two_three_relation_templates_by_hand():
    p = parse_caption("a big red circle above a small blue square which is to the left of a "
                      "green triangle".split())
    assert p.relations == ((0, "above", 1), (1, "left", 2))
    p = parse_caption("a big red circle is to the right of a small blue square and below a "
                      "green triangle".split())
    assert p.relations == ((0, "right", 1), (0, "below", 2))
    p = parse_caption("there is a small purple diamond at the bottom".split())
    assert p.phrases == (NounPhrase("small", "purple", "diamond"),)
    assert p.positions == ((0, "bottom"),) and p.relations == ()


def test_a_template_added_to_the_grammar_is_parsed(monkeypatch):
    caption = "a red circle and a blue square to the left of it".split()
    assert parse_caption(caption) is None
    monkeypatch.setitem(shapes._TEMPLATES, 2, (*shapes._TEMPLATES[2], "a {A} and a {B} {B>A} it"))
    p = parse_caption(caption)
    assert p is not None and p.relations == ((1, "left", 0),)
    flipped = [obj("big", "red", "circle", 50, 32), obj("small", "blue", "square", 14, 30)]
    assert judge(" ".join(caption), flipped).right
    assert not judge(" ".join(caption), SIDE).right


@pytest.mark.parametrize("caption", [
    "", "a", "a big red", "a big red circle circle", "a big big red circle", "a <unk> circle",
    "big red circle", "a big red circle <end>", "a big red circle above", "a circle red",
    "a big red circle to the left a small blue square", "a big red circle on the left of a "
    "small blue square", "a red circle above a blue square which is above",
])
def test_unparsable_and_empty_captions_are_wrong(caption):
    assert parse_caption(caption.split()) is None
    j = judge(caption, LONE)
    assert not j.right and not j.parsed and len(j.reasons) == 1


def test_unparsable_caption_counts_its_words_wrong():
    j = judge("a big red red circle", LONE)
    assert j.words == {"size": (0, 1), "colour": (0, 2), "shape": (0, 1)}
    j = judge("", LONE)
    assert j.reasons == ["empty caption"] and j.words == {k: (0, 0) for k in j.words}


# ------------------------------------------------------------------------------- word accuracy
def test_word_accuracy_by_hand():
    three = [obj("big", "red", "circle", 10, 32), obj("small", "blue", "square", 32, 32),
             obj("small", "green", "triangle", 54, 32)]
    j = judge("a big red circle to the left of a small blue square and a green diamond", three)
    assert j.words == {"size": (2, 2), "colour": (3, 3), "shape": (2, 3)}
    assert j.reasons == ["'diamond' should be 'triangle' (phrase 3: 'green diamond')"]
    res = caption_accuracy(
        ["a big red circle to the left of a small blue square and a green diamond".split(),
         "a small red circle".split(), "a big red circle".split()],
        [record(three, 0), record(LONE, 1), record(LONE, 2)], S)
    assert isinstance(res, AccuracyResult)
    assert res.n_images == 3 and res.n_right == 1
    assert res.caption_accuracy == pytest.approx(1 / 3)
    assert res.word_counts == {"size": (3, 4), "colour": (5, 5), "shape": (4, 5)}
    assert res.word_accuracy == pytest.approx({"size": 3 / 4, "colour": 1.0, "shape": 4 / 5})
    assert res.as_dict() == {"caption_accuracy": pytest.approx(1 / 3),
                             "word_accuracy": pytest.approx(res.word_accuracy)}
    table = res.table()
    assert "captions" in table and "0.333" in table and "0.800" in table


def test_word_accuracy_uses_the_best_matching():
    objects = [obj("small", "blue", "square", 50, 32), obj("big", "red", "circle", 14, 32)]
    # in list order nothing would match; the best matching pairs "red circle" with object 1
    j = judge("a red circle to the left of a green square", objects)
    assert j.matching == (1, 0)
    assert j.words == {"size": (0, 0), "colour": (1, 2), "shape": (2, 2)}
    assert j.reasons == ["'green' should be 'blue' (phrase 2: 'green square')"]


def test_no_size_words_gives_nan_and_json_null():
    res = caption_accuracy([["a", "red", "circle"]], [record(LONE)], S)
    assert res.caption_accuracy == 1.0 and math.isnan(res.word_accuracy["size"])
    d = res.as_dict()
    assert d["word_accuracy"]["size"] is None
    json.dumps(d, allow_nan=False)


def test_json_objects_judge_like_shapes_objects():
    as_json = json.loads(json.dumps([o.as_dict(with_mask=False) for o in SIDE]))
    for caption in ("a red circle to the left of a blue square",
                    "a small red circle above a blue square"):
        a, b = judge(caption, SIDE), judge(caption, as_json)
        assert (a.right, a.words, a.reasons) == (b.right, b.words, b.reasons)


def test_caption_accuracy_checks_its_inputs():
    with pytest.raises(ValueError, match="2 captions for 1 records"):
        caption_accuracy([["a"], ["b"]], [record(LONE)], S)
    plain = ImageRecord(image_id=0, filename="x.jpg", split="test", captions=[])
    with pytest.raises(ValueError, match="Shapes split"):
        caption_accuracy([["a"]], [plain], S)


# ------------------------------------------------------------------------------- the references
@pytest.fixture(scope="module")
def test_split():
    return make_shapes_splits(n_train=1, n_val=1, n_test=200, seed=0)["test"]


def test_every_reference_is_right(test_split):
    records = test_split.records
    assert {len(r.extra["objects"]) for r in records} == {1, 2, 3}
    for k in range(5):
        res = caption_accuracy([r.captions[k] for r in records], records, S)
        bad = [(r.captions[k], j.reasons) for r, j in zip(records, res.judgements, strict=True)
               if not j.right]
        assert bad == [] and res.caption_accuracy == 1.0
        assert res.word_accuracy == {"size": 1.0, "colour": 1.0, "shape": 1.0}
        # every reference names every object with all three words
        n_objects = sum(len(r.extra["objects"]) for r in records)
        assert res.word_counts == {k2: (n_objects, n_objects) for k2 in ("size", "colour",
                                                                         "shape")}


def test_a_reference_of_another_image_is_mostly_wrong(test_split):
    records = test_split.records
    shifted = [records[(i + 1) % len(records)].captions[0] for i in range(len(records))]
    res = caption_accuracy(shifted, records, S)
    assert res.caption_accuracy < 0.2
    assert res.word_accuracy["colour"] < 0.7 and res.word_accuracy["shape"] < 0.7
