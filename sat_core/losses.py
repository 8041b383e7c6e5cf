"""Training objectives: word NLL, the doubly stochastic penalty, and the hard-attention estimator.

Shapes follow :class:`sat_core.decoder.DecoderOutput`: logits (B, T, K), alpha (B, T, L),
targets (B, T) = ``captions[:, 1:]`` and lengths (B,) = number of real decode steps.

Normalisation (one rule everywhere): every per-word quantity is divided by the number of real
tokens N = sum_b lengths[b] (``masked_nll`` is a mean over real tokens), and every per-image
regulariser is averaged over the batch. The hard-attention surrogate is divided by N too, so its
first term IS ``masked_nll`` and one learning rate fits both soft and hard training.

The authors' code (arctic-captions) sums the NLL over words and averages over captions; with the
per-token mean used here, their doubly stochastic weight alpha_c corresponds to
``lam = alpha_c / (mean caption length)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sat_core.attention import at_least_float32
from sat_core.decoder import DecoderOutput


def _real_steps(lengths: Tensor, T: int, device: torch.device) -> Tensor:
    """(B, T) bool mask, True at real decode steps t < lengths[b]."""
    return torch.arange(T, device=device).unsqueeze(0) < lengths.to(device).unsqueeze(1)


def _check(logits: Tensor, targets: Tensor, lengths: Tensor) -> None:
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, K) and targets (B, T), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}; targets are captions[:, 1:]"
        )
    if lengths.shape != targets.shape[:1]:
        raise ValueError(
            f"lengths must have shape ({targets.shape[0]},), got {tuple(lengths.shape)}"
        )


def token_log_likelihood(logits: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """log p(y_t | a, y_<t) at every real step, 0 at padded steps: (B, T), float32."""
    _check(logits, targets, lengths)
    B, T, K = logits.shape
    flat = at_least_float32(logits).reshape(B * T, K)
    nll = F.cross_entropy(flat, targets.reshape(B * T), reduction="none")
    real = _real_steps(lengths, T, logits.device)
    return -(nll.view(B, T) * real)


def sequence_log_likelihood(logits: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """log p(y | a) = sum_{t < lengths[b]} log p(y_t | a, y_<t), per caption: (B,), float32.

    With hard attention this is log p(y | s, a), the reward of Eq. (12).
    """
    return token_log_likelihood(logits, targets, lengths).sum(1)


def reward_to_go(log_p_words: Tensor, lengths: Tensor, baseline: Tensor | float = 0.0) -> Tensor:
    """The reward of location s_t when each draw is credited only with the words it can affect.

    s_t is drawn at step t and changes y_t, y_t+1, ... but not the words before it, so
    sum_{t' >= t} log p(y_t'|...) scores it with no bias and less variance than the whole
    log p(y|s,a) of Eq. (12). The baseline is per word: b * (number of words from t on), with b
    a moving average of the mean log p of one word. log_p_words (B, T) from
    :func:`token_log_likelihood` -> (B, T), 0 at padded steps.
    """
    to_go = log_p_words.flip(1).cumsum(1).flip(1)
    T = log_p_words.shape[1]
    remaining = (lengths.to(log_p_words.device).unsqueeze(1)
                 - torch.arange(T, device=log_p_words.device).unsqueeze(0)).clamp(min=0)
    return to_go - baseline * remaining


def masked_nll(logits: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
    """-log p(y_t | a, y_<t), averaged over the real tokens of the batch (scalar)."""
    n_tokens = lengths.sum().clamp(min=1)
    return -sequence_log_likelihood(logits, targets, lengths).sum() / n_tokens


def doubly_stochastic_penalty(alpha: Tensor, lengths: Tensor, lam: float) -> Tensor:
    """Eq. (14): lam * sum_i (1 - sum_t alpha_ti)^2, averaged over the batch.

    Sums over t only the real steps t < lengths[b]: each location should receive, in total over
    the caption, about one unit of attention (Sec. 4.2.1). alpha (B, T, L) -> scalar.
    """
    if alpha.dim() != 3 or lengths.shape != alpha.shape[:1]:
        raise ValueError(
            f"expected alpha (B, T, L) and lengths (B,), got {tuple(alpha.shape)} and "
            f"{tuple(lengths.shape)}"
        )
    real = _real_steps(lengths, alpha.shape[1], alpha.device).unsqueeze(-1)
    total = (at_least_float32(alpha) * real).sum(1)  # (B, L) = sum_t alpha_ti
    return lam * ((1.0 - total) ** 2).sum(1).mean()


def attention_entropy(alpha: Tensor, lengths: Tensor) -> Tensor:
    """Mean entropy of the attention weights over the real steps, as a fraction of log L.

    H(alpha_t) = -sum_i alpha_ti log alpha_ti is log L for uniform weights and 0 when all the
    weight is on one location; the mean over every real step of the batch is divided by log L, so
    1.0 means uniform attention. alpha (B, T, L) -> scalar (detached, float32).
    """
    alpha = at_least_float32(alpha.detach())
    real = _real_steps(lengths, alpha.shape[1], alpha.device)
    h = -(alpha * alpha.clamp_min(1e-12).log()).sum(-1)
    n = real.sum().clamp(min=1)
    return (h * real).sum() / n / math.log(max(alpha.shape[-1], 2))


class MovingAverageBaseline:
    """The variance-reducing baseline of Sec. 4.1: b_k = 0.9 b_{k-1} + 0.1 log p(y | s_k, a).

    ``value`` is the b to use for the CURRENT batch; call :meth:`update` with that batch's
    log p(y | s, a) afterwards, so b never depends on the samples it scores (the estimator
    stays unbiased). Starts at 0 as in the authors' code. ``state_dict``/``load_state_dict``
    keep it in checkpoints.
    """

    def __init__(self, momentum: float = 0.9, value: float = 0.0) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MovingAverageBaseline: momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.value = torch.tensor(float(value))

    def update(self, log_p_y: Tensor) -> Tensor:
        """b <- momentum * b + (1 - momentum) * mean_batch(log p(y|s,a)); returns the new b."""
        reward = log_p_y.detach().float().mean()
        self.value = self.momentum * self.value.to(reward.device) + (1 - self.momentum) * reward
        return self.value

    def state_dict(self) -> dict[str, Tensor | float]:
        return {"value": self.value.detach().cpu(), "momentum": self.momentum}

    def load_state_dict(self, state: dict[str, Tensor | float]) -> None:
        if "value" not in state:
            raise KeyError("MovingAverageBaseline.load_state_dict: the state has no 'value'")
        self.value = torch.as_tensor(state["value"], dtype=torch.float32).clone()
        self.momentum = float(state.get("momentum", self.momentum))


def hard_attention_surrogate(
    log_p_y: Tensor,
    log_p_s: Tensor,
    entropy: Tensor | None,
    n_tokens: Tensor | int,
    baseline: Tensor | float = 0.0,
    *,
    lambda_r: float = 1.0,
    lambda_e: float = 0.0,
    step_reward: Tensor | None = None,
) -> Tensor:
    """Surrogate loss whose gradient is minus the estimator of Eq. (12), divided by N tokens.

    For each caption b (with sampled locations s_b), the paper's learning rule is

        g_b = d log p(y|s,a)/dW + lambda_r (log p(y|s,a) - b) d log p(s|a)/dW + lambda_e dH[s]/dW

    an unbiased (for lambda_r = 1, lambda_e = 0) Monte Carlo estimate of the gradient of the
    variational lower bound L_s = sum_s p(s|a) log p(y|s,a) (Eq. (9)-(11)). Autograd reproduces it
    from

        loss = -(1/N) sum_b [ log p(y|s,a) + lambda_r * detach(log p(y|s,a) - b) * log p(s|a)
                              + lambda_e * H ]

    where ``.detach()`` makes the reward a constant weight of the score function.

    Args:
        log_p_y: (B,) log p(y | s, a) with gradient (``sequence_log_likelihood``).
        log_p_s: (B,) or (B, T) log p(s | a) = sum_t log alpha_t[s_t] (``DecoderOutput.log_p_s``;
            summed over the last dim when 2-D).
        entropy: (B,) or (B, T) sum_t H(alpha_t) along the sampled path, or None when
            lambda_e = 0. This is the authors' entropy regulariser: its pathwise gradient, not the
            exact gradient of H[s] (later alpha_t depend on earlier samples, whose score-function
            part it leaves out), which is why the estimator is unbiased only for lambda_e = 0.
        n_tokens: N, the number of real tokens (``lengths.sum()``).
        baseline: b, e.g. ``MovingAverageBaseline.value`` BEFORE this batch's update.
        lambda_r, lambda_e: the paper's lambda_r and lambda_e (the authors' code uses a per-word
            reward with lambda_r = 0.1).
        step_reward: (B, T), optional: a reward per location s_t (e.g. :func:`reward_to_go`,
            baseline already subtracted) that replaces ``log_p_y - baseline``; then
            ``baseline`` is unused and ``log_p_s`` must be (B, T).
    """
    objective = log_p_y + lambda_r * reinforce_term(log_p_y, log_p_s, baseline, step_reward)
    if lambda_e:
        if entropy is None:
            raise ValueError("hard_attention_surrogate: lambda_e != 0 needs the entropy")
        objective = objective + lambda_e * (entropy.sum(1) if entropy.dim() == 2 else entropy)
    return -objective.sum() / n_tokens


def reinforce_term(
    log_p_y: Tensor,
    log_p_s: Tensor,
    baseline: Tensor | float = 0.0,
    step_reward: Tensor | None = None,
) -> Tensor:
    """The REINFORCE term of Eq. (12) per caption: detach(log p(y|s,a) - b) * log p(s|a), (B,).

    The reward is a constant weight (``.detach()``), so autograd gives (log p(y|s,a) - b) times
    d log p(s|a)/dW. With ``step_reward`` (B, T) each location s_t has its own reward instead:
    sum_t detach(step_reward_t) * log p(s_t|a). Arguments as in :func:`hard_attention_surrogate`.
    """
    if step_reward is not None:
        if step_reward.shape != log_p_s.shape or log_p_s.dim() != 2:
            raise ValueError(
                f"step_reward and log_p_s must both be (B, T), got {tuple(step_reward.shape)} "
                f"and {tuple(log_p_s.shape)}"
            )
        return (step_reward.detach() * log_p_s).sum(1)
    if log_p_s.dim() == 2:
        log_p_s = log_p_s.sum(1)
    if log_p_y.shape != log_p_s.shape:
        raise ValueError(
            f"log_p_y and log_p_s must both be (B,), got {tuple(log_p_y.shape)} and "
            f"{tuple(log_p_s.shape)}"
        )
    return (log_p_y - baseline).detach() * log_p_s


def caption_loss(
    output: DecoderOutput,
    targets: Tensor,
    lengths: Tensor,
    *,
    alpha_c: float = 1.0,
    hard: bool = False,
    baseline: MovingAverageBaseline | None = None,
    lambda_r: float = 1.0,
    lambda_e: float = 0.0,
    reward: str = "caption",
) -> dict[str, Tensor]:
    """The training loss of a teacher-forced batch, plus its parts for logging.

    Soft (Sec. 4.2): ``masked_nll + doubly_stochastic_penalty(alpha, lengths, alpha_c)``.
    Hard (Sec. 4.1, ``hard=True``, output from ``mode="hard-sample"``):
    ``hard_attention_surrogate + doubly_stochastic_penalty``, using b = ``baseline.value`` and
    then UPDATING ``baseline`` with this batch's log p(y|s,a) (pass None for validation).
    ``reward="to-go"`` scores each s_t with :func:`reward_to_go` instead, and ``baseline`` then
    averages the log p of one word.

    Returns a dict: ``loss`` (to backpropagate), and detached ``nll`` (per real token),
    ``doubly_stochastic``, ``log_p_y`` (B,) and, when hard, ``surrogate`` and ``baseline``.
    """
    if reward not in ("caption", "to-go"):
        raise ValueError(f"caption_loss: reward must be 'caption' or 'to-go', got {reward!r}")
    n_tokens = lengths.sum().clamp(min=1)
    log_p_words = token_log_likelihood(output.logits, targets, lengths)
    log_p_y = log_p_words.sum(1)
    nll = -log_p_y.sum() / n_tokens
    ds = doubly_stochastic_penalty(output.alpha, lengths, alpha_c)
    parts: dict[str, Tensor] = {}
    if hard:
        if output.log_p_s is None:
            raise ValueError(
                "caption_loss(hard=True) needs log p(s|a): decode with mode='hard-sample'"
            )
        b = baseline.value.to(log_p_y.device) if baseline is not None else log_p_y.new_zeros(())
        step_reward = (reward_to_go(log_p_words.detach(), lengths, b) if reward == "to-go"
                       else None)
        surrogate = hard_attention_surrogate(
            log_p_y, output.log_p_s, output.entropy, n_tokens, b,
            lambda_r=lambda_r, lambda_e=lambda_e, step_reward=step_reward,
        )
        loss = surrogate + ds
        parts["surrogate"] = surrogate.detach()
        parts["baseline"] = b.detach()
        if baseline is not None:  # per caption, or per word for "to-go"
            baseline.update(log_p_y if reward == "caption"
                            else (log_p_y.sum() / n_tokens).reshape(1))
    else:
        loss = nll + ds
    parts.update(loss=loss, nll=nll.detach(), doubly_stochastic=ds.detach(),
                 log_p_y=log_p_y.detach())
    return parts
