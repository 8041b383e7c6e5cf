"""Measuring the hard-attention gradient estimator of Eq. (11)-(12): its mean and its variance.

With stochastic hard attention (Sec. 4.1) every training step draws attention locations
s ~ p(s | a) (Eq. 8) and follows ONE Monte Carlo estimate of the gradient of the lower bound
L_s = sum_s p(s|a) log p(y|s,a) (Eq. 9). For a batch of captions (N real tokens in all) the
per-draw estimate, in the ascent direction and with the scale of
:func:`~sat_core.losses.hard_attention_surrogate`, is

    g(b) = (1/N) sum_captions [ d log p(y|s,a)/dW + lambda_r (log p(y|s,a) - b) d log p(s|a)/dW
                                + lambda_e dH/dW ]                                     (Eq. 12)

It is linear in the baseline b: g(b) = g(0) - b u with u = (lambda_r/N) sum d log p(s|a)/dW. So
one set of draws gives the estimator for EVERY b: :func:`sample_estimates` computes g(0) and u
for ``n_samples`` independent draws (two backward passes each) and keeps, per parameter, the sums
of g(0), u, g(0)^2, u^2 and g(0) u; :class:`EstimatorSamples` turns them into the sample mean and
the sample variance of g(b),

    Var_j[g(b)] = Var_j[g(0)] - 2 b Cov_j[g(0), u] + b^2 Var_j[u]     (coordinate j, n - 1 divisor)

and into the b that minimises their sum. E[u] = sum_s p(s|a) d log p(s|a)/dW = d/dW sum_s p(s|a)
= 0, which is why any b that does not depend on the draw leaves the estimator unbiased and only
changes its variance.

``reward="to-go"`` measures the Shapes recipe's estimator instead (:func:`~sat_core.losses.
reward_to_go`): s_t is scored by the words from t on, less b per word, so it is linear in b too,
with u = (lambda_r/N) sum_t (words left from t) d log p(s_t|a)/dW, and b is a per-word baseline.

The decoder runs in eval mode (no dropout) and without the 0.5 mixing of Sec. 4.1, so the only
randomness measured is the draw of s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from sat_core.decoder import DecoderOutput
from sat_core.losses import hard_attention_surrogate, reward_to_go, token_log_likelihood


@dataclass
class EstimatorSamples:
    """Per-parameter running sums over ``n`` draws of g(0) and u (see the module docstring).

    ``groups`` maps a group name (e.g. ``"attention"``) to its slice of the flattened parameter
    vector; ``s_g``, ``s_u``, ``s_gg``, ``s_uu``, ``s_gu`` are float64 vectors of that length.
    ``rewards`` holds each draw's batch mean of log p(y|s,a): what the moving-average baseline
    of Sec. 4.1 averages.
    """

    n: int
    groups: dict[str, slice]
    s_g: Tensor
    s_u: Tensor
    s_gg: Tensor
    s_uu: Tensor
    s_gu: Tensor
    rewards: Tensor

    @property
    def mean_reward(self) -> float:
        """E[mean_batch log p(y|s,a)]: where a moving-average baseline settles for fixed W."""
        return float(self.rewards.mean())

    def _select(self, group: str | None) -> slice:
        if group is None:
            return slice(0, self.s_g.numel())
        if group not in self.groups:
            raise KeyError(f"unknown parameter group {group!r}; the groups are "
                           f"{', '.join(self.groups)}")
        return self.groups[group]

    def mean(self, b: float = 0.0, group: str | None = None) -> Tensor:
        """Sample mean of g(b) per parameter (flattened), float64."""
        sl = self._select(group)
        return (self.s_g[sl] - b * self.s_u[sl]) / self.n

    def coordinate_variance(self, b: float = 0.0, group: str | None = None) -> Tensor:
        """Sample variance (divisor n - 1) of every coordinate of g(b), float64."""
        sl = self._select(group)
        n = self.n
        var_g = (self.s_gg[sl] - self.s_g[sl] ** 2 / n) / (n - 1)
        var_u = (self.s_uu[sl] - self.s_u[sl] ** 2 / n) / (n - 1)
        cov = (self.s_gu[sl] - self.s_g[sl] * self.s_u[sl] / n) / (n - 1)
        return (var_g - 2 * b * cov + b * b * var_u).clamp(min=0.0)

    def variance(self, b: float = 0.0, group: str | None = None) -> float:
        """Total variance of g(b): the sum over coordinates (the trace of its covariance)."""
        return float(self.coordinate_variance(b, group).sum())

    def variance_curve(self, bs: Sequence[float], group: str | None = None) -> Tensor:
        """:meth:`variance` at every b of ``bs`` at once (float64, one per b), for plotting.

        Each coordinate's variance is a quadratic in b, Var[g] - 2 b Cov[g, u] + b^2 Var[u], never
        negative, so their sum is the quadratic with the summed coefficients (equal to
        :meth:`variance` up to rounding) and costs three sums instead of one pass per b.
        """
        sl = self._select(group)
        n = self.n
        var_g = float((self.s_gg[sl] - self.s_g[sl] ** 2 / n).sum()) / (n - 1)
        var_u = float((self.s_uu[sl] - self.s_u[sl] ** 2 / n).sum()) / (n - 1)
        cov = float((self.s_gu[sl] - self.s_g[sl] * self.s_u[sl] / n).sum()) / (n - 1)
        b = torch.as_tensor(bs, dtype=torch.float64)
        return (var_g - 2 * b * cov + b * b * var_u).clamp(min=0.0)

    def best_baseline(self, group: str | None = None) -> float:
        """The constant b minimising :meth:`variance`: sum_j Cov_j[g(0), u] / sum_j Var_j[u]."""
        sl = self._select(group)
        n = self.n
        cov = float((self.s_gu[sl] - self.s_g[sl] * self.s_u[sl] / n).sum())
        var_u = float((self.s_uu[sl] - self.s_u[sl] ** 2 / n).sum())
        if var_u <= 0.0:
            raise ValueError(
                f"the baseline does not act on group {group!r}: log p(s|a) does not depend on "
                "its parameters, so every b gives the same variance"
            )
        return cov / var_u


def parameter_groups(module: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters grouped by the module's direct children (``attention``, ``T_hz``...)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        if p.requires_grad:
            groups.setdefault(name.split(".")[0], []).append(p)
    return groups


def sample_estimates(
    decoder: nn.Module,
    a: Tensor,
    captions_in: Tensor,
    targets: Tensor,
    lengths: Tensor,
    *,
    n_samples: int,
    lambda_r: float = 1.0,
    lambda_e: float = 0.0,
    groups: Mapping[str, Sequence[nn.Parameter]] | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    reward: str = "caption",
) -> EstimatorSamples:
    """Draw s ~ p(s|a) ``n_samples`` times for one fixed batch; collect g(0) and u of Eq. (12).

    Args:
        decoder: an :class:`~sat_core.decoder.AttentionDecoder`; run with ``mode="hard-sample"``
            in eval mode (restored afterwards). Its parameters are not changed.
        a, captions_in, targets, lengths: one teacher-forced batch: annotation vectors (B, L, D),
            ``captions[:, :-1]``, ``captions[:, 1:]`` and the number of real decode steps (B,).
        n_samples: independent draws (>= 2, for a variance).
        lambda_r, lambda_e: the weights of Eq. (12) (:func:`hard_attention_surrogate`).
        groups: name -> parameters to measure (default :func:`parameter_groups` of ``decoder``).
        generator: makes the draws reproducible.
        reward: ``"caption"`` (Eq. 12: b per caption) or ``"to-go"`` (b per word).
    """
    if reward not in ("caption", "to-go"):
        raise ValueError(f"sample_estimates: reward must be 'caption' or 'to-go', got {reward!r}")
    if n_samples < 2:
        raise ValueError(
            f"sample_estimates: n_samples must be >= 2 for a variance, got {n_samples}"
        )
    groups = dict(groups) if groups is not None else parameter_groups(decoder)
    params = [p for ps in groups.values() for p in ps]
    if not params:
        raise ValueError("sample_estimates: no parameters to measure (all frozen?)")
    slices = _group_slices(groups)
    size = sum(p.numel() for p in params)
    sums = {k: torch.zeros(size, dtype=torch.float64) for k in ("g", "u", "gg", "uu", "gu")}
    rewards = torch.zeros(n_samples, dtype=torch.float64)
    n_tokens = lengths.sum().clamp(min=1)
    was_training = decoder.training
    decoder.eval()
    try:
        for k in tqdm(range(n_samples), desc="draws of s", unit="draw", disable=not progress,
                      leave=False):
            out = decoder(a, captions_in, lengths, mode="hard-sample", generator=generator)
            g, v, rewards[k] = _one_draw(out, targets, lengths, n_tokens, params, lambda_r,
                                         lambda_e, reward)
            sums["g"] += g
            sums["u"] += v
            sums["gg"] += g * g
            sums["uu"] += v * v
            sums["gu"] += g * v
    finally:
        decoder.train(was_training)
    return EstimatorSamples(n_samples, slices, sums["g"], sums["u"], sums["gg"], sums["uu"],
                            sums["gu"], rewards)


def _group_slices(groups: Mapping[str, Sequence[nn.Parameter]]) -> dict[str, slice]:
    """Each group's slice of the flattened parameter vector, in the order of ``groups``."""
    slices, start = {}, 0
    for name, ps in groups.items():
        size = sum(p.numel() for p in ps)
        slices[name] = slice(start, start + size)
        start += size
    return slices


def _one_draw(
    out: DecoderOutput,
    targets: Tensor,
    lengths: Tensor,
    n_tokens: Tensor,
    params: Sequence[nn.Parameter],
    lambda_r: float,
    lambda_e: float,
    reward: str,
) -> tuple[Tensor, Tensor, float]:
    """g(0) and u of Eq. (12) for one draw of s (``out``: a ``"hard-sample"`` forward pass).

    Returns g(0) (the ascent direction), u (flattened, float64) and the draw's reward: the batch
    mean of log p(y|s,a) (``"caption"``) or the mean log p of one word (``"to-go"``).
    """
    words = token_log_likelihood(out.logits, targets, lengths)
    log_p_y = words.sum(1)
    if reward == "caption":
        mean_reward = float(log_p_y.detach().double().mean())
        step, weight = None, torch.ones_like(out.log_p_s)
    else:  # the reward a per-word baseline averages: the mean log p of one word
        mean_reward = float(log_p_y.detach().double().sum() / n_tokens)
        step = reward_to_go(words.detach(), lengths)
        steps = torch.arange(words.shape[1], device=words.device)
        weight = (lengths.to(words.device).unsqueeze(1) - steps).clamp(min=0)
    loss0 = hard_attention_surrogate(log_p_y, out.log_p_s, out.entropy, n_tokens, 0.0,
                                     lambda_r=lambda_r, lambda_e=lambda_e, step_reward=step)
    score = lambda_r * (weight * out.log_p_s).sum() / n_tokens
    g0 = torch.autograd.grad(loss0, params, retain_graph=True, allow_unused=True)
    u = torch.autograd.grad(score, params, allow_unused=True)
    return -_flat(g0, params), _flat(u, params), mean_reward  # ascent: minus the loss gradient


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """One float64 vector of gradients; zeros for parameters the output does not depend on."""
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).double().cpu()
        for g, p in zip(grads, params, strict=True)
    ])


__all__ = ["EstimatorSamples", "parameter_groups", "sample_estimates"]
