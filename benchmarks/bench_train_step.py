"""Time one full training step (forward, backward, Adam) of the attention decoder.

At our paper-scale sizes by default (32 captions of 20 words, L=196 locations of
D=512 features, m=512, n=1024, attention MLP 512, K=10,000 words), from cached features (no CNN).
In the same process it times the textbook decoder of ``sat_core.naive`` on identical math and
prints: captions/s for both and their ratio, peak memory, the step's FLOPs (FlopCounterMode),
the achieved GFLOP/s against this machine's measured float32 matmul rate, and a short profiler
table. The ratio splits into two factors: how many fewer FLOPs sat_core's step does
(``flop_ratio``, fixed by the sizes) times how fast it runs them compared with the naive
decoder (``efficiency_ratio``, which depends on the machine). The last line is ONE JSON object
with the figures.

    python benchmarks/bench_train_step.py            # paper-scale sizes
    python benchmarks/bench_train_step.py --quick    # small sizes, a few seconds
    python benchmarks/bench_train_step.py --device cuda --amp bf16 --compile   # as train's flags
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from sat_core import fast
from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.device import pick_device, seed_everything
from sat_core.losses import doubly_stochastic_penalty, masked_nll
from sat_core.naive import NaiveDecoder
from sat_core.train import autocast

PAPER = dict(batch=32, words=20, locations=196, feature_dim=512, embed_dim=512, hidden_dim=1024,
             attn_dim=512, vocab=10_000)
QUICK = dict(batch=8, words=8, locations=49, feature_dim=128, embed_dim=128, hidden_dim=256,
             attn_dim=128, vocab=1000)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ... (default auto)")
    p.add_argument("--quick", action="store_true", help="small sizes and few steps (smoke run)")
    for name, value in PAPER.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"default {value} ({QUICK[name]} with --quick)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per model (default 8)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--foreach-adam", action="store_true",
                   help="torch.optim.Adam's default foreach update instead of fused=True")
    p.add_argument("--alpha-c", type=float, default=1.0, help="doubly stochastic weight")
    p.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none",
                   help="mixed precision as train --amp (fp16: CUDA, with a GradScaler)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile sat_core's decoder step as train --compile does "
                        "(sat_core.fast.compile_cell); the naive decoder stays eager")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory measurements (each runs in a process of its own)")
    p.add_argument("--no-naive", action="store_true", help="skip the naive decoder")
    p.add_argument("--profile-rows", type=int, default=12, help="rows of the profiler table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-of", choices=["sat_core", "naive"], default=None,
                   help=argparse.SUPPRESS)  # internal: one model's peak memory, in a child process
    args = p.parse_args()
    if args.amp == "fp16" and not args.device.startswith(("cuda", "auto")):
        p.error("--amp fp16 needs a CUDA device; use --amp bf16 or --amp none")
    sizes = QUICK if args.quick else PAPER
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.steps is None:
        args.steps = 3 if args.quick else 8
    return args


# ------------------------------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _proc_status_mb(field: str) -> float | None:
    """A memory figure of /proc/self/status (Linux), e.g. "VmHWM" (peak) or "VmRSS", in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mb("VmHWM")
    if peak is None:  # KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak


def current_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return _proc_status_mb("VmRSS") or 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------- steps
def make_step(
    model: torch.nn.Module, naive: bool, batch: dict, alpha_c: float, fused: bool = True,
    amp: str = "none", compiled: bool = False,
) -> Callable:
    """A closure running one training step: forward, loss, backward, Adam (fused by default).

    ``amp`` and ``compiled`` do what train's ``--amp`` and ``--compile`` do: the forward pass
    and loss under autocast (fp16 with a GradScaler), sat_core's decoder step under
    torch.compile (:func:`sat_core.fast.compile_cell`).
    """
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=fused)
    device = batch["a"].device
    if compiled and not naive:
        fast.compile_cell(model)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def loss_fn() -> torch.Tensor:
        a, y_in, targets, steps = batch["a"], batch["y_in"], batch["targets"], batch["steps"]
        with autocast(amp, device):
            if naive:
                logits, alpha = model(a, y_in, steps)
            else:
                out = model(a, y_in, steps)
                logits, alpha = out.logits, out.alpha
            return masked_nll(logits, targets, steps) + doubly_stochastic_penalty(alpha, steps,
                                                                                   alpha_c)

    def step() -> float:
        loss = loss_fn()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step.loss_fn = loss_fn  # type: ignore[attr-defined]
    return step


def warm_up(step: Callable, device: torch.device, warmup: int) -> float:
    """Run ``warmup`` untimed steps from a reset memory peak; return that peak (MiB)."""
    reset_peak_memory(device)
    for _ in range(warmup):
        step()
    sync(device)
    return peak_memory_mb(device)


def time_interleaved(
    steps: dict[str, Callable], device: torch.device, n: int
) -> dict[str, list[float]]:
    """``n`` timed steps per model (seconds), the models taking turns.

    On a shared machine the load changes from second to second; alternating the models exposes
    them to the same conditions. The best time of each model is its least disturbed step; the
    ratio of the two models' times within each round is a second, independent view of the same
    comparison.
    """
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in tqdm(range(n), desc="timing", leave=False):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def count_flops(step: Callable) -> int:
    """FLOPs of forward + backward (the optimizer's elementwise update is not counted)."""
    with FlopCounterMode(display=False) as counter:
        step.loss_fn().backward()  # type: ignore[attr-defined]
    return counter.get_total_flops()


def matmul_gflops(device: torch.device, n: int) -> float:
    x = torch.randn(n, n, device=device)
    y = torch.randn(n, n, device=device)
    x @ y
    sync(device)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        x @ y
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def profile_table(step: Callable, device: torch.device, rows: int) -> str:
    acts = [torch.profiler.ProfilerActivity.CPU]
    sort = "self_cpu_time_total"
    if device.type == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
        sort = "self_device_time_total"
    with torch.profiler.profile(activities=acts) as prof:
        step()
        sync(device)
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


# ------------------------------------------------------------------------------------- main
def measure_memory(name: str, cfg: DecoderConfig, batch: dict, args: argparse.Namespace,
                   device: torch.device) -> None:
    """(Child process) warm up one model alone; print its peak memory above the process's
    resting state (libraries, the batch) as one JSON line: weights, activations, gradients and
    the optimizer's state."""
    sync(device)
    resting = current_memory_mb(device)
    model: torch.nn.Module = AttentionDecoder(cfg).to(device).train()
    if name == "naive":
        model = NaiveDecoder.from_decoder(model).train()
    step = make_step(model, name == "naive", batch, args.alpha_c, not args.foreach_adam,
                     args.amp, args.compile)
    print(json.dumps({"peak_mb": warm_up(step, device, max(args.warmup, 1)) - resting}))


def peak_in_child(name: str) -> float:
    """Peak memory of one model's training steps, measured in a process of its own: in this one,
    the other model's weights, gradients and Adam state (and malloc's reuse of its freed memory)
    would blur the figure."""
    cmd = [sys.executable, __file__, *sys.argv[1:], "--memory-of", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["peak_mb"])


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    seed_everything(args.seed)
    B, T = args.batch, args.words
    cfg = DecoderConfig(vocab_size=args.vocab, feature_dim=args.feature_dim,
                        embed_dim=args.embed_dim, hidden_dim=args.hidden_dim,
                        attn_dim=args.attn_dim, dropout=0.5)
    g = torch.Generator().manual_seed(args.seed)
    captions = torch.randint(4, args.vocab, (B, T + 1), generator=g)
    batch = dict(a=torch.randn(B, args.locations, args.feature_dim, generator=g).to(device),
                 y_in=captions[:, :-1].to(device), targets=captions[:, 1:].to(device),
                 steps=torch.full((B,), T, device=device))
    if args.memory_of:
        measure_memory(args.memory_of, cfg, batch, args, device)
        return
    print(f"device {device} ({torch.get_num_threads()} threads); B={B} captions of T={T} words, "
          f"L={args.locations}, D={args.feature_dim}, m={args.embed_dim}, n={args.hidden_dim}, "
          f"attn={args.attn_dim}, K={args.vocab}")

    mm_size = 4096 if device.type == "cuda" else 2048
    if args.quick:  # a smoke run: the rate of a small matmul (not the machine's best)
        mm_size = 512
    mm = matmul_gflops(device, mm_size)

    results = {}
    models = {"sat_core": AttentionDecoder(cfg).to(device).train()}
    if not args.no_naive:
        models["naive"] = NaiveDecoder.from_decoder(models["sat_core"]).train()
    steps = {name: make_step(model, name == "naive", batch, args.alpha_c, not args.foreach_adam,
                             args.amp, args.compile)
             for name, model in models.items()}
    for step in steps.values():
        warm_up(step, device, max(args.warmup, 1))
    peaks = {name: None if args.no_memory else peak_in_child(name) for name in steps}
    times = time_interleaved(steps, device, args.steps)
    mm = max(mm, matmul_gflops(device, mm_size))  # the less disturbed of two measurements
    for name, model in models.items():
        flops = count_flops(steps[name])
        model.zero_grad(set_to_none=True)
        s = min(times[name])
        results[name] = dict(step_s=s, captions_per_s=B / s, peak_mb=peaks[name],
                             gflop=flops / 1e9, gflops=flops / s / 1e9)
    print(f"float32 matmul rate ({mm_size}^3, best of two measurements): {mm:.1f} GFLOP/s")
    for name, r in results.items():
        print(f"{name:>8}: {r['step_s']:.3f} s/step, {r['captions_per_s']:.1f} captions/s, "
              f"{r['gflop']:.1f} GFLOP/step -> {r['gflops']:.1f} GFLOP/s "
              f"({100 * r['gflops'] / mm:.0f}% of matmul), peak memory "
              + ("not measured" if r["peak_mb"] is None else f"{r['peak_mb']:.0f} MiB"))

    print("\nwhere the time goes (sat_core, one step):")
    print(profile_table(steps["sat_core"], device, args.profile_rows))

    sat = results["sat_core"]
    summary = dict(
        device=str(device), adam="foreach" if args.foreach_adam else "fused", amp=args.amp,
        compile=args.compile, batch=B, words=T,
        locations=args.locations,
        captions_per_s=round(sat["captions_per_s"], 2), step_s=round(sat["step_s"], 4),
        gflop_per_step=round(sat["gflop"], 2), achieved_gflops=round(sat["gflops"], 1),
        matmul_gflops=round(mm, 1), fraction_of_matmul=round(sat["gflops"] / mm, 3),
        peak_memory_mb=_round(sat["peak_mb"], 1),
    )
    if "naive" in results:
        nv = results["naive"]
        summary.update(
            naive_captions_per_s=round(nv["captions_per_s"], 2),
            naive_step_s=round(nv["step_s"], 4),
            naive_gflop_per_step=round(nv["gflop"], 2),
            naive_peak_memory_mb=_round(nv["peak_mb"], 1),
            ratio_vs_naive=round(sat["captions_per_s"] / nv["captions_per_s"], 2),
            # ratio_vs_naive = flop_ratio * efficiency_ratio: fewer FLOPs, and each at what rate
            flop_ratio=round(nv["gflop"] / sat["gflop"], 2),
            efficiency_ratio=round(sat["gflops"] / nv["gflops"], 2),
        )
        rounds = sorted(n / s for n, s in zip(times["naive"], times["sat_core"], strict=True))
        summary.update(ratio_median_of_rounds=round(statistics.median(rounds), 2),
                       ratio_rounds_min=round(rounds[0], 2), ratio_rounds_max=round(rounds[-1], 2))
        print(f"sat_core is {summary['ratio_vs_naive']:.2f}x the naive decoder (best times; "
              f"the {args.steps} rounds' ratios: median {summary['ratio_median_of_rounds']:.2f}x, "
              f"range {rounds[0]:.2f}-{rounds[-1]:.2f}x)")
        print(f"  = {summary['flop_ratio']:.2f}x fewer FLOPs per step x "
              f"{summary['efficiency_ratio']:.2f}x the naive decoder's GFLOP/s (at equal "
              "GFLOP/s the speed-up would be the FLOP ratio)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
