from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from sat_core.data.karpathy import KarpathyFormatError, load_image_file, load_karpathy
from sat_core.data.records import IMAGENET_MEAN, IMAGENET_STD, ImageLoadError


def normalised(rgb) -> torch.Tensor:
    """The expected (3,) value of a pixel after ImageNet normalisation, computed by hand."""
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD,
                                                               strict=True)])


def test_flickr_style_splits_and_restval_folding(tiny_karpathy):
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, image_size=8)
    assert set(splits) == {"train", "val", "test"}
    # JSON order: 0 train, 1 train, 2 val, 3 test, 4 restval, 5 train -> restval folds into train
    assert [r.image_id for r in splits["train"].records] == [0, 1, 4, 5]
    assert [r.image_id for r in splits["val"].records] == [2]
    assert [r.image_id for r in splits["test"].records] == [3]
    assert all(r.split == "train" for r in splits["train"].records)
    assert splits["train"].name == "train" and splits["train"].num_captions == 2 + 3 + 1 + 2
    r1 = splits["train"].records[1]
    assert r1.captions == tiny_karpathy.tokens(1)
    assert r1.raw[2] == "A dog doesn't like the other dog ."
    assert r1.filename == tiny_karpathy.images[1]["filename"]  # no filepath for Flickr
    assert r1.extra["sentids"] == [2, 3, 4]
    assert splits["test"].records[0].captions[1] == ["a", "tshirt", "a", "hat", "and", "a", "dog"]


def test_restval_dropped_or_kept(tiny_karpathy):
    dropped = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, restval=None)
    assert [r.image_id for r in dropped["train"].records] == [0, 1, 5]
    assert "restval" not in dropped
    kept = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, restval="restval")
    assert [r.image_id for r in kept["restval"].records] == [4]
    assert kept["restval"].records[0].split == "restval"
    assert [r.image_id for r in kept["train"].records] == [0, 1, 5]
    with pytest.raises(ValueError, match="restval"):
        load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, restval="val")


def test_images_load_resized_and_normalised(tiny_karpathy):
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, image_size=8)
    for split in splits.values():
        for r in split.records:
            x = split.load_image(r)
            assert x.shape == (3, 8, 8) and x.dtype == torch.float32
            want = normalised(tiny_karpathy.colors[r.image_id]).view(3, 1, 1).expand(3, 8, 8)
            torch.testing.assert_close(x, want, atol=1e-5, rtol=0)


def test_coco_style_filepath_and_cocoid(karpathy_factory):
    fx = karpathy_factory(style="coco", image_format="jpeg")
    splits = load_karpathy(fx.json_path, fx.image_root, image_size=6)
    val = splits["val"].records[0]
    assert val.filename == f"val2014/COCO_val2014_{1014:012d}.jpg"  # imgid 2 -> cocoid 1000 + 14
    assert val.extra["cocoid"] == 1014
    train = splits["train"].records
    assert [r.filename.split("/")[0] for r in train] == ["train2014", "train2014", "val2014",
                                                          "train2014"]
    x = splits["val"].load_image(val)  # read from image_root/val2014/...
    want = normalised(fx.colors[2]).view(3, 1, 1).expand(3, 6, 6)
    torch.testing.assert_close(x, want, atol=0.05, rtol=0)  # JPEG: within a few levels


def _write(path, pixels):
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path)


def test_direct_resize_keeps_left_and_right(tmp_path):
    pixels = np.zeros((6, 12, 3), np.uint8)
    pixels[:, :6] = (255, 0, 0)
    pixels[:, 6:] = (0, 0, 255)
    _write(tmp_path / "lr.png", pixels)
    x = load_image_file(tmp_path / "lr.png", image_size=8)
    assert x.shape == (3, 8, 8)
    torch.testing.assert_close(x[:, :, :2], normalised((255, 0, 0)).view(3, 1, 1).expand(3, 8, 2),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(x[:, :, -2:], normalised((0, 0, 255)).view(3, 1, 1).expand(3, 8, 2),
                               atol=1e-5, rtol=0)


def test_resize_then_center_crop_keeps_the_middle(tmp_path):
    # 60x20 image: red | green | blue stripes of width 20. Shorter side -> 10 makes it 30x10;
    # the central 10x10 crop is exactly the green stripe.
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :20], pixels[:, 20:40], pixels[:, 40:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    _write(tmp_path / "stripes.png", pixels)
    x = load_image_file(tmp_path / "stripes.png", image_size=10, resize=10)
    assert x.shape == (3, 10, 10)
    green = normalised((0, 255, 0)).view(3, 1, 1)
    torch.testing.assert_close(x[:, :, 2:8], green.expand(3, 10, 6), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="resize"):
        load_image_file(tmp_path / "stripes.png", image_size=10, resize=8)


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.new("L", (5, 5), 100).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 5), (10, 20, 30, 255)).save(tmp_path / "a.png")
    g = load_image_file(tmp_path / "g.png", image_size=4)
    torch.testing.assert_close(g, normalised((100, 100, 100)).view(3, 1, 1).expand(3, 4, 4))
    a = load_image_file(tmp_path / "a.png", image_size=4)
    torch.testing.assert_close(a, normalised((10, 20, 30)).view(3, 1, 1).expand(3, 4, 4))


def test_missing_and_corrupt_images_raise_naming_the_file(karpathy_factory):
    fx = karpathy_factory(corrupt=(1,), missing=(3,))
    splits = load_karpathy(fx.json_path, fx.image_root, image_size=8)
    corrupt_rec = splits["train"].records[1]
    with pytest.raises(ImageLoadError, match="corrupt") as e:
        splits["train"].load_image(corrupt_rec)
    assert str(fx.path_of(1)) in str(e.value) and e.value.path == str(fx.path_of(1))
    with pytest.raises(ImageLoadError, match="not found") as e:
        splits["test"].load_image(splits["test"].records[0])
    assert str(fx.path_of(3)) in str(e.value)


def test_skip_mode_drops_bad_images_with_one_warning(karpathy_factory):
    fx = karpathy_factory(corrupt=(1,), missing=(3,), style="coco")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load_karpathy(fx.json_path, fx.image_root, image_size=8, on_error="skip")
    ours = [w for w in caught if "skipped" in str(w.message)]
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "skipped 2 of 6 images" in msg
    assert fx.images[1]["filename"] in msg and fx.images[3]["filename"] in msg
    assert [r.image_id for r in splits["train"].records] == [0, 4, 5]
    assert splits["test"].records == []
    for r in splits["train"].records:  # what is left loads
        assert splits["train"].load_image(r).shape == (3, 8, 8)


def test_skip_mode_is_silent_when_all_images_are_fine(tiny_karpathy):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, on_error="skip")
    assert sum(len(s) for s in splits.values()) == 6


def test_missing_json_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sat_core.data.download") as e:
        load_karpathy(tmp_path / "dataset_flickr8k.json", tmp_path)
    assert "dataset_flickr8k.json" in str(e.value)


@pytest.mark.parametrize(
    "mutate,needles",
    [
        (lambda d: d.pop("images"), ["'images'", "top-level"]),
        (lambda d: d["images"][1].pop("sentences"), ["images[1]", "'sentences'"]),
        (lambda d: d["images"][2].pop("filename"), ["images[2]", "'filename'"]),
        (lambda d: d["images"][0].pop("split"), ["images[0]", "'split'"]),
        (lambda d: d["images"][0]["sentences"][1].clear(), ["images[0].sentences[1]", "'tokens'"]),
        (lambda d: d["images"][3].update(split="holdout"), ["images[3].split", "'holdout'"]),
    ],
)
def test_malformed_json_names_file_and_key(tiny_karpathy, mutate, needles):
    data = json.loads(tiny_karpathy.json_path.read_text())
    mutate(data)
    tiny_karpathy.json_path.write_text(json.dumps(data))
    with pytest.raises(KarpathyFormatError) as e:
        load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root)
    msg = str(e.value)
    assert str(tiny_karpathy.json_path) in msg
    for needle in needles:
        assert needle in msg


def test_invalid_json_syntax(tmp_path):
    path = tmp_path / "dataset_coco.json"
    path.write_text('{"images": [')
    with pytest.raises(KarpathyFormatError, match="not valid JSON") as e:
        load_karpathy(path, tmp_path)
    assert str(path) in str(e.value)


def test_sentences_with_raw_only_are_tokenized(tiny_karpathy):
    data = json.loads(tiny_karpathy.json_path.read_text())
    for s in data["images"][0]["sentences"]:
        del s["tokens"]
    tiny_karpathy.json_path.write_text(json.dumps(data))
    splits = load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root)
    assert splits["train"].records[0].captions == tiny_karpathy.tokens(0)


def test_on_error_must_be_known(tiny_karpathy):
    with pytest.raises(ValueError, match="on_error"):
        load_karpathy(tiny_karpathy.json_path, tiny_karpathy.image_root, on_error="ignore")
