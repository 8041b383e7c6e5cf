"""The benchmark scripts run (at --quick sizes) and end with one JSON line of figures.

Nothing here is timed: speed is measured by running the scripts themselves (README, closing
notes); this only keeps them from rotting. Marked ``bench``: ``make bench-smoke`` (and CI) runs
them, ``make test`` does not (they would add half a minute of CPU beside the notebooks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def run_bench(name: str, *args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # a smoke run beside the other tests' worker
    proc = subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.bench
def test_bench_train_step_quick():
    r = run_bench("bench_train_step.py", "--quick", "--device", "cpu", "--steps", "2",
                  "--profile-rows", "3")
    assert r["batch"] == 8 and r["captions_per_s"] > 0 and r["naive_captions_per_s"] > 0
    # the naive decoder re-projects a at every step: strictly more work for the same math
    assert r["naive_gflop_per_step"] > r["gflop_per_step"] > 0
    assert r["peak_memory_mb"] > 0 and r["naive_peak_memory_mb"] > 0
    assert r["ratio_vs_naive"] == pytest.approx(
        r["captions_per_s"] / r["naive_captions_per_s"], rel=0.02, abs=0.01)  # 2 decimals
    assert r["ratio_rounds_min"] <= r["ratio_median_of_rounds"] <= r["ratio_rounds_max"]
    # the speed-up = (fewer FLOPs) x (relative GFLOP/s), each factor rounded to 2 decimals
    assert r["flop_ratio"] == pytest.approx(
        r["naive_gflop_per_step"] / r["gflop_per_step"], rel=0.01)
    assert r["flop_ratio"] > 1
    assert r["flop_ratio"] * r["efficiency_ratio"] == pytest.approx(r["ratio_vs_naive"], rel=0.02,
                                                                     abs=0.03)


@pytest.mark.bench
def test_bench_train_step_amp_and_compile_quick():
    """--amp and --compile as train takes them (compile: sat_core.fast.compile_cell, the same
    products: the same FLOP count as the plain run); --no-memory skips the children."""
    plain = run_bench("bench_train_step.py", "--quick", "--device", "cpu", "--steps", "1",
                      "--no-naive", "--no-memory", "--profile-rows", "0")
    r = run_bench("bench_train_step.py", "--quick", "--device", "cpu", "--steps", "1",
                  "--no-naive", "--no-memory", "--profile-rows", "0", "--amp", "bf16",
                  "--compile")
    assert (r["amp"], r["compile"], plain["amp"], plain["compile"]) == ("bf16", True, "none", False)
    assert r["captions_per_s"] > 0 and r["peak_memory_mb"] is None
    assert r["gflop_per_step"] == plain["gflop_per_step"] > 0


@pytest.mark.bench
def test_bench_decode_quick():
    r = run_bench("bench_decode.py", "--quick", "--device", "cpu", "--beam-sizes", "2", "3",
                  "--vocab", "500", "--locations", "49", "--images", "4")
    for k in (2, 3):
        assert r[f"k{k}_images_per_s"] > 0 and r[f"k{k}_single_images_per_s"] > 0
        assert r[f"k{k}_ratio"] == pytest.approx(
            r[f"k{k}_images_per_s"] / r[f"k{k}_single_images_per_s"], rel=0.02, abs=0.01)
        assert r[f"k{k}_ratio_bound"] > 0  # per-image time over the batched matmuls' time


@pytest.mark.bench
def test_bench_shapes_quick():
    r = run_bench("bench_shapes.py", "--n", "20", "--image-size", "32")
    assert r["n_images"] == 20 and r["images_per_s"] > 0


@pytest.mark.bench
def test_bench_shapes_quality_quick():
    r = run_bench("bench_shapes_quality.py", "--quick")
    for kind in ("soft", "hard"):
        assert 0 <= r[f"{kind}_caption_accuracy"] <= 1 and 0 <= r[f"{kind}_grounding"] <= 1
        assert r[f"{kind}_train_s"] > 0
        assert set(r[f"{kind}_grounding_by_type"]) == {"size", "colour", "shape"}


@pytest.mark.bench
def test_bench_shapes_ablation_quick(tmp_path):
    out = tmp_path / "ablation.json"
    variants = ["soft: the recipe", "soft: 17 px receptive field", "hard: caption reward (Eq. 12)"]
    r = run_bench("bench_shapes_ablation.py", "--quick", "--only", *variants, "--out", str(out))
    assert list(r) == variants
    for v in variants:
        assert 0 <= r[v]["caption_accuracy"] <= 1 and 0 <= r[v]["grounding"] <= 1
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and list(saved["variants"]) == variants
    assert saved["variants"]["soft: 17 px receptive field"]["overrides"] == {"encoder_context": 0}
    assert saved["variants"]["hard: caption reward (Eq. 12)"]["preset"] == "shapes-hard"
