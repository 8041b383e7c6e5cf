"""Score a checkpoint: ``python -m sat_core.evaluate --checkpoint runs/shapes-soft/best.pt``.

The paper's evaluation (Sec. 5.2, Table 1), done the careful way:

1. rebuild the model from the checkpoint (its config says which encoder/decoder and dataset; the
   Shapes world is regenerated deterministically from its seed, only the split asked for);
2. decode each image of the split ONCE with the batched :func:`~sat_core.decoding.beam_search`;
3. score each caption against ALL the references of its image with the official COCO code
   (:func:`~sat_core.metrics.coco_scores`: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, after the PTB
   tokenizer);
4. print the scores beside the paper's Table 1 (:func:`~sat_core.metrics.format_table1`) and write
   a JSON report: scores, settings and every image's caption with its references;
5. in the Shapes world, where the truth is known, also judge each caption
   (:func:`~sat_core.accuracy.caption_accuracy`: is it true of its image? per word type: are its
   size / colour / shape words right?) and measure where attention looks while the references
   are teacher-forced (:func:`~sat_core.grounding.attention_grounding`: hit rate of the peak on
   the named object, vs a uniform baseline).

In a notebook: ``report = evaluate_checkpoint("runs/shapes-soft/best.pt", limit=50)``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from sat_core.accuracy import caption_accuracy
from sat_core.checkpoint import CheckpointError, load_checkpoint
from sat_core.config import TrainConfig, make_config
from sat_core.data.batching import collate_images
from sat_core.data.datasets import ImageDataset, load_splits
from sat_core.data.records import ImageLoadError, Split
from sat_core.data.shapes import ShapesConfig
from sat_core.decoding import decode
from sat_core.device import pick_device
from sat_core.errors import ArgumentParser, UserError, command
from sat_core.grounding import attention_grounding
from sat_core.metrics import METRICS, CocoScores, coco_scores, format_table1
from sat_core.model import Captioner
from sat_core.out_dir import check_writable_dir
from sat_core.text import Vocabulary

SPLITS = ("train", "val", "test")


def load_captioner(
    checkpoint: str | Path, device: str | torch.device = "auto"
) -> tuple[Captioner, Vocabulary, TrainConfig]:
    """The model, vocabulary and config stored in ``checkpoint`` (``weights_only=True``), in eval
    mode on ``device``. Every weight comes from the file: pretrained encoder weights are not
    downloaded again."""
    from sat_core.train import build_captioner  # the same constructor as training

    ckpt = load_checkpoint(checkpoint, map_location="cpu")
    cfg: TrainConfig = ckpt["config"]
    vocab: Vocabulary = ckpt["vocab"]
    model = build_captioner(make_config(cfg, encoder_weights="none", progress=False), vocab)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {checkpoint}: its weights do not fit the model its config describes "
            f"({str(e).splitlines()[0]}) — was it written by another version of sat_core? "
            "Use that version, or retrain"
        ) from None
    return model.to(pick_device(device)).eval(), vocab, cfg


def load_eval_split(cfg: TrainConfig, split: str = "test", data_root: str | None = None) -> Split:
    """Split ``split`` of the checkpoint's dataset. Shapes: regenerated from ``cfg.shapes_seed``
    (each split has its own seed, so the others are made with one image only)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if cfg.dataset == "shapes":
        sizes = {f"n_{name}": (getattr(cfg, f"n_{name}") if name == split else 1)
                 for name in SPLITS}
        splits = load_splits("shapes", image_size=cfg.image_size,
                             shapes=dict(sizes, seed=cfg.shapes_seed,
                                         naming_order=cfg.shapes_naming))
    else:
        splits = load_splits(cfg.dataset, data_root=data_root or cfg.data_root,
                             image_size=cfg.image_size, resize=cfg.resize or None)
    return splits[split]


@torch.no_grad()
def decode_split(
    model: Captioner,
    split: Split,
    vocab: Vocabulary,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    length_norm: float = 0.0,
    mode: str = "soft",
    limit: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Decode every image of ``split`` once (the first ``limit`` when > 0), batched beam search.

    Returns one dict per image: ``image_index``, ``image_id``, ``filename``, ``caption`` (str),
    ``tokens`` (words), ``log_prob``, ``score``, ``finished``, ``references`` (raw sentences).
    """
    data: Any = ImageDataset(split)
    if limit:
        data = Subset(data, range(min(limit, len(data))))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_images)
    device = next(model.parameters()).device
    model.eval()
    rows = []
    for x, _, index in tqdm(loader, desc=f"decoding {split.name}", unit="batch",
                            disable=not progress):
        x = x.to(device)
        a = model.encode(x) if x.dim() == 4 else x
        hyps = decode(model.decoder, a, vocab, beam_size=beam_size, max_len=max_len,
                      mode=mode, length_norm=length_norm)
        for i, h in zip(index.tolist(), hyps, strict=True):
            record = split.records[i]
            words = vocab.decode(h.tokens)
            rows.append({
                "image_index": i,
                "image_id": record.image_id,
                "filename": record.filename,
                "caption": " ".join(words),
                "tokens": words,
                "log_prob": h.log_prob,
                "score": h.score,
                "finished": h.finished,
                "references": list(record.raw) or [" ".join(c) for c in record.captions],
            })
    return rows


def _json_float(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def shapes_report(
    model: Captioner,
    split: Split,
    vocab: Vocabulary,
    rows: list[dict[str, Any]],
    image_size: int,
    *,
    mode: str = "soft",
    limit: int = 0,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, Any]:
    """The Shapes-only measures of a decoded split (``rows`` from :func:`decode_split`).

    Returns ``caption_accuracy`` (fraction of captions true of their image), ``word_accuracy``
    (``{"size", "colour", "shape"}``: pooled fraction of right attribute words) and ``grounding``
    (``{"all", "size", "colour", "shape"}``: attention-peak hit rates on the references
    teacher-forced in ``mode``, ``"uniform"``: the chance baseline). A rate with nothing to count
    is None. Each row gains ``caption_right`` and ``caption_reasons`` (why it is wrong).
    """
    records = [split.records[r["image_index"]] for r in rows]
    acc = caption_accuracy([r["tokens"] for r in rows], records, image_size,
                           ShapesConfig(image_size=image_size))
    for r, judgement in zip(rows, acc.judgements, strict=True):
        r["caption_right"] = judgement.right
        r["caption_reasons"] = list(judgement.reasons)
    ground = attention_grounding(model, split, vocab, mode=mode, limit=limit,
                                 batch_size=batch_size, progress=progress)
    grounding = {"all": _json_float(ground.hit_rate)}
    for kind in ("size", "colour", "shape"):
        grounding[kind] = _json_float(ground.by_type.get(kind, {}).get("hit_rate", math.nan))
    grounding["uniform"] = _json_float(ground.baseline)
    return {**acc.as_dict(), "grounding": grounding}


def format_shapes_report(report: dict[str, Any]) -> str:
    """The Shapes measures of a report as a few lines of text ("" when it has none)."""
    if "caption_accuracy" not in report:
        return ""

    def f(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.3f}"

    words, g = report["word_accuracy"], report["grounding"]
    return "\n".join([
        f"Shapes world: caption accuracy {f(report['caption_accuracy'])} (captions true of "
        "their image)",
        "  word accuracy:       " + ", ".join(f"{k} {f(words[k])}" for k in words),
        f"  attention grounding: all {f(g['all'])}, "
        + ", ".join(f"{k} {f(g[k])}" for k in ("size", "colour", "shape"))
        + f" (uniform baseline {f(g['uniform'])})",
    ])


def evaluate_checkpoint(
    checkpoint: str | Path,
    *,
    split: str = "test",
    beam_size: int = 3,
    max_len: int | None = None,
    length_norm: float = 0.0,
    mode: str | None = None,
    device: str | torch.device = "auto",
    limit: int = 0,
    batch_size: int = 32,
    data_root: str | None = None,
    metrics: tuple[str, ...] = METRICS,
    out: str | Path | None = None,
    progress: bool = True,
    shapes_measures: bool = True,
) -> dict[str, Any]:
    """Decode and score ``split`` with the COCO metrics; write the JSON report to ``out``.

    ``mode`` defaults to the checkpoint's decode mode (``"soft"``; ``"hard-expect"`` for hard
    attention). Returns the report: ``scores`` (metric -> corpus score; BLEU, METEOR, ROUGE-L in
    0..1, CIDEr-D in 0..10), ``skipped`` metrics, ``tokenizer``, ``settings``, ``table`` (text)
    and ``images`` (one entry per image, see :func:`decode_split`, plus its per-image scores).
    Shapes checkpoints (with ``shapes_measures``) add ``caption_accuracy``, ``word_accuracy`` and
    ``grounding`` (see :func:`shapes_report`); other datasets have no such keys.
    """
    check_report_path(out)  # before any decoding: a bad --out must not waste it
    model, vocab, cfg = load_captioner(checkpoint, device)
    data = load_eval_split(cfg, split, data_root)
    mode, max_len = mode or cfg.eval_mode, max_len or cfg.val_max_len
    rows = decode_split(model, data, vocab, beam_size=beam_size, max_len=max_len,
                        length_norm=length_norm, mode=mode, limit=limit, batch_size=batch_size,
                        progress=progress)
    scores = _score_rows(rows, metrics)
    name = f"ours ({cfg.attention}, beam {beam_size})"
    report = {
        "checkpoint": str(checkpoint),
        "dataset": cfg.dataset,
        "split": split,
        "num_images": len(rows),
        "scores": {k: float(v) for k, v in scores.items()},
        "skipped": dict(scores.skipped),
        "tokenizer": scores.tokenizer,
        "settings": {
            "beam_size": beam_size, "max_len": max_len, "length_norm": length_norm,
            "mode": mode, "limit": limit, "device": str(next(model.parameters()).device),
            "attention": cfg.attention, "encoder": cfg.encoder, "vocab_size": len(vocab),
        },
        "table": format_table1(scores, dataset=cfg.dataset, model_name=name),
    }
    if cfg.dataset == "shapes" and shapes_measures:
        report.update(shapes_report(model, data, vocab, rows, cfg.image_size, mode=mode,
                                    limit=limit, batch_size=batch_size, progress=progress))
    report["images"] = rows
    if out is not None:
        _write_json(Path(out), report)
    return report


def _score_rows(rows: list[dict[str, Any]], metrics: tuple[str, ...]) -> CocoScores:
    """The corpus scores of :func:`decode_split`'s rows; each row gets its own in ``"scores"``."""
    hypotheses = {r["image_index"]: r["caption"] for r in rows}
    references = {r["image_index"]: r["references"] for r in rows}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="coco_scores: CIDEr-D takes its IDF")
        scores = coco_scores(hypotheses, references, metrics=metrics)
    for r in rows:
        r["scores"] = {m: each[r["image_index"]] for m, each in scores.per_image.items()}
    return scores


def check_report_path(path: str | Path | None) -> None:
    """Raise :class:`~sat_core.errors.UserError` unless a report can be written at ``path``
    (None: no report): not an existing folder, in a folder that is (or can be) writable."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--out {path} is a folder — give a file name such as "
                        f"{path / 'report.json'}")
    check_writable_dir(path.parent, flag="--out's folder")


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    """The command's options; usage errors are one ``error:`` line (:mod:`sat_core.errors`)."""
    p = ArgumentParser(
        prog="python -m sat_core.evaluate",
        description="Decode a split once per image with beam search and score it with the COCO "
        "metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D); print Table 1, write a JSON report.",
    )
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a checkpoint of sat_core.train (e.g. runs/shapes-soft/best.pt)")
    p.add_argument("--split", default="test", choices=SPLITS, help="default: test")
    p.add_argument("--beam-size", type=int, default=3, help="beam width k (default 3)")
    p.add_argument("--max-len", type=int, default=None,
                   help="longest caption in words (default: the checkpoint's val_max_len)")
    p.add_argument("--length-norm", type=float, default=0.0,
                   help="rank beams by log p / length^x (default 0: plain log p)")
    p.add_argument("--mode", default=None, choices=("soft", "hard-expect", "hard-argmax"),
                   help="attention at decode time (default: the checkpoint's)")
    p.add_argument("--out", default=None, metavar="report.json", help="write the JSON report here")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | ... (default auto)")
    p.add_argument("--limit", type=int, default=0, metavar="N",
                   help="only the first N images (default 0: all)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--data-root", default=None,
                   help="dataset folder (default: the one in the checkpoint's config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("beam_size", "batch_size") + (("max_len",) if args.max_len is not None else ()):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.limit < 0:
        p.error(f"--limit must be >= 0 (0 = all images), got {args.limit}")
    if not (math.isfinite(args.length_norm) and args.length_norm >= 0):
        p.error(f"--length-norm must be a finite number >= 0, got {args.length_norm}")
    return args


@command(CheckpointError, ImageLoadError, ValueError, OSError)
def main(argv: list[str] | None = None) -> int:
    """``python -m sat_core.evaluate``; a bad option, checkpoint, dataset or ``--out`` is one
    ``error:`` line and exit status 2, before any decoding."""
    args = _parse_args(argv)
    report = evaluate_checkpoint(
        args.checkpoint, split=args.split, beam_size=args.beam_size, max_len=args.max_len,
        length_norm=args.length_norm, mode=args.mode, device=args.device, limit=args.limit,
        batch_size=args.batch_size, data_root=args.data_root, out=args.out,
        progress=not args.no_progress,
    )
    print(report["table"])
    if "caption_accuracy" in report:
        print(format_shapes_report(report))
    print(f"{report['num_images']} {report['split']} images, each decoded once "
          f"(beam {args.beam_size}); PTB tokenizer: {report['tokenizer']}")
    for row in report["images"][:5]:
        print(f"  #{row['image_index']}: {row['caption']!r}  (ref: {row['references'][0]!r})")
    if args.out:
        print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
