"""Stochastic hard attention (Sec. 4.1): the modes, and the gradient estimator of Eq. (12).

The estimator test enumerates every attention sequence s of a tiny decoder (L=3 locations,
T=3 steps: 27 sequences) with ``mode="hard-forced"``, which gives the lower bound
L_s = sum_s p(s|a) log p(y|s,a) (Eq. 9) and its exact gradient by autograd. The Monte Carlo
estimate is the gradient of ``hard_attention_surrogate`` over N = 20000 samples drawn in ONE batched
forward (one image replicated N times).

Statistical tolerance: the per-sample estimate g(s) depends only on the sequence s, so its
per-sample spread is known exactly from the 27 per-sequence gradients and the sampled counts; the
standard error of the mean of coordinate j is SE_j = std_j / sqrt(N). Every coordinate must lie
within 5 SE_j of the exact gradient (for a correct estimator each coordinate fails with
probability ~6e-7; the seed is fixed, so the test is deterministic). The test also checks that it
has power: dropping the score-function term puts some coordinate > 10 SE away.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from sat_core.attention import attention_entropy
from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.losses import MovingAverageBaseline, hard_attention_surrogate, sequence_log_likelihood

K, D, M, N_HID, A, L, T = 4, 3, 2, 3, 3, 3, 3
N_SAMPLES = 20000


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = DecoderConfig(vocab_size=K, feature_dim=D, embed_dim=M, hidden_dim=N_HID, attn_dim=A,
                        dropout=0.0, attention="hard")
    dec = AttentionDecoder(cfg).double()
    with torch.no_grad():  # peakier alpha, and words that depend strongly on the context
        dec.attention.w_att.weight.mul_(4.0)
        dec.attention.W_a.weight.mul_(3.0)
        for layer in (dec.T_hz, dec.L_z, dec.L_o):
            layer.weight.mul_(3.0)
    g = torch.Generator().manual_seed(1)
    a = 2 * torch.randn(1, L, D, generator=g, dtype=torch.float64)
    y_in = torch.tensor([[1, 2, 3]])
    targets = torch.tensor([[2, 3, 0]])
    lengths = torch.tensor([T])
    return dec, a, y_in, targets, lengths


def _rep(x, n):
    return x.expand(n, *x.shape[1:])


def _flat_grad(dec):
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
        for p in dec.parameters()
    ])


def _surrogate_grad(dec, a, y_in, targets, lengths, mode, s=None, b=0.0, generator=None,
                    lambda_r=1.0):
    """Gradient of the surrogate, rescaled to the MEAN per-caption estimate g (not -g/T)."""
    dec.zero_grad()
    out = dec(a, y_in, lengths, mode=mode, s=s, generator=generator)
    log_p_y = sequence_log_likelihood(out.logits, targets, lengths)
    n_tokens = lengths.sum()
    loss = hard_attention_surrogate(log_p_y, out.log_p_s, out.entropy, n_tokens, b,
                                    lambda_r=lambda_r)
    loss.backward()
    # loss = -(1/N_tok) sum_b g_b and every caption has T tokens -> mean g = -T * grad
    return -_flat_grad(dec) * n_tokens / len(lengths), out


@pytest.fixture(scope="module")
def enumeration(setup):
    """p(s|a), log p(y|s,a), exact dL_s/dW and the per-sequence estimates g(s) (b = 0)."""
    dec, a, y_in, targets, lengths = setup
    S = torch.tensor(list(itertools.product(range(L), repeat=T)))  # (27, T)
    n = len(S)
    dec.zero_grad()
    out = dec(_rep(a, n), _rep(y_in, n), _rep(lengths, n), mode="hard-forced", s=S)
    log_p_y = sequence_log_likelihood(out.logits, _rep(targets, n), _rep(lengths, n))
    p_s = out.log_p_s.sum(1).exp()
    L_s = (p_s * log_p_y).sum()  # Eq. (9)
    L_s.backward()
    exact = _flat_grad(dec)
    # g(s) with b = 0 ("zero"), and its pathwise part alone, lambda_r = 0 ("path")
    per_seq = {
        name: torch.stack([
            _surrogate_grad(dec, a, y_in, targets, lengths, "hard-forced", s=S[k : k + 1],
                            lambda_r=lambda_r)[0]
            for k in range(n)
        ])
        for name, lambda_r in (("zero", 1.0), ("path", 0.0))
    }
    return dict(S=S, p_s=p_s.detach(), log_p_y=log_p_y.detach(), exact=exact, per_seq=per_seq)


def test_enumeration_is_a_distribution(enumeration):
    torch.testing.assert_close(enumeration["p_s"].sum(), torch.tensor(1.0, dtype=torch.float64))


def test_surrogate_gradient_is_unbiased(setup, enumeration):
    dec, a, y_in, targets, lengths = setup
    gen = torch.Generator().manual_seed(2)
    mc, out = _surrogate_grad(dec, _rep(a, N_SAMPLES), _rep(y_in, N_SAMPLES),
                              _rep(targets, N_SAMPLES), _rep(lengths, N_SAMPLES), "hard-sample",
                              generator=gen)
    # which of the 27 sequences each sample drew
    index = (out.s * torch.tensor([L * L, L, 1])).sum(1)
    counts = torch.bincount(index, minlength=L**T).double()
    g = enumeration["per_seq"]["zero"]  # (27, P): the estimate for each sequence
    # the batched surrogate's gradient is exactly the average of the per-sample estimates
    mean = counts @ g / N_SAMPLES
    torch.testing.assert_close(mc, mean, rtol=1e-8, atol=1e-10)
    var = counts @ (g - mean) ** 2 / (N_SAMPLES - 1)
    se = (var / N_SAMPLES).sqrt()
    exact = enumeration["exact"]
    z = (mc - exact).abs() / (se + 1e-12)
    assert (exact.abs() > 1e-3).sum() > 20, "the test needs a non-trivial gradient"
    assert z.max() < 5.0, f"max |MC - exact| = {z.max():.2f} standard errors"
    # power: without the score-function term lambda_r (R - b) d log p(s) the estimate is biased
    path_only = enumeration["p_s"] @ enumeration["per_seq"]["path"]
    assert ((path_only - exact).abs() / (se + 1e-12)).max() > 10.0


def test_moving_average_baseline_lowers_the_variance(setup, enumeration):
    dec, a, y_in, targets, lengths = setup
    p_s, log_p_y, exact = enumeration["p_s"], enumeration["log_p_y"], enumeration["exact"]
    expected_reward = float(p_s @ log_p_y)
    # run the moving average on sampled batches, as training would
    base, gen = MovingAverageBaseline(), torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _ in range(80):
            out = dec(_rep(a, 64), _rep(y_in, 64), _rep(lengths, 64), mode="hard-sample", generator=gen)
            base.update(sequence_log_likelihood(out.logits, _rep(targets, 64), _rep(lengths, 64)))
    b = float(base.value)
    assert abs(b - expected_reward) < 0.05 * abs(expected_reward)

    def total_variance(per_seq):  # E||g - E g||^2, exactly, by enumeration
        mean = p_s @ per_seq
        torch.testing.assert_close(mean, exact)  # unbiased for every constant b
        return float(p_s @ ((per_seq - mean) ** 2).sum(1))

    with_b = torch.stack([
        _surrogate_grad(dec, a, y_in, targets, lengths, "hard-forced", s=s[None], b=b)[0]
        for s in enumeration["S"]
    ])
    v0, vb = total_variance(enumeration["per_seq"]["zero"]), total_variance(with_b)
    assert vb < 0.5 * v0, (vb, v0)


def test_hard_argmax_picks_the_most_likely_location(setup):
    dec, a, y_in, _, lengths = setup
    a3 = torch.cat([a, a.flip(1), 0.5 * a])
    out = dec(a3, _rep(y_in, 3), _rep(lengths, 3), mode="hard-argmax")
    assert torch.equal(out.s, out.alpha.argmax(-1))
    torch.testing.assert_close(out.log_p_s, out.alpha.gather(-1, out.s[..., None])[..., 0].log())
    ann = dec.precompute(a3)
    st = dec.step(_rep(y_in, 3)[:, 0], dec.init_state(a3), ann, mode="hard-argmax")
    assert torch.equal(st.s, st.alpha.argmax(-1))
    torch.testing.assert_close(st.z_hat, st.beta[:, None] * a3[torch.arange(3), st.s])


def test_hard_expect_equals_soft(setup):
    dec, a, y_in, _, lengths = setup
    soft = dec(a, y_in, lengths, mode="soft")
    expect = dec(a, y_in, lengths, mode="hard-expect")
    torch.testing.assert_close(expect.logits, soft.logits)
    torch.testing.assert_close(expect.alpha, soft.alpha)
    assert expect.s is None and expect.log_p_s is None
    torch.testing.assert_close(expect.entropy, attention_entropy(soft.alpha.log()))


def test_sampling_is_reproducible_and_replayable(setup):
    dec, a, y_in, _, lengths = setup
    n = 50
    args = (_rep(a, n), _rep(y_in, n), _rep(lengths, n))
    o1 = dec(*args, mode="hard-sample", generator=torch.Generator().manual_seed(7))
    o2 = dec(*args, mode="hard-sample", generator=torch.Generator().manual_seed(7))
    assert torch.equal(o1.s, o2.s)
    assert len(set(map(tuple, o1.s.tolist()))) > 1  # the samples do differ between rows
    replay = dec(*args, mode="hard-forced", s=o1.s)
    torch.testing.assert_close(replay.logits, o1.logits)
    torch.testing.assert_close(replay.log_p_s, o1.log_p_s)
    torch.testing.assert_close(o1.entropy, attention_entropy(o1.alpha.log()))


def test_mix_replaces_the_sample_by_its_expectation(setup):
    dec, a, y_in, _, lengths = setup
    n = 6
    args = (_rep(a, n), _rep(y_in, n), _rep(lengths, n))
    mix = torch.tensor([True, False, True, False, False, True])
    out = dec(*args, mode="hard-sample", mix=mix, generator=torch.Generator().manual_seed(5))
    soft = dec(*args, mode="soft")
    torch.testing.assert_close(out.logits[mix], soft.logits[mix])  # expected context throughout
    torch.testing.assert_close(out.alpha[mix], soft.alpha[mix])
    assert (out.s[mix] == -1).all() and (out.log_p_s[mix] == 0).all()
    # the other rows are ordinary samples: replaying their locations gives the same result
    replay = dec(a.expand(3, -1, -1), y_in.expand(3, -1), lengths.expand(3), mode="hard-forced",
                 s=out.s[~mix])
    torch.testing.assert_close(out.logits[~mix], replay.logits)
    torch.testing.assert_close(out.log_p_s[~mix], replay.log_p_s)
    assert (out.log_p_s[~mix] < 0).all()


def test_forced_locations_must_be_valid(setup):
    dec, a, y_in, _, lengths = setup
    with pytest.raises(ValueError, match="outside"):
        dec(a, y_in, lengths, mode="hard-forced", s=torch.tensor([[0, 1, L]]))
    with pytest.raises(ValueError, match="shape"):
        dec(a, y_in, lengths, mode="hard-forced", s=torch.tensor([[0, 1]]))
