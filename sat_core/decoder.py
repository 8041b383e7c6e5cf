"""The LSTM decoder with attention, Sec. 3.1.2 of Xu et al. (2015).

At step t the decoder reads the previous word y_{t-1}, the previous state (h_{t-1}, c_{t-1}) and
the annotation vectors a_1..a_L, and

1. scores every location, e_ti = f_att(a_i, h_{t-1})              Eq. (4)   (attention.py)
2. normalises, alpha_t = softmax(e_t)                              Eq. (5)
3. builds the context z_hat_t = beta_t * phi({a_i}, alpha_t)        Eq. (6), Sec. 4.1/4.2/4.2.1
4. runs the LSTM on [E y_{t-1}; h_{t-1}; z_hat_t]                   Eq. (1)-(3)
5. predicts y_t with the deep output layer                          Eq. (7)

Speed without a second copy of the math: T's columns that multiply E y_{t-1} (``T_y``) do not
depend on the recurrence, so teacher forcing applies them to ALL steps in one matmul before the
loop, and the deep output layer runs once on all steps after it. The loop body is
:meth:`AttentionDecoder._recur`, which :meth:`AttentionDecoder.step` calls too.

The rest of the speed is behind one seam, ``sat_core/fast.py``: :meth:`AttentionDecoder.forward`
takes its per-step linear maps T_hz and U_a from :func:`sat_core.fast.stepwise` (the same
products, their weight gradients summed over all steps in one matmul), and f_att's scores go
through :func:`sat_core.fast.attention_scores` on the CPU (see ``attention.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sat_core import fast
from sat_core.attention import (
    Gate,
    SoftAttention,
    argmax_locations,
    at_least_float32,
    attention_entropy,
    attention_weights,
    expected_context,
    location_log_prob,
    sample_locations,
    select_context,
)

MODES = ("soft", "hard-sample", "hard-argmax", "hard-expect", "hard-forced")
"""How phi of Eq. (6) builds the context:

* ``soft``        z = sum_i alpha_i a_i (Sec. 4.2, deterministic "soft" attention);
* ``hard-sample`` s_t ~ Multinoulli(alpha_t), z = a_{s_t} (Sec. 4.1, training);
* ``hard-argmax`` s_t = argmax_i alpha_ti (test time: the most likely location);
* ``hard-expect`` z = E[a_s] = sum_i alpha_i a_i (test time: the expected context);
* ``hard-forced`` s_t given by the caller (enumerating attention sequences, replaying a sample).
"""

State = tuple[Tensor, Tensor]  # (h, c), each (B, n)


@dataclass
class DecoderConfig:
    """Sizes of the decoder; defaults are our paper-scale presets (m=512, n=1024).

    The paper gives no m or n. D=512 is VGG-19 conv5_4's. The authors' code (arctic-captions)
    defaults to dim_word=100, dim=1000, ctx_dim=512; its COCO script uses 512-dim word embeddings
    and an 1800-dim LSTM.
    """

    vocab_size: int  # K
    feature_dim: int  # D
    embed_dim: int = 512  # m
    hidden_dim: int = 1024  # n
    attn_dim: int = 512  # hidden layer of f_att
    dropout: float = 0.5  # on the argument of L_o, Eq. (7); the authors also drop h_t, we do not
    gate: bool = True  # scalar beta_t, Sec. 4.2.1
    attention: str = "soft"  # "soft" (Sec. 4.2) or "hard" (Sec. 4.1): how it is TRAINED

    def __post_init__(self) -> None:
        for name in ("vocab_size", "feature_dim", "embed_dim", "hidden_dim", "attn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"DecoderConfig.{name} must be a positive int, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DecoderConfig.dropout must be in [0, 1), got {self.dropout!r}")
        if self.attention not in ("soft", "hard"):
            raise ValueError(
                f"DecoderConfig.attention must be 'soft' or 'hard', got {self.attention!r}"
            )

    @property
    def train_mode(self) -> str:
        """The decoder mode used for training: "soft" or "hard-sample"."""
        return "soft" if self.attention == "soft" else "hard-sample"


class Annotations(NamedTuple):
    """The annotation vectors of a batch of images and their projection, computed once per image."""

    a: Tensor  # (B, L, D)
    a_proj: Tensor  # (B, L, attn_dim) = W_a a + b

    def select(self, index: Tensor) -> Annotations:
        """Rows ``index`` (e.g. the images beam search is still decoding)."""
        return Annotations(self.a.index_select(0, index), self.a_proj.index_select(0, index))


class StepOutput(NamedTuple):
    logits: Tensor  # (B, K), unnormalised log p(y_t | a, y_<t), Eq. (7)
    state: State  # (h_t, c_t)
    alpha: Tensor  # (B, L), float32
    beta: Tensor  # (B,), float32 (ones when the gate is off)
    z_hat: Tensor  # (B, D), the gated context that entered the LSTM and Eq. (7)
    s: Tensor | None  # (B,) long location (hard modes except hard-expect)
    log_p_s: Tensor | None  # (B,) log alpha_t[s_t], float32


class DecoderOutput(NamedTuple):
    logits: Tensor  # (B, T, K); zero at padded steps t >= lengths[b]
    alpha: Tensor  # (B, T, L), float32; zero at padded steps
    beta: Tensor  # (B, T), float32; zero at padded steps
    s: Tensor | None  # (B, T) long; 0 at padded steps, -1 where `mix` used the expectation
    log_p_s: Tensor | None  # (B, T) log p(s_t | a), float32; 0 at padded steps and mixed rows
    entropy: Tensor | None  # (B, T) H(alpha_t), float32 (all modes but "soft"); 0 at padding


class _Recur(NamedTuple):
    h: Tensor
    c: Tensor
    z_hat: Tensor
    e: Tensor
    alpha: Tensor
    beta: Tensor
    s: Tensor | None


class AttentionDecoder(nn.Module):
    """LSTM decoder with soft or stochastic hard attention (Sec. 3.1.2, 4.1, 4.2).

    Parameters, in the paper's names:

    * ``embedding``: E, K x m.
    * ``attention``: f_att (W_a, b, U_a, w_att, c), see :class:`SoftAttention`.
    * ``gate``: f_beta, see :class:`Gate` (None when ``cfg.gate`` is False).
    * ``T_y`` and ``T_hz``: the affine map T_{D+m+n,n} of Eq. (1) split by columns: ``T_y`` acts
      on E y_{t-1} (and holds the bias), ``T_hz`` on [h_{t-1}; z_hat_t]. Rows are the gates in
      the order (i, f, o, g), as in the authors' code.
    * ``f_init_h``, ``f_init_c``: the initial-state MLPs of Sec. 3.1.2.
    * ``L_h`` (n -> m), ``L_z`` (D -> m), ``L_o`` (m -> K): the deep output layer of Eq. (7).
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        K, D, m, n = cfg.vocab_size, cfg.feature_dim, cfg.embed_dim, cfg.hidden_dim
        self.embedding = nn.Embedding(K, m)
        self.attention = SoftAttention(D, n, cfg.attn_dim)
        self.gate = Gate(n) if cfg.gate else None
        self.T_y = nn.Linear(m, 4 * n)
        self.T_hz = nn.Linear(n + D, 4 * n, bias=False)
        self.f_init_h = nn.Linear(D, n)
        self.f_init_c = nn.Linear(D, n)
        self.L_h = nn.Linear(n, m, bias=False)
        self.L_z = nn.Linear(D, m, bias=False)
        self.L_o = nn.Linear(m, K)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    # ----------------------------------------------------------------------------- per image
    def precompute(self, a: Tensor) -> Annotations:
        """Validate a (B, L, D) and project it once: a_proj = W_a a + b (Eq. (4)'s inner part)."""
        if a.dim() != 3 or a.shape[-1] != self.cfg.feature_dim:
            raise ValueError(
                f"AttentionDecoder expects annotation vectors a of shape (B, L, "
                f"D={self.cfg.feature_dim}), got {tuple(a.shape)}; check the encoder/feature "
                "cache matches DecoderConfig.feature_dim"
            )
        weight = self.attention.W_a.weight
        if a.dtype != weight.dtype:  # e.g. a float16 feature cache feeding a float32 model
            a = a.to(weight.dtype)
        return Annotations(a, self.attention.project(a))

    def init_state(self, a: Tensor | Annotations) -> State:
        """Sec. 3.1.2: h_0 = tanh(f_init_h(mean_i a_i)), c_0 = tanh(f_init_c(mean_i a_i))."""
        if isinstance(a, Annotations):
            a = a.a
        a_mean = a.mean(dim=1)
        h = torch.tanh(at_least_float32(self.f_init_h(a_mean)))
        c = torch.tanh(at_least_float32(self.f_init_c(a_mean)))
        return h, c

    # ----------------------------------------------------------------------------- one step
    def _context(
        self,
        alpha: Tensor,
        a: Tensor,
        mode: str,
        s: Tensor | None,
        mix: Tensor | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, Tensor | None]:
        """phi({a_i}, alpha) of Eq. (6) for each mode; returns (context before the gate, s)."""
        if mode in ("soft", "hard-expect"):
            return expected_context(alpha, a), None  # Eq. (13)
        if mode == "hard-sample":
            s = sample_locations(alpha, generator)  # Eq. (8)
        elif mode == "hard-argmax":
            s = argmax_locations(alpha)
        z = select_context(a, s)
        if mix is not None:  # the 0.5 trick of Sec. 4.1: the expectation instead of the sample
            z = torch.where(mix.unsqueeze(1), expected_context(alpha, a), z)
            s = s.masked_fill(mix, -1)
        return z, s

    def _recur(
        self,
        x_t: Tensor,
        state: State,
        ann: Annotations,
        mode: str,
        s: Tensor | None = None,
        mix: Tensor | None = None,
        generator: torch.Generator | None = None,
        T_hz: Callable[[Tensor], Tensor] | None = None,
        U_a: Callable[[Tensor], Tensor] | None = None,
    ) -> _Recur:
        """One step of attention + LSTM, Eq. (1)-(6). x_t = T_y E y_{t-1} + bias, (B, 4n).

        The single copy of the cell, used by :meth:`step` and by the loop of :meth:`forward`.
        ``T_hz`` and ``U_a`` default to the layers of those names; :meth:`forward` passes the
        maps :func:`sat_core.fast.stepwise` returns for them (same values).
        """
        h_prev, c_prev = state
        e = self.attention.scores(ann.a_proj, h_prev, U_a)  # Eq. (4)
        alpha = attention_weights(e)  # Eq. (5)
        z, s = self._context(alpha, ann.a, mode, s, mix, generator)  # Eq. (6)
        if self.gate is not None:  # Sec. 4.2.1
            beta = self.gate(h_prev)
            z_hat = beta.unsqueeze(1) * z
        else:
            beta = alpha.new_ones(alpha.shape[0])
            z_hat = z
        # Eq. (1): (i, f, o, g) = (sigm, sigm, sigm, tanh) T [E y_{t-1}; h_{t-1}; z_hat_t]
        hz = torch.cat([h_prev, z_hat.to(h_prev.dtype)], dim=1)
        T_hz = self.T_hz if T_hz is None else T_hz
        gates = at_least_float32(x_t + T_hz(hz))
        n = self.cfg.hidden_dim
        i, f, o = torch.sigmoid(gates[:, : 3 * n]).chunk(3, dim=1)
        g = torch.tanh(gates[:, 3 * n :])
        c = f * c_prev + i * g  # Eq. (2)
        h = o * torch.tanh(c)  # Eq. (3)
        return _Recur(h, c, z_hat, e, alpha, beta, s)

    def deep_output(self, emb_prev: Tensor, h: Tensor, z_hat: Tensor) -> Tensor:
        """Eq. (7): logits = L_o(dropout(E y_{t-1} + L_h h_t + L_z z_hat_t)), any leading dims.

        Linear as written in the paper; the authors' code applies a tanh to the sum before
        dropout and L_o. Biases of L_h and L_z would be absorbed by L_o's bias, so only L_o has one.
        """
        return self.L_o(self.dropout(emb_prev + self.L_h(h) + self.L_z(z_hat)))

    def step(
        self,
        y_prev: Tensor,
        state: State,
        ann: Annotations,
        mode: str = "soft",
        s: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> StepOutput:
        """One decoding step, Eq. (1)-(7), from the previous words y_prev (B*k,) long.

        ``y_prev`` and ``state`` hold k >= 1 consecutive rows per image of ``ann`` (k > 1: beam
        search's beams, which share their image's annotation vectors).

        ``s`` (B,) long is required for ``mode="hard-forced"`` and forbidden otherwise.
        """
        _check_mode(mode, s is not None, None)
        if s is not None:
            _check_locations(s, ann.a.shape[1], "step: s")
        emb = self.embedding(y_prev)
        r = self._recur(self.T_y(emb), state, ann, mode, s=s, generator=generator)
        logits = self.deep_output(emb, r.h, r.z_hat)
        log_p_s = None if r.s is None else location_log_prob(r.e, r.s)
        return StepOutput(logits, (r.h, r.c), r.alpha, r.beta, r.z_hat, r.s, log_p_s)

    # ----------------------------------------------------------------------------- teacher forcing
    def forward(
        self,
        a: Tensor,
        captions_in: Tensor,
        lengths: Tensor,
        mode: str = "soft",
        s: Tensor | None = None,
        mix: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput:
        """Teacher-forced decoding of a batch: Eq. (1)-(7) at every step, fed the reference words.

        Args:
            a: annotation vectors (B, L, D).
            captions_in: the input words y_0..y_{T-1} (B, T) long, i.e. ``captions[:, :-1]``
                (starting with ``<start>``).
            lengths: (B,) number of real decode steps of each row, 1 <= lengths[b] <= T.
                Outputs at steps t >= lengths[b] are zero and never influence real steps.
            mode: one of :data:`MODES`.
            s: (B, T) long locations, required for ``"hard-forced"`` (ignored at padded steps).
            mix: (B,) bool, only with ``"hard-sample"``: those rows use the expected context
                instead of a sample (Sec. 4.1's 0.5 trick); their log p(s) is 0.
            generator: torch.Generator for the location samples.
        """
        B, T = _check_batch(a, captions_in, lengths)
        _check_mode(mode, s is not None, mix)
        steps = torch.arange(T, device=captions_in.device)
        real = steps.unsqueeze(0) < lengths.to(captions_in.device).unsqueeze(1)  # (B, T)
        s = _check_forward_s_mix(s, mix, real, a.shape[1])

        T_run = int(lengths.max())  # steps after the longest caption are all padding
        ann = self.precompute(a)
        state = self.init_state(ann)
        emb = self.embedding(captions_in[:, :T_run])  # E y_{t-1} for all t
        x = self.T_y(emb).unbind(1)  # T's E y_{t-1} columns for all t in one matmul
        T_hz = fast.stepwise(self.T_hz)  # the speed seam: same products as the layers
        U_a = fast.stepwise(self.attention.U_a)
        rs: list[_Recur] = []
        for t in range(T_run):  # Eq. (1)-(6), one step at a time
            s_t = None if s is None else s[:, t]
            r = self._recur(x[t], state, ann, mode, s=s_t, mix=mix, generator=generator,
                            T_hz=T_hz, U_a=U_a)
            state = (r.h, r.c)
            rs.append(r)

        pad = ~real[:, :T_run]
        h, z_hat = torch.stack([r.h for r in rs], 1), torch.stack([r.z_hat for r in rs], 1)
        logits = self.deep_output(emb, h, z_hat)  # Eq. (7), one big L_o for all steps
        alpha = torch.stack([r.alpha for r in rs], 1)
        beta = torch.stack([r.beta for r in rs], 1)
        if bool(pad.any()):
            logits = logits.masked_fill(pad.unsqueeze(-1), 0.0)
            alpha = alpha.masked_fill(pad.unsqueeze(-1), 0.0)
            beta = beta.masked_fill(pad, 0.0)
        s_out = log_p_s = entropy = None
        if mode != "soft":  # Sec. 4.1: the locations s_t, log p(s | a) (Eq. (8)), H(alpha_t)
            s_out, log_p_s, entropy = _hard_outputs(rs, pad)
        out = DecoderOutput(logits, alpha, beta, s_out, log_p_s, entropy)
        return _pad_steps(out, T) if T_run < T else out  # zero outputs for the all-padding tail


# ----------------------------------------------------------------------------- forward's outputs
def _hard_outputs(rs: list[_Recur], pad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor]:
    """The hard-attention outputs of :meth:`AttentionDecoder.forward`, (B, T) each, 0 at ``pad``:

    the locations s_t (-1 where ``mix`` used the expectation; None in ``"hard-expect"``), their
    log p(s_t | a) = log alpha_t[s_t] (Eq. (8); 0 at mixed rows) and the entropy H(alpha_t).
    """
    e = torch.stack([r.e for r in rs], 1)
    entropy = attention_entropy(e).masked_fill(pad, 0.0)
    if rs[0].s is None:
        return None, None, entropy
    s_out = torch.stack([r.s for r in rs], 1).masked_fill(pad, 0)
    sampled = s_out >= 0  # False where `mix` used the expectation
    log_p_s = location_log_prob(e, s_out.clamp(min=0))
    log_p_s = log_p_s.masked_fill(pad | ~sampled, 0.0)
    return s_out, log_p_s, entropy


def _pad_steps(out: DecoderOutput, T: int) -> DecoderOutput:
    """``out`` zero-padded along the steps (dim 1) to T: the steps after the longest caption."""
    extra = T - out.logits.shape[1]
    return DecoderOutput(*(
        None if x is None else F.pad(x, (0, 0) * (x.dim() - 2) + (0, extra)) for x in out
    ))


# --------------------------------------------------------------------------------- input checks
def _check_mode(mode: str, has_s: bool, mix: Tensor | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose one of {', '.join(MODES)}")
    if (mode == "hard-forced") != has_s:
        raise ValueError(
            "mode 'hard-forced' needs the locations s, and only that mode accepts them "
            f"(got mode={mode!r}, s given: {has_s})"
        )
    if mix is not None and mode != "hard-sample":
        raise ValueError(f"mix is only meaningful with mode='hard-sample', got mode={mode!r}")


def _check_locations(s: Tensor, L: int, what: str) -> None:
    if s.dtype != torch.long:
        raise ValueError(f"{what} must be a long tensor of locations, got {s.dtype}")
    if s.numel() and (int(s.min()) < 0 or int(s.max()) >= L):
        raise ValueError(f"{what} holds locations outside [0, {L}): min {int(s.min())}, "
                         f"max {int(s.max())}")


def _check_forward_s_mix(
    s: Tensor | None, mix: Tensor | None, real: Tensor, L: int
) -> Tensor | None:
    """Check :meth:`AttentionDecoder.forward`'s ``s`` (B, T) and ``mix`` (B,) bool; returns ``s``
    with its padded steps (``real`` False) set to location 0."""
    B, T = real.shape
    if s is not None:
        if s.shape != (B, T):
            raise ValueError(f"forward: s must have shape (B, T) = {(B, T)}, "
                             f"got {tuple(s.shape)}")
        s = s.masked_fill(~real, 0)
        _check_locations(s, L, "forward: s")
    if mix is not None and (mix.shape != (B,) or mix.dtype != torch.bool):
        raise ValueError(f"forward: mix must be a bool tensor of shape ({B},), got "
                         f"{mix.dtype} {tuple(mix.shape)}")
    return s


def _check_batch(a: Tensor, captions_in: Tensor, lengths: Tensor) -> tuple[int, int]:
    if captions_in.dim() != 2 or captions_in.dtype != torch.long:
        raise ValueError(
            f"captions_in must be a (B, T) long tensor of word ids, got {captions_in.dtype} "
            f"{tuple(captions_in.shape)}"
        )
    B, T = captions_in.shape
    if a.dim() != 3 or a.shape[0] != B:
        raise ValueError(f"a must be (B={B}, L, D) to match captions_in, got {tuple(a.shape)}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},), got {tuple(lengths.shape)}")
    if B and (int(lengths.min()) < 1 or int(lengths.max()) > T):
        raise ValueError(
            f"lengths (number of real decode steps) must lie in [1, T={T}], got min "
            f"{int(lengths.min())} max {int(lengths.max())}; pass lengths - 1 of the full "
            "captions (the decoder consumes captions[:, :-1])"
        )
    return B, T
