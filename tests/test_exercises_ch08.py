"""Chapter 8 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import math

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch08 import beam_step, check_beam_step, check_brevity_penalty


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- brevity penalty


def bp_by_hand(c, r):
    if c > r:
        return 1.0
    return 0.0 if c == 0 else math.exp(1 - r / c)


def test_bp_correct_answer_passes(capsys):
    check_brevity_penalty(bp_by_hand)
    assert "✓" in capsys.readouterr().out


def test_bp_upside_down_ratio_is_explained():
    msg = failure(check_brevity_penalty, lambda c, r: 1.0 if c > r else math.exp(1 - c / r))
    assert "upside down" in msg


def test_bp_unclipped_is_explained():
    msg = failure(check_brevity_penalty,
                  lambda c, r: 0.0 if c == 0 else math.exp(1 - r / c))
    assert "never rewarded" in msg


def test_bp_empty_hypothesis_is_explained():
    msg = failure(check_brevity_penalty, lambda c, r: 1.0 if c > r else math.exp(1 - r / c))
    assert "empty hypothesis" in msg and "ZeroDivisionError" in msg


# --------------------------------------------------------------------------- beam step


def test_beam_step_reference_by_brute_force():
    scores = torch.tensor([-1.0, -2.0])
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]))
    new, parents, words = beam_step(scores, log_probs, 3)
    # enumerate the 6 candidates by hand and sort them
    cands = sorted(((float(scores[j] + log_probs[j, w]), j, w)
                    for j in range(2) for w in range(3)), reverse=True)[:3]
    assert [(j, w) for _, j, w in cands] == list(zip(parents.tolist(), words.tolist(),
                                                     strict=True))
    # -1 + log .5 = -1.69 > -2 + log .9 = -2.11 > -1 + log .3 = -2.20
    assert [(0, 0), (1, 0), (0, 1)] == [(j, w) for _, j, w in cands]
    torch.testing.assert_close(new, torch.tensor([v for v, _, _ in cands]))


def test_beam_step_correct_answer_passes(capsys):
    def mine(scores, log_probs, k):
        K = log_probs.shape[1]
        top, idx = (scores.unsqueeze(1) + log_probs).flatten().topk(k)
        return top, idx // K, idx % K

    check_beam_step(mine)
    assert "✓" in capsys.readouterr().out


def test_beam_step_forgetting_running_scores_is_explained():
    def no_scores(scores, log_probs, k):
        K = log_probs.shape[1]
        top, idx = log_probs.flatten().topk(k)
        return top, idx // K, idx % K

    assert "running score" in failure(check_beam_step, no_scores)


def test_beam_step_divmod_by_beam_count_is_explained():
    def wrong_divisor(scores, log_probs, k):
        n = log_probs.shape[0]
        top, idx = (scores[:, None] + log_probs).flatten().topk(k)
        return top, idx // n, idx % n

    msg = failure(check_beam_step, wrong_divisor)
    assert "not by the number of beams" in msg


def test_beam_step_per_beam_best_is_explained():
    def per_beam(scores, log_probs, k):
        best, words = (scores[:, None] + log_probs).max(dim=1)
        order = best.argsort(descending=True)[:k]
        return best[order], order, words[order]

    msg = failure(check_beam_step, per_beam)
    assert "rank all n * K candidates together" in msg
