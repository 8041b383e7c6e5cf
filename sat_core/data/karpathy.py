"""The Karpathy splits of Flickr8k, Flickr30k and MS COCO (Karpathy & Fei-Fei, 2015).

Xu et al. (2015, Sec. 5.1) use these fixed splits: Flickr8k and Flickr30k with 1,000 validation
and 1,000 test images, COCO with 5,000 + 5,000. Each ships as one JSON file::

    {"dataset": "flickr8k",
     "images": [{"filename": "1000268201_693b08cb0e.jpg",
                 "filepath": "val2014",             # COCO only
                 "split": "train" | "val" | "test" | "restval",
                 "imgid": 0, "cocoid": 391895,      # cocoid: COCO only
                 "sentids": [0, 1, 2, 3, 4],
                 "sentences": [{"tokens": ["a", "child", ...], "raw": "A child ...",
                                "imgid": 0, "sentid": 0}, ...]},
                ...]}

The image of an entry is ``image_root / filepath / filename``. COCO's ``restval`` images (the
30,504 validation images outside the 5k/5k split) are folded into ``train`` by default, as in
most published results.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from sat_core.data.records import ImageLoadError, ImageRecord, Split, normalize_image
from sat_core.text import tokenize

SPLITS = ("train", "val", "test", "restval")


class KarpathyFormatError(ValueError):
    """The JSON file is not in the Karpathy-split format. The message names the file and key,
    then `` — `` what to do (a generic advice where the message gives none)."""

    ADVICE = "fix the file, or download it again: python -m sat_core.data.download NAME"

    def __init__(self, message: str) -> None:
        super().__init__(message if " — " in message else f"{message} — {self.ADVICE}")


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def resize_image(img: Image.Image, image_size: int, resize: int | None = None) -> Image.Image:
    """Bring a PIL image to ``image_size x image_size``.

    * ``resize=None``: resize straight to the square (aspect ratio not kept; nothing cut off).
    * ``resize=R``: resize so the *shorter* side is ``R`` (aspect kept), then take the central
      ``image_size x image_size`` crop. ``image_size=224, resize=256`` is the standard VGG /
      ResNet preprocessing; Xu et al. resize the shorter side to 256 and crop the centre 224.
    """
    if resize is None:
        return img.resize((image_size, image_size), Image.BICUBIC)
    if resize < image_size:
        raise ValueError(
            f"resize ({resize}) must be >= image_size ({image_size}) for a center crop"
        )
    w, h = img.size
    scale = resize / min(w, h)
    new_w, new_h = max(resize, round(w * scale)), max(resize, round(h * scale))
    img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - image_size) // 2, (new_h - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))


def _scale_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Grey levels of a 16-bit, 32-bit integer or float image -> uint8 0..255.

    * ``I;16*`` (16-bit): divided by 257, so 65535 -> 255 and 257 * k -> k;
    * ``I`` (32-bit integer): negatives -> 0; divided by 257 when every value fits 16 bits (how
      16-bit files are often stored), else scaled so that the maximum is 255;
    * ``F`` (32-bit float): values in [0, 1] times 255; otherwise negatives -> 0 and scaled so that
      the maximum is 255. NaN and infinities -> 0.
    """
    x = pixels.astype(np.float64)
    if mode == "F":
        x = np.where(np.isfinite(x), x, 0.0)
        if x.size and (x.min() < 0 or x.max() > 1):
            x = np.clip(x, 0, None)
            x = x * (255.0 / x.max()) if x.max() > 0 else x
        else:
            x = x * 255.0
    elif mode == "I":
        x = np.clip(x, 0, None)
        top = x.max() if x.size else 0.0
        x = x / 257.0 if top <= 65535 else x * (255.0 / top)
    else:  # I;16, I;16B, I;16L, I;16N
        x = x / 257.0
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> upright 8-bit RGB.

    The EXIF orientation of camera photos is applied (:func:`PIL.ImageOps.exif_transpose`), and
    16-bit, 32-bit integer and float grey images are scaled to 0..255 (:func:`_scale_to_uint8`)
    rather than clipped: PIL's own ``convert("RGB")`` makes a 16-bit PNG all white and a float
    TIFF in [0, 1] all black.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = Image.fromarray(_scale_to_uint8(np.asarray(img), img.mode))
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """Read an image file of any bit depth and mode as upright 8-bit RGB (:func:`to_rgb`).

    A missing, unreadable or unconvertible file raises :class:`ImageLoadError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(str(path), "file not found", "check the path (for a dataset: its "
                             "image folder and the file names in its Karpathy JSON)")
    try:
        with Image.open(path) as im:
            return to_rgb(im)
    except Exception as e:  # PIL raises several types for corrupt data
        raise ImageLoadError(str(path), f"corrupt or not an image ({type(e).__name__}: {e})",
                             "replace it with a good copy (or download the dataset again)") from e


def load_image_file(
    path: str | Path, image_size: int = 224, resize: int | None = None
) -> torch.Tensor:
    """Read an image file (:func:`read_image`: any bit depth, EXIF orientation applied) ->
    :func:`resize_image` -> normalised float ``(3, S, S)``.

    A missing or unreadable file raises :class:`ImageLoadError` naming it.
    """
    img = resize_image(read_image(path), image_size, resize)
    return normalize_image(np.array(img, dtype=np.uint8))  # a writable copy


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image (``None`` if it looks fine). Cheap: ``verify()``."""
    if not path.is_file():
        return "missing"
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as e:
        return f"corrupt ({type(e).__name__})"
    return None


def make_image_loader(
    image_root: str | Path, image_size: int = 224, resize: int | None = None
) -> Callable[[ImageRecord], torch.Tensor]:
    """The ``Split.load_image`` of a Karpathy split: ``record -> (3, S, S)`` normalised tensor."""
    root = Path(image_root)

    def load(record: ImageRecord) -> torch.Tensor:
        return load_image_file(root / record.filename, image_size, resize)

    return load


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------
def _require(obj: Any, key: str, where: str, path: Path) -> Any:
    if not isinstance(obj, dict):
        raise KarpathyFormatError(
            f"{path}: {where} should be a JSON object, got {type(obj).__name__}"
        )
    if key not in obj:
        raise KarpathyFormatError(
            f"{path}: {where} has no key {key!r} (keys: {sorted(obj)[:8]}); "
            "is this a Karpathy-split dataset_*.json file?"
        )
    return obj[key]


def _read_json(json_path: Path) -> dict:
    if not json_path.is_file():
        raise FileNotFoundError(
            f"Karpathy split file {json_path} does not exist; download it with "
            "`python -m sat_core.data.download {flickr8k,flickr30k,coco} --root data`"
        )
    try:
        with open(json_path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise KarpathyFormatError(f"{json_path} is not valid JSON ({e}) — re-download it") from None
    except UnicodeDecodeError as e:
        raise KarpathyFormatError(
            f"{json_path} is not UTF-8 text ({e.reason} at byte {e.start}; Latin-1?) — save it "
            "as UTF-8 (e.g. iconv -f latin1 -t utf-8) or re-download it") from None


def _parse_entry(entry: Any, i: int, json_path: Path) -> tuple[str, ImageRecord]:
    where = f"images[{i}]"
    split = _require(entry, "split", where, json_path)
    if split not in SPLITS:
        raise KarpathyFormatError(
            f"{json_path}: {where}.split is {split!r}, expected one of {SPLITS}"
        )
    filename = _require(entry, "filename", where, json_path)
    filepath = entry.get("filepath")
    rel = f"{filepath}/{filename}" if filepath else str(filename)
    sentences = _require(entry, "sentences", where, json_path)
    if not isinstance(sentences, list):
        raise KarpathyFormatError(f"{json_path}: {where}.sentences should be a list")
    captions, raw = [], []
    for j, s in enumerate(sentences):
        swhere = f"{where}.sentences[{j}]"
        if isinstance(s, dict) and "tokens" not in s and "raw" in s:
            tokens = tokenize(s["raw"])
        else:
            tokens = _require(s, "tokens", swhere, json_path)
        if not isinstance(tokens, list):
            raise KarpathyFormatError(f"{json_path}: {swhere}.tokens should be a list of words")
        captions.append([str(t) for t in tokens])
        raw.append(str(s.get("raw", " ".join(captions[-1]))))
    extra: dict[str, Any] = {}
    for key in ("cocoid", "sentids"):
        if key in entry:
            extra[key] = entry[key]
    record = ImageRecord(
        image_id=int(entry.get("imgid", i)),
        filename=rel,
        split=split,
        captions=captions,
        raw=raw,
        extra=extra,
    )
    return split, record


def _drop_bad_images(records: list[ImageRecord], root: Path, json_path: Path) -> list[ImageRecord]:
    bad: list[tuple[str, str]] = []
    good = []
    for r in tqdm(records, desc=f"checking images of {json_path.name}", unit="img", leave=False):
        problem = image_problem(root / r.filename)
        if problem is None:
            good.append(r)
        else:
            bad.append((r.filename, problem))
    if bad:
        first = ", ".join(f"{f} ({why})" for f, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        warnings.warn(
            f"skipped {len(bad)} of {len(records)} images listed in {json_path} that are missing "
            f"or corrupt under {root}: {first}{more}",
            stacklevel=3,
        )
    return good


def load_karpathy(
    json_path: str | Path,
    image_root: str | Path,
    *,
    restval: str | None = "train",
    image_size: int = 224,
    resize: int | None = None,
    on_error: str = "raise",
) -> dict[str, Split]:
    """Read a Karpathy-split JSON file into ``{"train", "val", "test"[, "restval"]} -> Split``.

    * ``restval="train"`` folds COCO's restval images into train; ``None`` drops them;
      ``"restval"`` keeps them as a split of their own.
    * Images are ``image_root / filepath / filename`` and load lazily through ``Split.load_image``
      as normalised ``(3, image_size, image_size)`` tensors (see :func:`resize_image` for
      ``resize``, e.g. ``image_size=224, resize=256``).
    * ``on_error="raise"``: a missing or corrupt image raises :class:`ImageLoadError` when it is
      loaded. ``on_error="skip"``: every image is checked up front (``PIL.Image.verify``) and the
      bad ones are dropped with one warning that counts them.

    ``ImageRecord.image_id`` is the ``imgid`` of the JSON; ``extra`` keeps ``cocoid`` (COCO).
    """
    if restval not in ("train", "restval", None):
        raise ValueError(f"restval must be 'train', 'restval' or None, got {restval!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    json_path, image_root = Path(json_path), Path(image_root)
    data = _read_json(json_path)
    images = _require(data, "images", "the top-level object", json_path)
    if not isinstance(images, list):
        raise KarpathyFormatError(f"{json_path}: 'images' should be a list")

    by_split: dict[str, list[ImageRecord]] = {"train": [], "val": [], "test": []}
    if restval == "restval":
        by_split["restval"] = []
    for i, entry in enumerate(images):
        split, record = _parse_entry(entry, i, json_path)
        if split == "restval":
            if restval is None:
                continue
            split = restval
        record.split = split
        by_split[split].append(record)

    if on_error == "skip":  # one scan (and one warning) over every split
        kept = {id(r) for r in _drop_bad_images(
            [r for rs in by_split.values() for r in rs], image_root, json_path)}
        by_split = {name: [r for r in rs if id(r) in kept] for name, rs in by_split.items()}

    loader = make_image_loader(image_root, image_size, resize)
    return {name: Split(name=name, records=rs, load_image=loader) for name, rs in by_split.items()}
