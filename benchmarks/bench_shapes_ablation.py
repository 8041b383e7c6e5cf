"""Which ingredient makes attention land? Train the Shapes recipe with one knob changed at a time.

Each variant is ``shapes-soft`` or ``shapes-hard`` with ONE field set back to what the book had
before (or to the paper's value), trained from scratch in its own folder and measured as
``python -m sat_core.evaluate`` measures by default (:func:`bench_shapes_quality.run`):

==========================  =================================================================
variant                     what changes
==========================  =================================================================
soft: the recipe            ``shapes-soft`` as it is
soft: penalty lambda = 1    the doubly stochastic penalty of Eq. (14) at the paper's weight
soft: random encoder        the small CNN frozen at its random initialisation (no pretraining)
soft: 17 px receptive       no context block: each cell sees 17 px (an object is up to 31 px)
soft: any naming order      captions name a random object first (the old Shapes captions)
soft: coordinates [-1, 1]   the coordinate channels span [-1, 1], not [-8, 8] (scale 1)
hard: the recipe            ``shapes-hard`` as it is (reward-to-go, lambda_r 0.1, 75 % expected)
hard: caption reward        every s_t scored with the whole log p(y|s,a) (Eq. 12 as written)
hard: paper mixing 0.5      the expectation for half of the captions (Sec. 4.1)
hard: paper lambda_r = 1    the REINFORCE term at the paper's weight (the authors' code: 0.1)
hard: all three as paper    the three changes above undone together (Eq. 12 as in Sec. 4.1)
==========================  =================================================================

Prints a table; ``--out FILE`` writes the figures as JSON (chapter 6 renders
``book/data/shapes_ablation.json``, written by this script). Ends with one JSON line.
``--jobs 2`` trains two variants at a time, with one thread each (their ``train_s`` then measure
a shared machine, not the recipe).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shapes_quality import QUICK, run  # noqa: E402

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "soft: the recipe": ("shapes-soft", {}),
    "soft: penalty lambda = 1": ("shapes-soft", {"alpha_c": 1.0}),
    "soft: random encoder": ("shapes-soft", {"encoder_weights": "none"}),
    "soft: 17 px receptive field": ("shapes-soft", {"encoder_context": 0}),
    "soft: any naming order": ("shapes-soft", {"shapes_naming": "any"}),
    "soft: coordinates in [-1, 1]": ("shapes-soft", {"encoder_coord_scale": 1.0}),
    "hard: the recipe": ("shapes-hard", {}),
    "hard: caption reward (Eq. 12)": ("shapes-hard", {"hard_reward": "caption"}),
    "hard: paper mixing 0.5": ("shapes-hard", {"hard_mix": 0.5}),
    "hard: paper lambda_r = 1": ("shapes-hard", {"lambda_r": 1.0}),
    "hard: all three as the paper": ("shapes-hard", {"hard_reward": "caption", "hard_mix": 0.5,
                                                     "lambda_r": 1.0}),
}


def _one(args: tuple[str, str, dict[str, Any], str, bool]) -> tuple[str, dict[str, Any]]:
    label, name, overrides, root, quick = args
    folder = Path(root) / label.replace(":", "").replace(" ", "-").replace("=", "").replace(
        ".", "").replace("(", "").replace(")", "")
    return label, run(name, folder, dict(QUICK, **overrides) if quick else overrides, quick)


def table(rows: dict[str, dict[str, Any]]) -> str:
    """The figures as a text table (the chapter renders the same numbers as HTML)."""
    head = (f"{'variant':32s} {'caption acc':>11s} {'grounding':>9s} {'size':>6s} "
            f"{'colour':>6s} {'shape':>6s} {'BLEU-4':>6s} {'train s':>7s}")
    lines = [head, "-" * len(head)]
    for label, f in rows.items():
        g = f["grounding"]
        lines.append(f"{label:32s} {f['caption_accuracy']:11.3f} {g['all']:9.3f} "
                     f"{g['size']:6.3f} {g['colour']:6.3f} {g['shape']:6.3f} "
                     f"{f['bleu4'] or float('nan'):6.3f} {f['train_s']:7.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny world, one epoch (smoke test)")
    p.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                   help=f"run only these variants (default all: {'; '.join(VARIANTS)})")
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (default 1)")
    p.add_argument("--out", default="", help="also write the figures to this JSON file")
    p.add_argument("--out-dir", default="", help="keep the runs here (default: a temp folder)")
    args = p.parse_args(argv)
    chosen = args.only or list(VARIANTS)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if args.jobs < 1:
        raise SystemExit(f"error: --jobs must be >= 1, got {args.jobs}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sat-ablation-") as tmp:
        root = args.out_dir or tmp
        # two variants at once share the cores: one thread each (a runtime setting only)
        threads = {"num_threads": 1} if args.jobs > 1 else {}
        work = [(v, VARIANTS[v][0], dict(VARIANTS[v][1], **threads), root, args.quick)
                for v in chosen]
        if args.jobs == 1:
            done = dict(map(_one, work))
        else:
            with ProcessPoolExecutor(max_workers=args.jobs) as pool:
                done = dict(pool.map(_one, work))
    rows = {v: done[v] for v in chosen}
    print(table(rows))
    result = {"variants": {v: dict(preset=VARIANTS[v][0], overrides=VARIANTS[v][1], **f)
                           for v, f in rows.items()},
              "quick": args.quick, "jobs": args.jobs,
              "wall_s": round(time.perf_counter() - t0, 1)}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"figures written to {args.out}")
    print(json.dumps({v: {"caption_accuracy": f["caption_accuracy"],
                          "grounding": f["grounding"]["all"]} for v, f in rows.items()}))


if __name__ == "__main__":
    main()
