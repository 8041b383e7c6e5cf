"""Batched beam search vs one image at a time, at our paper-scale sizes (chapter 8).

Both searches run in this process on the same random decoder and the same annotation vectors:
L=196 locations, D=512, m=512, n=1024, attention MLP 512, K=10,000 words, 20 steps.

Equal work: ``<end>`` is suppressed (``suppress_ids=(END,)``, its log-probability is -inf), so no
hypothesis ever finishes. Every image then runs exactly ``max_len`` steps with k live beams in both
searches, whatever the random weights say; the two differ only in how they batch the work.

Prints images per second of each search and the speed-up; ends with ONE JSON line. Also the
ceiling of that speed-up on this machine: the per-image search's time over the time the batched
search's matrix products alone take (``k*_ratio_bound``). Where the per-image search's weights
stay in a large cache, that ceiling is low: batching saves memory traffic, not arithmetic.

    python benchmarks/bench_decode.py            # 32 images, k = 3 and 5, max_len 20
    python benchmarks/bench_decode.py --quick    # 8 images, max_len 8: a smoke run
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch

from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.decoding import beam_search, beam_search_single
from sat_core.device import pick_device, seed_everything

START, END = 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=32, help="images per search (default 32)")
    p.add_argument("--beam-sizes", type=int, nargs="+", default=[3, 5], help="default: 3 5")
    p.add_argument("--max-len", type=int, default=20, help="decode steps (default 20)")
    p.add_argument("--vocab", type=int, default=10_000, help="K (default 10000)")
    p.add_argument("--locations", type=int, default=196, help="L (default 196 = 14x14)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | ... (default auto)")
    p.add_argument("--quick", action="store_true", help="8 images, max_len 8, 2 repeats")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.max_len, args.repeats = 8, 8, 2
    return args


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call (the GPU queue drained before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def best_times(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Best time of each function over ``repeats`` rounds, after one warm-up round.

    The functions alternate within a round, so a busy (shared) machine slows all of them alike.
    """
    for fn in fns:
        fn()
    times = [[timed(fn, device) for fn in fns] for _ in range(repeats)]
    return [min(column) for column in zip(*times, strict=True)]


def matmul_floor(decoder: AttentionDecoder, rows: int, steps: int, repeats: int,
                 device: torch.device) -> float:
    """Seconds that ``steps`` decode steps on ``rows`` rows spend in the decoder's matrix
    products alone (T_y, T_hz, U_a, f_beta, L_h, L_z, L_o on (rows, .) inputs, each timed as one
    call): no batched search can take less, whatever its bookkeeping. The per-image search's time
    divided by this is the largest speed-up batching can reach on this machine."""
    cfg = decoder.cfg
    n, m, D = cfg.hidden_dim, cfg.embed_dim, cfg.feature_dim
    x = {name: torch.randn(rows, dim, device=device) for name, dim in
         (("m", m), ("n", n), ("nD", n + D), ("D", D))}
    layers = [(decoder.T_y, "m"), (decoder.T_hz, "nD"), (decoder.attention.U_a, "n"),
              (decoder.L_h, "n"), (decoder.L_z, "D"), (decoder.L_o, "m")]
    if decoder.gate is not None:
        layers.append((decoder.gate.f_beta, "n"))

    def products() -> None:
        for _ in range(steps):
            for layer, dim in layers:
                layer(x[dim])

    with torch.no_grad():
        return best_times([products], repeats, device)[0]


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    device = pick_device(args.device)
    seed_everything(0)
    cfg = DecoderConfig(vocab_size=args.vocab, feature_dim=512, embed_dim=512, hidden_dim=1024,
                        attn_dim=512, dropout=0.0)
    decoder = AttentionDecoder(cfg).to(device).eval()
    a = torch.randn(args.images, args.locations, cfg.feature_dim, device=device)
    print(f"device {device}, {torch.get_num_threads()} CPU threads; {args.images} images, "
          f"L={args.locations}, D=512, m=512, n=1024, K={args.vocab}, {args.max_len} steps, "
          "<end> suppressed (every hypothesis runs max_len steps)")

    figures: dict[str, float] = {}
    for k in args.beam_sizes:
        kw = dict(beam_size=k, max_len=args.max_len, start_id=START, end_id=END,
                  suppress_ids=(END,))
        results = {}

        def batched(kw=kw, results=results):
            results["batched"] = beam_search(decoder, a, **kw)

        def single(kw=kw, results=results):
            results["single"] = beam_search_single(decoder, a, **kw)

        t_batched, t_single = best_times([batched, single], args.repeats, device)
        same = sum(
            hb.tokens == hs.tokens
            for hb, hs in zip(results["batched"], results["single"], strict=True)
        )
        assert all(len(h.tokens) == args.max_len for h in results["batched"]), "length not fixed"
        ips_b, ips_s = args.images / t_batched, args.images / t_single
        print(f"k={k}: batched {ips_b:8.1f} images/s ({t_batched:.2f} s) | one at a time "
              f"{ips_s:8.1f} images/s ({t_single:.2f} s) | speed-up x{ips_b / ips_s:.1f} | "
              f"same caption for {same}/{args.images} images")
        figures[f"k{k}_images_per_s"] = round(ips_b, 2)
        figures[f"k{k}_single_images_per_s"] = round(ips_s, 2)
        figures[f"k{k}_ratio"] = round(ips_b / ips_s, 2)
        floor = matmul_floor(decoder, args.images * k, args.max_len, args.repeats, device)
        print(f"      the batched step's matrix products alone: {floor:.2f} s, so batching can "
              f"reach at most x{t_single / floor:.1f} here ({100 * floor / t_batched:.0f}% of "
              "the batched search is those products)")
        figures[f"k{k}_ratio_bound"] = round(t_single / floor, 2)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
