"""Shared fixtures. ``tiny_karpathy`` writes a miniature dataset in the Karpathy-split format.

The JSON follows ``dataset_flickr8k.json`` / ``dataset_coco.json`` exactly (same keys, same
nesting); the images are solid-colour PNG (or JPEG) files written with PIL, so a test knows the
pixel value every loaded image must have. Token lists are written by hand (the Karpathy rule:
lower case, punctuation deleted), never computed by the code under test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# (split, [(raw sentence, hand-written Karpathy tokens)]) for each image, in JSON order.
TINY_IMAGES: list[tuple[str, list[tuple[str, str]]]] = [
    ("train", [
        ("A child in a pink dress is climbing up a set of stairs in an entry way .",
         "a child in a pink dress is climbing up a set of stairs in an entry way"),
        ("A girl going into a wooden building .", "a girl going into a wooden building"),
    ]),
    ("train", [
        ("A black dog and a spotted dog are fighting", "a black dog and a spotted dog are fighting"),
        ("Two dogs of different breeds looking at each other on the road .",
         "two dogs of different breeds looking at each other on the road"),
        ("A dog doesn't like the other dog .", "a dog doesnt like the other dog"),
    ]),
    ("val", [
        ("A man in an orange hat starring at something .",
         "a man in an orange hat starring at something"),
        ("A zebra grazes .", "a zebra grazes"),
    ]),
    ("test", [
        ("Two dogs on pavement moving toward each other .",
         "two dogs on pavement moving toward each other"),
        ("A t-shirt, a hat and a dog!", "a tshirt a hat and a dog"),
    ]),
    ("restval", [
        ("A little girl covered in paint sits in front of a painted rainbow .",
         "a little girl covered in paint sits in front of a painted rainbow"),
    ]),
    ("train", [
        ("A dog runs .", "a dog runs"),
        ("The dog is running on grass .", "the dog is running on grass"),
    ]),
]

# A distinct solid colour per image (RGB uint8).
TINY_COLORS: list[tuple[int, int, int]] = [
    (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (128, 64, 32),
]


@dataclass
class KarpathyFixture:
    json_path: Path
    image_root: Path
    style: str
    images: list[dict] = field(default_factory=list)   # the "images" list as written
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    corrupt: tuple[int, ...] = ()
    missing: tuple[int, ...] = ()

    def tokens(self, i: int) -> list[list[str]]:
        """The hand-written token lists of image ``i``."""
        return [t.split() for _, t in TINY_IMAGES[i][1]]

    def path_of(self, i: int) -> Path:
        entry = self.images[i]
        sub = entry.get("filepath")
        return self.image_root / sub / entry["filename"] if sub else self.image_root / entry["filename"]


def write_karpathy_dataset(
    json_path: Path,
    image_root: Path,
    *,
    style: str = "flickr",
    corrupt: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
    image_format: str = "png",
    size: tuple[int, int] = (20, 12),
) -> KarpathyFixture:
    """Write a Karpathy-format JSON at ``json_path`` and its images under ``image_root``.

    ``style="flickr"``: ``filename`` only; ``style="coco"``: ``filepath`` (train2014/val2014),
    ``cocoid`` and COCO-like file names. Images listed in ``corrupt`` get garbage bytes, those in
    ``missing`` are not written at all.
    """
    json_path, image_root = Path(json_path), Path(image_root)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    ext = "jpg" if image_format == "jpeg" else image_format
    images, sentid = [], 0
    for imgid, (split, sents) in enumerate(TINY_IMAGES):
        entry: dict = {}
        if style == "coco":
            folder = "val2014" if split in ("val", "test", "restval") else "train2014"
            cocoid = 1000 + 7 * imgid
            entry["filepath"] = folder
            entry["filename"] = f"COCO_{folder}_{cocoid:012d}.{ext}"
            entry["cocoid"] = cocoid
        else:
            entry["filename"] = f"{1000268201 + imgid}_{imgid:02d}abcdef.{ext}"
        sentences = []
        for raw, tokens in sents:
            sentences.append({"tokens": tokens.split(), "raw": raw, "imgid": imgid, "sentid": sentid})
            sentid += 1
        entry.update({
            "sentids": [s["sentid"] for s in sentences],
            "imgid": imgid,
            "sentences": sentences,
            "split": split,
        })
        images.append(entry)
    json_path.write_text(json.dumps({"images": images, "dataset": style}), encoding="utf-8")

    fx = KarpathyFixture(json_path, image_root, style, images, list(TINY_COLORS),
                         tuple(corrupt), tuple(missing))
    for i, color in enumerate(TINY_COLORS):
        if i in missing:
            continue
        path = fx.path_of(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        if i in corrupt:
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"this is not image data" * 4)
        else:
            pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
            pixels[...] = color
            Image.fromarray(pixels).save(path, format=image_format.upper())
    return fx


@pytest.fixture
def write_karpathy():
    """:func:`write_karpathy_dataset` itself, for tests that choose their own paths."""
    return write_karpathy_dataset


@pytest.fixture
def karpathy_factory(tmp_path):
    """``make(style=..., corrupt=..., missing=..., ...)`` -> :class:`KarpathyFixture` in tmp_path."""
    counter = iter(range(1_000_000))

    def make(**kw) -> KarpathyFixture:
        base = tmp_path / f"karpathy{next(counter)}"
        name = "dataset_coco.json" if kw.get("style") == "coco" else "dataset_flickr8k.json"
        return write_karpathy_dataset(base / name, base / "images", **kw)

    return make


@pytest.fixture
def tiny_karpathy(karpathy_factory) -> KarpathyFixture:
    """A clean Flickr-style dataset: 6 images (3 train, 1 val, 1 test, 1 restval), PNG 20x12."""
    return karpathy_factory()


@pytest.fixture
def tiny_data_root(tmp_path) -> Path:
    """A ``data_root`` holding ``flickr8k/dataset_flickr8k.json`` and ``flickr8k/images/``."""
    root = tmp_path / "data"
    write_karpathy_dataset(root / "flickr8k" / "dataset_flickr8k.json", root / "flickr8k" / "images")
    return root


# Under pytest-xdist each worker (and the notebook kernels and processes it starts) gets one
# thread: two workers with two threads each on two cores spin against each other (measured: the
# suite 3:16 -> 2:39). Set before any test module imports torch; an explicit value wins.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Scheduling for `make test` (pytest-xdist, --dist loadgroup --no-loadscope-reorder): the work
# units are xdist groups, sent to the workers in collection order. Each test file is one group
# (its module fixtures are built once), except the chapter notebooks, which test_notebooks.py
# splits in two halves of about a minute each; the longest units go first.
LONGEST_FIRST = ("notebooks-trained", "notebooks-alone", "test_bad_inputs.py",
                 "test_nbgrader_export.py", "test_notebooks.py", "test_distributed.py",
                 "test_evaluate.py")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def group(item: pytest.Item) -> str:
        mark = item.get_closest_marker("xdist_group")
        return mark.args[0] if mark and mark.args else item.path.name

    def rank(item: pytest.Item) -> int:
        name = group(item)
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.path.name))
        # --dist loadgroup reads an item's group from a "@group" suffix of its node id. xdist
        # 3.8 writes it into item._nodeid, which pytest 9 no longer reads (the id lives in
        # item._id): without this, every test was its own unit, and module fixtures were built
        # again on the other worker (test_evaluate's trained run: twice).
        if getattr(config.option, "loadgroup", False) and hasattr(item, "_id") and "@" not in item.nodeid:
            from _pytest.nodeid import coerce_node_id

            item._id = coerce_node_id(f"{item.nodeid}@{group(item)}")
    items.sort(key=rank)  # stable: the order inside each group is kept
