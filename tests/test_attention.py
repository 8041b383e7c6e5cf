"""Soft attention f_att (Eq. 4-6, 13), the gate beta (Sec. 4.2.1) and the hard-attention helpers."""

from __future__ import annotations

import math

import pytest
import torch

from sat_core import fast
from sat_core.attention import (
    Gate,
    SoftAttention,
    argmax_locations,
    attention_entropy,
    attention_weights,
    expected_context,
    location_log_prob,
    sample_locations,
    select_context,
)
from sat_core.fast import _CpuScores

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
    """Without autograd on the CPU, scores take fast.py's chunked 2 sigmoid(2x) - 1 path: same e."""
    import sat_core.fast as fast

    a, h = inputs
    monkeypatch.setattr(fast, "CHUNK_BYTES", chunk_rows * L * A * 8)  # rows per chunk
    with torch.no_grad():
        assert fast.applies(att.project(a), att.U_a(h).unsqueeze(1))
        e = att.scores(att.project(a), h)
    by_hand = att.w_att(torch.tanh(att.project(a) + att.U_a(h).unsqueeze(1))).squeeze(-1)
    torch.testing.assert_close(e, by_hand, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # float32 too, to float rounding
        e32 = att.float().scores(att.project(a.float()), h.float())
    torch.testing.assert_close(e32, by_hand.float(), rtol=1e-5, atol=1e-5)
    calls = []
    monkeypatch.setattr(fast, "_chunked_scores", lambda *args: calls.append(args))
    att.scores(att.project(a.float()), h.float())  # with autograd: not the chunked path
    assert calls == []


@pytest.mark.parametrize("path", ["fast, no grad", "fast, autograd", "plain"])
@pytest.mark.parametrize("chunk_images", [1, 2, 100])
def test_k_rows_of_h_per_image_equal_the_image_repeated(att, inputs, monkeypatch, path,
                                                        chunk_images):
    """Beam search: k rows of h per image share the image's (a, a_proj); the scores, contexts
    and selected vectors equal those of the image repeated k times (every path of Eq. (4))."""
    import sat_core.fast as fast

    a, _ = inputs
    k = 4
    h = torch.randn(B * k, N_HID, generator=torch.Generator().manual_seed(7), dtype=a.dtype)
    a_rep = a.repeat_interleave(k, dim=0)  # (B*k, L, D): what the beams must not need
    monkeypatch.setattr(fast, "CHUNK_BYTES", chunk_images * k * L * A * 8)
    if path == "plain":
        monkeypatch.setattr(fast, "applies", lambda *args: False)
    with torch.set_grad_enabled(path == "fast, autograd"):
        e = att.scores(att.project(a), h)
        e_rep = att.scores(att.project(a_rep), h)
    assert e.shape == (B * k, L)
    torch.testing.assert_close(e, e_rep, rtol=1e-12, atol=1e-12)
    alpha = attention_weights(e)
    torch.testing.assert_close(expected_context(alpha, a), expected_context(alpha, a_rep))
    s = torch.arange(B * k) % L
    torch.testing.assert_close(select_context(a, s), select_context(a_rep, s))
    torch.testing.assert_close(select_context(a, s), a[torch.arange(B * k) // k, s])


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


def test_cpu_sampler_inverts_the_cdf_and_never_draws_a_zero_weight(monkeypatch):
    """sat_core.fast.sample_categorical by hand: with cumulative sums c = (0.2, 0.2, 0.7, 1.0) the
    draw for u is the i with c_{i-1} <= u < c_i, so the 0-weight location 1 is never drawn; rows
    whose weights sum to less than 1 (float) scale u by their total."""
    p = torch.tensor([[0.2, 0.0, 0.5, 0.3]]).expand(6, 4)
    u = torch.tensor([0.0, 0.1999, 0.2, 0.6999, 0.7, 0.9999])
    monkeypatch.setattr(fast.torch, "rand", lambda *a, **k: u.clone())
    assert fast.sample_categorical(p).tolist() == [0, 0, 2, 2, 3, 3]
    half = p / 2  # total 0.5: u = 0.7 maps to 0.35, location 2
    assert fast.sample_categorical(half).tolist() == [0, 0, 2, 2, 3, 3]
    monkeypatch.undo()
    alpha = torch.tensor([[0.0, 0.6, 0.0, 0.4, 0.0]], dtype=torch.float64).expand(20000, 5)
    s = sample_locations(alpha, torch.Generator().manual_seed(0))
    assert set(s.tolist()) == {1, 3}


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


def _scores_by_autograd(a_proj, u, weight, bias):
    return (torch.tanh(a_proj + u) @ weight.t()).squeeze(-1) + bias


def test_cpu_scores_match_the_formula_and_its_autograd_gradients():
    """The training path of Eq. (4) on the CPU (sigmoid form, hand-written backward)."""
    g = torch.Generator().manual_seed(5)
    a_proj = 4 * torch.randn(3, 5, 7, generator=g)
    a_proj[0, 0, :3] = torch.tensor([0.0, 30.0, -30.0])  # zero and saturation
    u = torch.randn(3, 1, 7, generator=g)
    weight, bias = torch.randn(1, 7, generator=g), torch.randn(1, generator=g)
    inputs = [t.clone().requires_grad_() for t in (a_proj, u, weight, bias)]
    ref_inputs = [t.clone().requires_grad_() for t in (a_proj, u, weight, bias)]
    e = _CpuScores.apply(*inputs)
    ref = _scores_by_autograd(*ref_inputs)
    torch.testing.assert_close(e, ref, rtol=0, atol=2e-6)
    g_e = torch.randn(3, 5, generator=g)
    grads = torch.autograd.grad((e * g_e).sum(), inputs)
    ref_grads = torch.autograd.grad((ref * g_e).sum(), ref_inputs)
    for mine, theirs, x in zip(grads, ref_grads, inputs, strict=True):
        assert mine.shape == x.shape
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    double = [t.detach().double().requires_grad_() for t in (a_proj / 4, u, weight, bias)]
    assert torch.autograd.gradcheck(_CpuScores.apply, double)
    # only the gradients asked for are computed (a frozen f_att: just dL/du)
    u_only = _CpuScores.apply(a_proj, inputs[1], weight, bias)
    (g_u,) = torch.autograd.grad((u_only * g_e).sum(), inputs[1])
    torch.testing.assert_close(g_u, ref_grads[1], rtol=1e-5, atol=1e-5)


def test_scores_take_the_cpu_training_path_and_agree_with_the_plain_one(att, inputs, monkeypatch):
    import sat_core.fast as fast

    a, h = (x.clone().requires_grad_() for x in inputs)
    e = att.scores(att.project(a), h)
    assert "CpuScores" in type(e.grad_fn).__name__
    monkeypatch.setattr(fast, "applies", lambda *args: False)  # the plain formula of scores
    e_plain = att.scores(att.project(a), h)
    assert "CpuScores" not in type(e_plain.grad_fn).__name__
    torch.testing.assert_close(e, e_plain, rtol=1e-12, atol=1e-12)
    w = torch.randn_like(e)
    params = (a, h, *att.parameters())
    for mine, theirs in zip(torch.autograd.grad((e * w).sum(), params),
                            torch.autograd.grad((e_plain * w).sum(), params), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
