"""sat_core.reinforce: per-draw estimates of Eq. (12), their mean and variance for any baseline b.

References are independent of the module's algebra: (1) the full surrogate of
``hard_attention_surrogate`` WITH the baseline b, backpropagated draw by draw with the same
random draws, then ``torch.var``; (2) the exact gradient of L_s (Eq. 9) by enumerating all L^T
attention sequences of a tiny decoder with ``mode="hard-forced"``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.losses import (
    hard_attention_surrogate,
    reward_to_go,
    sequence_log_likelihood,
    token_log_likelihood,
)
from sat_core.reinforce import parameter_groups, sample_estimates


def tiny_decoder(K=5, D=3, seed=0):
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=K, feature_dim=D, embed_dim=2, hidden_dim=3, attn_dim=3,
                        dropout=0.0, attention="hard")
    dec = AttentionDecoder(cfg).double()
    with torch.no_grad():  # peaky alpha and words that depend on the context
        dec.attention.w_att.weight.mul_(4.0)
        for layer in (dec.T_hz, dec.L_z, dec.L_o):
            layer.weight.mul_(3.0)
    return dec


def batch():
    g = torch.Generator().manual_seed(1)
    a = 2 * torch.randn(2, 4, 3, generator=g, dtype=torch.float64)
    captions_in = torch.tensor([[1, 2, 3, 4], [1, 4, 0, 0]])
    targets = torch.tensor([[2, 3, 4, 2], [4, 2, 0, 0]])
    lengths = torch.tensor([4, 2])
    return a, captions_in, targets, lengths


def per_draw_gradients(dec, a, captions_in, targets, lengths, n, b, seed, lambda_e,
                       rewards=None):
    """Reference: -d surrogate(b)/dW for each draw, stacked (n, P); batch-mean rewards appended
    to ``rewards``."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        dec.zero_grad()
        out = dec(a, captions_in, lengths, mode="hard-sample", generator=gen)
        log_p_y = sequence_log_likelihood(out.logits, targets, lengths)
        if rewards is not None:
            rewards.append(float(log_p_y.detach().mean()))
        loss = hard_attention_surrogate(log_p_y, out.log_p_s, out.entropy, lengths.sum(), b,
                                        lambda_r=0.7, lambda_e=lambda_e)
        loss.backward()
        rows.append(torch.cat([-(p.grad if p.grad is not None else torch.zeros_like(p))
                               .reshape(-1) for p in dec.parameters()]))
    return torch.stack(rows)


def test_mean_and_variance_match_draw_by_draw_surrogate_gradients_for_any_baseline():
    dec = tiny_decoder()
    a, y_in, y_out, lengths = batch()
    n, seed = 12, 3
    groups = {name: list(m.parameters()) for name, m in dec.named_children() if
              any(True for _ in m.parameters())}
    stats = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=n, lambda_r=0.7,
                             lambda_e=0.05, groups=groups,
                             generator=torch.Generator().manual_seed(seed))
    assert stats.n == n
    for b in (0.0, -3.0, 1.5):
        rewards = []
        ref = per_draw_gradients(dec, a, y_in, y_out, lengths, n, b, seed, lambda_e=0.05,
                                 rewards=rewards)
        torch.testing.assert_close(stats.rewards, torch.tensor(rewards, dtype=torch.float64))
        assert stats.mean_reward == pytest.approx(sum(rewards) / n)
        torch.testing.assert_close(stats.mean(b), ref.mean(0), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(stats.coordinate_variance(b), ref.var(0), rtol=1e-7,
                                   atol=1e-12)
        assert stats.variance(b) == pytest.approx(float(ref.var(0).sum()), rel=1e-8)
        sl = stats.groups["attention"]
        assert stats.variance(b, "attention") == pytest.approx(float(ref[:, sl].var(0).sum()),
                                                               rel=1e-8)
    # the draws really differ (a variance of zero would make the comparison vacuous)
    assert stats.variance(0.0, "attention") > 1e-6
    # the curve at once equals the draw-by-draw variances at each b (the figure of chapter 7)
    bs = [-3.0, -0.5, 0.0, 1.5, 40.0]
    for group in (None, "attention"):
        sl = stats.groups[group] if group else slice(None)
        torch.testing.assert_close(
            stats.variance_curve(bs, group),
            torch.tensor([float(per_draw_gradients(dec, a, y_in, y_out, lengths, n, b, seed,
                                                   lambda_e=0.05)[:, sl].var(0).sum())
                          for b in bs], dtype=torch.float64), rtol=1e-7, atol=1e-12)


def test_the_mean_is_the_exact_gradient_of_the_lower_bound_whatever_the_baseline():
    dec = tiny_decoder(seed=2)
    g = torch.Generator().manual_seed(5)
    L, T = 3, 2
    a = 2 * torch.randn(1, L, 3, generator=g, dtype=torch.float64)
    y_in, y_out, lengths = torch.tensor([[1, 2]]), torch.tensor([[2, 3]]), torch.tensor([T])
    # exact dL_s/dW by enumerating the L^T attention sequences (Eq. 9)
    S = torch.tensor(list(itertools.product(range(L), repeat=T)))
    rep = lambda x: x.expand(len(S), *x.shape[1:])  # noqa: E731
    dec.zero_grad()
    out = dec(rep(a), rep(y_in), rep(lengths), mode="hard-forced", s=S)
    log_p_y = sequence_log_likelihood(out.logits, rep(y_out), rep(lengths))
    L_s = (out.log_p_s.sum(1).exp() * log_p_y).sum()
    torch.testing.assert_close(out.log_p_s.sum(1).exp().sum(), torch.tensor(1.0).double())
    L_s.backward()
    # the estimator has the surrogate's scale: 1/N tokens (here N = T)
    exact = torch.cat([p.grad.reshape(-1) for p in dec.parameters()]) / T

    p_s = out.log_p_s.sum(1).exp().detach()

    def per_sequence(b):
        """g(s) for each of the L^T sequences: the surrogate's gradient with s forced."""
        rows = []
        for k in range(len(S)):
            dec.zero_grad()
            o = dec(a, y_in, lengths, mode="hard-forced", s=S[k : k + 1])
            lp = sequence_log_likelihood(o.logits, y_out, lengths)
            hard_attention_surrogate(lp, o.log_p_s, None, lengths.sum(), b).backward()
            rows.append(torch.cat([-p.grad.reshape(-1) for p in dec.parameters()]))
        return torch.stack(rows)

    n = 100
    stats = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=n,
                             groups={"all": list(dec.parameters())},
                             generator=torch.Generator().manual_seed(7))
    assert float(exact.abs().max()) > 1e-3  # power: a gradient worth estimating
    for b in (0.0, -4.0):
        g = per_sequence(b)
        # Eq. (10) = E_s[Eq. (11)/(12)]: exactly, for any b
        torch.testing.assert_close(p_s @ g, exact, rtol=1e-8, atol=1e-12)
        # the sampled mean lies within 5 exact standard errors (the spread of g(s) is known)
        se = ((p_s @ (g - exact) ** 2) / n).sqrt()
        err = (stats.mean(b) - exact).abs()
        assert bool((err <= 5 * se + 1e-10).all()), float((err / (se + 1e-30)).max())
    # the baseline changes the spread, not the mean: g(b) - g(0) = -b u has mean 0
    u = (per_sequence(0.0) - per_sequence(1.0))  # = u(s) for each sequence
    torch.testing.assert_close(p_s @ u, torch.zeros_like(exact), rtol=0, atol=1e-12)
    assert float(u.abs().max()) > 1e-3


def test_the_baseline_only_acts_on_parameters_upstream_of_alpha():
    dec = tiny_decoder()
    with torch.no_grad():
        dec.L_o.bias.fill_(-3.0)  # log p(y|s,a) far from 0: the baseline matters
    a, y_in, y_out, lengths = batch()
    stats = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=40,
                             generator=torch.Generator().manual_seed(0))
    assert set(stats.groups) == set(parameter_groups(dec))
    # the output layer L_o does not influence where the model looks: u is 0 there
    assert float(stats.s_u[stats.groups["L_o"]].abs().max()) == 0.0
    assert stats.variance(0.0, "L_o") == stats.variance(-20.0, "L_o")
    with pytest.raises(ValueError, match="does not act on group 'L_o'"):
        stats.best_baseline("L_o")
    # upstream of alpha, the best constant b beats b = 0 and is a minimum
    b = stats.best_baseline("attention")
    assert b < 0  # rewards log p(y|s,a) are negative
    v = stats.variance(b, "attention")
    assert v < 0.5 * stats.variance(0.0, "attention")
    assert v < stats.variance(b + 0.5, "attention") and v < stats.variance(b - 0.5, "attention")


def test_bad_arguments():
    dec = tiny_decoder()
    a, y_in, y_out, lengths = batch()
    with pytest.raises(ValueError, match="n_samples must be >= 2"):
        sample_estimates(dec, a, y_in, y_out, lengths, n_samples=1)
    stats = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=2)
    with pytest.raises(KeyError, match="unknown parameter group 'nope'.*attention"):
        stats.variance(0.0, "nope")
    assert dec.training  # the train/eval mode is restored


def test_reward_to_go_is_unbiased_exactly_for_any_per_word_baseline():
    """Crediting s_t only with the words from t on keeps E_s[g] = dL_s/dW (Eq. 10) exactly."""
    dec = tiny_decoder(seed=4)
    g = torch.Generator().manual_seed(6)
    L, T = 3, 3
    a = 2 * torch.randn(1, L, 3, generator=g, dtype=torch.float64)
    y_in, y_out = torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]])
    lengths = torch.tensor([T])
    S = torch.tensor(list(itertools.product(range(L), repeat=T)))
    rep = lambda x: x.expand(len(S), *x.shape[1:])  # noqa: E731
    dec.zero_grad()
    out = dec(rep(a), rep(y_in), rep(lengths), mode="hard-forced", s=S)
    log_p_y = sequence_log_likelihood(out.logits, rep(y_out), rep(lengths))
    p_s = out.log_p_s.sum(1).exp()
    (p_s * log_p_y).sum().backward()
    exact = torch.cat([p.grad.reshape(-1) for p in dec.parameters()]) / T
    p_s = p_s.detach()

    def per_sequence(b, to_go):
        rows = []
        for k in range(len(S)):
            dec.zero_grad()
            o = dec(a, y_in, lengths, mode="hard-forced", s=S[k : k + 1])
            words = token_log_likelihood(o.logits, y_out, lengths)
            step = reward_to_go(words.detach(), lengths, b) if to_go else None
            hard_attention_surrogate(words.sum(1), o.log_p_s, None, lengths.sum(), b,
                                     step_reward=step).backward()
            rows.append(torch.cat([-p.grad.reshape(-1) for p in dec.parameters()]))
        return torch.stack(rows)

    assert float(exact.abs().max()) > 1e-3
    for b in (0.0, -1.5):
        g_to_go = per_sequence(b, to_go=True)
        torch.testing.assert_close(p_s @ g_to_go, exact, rtol=1e-8, atol=1e-12)
    # it is a different estimator (not Eq. 12 renamed): the per-sequence gradients differ
    assert float((per_sequence(0.0, True) - per_sequence(0.0, False)).abs().max()) > 1e-4


def per_draw_to_go_gradients(dec, a, captions_in, targets, lengths, n, b, seed):
    """Reference for reward="to-go": -d surrogate/dW per draw, the step rewards built by hand."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        dec.zero_grad()
        out = dec(a, captions_in, lengths, mode="hard-sample", generator=gen)
        words = token_log_likelihood(out.logits, targets, lengths)
        T = words.shape[1]
        step = torch.zeros_like(words)
        for i in range(len(lengths)):
            for t in range(int(lengths[i])):  # the words from t on, less b for each of them
                step[i, t] = words[i, t:lengths[i]].sum() - b * (int(lengths[i]) - t)
        assert T == captions_in.shape[1]
        loss = hard_attention_surrogate(words.sum(1), out.log_p_s, None, lengths.sum(), 0.0,
                                        lambda_r=0.7, step_reward=step.detach())
        loss.backward()
        rows.append(torch.cat([-(p.grad if p.grad is not None else torch.zeros_like(p))
                               .reshape(-1) for p in dec.parameters()]))
    return torch.stack(rows)


def test_to_go_statistics_match_draw_by_draw_gradients_for_any_per_word_baseline():
    dec = tiny_decoder()
    a, y_in, y_out, lengths = batch()
    n, seed = 10, 4
    stats = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=n, lambda_r=0.7,
                             groups={"all": list(dec.parameters())}, reward="to-go",
                             generator=torch.Generator().manual_seed(seed))
    for b in (0.0, -1.2):
        ref = per_draw_to_go_gradients(dec, a, y_in, y_out, lengths, n, b, seed)
        torch.testing.assert_close(stats.mean(b), ref.mean(0), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(stats.coordinate_variance(b), ref.var(0), rtol=1e-7,
                                   atol=1e-12)
    # the rewards it reports are per word (what the per-word moving average tracks)
    caption = sample_estimates(dec, a, y_in, y_out, lengths, n_samples=n, lambda_r=0.7,
                               groups={"all": list(dec.parameters())},
                               generator=torch.Generator().manual_seed(seed))
    per_word = caption.rewards * len(lengths) / lengths.sum()
    torch.testing.assert_close(stats.rewards, per_word.double())
    with pytest.raises(ValueError, match="to-go"):
        sample_estimates(dec, a, y_in, y_out, lengths, n_samples=2, reward="words")
