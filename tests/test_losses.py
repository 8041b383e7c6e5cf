"""Losses: masked NLL, the doubly stochastic penalty (Eq. 14), the hard-attention surrogate (Eq. 12)."""

from __future__ import annotations

import math

import pytest
import torch

from sat_core.decoder import DecoderOutput
from sat_core.losses import (
    MovingAverageBaseline,
    attention_entropy,
    caption_loss,
    doubly_stochastic_penalty,
    hard_attention_surrogate,
    masked_nll,
    reward_to_go,
    sequence_log_likelihood,
    token_log_likelihood,
)


def small_logits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([[1, 3, 0], [2, 2, 3]])
    lengths = torch.tensor([3, 1])
    return logits, targets, lengths


def test_masked_nll_by_hand():
    logits, targets, lengths = small_logits()
    total, count = 0.0, 0
    for b in range(2):
        for t in range(int(lengths[b])):
            row = logits[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in row))
            total += log_z - row[targets[b, t]]
            count += 1
    assert masked_nll(logits, targets, lengths).item() == pytest.approx(total / count, rel=1e-12)
    # garbage at padded steps changes nothing
    logits2, targets2 = logits.clone(), targets.clone()
    logits2[1, 1:] = 1e4
    targets2[1, 1:] = 0
    assert masked_nll(logits2, targets2, lengths).item() == pytest.approx(total / count, rel=1e-12)


def test_sequence_log_likelihood_sums_real_steps():
    logits, targets, lengths = small_logits()
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    expected = torch.stack([logp[0].sum(), logp[1, 0]])
    torch.testing.assert_close(sequence_log_likelihood(logits, targets, lengths), expected)


def test_doubly_stochastic_by_hand():
    alpha = torch.tensor([
        [[0.5, 0.5], [0.2, 0.8], [0.9, 0.1]],   # 3 real steps: column sums 1.6, 1.4
        [[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]],   # 2 real steps: column sums 0.9, 1.1
    ])
    lengths = torch.tensor([3, 2])
    per_image = [(1 - 1.6) ** 2 + (1 - 1.4) ** 2, (1 - 0.9) ** 2 + (1 - 1.1) ** 2]
    expected = 2.5 * sum(per_image) / 2
    assert doubly_stochastic_penalty(alpha, lengths, 2.5).item() == pytest.approx(expected, rel=1e-6)


def test_surrogate_gradient_is_the_reinforce_weighting():
    log_p_y = torch.tensor([-3.0, -5.0, -1.0], dtype=torch.float64, requires_grad=True)
    log_p_s = torch.tensor([[-1.0, -0.5], [-2.0, -0.1], [-0.3, -0.3]], dtype=torch.float64,
                           requires_grad=True)
    entropy = torch.tensor([0.7, 0.2, 1.1], dtype=torch.float64, requires_grad=True)
    b, lam_r, lam_e, N = -2.0, 0.3, 0.05, 7
    loss = hard_attention_surrogate(log_p_y, log_p_s, entropy, N, b, lambda_r=lam_r, lambda_e=lam_e)
    loss.backward()
    R = log_p_y.detach()
    # the reward is a constant weight: d/d log p(y|s,a) is 1 (not 1 + lambda_r log p(s))
    torch.testing.assert_close(log_p_y.grad, torch.full((3,), -1 / N, dtype=torch.float64))
    torch.testing.assert_close(log_p_s.grad, (-lam_r * (R - b) / N)[:, None].expand(3, 2))
    torch.testing.assert_close(entropy.grad, torch.full((3,), -lam_e / N, dtype=torch.float64))
    value = -(R + lam_r * (R - b) * log_p_s.detach().sum(1) + lam_e * entropy.detach()).sum() / N
    torch.testing.assert_close(loss.detach(), value)


def test_moving_average_baseline_by_hand(tmp_path):
    base = MovingAverageBaseline()
    assert float(base.value) == 0.0
    base.update(torch.tensor([-8.0, -12.0]))  # mean -10
    assert float(base.value) == pytest.approx(-1.0)
    base.update(torch.tensor([-20.0]))
    assert float(base.value) == pytest.approx(0.9 * -1.0 + 0.1 * -20.0)
    torch.save(base.state_dict(), tmp_path / "b.pt")
    other = MovingAverageBaseline()
    other.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True))
    assert float(other.value) == pytest.approx(-2.9)
    with pytest.raises(KeyError, match="value"):
        other.load_state_dict({})


def _fake_output(requires_grad=True):
    logits, targets, lengths = small_logits()
    logits.requires_grad_(requires_grad)
    alpha = torch.softmax(torch.randn(2, 3, 5, dtype=torch.float64), -1) * (
        torch.arange(3)[None, :, None] < lengths[:, None, None])
    log_p_s = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, 0.0, 0.0]], dtype=torch.float64,
                           requires_grad=True)
    entropy = torch.tensor([[1.0, 1.2, 0.9], [1.1, 0.0, 0.0]], dtype=torch.float64)
    out = DecoderOutput(logits, alpha, torch.ones(2, 3), torch.zeros(2, 3, dtype=torch.long),
                        log_p_s, entropy)
    return out, targets, lengths


def test_caption_loss_soft_is_nll_plus_penalty():
    out, targets, lengths = _fake_output()
    parts = caption_loss(out, targets, lengths, alpha_c=0.5)
    expected = masked_nll(out.logits, targets, lengths) + doubly_stochastic_penalty(out.alpha, lengths, 0.5)
    torch.testing.assert_close(parts["loss"], expected)
    assert "surrogate" not in parts
    assert not parts["nll"].requires_grad and parts["loss"].requires_grad


def test_caption_loss_hard_uses_then_updates_the_baseline():
    out, targets, lengths = _fake_output()
    base = MovingAverageBaseline(value=-4.0)
    parts = caption_loss(out, targets, lengths, alpha_c=0.5, hard=True, baseline=base, lambda_r=1.0)
    log_p_y = sequence_log_likelihood(out.logits, targets, lengths).detach()
    n = lengths.sum()
    expected = hard_attention_surrogate(log_p_y, out.log_p_s.detach(), None, n, -4.0)
    torch.testing.assert_close(parts["surrogate"], expected)
    assert float(parts["baseline"]) == -4.0  # b BEFORE this batch
    assert float(base.value) == pytest.approx(0.9 * -4.0 + 0.1 * log_p_y.mean().item())
    # with lambda_r = 0 the surrogate is exactly the per-token NLL
    p0 = caption_loss(out, targets, lengths, hard=True, lambda_r=0.0)
    torch.testing.assert_close(p0["surrogate"], p0["nll"])
    with pytest.raises(ValueError, match="hard-sample"):
        caption_loss(out._replace(log_p_s=None), targets, lengths, hard=True)


def test_reward_to_go_by_hand():
    words = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, 0.0]], dtype=torch.float64)
    lengths = torch.tensor([3, 2])
    expected = torch.tensor([[-6.0, -5.0, -3.0], [-4.5, -4.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(reward_to_go(words, lengths), expected)
    # baseline b per word: b * (words left from t on) is subtracted, 0 at padded steps
    remaining = torch.tensor([[3, 2, 1], [2, 1, 0]], dtype=torch.float64)
    torch.testing.assert_close(reward_to_go(words, lengths, -1.5), expected + 1.5 * remaining)


def test_caption_loss_to_go_scores_each_step_and_keeps_a_per_word_baseline():
    out, targets, lengths = _fake_output()
    base = MovingAverageBaseline(value=-1.0)
    parts = caption_loss(out, targets, lengths, hard=True, baseline=base, lambda_r=0.5,
                         reward="to-go")
    words = token_log_likelihood(out.logits, targets, lengths).detach()
    n = lengths.sum()
    step = reward_to_go(words, lengths, -1.0)
    expected = -(words.sum(1) + 0.5 * (step * out.log_p_s.detach()).sum(1)).sum() / n
    torch.testing.assert_close(parts["surrogate"], expected)
    assert float(base.value) == pytest.approx(0.9 * -1.0 + 0.1 * float(words.sum() / n))
    # not the caption reward: the same batch scored by Eq. 12 gives another surrogate
    other = caption_loss(out, targets, lengths, hard=True, baseline=MovingAverageBaseline(value=-1.0),
                         lambda_r=0.5)
    assert abs(float(other["surrogate"] - parts["surrogate"])) > 1e-6
    with pytest.raises(ValueError, match="to-go"):
        caption_loss(out, targets, lengths, hard=True, reward="sentence")


def test_attention_entropy_by_hand():
    L = 4
    uniform = torch.full((1, 2, L), 1 / L)
    one_hot = torch.zeros(1, 2, L)
    one_hot[..., 1] = 1.0
    half = torch.tensor([[[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]]])
    n = torch.tensor([2])
    assert float(attention_entropy(uniform, n)) == pytest.approx(1.0)
    assert float(attention_entropy(one_hot, n)) == pytest.approx(0.0, abs=1e-6)
    # (log 2 + log 4) / 2 / log 4 = 0.75; the padded step is left out: log 2 / log 4 = 0.5
    assert float(attention_entropy(half, n)) == pytest.approx(0.75)
    assert float(attention_entropy(half, torch.tensor([1]))) == pytest.approx(0.5)
