"""Chapter 5 exercises: the doubly stochastic penalty (Eq. 14) and the deep output layer (Eq. 7).

* :data:`check_doubly_stochastic` -- ``my_penalty(alpha, lengths, lam) -> scalar``:
  lam * sum_i (1 - sum_{t < lengths[b]} alpha_bti)^2, averaged over the batch, against
  :func:`sat_core.losses.doubly_stochastic_penalty`. The cases put non-zero weights at padded
  steps, so an answer must use ``lengths`` rather than rely on zeros there;
* :data:`check_deep_output` -- ``my_deep_output(emb_prev, h, z_hat, L_h, L_z, L_o, b_o) ->
  logits``: L_o (E y_{t-1} + L_h h_t + L_z z_hat_t) + b_o (B, K), against
  :meth:`sat_core.decoder.AttentionDecoder.deep_output` (no dropout: evaluation mode).

Weights follow ``nn.Linear``'s layout (out, in): L_h is (m, n), L_z (m, D), L_o (K, m), b_o (K,).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.exercises._base import Case, ExerciseCheck
from sat_core.losses import doubly_stochastic_penalty


def _close(x: Any, y: Tensor) -> bool:
    if isinstance(x, (int, float)):
        x = torch.tensor(float(x))
    return (isinstance(x, Tensor) and x.shape == y.shape
            and bool(torch.allclose(x.detach().double(), y.detach().double(), rtol=1e-4,
                                    atol=1e-6)))


# --------------------------------------------------------------------------- Eq. (14)


def _alpha_cases() -> list[Case]:
    g = torch.Generator().manual_seed(5)

    def alpha(B: int, T: int, L: int, sharp: float) -> Tensor:
        return torch.softmax(sharp * torch.randn(B, T, L, generator=g), dim=-1)

    return [
        Case((alpha(3, 6, 4, 2.0), torch.tensor([6, 3, 4]), 1.0),
             name="B=3, T=6, L=4, lengths (6, 3, 4), lam=1"),
        Case((alpha(2, 5, 7, 1.0).requires_grad_(), torch.tensor([2, 5]), 0.25),
             name="B=2, T=5, L=7, lengths (2, 5), lam=0.25, requires grad"),
        Case((alpha(4, 3, 3, 3.0), torch.tensor([1, 3, 2, 3]), 2.0),
             name="B=4, T=3, L=3, lengths (1, 3, 2, 3), lam=2"),
        Case((alpha(3, 4, 5, 1.0), torch.tensor([1, 1, 1]), 1.0), name="every length 1"),
        Case((alpha(2, 5, 1, 1.0), torch.tensor([5, 2]), 0.5), name="a single location (L=1)"),
        Case((alpha(1, 4, 3, 2.0), torch.tensor([4]), 1.0), name="B=1, the full length"),
    ] + [_random_alpha_case(g, k) for k in range(4)]


def _random_alpha_case(g: torch.Generator, k: int) -> Case:
    """Random B, T, L in 1..6, lengths in 1..T, lam in (0, 2)."""
    B, T, L = (int(x) for x in torch.randint(1, 7, (3,), generator=g))
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lam = round(float(2 * torch.rand((), generator=g)), 3)
    a = torch.softmax(2 * torch.randn(B, T, L, generator=g), dim=-1)
    return Case((a, lengths, lam), name=f"random {k + 1}: B={B}, T={T}, L={L}, lengths "
                f"{tuple(lengths.tolist())}, lam={lam}")


def _penalty_variants(alpha: Tensor, lengths: Tensor, lam: float) -> dict[str, Tensor]:
    """What the usual slips compute, to recognise them."""
    steps = torch.arange(alpha.shape[1])
    real = (steps < lengths.unsqueeze(1)).unsqueeze(-1)
    total = (alpha * real).sum(1)  # (B, L)
    one_more = (alpha * (steps <= lengths.unsqueeze(1)).unsqueeze(-1)).sum(1)
    one_less = (alpha * (steps < lengths.unsqueeze(1) - 1).unsqueeze(-1)).sum(1)
    unmasked = alpha.sum(1)
    per_image = ((1 - total) ** 2).sum(1)
    return {
        "unmasked": lam * ((1 - unmasked) ** 2).sum(1).mean(),
        "over_locations": lam * ((1 - (alpha * real).sum(2)) ** 2).sum(1).mean(),
        "batch_sum": lam * per_image.sum(),
        "no_lam": per_image.mean(),
        "mean_over_L": lam * ((1 - total) ** 2).mean(1).mean(),
        "not_squared": lam * (1 - total).sum(1).mean(),
        "abs": lam * (1 - total).abs().sum(1).mean(),
        "one_more": lam * ((1 - one_more) ** 2).sum(1).mean(),
        "one_less": lam * ((1 - one_less) ** 2).sum(1).mean(),
    }


_PENALTY_HINTS = {
    "unmasked": "you also summed the padded steps t >= lengths[b]: only the real steps count "
                "(the weights there are not guaranteed to be zero; build a mask from lengths)",
    "over_locations": "sum_t alpha_ti sums over the time steps (dim 1) for each location i; you "
                      "summed over the locations (dim 2), where the weights always add up to 1",
    "batch_sum": "average the per-image penalties over the batch (mean over b), don't sum them",
    "no_lam": "multiply by lam",
    "mean_over_L": "sum over the L locations (Eq. 14 has sum_i), not a mean",
    "not_squared": "square each (1 - sum_t alpha_ti) before summing over i",
    "abs": "Eq. (14) squares (1 - sum_t alpha_ti); an absolute value is a different penalty",
    "one_more": "off by one in the lengths: step t is real when t < lengths[b] (lengths counts "
                "the steps), so t = lengths[b] is already padding",
    "one_less": "off by one in the lengths: step t is real when t < lengths[b]; you dropped the "
                "last real step",
}


def _penalty_hints(got: Any, expected: Tensor, case: Case) -> str | None:
    alpha, lengths, lam = case.args
    for name, value in _penalty_variants(alpha.detach(), lengths, lam).items():
        if _close(got, value) and not _close(value, expected):
            return _PENALTY_HINTS[name]
    return None


check_doubly_stochastic = ExerciseCheck(
    "the doubly stochastic penalty (Eq. 14)",
    reference=doubly_stochastic_penalty,
    cases=_alpha_cases,
    rtol=1e-5,
    atol=1e-6,
    hints=(_penalty_hints,),
)

# --------------------------------------------------------------------------- Eq. (7)


class _DeepOutput(nn.Module):
    """A decoder whose ``forward`` is its deep output layer, for ``functional_call``."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.decoder = AttentionDecoder(cfg)

    def forward(self, emb_prev: Tensor, h: Tensor, z_hat: Tensor) -> Tensor:
        return self.decoder.deep_output(emb_prev, h, z_hat)


def deep_output(emb_prev: Tensor, h: Tensor, z_hat: Tensor, L_h: Tensor, L_z: Tensor,
                L_o: Tensor, b_o: Tensor) -> Tensor:
    """Reference: ``AttentionDecoder.deep_output`` with the given weights, in eval mode."""
    (m, n), D, K = L_h.shape, L_z.shape[1], L_o.shape[0]
    cfg = DecoderConfig(vocab_size=K, feature_dim=D, embed_dim=m, hidden_dim=n, attn_dim=1)
    layer = _DeepOutput(cfg).to(device=h.device, dtype=h.dtype).eval()  # eval: no dropout
    params = {"decoder.L_h.weight": L_h, "decoder.L_z.weight": L_z,
              "decoder.L_o.weight": L_o, "decoder.L_o.bias": b_o}
    return functional_call(layer, params, (emb_prev, h, z_hat))


def _deep_inputs(g: torch.Generator, B: int, m: int, n: int, D: int, K: int,
                 grad: bool = False) -> tuple[Tensor, ...]:
    out = (torch.randn(B, m, generator=g), torch.randn(B, n, generator=g),
           torch.randn(B, D, generator=g), torch.randn(m, n, generator=g) / n**0.5,
           torch.randn(m, D, generator=g) / D**0.5, torch.randn(K, m, generator=g) / m**0.5,
           torch.randn(K, generator=g))
    return tuple(x.requires_grad_() for x in out) if grad else out


def _deep_cases() -> list[Case]:
    g = torch.Generator().manual_seed(7)
    return [
        Case(_deep_inputs(g, 2, 3, 4, 5, 6), name="B=2, m=3, n=4, D=5, K=6"),
        Case(_deep_inputs(g, 3, 4, 4, 4, 7), name="B=3, m=n=D=4, K=7"),
        Case(_deep_inputs(g, 2, 3, 5, 4, 8, grad=True), name="B=2, m=3, n=5, D=4, K=8, "
             "requires grad"),
        Case(_deep_inputs(g, 1, 1, 1, 1, 2), name="B=1, m=n=D=1, K=2"),
    ] + [Case(_deep_inputs(g, *sizes), name=f"random sizes B, m, n, D, K = {sizes}")
         for sizes in (tuple(int(x) for x in torch.randint(1, 7, (5,), generator=g))
                       for _ in range(3))]


def _deep_variants(emb: Tensor, h: Tensor, z: Tensor, L_h: Tensor, L_z: Tensor, L_o: Tensor,
                   b_o: Tensor) -> dict[str, Callable[[], Tensor]]:
    out = lambda x: x @ L_o.T + b_o  # noqa: E731
    s = emb + h @ L_h.T + z @ L_z.T
    return {
        "tanh": lambda: out(torch.tanh(s)),
        "no_emb": lambda: out(h @ L_h.T + z @ L_z.T),
        "no_h": lambda: out(emb + z @ L_z.T),
        "no_z": lambda: out(emb + h @ L_h.T),
        "no_bias": lambda: s @ L_o.T,
        "softmax": lambda: torch.softmax(out(s), -1),
        "log_softmax": lambda: torch.log_softmax(out(s), -1),
        "L_h_T": lambda: out(emb + h @ L_h + z @ L_z.T),
        "L_z_T": lambda: out(emb + h @ L_h.T + z @ L_z),
    }


_DEEP_HINTS = {
    "tanh": "you applied a tanh to E y_{t-1} + L_h h_t + L_z z_hat_t, as the authors' Theano code "
            "does; Eq. (7) of the paper, which sat_core follows, has none",
    "no_emb": "the E y_{t-1} term is missing: the previous word's embedding enters Eq. (7) "
              "directly",
    "no_h": "the L_h h_t term is missing",
    "no_z": "the L_z z_hat_t term is missing: the context enters the output layer directly too",
    "no_bias": "L_o has a bias b_o: add it",
    "softmax": "your rows sum to 1: return the unnormalised logits; the loss applies "
               "log_softmax itself",
    "log_softmax": "these are log-probabilities: return the unnormalised logits; the loss "
                   "applies log_softmax itself",
    "L_h_T": "L_h is used transposed: its rows are outputs (nn.Linear's layout), so L_h h_t "
             "for a batch of row vectors is h @ L_h.T",
    "L_z_T": "L_z is used transposed: L_z z_hat_t for a batch of row vectors is z_hat @ L_z.T",
}


def _deep_hints(got: Any, expected: Tensor, case: Case) -> str | None:
    args = [x.detach() for x in case.args]
    m, n = args[3].shape
    D = args[4].shape[1]
    for name, variant in _deep_variants(*args).items():
        if (name == "L_h_T" and m != n) or (name == "L_z_T" and m != D):
            continue  # the transposed product does not even exist
        if _close(got, variant()):
            return _DEEP_HINTS[name]
    return None


check_deep_output = ExerciseCheck(
    "the deep output layer (Eq. 7)",
    reference=deep_output,
    cases=_deep_cases,
    rtol=1e-5,
    atol=1e-5,
    hints=(_deep_hints,),
)

__all__ = ["check_deep_output", "check_doubly_stochastic", "deep_output"]
