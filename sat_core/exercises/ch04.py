"""Chapter 4 exercises: soft attention from the weights of f_att, and the gating scalar beta.

* :data:`check_soft_attention` -- ``my_soft_attention(a, h, W_a, b, U_a, w_att, c) ->
  (z_hat, alpha)``: the scores e_ti = w_att^T tanh(W_a a_i + U_a h_{t-1} + b) + c (Eq. 4), the
  weights alpha_t = softmax(e_t) over the L locations (Eq. 5) and the context
  z_hat_t = sum_i alpha_ti a_i (Eq. 13), against :class:`sat_core.attention.SoftAttention` run
  with the same weights;
* :data:`check_gate` -- ``my_gated_context(a, alpha, h, W_beta, b_beta) -> (z_hat, beta)``:
  beta_t = sigmoid(W_beta h_{t-1} + b_beta), ONE scalar per example, and
  z_hat_t = beta_t * sum_i alpha_ti a_i (Sec. 4.2.1), against :class:`sat_core.attention.Gate`
  and :func:`sat_core.attention.expected_context`.

Weights follow ``nn.Linear``'s layout (out, in): W_a is (A, D), U_a (A, n), w_att (A,), c and
b_beta scalars (shape () and (1,)), W_beta (1, n); a row-vector batch multiplies by the transpose.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call

from sat_core.attention import Gate, SoftAttention, expected_context
from sat_core.exercises._base import Case, ExerciseCheck

# --------------------------------------------------------------------------- soft attention


def soft_attention(
    a: Tensor, h: Tensor, W_a: Tensor, b: Tensor, U_a: Tensor, w_att: Tensor, c: Tensor
) -> tuple[Tensor, Tensor]:
    """Reference: :class:`SoftAttention` with the given weights -> (z_hat (B, D), alpha (B, L))."""
    A, D = W_a.shape
    att = SoftAttention(D, h.shape[1], A).to(device=a.device, dtype=a.dtype)
    params = {"W_a.weight": W_a, "W_a.bias": b, "U_a.weight": U_a,
              "w_att.weight": w_att.reshape(1, A), "w_att.bias": c.reshape(1)}
    return functional_call(att, params, (a, h))


def _attention_inputs(g: torch.Generator, B: int, L: int, D: int, n: int, A: int,
                      w_scale: float = 1.0, grad: bool = False) -> tuple[Tensor, ...]:
    a = torch.randn(B, L, D, generator=g)
    h = torch.randn(B, n, generator=g)
    W_a = torch.randn(A, D, generator=g) / D**0.5
    b = 0.5 * torch.randn(A, generator=g)
    U_a = torch.randn(A, n, generator=g) / n**0.5
    w_att = w_scale * torch.randn(A, generator=g)
    c = torch.randn((), generator=g)
    out = (a, h, W_a, b, U_a, w_att, c)
    return tuple(x.requires_grad_() for x in out) if grad else out


def _soft_attention_cases() -> list[Case]:
    g = torch.Generator().manual_seed(4)
    return [
        Case(_attention_inputs(g, 2, 5, 4, 3, 6), name="B=2, L=5, D=4, n=3, A=6"),
        Case(_attention_inputs(g, 3, 7, 5, 5, 5), name="B=3, L=7, D=n=A=5"),
        Case(_attention_inputs(g, 2, 6, 3, 4, 5, grad=True),
             name="B=2, L=6, D=3, n=4, A=5, all inputs require grad"),
        Case(_attention_inputs(g, 2, 9, 4, 3, 6, w_scale=60.0),
             name="large scores (|e| up to a few hundred)"),
        Case(_attention_inputs(g, 3, 1, 4, 3, 5), name="a single location (L=1): alpha = 1"),
        Case(_attention_inputs(g, 1, 4, 2, 2, 3), name="one example (B=1)"),
        _tied(g),
    ] + [Case(_attention_inputs(g, *sizes), name=f"random sizes B, L, D, n, A = {sizes}")
         for sizes in _random_sizes(g, 4, 5)]


def _random_sizes(g: torch.Generator, n: int, k: int) -> list[tuple[int, ...]]:
    """``n`` seeded draws of ``k`` sizes in 1..6."""
    return [tuple(int(x) for x in torch.randint(1, 7, (k,), generator=g)) for _ in range(n)]


def _tied(g: torch.Generator) -> Case:
    """Every a_i of an example the same: tied scores, uniform alpha."""
    a, *rest = _attention_inputs(g, 2, 5, 3, 4, 6)
    return Case((a[:, :1].expand(-1, 5, -1).contiguous(), *rest),
                name="ties: all L locations alike (uniform alpha)")


def _scores(a: Tensor, h: Tensor, W_a: Tensor, b: Tensor, U_a: Tensor, w_att: Tensor, c: Tensor,
            act: Any = torch.tanh) -> Tensor:
    """e (B, L) of Eq. (4) with the nonlinearity ``act`` (used only to recognise slips)."""
    return act(a @ W_a.T + b + (h @ U_a.T).unsqueeze(1)) @ w_att + c


_NONLINEARITIES = {"no nonlinearity": lambda x: x, "a relu": torch.relu,
                   "a sigmoid": torch.sigmoid}


def _close(x: Any, y: Tensor) -> bool:
    return (isinstance(x, Tensor) and x.shape == y.shape
            and bool(torch.allclose(x.detach().double(), y.detach().double(), rtol=1e-4,
                                    atol=1e-5)))


def _soft_attention_hints(got: Any, expected: tuple[Tensor, Tensor], case: Case) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None
    z_got, alpha_got = got
    z_exp, alpha_exp = expected
    a, h, W_a, b, U_a, w_att, c = (x.detach() for x in case.args)
    if not isinstance(alpha_got, Tensor) or alpha_got.shape != alpha_exp.shape:
        return None
    if _close(alpha_got, alpha_exp):
        if _close(z_got, a.mean(1)):
            return ("alpha is right, but z_hat is the plain mean of the a_i: weight each a_i by "
                    "its alpha_ti before summing over the L locations")
        if isinstance(z_got, Tensor) and not _close(z_got, z_exp):
            return ("alpha is right but z_hat is not: z_hat = sum_i alpha_ti a_i, e.g. "
                    "(alpha.unsqueeze(-1) * a).sum(1) or torch.bmm(alpha.unsqueeze(1), a)")
        return None
    al = alpha_got.detach().double()
    e = _scores(a, h, W_a, b, U_a, w_att, c)
    if not bool(torch.isfinite(al).all()):
        return ("alpha has NaN/inf: exp of large scores overflows. Use torch.softmax(e, dim=1), "
                "or subtract e.max(dim=1, keepdim=True) before exp")
    if _close(alpha_got, e):
        return "alpha holds the raw scores e: normalise them with a softmax over the L locations"
    if alpha_got.shape[0] > 1 and _close(alpha_got, torch.softmax(e, dim=0)):
        return "alpha is a softmax over the batch (dim 0); Eq. (5) normalises over the L locations"
    for what, act in _NONLINEARITIES.items():
        if _close(alpha_got, torch.softmax(_scores(a, h, W_a, b, U_a, w_att, c, act), 1)):
            return (f"the nonlinearity of f_att is wrong: you used {what}; Eq. (4) has a tanh "
                    "(the tanh of Eq. (4) is missing): e = w_att^T tanh(W_a a_i + U_a h + b) + c")
    if _close(alpha_got, torch.softmax(_scores(a, h, W_a, torch.zeros_like(b), U_a, w_att, c),
                                       1)):
        return "the bias b inside the tanh is missing (c outside it cancels in the softmax)"
    if W_a.shape[0] == W_a.shape[1] and _close(
            alpha_got, torch.softmax(_scores(a, h, W_a.T, b, U_a, w_att, c), 1)):
        return ("W_a is used transposed: its rows are outputs (nn.Linear's layout), so W_a a_i "
                "for a batch of row vectors is a @ W_a.T")
    if U_a.shape[0] == U_a.shape[1] and _close(
            alpha_got, torch.softmax(_scores(a, h, W_a, b, U_a.T, w_att, c), 1)):
        return "U_a is used transposed: U_a h_{t-1} for a batch of row vectors is h @ U_a.T"
    return "alpha is wrong too: check e of Eq. (4) first, then the softmax over dim 1"


check_soft_attention = ExerciseCheck(
    "soft attention (Eq. 4, 5, 13)",
    reference=soft_attention,
    cases=_soft_attention_cases,
    output_names=("z_hat", "alpha"),
    rtol=1e-4,
    atol=1e-5,
    hints=(_soft_attention_hints,),
)

# --------------------------------------------------------------------------- the gate


def gated_context(a: Tensor, alpha: Tensor, h: Tensor, W_beta: Tensor,
                  b_beta: Tensor) -> tuple[Tensor, Tensor]:
    """Reference: beta = :class:`Gate` with the given weights, z_hat = beta * expected_context."""
    gate = Gate(h.shape[1]).to(device=h.device, dtype=h.dtype)
    beta = functional_call(gate, {"f_beta.weight": W_beta, "f_beta.bias": b_beta}, (h,))
    return beta.unsqueeze(1) * expected_context(alpha, a), beta


def _gate_inputs(g: torch.Generator, B: int, L: int, D: int, n: int,
                 grad: bool = False) -> tuple[Tensor, ...]:
    a = torch.randn(B, L, D, generator=g)
    alpha = torch.softmax(2 * torch.randn(B, L, generator=g), dim=1)
    h = torch.randn(B, n, generator=g)
    W_beta = torch.randn(1, n, generator=g)
    b_beta = 0.5 * torch.randn(1, generator=g)
    out = (a, alpha, h, W_beta, b_beta)
    return tuple(x.requires_grad_() for x in out) if grad else out


def _gate_cases() -> list[Case]:
    g = torch.Generator().manual_seed(41)
    return [
        Case(_gate_inputs(g, 3, 5, 4, 6), name="B=3, L=5, D=4, n=6"),
        Case(_gate_inputs(g, 2, 4, 3, 3, grad=True), name="B=2, L=4, D=n=3, requires grad"),
        Case(_gate_inputs(g, 1, 1, 2, 1), name="B=1, a single location, n=1"),
    ] + [Case(_gate_inputs(g, *sizes), name=f"random sizes B, L, D, n = {sizes}")
         for sizes in _random_sizes(g, 3, 4)]


def _gate_hints(got: Any, expected: tuple[Tensor, Tensor], case: Case) -> str | None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return None
    z_got, beta_got = got
    a, alpha, h, W_beta, b_beta = (x.detach() for x in case.args)
    pre = h @ W_beta.T + b_beta  # (B, 1)
    context = expected_context(alpha, a)
    if _close(beta_got, pre.squeeze(1)) or _close(beta_got, pre.tanh().squeeze(1)):
        return "beta must lie in (0, 1): beta_t = sigmoid(W_beta h_{t-1} + b_beta)"
    if _close(z_got, context):
        return ("z_hat is the ungated context: multiply it by beta, broadcast over the D "
                "features (beta.unsqueeze(1) * context)")
    return None


check_gate = ExerciseCheck(
    "the gating scalar beta (Sec. 4.2.1)",
    reference=gated_context,
    cases=_gate_cases,
    output_names=("z_hat", "beta"),
    rtol=1e-5,
    atol=1e-6,
    hints=(_gate_hints,),
)

__all__ = ["check_gate", "check_soft_attention", "gated_context", "soft_attention"]
