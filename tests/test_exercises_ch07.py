"""Chapter 7 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch07 import baselines, check_baselines, check_surrogate


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- baseline


def baselines_by_hand(rewards, momentum=0.9):
    b, used = 0.0, []
    for r in rewards:
        used.append(b)
        b = momentum * b + (1 - momentum) * float(r.mean())
    return torch.tensor(used)


def test_baseline_reference_matches_hand_computed_values():
    rewards = [torch.tensor([-10.0, -20.0]), torch.tensor([-30.0]), torch.tensor([0.0, -4.0])]
    # b_0 = 0; b_1 = 0.1 * (-15) = -1.5; b_2 = 0.9 * -1.5 + 0.1 * -30 = -4.35
    torch.testing.assert_close(baselines(rewards, 0.9), torch.tensor([0.0, -1.5, -4.35]))


def test_baseline_correct_answer_passes(capsys):
    check_baselines(baselines_by_hand)
    assert "✓" in capsys.readouterr().out


def test_baseline_updated_before_use_is_explained():
    def after(rewards, momentum=0.9):
        b, used = 0.0, []
        for r in rewards:
            b = momentum * b + (1 - momentum) * float(r.mean())
            used.append(b)
        return torch.tensor(used)

    assert "BEFORE using it" in failure(check_baselines, after)


def test_baseline_swapped_weights_are_explained():
    def swapped(rewards, momentum=0.9):
        b, used = 0.0, []
        for r in rewards:
            used.append(b)
            b = (1 - momentum) * b + momentum * float(r.mean())
        return torch.tensor(used)

    assert "weights are swapped" in failure(check_baselines, swapped)


def test_baseline_sum_of_rewards_is_explained():
    def summed(rewards, momentum=0.9):
        b, used = 0.0, []
        for r in rewards:
            used.append(b)
            b = momentum * b + (1 - momentum) * float(r.sum())
        return torch.tensor(used)

    assert "a mean over the captions" in failure(check_baselines, summed)


# --------------------------------------------------------------------------- surrogate


def good_surrogate(log_p_y, log_p_s, n_tokens, b, lambda_r):
    reward = (log_p_y - b).detach()
    return -(log_p_y + lambda_r * reward * log_p_s).sum() / n_tokens


def test_surrogate_correct_answer_passes(capsys):
    check_surrogate(good_surrogate)
    assert "✓" in capsys.readouterr().out


def test_surrogate_without_detach_has_the_right_value_and_is_explained():
    def undetached(log_p_y, log_p_s, n_tokens, b, lambda_r):
        return -(log_p_y + lambda_r * (log_p_y - b) * log_p_s).sum() / n_tokens

    msg = failure(check_surrogate, undetached)
    assert "minus the gradient of your loss" in msg and "must be a constant weight" in msg
    assert "value of your loss" not in msg  # the value itself is right


def test_surrogate_sign_is_explained():
    msg = failure(check_surrogate, lambda *args: -good_surrogate(*args))
    assert "you returned the objective" in msg


def test_surrogate_mean_over_captions_is_explained():
    def per_caption(log_p_y, log_p_s, n_tokens, b, lambda_r):
        return good_surrogate(log_p_y, log_p_s, len(log_p_y), b, lambda_r)

    assert "by n_tokens" in failure(check_surrogate, per_caption)


def test_surrogate_without_baseline_is_explained():
    def no_baseline(log_p_y, log_p_s, n_tokens, b, lambda_r):
        return good_surrogate(log_p_y, log_p_s, n_tokens, 0.0, lambda_r)

    assert "subtract the baseline" in failure(check_surrogate, no_baseline)


def test_surrogate_detached_loss_is_explained():
    msg = failure(check_surrogate, lambda *args: good_surrogate(*args).detach())
    assert "cut off from autograd" in msg


def test_surrogate_vector_result_is_explained():
    def per_caption_losses(log_p_y, log_p_s, n_tokens, b, lambda_r):
        return -(log_p_y + lambda_r * (log_p_y - b).detach() * log_p_s) / n_tokens

    assert "scalar tensor" in failure(check_surrogate, per_caption_losses)


# --------------------------------------------------------------------------- wrong answers


def baselines_with(order="use first", old=None, new=None, reduce="mean", start=0.0):
    """The baseline with one slip: updated before use, other weights, a sum, a start value."""
    def answer(rewards, momentum=0.9):
        b, used = start, []
        w_old = momentum if old is None else old(momentum)
        w_new = 1 - momentum if new is None else new(momentum)
        for k, r in enumerate(rewards):
            value = float(r.mean() if reduce == "mean" else r.sum())
            if start is None and k == 0:
                used.append(0.0)
                b = value
                continue
            if order == "update first":
                b = w_old * b + w_new * value
            used.append(b)
            if order == "use first":
                b = w_old * b + w_new * value
        return torch.tensor(used)
    return answer


def surrogate_with(sign=-1.0, divide="tokens", baseline=True, lam=True, first=True,
                   detach=True):
    """The surrogate with one slip."""
    def answer(log_p_y, log_p_s, n_tokens, b, lambda_r):
        reward = log_p_y - (b if baseline else 0.0)
        reward = reward.detach() if detach else reward
        total = (log_p_y if first else 0) + (lambda_r if lam else 1.0) * reward * log_p_s
        return sign * total.sum() / (n_tokens if divide == "tokens" else len(log_p_y))
    return answer


WRONG_ANSWERS = [
    pytest.param(check_baselines, baselines_with(order="update first"),
                 "BEFORE using it for that batch", id="baseline: updated before use"),
    pytest.param(check_baselines, baselines_with(old=lambda m: 1 - m, new=lambda m: m),
                 "the weights are swapped", id="baseline: weights swapped"),
    pytest.param(check_baselines, baselines_with(reduce="sum"), "a mean over the captions",
                 id="baseline: sum of rewards"),
    pytest.param(check_baselines, baselines_with(start=None), "b starts at 0",
                 id="baseline: starts at the first mean"),
    pytest.param(check_baselines, baselines_with(new=lambda m: 1.0), "weight (1 - momentum)",
                 id="baseline: new reward unweighted"),
    pytest.param(check_surrogate, surrogate_with(sign=1.0), "you returned the objective",
                 id="surrogate: sign"),
    pytest.param(check_surrogate, surrogate_with(divide="captions"), "by n_tokens",
                 id="surrogate: / B"),
    pytest.param(check_surrogate, surrogate_with(baseline=False), "subtract the baseline",
                 id="surrogate: no baseline"),
    pytest.param(check_surrogate, surrogate_with(lam=False), "multiply the REINFORCE term",
                 id="surrogate: no lambda_r"),
    pytest.param(check_surrogate, surrogate_with(first=False), "the first term is missing",
                 id="surrogate: no log p(y) term"),
    pytest.param(check_surrogate, surrogate_with(detach=False), "must be a constant weight",
                 id="surrogate: reward not detached"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
