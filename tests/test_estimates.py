"""Chapter 10's estimates: FLOP counts against hand counts and against torch's own counter on
the real modules, parameter counts against the model, and the arithmetic of the time estimate."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sat_core.encoder import build_encoder
from sat_core.estimates import (
    PEAK_TFLOPS,
    decoder_flops,
    decoder_parameters,
    estimate_seconds,
    feature_cache_bytes,
    vgg19_flops,
)
from sat_core.model import build_model

TINY = dict(L=2, D=3, m=4, n=5, attn=6, K=7)


def test_decoder_flops_by_hand_for_tiny_sizes():
    L, D, m, n, A, K, T = 2, 3, 4, 5, 6, 7, 2
    count = decoder_flops(**TINY, steps=T)
    once = L * D * A + 2 * D * n  # 36 + 30: W_a a, f_init_h and f_init_c
    assert once == 66
    per_step = n * A + L * A + L * D + n + m * 4 * n + (n + D) * 4 * n + n * m + D * m + m * K
    assert per_step == 30 + 12 + 6 + 5 + 80 + 160 + 20 + 12 + 28 == 353
    assert count.forward == 2 * (66 + 2 * 353) == 1544
    # backward: twice the forward, but W_a a, f_init and the context take no gradient for a
    constant_input = 66 + T * L * D
    assert count.backward == 2 * (2 * (66 + 2 * 353) - constant_input) == 2 * (1544 - 78)
    assert count.total == count.forward + count.backward
    assert decoder_flops(**TINY, steps=T, gate=False).forward == count.forward - 2 * T * n


def test_decoder_flops_equal_torchs_count_of_the_real_decoder():
    sizes, steps, batch = dict(L=5, D=6, m=7, n=8, attn=9, K=11), 4, 3
    model = build_model(None, sizes["K"], decoder_kwargs=dict(
        feature_dim=sizes["D"], embed_dim=sizes["m"], hidden_dim=sizes["n"],
        attn_dim=sizes["attn"], dropout=0.0)).train()
    a = torch.randn(batch, sizes["L"], sizes["D"])
    captions = torch.randint(4, sizes["K"], (batch, steps + 1))
    lengths = torch.full((batch,), steps + 1)  # steps + 1 tokens: `steps` decode steps
    ours = decoder_flops(**sizes, steps=steps)
    with FlopCounterMode(display=False) as forward:
        out = model(a, captions, lengths)
    assert forward.get_total_flops() == batch * ours.forward
    with FlopCounterMode(display=False) as backward:
        out.logits.sum().backward()
    # sat_core.fast computes w_att's weight gradient as a reduction, not a matrix product, so
    # torch's counter (matrix products only) misses exactly that term (L x attn per step)
    missed = batch * 2 * ours.terms["scores"]
    assert backward.get_total_flops() == batch * ours.backward - missed


def test_decoder_parameters_match_the_model():
    for gate in (True, False):
        model = build_model(None, TINY["K"], decoder_kwargs=dict(
            feature_dim=TINY["D"], embed_dim=TINY["m"], hidden_dim=TINY["n"],
            attn_dim=TINY["attn"], gate=gate))
        expected = sum(p.numel() for p in model.parameters())
        assert decoder_parameters(**{k: v for k, v in TINY.items() if k != "L"}, gate=gate) == \
            expected


def test_vgg19_flops_by_hand_and_against_torch():
    # at 16 px the grid is 16, 8, 4, 2, 1: sum of side^2 x C_in x C_out x 9 over the 16 convs
    macs = 9 * (16**2 * (3 * 64 + 64 * 64) + 8**2 * (64 * 128 + 128 * 128)
                + 4**2 * (128 * 256 + 3 * 256 * 256) + 2**2 * (256 * 512 + 3 * 512 * 512)
                + 1 * 4 * 512 * 512)
    assert vgg19_flops(16) == 2 * macs
    encoder = build_encoder("vgg19", weights=None, image_size=32).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder(torch.zeros(1, 3, 32, 32))
    assert counter.get_total_flops() == vgg19_flops(32)
    assert 38e9 < vgg19_flops(224) < 40e9  # the usual "19.6 G multiply-adds"
    with pytest.raises(ValueError, match="multiple of 16"):
        vgg19_flops(100)


def test_cache_size_and_time_estimates():
    assert feature_cache_bytes(8091) == 8091 * 196 * 512 * 2
    assert feature_cache_bytes(10, L=4, D=3, bytes_per_value=4) == 480
    assert estimate_seconds(8.1e12, "T4", "fp32", 1.0) == pytest.approx(1.0)
    assert estimate_seconds(312e12, "A100", "bf16", 0.25) == pytest.approx(4.0)
    assert PEAK_TFLOPS["A100"]["tf32"] == 156.0
    with pytest.raises(ValueError, match="no published peak for T4 at bf16; known: T4: fp32"):
        estimate_seconds(1e12, "T4", "bf16", 0.3)
    with pytest.raises(ValueError, match="fraction"):
        estimate_seconds(1e12, "T4", "fp32", 30)
    with pytest.raises(ValueError, match=">= 1"):
        decoder_flops(**TINY, steps=0)
