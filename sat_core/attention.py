"""Where to look: soft attention f_att, the gate beta, and the hard-attention helpers.

Notation of Xu et al. (2015): annotation vectors ``a`` (B, L, D), one per image location;
previous hidden state ``h`` = h_{t-1} (B, n); scores ``e`` (B, L); weights ``alpha`` (B, L);
context ``z_hat`` (B, D); gate ``beta`` (B,); attention locations ``s`` (B,) long.

* Eq. (4)  e_ti = f_att(a_i, h_{t-1})            -> :class:`SoftAttention`
* Eq. (5)  alpha_ti = exp(e_ti) / sum_k exp(e_tk) -> :func:`attention_weights`
* Eq. (13) soft: z_hat_t = sum_i alpha_ti a_i     -> :func:`expected_context`
* Eq. (8)  hard: s_t ~ Multinoulli_L(alpha_t), z_hat_t = a_{s_t}
           -> :func:`sample_locations`, :func:`argmax_locations`, :func:`select_context`
* Eq. (12) the REINFORCE terms need log p(s_t | a) = log alpha_t[s_t] and H(alpha_t)
           -> :func:`location_log_prob`, :func:`attention_entropy`
* Sec. 4.2.1 the gate: z_hat_t = beta_t * sum_i alpha_ti a_i -> :class:`Gate`

Softmaxes and logs are computed in float32 even under ``torch.autocast``: a bfloat16 softmax over
196 locations loses most of its mass to rounding, and log(alpha) of an underflowed alpha is -inf.

This module is the maths. Its one speed seam is in :meth:`SoftAttention.scores`, which hands
Eq. (4) to :func:`sat_core.fast.attention_scores` on the CPU: the same e, computed in fewer passes
over memory (``sat_core/fast.py`` says how, and what it measured).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from sat_core import fast


def at_least_float32(x: Tensor) -> Tensor:
    """Upcast float16/bfloat16 to float32; float32 and float64 pass through unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class SoftAttention(nn.Module):
    """f_att of Eq. (4) as the authors' one-hidden-layer MLP (arctic-captions ``lstm_cond_layer``).

        e_ti = w_att^T tanh(W_a a_i + U_a h_{t-1} + b) + c

    ``W_a a_i + b`` does not depend on t: :meth:`project` computes it ONCE PER IMAGE and
    :meth:`scores` only adds ``U_a h_{t-1}`` at every step. (The scalar ``c`` cancels in the
    softmax of Eq. (5); it is kept because the authors have it.)

    Args:
        feature_dim: D, size of an annotation vector a_i.
        hidden_dim: n, size of the LSTM state h.
        attn_dim: size of the MLP's hidden layer (the authors use D).
    """

    def __init__(self, feature_dim: int, hidden_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.W_a = nn.Linear(feature_dim, attn_dim)  # W_a a_i + b
        self.U_a = nn.Linear(hidden_dim, attn_dim, bias=False)  # U_a h_{t-1}
        self.w_att = nn.Linear(attn_dim, 1)  # w_att^T (.) + c

    def project(self, a: Tensor) -> Tensor:
        """Eq. (4)'s W_a a_i + b for every location: (B, L, D) -> a_proj (B, L, attn_dim).

        It does not depend on t: compute it once per image.
        """
        return self.W_a(a)

    def scores(
        self, a_proj: Tensor, h: Tensor, U_a: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        """Eq. (4): e_ti = w_att^T tanh(a_proj_i + U_a h_{t-1}) + c, shape (B*k, L).

        ``h`` holds k >= 1 consecutive rows per image, (B*k, n): k = 1, or the k beams of beam
        search, which all look at their image's one a_proj (B, L, A), never copied per beam.
        ``U_a`` replaces the layer ``self.U_a`` by a map computing the same product (teacher
        forcing passes the one :func:`sat_core.fast.stepwise` returns). The speed seam: where
        :func:`sat_core.fast.applies` (on the CPU), :func:`sat_core.fast.attention_scores`
        computes the same e in fewer passes over memory.
        """
        B, L, A = a_proj.shape
        u = (self.U_a if U_a is None else U_a)(h).view(B, -1, 1, A)  # (B, k, 1, A)
        if fast.applies(a_proj, u):
            return fast.attention_scores(a_proj, u, self.w_att)
        return self.w_att(torch.tanh(a_proj.unsqueeze(1) + u)).view(-1, L)

    def forward(self, a: Tensor, h: Tensor, a_proj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Eq. (4), (5) and (13) in one call: returns (sum_i alpha_i a_i (B, D), alpha (B, L)).

        Pass ``a_proj = project(a)`` when calling this at every step of a sequence.
        """
        if a_proj is None:
            a_proj = self.project(a)
        alpha = attention_weights(self.scores(a_proj, h))
        return expected_context(alpha, a), alpha


class Gate(nn.Module):
    """The gating scalar of Sec. 4.2.1: beta_t = sigmoid(f_beta(h_{t-1})).

    ONE number in (0, 1) per step and example, shape (B,) -- as in the paper and the authors'
    ``selector`` (``W_sel`` is n x 1), not a D-wide vector. The decoder then uses
    z_hat_t = beta_t * sum_i alpha_ti a_i.
    """

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.f_beta = nn.Linear(hidden_dim, 1)

    def forward(self, h: Tensor) -> Tensor:
        """h_{t-1} (B, n) -> beta_t (B,), in float32 (or float64)."""
        return torch.sigmoid(at_least_float32(self.f_beta(h))).squeeze(-1)


def attention_weights(e: Tensor) -> Tensor:
    """Eq. (5): alpha = softmax(e) over the L locations (last dim), in float32 (or float64)."""
    return torch.softmax(at_least_float32(e), dim=-1)


def expected_context(alpha: Tensor, a: Tensor) -> Tensor:
    """Eq. (13): sum_i alpha_i a_i, i.e. E_{p(s|a)}[a_s]. alpha (B*k, L), a (B, L, D) -> (B*k, D).

    k >= 1 consecutive rows of alpha per image (k > 1: beam search's beams share their image's a).
    """
    B, L, D = a.shape
    return torch.bmm(alpha.to(a.dtype).view(B, -1, L), a).view(-1, D)


def sample_locations(alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Eq. (8): s_t ~ Multinoulli_L(alpha_t). alpha (B, L) -> s (B,) long.

    ``generator`` (on alpha's device) makes the draw reproducible without touching the global
    RNG. No gradient flows through a discrete sample; Eq. (12) reaches f_att through
    :func:`location_log_prob` instead. The speed seam: on the CPU,
    :func:`sat_core.fast.sample_categorical` draws from the same distribution in fewer passes.
    """
    p = at_least_float32(alpha.detach())
    if p.device.type == "cpu":
        return fast.sample_categorical(p, generator)
    return torch.multinomial(p, 1, generator=generator).squeeze(1)


def argmax_locations(alpha: Tensor) -> Tensor:
    """The most likely location per example (test-time hard attention). (B, L) -> (B,) long."""
    return alpha.argmax(dim=-1)


def select_context(a: Tensor, s: Tensor) -> Tensor:
    """Hard context z_hat = a_{s}: the annotation vector at location s. a (B, L, D), s (B*k,).

    k >= 1 consecutive rows of s per image (k > 1: beam search's beams share their image's a).
    """
    image = torch.arange(s.shape[0], device=s.device) * a.shape[0] // max(s.shape[0], 1)
    return a[image, s]  # row r belongs to image r // k


def location_log_prob(e: Tensor, s: Tensor) -> Tensor:
    """log p(s_t | a) = log alpha_t[s_t] from the scores e (..., L) and locations s (...).

    Takes the scores, not alpha: log_softmax(e) stays finite where alpha underflows to 0.
    """
    log_alpha = torch.log_softmax(at_least_float32(e), dim=-1)
    return log_alpha.gather(-1, s.unsqueeze(-1)).squeeze(-1)


def attention_entropy(e: Tensor) -> Tensor:
    """H(alpha_t) = -sum_i alpha_ti log alpha_ti from the scores e (..., L) -> (...)."""
    log_alpha = torch.log_softmax(at_least_float32(e), dim=-1)
    return -(log_alpha.exp() * log_alpha).sum(-1)
