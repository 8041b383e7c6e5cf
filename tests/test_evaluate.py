"""``python -m sat_core.evaluate`` on a tiny checkpoint made by the real training entry point.

One run of ``sat_core.train.train`` (2 optimizer steps on a miniature Shapes world) gives the
checkpoint; the report is checked against an independent regeneration of the Shapes test split
and an independent decode of its images. One evaluation runs the Java metrics (a few seconds).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from sat_core import evaluate
from sat_core.accuracy import caption_accuracy
from sat_core.checkpoint import atomic_torch_save
from sat_core.config import preset
from sat_core.data.shapes import make_shapes_splits
from sat_core.decoding import beam_search
from sat_core.grounding import attention_grounding
from sat_core.train import get_or_train
from sat_core.viz import plot_training_curves

N_TEST = 8


# Kept on disk under one folder of the session, not mktemp: pytest-xdist can tear module fixtures
# down between two tests of this module (a worker that does not see its next test yet), and the
# rebuild then finds the finished run (get_or_train) and the report instead of making them again.
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "tiny_eval"
    cfg = preset("shapes-soft", n_train=16, n_val=4, n_test=N_TEST, image_size=32,
                 encoder_channels=8, embed_dim=8, hidden_dim=16, attn_dim=8, batch_size=8,
                 epochs=1, max_steps=2, test_metrics="none", progress=False,
                 out_dir=str(root / "run"))
    best = get_or_train(cfg, root / "run")
    assert best.exists()
    return SimpleNamespace(best_path=best, out_dir=root / "run")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory):
    out = tmp_path_factory.getbasetemp() / "tiny_eval_report" / "report.json"
    if not out.exists():
        out.parent.mkdir(exist_ok=True)
        rc = evaluate.main(["--checkpoint", str(tiny_run.best_path), "--beam-size", "2",
                            "--max-len", "6", "--out", str(out), "--no-progress",
                            "--device", "cpu"])
        assert rc == 0
    return json.loads(out.read_text())


def test_report_has_every_test_image_once_with_its_references(report, tiny_run):
    # the Shapes test split, regenerated independently from the run's settings
    test = make_shapes_splits(n_train=16, n_val=4, n_test=N_TEST, image_size=32)["test"]
    assert report["num_images"] == N_TEST and report["split"] == "test"
    images = report["images"]
    assert sorted(r["image_index"] for r in images) == list(range(N_TEST))
    for row in images:
        rec = test.records[row["image_index"]]
        assert row["references"] == rec.raw and len(rec.raw) == 5
        assert row["filename"] == rec.filename
        assert row["caption"] == " ".join(row["tokens"])
        assert len(row["tokens"]) <= 6 and row["log_prob"] <= 0.0
    s = report["settings"]
    assert (s["beam_size"], s["max_len"], s["length_norm"], s["mode"]) == (2, 6, 0.0, "soft")


def test_scores_are_present_and_in_range(report):
    scores = report["scores"]
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert key in scores
    if report["tokenizer"] == "ptb":  # Java present: METEOR too
        assert 0.0 <= scores["METEOR"] <= 1.0
    for key, value in scores.items():
        assert math.isfinite(value)
        assert 0.0 <= value <= (10.0 if key == "CIDEr" else 1.0), key
    # per-image scores average to the corpus score where the metric is a mean (ROUGE-L)
    rouge = [r["scores"]["ROUGE_L"] for r in report["images"]]
    assert sum(rouge) / len(rouge) == pytest.approx(scores["ROUGE_L"], abs=1e-9)
    assert "BLEU-4" in report["table"] and "ours (soft, beam 2)" in report["table"]


def test_captions_equal_an_independent_decode(report, tiny_run):
    model, vocab, cfg = evaluate.load_captioner(tiny_run.best_path, "cpu")
    # the weights really are the checkpoint's
    state = torch.load(tiny_run.best_path, weights_only=True)["model"]
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=0)
    test = make_shapes_splits(n_train=1, n_val=1, n_test=N_TEST, image_size=32)["test"]
    x = torch.stack([test.load_image(r) for r in test.records])
    with torch.no_grad():
        hyps = beam_search(model.decoder, model.encoder(x), beam_size=2, max_len=6,
                           start_id=vocab.start_id, end_id=vocab.end_id, suppress_ids=(0,))
    by_index = {r["image_index"]: r for r in report["images"]}
    for i, h in enumerate(hyps):
        assert by_index[i]["tokens"] == vocab.decode(h.tokens)
        assert by_index[i]["log_prob"] == pytest.approx(h.log_prob, abs=1e-5)


def test_limit_and_importable_api(tiny_run):
    rep = evaluate.evaluate_checkpoint(tiny_run.best_path, split="val", limit=3, beam_size=1,
                                       max_len=4, metrics=("BLEU",), progress=False,
                                       device="cpu")
    assert rep["num_images"] == 3 and rep["split"] == "val"
    assert [r["image_index"] for r in rep["images"]] == [0, 1, 2]
    assert set(rep["scores"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"}


def _rate(x):
    return None if math.isnan(x) else x


def test_shapes_measures_in_the_report(report, tiny_run, capsys):
    test = make_shapes_splits(n_train=1, n_val=1, n_test=N_TEST, image_size=32)["test"]
    assert isinstance(report["caption_accuracy"], float)
    assert 0.0 <= report["caption_accuracy"] <= 1.0
    assert set(report["word_accuracy"]) == {"size", "colour", "shape"}
    assert set(report["grounding"]) == {"all", "size", "colour", "shape", "uniform"}
    for value in [*report["word_accuracy"].values(), *report["grounding"].values()]:
        assert value is None or (isinstance(value, float) and 0.0 <= value <= 1.0)
    # recomputed from the report's own captions and an independent regeneration of the split
    images = sorted(report["images"], key=lambda r: r["image_index"])
    records = [test.records[r["image_index"]] for r in images]
    acc = caption_accuracy([r["tokens"] for r in images], records, 32)
    assert report["caption_accuracy"] == acc.caption_accuracy
    assert report["word_accuracy"] == {k: _rate(v) for k, v in acc.word_accuracy.items()}
    assert [r["caption_right"] for r in images] == [j.right for j in acc.judgements]
    assert all((r["caption_reasons"] == []) == r["caption_right"] for r in images)
    # grounding: the references teacher-forced in the decode mode ("soft"), every word type found
    model, vocab, _ = evaluate.load_captioner(tiny_run.best_path, "cpu")
    g = attention_grounding(model, test, vocab, mode="soft")
    assert report["grounding"]["all"] == pytest.approx(g.hit_rate, abs=1e-12)
    assert report["grounding"]["uniform"] == pytest.approx(g.baseline, abs=1e-12)
    for kind in ("size", "colour", "shape"):
        assert report["grounding"][kind] == pytest.approx(g.by_type[kind]["hit_rate"], abs=1e-12)
    text = evaluate.format_shapes_report(report)
    assert "caption accuracy" in text and "uniform baseline" in text
    assert evaluate.format_shapes_report({"scores": {}}) == ""


def test_shapes_measures_respect_limit_and_can_be_skipped(tiny_run):
    kw = dict(split="val", beam_size=1, max_len=4, metrics=("BLEU",), progress=False,
              device="cpu")
    rep = evaluate.evaluate_checkpoint(tiny_run.best_path, limit=2, **kw)
    val = make_shapes_splits(n_train=1, n_val=4, n_test=1, image_size=32)["val"]
    model, vocab, _ = evaluate.load_captioner(tiny_run.best_path, "cpu")
    g = attention_grounding(model, val, vocab, mode="soft", limit=2)
    # 5 references per image, 3 object words per object
    assert g.n_words == 5 * sum(len(r.extra["objects"]) for r in val.records[:2]) * 3
    assert rep["grounding"]["all"] == pytest.approx(g.hit_rate, abs=1e-12)
    assert rep["grounding"]["uniform"] == pytest.approx(g.baseline, abs=1e-12)
    every = attention_grounding(model, val, vocab, mode="soft")  # all 4 images: another baseline
    assert every.baseline != pytest.approx(g.baseline, abs=1e-6)
    acc = caption_accuracy([r["tokens"] for r in rep["images"]], val.records[:2], 32)
    assert rep["caption_accuracy"] == acc.caption_accuracy and acc.n_images == 2
    off = evaluate.evaluate_checkpoint(tiny_run.best_path, limit=2, shapes_measures=False, **kw)
    assert not {"caption_accuracy", "word_accuracy", "grounding"} & set(off)


def test_no_shapes_measures_for_other_datasets(tiny_run, tiny_data_root, tmp_path):
    # the tiny checkpoint, relabelled as a Flickr8k model and evaluated on the conftest dataset
    ckpt = torch.load(tiny_run.best_path, weights_only=True)
    ckpt["config"] = dict(ckpt["config"], dataset="flickr8k", data_root=str(tiny_data_root),
                          encoder_weights="none")
    path = atomic_torch_save(ckpt, tmp_path / "flickr.pt")
    rep = evaluate.evaluate_checkpoint(path, beam_size=1, max_len=4, metrics=("BLEU",),
                                       progress=False, device="cpu")
    assert rep["dataset"] == "flickr8k" and rep["num_images"] == 1
    assert not {"caption_accuracy", "word_accuracy", "grounding"} & set(rep)
    assert "caption_right" not in rep["images"][0]
    assert evaluate.format_shapes_report(rep) == ""


def test_cli_errors_name_the_file(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert evaluate.main(["--checkpoint", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert evaluate.main(["--checkpoint", str(junk)]) == 2
    assert str(junk) in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--help"])
    assert e.value.code == 0
    assert "--beam-size" in capsys.readouterr().out


def test_training_curves_show_the_logged_values(tiny_run):
    log = json.loads((tiny_run.out_dir / "log.json").read_text())["history"]
    for source in (tiny_run.out_dir, tiny_run.out_dir / "log.csv"):
        fig = plot_training_curves(source)
        ax_loss, ax_bleu = fig.axes
        loss_line = ax_loss.get_lines()[0]
        assert list(loss_line.get_ydata()) == pytest.approx([r["train_loss"] for r in log],
                                                            rel=1e-5)
        assert list(ax_bleu.get_lines()[0].get_ydata()) == pytest.approx(
            [r["val_bleu4"] for r in log], rel=1e-5, abs=1e-12)
        assert "BLEU-4" in ax_bleu.get_ylabel()
    with pytest.raises(FileNotFoundError, match="nowhere"):
        plot_training_curves(tiny_run.out_dir / "nowhere")
