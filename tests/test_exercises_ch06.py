"""Chapter 6 exercise checks: right answers pass, the usual mistakes fail with an explanation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sat_core.exercises import ExerciseFailed
from sat_core.exercises.ch06 import (
    check_lr_factor,
    check_masked_nll,
    check_train_step,
    lr_factors,
)
from sat_core.losses import caption_loss
from sat_core.model import teacher_forcing


def failure(check, fn) -> str:
    with pytest.raises(ExerciseFailed) as info:
        check(fn)
    return str(info.value)


# --------------------------------------------------------------------------- masked NLL


def nll_by_hand(logits, targets, lengths):
    """A correct answer written differently: a loop over captions and real steps."""
    total, count = logits.new_zeros(()), 0
    for b in range(logits.shape[0]):
        for t in range(int(lengths[b])):
            total = total - torch.log_softmax(logits[b, t], -1)[targets[b, t]]
            count += 1
    return total / count


def nll_ignore_index(logits, targets, lengths):
    """Also correct here: padded targets are <pad> = 0, and no real word has id 0."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=0)


def test_masked_nll_reference_matches_a_hand_computed_value():
    # one caption, two real steps out of three, K = 2: -(log 1/2 + log sigmoid(2)) / 2
    logits = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [50.0, -50.0]]])
    from sat_core.losses import masked_nll

    got = masked_nll(logits, torch.tensor([[0, 1, 1]]), torch.tensor([2]))
    want = -(math.log(0.5) + math.log(1 / (1 + math.exp(-2.0)))) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("answer", [nll_by_hand, nll_ignore_index])
def test_masked_nll_correct_answers_pass(answer, capsys):
    check_masked_nll(answer)
    assert "✓" in capsys.readouterr().out


def test_masked_nll_unmasked_mean_is_explained():
    msg = failure(check_masked_nll,
                  lambda lo, ta, le: F.cross_entropy(lo.flatten(0, 1), ta.flatten()))
    assert "padding included" in msg


def test_masked_nll_divided_by_captions_is_explained():
    def per_caption(logits, targets, lengths):
        return nll_by_hand(logits, targets, lengths) * int(lengths.sum()) / len(lengths)

    assert "number of captions" in failure(check_masked_nll, per_caption)


def test_masked_nll_mean_of_caption_means_is_explained():
    def mean_of_means(logits, targets, lengths):
        per = [nll_by_hand(logits[b:b + 1], targets[b:b + 1], lengths[b:b + 1])
               for b in range(len(lengths))]
        return torch.stack(per).mean()

    assert "long caption then weighs as much" in failure(check_masked_nll, mean_of_means)


def test_masked_nll_detached_result_is_explained():
    msg = failure(check_masked_nll, lambda *args: nll_by_hand(*args).detach())
    assert "cut off from autograd" in msg


# --------------------------------------------------------------------------- lr schedule


def lr_by_hand(step, warmup, total):
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_lr_reference_matches_hand_computed_values():
    f = lr_factors(5, 20)
    assert f[0] == pytest.approx(0.2) and f[4] == pytest.approx(1.0)
    assert f[5] == pytest.approx(1.0)  # the cosine starts at its top
    assert f[5 + 15 // 2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 15)))
    g = lr_factors(0, 4)
    assert g.tolist() == pytest.approx([1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5,
                                        0.5 * (1 + math.cos(3 * math.pi / 4))])


def test_lr_correct_answer_passes(capsys):
    check_lr_factor(lr_by_hand)
    assert "✓" in capsys.readouterr().out


def test_lr_warmup_from_zero_is_explained():
    def from_zero(step, warmup, total):
        return step / warmup if step < warmup else lr_by_hand(step, warmup, total)

    assert "learning rate of 0" in failure(check_lr_factor, from_zero)


def test_lr_cosine_without_offset_is_explained():
    def no_offset(step, warmup, total):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * step / total))

    assert "starts where the warm-up ends" in failure(check_lr_factor, no_offset)


def test_lr_plain_cosine_is_explained():
    def plain(step, warmup, total):
        if step < warmup:
            return (step + 1) / warmup
        return math.cos(math.pi * (step - warmup) / (total - warmup))

    assert "0.5 (1 + cos(pi p))" in failure(check_lr_factor, plain)


# --------------------------------------------------------------------------- training step


def good_step(model, optimizer, batch, lam, grad_clip):
    model.train()
    out = model(batch.images, batch.captions, batch.lengths)
    _, targets, steps = teacher_forcing(batch.captions, batch.lengths)
    loss = caption_loss(out, targets, steps, alpha_c=lam)["loss"]
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()


def test_train_step_correct_answer_passes(capsys):
    check_train_step(good_step)
    assert "✓" in capsys.readouterr().out


def test_train_step_that_raises_names_the_error():
    def broken(model, optimizer, batch, lam, grad_clip):
        return model(batch.images, batch.captions)  # lengths forgotten

    assert "raised TypeError" in failure(check_train_step, broken)


# --------------------------------------------------------------------------- wrong answers


def nll_with(real=lambda t, n: t < n, denominator="tokens", sign=1.0):
    """The masked NLL with one slip: which steps are real, what it divides by, the sign."""
    def answer(logits, targets, lengths):
        B, T, K = logits.shape
        nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
        mask = real(torch.arange(T)[None, :], lengths[:, None])
        total = (nll.view(B, T) * mask).sum()
        div = {"tokens": mask.sum(), "captions": B, "all": B * T, "none": 1}[denominator]
        return sign * total / div
    return answer


def lr_with(warmup_start=1, progress="offset", half=True, end_offset=0):
    """The schedule with one slip: warm-up from 0, no offset, plain cosine, end one early."""
    def answer(step, warmup, total):
        if step < warmup:
            return (step + warmup_start) / warmup
        if progress == "offset":
            p = (step - warmup) / max(1, total - end_offset - warmup)
        else:
            p = step / total
        c = math.cos(math.pi * min(1.0, p))
        return 0.5 * (1 + c) if half else c
    return answer


def step_with(zero_grad=True, clip="before", penalty=True, shift=True):
    """One training step with one slip (the hints name each)."""
    def answer(model, optimizer, batch, lam, grad_clip):
        model.train()
        out = model(batch.images, batch.captions, batch.lengths)
        _, targets, steps = teacher_forcing(batch.captions, batch.lengths)
        if not shift:
            targets = batch.captions[:, :-1]
        loss = caption_loss(out, targets, steps, alpha_c=lam if penalty else 0.0)["loss"]
        if zero_grad:
            optimizer.zero_grad()
        loss.backward()
        if clip == "before":
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        if clip == "after":
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        return loss.item()
    return answer


WRONG_ANSWERS = [
    pytest.param(check_masked_nll, nll_with(real=lambda t, n: t + 0 * n >= 0), "padding included",
                 id="nll: no mask"),
    pytest.param(check_masked_nll, nll_with(real=lambda t, n: t <= n),
                 "off by one: step t is real when t < lengths[b]", id="nll: t <= lengths"),
    pytest.param(check_masked_nll, nll_with(real=lambda t, n: t < n - 1),
                 "you dropped the last real step", id="nll: t < lengths - 1"),
    pytest.param(check_masked_nll, nll_with(denominator="captions"), "number of captions B",
                 id="nll: / B"),
    pytest.param(check_masked_nll, nll_with(denominator="all"), "not by B * T",
                 id="nll: / (B * T)"),
    pytest.param(check_masked_nll, nll_with(denominator="none"), "a mean, not a sum",
                 id="nll: sum"),
    pytest.param(check_masked_nll, nll_with(sign=-1.0), "the NEGATIVE log-likelihood",
                 id="nll: log-likelihood"),
    pytest.param(check_lr_factor, lr_with(warmup_start=0), "learning rate of 0",
                 id="lr: warm-up from 0"),
    pytest.param(check_lr_factor, lr_with(progress="no offset"),
                 "starts where the warm-up ends", id="lr: step / total"),
    pytest.param(check_lr_factor, lr_with(half=False), "0.5 (1 + cos(pi p))",
                 id="lr: cos alone"),
    pytest.param(check_lr_factor, lr_with(end_offset=1), "one past the last step",
                 id="lr: 0 at total - 1"),
    pytest.param(check_train_step, step_with(zero_grad=False), "optimizer.zero_grad()",
                 id="step: no zero_grad"),
    pytest.param(check_train_step, step_with(clip="none"), "clip the gradient norm",
                 id="step: no clipping"),
    pytest.param(check_train_step, step_with(clip="after"), "clipping after optimizer.step()",
                 id="step: clip after step"),
    pytest.param(check_train_step, step_with(penalty=False), "the NLL alone",
                 id="step: no penalty"),
    pytest.param(check_train_step, step_with(shift=False), "predict the NEXT words",
                 id="step: targets not shifted"),
]


@pytest.mark.parametrize("check, answer, hint", WRONG_ANSWERS)
def test_wrong_answer_is_rejected_with_its_hint(check, answer, hint):
    assert hint in failure(check, answer)
