"""Chapter 7 exercises: the moving-average baseline, and the surrogate loss of hard attention.

* :data:`check_baselines` -- ``my_baselines(rewards, momentum) -> b (n_batches,)``: the baseline b
  that the estimator of Eq. (12) uses for each of a sequence of batches, where ``rewards[k]`` (B_k,)
  holds that batch's log p(y | s, a). b starts at 0 and is updated AFTER each batch with
  b <- momentum b + (1 - momentum) mean_batch(log p(y|s,a)) (Sec. 4.1); compared with
  :class:`sat_core.losses.MovingAverageBaseline` used as ``sat_core.train`` uses it;
* :func:`check_surrogate` -- ``my_surrogate(log_p_y, log_p_s, n_tokens, b, lambda_r) -> loss``, a
  scalar whose gradient is minus the estimator of Eq. (12) (without the entropy term) divided by
  the N real tokens. It runs a tiny hard-attention decoder with sampled locations, then compares
  the value with :func:`sat_core.losses.hard_attention_surrogate` and the GRADIENT of the reader's
  loss with respect to every decoder parameter with the estimator computed term by term:
  (1/N) sum_b [d log p(y|s,a)/dW + lambda_r (log p(y|s,a) - b) d log p(s|a)/dW].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.exercises._base import (
    Case,
    ExerciseCheck,
    ExerciseFailed,
    compare,
    crashed,
    not_attempted,
)
from sat_core.losses import MovingAverageBaseline, hard_attention_surrogate, sequence_log_likelihood

# --------------------------------------------------------------------------- the baseline


def baselines(rewards: Sequence[Tensor], momentum: float = 0.9) -> Tensor:
    """Reference: b used for batch k (read BEFORE its update), with MovingAverageBaseline."""
    baseline = MovingAverageBaseline(momentum=momentum)
    used = []
    for r in rewards:
        used.append(baseline.value.clone())
        baseline.update(r)
    return torch.stack(used)


def _baseline_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)

    def rewards(sizes: Sequence[int], centre: float) -> list[Tensor]:
        return [centre + 3 * torch.randn(n, generator=g) for n in sizes]

    return [
        Case((rewards([4, 4, 3, 5, 4, 2], -20.0), 0.9), name="6 batches, momentum 0.9"),
        Case((rewards([2, 6, 3], -8.0), 0.5), name="3 batches, momentum 0.5"),
        Case((rewards([1, 3, 2, 4, 2, 3, 5, 1], -30.0), 0.8), name="8 batches, momentum 0.8"),
        Case((rewards([3], -5.0), 0.9), name="a single batch: b = 0"),
        Case((rewards([1, 1, 1, 1], -12.0), 0.7), name="batches of one caption"),
        Case((rewards([2, 3, 2], -9.0), 0.0), name="momentum 0: b = the previous batch's mean"),
    ] + [_random_baseline_case(g, k) for k in range(3)]


def _random_baseline_case(g: torch.Generator, k: int) -> Case:
    """1-8 batches of 1-6 rewards around a random centre, a random momentum in [0.5, 1)."""
    sizes = torch.randint(1, 7, (int(torch.randint(1, 9, (), generator=g)),), generator=g)
    centre = float(-40 * torch.rand((), generator=g))
    momentum = round(0.5 + 0.49 * float(torch.rand((), generator=g)), 3)
    rewards = [centre + 3 * torch.randn(int(n), generator=g) for n in sizes]
    return Case((rewards, momentum), name=f"random {k + 1}: {len(rewards)} batches, "
                f"momentum {momentum}")


def _baseline_variants(rewards: Sequence[Tensor], m: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in
                                   ("after", "swapped", "sum", "first", "unweighted")}
    b_after = b_swap = b_sum = b_unw = 0.0
    b_first: float | None = None
    for r in rewards:
        mean, total = float(r.mean()), float(r.sum())
        b_after = m * b_after + (1 - m) * mean
        out["after"].append(b_after)
        out["swapped"].append(b_swap)
        b_swap = (1 - m) * b_swap + m * mean
        out["sum"].append(b_sum)
        b_sum = m * b_sum + (1 - m) * total
        out["first"].append(0.0 if b_first is None else b_first)
        b_first = mean if b_first is None else m * b_first + (1 - m) * mean
        out["unweighted"].append(b_unw)
        b_unw = m * b_unw + mean
    return out


_BASELINE_HINTS = {
    "after": "you updated b with a batch's rewards BEFORE using it for that batch. b must not "
             "depend on the samples it scores (else the estimator is biased): use b, then "
             "update it",
    "swapped": "the weights are swapped: b <- momentum * b + (1 - momentum) * mean reward "
               "(0.9 old, 0.1 new in the paper)",
    "sum": "average the batch's log p(y|s,a) (a mean over the captions), don't sum them",
    "first": "b starts at 0 (the authors' code), not at the first batch's mean reward",
    "unweighted": "the new reward enters with weight (1 - momentum)",
}


def _baseline_hints(got: Any, expected: Tensor, case: Case) -> str | None:
    if not isinstance(got, Tensor) or got.numel() != expected.numel():
        return None
    rewards, m = case.args
    g = got.detach().double().reshape(-1)
    for name, values in _baseline_variants(rewards, m).items():
        v = torch.tensor(values, dtype=torch.float64)
        if torch.allclose(g, v, rtol=1e-4, atol=1e-4) and not torch.allclose(
                v, expected.double(), rtol=1e-4, atol=1e-4):
            return _BASELINE_HINTS[name]
    return None


check_baselines = ExerciseCheck(
    "the moving-average baseline of Sec. 4.1 (value used by each batch)",
    reference=baselines,
    cases=_baseline_cases,
    rtol=1e-5,
    atol=1e-5,
    check_dtype=False,
    hints=(_baseline_hints,),
)

# --------------------------------------------------------------------------- the surrogate

SURROGATE_CASES: tuple[tuple[int, float, float], ...] = ((0, -6.0, 1.0), (1, 0.0, 1.0),
                                                         (2, -3.5, 0.3), (3, -4.0, 0.0))
"""(seed, b, lambda_r) of the surrogate cases (the last: lambda_r = 0, no REINFORCE term);
:func:`surrogate_cases` adds seeded random ones."""


def surrogate_cases() -> list[tuple[int, float, float]]:
    """:data:`SURROGATE_CASES` and two seeded random (seed, b, lambda_r)."""
    g = torch.Generator().manual_seed(70)
    drawn = [(4 + k, round(float(-10 * torch.rand((), generator=g)), 3),
              round(float(torch.rand((), generator=g)), 3)) for k in range(2)]
    return list(SURROGATE_CASES) + drawn


def _decoder_and_batch(seed: int) -> tuple[AttentionDecoder, Tensor, Tensor, Tensor, Tensor]:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=9, feature_dim=4, embed_dim=3, hidden_dim=5, attn_dim=4,
                        dropout=0.0, attention="hard")
    dec = AttentionDecoder(cfg).double()
    g = torch.Generator().manual_seed(100 + seed)
    a = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 4, 4, 2, 0]])
    lengths = torch.tensor([4, 2, 3])  # decode steps
    return dec, a, captions[:, :-1], captions[:, 1:], lengths


def _sampled(seed: int) -> tuple[AttentionDecoder, Tensor, Tensor, Tensor]:
    """A tiny decoder, one draw of s: (decoder, log p(y|s,a) (B,), log p(s|a) (B,), N)."""
    dec, a, y_in, y_out, lengths = _decoder_and_batch(seed)
    out = dec(a, y_in, lengths, mode="hard-sample",
              generator=torch.Generator().manual_seed(seed))
    log_p_y = sequence_log_likelihood(out.logits, y_out, lengths)
    return dec, log_p_y, out.log_p_s.sum(1), lengths.sum()


def _estimator(dec: AttentionDecoder, log_p_y: Tensor, log_p_s: Tensor, n_tokens: Tensor,
               b: float, lambda_r: float, detach: bool = True) -> list[Tensor]:
    """Eq. (12) term by term, as a list of per-parameter tensors (the ASCENT direction).

    ``detach=False`` (a hint) adds the term log p(s|a) d log p(y|s,a)/dW that autograd produces
    when the reward is not detached.
    """
    params = list(dec.parameters())
    path = torch.autograd.grad(log_p_y.sum(), params, retain_graph=True, allow_unused=True)
    weight = lambda_r * (log_p_y - b).detach()
    score = torch.autograd.grad(log_p_s, params, grad_outputs=weight, retain_graph=True,
                                allow_unused=True)
    extra: Sequence[Tensor | None] = [None] * len(params)
    if not detach:
        extra = torch.autograd.grad(log_p_y, params, grad_outputs=lambda_r * log_p_s.detach(),
                                    retain_graph=True, allow_unused=True)
    out = []
    for p, g1, g2, g3 in zip(params, path, score, extra, strict=True):
        total = torch.zeros_like(p)
        for g in (g1, g2, g3):
            if g is not None:
                total = total + g
        out.append(total / n_tokens)
    return out


def check_surrogate(fn: Callable[..., Any]) -> None:
    """Check ``fn(log_p_y, log_p_s, n_tokens, b, lambda_r) -> loss``: its value and its gradient.

    The gradient of the reader's loss with respect to every parameter of a tiny decoder must be
    MINUS the estimator of Eq. (12) (divided by N), computed term by term.
    """
    if not callable(fn):
        raise ExerciseFailed("pass your function itself: check_surrogate(my_surrogate)")
    name = "the hard-attention surrogate loss (its gradient is Eq. 12)"
    cases = surrogate_cases()
    for i, (seed, b, lambda_r) in enumerate(cases):
        label = (f"{name}, test input {i + 1} of {len(cases)} (B=3 captions, "
                 f"b={b}, lambda_r={lambda_r})")
        dec, log_p_y, log_p_s, n_tokens = _sampled(seed)
        expected = hard_attention_surrogate(log_p_y, log_p_s, None, n_tokens, b,
                                            lambda_r=lambda_r)
        try:
            got = fn(log_p_y, log_p_s, n_tokens, b, lambda_r)
        except NotImplementedError:
            raise not_attempted(name) from None
        except Exception as err:
            raise crashed(label, err) from err
        try:
            if not isinstance(got, Tensor) or got.numel() != 1:
                raise ExerciseFailed(
                    "return the loss as a scalar tensor (one number that autograd can "
                    f"differentiate), got {type(got).__name__}"
                    + (f" of shape {tuple(got.shape)}: sum/mean over the captions"
                       if isinstance(got, Tensor) else ""))
            compare(got.reshape(()), expected.detach(), name="the value of your loss",
                    rtol=1e-6, atol=1e-9)
            if not got.requires_grad:
                raise ExerciseFailed("your loss is cut off from autograd (a .detach(), .item() "
                                     "or torch.tensor(...) on the whole result?)")
            params = list(dec.parameters())
            grads = torch.autograd.grad(got.reshape(()), params, retain_graph=True,
                                        allow_unused=True)
            want = _estimator(dec, log_p_y, log_p_s, n_tokens, b, lambda_r)
            for (pname, p), g, w in zip(dec.named_parameters(), grads, want, strict=True):
                g = torch.zeros_like(p) if g is None else g
                compare(-g, w, rtol=1e-6, atol=1e-9,
                        name=f"minus the gradient of your loss w.r.t. decoder.{pname}")
        except ExerciseFailed as err:
            msg = [f"{label}:", f"  {err}"]
            hint = _surrogate_hint(fn, got, dec, log_p_y, log_p_s, n_tokens, b, lambda_r,
                                   expected)
            if hint:
                msg.append(f"  hint: {hint}")
            raise ExerciseFailed("\n".join(msg)) from None
    print(f"✓ {name}: value and gradient correct on all {len(cases)} test inputs")


def _surrogate_hint(fn: Callable[..., Any], got: Any, dec: AttentionDecoder, log_p_y: Tensor,
                    log_p_s: Tensor, n_tokens: Tensor, b: float, lambda_r: float,
                    expected: Tensor) -> str | None:
    if not isinstance(got, Tensor) or got.numel() != 1:
        return None
    graph_y, graph_s = log_p_y, log_p_s
    value, want = float(got.detach()), float(expected.detach())
    close = lambda x, y: abs(x - y) <= 1e-6 * max(1.0, abs(y))  # noqa: E731
    log_p_y, log_p_s = log_p_y.detach(), log_p_s.detach()
    objective = log_p_y + lambda_r * (log_p_y - b) * log_p_s
    variants = (
        (-want, "you returned the objective; the optimizer MINIMISES the loss, so return minus "
                "it (gradient descent on -L_s is ascent on L_s)"),
        (float(-objective.mean()),
         "divide the sum over captions by n_tokens (the number of real words), not by B"),
        (float(-objective.sum()),
         "divide the sum over captions by n_tokens (the number of real words)"),
        (float(-(log_p_y + lambda_r * log_p_y * log_p_s).sum() / n_tokens),
         "subtract the baseline: the reward is (log p(y|s,a) - b)"),
        (float(-(log_p_y + (log_p_y - b) * log_p_s).sum() / n_tokens),
         "multiply the REINFORCE term by lambda_r"),
        (float(-(lambda_r * (log_p_y - b) * log_p_s).sum() / n_tokens),
         "the first term is missing: log p(y|s,a) itself, whose gradient trains the word "
         "predictions"),
    )
    for variant, hint in variants:
        if close(value, variant) and not close(variant, want):
            return hint
    if close(value, want) and got.requires_grad:
        params = list(dec.parameters())
        grads = torch.autograd.grad(got.reshape(()), params, retain_graph=True,
                                    allow_unused=True)
        undetached = _estimator(dec, graph_y, graph_s, n_tokens, b, lambda_r, detach=False)
        if all(torch.allclose(-(g if g is not None else torch.zeros_like(p)), u, rtol=1e-6,
                              atol=1e-9)
               for p, g, u in zip(params, grads, undetached, strict=True)):
            return ("the value is right but the gradient is not: the reward (log p(y|s,a) - b) "
                    "must be a constant weight of log p(s|a). Without .detach(), autograd also "
                    "differentiates it and adds lambda_r log p(s|a) d log p(y|s,a)/dW, a term "
                    "that is not in Eq. (12)")
        return ("the value is right but the gradient is not: which factors should autograd "
                "treat as constants?")
    return None


__all__ = ["SURROGATE_CASES", "surrogate_cases", "baselines", "check_baselines", "check_surrogate"]
