"""Atomic checkpoints, weights_only loading, RNG states and clear errors."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

import sat_core.checkpoint as ck
from sat_core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    to_plain,
)
from sat_core.config import TrainConfig
from sat_core.text import Vocabulary

VOCAB = Vocabulary(["a", "red", "circle", "square"])
CFG = TrainConfig(embed_dim=8, hidden_dim=16, attn_dim=8)


def _trained(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def _save(path, model, opt, sched, **kw):
    args = dict(model=model, optimizer=opt, scheduler=sched, vocab=VOCAB, config=CFG, epoch=2,
                step=3, baseline={"value": torch.tensor(1.5)}, rng=capture_rng_state(),
                best={"bleu4": 0.25, "epoch": 1}, history=[{"epoch": 1, "loss": np.float32(2.5)}])
    args.update(kw)
    return save_checkpoint(path, **args)


def test_round_trip_resumes_the_optimizer_exactly(tmp_path):
    model, opt, sched = _trained()
    path = _save(tmp_path / "last.pt", model, opt, sched)
    raw = torch.load(path, weights_only=True)  # plain content only
    assert raw["history"] == [{"epoch": 1, "loss": 2.5}] and raw["vocab"]["itos"] == VOCAB.itos

    ckpt = load_checkpoint(path, vocab=VOCAB, config=CFG)
    assert ckpt["vocab"] == VOCAB and ckpt["config"] == CFG
    assert (ckpt["epoch"], ckpt["step"], ckpt["best"]["bleu4"]) == (2, 3, 0.25)
    # a fresh model/optimizer/scheduler restored from the file takes the same next step
    model2, opt2, sched2 = _trained(seed=1)
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    x = torch.randn(5, 3)
    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
        s.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"] == 1e-2 / 5


def test_rng_states_round_trip_through_a_file(tmp_path):
    gen = torch.Generator().manual_seed(7)
    random.gauss(0, 1)  # make Python cache a Gaussian (gauss_next) too
    np.random.randn()
    state = capture_rng_state({"hard": gen})
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)],
             random.gauss(0, 1), torch.rand(3, generator=gen))
    path = ck.atomic_torch_save(to_plain(state), tmp_path / "rng.pt")
    restore_rng_state(torch.load(path, weights_only=True), {"hard": gen})
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)],
             random.gauss(0, 1), torch.rand(3, generator=gen))
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:4] == again[2:4] and torch.equal(first[4], again[4])
    with pytest.raises(CheckpointError, match="'mixing'"):
        restore_rng_state(state, {"mixing": torch.Generator()})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_rng_states_restore_from_a_checkpoint_loaded_onto_the_gpu(tmp_path):
    """train --resume on a GPU loads the checkpoint with map_location=cuda: the NumPy and Python
    states then arrive as CUDA tensors."""
    np.random.seed(3)
    random.seed(3)
    path = ck.atomic_torch_save(to_plain(capture_rng_state()), tmp_path / "rng.pt")
    first = (np.random.rand(3), random.random())
    restore_rng_state(torch.load(path, map_location="cuda", weights_only=True))
    assert np.array_equal(np.random.rand(3), first[0]) and random.random() == first[1]


def test_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _trained()
    path = _save(tmp_path / "last.pt", model, opt, sched, step=3)
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt  # e.g. the user presses Ctrl-C mid-write

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        _save(path, model, opt, sched, step=4)
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left


def test_truncated_and_foreign_files_name_the_file(tmp_path):
    model, opt, sched = _trained()
    good = _save(tmp_path / "good.pt", model, opt, sched).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt is truncated or not a checkpoint"):
        load_checkpoint(cut)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_checkpoint(text)
    bare = tmp_path / "bare.pt"
    torch.save({"model": model.state_dict()}, bare)
    with pytest.raises(CheckpointError, match=r"bare\.pt is not a sat_core checkpoint"):
        load_checkpoint(bare)
    with pytest.raises(CheckpointError, match=r"missing\.pt does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_non_plain_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": ck.FORMAT, "payload": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"evil\.pt is not a plain sat_core checkpoint"):
        load_checkpoint(path)
    assert "must never run" not in capsys.readouterr().out


def test_other_vocabulary_is_explained(tmp_path):
    model, opt, sched = _trained()
    path = _save(tmp_path / "last.pt", model, opt, sched)
    other = Vocabulary(["a", "blue", "circle"])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, vocab=other)
    msg = str(e.value)
    assert f"vocabulary of {len(VOCAB)} words (fingerprint {VOCAB.fingerprint()})" in msg
    assert f"the current one has {len(other)} words ({other.fingerprint()})" in msg
    assert "last.pt" in msg and "vocab.json" in msg


def test_other_architecture_names_the_fields(tmp_path):
    model, opt, sched = _trained()
    path = _save(tmp_path / "last.pt", model, opt, sched)
    current = TrainConfig(embed_dim=8, hidden_dim=16, attn_dim=8, attention="hard", lr=1.0)
    assert load_checkpoint(path, config=TrainConfig(**{**CFG.to_dict(), "lr": 1.0}))  # not arch
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, config=TrainConfig(**{**current.to_dict(), "encoder": "vgg19"}))
    msg = str(e.value)
    assert "attention: 'soft' (checkpoint) vs 'hard' (current)" in msg
    assert "encoder: 'small' (checkpoint) vs 'vgg19' (current)" in msg
    assert "lr" not in msg.replace("last.pt", "")


def test_to_plain_names_the_offending_key():
    assert to_plain({"a": (np.int64(3), [np.ones(2, dtype=np.float32)])})["a"][0] == 3
    with pytest.raises(TypeError, match=r"checkpoint\['history'\]\[0\] is a set"):
        to_plain({"history": [{1, 2}]})


def test_a_config_stored_before_encoder_coord_scale_means_1(tmp_path):
    # Checkpoints written before the small encoder's coordinate scale was a setting lack the
    # field; their models saw coordinates in [-1, 1] and must be rebuilt that way.
    model, opt, sched = _trained()
    path = _save(tmp_path / "last.pt", model, opt, sched)
    stored = torch.load(path, weights_only=True)
    del stored["config"]["encoder_coord_scale"]
    torch.save(stored, path)
    assert load_checkpoint(path)["config"].encoder_coord_scale == 1.0
    assert CFG.encoder_coord_scale == 8.0
    with pytest.raises(CheckpointError, match="encoder_coord_scale: 1.0 \\(checkpoint\\) vs 8.0"):
        load_checkpoint(path, config=CFG)
