"""Chapter 4 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import math

import pytest
import torch

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch04 import check_gate, check_soft_attention, gated_context, soft_attention


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


def scores(a, h, W_a, b, U_a, w_att, c):
    return torch.tanh(a @ W_a.T + b + (h @ U_a.T).unsqueeze(1)) @ w_att + c


def right(a, h, W_a, b, U_a, w_att, c):
    """A correct answer: Eq. (4), torch.softmax over L, a batched matmul for Eq. (13)."""
    alpha = torch.softmax(scores(a, h, W_a, b, U_a, w_att, c), dim=1)
    return torch.bmm(alpha.unsqueeze(1), a).squeeze(1), alpha


def right_loop(a, h, W_a, b, U_a, w_att, c):
    """Another correct answer: one location at a time, exp after subtracting the max."""
    B, L, _ = a.shape
    e = torch.stack([torch.tanh(a[:, i] @ W_a.T + b + h @ U_a.T) @ w_att + c for i in range(L)], 1)
    w = torch.exp(e - e.max(dim=1, keepdim=True).values)
    alpha = w / w.sum(dim=1, keepdim=True)
    return sum(alpha[:, i : i + 1] * a[:, i] for i in range(L)), alpha


# --------------------------------------------------------------------------- soft attention


def test_reference_by_hand():
    """L=2, D=n=A=1: a = (1, -1), h = 0, identity weights: e = (tanh 1, tanh -1)."""
    a = torch.tensor([[[1.0], [-1.0]]])
    one = torch.ones(1, 1)
    z, alpha = soft_attention(a, torch.zeros(1, 1), one, torch.zeros(1), one, torch.ones(1),
                              torch.tensor(0.3))
    p = 1 / (1 + math.exp(-2 * math.tanh(1)))  # softmax of (t, -t) = sigmoid(2t); c cancels
    assert alpha[0].tolist() == pytest.approx([p, 1 - p], abs=1e-6)
    assert z[0].tolist() == pytest.approx([2 * p - 1], abs=1e-6)


def test_reference_carries_gradients_to_every_weight():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(s, generator=g, dtype=torch.float64, requires_grad=True)
            for s in ((2, 3, 4), (2, 5), (6, 4), (6,), (6, 5), (6,), ())]
    assert torch.autograd.gradcheck(lambda *x: soft_attention(*x), args)


def test_correct_answers_pass(capsys):
    check_soft_attention(right)
    check_soft_attention(right_loop)
    assert capsys.readouterr().out.count("✓ soft attention (Eq. 4, 5, 13)") == 2


def test_plain_mean_context():
    msg = failure(check_soft_attention, lambda *x: (x[0].mean(1), right(*x)[1]))
    assert "z_hat: " in msg and "values are wrong" in msg
    assert "z_hat is the plain mean of the a_i" in msg


def test_missing_tanh():
    def no_tanh(a, h, W_a, b, U_a, w_att, c):
        e = (a @ W_a.T + b + (h @ U_a.T).unsqueeze(1)) @ w_att + c
        alpha = torch.softmax(e, 1)
        return (alpha.unsqueeze(-1) * a).sum(1), alpha

    assert "the tanh of Eq. (4) is missing" in failure(check_soft_attention, no_tanh)


def test_softmax_over_the_batch():
    def over_batch(a, h, *w):
        alpha = torch.softmax(scores(a, h, *w), 0)
        return (alpha.unsqueeze(-1) * a).sum(1), alpha

    assert "alpha is a softmax over the batch (dim 0)" in failure(check_soft_attention, over_batch)


def test_transposed_W_a_in_the_square_case():
    def transposed(a, h, W_a, *rest):
        return right(a, h, W_a.T, *rest)

    msg = failure(check_soft_attention, transposed)
    # shapes differ in case 1 (D=4, A=6): the transpose cannot even be multiplied
    assert "test input 1 of 11" in msg and "raised RuntimeError" in msg

    def transposed_if_square(a, h, W_a, *rest):
        return right(a, h, W_a.T if W_a.shape[0] == W_a.shape[1] else W_a, *rest)

    msg = failure(check_soft_attention, transposed_if_square)
    assert "test input 2 of 11 (B=3, L=7, D=n=A=5)" in msg
    assert "W_a is used transposed" in msg


def test_unstable_softmax_overflows_on_large_scores():
    def unstable(a, h, *w):
        e = scores(a, h, *w)
        alpha = e.exp() / e.exp().sum(1, keepdim=True)
        return (alpha.unsqueeze(-1) * a).sum(1), alpha

    msg = failure(check_soft_attention, unstable)
    assert "test input 4 of 11 (large scores" in msg
    assert "NaN or infinite" in msg and "exp of large scores overflows" in msg


def test_raw_scores_and_missing_bias():
    def raw(a, h, *w):
        e = scores(a, h, *w)
        return (e.unsqueeze(-1) * a).sum(1), e

    assert "alpha holds the raw scores e" in failure(check_soft_attention, raw)

    def no_b(a, h, W_a, b, *rest):
        return right(a, h, W_a, torch.zeros_like(b), *rest)

    assert "the bias b inside the tanh is missing" in failure(check_soft_attention, no_b)


def test_detached_answer_is_cut_off_from_autograd():
    msg = failure(check_soft_attention, lambda *x: tuple(t.detach() for t in right(*x)))
    assert "test input 3 of 11" in msg and "cut off from autograd" in msg


def test_wrong_number_of_outputs():
    msg = failure(check_soft_attention, lambda *x: right(*x)[0])
    assert "return 2 values (z_hat, alpha), got one value" in msg


# --------------------------------------------------------------------------- the gate


def right_gate(a, alpha, h, W_beta, b_beta):
    beta = torch.sigmoid(h @ W_beta.T + b_beta).squeeze(1)
    return beta.unsqueeze(1) * torch.einsum("bl,bld->bd", alpha, a), beta


def test_gate_reference_by_hand():
    a = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])  # L=2, D=2
    alpha = torch.tensor([[0.25, 0.75]])
    h = torch.tensor([[1.0, 2.0]])
    z, beta = gated_context(a, alpha, h, torch.tensor([[0.5, -1.0]]), torch.tensor([1.5]))
    s = 1 / (1 + math.exp(-(0.5 - 2.0 + 1.5)))  # sigmoid(0) = 0.5
    assert beta.tolist() == pytest.approx([s]) and s == 0.5
    assert z[0].tolist() == pytest.approx([0.5 * 0.5, 0.5 * 3.0])


def test_gate_correct_answer_passes(capsys):
    check_gate(right_gate)
    assert "✓ the gating scalar beta (Sec. 4.2.1): correct on all 6 test inputs" in (
        capsys.readouterr().out)


def test_gate_without_sigmoid():
    def tanh_gate(a, alpha, h, W_beta, b_beta):
        beta = torch.tanh(h @ W_beta.T + b_beta).squeeze(1)
        return beta.unsqueeze(1) * (alpha.unsqueeze(-1) * a).sum(1), beta

    msg = failure(check_gate, tanh_gate)
    assert "beta must lie in (0, 1)" in msg


def test_ungated_context():
    msg = failure(check_gate, lambda a, alpha, *w: ((alpha.unsqueeze(-1) * a).sum(1),
                                                    right_gate(a, alpha, *w)[1]))
    assert "z_hat is the ungated context" in msg


def test_gate_of_shape_B_by_1():
    def keepdim(a, alpha, h, W_beta, b_beta):
        beta = torch.sigmoid(h @ W_beta.T + b_beta)  # (B, 1): broadcasting still works for z
        return beta * (alpha.unsqueeze(-1) * a).sum(1), beta

    msg = failure(check_gate, keepdim)
    assert "beta has the wrong shape: expected (3,), got (3, 1)" in msg
    assert "squeeze it" in msg


# --------------------------------------------------------------------------- wrong answers


def attention_with(act=torch.tanh, dim=1, bias=True, normalise=True):
    """Soft attention with one slip: another nonlinearity, softmax dim, no b, no softmax."""
    def answer(a, h, W_a, b, U_a, w_att, c):
        e = act(a @ W_a.T + (b if bias else 0) + (h @ U_a.T).unsqueeze(1)) @ w_att + c
        alpha = torch.softmax(e, dim) if normalise else e
        return (alpha.unsqueeze(-1) * a).sum(1), alpha
    return answer


def gate_with(act=torch.sigmoid, gated=True, keepdim=False):
    def answer(a, alpha, h, W_beta, b_beta):
        beta = act(h @ W_beta.T + b_beta)
        context = (alpha.unsqueeze(-1) * a).sum(1)
        return (beta * context if gated else context), (beta if keepdim else beta.squeeze(1))
    return answer


WRONG_ANSWERS = [
    pytest.param(check_soft_attention, attention_with(act=torch.relu),
                 "the nonlinearity of f_att is wrong: you used a relu", id="f_att: relu"),
    pytest.param(check_soft_attention, attention_with(act=torch.sigmoid),
                 "you used a sigmoid; Eq. (4) has a tanh", id="f_att: sigmoid"),
    pytest.param(check_soft_attention, attention_with(act=lambda x: x),
                 "the tanh of Eq. (4) is missing", id="f_att: no tanh"),
    pytest.param(check_soft_attention, attention_with(dim=0),
                 "alpha is a softmax over the batch", id="softmax over the batch"),
    pytest.param(check_soft_attention, attention_with(bias=False),
                 "the bias b inside the tanh is missing", id="no bias b"),
    pytest.param(check_soft_attention, attention_with(normalise=False),
                 "alpha holds the raw scores e", id="no softmax"),
    pytest.param(check_soft_attention, lambda *x: (x[0].mean(1), right(*x)[1]),
                 "z_hat is the plain mean of the a_i", id="z_hat: mean of the a_i"),
    pytest.param(check_gate, gate_with(act=torch.tanh), "beta must lie in (0, 1)",
                 id="gate: tanh"),
    pytest.param(check_gate, gate_with(gated=False), "z_hat is the ungated context",
                 id="gate: context not gated"),
    pytest.param(check_gate, gate_with(keepdim=True), "squeeze it", id="gate: beta (B, 1)"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
