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


# --------------------------------------------------------------------------- wrong answers


def bp_with(no_penalty_from=lambda c, r: c > r, ratio=lambda c, r: r / c, clip=True,
            empty=True):
    """The brevity penalty with one slip: where the penalty stops, the ratio, the clip, c = 0."""
    def answer(c, r):
        if clip and no_penalty_from(c, r):
            return 1.0
        if empty and c == 0:
            return 0.0
        return math.exp(1 - ratio(c, r))
    return answer


def beam_with(running=True, divisor="K", order="descending", swap=False):
    """One beam step with one slip: no running scores, divmod by n, ascending, swapped."""
    def answer(scores, log_probs, k):
        n, K = log_probs.shape
        cand = ((scores[:, None] if running else 0) + log_probs).reshape(-1)
        top, idx = cand.topk(k)
        if order == "ascending":
            top, idx = top.flip(0), idx.flip(0)
        d = K if divisor == "K" else n
        parents, words = idx // d, idx % d
        return (top, words, parents) if swap else (top, parents, words)
    return answer


def per_beam(scores, log_probs, k):
    best, words = (scores[:, None] + log_probs).max(dim=1)
    order = best.argsort(descending=True)[:k]
    return best[order], order, words[order]


WRONG_ANSWERS = [
    pytest.param(check_brevity_penalty, bp_with(no_penalty_from=lambda c, r: c >= r - 1),
                 "even when c = r - 1: BP = 1 only when c >= r", id="bp: c >= r - 1 unpenalised"),
    pytest.param(check_brevity_penalty, bp_with(ratio=lambda c, r: c / r), "upside down",
                 id="bp: c / r"),
    pytest.param(check_brevity_penalty, bp_with(clip=False), "never rewarded",
                 id="bp: not clipped at 1"),
    pytest.param(check_brevity_penalty, bp_with(empty=False), "empty hypothesis",
                 id="bp: c = 0 not handled"),
    pytest.param(check_brevity_penalty, bp_with(ratio=lambda c, r: r // c),
                 "integer division", id="bp: r // c"),
    pytest.param(check_beam_step, beam_with(running=False), "running score",
                 id="beam: no running scores"),
    pytest.param(check_beam_step, beam_with(divisor="n"), "not by the number of beams",
                 id="beam: divmod by n"),
    pytest.param(check_beam_step, beam_with(order="ascending"), "best first",
                 id="beam: worst first"),
    pytest.param(check_beam_step, beam_with(swap=True), "parents and words are swapped",
                 id="beam: parents and words swapped"),
    pytest.param(check_beam_step, per_beam, "rank all n * K candidates together",
                 id="beam: best child of each beam"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
