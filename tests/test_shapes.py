"""The Shapes caption world: determinism, geometry, caption truth, pixels, splits, vocabulary, gallery.

The caption checks read the English back with a small parser written here (not the generator's
templates) and compare what it says with the objects' attributes and centers.
"""

from __future__ import annotations

import json
import math
import pickle

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from sat_core.data.records import IMAGENET_MEAN, IMAGENET_STD, ImageLoadError  # noqa: E402
from sat_core.data.shapes import (  # noqa: E402
    COLOURS,
    SHAPES,
    SHAPES_VOCAB,
    SIZES,
    ShapesConfig,
    generate_shapes,
    make_shapes_splits,
    position,
    relation,
    save_shapes,
    shape_mask,
    shapes_vocabulary,
)
from sat_core.viz import shapes_gallery  # noqa: E402

S = 64


@pytest.fixture(scope="module")
def world():
    return generate_shapes(300, seed=123)


@pytest.fixture(scope="module")
def splits():
    return make_shapes_splits(n_train=12, n_val=5, n_test=4, seed=3)


def _same(a, b) -> bool:
    return (
        np.array_equal(a.pixels, b.pixels)
        and a.captions == b.captions
        and a.word_objects == b.word_objects
        and all(
            np.array_equal(p.mask, q.mask) and p.center == q.center and p.box == q.box
            for p, q in zip(a.objects, b.objects, strict=True)
        )
    )


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_images_and_captions():
    a, b = generate_shapes(20, seed=7), generate_shapes(20, seed=7)
    assert all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_different_seed_gives_different_images():
    a, b = generate_shapes(20, seed=7), generate_shapes(20, seed=8)
    assert sum(np.array_equal(x.pixels, y.pixels) for x, y in zip(a, b, strict=True)) == 0
    assert [x.captions for x in a] != [y.captions for y in b]


def test_image_i_does_not_depend_on_n():
    short, long = generate_shapes(5, seed=3), generate_shapes(12, seed=3)
    assert all(_same(x, y) for x, y in zip(short, long[:5], strict=True))


def test_splits_are_deterministic_and_independent_of_other_split_sizes():
    a = make_shapes_splits(n_train=6, n_val=3, n_test=3, seed=1)
    b = make_shapes_splits(n_train=9, n_val=3, n_test=3, seed=1)
    c = make_shapes_splits(n_train=6, n_val=3, n_test=3, seed=2)
    for name in ("val", "test"):
        assert np.array_equal(a[name].load_image.pixels, b[name].load_image.pixels)
        assert [r.captions for r in a[name].records] == [r.captions for r in b[name].records]
        assert not np.array_equal(a[name].load_image.pixels, c[name].load_image.pixels)
    assert np.array_equal(a["train"].load_image.pixels, b["train"].load_image.pixels[:6])
    # the three splits are not copies of each other
    assert not np.array_equal(a["val"].load_image.pixels, a["test"].load_image.pixels)
    assert not np.array_equal(a["train"].load_image.pixels[:3], a["val"].load_image.pixels)


# -- geometry ------------------------------------------------------------------------------------


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation by hand."""
    p = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            out |= p[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def test_masks_nonempty_disjoint_not_touching_and_boxes_tight(world):
    counts = {1: 0, 2: 0, 3: 0}
    for im in world:
        assert im.pixels.shape == (S, S, 3) and im.pixels.dtype == np.uint8
        counts[len(im.objects)] += 1
        for k, o in enumerate(im.objects):
            m = o.mask
            assert m.shape == (S, S) and m.dtype == bool and m.sum() > 20
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= S and 0 <= y0 < y1 <= S
            assert m[y0:y1, x0:x1].sum() == m.sum()  # the box holds the whole mask ...
            assert m[y0, x0:x1].any() and m[y1 - 1, x0:x1].any()  # ... and is tight
            assert m[y0:y1, x0].any() and m[y0:y1, x1 - 1].any()
            # the recorded center is the mask's centroid (pixel (r, c) has center (c+.5, r+.5))
            rows, cols = np.nonzero(m)
            assert abs(cols.mean() + 0.5 - o.center[0]) < 1.0
            assert abs(rows.mean() + 0.5 - o.center[1]) < 1.0
            for q in im.objects[k + 1 :]:
                assert not (_dilate(m) & q.mask).any(), "objects touch or overlap"
    assert min(counts.values()) > 50  # 1, 2 and 3 objects all occur


def test_distinct_colours_and_shapes_within_an_image(world):
    for im in world:
        assert len({o.colour for o in im.objects}) == len(im.objects)
        assert len({o.shape for o in im.objects}) == len(im.objects)


def test_size_classes_are_clearly_separated_in_area(world):
    small = [o.mask.sum() for im in world for o in im.objects if o.size == "small"]
    big = [o.mask.sum() for im in world for o in im.objects if o.size == "big"]
    assert min(big) > 1.3 * max(small)
    # small objects still cover at least ~one cell of an 8x8 grid (8x8 = 64 px at 64x64)
    assert min(small) >= 60


def test_shape_mask_hand_values():
    # square: half-side 0.88*s = 10 px at center (32, 32): pixel centers 22.5..41.5 -> 20x20
    sq = shape_mask("square", (32.0, 32.0), 10 / 0.88, 64)
    assert sq.sum() == 400 and sq[22:42, 22:42].all()
    circ = shape_mask("circle", (32.0, 32.0), 20.0, 64)
    assert abs(circ.sum() - math.pi * 400) / (math.pi * 400) < 0.02
    assert circ[32, 32] and not circ[32, 53] and not circ[10, 10]
    dia = shape_mask("diamond", (32.0, 32.0), 10.0, 64)  # |dx|+|dy| <= 12 -> area ~ 2*12^2
    assert abs(dia.sum() - 288) / 288 < 0.1 and not dia[21, 21]
    tri = shape_mask("triangle", (32.0, 32.0), 10.0, 64)
    rows = np.flatnonzero(tri.any(1))
    widths = tri[rows].sum(1)
    assert widths[-1] > 5 * widths[0]  # apex up, base down
    assert np.all(np.diff(widths) >= 0)
    with pytest.raises(ValueError, match="hexagon"):
        shape_mask("hexagon", (32.0, 32.0), 10.0, 64)


def test_relation_and_position_hand_values():
    assert relation((10, 30), (40, 35)) == "left"
    assert relation((40, 35), (10, 30)) == "right"
    assert relation((30, 5), (35, 50)) == "above"
    assert relation((35, 50), (30, 5)) == "below"
    cfg = ShapesConfig()
    assert position((32, 32), 64, cfg) == "middle"
    assert position((10, 30), 64, cfg) == "left"
    assert position((55, 33), 64, cfg) == "right"
    assert position((30, 8), 64, cfg) == "top"
    assert position((33, 58), 64, cfg) == "bottom"
    assert position((10, 10), 64, cfg) is None  # a corner: left or top? say nothing
    assert position((38, 32), 64, cfg) == "middle"  # offset 6/64 < 0.1
    assert position((40, 32), 64, cfg) is None  # offset 8/64: neither middle (0.1) nor side (0.15)


# -- captions ------------------------------------------------------------------------------------

ATTRIBUTE_WORDS = set(SIZES) | set(COLOURS) | set(SHAPES)
RELATIONS = {
    ("to", "the", "left", "of"): "left",
    ("to", "the", "right", "of"): "right",
    ("above",): "above",
    ("below",): "below",
}
POSITIONS = {
    ("on", "the", "left"): "left",
    ("on", "the", "right"): "right",
    ("at", "the", "top"): "top",
    ("at", "the", "bottom"): "bottom",
    ("in", "the", "middle"): "middle",
}


def _noun_phrases(owners: list[int]) -> list[tuple[int, int, int]]:
    """(start, end, object) for each maximal run of tokens owned by one object."""
    out, t = [], 0
    while t < len(owners):
        if owners[t] >= 0:
            e = t
            while e < len(owners) and owners[e] == owners[t]:
                e += 1
            out.append((t, e, owners[t]))
            t = e
        else:
            t += 1
    return out


def _read_relations(tokens: list[str], owners: list[int]) -> list[tuple[int, str, int]]:
    """Read (subject, relation, object) off a caption, as an English reader would: the object is
    the next noun phrase; the subject is the previous one, except after "and" (A ... and REL C),
    where it is the caption's first noun phrase. Positions have object -1 (the frame)."""
    nps = _noun_phrases(owners)
    found, t = [], 0
    while t < len(tokens):
        for phrase, name in (*RELATIONS.items(), *POSITIONS.items()):
            if tuple(tokens[t : t + len(phrase)]) == phrase:
                if phrase in POSITIONS:
                    assert len(nps) == 1, "position words only for a single object"
                    found.append((nps[0][2], name, -1))
                else:
                    after = [np_ for np_ in nps if np_[0] >= t + len(phrase)]
                    before = [np_ for np_ in nps if np_[1] <= t]
                    subj = nps[0][2] if tokens[t - 1] == "and" else before[-1][2]
                    found.append((subj, name, after[0][2]))
                t += len(phrase)
                break
        else:
            t += 1
    return found


def test_every_object_word_matches_its_object_and_every_object_is_named(world):
    for im in world:
        assert len(im.captions) == 5 and len(set(map(tuple, im.captions))) >= 3
        for tokens, owners in zip(im.captions, im.word_objects, strict=True):
            assert len(owners) == len(tokens)
            for tok, i in zip(tokens, owners, strict=True):
                assert (tok in ATTRIBUTE_WORDS) == (i >= 0), (tok, i, tokens)
            nps = _noun_phrases(owners)
            for start, end, i in nps:
                o = im.objects[i]
                assert tokens[start:end] == [o.size, o.colour, o.shape]
                assert tokens[start - 1] in ("a", "single")  # every noun phrase has an article
            assert sorted(i for _, _, i in nps) == list(range(len(im.objects)))


def test_every_relation_word_agrees_with_the_centers(world):
    seen = set()
    for im in world:
        n = len(im.objects)
        for tokens, owners, stored in zip(
            im.captions, im.word_objects, im.relations, strict=True
        ):
            read = _read_relations(tokens, owners)
            assert read == [(r["subject"], r["relation"], r["object"]) for r in stored]
            for r in stored:  # the stored spans point at the relation words
                t0, t1 = r["span"]
                assert all(w == -1 for w in owners[t0:t1]) and t1 - t0 in (1, 3, 4)
            if n == 2:
                assert len(read) == 1
            if n == 3:
                assert len(read) in (1, 2)
            for subj, name, obj in read:
                seen.add(name)
                cx, cy = im.objects[subj].center
                if obj == -1:  # position of a lone object in the 64x64 frame
                    ox, oy = cx - S / 2, cy - S / 2
                    if name == "middle":
                        assert abs(ox) < 0.15 * S and abs(oy) < 0.15 * S
                    else:
                        horizontal = abs(ox) > abs(oy)
                        assert horizontal == (name in ("left", "right"))
                        sign = {"left": ox < 0, "right": ox > 0, "top": oy < 0, "bottom": oy > 0}
                        assert sign[name]
                    continue
                bx, by = im.objects[obj].center
                dx, dy = cx - bx, cy - by
                expect = {
                    "left": dx < 0 and abs(dx) > abs(dy),
                    "right": dx > 0 and abs(dx) > abs(dy),
                    "above": dy < 0 and abs(dy) > abs(dx),
                    "below": dy > 0 and abs(dy) > abs(dx),
                }
                assert expect[name], (tokens, subj, name, obj, (cx, cy), (bx, by))
                # the dominant axis is clear, not a near-diagonal coin flip
                assert max(abs(dx), abs(dy)) > 1.2 * min(abs(dx), abs(dy))
    assert {"left", "right", "above", "below", "top", "bottom", "middle"} <= seen


def test_raw_sentences_tokenize_to_the_captions(world):
    for im in world[:50]:
        for raw, tokens in zip(im.raw, im.captions, strict=True):
            assert raw[0].isupper() and raw.endswith(".")
            assert raw.lower().rstrip(".").split() == tokens


def test_vocabulary_is_small_closed_and_reachable(world):
    words = {t for im in world for c in im.captions for t in c}
    assert 20 <= len(SHAPES_VOCAB) <= 40
    assert len(set(SHAPES_VOCAB)) == len(SHAPES_VOCAB)
    assert words == set(SHAPES_VOCAB)  # nothing outside the list, nothing in it unused


def test_vocabulary_follows_the_config():
    cfg = ShapesConfig(max_objects=1, colours=("red", "blue"), shapes=("circle", "square"))
    vocab = shapes_vocabulary(cfg)
    words = {t for im in generate_shapes(120, 5, cfg) for c in im.captions for t in c}
    assert words == set(vocab)
    assert not {"above", "below", "which", "green", "triangle"} & set(vocab)


# -- pixels --------------------------------------------------------------------------------------


def test_object_pixels_have_the_object_colour_and_background_does_not(world):
    palette = {name: np.asarray(rgb, float) for name, rgb in COLOURS.items()}
    for im in world[:100]:
        px = im.pixels.astype(float)
        everything = np.zeros((S, S), bool)
        for o in im.objects:
            mean = px[o.mask].mean(0)
            assert np.abs(mean - palette[o.colour]).max() < 20, (o.colour, mean)
            nearest = min(palette, key=lambda c: np.abs(mean - palette[c]).sum())
            assert nearest == o.colour
            everything |= _dilate(o.mask)
        bg = px[~everything]
        assert bg.std(0).max() > 3  # noisy, not flat
        assert np.all((bg.mean(0) > 25 - 15 - 3) & (bg.mean(0) < 75 + 15 + 3))


# -- splits and loading --------------------------------------------------------------------------


def test_split_records_follow_the_contract(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "val": 5, "test": 4}
    for name, split in splits.items():
        assert split.name == name and split.num_captions == 5 * len(split)
        assert split.load_image.pixels.shape == (len(split), S, S, 3)
        assert split.load_image.pixels.dtype == np.uint8
        for i, rec in enumerate(split.records):
            assert rec.image_id == i and rec.split == name
            assert rec.filename == f"shapes/{name}/{i:06d}.png"
            assert len(rec.captions) == len(rec.raw) == len(rec.extra["word_objects"]) == 5
            assert all(isinstance(t, str) for c in rec.captions for t in c)
            assert 1 <= len(rec.extra["objects"]) <= 3


def test_load_image_is_the_normalised_pixel_array(splits):
    split = splits["val"]
    rec = split.records[2]
    x = split.load_image(rec)
    assert x.shape == (3, S, S) and x.dtype == torch.float32
    pixels = split.load_image.pixels[2]
    r, c = 17, 40
    for ch in range(3):
        expect = (pixels[r, c, ch] / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]
        assert x[ch, r, c].item() == pytest.approx(expect, abs=1e-5)
    with pytest.raises(ImageLoadError, match="shapes/val/000002.png"):
        splits["test"].load_image(rec)  # a record of another split


def test_loader_survives_pickling_for_dataloader_workers(splits):
    split = splits["train"]
    clone = pickle.loads(pickle.dumps(split.load_image))
    rec = split.records[5]
    assert torch.equal(clone(rec), split.load_image(rec))


@pytest.mark.parametrize("size", [32, 96])
def test_image_size_parameter(size):
    sp = make_shapes_splits(n_train=3, n_val=2, n_test=2, seed=0, image_size=size)
    for split in sp.values():
        for rec in split.records:
            assert split.load_image(rec).shape == (3, size, size)
            for o in rec.extra["objects"]:
                assert o.mask.shape == (size, size) and o.mask.any()
                assert 0 <= o.box[0] < o.box[2] <= size


def test_bad_configs_give_clear_errors():
    with pytest.raises(ValueError, match="image_size"):
        ShapesConfig(image_size=8)
    with pytest.raises(ValueError, match="orange"):
        ShapesConfig(colours=("red", "orange"))
    with pytest.raises(ValueError, match="separated"):
        ShapesConfig(small_extent=(0.1, 0.2), big_extent=(0.15, 0.25))
    with pytest.raises(ValueError, match="distinct"):
        ShapesConfig(max_objects=3, colours=("red", "blue"))
    with pytest.raises(TypeError, match="n_objects"):
        make_shapes_splits(2, 1, 1, n_objects=3)
    with pytest.raises(RuntimeError, match="max_objects"):
        # every object is >= 0.56 * 64 px wide and tall: not even two fit side by side
        generate_shapes(1, 0, ShapesConfig(min_objects=3, big_extent=(0.3, 0.32),
                                           small_extent=(0.28, 0.29), max_attempts=5))
    with pytest.raises(ValueError, match="does not fit"):
        ShapesConfig(big_extent=(0.4, 0.45))  # a diamond 2.4 * 0.45 * 64 px wide


def test_fewer_captions_and_shared_attributes():
    cfg = ShapesConfig(n_captions=3, colours=("red",), shapes=("circle",),
                       distinct_attributes=False, min_objects=2, max_objects=2)
    for im in generate_shapes(10, 4, cfg):
        assert len(im.captions) == 3 and len(im.objects) == 2
        assert all(c.count("circle") == 2 for c in im.captions)


def test_save_shapes_writes_pngs_and_a_karpathy_json(tmp_path, splits):
    path = save_shapes(splits, tmp_path, progress=False)
    data = json.loads(path.read_text())
    assert path.name == "dataset_shapes.json" and data["dataset"] == "shapes"
    images = data["images"]
    assert len(images) == 12 + 5 + 4
    assert [im["imgid"] for im in images] == list(range(21))
    sentids = [s["sentid"] for im in images for s in im["sentences"]]
    assert sentids == list(range(21 * 5))
    for entry in images[::4]:
        split = splits[entry["split"]]
        rec = next(r for r in split.records if r.filename.endswith("/" + entry["filename"]))
        assert f"{entry['filepath']}/{entry['filename']}" == rec.filename
        assert [s["tokens"] for s in entry["sentences"]] == rec.captions
        assert [s["word_objects"] for s in entry["sentences"]] == rec.extra["word_objects"]
        assert entry["shapes_objects"][0]["box"] == list(rec.extra["objects"][0].box)
        png = np.asarray(Image.open(tmp_path / rec.filename))
        assert np.array_equal(png, split.load_image.pixels[rec.image_id])


def test_saved_shapes_read_back_through_the_karpathy_loader(tmp_path, splits):
    from sat_core.data.karpathy import load_karpathy

    path = save_shapes(splits, tmp_path, progress=False)
    loaded = load_karpathy(path, tmp_path, image_size=S)
    for name, split in splits.items():
        assert len(loaded[name]) == len(split)
        for mine, theirs in zip(split.records, loaded[name].records, strict=True):
            assert theirs.filename == mine.filename and theirs.captions == mine.captions
        rec, other = split.records[-1], loaded[name].records[-1]
        assert torch.equal(loaded[name].load_image(other), split.load_image(rec))


def test_shapes_splits_feed_the_caption_dataset_and_collate(splits):
    from sat_core.data.batching import collate_captions
    from sat_core.data.datasets import CaptionDataset, build_vocabulary
    from sat_core.text import tokenize

    split = splits["train"]
    vocab = build_vocabulary(split)
    assert set(vocab.itos[4:]) <= set(SHAPES_VOCAB)
    ds = CaptionDataset(split, vocab)
    assert len(ds) == 5 * len(split)
    loader = torch.utils.data.DataLoader(ds, batch_size=7, collate_fn=collate_captions)
    batch = next(iter(loader))
    assert batch.images.shape == (7, 3, S, S)
    assert (batch.captions != vocab.unk_id).all()
    assert batch.lengths[0].item() == len(split.records[0].captions[0]) + 2
    for rec in split.records:
        assert [tokenize(r) for r in rec.raw] == rec.captions


# -- gallery -------------------------------------------------------------------------------------


def test_gallery_figure_layout(splits):
    fig = shapes_gallery(splits["train"], n=4, show_masks=True, seed=1)
    try:
        assert isinstance(fig, Figure) and len(fig.axes) == 8
        shown = [ax.get_title() for ax in fig.axes[:4]]
        label = fig.axes[0].get_xlabel()
        rec = splits["train"].records[int(shown[0].lstrip("#"))]
        assert " ".join(label.split()) .startswith(" ".join(rec.captions[0]))
    finally:
        plt.close(fig)
    fig = shapes_gallery(splits["test"], n=10, show_masks=False)
    try:
        assert len(fig.axes) == 4  # only 4 images in the split
    finally:
        plt.close(fig)


def test_command_line_writes_the_held_out_test_images(tmp_path, capsys):
    from sat_core.data.shapes import main

    assert main([str(tmp_path), "--n-test", "3", "--image-size", "32", "--seed", "5"]) == 0
    assert "test: 3 images" in capsys.readouterr().out
    held_out = make_shapes_splits(4, 1, 3, seed=5, image_size=32)["test"]
    for i in range(3):  # the same pixels as the test split that training holds out
        png = np.asarray(Image.open(tmp_path / "shapes" / "test" / f"{i:06d}.png"))
        assert np.array_equal(png, held_out.load_image.pixels[i])
    data = json.loads((tmp_path / "dataset_shapes.json").read_text())
    assert [im["split"] for im in data["images"]] == ["test"] * 3  # no train/val written
    assert not (tmp_path / "shapes" / "train").exists()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "none"), "--n-test", "0"])
    assert "at least one image" in capsys.readouterr().err
