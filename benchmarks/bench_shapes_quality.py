"""Do the Shapes presets learn what the paper found? Train both from scratch, then measure.

For each of ``shapes-soft`` and ``shapes-hard``: train from nothing in a fresh folder (the small
CNN's region pretraining, the feature cache and the decoder: all of it counts in ``train_s``), then
decode the 200 test images as ``python -m sat_core.evaluate`` does by default and report

* caption accuracy: the fraction of images whose caption names exactly their objects with every
  relation true (:mod:`sat_core.accuracy`), and per-word accuracy of size, colour, shape words;
* grounding: the fraction of object words of the reference captions whose attention peak lies on
  the object they name (:mod:`sat_core.grounding`), against the uniform-attention baseline;
* test BLEU-4 (pycocoevalcap when Java is present, else our own BLEU).

Ends with one JSON line. ``--quick`` (the smoke test): a tiny world and one epoch, figures
meaningless. Extra ``--set FIELD=VALUE`` pairs override both presets (for ablations).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from sat_core.config import preset
from sat_core.evaluate import evaluate_checkpoint
from sat_core.train import train

# --quick: a tiny world and one epoch (smoke tests; the figures mean nothing)
QUICK: dict[str, Any] = dict(n_train=40, n_val=8, n_test=8, epochs=1, hidden_dim=32)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["alpha_c=1", "epochs=4"]`` -> typed overrides (types from the preset's fields)."""
    base = preset("shapes-soft").to_dict()
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in base:
            raise SystemExit(f"error: --set {pair}: unknown field {name!r}")
        kind = type(base[name])
        out[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def run(name: str, root: Path, overrides: dict[str, Any], quick: bool) -> dict[str, Any]:
    out_dir = root / name
    cfg = preset(name, out_dir=str(out_dir), features_dir=str(out_dir / "features"),
                 progress=False, test_metrics="none", **overrides)
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    report = evaluate_checkpoint(result.best_path, split="test", device="cpu", progress=False,
                                 metrics=("BLEU",) if quick else ("BLEU", "METEOR", "CIDEr"))
    g = report["grounding"]
    print(f"{name}: trained in {train_s:.0f} s; caption accuracy {report['caption_accuracy']:.3f}"
          f", words {json.dumps(report['word_accuracy'])}; grounding {g['all']:.3f} "
          f"(size {g['size']:.3f}, colour {g['colour']:.3f}, shape {g['shape']:.3f}; uniform "
          f"{g['uniform']:.3f}); BLEU-4 {report['scores'].get('Bleu_4', float('nan')):.3f}",
          flush=True)
    return {"train_s": round(train_s, 1), "caption_accuracy": report["caption_accuracy"],
            "word_accuracy": report["word_accuracy"], "grounding": g,
            "bleu4": report["scores"].get("Bleu_4")}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny world, one epoch (smoke test)")
    p.add_argument("--presets", nargs="+", default=["shapes-soft", "shapes-hard"],
                   choices=["shapes-soft", "shapes-hard"], help="which presets (default both)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override a TrainConfig field of every preset (ablations)")
    p.add_argument("--out-dir", default="", help="keep the runs here (default: a temp folder)")
    args = p.parse_args(argv)
    overrides = parse_sets(args.set)
    if args.quick:
        overrides = dict(QUICK, **overrides)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; overrides {overrides}")
    with tempfile.TemporaryDirectory(prefix="sat-quality-") as tmp:
        root = Path(args.out_dir) if args.out_dir else Path(tmp)
        figures = {name: run(name, root, overrides, args.quick) for name in args.presets}
    line: dict[str, Any] = {"overrides": overrides}
    for name, f in figures.items():
        kind = name.split("-")[1]
        line.update({f"{kind}_caption_accuracy": f["caption_accuracy"],
                     f"{kind}_grounding": f["grounding"]["all"],
                     f"{kind}_grounding_by_type": {k: f["grounding"][k]
                                                   for k in ("size", "colour", "shape")},
                     f"{kind}_word_accuracy": f["word_accuracy"],
                     f"{kind}_bleu4": f["bleu4"], f"{kind}_train_s": f["train_s"]})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
