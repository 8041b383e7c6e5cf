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
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


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
        """W_a a_i + b for every location: (B, L, D) -> a_proj (B, L, attn_dim). Once per image."""
        return self.W_a(a)

    def scores(
        self, a_proj: Tensor, h: Tensor, U_a: Callable[[Tensor], Tensor] | None = None
    ) -> Tensor:
        """Eq. (4): e_ti = w_att^T tanh(a_proj_i + U_a h_{t-1}) + c, shape (B, L).

        ``U_a`` replaces the layer ``self.U_a`` by one computing the same product (the decoder's
        teacher forcing passes one whose weight gradient is deferred to the end of the sequence).
        """
        u = (self.U_a if U_a is None else U_a)(h).unsqueeze(1)
        if _cpu_plain_float(a_proj, u):  # the same e, computed in fewer passes over memory
            if not torch.is_grad_enabled():
                return _chunked_scores(a_proj, u, self.w_att)
            return _CpuScores.apply(a_proj, u, self.w_att.weight, self.w_att.bias)
        hidden = torch.tanh(a_proj + u)
        return self.w_att(hidden).squeeze(-1)

    def forward(self, a: Tensor, h: Tensor, a_proj: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Soft attention in one call: returns (sum_i alpha_i a_i (B, D), alpha (B, L)).

        Pass ``a_proj = project(a)`` when calling this at every step of a sequence.
        """
        if a_proj is None:
            a_proj = self.project(a)
        alpha = attention_weights(self.scores(a_proj, h))
        return expected_context(alpha, a), alpha


def _cpu_plain_float(a_proj: Tensor, u: Tensor) -> bool:
    """On the CPU, without autocast, in float32/float64: where the fast forms below apply."""
    return (a_proj.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and a_proj.dtype == u.dtype and a_proj.dtype in (torch.float32, torch.float64))


class _CpuScores(torch.autograd.Function):
    """Eq. (4) for training on the CPU: e = w^T tanh(a_proj + u) + c with a hand-written backward.

    The (B, L, attn) block of pre-activations is the decoder's largest tensor, and on the CPU
    each pass over it costs more than its arithmetic (32 x 196 x 512 floats are 12.8 MB, and
    there is one such block per step). Two identities cut the passes over it from eleven per
    step (``torch.tanh`` and ``nn.Linear`` under autograd) to eight:

    * tanh(x) = 2 s - 1 with s = sigmoid(2x), so e = 2 w^T s - sum(w) + c: the forward is one
      add, one in-place sigmoid and one product with w (PyTorch's CPU sigmoid is 3-5x faster
      than its tanh: 2.0 vs 7.1 ms on one such block, measured here with 2 threads).
    * d tanh(x)/dx = 1 - tanh(x)^2 = 4 s (1 - s), so the backward needs only the saved s:
      dL/dx = 4 w * g_e s (1 - s) (one fused ``sigmoid_backward`` and one scaling), dL/du is its
      sum over locations, dL/dw = 2 s^T g_e - sum(g_e) and dL/dc = sum(g_e), without ever
      materialising the outer product g_e w^T that ``nn.Linear``'s backward would build.

    The two products with the block (s w and s^T g_e) are batched matmuls, not matrix-vector
    products: see :func:`_dot_rows`.

    Args (forward): a_proj (B, L, A), u (B, 1, A) or broadcastable, weight (1, A), bias (1,).
    """

    @staticmethod
    def forward(ctx, a_proj: Tensor, u: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        s = torch.add(u * 2, a_proj, alpha=2).sigmoid_()  # sigmoid(2 (a_proj + u))
        A = s.shape[-1]
        w = weight.reshape(A)
        e = _dot_rows(s, w)
        ctx.save_for_backward(s, weight)
        ctx.shapes = a_proj.shape, u.shape
        return e.mul_(2).add_(bias - w.sum())

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:
        s, weight = ctx.saved_tensors
        A = s.shape[-1]
        w = weight.reshape(A)
        g_flat = g.reshape(-1)
        g_a_proj = g_u = g_w = g_c = None
        if ctx.needs_input_grad[2]:
            g_w = _weighted_rows(s, g).mul_(2).sub_(g_flat.sum()).view_as(weight)
        if ctx.needs_input_grad[3]:
            g_c = g_flat.sum().reshape(1)
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            # g s (1 - s) in one pass, then times 4 w: dL/d(a_proj + u)
            d = torch.ops.aten.sigmoid_backward(g.unsqueeze(-1).expand_as(s), s).mul_(w * 4)
            if ctx.needs_input_grad[1]:
                g_u = _sum_to(d, ctx.shapes[1])
            if ctx.needs_input_grad[0]:
                g_a_proj = _sum_to(d, ctx.shapes[0])
        return g_a_proj, g_u, g_w, g_c


def _dot_rows(s: Tensor, w: Tensor, out: Tensor | None = None) -> Tensor:
    """s w: (B, L, A), (A,) -> (B, L), as B products (1 x A)(A x L).

    ``torch.mv`` computes the same sums, but MKL's matrix-vector kernel is slow with two threads:
    1.2-1.5 ms on a 32 x 196 x 512 block against 0.3-0.6 ms for this batched matmul (measured
    here; it is 0.4 ms with one thread).
    """
    B, L, A = s.shape
    e = torch.bmm(w.view(1, 1, A).expand(B, 1, A), s.transpose(1, 2),
                  out=None if out is None else out.view(B, 1, L))
    return e.view(B, L)


def _weighted_rows(s: Tensor, g: Tensor) -> Tensor:
    """sum_{b,l} g_bl s_bl: (B, L, A), (B, L) -> (A,), as B products (1 x L)(L x A) and a sum
    over B (0.2-0.3 ms instead of 0.8-1.3 ms for ``torch.mv`` of s^T, see :func:`_dot_rows`)."""
    B, L, A = s.shape
    return torch.bmm(g.reshape(B, 1, L), s).sum(0).view(A)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum grad over the dims where ``shape`` has size 1."""
    dims = [i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1]
    return grad.sum(dims, keepdim=True) if dims else grad


CHUNK_BYTES = 8 * 2**20  # the largest pre-activation block _chunked_scores allocates


def _chunked_scores(a_proj: Tensor, u: Tensor, w_att: nn.Linear) -> Tensor:
    """Eq. (4) for decoding on the CPU (no autograd): the same e, a few times faster on beam
    search's batches.

    Two changes, no approximation:

    * w^T tanh(x) + c = 2 w^T sigmoid(2x) - sum(w) + c, as in :class:`_CpuScores`.
    * The rows go in chunks of at most :data:`CHUNK_BYTES`. A 160 x 196 x 512 block (32 images x
      5 beams) is 64 MB: glibc serves an allocation that large with a fresh mmap every step, and
      touching its pages for the first time costs more than the arithmetic (measured here: 40 ms
      for one such add, 8 ms into a reused buffer). Blocks of a few MB are recycled by malloc.
    """
    B, L, A = a_proj.shape
    rows = max(1, CHUNK_BYTES // max(1, L * A * a_proj.element_size()))
    w = w_att.weight.reshape(A)
    e = torch.empty(B, L, dtype=a_proj.dtype, device=a_proj.device)
    u2 = (u * 2).expand(B, *u.shape[1:])
    for i in range(0, B, rows):
        x = torch.add(u2[i:i + rows], a_proj[i:i + rows], alpha=2).sigmoid_()
        _dot_rows(x, w, out=e[i:i + rows])
    return e.mul_(2).add_(w_att.bias - w.sum())


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
    """Eq. (13): sum_i alpha_i a_i, i.e. E_{p(s|a)}[a_s]. alpha (B, L), a (B, L, D) -> (B, D)."""
    return torch.bmm(alpha.to(a.dtype).unsqueeze(1), a).squeeze(1)


def sample_locations(alpha: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Eq. (8): s_t ~ Multinoulli_L(alpha_t). alpha (B, L) -> s (B,) long.

    ``generator`` (on alpha's device) makes the draw reproducible without touching the global
    RNG. No gradient flows through a discrete sample; Eq. (12) reaches f_att through
    :func:`location_log_prob` instead.
    """
    return torch.multinomial(at_least_float32(alpha.detach()), 1, generator=generator).squeeze(1)


def argmax_locations(alpha: Tensor) -> Tensor:
    """The most likely location per example (test-time hard attention). (B, L) -> (B,) long."""
    return alpha.argmax(dim=-1)


def select_context(a: Tensor, s: Tensor) -> Tensor:
    """Hard context z_hat = a_{s}: the annotation vector at location s. a (B, L, D), s (B,)."""
    index = s.view(-1, 1, 1).expand(-1, 1, a.shape[-1])
    return a.gather(1, index).squeeze(1)


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
