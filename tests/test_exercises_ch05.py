"""Chapter 5 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch05 import check_deep_output, check_doubly_stochastic, deep_output
from sat_core.losses import doubly_stochastic_penalty


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- Eq. (14)


def penalty_loop(alpha, lengths, lam):
    """A correct answer with explicit loops over the batch and the real steps."""
    per_image = []
    for b in range(alpha.shape[0]):
        total = sum(alpha[b, t] for t in range(int(lengths[b])))  # (L,)
        per_image.append(((1 - total) ** 2).sum())
    return lam * torch.stack(per_image).mean()


def penalty_vectorised(alpha, lengths, lam):
    real = torch.arange(alpha.shape[1]) < lengths[:, None]
    total = torch.einsum("btl,bt->bl", alpha, real.to(alpha.dtype))
    return lam * (1 - total).pow(2).sum(-1).mean()


def test_reference_by_hand():
    """T=L=2, one caption always looking at location 0, one taking turns, one uniform with a
    padded step that must not count."""
    alpha = torch.tensor([
        [[1.0, 0.0], [1.0, 0.0]],  # totals (2, 0): (1-2)^2 + (1-0)^2 = 2
        [[1.0, 0.0], [0.0, 1.0]],  # totals (1, 1): 0
        [[0.5, 0.5], [0.9, 0.1]],  # length 1: totals (0.5, 0.5): 0.25 + 0.25 = 0.5
    ])
    value = doubly_stochastic_penalty(alpha, torch.tensor([2, 2, 1]), lam=3.0)
    assert value.item() == pytest.approx(3.0 * (2 + 0 + 0.5) / 3)


def test_correct_answers_pass(capsys):
    check_doubly_stochastic(penalty_loop)
    check_doubly_stochastic(penalty_vectorised)
    assert capsys.readouterr().out.count("✓ the doubly stochastic penalty (Eq. 14)") == 2


def test_ignoring_lengths():
    msg = failure(check_doubly_stochastic,
                  lambda alpha, lengths, lam: lam * ((1 - alpha.sum(1)) ** 2).sum(1).mean())
    assert "you also summed the padded steps" in msg


def test_summing_over_locations():
    def over_l(alpha, lengths, lam):
        real = (torch.arange(alpha.shape[1]) < lengths[:, None]).unsqueeze(-1)
        return lam * ((1 - (alpha * real).sum(2)) ** 2).sum(1).mean()

    msg = failure(check_doubly_stochastic, over_l)
    assert "you summed over the locations (dim 2)" in msg


def test_batch_sum_and_forgotten_lam():
    msg = failure(check_doubly_stochastic,
                  lambda alpha, lengths, lam: penalty_loop(alpha, lengths, lam) * alpha.shape[0])
    assert "times 3" in msg  # the framework's constant-factor hint (B = 3)
    assert "average the per-image penalties over the batch" in msg
    msg = failure(check_doubly_stochastic,
                  lambda alpha, lengths, lam: penalty_loop(alpha, lengths, 1.0))
    assert "test input 2 of 10" in msg and "multiply by lam" in msg


def test_python_float_and_detached_results():
    msg = failure(check_doubly_stochastic, lambda *x: penalty_loop(*x).item())
    assert "should be a torch.Tensor, got float" in msg and ".item() too many" in msg
    msg = failure(check_doubly_stochastic, lambda *x: penalty_loop(*x).detach())
    assert "test input 2 of 10" in msg and "cut off from autograd" in msg


# --------------------------------------------------------------------------- Eq. (7)


def right_deep(emb, h, z, L_h, L_z, L_o, b_o):
    return torch.nn.functional.linear(emb + h @ L_h.T + z @ L_z.T, L_o, b_o)


def test_deep_output_reference_by_hand():
    """m=2, n=1, D=1, K=2: logits = L_o (E y + L_h h + L_z z) + b_o, computed by hand."""
    emb, h, z = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0]]), torch.tensor([[-1.0]])
    L_h, L_z = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [2.0]])
    L_o, b_o = torch.tensor([[1.0, 1.0], [1.0, -1.0]]), torch.tensor([0.5, 0.0])
    # inside: (1 + 3, 2 - 2) = (4, 0); logits: (4 + 0 + 0.5, 4 - 0)
    assert deep_output(emb, h, z, L_h, L_z, L_o, b_o)[0].tolist() == [4.5, 4.0]


def test_deep_output_correct_answer_passes(capsys):
    check_deep_output(right_deep)
    assert "✓ the deep output layer (Eq. 7): correct on all 7 test inputs" in (
        capsys.readouterr().out)


@pytest.mark.parametrize("wrong, explanation", [
    (lambda e, h, z, L_h, L_z, L_o, b: torch.tanh(e + h @ L_h.T + z @ L_z.T) @ L_o.T + b,
     "as the authors' Theano code does"),
    (lambda e, h, z, L_h, L_z, L_o, b: (h @ L_h.T + z @ L_z.T) @ L_o.T + b,
     "the E y_{t-1} term is missing"),
    (lambda e, h, z, L_h, L_z, L_o, b: (e + h @ L_h.T) @ L_o.T + b,
     "the L_z z_hat_t term is missing"),
    (lambda *x: torch.softmax(right_deep(*x), -1), "your rows sum to 1"),
    (lambda *x: torch.log_softmax(right_deep(*x), -1), "these are log-probabilities"),
    (lambda e, h, z, L_h, L_z, L_o, b: (e + h @ L_h.T + z @ L_z.T) @ L_o.T, "add it"),
])
def test_deep_output_mistakes(wrong, explanation):
    msg = failure(check_deep_output, wrong)
    assert "test input 1 of 7" in msg and "are wrong" in msg
    assert explanation in msg


def test_deep_output_transposed_weight():
    def transposed_if_square(e, h, z, L_h, L_z, L_o, b):
        L_h = L_h.T if L_h.shape[0] == L_h.shape[1] else L_h
        return right_deep(e, h, z, L_h, L_z, L_o, b)

    msg = failure(check_deep_output, transposed_if_square)
    assert "test input 2 of 7 (B=3, m=n=D=4, K=7)" in msg
    assert "L_h is used transposed" in msg
    msg = failure(check_deep_output, lambda e, h, z, L_h, *rest: right_deep(e, h, z, L_h.T, *rest))
    assert "test input 1 of 7" in msg and "raised RuntimeError" in msg


# --------------------------------------------------------------------------- wrong answers


def penalty_with(steps=lambda t, n: t < n, over=1, square=True, reduce="mean", with_lam=True,
                 per_location="sum"):
    """Eq. (14) with one slip: which steps are real, the summed dim, the reductions, lam."""
    def answer(alpha, lengths, lam):
        real = steps(torch.arange(alpha.shape[1])[None, :], lengths[:, None]).unsqueeze(-1)
        total = (alpha * real).sum(over)
        gap = (1 - total) ** 2 if square else (1 - total)
        per_image = gap.sum(1) if per_location == "sum" else gap.mean(1)
        out = per_image.mean() if reduce == "mean" else per_image.sum()
        return lam * out if with_lam else out
    return answer


WRONG_ANSWERS = [
    pytest.param(penalty_with(steps=lambda t, n: t >= 0), "you also summed the padded steps",
                 id="penalty: no mask"),
    pytest.param(penalty_with(steps=lambda t, n: t <= n), "off by one in the lengths",
                 id="penalty: t <= lengths"),
    pytest.param(penalty_with(steps=lambda t, n: t < n - 1), "you dropped the last real step",
                 id="penalty: t < lengths - 1"),
    pytest.param(penalty_with(over=2), "you summed over the locations (dim 2)",
                 id="penalty: sum over locations"),
    pytest.param(penalty_with(reduce="sum"), "average the per-image penalties",
                 id="penalty: sum over the batch"),
    pytest.param(penalty_with(per_location="mean"), "not a mean", id="penalty: mean over L"),
    pytest.param(penalty_with(square=False), "square each", id="penalty: not squared"),
    pytest.param(penalty_with(with_lam=False), "multiply by lam", id="penalty: no lam"),
]


@pytest.mark.parametrize("answer, hint", WRONG_ANSWERS)
def test_wrong_penalty_is_rejected_with_its_hint(answer, hint):
    """(the deep output layer's table is test_deep_output_mistakes above)"""
    assert hint in failure(check_doubly_stochastic, answer)
