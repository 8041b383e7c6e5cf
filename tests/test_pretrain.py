"""The small CNN's region pretraining (sat_core.pretrain): labels, training, the weights cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sat_core import fast
from sat_core.config import ConfigError, preset
from sat_core.data.records import ImageRecord
from sat_core.data.shapes import ShapesObject, make_shapes_splits
from sat_core.encoder import SmallEncoder
from sat_core.pretrain import (
    REGION_CLASSES,
    RegionHead,
    get_pretrained_weights,
    pretrain_small_encoder,
    pretrained_weights_path,
    region_accuracy,
    region_labels,
    region_loss,
)


def record_with(*objects: ShapesObject) -> ImageRecord:
    return ImageRecord(0, "x.png", "train", [["a"]], ["a"], {"objects": list(objects)})


def square(colour: str, size: str, x0: int, y0: int, side: int) -> ShapesObject:
    mask = np.zeros((64, 64), dtype=bool)
    mask[y0:y0 + side, x0:x0 + side] = True
    return ShapesObject("square", colour, size, (x0 + side / 2, y0 + side / 2),
                        (x0, y0, x0 + side, y0 + side), mask)


def test_region_labels_by_hand():
    # a 16 x 16 square covering cells (1, 1), (1, 2), (2, 1), (2, 2) exactly, and a strip of
    # 1 px (12.5 % of a cell, below the 20 % threshold) into cells (1, 3) and (2, 3)
    big = square("red", "big", 8, 8, 17)
    labels = region_labels(record_with(big), (8, 8))
    want = torch.zeros(3, 64, dtype=torch.long)
    red = (REGION_CLASSES["colour"].index("red"), REGION_CLASSES["shape"].index("square"),
           REGION_CLASSES["size"].index("big"))
    for cell in (9, 10, 17, 18):
        want[:, cell] = torch.tensor(red)
    assert torch.equal(labels, want)
    # 2 px (25 %) is enough: the strips of column 3 and row 3 join the object, but not the
    # corner cell (3, 3), which holds 2 x 2 of its 64 pixels
    labels = region_labels(record_with(square("red", "big", 8, 8, 18)), (8, 8))
    assert sorted(torch.nonzero(labels[0]).flatten().tolist()) == [9, 10, 11, 17, 18, 19, 25,
                                                                     26]


def test_region_labels_give_a_cell_to_the_object_covering_most_of_it():
    a = square("blue", "small", 0, 0, 12)  # covers cell 0 fully and 4 px columns of cell 1
    b = square("green", "small", 12, 0, 8)  # covers columns 12..19: half of cell 1, half of 2
    labels = region_labels(record_with(a, b), (8, 8))
    blue, green = REGION_CLASSES["colour"].index("blue"), REGION_CLASSES["colour"].index("green")
    assert labels[0, 0] == blue and labels[0, 2] == green
    assert labels[0, 1] in (blue, green)  # a tie at 50 % each: argmax takes the first object
    assert labels[0, 1] == blue


def test_region_labels_of_a_real_image_match_a_brute_force_count():
    record = make_shapes_splits(n_train=3, n_val=1, n_test=1, seed=4)["train"].records[2]
    labels = region_labels(record, (8, 8))
    for cell in range(64):
        r, c = divmod(cell, 8)
        fractions = [o.mask[8 * r:8 * r + 8, 8 * c:8 * c + 8].mean() for o in record.extra["objects"]]
        k = int(np.argmax(fractions))
        if fractions[k] > 0.2:
            o = record.extra["objects"][k]
            assert labels[1, cell] == REGION_CLASSES["shape"].index(o.shape)
        else:
            assert labels[:, cell].tolist() == [0, 0, 0]


def test_pretraining_learns_is_seeded_and_leaves_the_global_rng_alone():
    split = make_shapes_splits(n_train=32, n_val=1, n_test=1, seed=1)["train"]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    enc, head = pretrain_small_encoder(split, channels=16, epochs=6, batch_size=8, lr=1e-2,
                                       seed=5, progress=False)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG did not move
    assert not enc.training and all(not p.requires_grad for p in enc.parameters())
    again, _ = pretrain_small_encoder(split, channels=16, epochs=6, batch_size=8, lr=1e-2,
                                      seed=5, progress=False)
    for (k, v), (_, w) in zip(enc.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(v, w), k
    acc = region_accuracy(enc, head, split)  # what it learned is measured by the benchmark
    assert set(acc) == {"colour", "shape", "size"} and all(0 <= v <= 1 for v in acc.values())
    assert all(p.is_contiguous() for p in enc.parameters())  # back in the default layout


def test_channels_last_pretraining_step_matches_the_default_layout():
    """sat_core.fast.channels_last (the pretraining's speed trick) changes the memory layout only:
    the region loss and every gradient of one train-mode step match the NCHW computation."""
    torch.manual_seed(0)
    x = torch.rand(6, 3, 64, 64, dtype=torch.float64)
    labels = torch.randint(0, 3, (6, 3, 64))
    results = []
    for fast_layout in (False, True):
        torch.manual_seed(1)
        enc, head = SmallEncoder(channels=16).double(), RegionHead(16).double()
        enc.train()
        xin = fast.channels_last(x, enc.cnn, head) if fast_layout else x
        if fast_layout:
            assert xin.is_contiguous(memory_format=torch.channels_last)
            assert enc.cnn[0][1].weight.is_contiguous(memory_format=torch.channels_last)
        loss = region_loss(head(enc.cnn(xin)), labels)
        loss.backward()
        results.append((loss.detach(), [p.grad for p in [*enc.cnn.parameters(),
                                                         *head.parameters()]]))
    (loss0, grads0), (loss1, grads1) = results
    torch.testing.assert_close(loss1, loss0, rtol=1e-12, atol=1e-12)
    for g0, g1 in zip(grads0, grads1, strict=True):
        torch.testing.assert_close(g1, g0, rtol=1e-10, atol=1e-12)


def test_weights_are_cached_and_written_once(tmp_path, monkeypatch):
    split = make_shapes_splits(n_train=16, n_val=1, n_test=1, seed=1)["train"]
    path = pretrained_weights_path(tmp_path, channels=8, image_size=64, n_train=16, shapes_seed=1,
                                   seed=0)
    assert path != pretrained_weights_path(tmp_path, channels=8, image_size=64, n_train=16,
                                           shapes_seed=2, seed=0)
    import sat_core.pretrain as pre

    calls = []
    real = pre.pretrain_small_encoder

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **dict(kwargs, epochs=1))

    monkeypatch.setattr(pre, "pretrain_small_encoder", counting)
    assert get_pretrained_weights(path, split, channels=8, image_size=64, seed=0,
                                  progress=False) == path
    assert get_pretrained_weights(path, split, channels=8, image_size=64, seed=0,
                                  progress=False) == path
    assert len(calls) == 1 and [p.name for p in path.parent.iterdir()] == [path.name]
    enc = SmallEncoder(channels=8)
    enc.load_weights_file(path)  # a state_dict of the small encoder itself


def test_shapes_regions_needs_the_small_encoder_on_shapes():
    assert preset("shapes-soft").encoder_weights == "shapes-regions"
    with pytest.raises(ConfigError, match="shapes-regions"):
        preset("shapes-soft", encoder="vgg19")
    with pytest.raises(ConfigError, match="shapes-regions"):
        preset("flickr8k-soft", encoder_weights="shapes-regions")


def test_encoder_context_and_naming_order_reach_the_model_and_the_data(tmp_path):
    """The two Shapes knobs of the ablation are real settings: they change what is built."""
    from sat_core.encoder import receptive_field
    from sat_core.train import build_captioner, encoder_weights, load_data

    small = dict(n_train=24, n_val=4, n_test=4, encoder_weights="none",
                 features_dir=str(tmp_path), out_dir=str(tmp_path / "run"))
    splits, vocab = load_data(preset("shapes-soft", **small))
    for context, rf in ((0, 17), (1, 33), (2, 49)):
        cfg = preset("shapes-soft", **small, encoder_context=context)
        model = build_captioner(cfg, vocab)
        assert len(model.encoder.cnn) == 4 + context
        assert receptive_field(model.encoder) == rf
    with pytest.raises(ConfigError, match="encoder_context"):
        preset("shapes-soft", encoder_context=-1)
    # pretrained weights are cached per architecture: another context, another file
    paths = {pretrained_weights_path(tmp_path, channels=8, image_size=64, n_train=24,
                                     shapes_seed=0, seed=0, context=c) for c in (0, 1, 2)}
    assert len(paths) == 3
    assert encoder_weights(preset("shapes-soft", **small)) is None
    # naming order: the same pixels, other captions
    other, _ = load_data(preset("shapes-soft", **small, shapes_naming="any"))
    for a, b in zip(other["train"].records[:4], splits["train"].records[:4], strict=True):
        assert torch.equal(other["train"].load_image(a), splits["train"].load_image(b))
    assert ([r.captions for r in other["train"].records]
            != [r.captions for r in splits["train"].records])
    with pytest.raises(ConfigError, match="shapes_naming"):
        preset("shapes-soft", shapes_naming="random")
