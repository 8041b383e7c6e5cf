"""Chapter 8 exercises: BLEU's brevity penalty, and one step of beam search.

* :data:`check_brevity_penalty` -- ``my_bp(c, r) -> float``: BLEU's brevity penalty for a corpus
  hypothesis length ``c`` and effective reference length ``r`` (Papineni et al., 2002): 1 when
  c > r, exp(1 - r / c) otherwise, 0 for an empty hypothesis; compared with
  :func:`sat_core.metrics.brevity_penalty`.
* :data:`check_beam_step` -- ``my_beam_step(scores, log_probs, k) -> (new_scores, parents,
  words)``: given the running log-probabilities ``scores`` (n,) of the n live beams and the
  next-word log-probabilities ``log_probs`` (n, K) of each, keep the ``k`` best continuations
  over all n * K candidates (``scores[j] + log_probs[j, w]``), best first, with the beam each
  came from (back-pointer) and its word: what :func:`sat_core.decoding.beam_search_single` does
  with one ``topk`` and ``divmod(index, K)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sat_core.exercises._base import Case, ExerciseCheck
from sat_core.metrics import brevity_penalty

# --------------------------------------------------------------------------- brevity penalty


def _bp_cases() -> list[Case]:
    g = torch.Generator().manual_seed(80)
    fixed = [
        Case((9, 12), name="c=9 < r=12: penalised"),
        Case((15, 12), name="c=15 > r=12: no penalty"),
        Case((12, 12), name="c = r"),
        Case((4, 11), name="c=4, r=11: a strong penalty"),
        Case((0, 7), name="c=0: an empty hypothesis"),
        Case((11, 12), name="c = r - 1: still penalised"),
        Case((13, 12), name="c = r + 1"),
        Case((1, 1), name="c = r = 1"),
        Case((1, 5), name="c = 1"),
        Case((0, 1), name="c = 0, r = 1"),
    ]
    for k in range(6):
        r = int(torch.randint(1, 40, (), generator=g))
        c = int(torch.randint(0, r + 6, (), generator=g))
        fixed.append(Case((c, r), name=f"random {k + 1}: c={c}, r={r}"))
    return fixed


def _bp_hints(got: Any, expected: float, case: Case) -> str | None:
    c, r = case.args
    if isinstance(got, Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)) or c == 0:
        if c == 0:
            return ("an empty hypothesis (c = 0) has BP = 0, the limit of exp(1 - r/c) as c -> 0: "
                    "handle it before dividing by c")
        return None
    if c > 0 and r > 0 and math.isclose(got, math.exp(1 - c / r), rel_tol=1e-6) and c != r:
        return "the ratio is upside down: BP = exp(1 - r / c) (reference over hypothesis)"
    if c < r and math.isclose(got, math.exp(1 - r // c), rel_tol=1e-6) and r % c and r // c > 1:
        return "r // c is integer division: use r / c (a float ratio) in exp(1 - r / c)"
    if c > r and got > 1.0:
        return ("a hypothesis LONGER than the references is not penalised, and never rewarded: "
                "BP = 1 when c > r (clip it)")
    if c < r and math.isclose(got, 1.0):
        return ("a hypothesis shorter than the references must be penalised: exp(1 - r / c) < 1"
                + (", even when c = r - 1: BP = 1 only when c >= r" if c == r - 1 else "")
                + (" (if you wrote r // c: that is integer division, 1 here; the ratio is r / c)"
                   if r // c == 1 and r % c else ""))
    return None


check_brevity_penalty = ExerciseCheck(
    "BLEU's brevity penalty (Papineni et al., 2002)",
    reference=brevity_penalty,
    cases=_bp_cases,
    rtol=1e-6,
    atol=1e-9,
    hints=(_bp_hints,),
)

# --------------------------------------------------------------------------- one beam step


def beam_step(scores: Tensor, log_probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Reference: the k best of the n * K candidates scores[j] + log_probs[j, w], best first."""
    n, K = log_probs.shape
    candidates = (scores[:, None] + log_probs).reshape(-1)  # index = j * K + w
    new_scores, index = candidates.topk(min(k, candidates.numel()))
    return new_scores, torch.div(index, K, rounding_mode="floor"), index % K


def _beam_cases() -> list[Case]:
    g = torch.Generator().manual_seed(8)

    def case(n: int, K: int, k: int, name: str) -> Case:
        log_probs = torch.log_softmax(2 * torch.randn(n, K, generator=g), dim=-1)
        scores = -3 * torch.rand(n, generator=g).sort(descending=True).values
        return Case((scores, log_probs, k), name=name)

    fixed = [
        case(1, 6, 3, "the first step: one beam, K=6, k=3"),
        case(3, 7, 3, "n=3 beams, K=7, k=3"),
        case(4, 5, 4, "n=4 beams, K=5, k=4"),
        case(2, 9, 2, "n=2 beams, K=9, k=2"),
        case(3, 4, 1, "k=1: greedy"),
        case(2, 3, 6, "k = n * K: every candidate"),
        case(1, 2, 2, "one beam, K=2, k=2"),
    ]
    for i in range(4):
        n, K = int(torch.randint(1, 5, (), generator=g)), int(torch.randint(2, 10, (), generator=g))
        k = int(torch.randint(1, min(n * K, 5) + 1, (), generator=g))
        fixed.append(case(n, K, k, f"random {i + 1}: n={n}, K={K}, k={k}"))
    return fixed


def _beam_hints(got: Any, expected: Any, case: Case) -> str | None:
    scores, log_probs, k = case.args
    n, K = log_probs.shape
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        return None
    s, p, w = (x if isinstance(x, Tensor) else torch.as_tensor(x) for x in got)
    e_s, e_p, e_w = expected
    if s.shape == e_s.shape and torch.allclose(s.double(), e_s.double(), atol=1e-6):
        index = e_p * K + e_w
        by_n = p.shape == e_p.shape and w.shape == e_w.shape and n != K and torch.equal(
            p.long(), index // n) and torch.equal(w.long(), index % n)
        swapped = p.shape == e_p.shape and w.shape == e_w.shape and torch.equal(
            p.long(), e_w) and torch.equal(w.long(), e_p)
        hints = []
        if swapped:  # with one beam, the same as dividing by n = 1: both hints
            hints.append("parents and words are swapped: index = parent * K + word")
        if by_n:
            hints.append("divide the flat index by K (the vocabulary size, log_probs.shape[1]), "
                         "not by the number of beams: parent = index // K, word = index % K")
        if hints:
            return "; or ".join(hints)
        if p.shape == e_p.shape and not torch.equal(p.long(), e_p):
            return ("recover the back-pointer from the flat index as index // K (K = vocabulary "
                    "size, log_probs.shape[1]) and the word as index % K")
        return None
    flat = log_probs.reshape(-1).topk(min(k, n * K))
    if s.shape == flat.values.shape and torch.allclose(s.double(), flat.values.double(),
                                                       atol=1e-6):
        return ("add each beam's running score before ranking: a candidate's score is "
                "scores[parent] + log_probs[parent, word], the log-probability of the whole prefix")
    per_beam = (scores[:, None] + log_probs).max(dim=1).values.sort(descending=True).values[:k]
    if s.shape == per_beam.shape and torch.allclose(s.double(), per_beam.double(), atol=1e-6):
        return ("rank all n * K candidates together (one topk over the flattened candidates): "
                "the best beam may have several children and another beam none")
    if s.shape == e_s.shape and torch.allclose(s.sort().values.double(),
                                               e_s.sort().values.double(), atol=1e-6):
        return "return the k continuations best first (topk sorts them in descending order)"
    return None


check_beam_step = ExerciseCheck(
    "one step of beam search (top-k continuations and back-pointers)",
    reference=beam_step,
    cases=_beam_cases,
    output_names=("new_scores", "parents", "words"),
    rtol=1e-6,
    atol=1e-6,
    hints=(_beam_hints,),
)
