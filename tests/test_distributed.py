"""Two processes under torchrun (gloo on the CPU, loopback only): one model, two shares of data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from sat_core.checkpoint import load_checkpoint


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path):
    out = tmp_path / "ddp"
    tiny = ["--preset", "shapes-hard", "--n-train", "10", "--n-val", "2", "--n-test", "2",
            "--image-size", "32", "--encoder-channels", "8", "--embed-dim", "8",
            "--hidden-dim", "16", "--attn-dim", "8", "--batch-size", "4", "--epochs", "1",
            "--max-steps", "4", "--log-every", "1", "--device", "cpu", "--no-progress",
            "--test-metrics", "none", "--features-dir", str(tmp_path / "features")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "sat_core.train",
           *tiny, "--out-dir", str(out), "--dump-final-weights"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = torch.load(out / "rank0_final.pt", weights_only=True)
    r1 = torch.load(out / "rank1_final.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 4
    # different data (and dropout, and attention samples) on each rank, yet one set of weights:
    # DDP averaged the gradients of every step
    seen0, seen1 = set(r0["seen"].tolist()), set(r1["seen"].tolist())
    assert seen0 and seen1 and not seen0 & seen1
    assert r0["params"].keys() == r1["params"].keys()
    for k in r0["params"]:
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    # rank 0 alone wrote checkpoints and logs (a second writer would duplicate steps.csv rows)
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "best.pt", "last.pt", "log.csv", "log.json", "run.json", "steps.csv", "vocab.json",
        "rank0_final.pt", "rank1_final.pt"])
    assert [line.split(",")[0] for line in (out / "steps.csv").read_text().split()[1:]] == [
        "1", "2", "3", "4"]
    last = load_checkpoint(out / "last.pt")
    assert last["step"] == 4 and len(last["rng"]["ranks"]) == 2
    for k, v in r0["params"].items():
        assert torch.equal(last["model"][k], v), k
