"""``python -m sat_core.caption`` and the attention pictures of ``sat_core.viz``.

The upsampling is checked by hand (nearest cells), by invariants that any correct smoothing keeps
(a constant map stays constant, mirroring commutes, the peak stays in its cell); the command line
on PNGs written by the Shapes world, against the model run directly on the same pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sat_core import caption
from sat_core.config import preset
from sat_core.data.shapes import make_shapes_splits, save_shapes
from sat_core.decoding import beam_search
from sat_core.evaluate import load_captioner
from sat_core.train import train
from sat_core.viz import attention_overlay, upsample_attention


# ------------------------------------------------------------------------ upsample_attention
def test_nearest_upsampling_paints_each_cell_by_hand():
    alpha = np.array([0.1, 0.2, 0.3, 0.4, 0.0, 0.0])  # grid 2 x 3, row-major
    got = upsample_attention(alpha, (2, 3), (4, 6), smooth=False)
    expected = np.array([
        [0.1, 0.1, 0.2, 0.2, 0.3, 0.3],
        [0.1, 0.1, 0.2, 0.2, 0.3, 0.3],
        [0.4, 0.4, 0.0, 0.0, 0.0, 0.0],
        [0.4, 0.4, 0.0, 0.0, 0.0, 0.0],
    ])
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize("smooth", [False, True])
def test_constant_attention_gives_a_constant_map(smooth):
    got = upsample_attention(np.full(12, 1 / 12), (3, 4), (48, 64), smooth=smooth)
    assert got.shape == (48, 64)
    np.testing.assert_allclose(got, 1 / 12, rtol=1e-12)


def test_smooth_map_keeps_the_peak_in_its_cell_and_commutes_with_mirroring():
    rng = np.random.default_rng(0)
    alpha = rng.dirichlet(np.ones(16))  # grid 4 x 4, 16 px per cell
    up = upsample_attention(alpha, (4, 4), (64, 64))
    assert up.min() >= 0 and up.max() <= alpha.max() + 1e-12
    flipped = upsample_attention(alpha.reshape(4, 4)[:, ::-1].ravel(), (4, 4), (64, 64))
    np.testing.assert_allclose(flipped, up[:, ::-1], atol=1e-12)
    one_hot = np.zeros(16)
    one_hot[6] = 1.0  # row 1, column 2
    peak = upsample_attention(one_hot, (4, 4), (64, 64))
    r, c = np.unravel_index(peak.argmax(), peak.shape)
    assert 16 <= r < 32 and 32 <= c < 48
    assert peak[:, :16].max() < 0.05 * peak.max()  # two cells away: nothing left
    with pytest.raises(ValueError, match="grid"):
        upsample_attention(alpha, (3, 3), (64, 64))


def test_attention_overlay_has_one_panel_per_word():
    image = np.random.default_rng(1).random((32, 32, 3))
    alphas = torch.softmax(torch.randn(3, 16), -1)
    fig = attention_overlay(image, alphas, ["a", "red", "circle"], (4, 4),
                            betas=torch.tensor([0.25, 0.5, 0.75]))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["image", "a  (β=0.25)", "red  (β=0.50)", "circle  (β=0.75)"]
    with pytest.raises(ValueError, match="3 words"):
        attention_overlay(image, alphas[:2], ["a", "red", "circle"], (4, 4))


# ------------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_caption")
    cfg = preset("shapes-soft", n_train=16, n_val=2, n_test=3, image_size=32,
                 encoder_channels=8, embed_dim=8, hidden_dim=16, attn_dim=8, batch_size=8,
                 epochs=1, max_steps=2, test_metrics="none", progress=False,
                 out_dir=str(root / "run"))
    result = train(cfg)
    test = make_shapes_splits(n_train=1, n_val=1, n_test=3, image_size=32)["test"]
    save_shapes(test, root / "pngs", progress=False)
    pngs = [root / "pngs" / r.filename for r in test.records]
    assert all(p.exists() for p in pngs)
    return result.best_path, test, pngs, root


def test_cli_prints_captions_and_writes_one_png_per_image(tiny, capsys):
    ckpt, test, pngs, root = tiny
    out_dir = root / "figs"
    rc = caption.main(["--checkpoint", str(ckpt), *map(str, pngs[:2]), "--beam-size", "2",
                       "--max-len", "5", "--out-dir", str(out_dir), "--device", "cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    # the same model, run directly on the same pixels (the split's own loader, no PNG round trip)
    model, vocab, _ = load_captioner(ckpt, "cpu")
    x = torch.stack([test.load_image(r) for r in test.records[:2]])
    with torch.no_grad():
        hyps = beam_search(model.decoder, model.encoder(x), beam_size=2, max_len=5,
                           start_id=vocab.start_id, end_id=vocab.end_id, suppress_ids=(0,))
    for png, h in zip(pngs[:2], hyps, strict=True):
        assert f"{png}: {' '.join(vocab.decode(h.tokens))}\n" in printed
        figure = out_dir / f"{png.stem}_attention.png"
        with Image.open(figure) as im:
            assert im.format == "PNG" and im.size[0] > 100


def test_caption_image_keeps_one_alpha_map_per_panel(tiny):
    ckpt, test, pngs, _ = tiny
    model, vocab, cfg = load_captioner(ckpt, "cpu")
    from_file = caption.caption_image(model, vocab, pngs[2], image_size=32, beam_size=2,
                                      max_len=5)
    from_tensor = caption.caption_image(model, vocab, test.load_image(test.records[2]),
                                        image_size=32, beam_size=2, max_len=5)
    assert from_file.words == from_tensor.words
    h = from_file.hypothesis
    L = model.encoder.num_locations
    assert h.alphas.shape == (len(from_file.panel_words), L)
    assert from_file.grid[0] * from_file.grid[1] == L
    torch.testing.assert_close(h.alphas.sum(-1), torch.ones(h.num_steps))
    assert from_file.image.shape == (32, 32, 3)
    assert 0.0 <= from_file.image.min() and from_file.image.max() <= 1.0


def test_missing_or_corrupt_image_is_named(tiny, tmp_path, capsys):
    ckpt, _, pngs, _ = tiny
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "missing.jpg"
    rc = caption.main(["--checkpoint", str(ckpt), str(pngs[0]), str(corrupt), str(missing),
                       "--out-dir", str(tmp_path / "figs")])
    assert rc == 2  # a user error (sat_core.errors): one line, status 2
    err = capsys.readouterr().err
    assert str(corrupt) in err and str(missing) in err and str(pngs[0]) not in err
    assert not (tmp_path / "figs").exists()  # nothing drawn before the inputs are checked
    with pytest.raises(SystemExit) as e:
        caption.main(["--help"])
    assert e.value.code == 0
