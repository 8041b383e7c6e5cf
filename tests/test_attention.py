"""Soft attention f_att (Eq. 4-6, 13), the gate beta (Sec. 4.2.1) and the hard-attention helpers."""

from __future__ import annotations

import math

import pytest
import torch

from sat_core.attention import (
    Gate,
    SoftAttention,
    _CpuTanhOfSum,
    argmax_locations,
    attention_entropy,
    attention_weights,
    expected_context,
    location_log_prob,
    sample_locations,
    select_context,
)

B, L, D, N_HID, A = 3, 5, 4, 6, 7


@pytest.fixture
def att() -> SoftAttention:
    torch.manual_seed(0)
    return SoftAttention(D, N_HID, A).double()


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    h = torch.randn(B, N_HID, generator=g, dtype=torch.float64)
    return a, h


def test_alpha_is_a_distribution_and_context_is_its_average(att, inputs):
    a, h = inputs
    z, alpha = att(a, h)
    assert alpha.shape == (B, L) and z.shape == (B, D)
    assert (alpha > 0).all()
    torch.testing.assert_close(alpha.sum(1), torch.ones(B, dtype=torch.float64))
    for b in range(B):
        manual = sum(alpha[b, i] * a[b, i] for i in range(L))
        torch.testing.assert_close(z[b], manual)


def test_scores_follow_the_mlp_formula_by_hand(att, inputs):
    a, h = inputs
    W, bias = att.W_a.weight, att.W_a.bias
    U = att.U_a.weight
    w, c = att.w_att.weight[0], att.w_att.bias[0]
    e = att.scores(att.project(a), h)
    for b in range(B):
        for i in range(L):
            expected = w @ torch.tanh(W @ a[b, i] + bias + U @ h[b]) + c
            torch.testing.assert_close(e[b, i], expected)
    # alpha = softmax(e), Eq. (5), by hand
    alpha = attention_weights(e)
    torch.testing.assert_close(alpha, e.exp() / e.exp().sum(1, keepdim=True))


@pytest.mark.parametrize("chunk_rows", [1, 2, 100])
def test_decoding_scores_equal_the_formula_in_every_chunk(att, inputs, monkeypatch, chunk_rows):
    """Without autograd on the CPU, scores take the chunked 2 sigmoid(2x) - 1 path: same e."""
    import sat_core.attention as attention

    a, h = inputs
    monkeypatch.setattr(attention, "CHUNK_BYTES", chunk_rows * L * A * 8)  # rows per chunk
    with torch.no_grad():
        assert attention._cpu_inference(att.project(a), att.U_a(h).unsqueeze(1))
        e = att.scores(att.project(a), h)
    by_hand = att.w_att(torch.tanh(att.project(a) + att.U_a(h).unsqueeze(1))).squeeze(-1)
    torch.testing.assert_close(e, by_hand, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # float32 too, to float rounding
        e32 = att.float().scores(att.project(a.float()), h.float())
    torch.testing.assert_close(e32, by_hand.float(), rtol=1e-5, atol=1e-5)
    assert not attention._cpu_inference(att.project(a.float()), h.float())  # grad on: the other path


def test_gradcheck_attention_wrt_a_and_h(att, inputs):
    a, h = (x.clone().requires_grad_() for x in inputs)
    assert torch.autograd.gradcheck(lambda a_, h_: att(a_, h_), (a, h))


def test_gate_is_one_scalar_per_example(inputs):
    _, h = inputs
    torch.manual_seed(2)
    gate = Gate(N_HID).double()
    beta = gate(h)
    assert beta.shape == (B,)
    assert ((beta > 0) & (beta < 1)).all()
    w, b0 = gate.f_beta.weight[0], gate.f_beta.bias[0]
    for b in range(B):
        torch.testing.assert_close(beta[b], 1 / (1 + torch.exp(-(w @ h[b] + b0))))
    hh = h.clone().requires_grad_()
    assert torch.autograd.gradcheck(gate, (hh,))


def test_softmax_is_float32_under_low_precision():
    e = torch.tensor([[0.0, 0.01, 0.02, 0.03]], dtype=torch.bfloat16)
    alpha = attention_weights(e)
    assert alpha.dtype == torch.float32
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0))


def test_sampling_follows_alpha_and_is_reproducible():
    alpha = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).expand(40000, 4)
    s1 = sample_locations(alpha, torch.Generator().manual_seed(3))
    s2 = sample_locations(alpha, torch.Generator().manual_seed(3))
    assert s1.dtype == torch.long and s1.shape == (40000,)
    assert torch.equal(s1, s2)
    freq = torch.bincount(s1, minlength=4).double() / len(s1)
    p = alpha[0].double()
    se = (p * (1 - p) / len(s1)).sqrt()
    assert ((freq - p).abs() < 5 * se).all(), (freq, p)


def test_argmax_select_log_prob_entropy(inputs):
    a, _ = inputs
    e = torch.tensor([[0.0, 2.0, 1.0, -1.0, 0.5],
                      [3.0, 0.0, 0.0, 0.0, 0.0],
                      [0.0, 0.0, 0.0, 0.0, 4.0]], dtype=torch.float64)
    alpha = attention_weights(e)
    s = argmax_locations(alpha)
    assert s.tolist() == [1, 0, 4]
    z = select_context(a, s)
    for b in range(B):
        torch.testing.assert_close(z[b], a[b, s[b]])
    s_any = torch.tensor([3, 2, 0])
    torch.testing.assert_close(location_log_prob(e, s_any), alpha[torch.arange(B), s_any].log())
    H = attention_entropy(e)
    torch.testing.assert_close(H, torch.tensor([-sum(p * math.log(p) for p in row) for row in alpha.tolist()],
                                               dtype=torch.float64))
    # uniform weights have the maximal entropy log L
    torch.testing.assert_close(attention_entropy(torch.zeros(2, L)), torch.full((2,), math.log(L)))


def test_log_prob_stays_finite_where_alpha_underflows():
    e = torch.tensor([[0.0, -2000.0]])
    assert attention_weights(e)[0, 1] == 0  # alpha underflows ...
    lp = location_log_prob(e, torch.tensor([1]))
    torch.testing.assert_close(lp, torch.tensor([-2000.0]))  # ... but log alpha does not
    assert torch.isfinite(attention_entropy(e)).all()


def test_expected_context_matches_soft_forward(att, inputs):
    a, h = inputs
    z, alpha = att(a, h)
    torch.testing.assert_close(expected_context(alpha, a), z)
    # with a one-hot alpha the expectation is the selected annotation vector
    onehot = torch.nn.functional.one_hot(torch.tensor([2, 0, 4]), L).double()
    torch.testing.assert_close(expected_context(onehot, a), select_context(a, torch.tensor([2, 0, 4])))


def test_cpu_tanh_of_sum_matches_torch_tanh():
    g = torch.Generator().manual_seed(5)
    x = 4 * torch.randn(3, 5, 7, generator=g)
    x[0, 0, :3] = torch.tensor([0.0, 30.0, -30.0])  # zero and saturation
    x.requires_grad_()
    y = torch.randn(3, 1, 7, generator=g).requires_grad_()
    out = _CpuTanhOfSum.apply(x, y)
    ref = torch.tanh(x + y)
    torch.testing.assert_close(out, ref, rtol=0, atol=3e-7)
    w = torch.randn(3, 5, 7, generator=g)
    gx, gy = torch.autograd.grad((out * w).sum(), (x, y))
    rx, ry = torch.autograd.grad((ref * w).sum(), (x, y))
    torch.testing.assert_close(gx, rx, rtol=0, atol=1e-6)
    torch.testing.assert_close(gy, ry, rtol=0, atol=1e-5)
    assert gy.shape == y.shape
    xd, yd = (t.detach().double().requires_grad_() for t in (x, y))
    assert torch.autograd.gradcheck(_CpuTanhOfSum.apply, (xd, yd))
