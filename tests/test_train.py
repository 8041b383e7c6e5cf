"""The training loop on a tiny Shapes world: exact resume, NaN stop, feature cache, logs, CLI."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import sat_core.train as tr
from sat_core.checkpoint import load_checkpoint
from sat_core.config import TrainConfig, make_config
from sat_core.device import seed_everything
from sat_core.metrics import corpus_bleu
from sat_core.text import Vocabulary


def tiny(tmp_path, name="run", **kw) -> TrainConfig:
    """12 images of 32 px, 5 captions each: ~15 length-grouped batches of <= 8 per epoch."""
    base = dict(dataset="shapes", n_train=12, n_val=4, n_test=4, image_size=32, encoder="small",
                encoder_channels=8, fine_tune=True, embed_dim=8, hidden_dim=16, attn_dim=8,
                batch_size=8, epochs=2, lr=1e-2, dropout=0.3, checkpoint_every=3,
                test_metrics="bleu", test_beam_size=2, val_max_len=8, progress=False,
                num_threads=1, out_dir=str(tmp_path / name),
                features_dir=str(tmp_path / "features"))
    base.update(kw)
    return make_config(None, **base)


def weights(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, attention):
    # soft: step checkpoints every 3 steps, killed mid-epoch after step 7 (last.pt = step 6).
    # hard (sampling + 0.5 mixing): epoch-end checkpoints only, killed 2 steps into epoch 2.
    every = 3 if attention == "soft" else 0
    full = tr.train(tiny(tmp_path, "full", attention=attention, checkpoint_every=every))
    per_epoch = full.history[0]["step"]
    stop = 7 if attention == "soft" else per_epoch + 2
    assert 0 < stop < full.step and stop != per_epoch

    cfg = tiny(tmp_path, "cut", attention=attention, checkpoint_every=every)
    cut = tr.train(cfg, stop_after_steps=stop)
    assert cut.status == "interrupted" and cut.step == stop
    saved = load_checkpoint(cut.last_path)
    assert saved["step"] == (6 if attention == "soft" else per_epoch)
    resumed = tr.train(cfg, resume="auto")
    assert resumed.step == full.step and resumed.status == "finished"

    a, b = weights(full.last_path), weights(resumed.last_path)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.history == [
        {**row, "epoch_time_s": r2["epoch_time_s"], "tokens_per_s": r2["tokens_per_s"]}
        for row, r2 in zip(full.history, resumed.history, strict=True)
    ]
    # the run really changed the weights (the comparison above is not vacuous)
    init = tr.build_captioner(cfg, Vocabulary.load(tmp_path / "full" / "vocab.json"))
    assert not torch.equal(init.state_dict()["decoder.embedding.weight"],
                           a["decoder.embedding.weight"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("compile_", [False, True], ids=["eager", "compile"])
def test_interrupted_run_resumes_on_the_gpu(tmp_path, compile_):
    """On CUDA (checkpoints loaded with map_location=cuda; with --compile, the compiled step and
    encoder): the resumed run finishes where the uninterrupted one does. Eager: with nearly the
    same weights (CUDA's embedding backward sums in a nondeterministic order: not bit for bit).
    Compiled: on an H200 the fine-tuned encoder's weights differed by more than that after 2
    epochs at lr 1e-2 (other kernels; the epoch losses equal to 3 decimals): only the steps are
    compared."""
    kw = dict(device="cuda", compile=compile_, checkpoint_every=3)
    full = tr.train(tiny(tmp_path, "full", **kw))
    cfg = tiny(tmp_path, "cut", **kw)
    assert tr.train(cfg, stop_after_steps=7).status == "interrupted"
    resumed = tr.train(cfg, resume="auto")
    assert resumed.status == "finished" and resumed.step == full.step
    assert [h["step"] for h in resumed.history] == [h["step"] for h in full.history]
    if compile_:
        return
    a, b = weights(full.last_path), weights(resumed.last_path)
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = tr.caption_loss
    calls = {"n": 0}

    def poisoned(*args, **kw):
        parts = real(*args, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(tr, "caption_loss", poisoned)
    cfg = tiny(tmp_path, checkpoint_every=2)
    with pytest.raises(tr.NonFiniteLossError, match=r"at step 5 .*last\.pt is kept"):
        tr.train(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt", config=cfg)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_frozen_encoder_trains_from_the_feature_cache(tmp_path):
    cfg = tiny(tmp_path, fine_tune=False, epochs=1, checkpoint_every=0)
    assert cfg.uses_feature_cache
    result = tr.train(cfg)
    caches = list((tmp_path / "features").iterdir())
    assert len(caches) == 1 and sorted(p.name for p in caches[0].iterdir()) == [
        "test", "train", "val"]

    from sat_core.features import FeatureCache

    best = load_checkpoint(result.best_path)
    seed_everything(cfg.seed)
    splits, vocab = tr.load_data(cfg)
    init = tr.build_captioner(cfg, vocab)  # the same seed builds the same initial weights
    enc = {k: v for k, v in best["model"].items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, init.state_dict()[k]) for k, v in enc.items())  # frozen
    assert not torch.equal(best["model"]["decoder.embedding.weight"],
                           init.state_dict()["decoder.embedding.weight"])  # trained
    # the cache holds exactly what the frozen encoder computes from the images (float16)
    cache = FeatureCache.open(caches[0] / "val")
    images = torch.stack([splits["val"].load_image(r) for r in splits["val"].records])
    with torch.no_grad():
        a = init.eval().encoder(images)
    cached = torch.stack([cache[r.image_id] for r in splits["val"].records])
    torch.testing.assert_close(cached, a, atol=2e-3, rtol=2e-3)


def test_coordinate_units_reach_the_encoder_and_the_cache_key(tmp_path):
    vocab = Vocabulary(["a", "red", "circle"])
    keys = set()
    for scale in (8.0, 1.0, 0.0):
        cfg = tiny(tmp_path, encoder_coord_scale=scale)
        seed_everything(0)
        encoder = tr.build_captioner(cfg, vocab).encoder
        assert encoder.coord_scale == scale
        assert encoder.feature_dim == 8 + (2 if scale else 0)
        keys.add(tr.feature_cache_key(cfg, encoder))
    assert len(keys) == 3  # same weights, other coordinates: never the same cache


def test_logs_best_checkpoint_and_test_scores(tmp_path, monkeypatch):
    # validation BLEU-4 goes 0.1, 0.3, 0.2, 0.2: best at epoch 2, early stop after epoch 4
    bleus = iter([[0.5, 0.4, 0.2, 0.1], [0.6, 0.5, 0.4, 0.3], [0.6, 0.4, 0.3, 0.2],
                  [0.6, 0.4, 0.3, 0.2], [0.9, 0.9, 0.9, 0.9]])
    monkeypatch.setattr(tr, "validation_bleu", lambda *a, **k: next(bleus))
    cfg = tiny(tmp_path, epochs=6, patience=2, checkpoint_every=0, max_len=6)
    result = tr.train(cfg)
    assert result.status == "early-stopped" and result.epoch == 4 and result.best_bleu4 == 0.3
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "best.pt", "last.pt", "log.csv", "log.json", "run.json", "steps.csv", "test_scores.json",
        "vocab.json"])
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["val_bleu4"]) for r in rows] == [0.1, 0.3, 0.2, 0.2]
    assert list(rows[0]) == list(tr.LOG_FIELDS)
    log = json.loads((out / "log.json").read_text())
    assert log["config"] == cfg.to_dict() and len(log["history"]) == 4
    assert [h["step"] for h in log["history"]] == [result.history[0]["step"] * e for e in (1, 2, 3, 4)]
    # the mean attention entropy of each epoch, a fraction of log L (1 = uniform attention)
    assert all(0.0 < h["train_attention_entropy"] <= 1.0 + 1e-6 for h in log["history"])

    best = load_checkpoint(out / "best.pt", config=cfg)
    assert best["epoch"] == 2 and best["step"] == result.history[1]["step"]
    assert best["vocab"] == Vocabulary.load(out / "vocab.json")
    # test scores: best.pt decoded on the test split, each image once, scored by corpus_bleu
    scores = json.loads((out / "test_scores.json").read_text())
    splits, vocab = tr.load_data(cfg)
    model = tr.build_captioner(cfg, vocab)
    model.load_state_dict(best["model"])
    hyps, refs, index = tr.generate_captions(model, splits["test"], vocab,
                                             device=torch.device("cpu"), beam_size=2, max_len=8)
    assert index == list(range(cfg.n_test)) and scores["num_images"] == cfg.n_test
    assert scores["scores"]["Bleu_4"] == pytest.approx(corpus_bleu(hyps, refs).bleu[3], abs=1e-12)
    assert scores["epoch"] == 2


def test_get_or_train_reuses_a_matching_run(tmp_path):
    out = tmp_path / "nb"
    kw = dict(n_train=8, n_val=2, n_test=2, image_size=32, encoder_channels=8, embed_dim=8,
              hidden_dim=16, attn_dim=8, batch_size=8, epochs=1, max_steps=3, progress=False,
              test_metrics="none", features_dir=str(tmp_path / "features"), fine_tune=True)
    path = tr.get_or_train("shapes-soft", out, **kw)
    assert path == out / "best.pt"
    stamp = path.stat().st_mtime_ns
    assert tr.get_or_train("shapes-soft", out, **{**kw, "num_workers": 0, "device": "cpu"}) == path
    assert path.stat().st_mtime_ns == stamp  # runtime-only fields: no retraining
    tr.get_or_train("shapes-soft", out, **{**kw, "lr": 1e-3})
    assert path.stat().st_mtime_ns != stamp  # a learning field changed: retrained
    assert load_checkpoint(path)["config"].lr == 1e-3


def test_lr_schedules_by_hand():
    cfg = TrainConfig(lr_schedule="cosine", warmup_steps=2, epochs=2)
    f = tr.lr_factor(cfg, steps_per_epoch=6)  # 12 steps, 10 after the warm-up
    assert [f(0), f(1)] == [0.5, 1.0]
    assert f(2) == pytest.approx(1.0) and f(7) == pytest.approx(0.5) and f(12) == pytest.approx(0)
    g = tr.lr_factor(TrainConfig(lr_schedule="step", lr_decay=0.1, lr_decay_epochs=2), 5)
    assert [g(9), g(10), g(25)] == [1.0, pytest.approx(0.1), pytest.approx(0.01)]
    assert tr.lr_factor(TrainConfig(max_steps=4, lr_schedule="cosine"), 100)(2) == pytest.approx(0.5)


def test_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tr.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "--resume" in text and "--stop-after-steps" in text and "--alpha-c" in text
    assert tr.main(["--amp", "fp16", "--device", "cpu", "--out-dir", str(tmp_path)]) == 2
    assert "--amp fp16 needs a CUDA device" in capsys.readouterr().err
    assert tr.main(["--resume", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    args = ["--preset", "shapes-soft", "--n-train", "8", "--n-val", "2", "--n-test", "2",
            "--image-size", "32", "--encoder-channels", "8", "--embed-dim", "8", "--hidden-dim",
            "16", "--attn-dim", "8", "--epochs", "1", "--max-steps", "2", "--amp", "bf16",
            "--no-progress", "--test-metrics", "none", "--fine-tune", "--out-dir",
            str(tmp_path / "cli")]
    assert tr.main(args) == 0
    ckpt = load_checkpoint(tmp_path / "cli" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["config"].amp == "bf16"
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_command_line_resume_auto_continues_the_same_run(tmp_path, capsys):
    args = ["--preset", "shapes-hard", "--n-train", "8", "--n-val", "2", "--n-test", "2",
            "--image-size", "32", "--encoder-channels", "8", "--embed-dim", "8", "--hidden-dim",
            "16", "--attn-dim", "8", "--epochs", "1", "--max-steps", "3", "--batch-size", "4",
            "--checkpoint-every", "1", "--no-progress", "--test-metrics", "none",
            "--features-dir", str(tmp_path / "features")]
    assert tr.main([*args, "--out-dir", str(tmp_path / "whole")]) == 0
    killed = [*args, "--out-dir", str(tmp_path / "killed")]
    assert tr.main([*killed, "--stop-after-steps", "1"]) == 0
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["step"] == 1
    assert tr.main([*killed, "--resume", "auto"]) == 0
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert resumed["step"] == whole["step"] == 3
    for k, v in whole["model"].items():  # hard attention: the samples' RNG resumed too
        assert torch.equal(resumed["model"][k], v), k


def test_adam_is_fused_on_the_cpu_and_steps_like_the_plain_loop():
    """make_optimizer's Adam uses the fused update (sat_core.fast, trick 8): five steps on the
    same gradients land where torch's per-parameter Adam lands; RMSProp is left as it is."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    twin.load_state_dict(model.state_dict())
    start = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(optimizer="adam", lr=0.01, weight_decay=0.001)
    opt = tr.make_optimizer(cfg, model)
    assert opt.param_groups[0]["fused"] is True
    plain = torch.optim.Adam(twin.parameters(), lr=0.01, weight_decay=0.001, foreach=False)
    x = torch.randn(16, 5)
    for _ in range(5):
        for m, o in ((model, opt), (twin, plain)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert not any(p.equal(p0) for p, p0 in zip(model.parameters(), start, strict=True))
    rms = tr.make_optimizer(TrainConfig(optimizer="rmsprop"), model)
    assert not rms.param_groups[0].get("fused")
