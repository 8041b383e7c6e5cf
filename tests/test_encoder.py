"""Tests of sat_core.encoder: shapes, coordinate channels, locality, weights, freezing."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torch import nn

from sat_core.encoder import (
    PretrainedWeightsUnavailable,
    build_encoder,
    coordinate_channels,
    receptive_field,
    receptive_field_geometry,
)
from sat_core.paths import shown_path


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return build_encoder("vgg19")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return build_encoder("resnet101")


def small(**kw):
    torch.manual_seed(0)
    return build_encoder("small", **kw)


# -- shapes -----------------------------------------------------------------------------------


def test_vgg19_shape_at_224(vgg):
    with torch.no_grad():
        a = vgg(torch.randn(1, 3, 224, 224))
    assert a.shape == (1, 196, 512)
    assert (vgg.feature_dim, vgg.grid, vgg.num_locations, vgg.name) == (512, (14, 14), 196, "vgg19")
    assert a.min() >= 0  # cut after conv5_4's ReLU, not before it
    # 36 layers: 16 convs with their ReLUs + 4 max-pools; the 5th pool is cut off
    assert len(vgg.cnn) == 36 and not isinstance(vgg.cnn[-1], nn.MaxPool2d)
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.cnn) == 16


def test_resnet101_shape_at_224(resnet):
    with torch.no_grad():
        a = resnet(torch.randn(1, 3, 224, 224))
    assert a.shape == (1, 196, 2048)
    assert (resnet.feature_dim, resnet.grid, resnet.num_locations) == (2048, (14, 14), 196)


def test_small_shapes_and_other_sizes():
    enc = small().eval()
    assert (enc.feature_dim, enc.grid, enc.num_locations) == (98, (8, 8), 64)
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 64, 98)
        for size in (96, 100, 63, 40):  # grid = size // 8, odd sizes included
            g = size // 8
            assert enc(torch.randn(1, 3, size, size)).shape == (1, g * g, 98)
            assert enc.grid_for(size, size) == (g, g)
        assert enc(torch.randn(1, 3, 48, 80)).shape == (1, 6 * 10, 98)
    assert small(channels=30).feature_dim == 32


def test_bad_input_names_the_problem():
    enc = small()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.randn(2, 64, 98))
    with pytest.raises(ValueError, match="unknown encoder 'vgg16'"):
        build_encoder("vgg16")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K'"):
        build_encoder("vgg19", weights="IMAGENET9K")
    with pytest.raises(ValueError, match="fine_tune"):
        build_encoder("small", fine_tune=-1)


def test_precomputed_is_the_identity():
    enc = build_encoder("precomputed", feature_dim=10, grid=4)
    a = torch.randn(3, 16, 10)
    assert enc(a) is a and enc.num_locations == 16
    with pytest.raises(ValueError, match=r"\(B, L, 10\)"):
        enc(torch.randn(3, 16, 11))


# -- coordinate channels and locality ---------------------------------------------------------


def test_coordinate_channels_at_flattened_positions():
    enc = small(channels=8, coord_scale=1.0).eval()
    with torch.no_grad():
        a = enc(torch.randn(2, 3, 64, 64))
    x, y = a[..., -2], a[..., -1]
    # hand values on the 8 x 8 grid, location i = row * 8 + col, x = -1 + 2 col / 7
    assert torch.allclose(a[:, 0, -2:], torch.tensor([-1.0, -1.0]))
    assert torch.allclose(a[:, 7, -2:], torch.tensor([1.0, -1.0]))  # row 0, last column
    assert torch.allclose(a[:, 8, -2:], torch.tensor([-1.0, -1 + 2 / 7]))  # row 1, column 0
    assert torch.allclose(a[:, 63, -2:], torch.tensor([1.0, 1.0]))
    assert torch.allclose(a[:, 8 * 3 + 5, -2:], torch.tensor([-1 + 10 / 7, -1 + 6 / 7]))
    for i in range(64):  # brute force over every location
        row, col = divmod(i, 8)
        assert torch.allclose(x[:, i], torch.tensor(-1 + 2 * col / 7))
        assert torch.allclose(y[:, i], torch.tensor(-1 + 2 * row / 7))


def test_coordinate_scale_default_and_none():
    image = torch.randn(1, 3, 64, 64)
    default, none = small(channels=8).eval(), small(channels=8, coord_scale=0).eval()
    assert default.coord_scale == 8.0  # the Shapes recipe's scale (chapter 6)
    none.load_state_dict(default.state_dict())
    with torch.no_grad():
        a, a_none = default(image), none(image)
    assert (default.feature_dim, none.feature_dim) == (10, 8)
    assert torch.equal(a[..., :8], a_none)
    # x = 8 (-1 + 2 col / 7), y = 8 (-1 + 2 row / 7): the corners are (-8, -8) and (8, 8)
    assert torch.allclose(a[0, 0, -2:], torch.tensor([-8.0, -8.0]))
    assert torch.allclose(a[0, 63, -2:], torch.tensor([8.0, 8.0]))
    assert torch.allclose(a[0, 8 * 3 + 5, -2:], torch.tensor([8 * (-1 + 10 / 7), 8 * (-1 + 6 / 7)]))
    assert torch.equal(coordinate_channels(1, 3, scale=2.0), torch.tensor(
        [[[-2.0, 0.0, 2.0]], [[0.0, 0.0, 0.0]]]))
    with pytest.raises(ValueError, match="coord_scale must be >= 0"):
        small(coord_scale=-1.0)


def test_receptive_field_against_hand_computation():
    # small: 3x3 convs with strides 1, 2, 2, 2, then one context conv of stride 1 on the 8 x 8
    # grid: 1 + 2*1 + 2*1 + 2*2 + 2*4 + 2*8 = 33
    assert receptive_field("small") == 33 == receptive_field(small())
    # paddings (left/top) 1, 1, 1, 0, 1 at input strides 1, 1, 2, 4, 8: start = -(1+1+2+0+8) = -12
    assert receptive_field_geometry(small()) == (33, 8, -12)
    # without the context block: 17 px from -4 (the four blocks alone)
    assert receptive_field_geometry(small(context=0)) == (17, 8, -4)
    # VGG-19 to conv5_4: 2 convs (+2+2), pool (+1), 2 convs (+4+4), pool (+2), 4 convs (+8*4),
    # pool (+4), 4 convs (+16*4), pool (+8), 4 convs (+32*4): 1 + 4 + 1 + 8 + 2 + 32 + 4 + 64 + 8
    # + 128 = 252; padding 1 per conv: start = -(2*1 + 2*2 + 4*4 + 4*8 + 4*16) = -118
    assert receptive_field_geometry("vgg19") == (252, 16, -118)
    # a hand-made chain: 5x5 conv, 2x2 pool, 3x3 conv with dilation 2: 1 + 4 + 1 + 2*2*2 = 14
    chain = nn.Sequential(
        nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, dilation=2)
    )
    assert receptive_field_geometry(chain) == (14, 2, -2)
    with pytest.raises(ValueError, match="does not know the layer"):
        receptive_field(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4, 2)))


@pytest.mark.parametrize("pixel", [(20, 37), (0, 0), (63, 63), (7, 8), (36, 3)])
def test_small_encoder_is_local_exactly(pixel):
    """Changing one pixel changes exactly the cells whose receptive field covers it (eval mode)."""
    enc = small(channels=16).eval()
    py, px = pixel
    x = torch.randn(1, 3, 64, 64)
    x2 = x.clone()
    x2[0, :, py, px] += 5.0
    with torch.no_grad():
        a = enc(torch.cat([x, x2]))
    changed = {i for i in range(64) if not torch.equal(a[0, i], a[1, i])}
    # hand: cell c covers pixels 8c - 12 .. 8c + 20 along each axis (33 px, start -12)
    covers = {r * 8 + c for r in range(8) for c in range(8)
              if 8 * r - 12 <= py <= 8 * r + 20 and 8 * c - 12 <= px <= 8 * c + 20}
    assert changed == covers
    assert torch.equal(a[0, :, -2:], a[1, :, -2:])  # coordinates never change


# -- weights ----------------------------------------------------------------------------------


def test_failed_download_raises_a_plain_explanation(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached checkpoint to fall back on
    calls = []

    def offline(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    for name, weights in [("vgg19", "IMAGENET1K_V1"), ("resnet101", "DEFAULT")]:
        with pytest.raises(PretrainedWeightsUnavailable) as info:
            build_encoder(name, weights=weights)
        message = str(info.value)
        assert calls[-1] in message and calls[-1].startswith("https://")
        assert "weights=None" in message and "Shapes" in message
        assert "Colab" in message and "TORCH_HOME" in message
        # where torchvision looks, as the reader's shell would reach it (sat_core.paths.shown_path)
        assert shown_path(tmp_path / "hub" / "checkpoints" / "x")[:-2] in message
    assert len(calls) == 2


def test_local_state_dict_round_trip(tmp_path):
    src = small(channels=8)
    with torch.no_grad():  # make the BatchNorm buffers non-default too
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    file = tmp_path / "small.pt"
    torch.save(src.state_dict(), file)
    dst = small(channels=8, weights=str(file))
    for (k, v), (k2, v2) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(src.eval()(x), dst.eval()(x))
    # DDP-style "module." prefixes are stripped
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, tmp_path / "ddp.pt")
    assert torch.equal(small(channels=8, weights=tmp_path / "ddp.pt").eval()(x), src(x))


def test_local_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_encoder("small", weights=tmp_path / "missing.pth")
    torch.save(small(channels=8).state_dict(), tmp_path / "c8.pt")
    with pytest.raises(ValueError, match="c8.pt.*do not fit.*another width"):
        build_encoder("small", weights=tmp_path / "c8.pt", channels=16)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="cannot read weights file .*junk.pt"):
        build_encoder("small", weights=tmp_path / "junk.pt")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list.pt does not hold a state_dict"):
        build_encoder("small", weights=tmp_path / "list.pt")


def test_torchvision_layout_state_dict_loads_into_vgg(vgg, tmp_path):
    """A full torchvision VGG-19 state_dict: features.* kept up to index 35, classifier dropped."""
    torch.manual_seed(1)
    sd = {"features." + k[len("cnn."):]: torch.randn_like(v) for k, v in vgg.state_dict().items()}
    sd["classifier.6.weight"] = torch.zeros(10, 4)  # must be ignored
    file = tmp_path / "vgg19-full.pth"
    torch.save(sd, file)
    enc = build_encoder("vgg19", weights=str(file))
    assert torch.equal(enc.cnn[34].weight, sd["features.34.weight"])  # conv5_4
    assert torch.equal(enc.cnn[0].bias, sd["features.0.bias"])  # conv1_1
    assert enc.weights_tag == str(file)


def test_torchvision_layout_state_dict_loads_into_resnet(resnet):
    """Keys conv1/bn1/layer1..4 map to cnn.*; fc is dropped. (The file route is tested on VGG.)"""
    changed = ("cnn.layer4.2.conv3.weight", "cnn.bn1.running_var")
    original = {k: v.clone() for k, v in resnet.state_dict().items() if k in changed}
    sd = {k[len("cnn."):]: v for k, v in resnet.state_dict().items()}
    sd["layer4.2.conv3.weight"] = torch.randn_like(sd["layer4.2.conv3.weight"])
    sd["bn1.running_var"] = sd["bn1.running_var"] + 1.5
    sd["fc.weight"] = torch.zeros(1000, 2048)
    sd["fc.bias"] = torch.zeros(1000)
    try:
        resnet.load_weights(sd, source="resnet101-full.pth")
        assert torch.equal(resnet.cnn.layer4[2].conv3.weight, sd["layer4.2.conv3.weight"])
        assert torch.equal(resnet.cnn.bn1.running_var, sd["bn1.running_var"])
        del sd["layer3.0.conv1.weight"]
        with pytest.raises(ValueError, match=r"resnet101-full.pth do not fit.*cnn.layer3.0.conv1"):
            resnet.load_weights(sd, source="resnet101-full.pth")
    finally:
        resnet.load_state_dict(original, strict=False)


# -- freezing and fine-tuning ------------------------------------------------------------------


def _grads(enc, size):
    enc.zero_grad(set_to_none=True)
    x = torch.randn(2, 3, size, size)
    out = enc(x)
    if out.requires_grad:
        out.square().mean().backward()
    return {n: p.grad is not None and p.grad.abs().sum() > 0 for n, p in enc.named_parameters()}


def test_vgg_fine_tune_levels(vgg):
    conv5 = {f"cnn.{i}.{p}" for i in (28, 30, 32, 34) for p in ("weight", "bias")}
    conv4 = {f"cnn.{i}.{p}" for i in (19, 21, 23, 25) for p in ("weight", "bias")}
    try:
        vgg.set_fine_tune(False)
        assert not any(_grads(vgg, 32).values()) and vgg.trainable_parameters() == []
        vgg.set_fine_tune(1)  # conv5_1 .. conv5_4
        got = _grads(vgg, 32)
        assert {n for n, g in got.items() if g} == conv5
        assert {n for n, p in vgg.named_parameters() if p.requires_grad} == conv5
        vgg.set_fine_tune(2)
        assert {n for n, g in _grads(vgg, 32).items() if g} == conv5 | conv4
        vgg.set_fine_tune(True)
        assert all(_grads(vgg, 32).values()) and len(vgg.trainable_parameters()) == 32
    finally:
        vgg.set_fine_tune(False)


def test_resnet_frozen_blocks_stay_in_eval_mode(resnet):
    try:
        resnet.set_fine_tune(1)  # layer4 only
        resnet.train()  # what a parent Captioner.train() does
        assert resnet.training and resnet.cnn.layer4.training
        assert all(m.training for m in resnet.cnn.layer4.modules())
        frozen = [resnet.cnn.bn1, resnet.cnn.layer1[0].bn1, resnet.cnn.layer3[22].bn3]
        assert not any(m.training for m in frozen)
        before = [m.running_mean.clone() for m in frozen]
        layer4_before = resnet.cnn.layer4[0].bn1.running_mean.clone()
        got = _grads(resnet, 64)
        for m, b in zip(frozen, before, strict=True):
            assert torch.equal(m.running_mean, b)  # frozen BatchNorm statistics untouched
        assert not torch.equal(resnet.cnn.layer4[0].bn1.running_mean, layer4_before)
        trained = {n for n, g in got.items() if g}
        assert trained and all(n.startswith("cnn.layer4.") for n in trained)
        assert {n for n, p in resnet.named_parameters() if p.requires_grad} == {
            n for n, _ in resnet.named_parameters() if n.startswith("cnn.layer4.")}
    finally:
        resnet.set_fine_tune(False)
        resnet.eval()


def test_small_default_trainable_and_freezable():
    enc = small(channels=8)
    assert all(_grads(enc.train(), 32).values())
    enc = small(channels=8, fine_tune=False).train()
    assert enc.training and not any(m.training for block in enc.cnn for m in block.modules())
    assert not any(_grads(enc, 32).values()) and enc.trainable_parameters() == []
    enc = small(channels=8, fine_tune=1).train()
    got = {n for n, g in _grads(enc, 32).items() if g}
    assert got == {"cnn.4.1.weight", "cnn.4.2.weight", "cnn.4.2.bias"}  # last conv + its BN
    assert enc.cnn[4].training and not enc.cnn[3].training


def test_torchvision_is_imported_only_inside_functions():
    """torchvision costs seconds to import (it pulls in torch._dynamo) and only VGG-19/ResNet-101
    need it: no module of sat_core imports it at module level, so Shapes training, evaluation,
    captioning and every chapter kernel never pay for it (read from the source, no subprocess)."""
    import ast

    package = Path(__file__).resolve().parents[1] / "sat_core"
    offenders, inside = [], 0
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n == "torchvision" or n.startswith("torchvision.") for n in names):
                if id(node) in top:
                    offenders.append(f"{path.relative_to(package)}:{node.lineno}")
                else:
                    inside += 1
    assert not offenders, f"module-level torchvision imports: {offenders}"
    assert inside >= 3  # the VGG-19 and ResNet-101 builders and the weights lookup import it
