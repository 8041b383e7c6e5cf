"""Chapter 6 exercises: the masked word loss, the learning-rate schedule, one training step.

* :data:`check_masked_nll` -- ``my_masked_nll(logits, targets, lengths) -> scalar``: the mean of
  -log p(y_t | a, y_<t) over the REAL tokens t < lengths[b] of the batch, against
  :func:`sat_core.losses.masked_nll`. The cases put large logits at the padded steps, so an
  answer must use ``lengths``;
* :func:`check_lr_factor` -- ``my_lr_factor(step, warmup, total) -> float``: the multiplier of the
  learning rate at optimizer step ``step`` (0-based) for a linear warm-up of ``warmup`` steps
  followed by a cosine decay to 0 at step ``total``, against :func:`sat_core.train.lr_factor`;
* :func:`check_train_step` -- ``my_train_step(model, optimizer, batch, lam, grad_clip) -> float``:
  one optimizer step of teacher forcing (word NLL + doubly stochastic penalty with weight ``lam``,
  gradient-norm clipping), returning the loss before the step; compared over three consecutive
  steps with :func:`train_step`, built from :func:`sat_core.model.teacher_forcing`,
  :func:`sat_core.losses.caption_loss` and ``clip_grad_norm_`` as in ``sat_core.train``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sat_core.config import make_config
from sat_core.data.batching import CaptionBatch, pad_captions
from sat_core.exercises._base import (
    Case,
    ExerciseCheck,
    ExerciseFailed,
    compare,
    crashed,
    not_attempted,
)
from sat_core.losses import caption_loss, masked_nll
from sat_core.model import Captioner, build_model, teacher_forcing
from sat_core.train import lr_factor


def _close(x: Any, y: Tensor, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    if isinstance(x, (int, float)):
        x = torch.tensor(float(x))
    return (isinstance(x, Tensor) and x.numel() == y.numel()
            and bool(torch.allclose(x.detach().double().reshape(y.shape), y.detach().double(),
                                    rtol=rtol, atol=atol)))


# --------------------------------------------------------------------------- the masked NLL


def _nll_case(g: torch.Generator, B: int, T: int, K: int, lengths: list[int], grad: bool = False,
              name: str = "") -> Case:
    """Logits (B, T, K) with large random values at the padded steps, targets, lengths."""
    lengths_t = torch.tensor(lengths)
    logits = 2.0 * torch.randn(B, T, K, generator=g)
    real = torch.arange(T) < lengths_t.unsqueeze(1)
    targets = torch.randint(4, K, (B, T), generator=g).masked_fill(~real, 0)  # <pad> = 0
    logits = logits + 6.0 * (~real).unsqueeze(-1) * torch.randn(B, T, K, generator=g)
    if grad:
        logits.requires_grad_()
    return Case((logits, targets, lengths_t),
                name=(name + ": " if name else "") + f"B={B}, T={T}, K={K}, lengths "
                f"{tuple(lengths)}" + (", requires grad" if grad else ""))


def _nll_cases() -> list[Case]:
    g = torch.Generator().manual_seed(6)
    cases = [_nll_case(g, 3, 5, 9, [5, 2, 4]), _nll_case(g, 2, 6, 7, [1, 6], grad=True),
             _nll_case(g, 4, 3, 11, [3, 3, 1, 2]),
             _nll_case(g, 3, 4, 6, [1, 1, 1], name="every length 1"),
             _nll_case(g, 2, 1, 8, [1, 1], name="T=1"),
             _nll_case(g, 1, 5, 5, [5], name="B=1, the full length")]
    for k in range(4):
        B, T = (int(x) for x in torch.randint(1, 7, (2,), generator=g))
        K = int(torch.randint(5, 12, (), generator=g))
        lengths = torch.randint(1, T + 1, (B,), generator=g).tolist()
        cases.append(_nll_case(g, B, T, K, lengths, name=f"random {k + 1}"))
    return cases


def _nll_variants(logits: Tensor, targets: Tensor, lengths: Tensor) -> dict[str, Tensor]:
    """What the usual slips compute, to recognise them."""
    B, T, K = logits.shape
    nll = F.cross_entropy(logits.reshape(B * T, K), targets.reshape(-1), reduction="none")
    nll = nll.view(B, T)
    real = torch.arange(T) < lengths.unsqueeze(1)
    one_more = torch.arange(T) <= lengths.unsqueeze(1)
    one_less = torch.arange(T) < lengths.unsqueeze(1) - 1
    total = (nll * real).sum()
    return {
        "unmasked": nll.mean(),
        "per_caption": total / B,
        "all_positions": total / (B * T),
        "mean_of_means": ((nll * real).sum(1) / lengths).mean(),
        "one_more": (nll * one_more).sum() / one_more.sum(),
        "one_less": (nll * one_less).sum() / one_less.sum().clamp(min=1),
        "sum": total,
    }


_NLL_HINTS = {
    "unmasked": "you averaged over every position, padding included: keep only the steps "
                "t < lengths[b] (a mask from lengths), then divide by their number",
    "per_caption": "you divided by the number of captions B: masked_nll is a mean over the real "
                   "TOKENS, sum(lengths)",
    "all_positions": "the masked sum is right, but divide by the number of real tokens "
                     "sum(lengths), not by B * T",
    "mean_of_means": "you averaged each caption's mean: a long caption then weighs as much as a "
                     "short one. Divide the batch's total by sum(lengths) instead",
    "one_more": "off by one: step t is real when t < lengths[b] (lengths counts decode steps)",
    "one_less": "off by one: step t is real when t < lengths[b]; you dropped the last real step "
                "(the <end> prediction, which teaches the model to stop)",
    "sum": "divide the sum by the number of real tokens sum(lengths): a mean, not a sum",
}


def _nll_hints(got: Any, expected: Tensor, case: Case) -> str | None:
    if not isinstance(got, (Tensor, int, float)):
        return None
    logits, targets, lengths = (x.detach() if isinstance(x, Tensor) else x for x in case.args)
    for name, value in _nll_variants(logits, targets, lengths).items():
        if _close(got, value) and not _close(value, expected):
            return _NLL_HINTS[name]
    if _close(got, -expected):
        return "the NEGATIVE log-likelihood: a loss to minimise is -log p"
    return None


check_masked_nll = ExerciseCheck(
    "the masked word loss -log p(y_t | a, y_<t), mean over real tokens",
    reference=masked_nll,
    cases=_nll_cases,
    rtol=1e-5,
    atol=1e-6,
    hints=(_nll_hints,),
)

# --------------------------------------------------------------------------- the lr schedule

LR_CASES: tuple[tuple[int, int], ...] = ((0, 20), (5, 20), (1, 7), (10, 40), (0, 1), (1, 2),
                                         (19, 20), (3, 3))
"""(warmup, total) pairs the schedule check runs every step of: usual ones, then boundaries (a
one-step run, warmup = total - 1, warmup = total); :func:`_lr_cases` adds seeded random pairs."""


def _lr_cases() -> list[Case]:
    g = torch.Generator().manual_seed(16)
    pairs = list(LR_CASES)
    for _ in range(4):
        total = int(torch.randint(1, 60, (), generator=g))
        pairs.append((int(torch.randint(0, total + 1, (), generator=g)), total))
    return [Case((w, t), name=f"warmup={w}, total={t}; index = step") for w, t in pairs]


def lr_factors(warmup: int, total: int) -> Tensor:
    """Reference: sat_core.train.lr_factor (cosine, ``warmup`` steps) for steps 0..total-1."""
    cfg = make_config(None, lr_schedule="cosine", warmup_steps=warmup, epochs=1)
    factor = lr_factor(cfg, steps_per_epoch=total)
    return torch.tensor([factor(s) for s in range(total)], dtype=torch.float64)


def _lr_variants(warmup: int, total: int) -> dict[str, list[float]]:
    def cos(p: float) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    rows: dict[str, list[float]] = {k: [] for k in
                                    ("from_zero", "no_offset", "plain_cos", "total_minus_one")}
    for s in range(total):
        in_warmup = warmup and s < warmup
        rows["from_zero"].append(s / warmup if in_warmup else cos((s - warmup) / (total - warmup)))
        rows["no_offset"].append((s + 1) / warmup if in_warmup else cos(s / total))
        rows["plain_cos"].append((s + 1) / warmup if in_warmup else
                                 math.cos(math.pi * (s - warmup) / (total - warmup)))
        rows["total_minus_one"].append(
            (s + 1) / warmup if in_warmup else cos((s - warmup) / max(1, total - 1 - warmup)))
    return rows


_LR_HINTS = {
    "from_zero": "during warm-up use (step + 1) / warmup: with step / warmup the very first "
                 "step has a learning rate of 0 and does nothing",
    "no_offset": "the cosine starts where the warm-up ends: its progress is "
                 "(step - warmup) / (total - warmup), not step / total",
    "plain_cos": "the cosine schedule is 0.5 (1 + cos(pi p)), which goes from 1 to 0; cos(pi p) "
                 "alone goes from 1 to -1",
    "total_minus_one": "the decay reaches 0 at step `total` (one past the last step): progress "
                       "(step - warmup) / (total - warmup)",
}


def _lr_hints(got: Any, expected: Tensor, case: Case) -> str | None:
    warmup, total = case.args
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        return None
    for name, values in _lr_variants(warmup, total).items():
        v = torch.tensor(values, dtype=torch.float64)
        if _close(got, v, rtol=1e-6, atol=1e-9) and not _close(v, expected, 1e-6, 1e-9):
            return _LR_HINTS[name]
    return None


_lr_check = ExerciseCheck(
    "linear warm-up then cosine decay of the learning rate",
    reference=lr_factors,
    cases=_lr_cases,
    rtol=1e-6,
    atol=1e-9,
    hints=(_lr_hints,),
)


def check_lr_factor(fn: Callable[[int, int, int], float]) -> None:
    """Check ``fn(step, warmup, total) -> float`` at every step of a few schedules."""
    if not callable(fn):
        raise ExerciseFailed("pass your function itself: check_lr_factor(my_lr_factor)")

    def all_steps(warmup: int, total: int) -> Tensor:
        return torch.tensor([float(fn(s, warmup, total)) for s in range(total)],
                            dtype=torch.float64)

    _lr_check(all_steps)


# --------------------------------------------------------------------------- one training step


def train_step(model: Captioner, optimizer: torch.optim.Optimizer, batch: CaptionBatch,
               lam: float, grad_clip: float) -> float:
    """Reference: one step as ``sat_core.train`` takes it (without amp, DDP, schedule, logging)."""
    return _step(model, optimizer, batch, lam, grad_clip)


def _step(model: Captioner, optimizer: torch.optim.Optimizer, batch: CaptionBatch, lam: float,
          grad_clip: float, *, zero_grad: bool = True, clip: str = "before",
          penalty: bool = True, shift: bool = True) -> float:
    """One step, and the usual slips of it (for the hints)."""
    model.train()
    out = model(batch.images, batch.captions, batch.lengths)  # teacher forcing inside
    _, targets, steps = teacher_forcing(batch.captions, batch.lengths)
    if not shift:  # predicting the input words (captions[:, :-1]) instead of the next ones
        targets = batch.captions[:, :-1]
    parts = caption_loss(out, targets, steps, alpha_c=lam)
    loss = parts["loss"] if penalty else masked_nll(out.logits, targets, steps)
    if zero_grad:
        optimizer.zero_grad()
    loss.backward()
    if clip == "before":
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if clip == "after":
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    return float(loss.detach())


_STEP_VARIANTS: dict[str, dict[str, Any]] = {
    "zero_grad": dict(zero_grad=False),
    "no_clip": dict(clip="none"),
    "clip_after": dict(clip="after"),
    "no_penalty": dict(penalty=False),
    "no_shift": dict(shift=False),
}
_STEP_HINTS = {
    "zero_grad": "gradients accumulate in .grad across backward() calls: call "
                 "optimizer.zero_grad() before loss.backward() at every step",
    "no_clip": "clip the gradient norm: torch.nn.utils.clip_grad_norm_(model.parameters(), "
               "grad_clip) between backward() and optimizer.step()",
    "clip_after": "clipping after optimizer.step() is too late: the step already used the "
                  "unclipped gradients. Clip between backward() and step()",
    "no_penalty": "the loss is caption_loss(...)['loss'] (NLL + lam * doubly stochastic "
                  "penalty); you minimised the NLL alone",
    "no_shift": "teacher forcing: the decoder reads captions[:, :-1] and must predict the NEXT "
                "words captions[:, 1:] (sat_core.model.teacher_forcing gives the targets)",
}


def _tiny_captioner(seed: int, K: int = 12, D: int = 6) -> Captioner:
    torch.manual_seed(seed)
    return build_model(None, K, decoder_kwargs=dict(feature_dim=D, embed_dim=5, hidden_dim=7,
                                                    attn_dim=4, dropout=0.0))


def _step_batches(seed: int, K: int = 12, D: int = 6, L: int = 4) -> list[CaptionBatch]:
    """Three batches of cached annotation vectors (B, L, D) and captions of equal length."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for B, n_words in ((4, 5), (3, 2), (4, 7)):
        caps = [torch.cat([torch.tensor([1]), torch.randint(4, K, (n_words,), generator=g),
                           torch.tensor([2])]) for _ in range(B)]
        captions, lengths = pad_captions(caps)
        a = torch.randn(B, L, D, generator=g)
        out.append(CaptionBatch(a, captions, lengths, torch.arange(B)))
    return out


STEP_CASES: tuple[tuple[int, float, float], ...] = ((0, 1.0, 0.05), (1, 0.3, 0.5),
                                                    (2, 0.0, 100.0))
"""(seed, lam, grad_clip) of the training-step cases: the first two clips are small enough to
act; the last is a boundary (no penalty, a clip that does not act)."""


def _run(step_fn: Callable[..., float], seed: int, lam: float, grad_clip: float,
         n_steps: int = 3, **variant: Any) -> tuple[list[float], list[dict[str, Tensor]]]:
    model = _tiny_captioner(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses, params = [], []
    for batch in _step_batches(seed)[:n_steps]:
        losses.append(step_fn(model, opt, batch, lam, grad_clip, **variant))
        params.append({k: v.detach().clone() for k, v in model.named_parameters()})
    return losses, params


def _same(params_a: dict[str, Tensor], params_b: dict[str, Tensor]) -> bool:
    return all(torch.allclose(params_a[k], params_b[k], rtol=1e-4, atol=1e-6) for k in params_a)


def check_train_step(fn: Callable[..., Any]) -> None:
    """Run ``fn(model, optimizer, batch, lam, grad_clip)`` for 3 steps; compare with train_step.

    Compares the returned losses and every parameter after each step, and recognises the usual
    slips (no zero_grad, no clipping or clipping after the step, no penalty, no shift).
    """
    if not callable(fn):
        raise ExerciseFailed("pass your function itself: check_train_step(my_train_step)")
    name = "one training step (teacher forcing, Eq. 14 loss, clipping)"
    for i, (seed, lam, clip) in enumerate(STEP_CASES):
        label = f"{name}, test {i + 1} of {len(STEP_CASES)} (lam={lam}, grad_clip={clip})"
        want_losses, want_params = _run(_step, seed, lam, clip)
        try:
            got_losses, got_params = _run(fn, seed, lam, clip)
        except NotImplementedError:
            raise not_attempted(name) from None
        except Exception as err:
            raise crashed(label, err) from err
        for k, (got_l, want_l, got_p, want_p) in enumerate(
                zip(got_losses, want_losses, got_params, want_params, strict=True)):
            try:
                if isinstance(got_l, Tensor):
                    got_l = float(got_l.detach())
                compare(got_l, want_l, name=f"the loss returned at step {k + 1}", rtol=1e-4,
                        atol=1e-6)
                for pname in want_p:
                    compare(got_p[pname], want_p[pname], rtol=1e-4, atol=1e-6,
                            name=f"parameter {pname} after step {k + 1}")
            except ExerciseFailed as err:
                hints = []
                for variant, kwargs in _STEP_VARIANTS.items():
                    v_losses, v_params = _run(_step, seed, lam, clip, n_steps=k + 1, **kwargs)
                    if (math.isclose(v_losses[k], float(got_l), rel_tol=1e-4, abs_tol=1e-6)
                            and _same(v_params[k], got_p)):
                        hints.append(_STEP_HINTS[variant])
                msg = "\n".join([f"{label}:", f"  {err}"] + [f"  hint: {h}" for h in hints])
                raise ExerciseFailed(msg) from None
    print(f"✓ {name}: correct on all {len(STEP_CASES)} test runs of 3 steps")


__all__ = ["LR_CASES", "STEP_CASES", "check_lr_factor", "check_masked_nll", "check_train_step",
           "lr_factors", "train_step"]
