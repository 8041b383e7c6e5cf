"""Decoding: turn annotation vectors ``a`` into a caption (chapter 8).

The decoder defines, for every step t, the word distribution of Eq. (7), Sec. 3.1.2,

    p(y_t | a, y_1 .. y_{t-1})  ∝  exp(L_o (E y_{t-1} + L_h h_t + L_z z_hat_t)),

so a caption y = (y_1 .. y_T) has log-probability  log p(y | a) = sum_t log p(y_t | a, y_<t).
Finding the most probable caption exactly is intractable (K^T sequences); the paper decodes with
beam search (Sec. 5.2 and the arctic-captions code). Three decoders live here:

* :func:`greedy_decode`: take the arg max word at every step (batched over images).
* :func:`beam_search_single`: the textbook beam search, one image at a time, plain Python lists.
  Short and readable: the reference the book explains and the benchmark's baseline.
* :func:`beam_search`: the same search, BATCHED: ``B`` images x ``k`` beams live in one
  ``(B*k, ...)`` tensor; one ``decoder.step`` per time step, one ``topk`` over the ``k*K``
  candidates of each image, decoder states gathered by back-pointers, and the words and attention
  maps of every step recovered at the end by following the back-pointers.

The search (identical in both beam searches, and the same as arctic-captions' ``gen_sample``):

1. Each image starts with one empty hypothesis (log-probability 0), fed ``<start>``.
2. At step t every live hypothesis is extended by every word w:  score + log p(w | ...).
   The best ``k - (number already finished)`` candidates of the image are kept.
3. A kept candidate whose word is ``<end>`` is *finished*: it is set aside and takes one of the k
   places for good (the beam shrinks); the others stay live.
4. Stop when no live hypothesis is left, or after ``max_len`` steps: then the live hypotheses join
   the finished ones as *unfinished* candidates (cut at ``max_len`` words). So nothing crashes when
   ``<end>`` is never reached: the best unfinished hypothesis is returned.
5. Rank the candidates by  log p(y | a) / T^length_norm  (T = number of steps, ``<end>`` included)
   and return the best (or the ``n_best`` best).

With ``beam_size=1`` this is exactly greedy decoding. ``<start>`` (and any ``suppress_ids``) is
never emitted: its log-probability is set to -inf after the softmax (the others are not
renormalised, so scores stay the model's log-probabilities).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

DECODE_MODES = ("soft", "hard-argmax", "hard-expect")


@dataclass
class Hypothesis:
    """One decoded caption.

    Attributes:
        tokens: word ids y_1 .. y_n, WITHOUT ``<start>`` and WITHOUT ``<end>``.
        score: the ranking score, ``log_prob / num_steps ** length_norm`` (equal to ``log_prob``
            when ``length_norm == 0``, the default).
        log_prob: the sum of log-probabilities of every emitted word, ``<end>`` included when the
            hypothesis finished: sum_t log p(y_t | a, y_<t).
        alphas: ``(num_steps, L)`` attention weights alpha_t used to predict each emitted word
            (Eq. (4)-(5)); the last row belongs to ``<end>`` when ``finished``.
        betas: ``(num_steps,)`` gate beta_t of every step (Sec. 4.2.1).
        finished: True when the hypothesis ended with ``<end>``; False when it was cut at
            ``max_len`` words.
    """

    tokens: list[int]
    score: float
    log_prob: float
    alphas: Tensor
    betas: Tensor
    finished: bool = True

    @property
    def num_steps(self) -> int:
        """Number of decode steps: the words plus ``<end>`` when finished (the rows of alphas)."""
        return len(self.tokens) + int(self.finished)


# ----------------------------------------------------------------------------------------------
# small helpers


def normalized_score(log_prob: float, num_steps: int, length_norm: float) -> float:
    """The ranking score ``log_prob / num_steps ** length_norm`` (no normalisation when 0)."""
    if length_norm == 0.0:
        return float(log_prob)
    return float(log_prob) / max(num_steps, 1) ** length_norm


def _map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to every tensor inside ``obj`` (tensor, (named) tuple, list, dict, dataclass).

    The decoder's ``precompute`` returns an ``Annotations`` record and ``step`` a state tuple; this
    lets the search repeat or gather their rows without knowing their exact type.
    """
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        return type(obj)(*(_map_tensors(x, fn) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(x, fn) for x in obj)
    if isinstance(obj, dict):
        return {key: _map_tensors(x, fn) for key, x in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: _map_tensors(getattr(obj, f.name), fn)
            for f in dataclasses.fields(obj)
            if f.init
        }
        return dataclasses.replace(obj, **changes)
    return obj


def _rows(obj: Any, batch: int, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply ``fn`` to the tensors of ``obj`` whose first dimension is the batch ``batch``."""
    return _map_tensors(obj, lambda x: fn(x) if x.dim() > 0 and x.shape[0] == batch else x)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Decode in eval mode (no dropout) without gradients; restore the module's mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _check_args(a: Tensor, beam_size: int, max_len: int, mode: str) -> None:
    if not isinstance(a, Tensor) or a.dim() != 3:
        shape = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise ValueError(f"annotation vectors a must be a (B, L, D) tensor, got {shape}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    if mode not in DECODE_MODES:
        raise ValueError(
            f"decoding mode {mode!r} is not supported; use one of {DECODE_MODES} "
            "(hard-attention models: 'hard-argmax' or 'hard-expect')"
        )


def _log_probs(logits: Tensor, banned: Sequence[int]) -> Tensor:
    """log softmax of Eq. (7) in at least float32; banned words get -inf (no renormalisation)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits.to(dtype), dim=-1)
    if banned:
        logp[:, list(banned)] = -math.inf
    return logp


def _beta(out: Any, like: Tensor) -> Tensor:
    """beta_t of a step, or ones when the decoder has no gate."""
    beta = getattr(out, "beta", None)
    return torch.ones(like.shape[0], dtype=like.dtype, device=like.device) if beta is None else beta


# ----------------------------------------------------------------------------------------------
# greedy


def greedy_decode(
    decoder: nn.Module,
    a: Tensor,
    *,
    max_len: int,
    start_id: int,
    end_id: int,
    mode: str = "soft",
    suppress_ids: Sequence[int] = (),
) -> list[Hypothesis]:
    """Greedy decoding, batched: y_t = arg max_w p(w | a, y_<t) (Eq. (7)) for every image at once.

    Args:
        decoder: an ``AttentionDecoder`` (``precompute``, ``init_state``, ``step``).
        a: annotation vectors ``(B, L, D)``.
        max_len: the maximum number of decode steps (an image that never emits ``<end>`` gets
            ``max_len`` words and ``finished=False``).
        start_id, end_id: ids of ``<start>`` and ``<end>``.
        mode: ``"soft"``, or ``"hard-argmax"`` / ``"hard-expect"`` for hard-attention models.
        suppress_ids: word ids never emitted (besides ``<start>``, which never is).

    Returns:
        one :class:`Hypothesis` per image (``score == log_prob``).
    """
    _check_args(a, 1, max_len, mode)
    banned = sorted({start_id, *suppress_ids})
    batch = a.shape[0]
    with _eval_mode(decoder):
        ann = decoder.precompute(a)
        state = decoder.init_state(a)
        y = torch.full((batch,), start_id, dtype=torch.long, device=a.device)
        done = torch.zeros(batch, dtype=torch.bool, device=a.device)
        dtype = torch.promote_types(a.dtype, torch.float32)
        log_prob = torch.zeros(batch, dtype=dtype, device=a.device)
        words, alphas, betas = [], [], []
        for _ in range(max_len):
            out = decoder.step(y, state, ann, mode=mode)
            best, y = _log_probs(out.logits, banned).max(dim=-1)
            log_prob += best.masked_fill(done, 0.0)
            words.append(y)
            alphas.append(out.alpha)
            betas.append(_beta(out, out.alpha))
            done = done | (y == end_id)
            if bool(done.all()):
                break
            state = out.state
    return _greedy_hypotheses(words, alphas, betas, log_prob, end_id)


def _greedy_hypotheses(
    words: list[Tensor], alphas: list[Tensor], betas: list[Tensor], log_prob: Tensor, end_id: int
) -> list[Hypothesis]:
    """Cut each image's words after its first ``<end>``: one :class:`Hypothesis` per image.

    ``words``, ``alphas``, ``betas``: one ``(B,)``, ``(B, L)``, ``(B,)`` tensor per step;
    ``log_prob``: ``(B,)`` sum_t log p(y_t | a, y_<t) up to ``<end>``.
    """
    words_t = torch.stack(words, 1).cpu()  # (B, T)
    alphas_t = torch.stack(alphas, 1).cpu()  # (B, T, L)
    betas_t = torch.stack(betas, 1).cpu()  # (B, T)
    hyps = []
    for b in range(words_t.shape[0]):
        seq = words_t[b].tolist()
        finished = end_id in seq
        steps = seq.index(end_id) + 1 if finished else len(seq)
        lp = float(log_prob[b])
        hyps.append(
            Hypothesis(
                tokens=seq[: steps - int(finished)],
                score=lp,
                log_prob=lp,
                alphas=alphas_t[b, :steps],
                betas=betas_t[b, :steps],
                finished=finished,
            )
        )
    return hyps


# ----------------------------------------------------------------------------------------------
# beam search, one image at a time (the readable reference)


@dataclass
class _Partial:
    """A hypothesis under construction in :func:`beam_search_single`."""

    tokens: list[int]
    log_prob: float
    alphas: list[Tensor]
    betas: list[Tensor]


def _finish(p: _Partial, end_id: int, length_norm: float, finished: bool) -> Hypothesis:
    tokens = p.tokens[:-1] if finished else p.tokens
    steps = len(p.tokens)
    return Hypothesis(
        tokens=list(tokens),
        score=normalized_score(p.log_prob, steps, length_norm),
        log_prob=p.log_prob,
        alphas=torch.stack(p.alphas).cpu(),
        betas=torch.stack(p.betas).cpu(),
        finished=finished,
    )


def _grow(
    live: list[_Partial], top: Tensor, idx: Tensor, out: Any, end_id: int, length_norm: float
) -> tuple[list[_Partial], list[int], list[Hypothesis]]:
    """One step's bookkeeping in :func:`beam_search_single`: the kept candidates, grown by a word.

    ``top``, ``idx``: the best candidates' scores and flat indices ``parent * K + word``, best
    first. Returns the new live hypotheses, the parent of each (to gather the LSTM states) and
    the hypotheses that ended with ``<end>`` (finished). A -inf candidate ends the list.
    """
    num_words = out.logits.shape[1]
    beta = _beta(out, out.alpha)
    new_live, parents, ended = [], [], []
    for value, index in zip(top.tolist(), idx.tolist(), strict=True):
        if value == -math.inf:
            break
        parent, word = divmod(index, num_words)
        p = live[parent]
        grown = _Partial(
            p.tokens + [word],
            value,
            p.alphas + [out.alpha[parent]],
            p.betas + [beta[parent]],
        )
        if word == end_id:
            ended.append(_finish(grown, end_id, length_norm, finished=True))
        else:
            new_live.append(grown)
            parents.append(parent)
    return new_live, parents, ended


def beam_search_single(
    decoder: nn.Module,
    a: Tensor,
    *,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    length_norm: float = 0.0,
    mode: str = "soft",
    n_best: int | None = None,
    suppress_ids: Sequence[int] = (),
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Beam search over one image at a time (see the module docstring for the algorithm).

    Same arguments and results as :func:`beam_search`; only the implementation differs: a Python
    list of live hypotheses per image, the beam shrinking as hypotheses finish.
    """
    _check_args(a, beam_size, max_len, mode)
    banned = sorted({start_id, *suppress_ids})
    results = []
    with _eval_mode(decoder):
        for b in range(a.shape[0]):
            a_b = a[b : b + 1]  # (1, L, D)
            ann = decoder.precompute(a_b)
            state = decoder.init_state(a_b)
            live = [_Partial([], 0.0, [], [])]
            finished: list[Hypothesis] = []
            for _ in range(max_len):
                n_live = len(live)
                y = torch.tensor([p.tokens[-1] if p.tokens else start_id for p in live])
                ann_live = _rows(ann, 1, lambda x, n=n_live: x.expand(n, *x.shape[1:]))
                out = decoder.step(y.to(a.device), state, ann_live, mode=mode)
                logp = _log_probs(out.logits, banned)  # (n_live, K)
                scores = torch.tensor([p.log_prob for p in live], dtype=logp.dtype)
                cand = (scores.to(logp.device)[:, None] + logp).view(-1)
                top, idx = cand.topk(min(beam_size - len(finished), cand.numel()))
                live, parents, ended = _grow(live, top, idx, out, end_id, length_norm)
                finished += ended
                if not live:
                    break
                index_t = torch.tensor(parents, device=a.device)
                state = _rows(out.state, n_live, lambda x, i=index_t: x[i])
            finished += [_finish(p, end_id, length_norm, finished=False) for p in live]
            finished.sort(key=lambda h: h.score, reverse=True)
            results.append(finished if n_best is not None else finished[0])
    if n_best is not None:
        return [hyps[:n_best] for hyps in results]
    return results


# ----------------------------------------------------------------------------------------------
# beam search, batched


@dataclass
class _Step:
    """What one step of :func:`beam_search` records for every image b and beam slot j."""

    words: Tensor  # (B, k) the word slot j emitted at this step
    parents: Tensor  # (B, k) the slot (at the previous step) slot j grew from: the back-pointer
    alphas: Tensor  # (B, k, L) alpha_t used to predict that word
    betas: Tensor  # (B, k) beta_t of that step
    scores: Tensor  # (B, k) log p(y_1..y_t | a) of slot j
    ended: Tensor  # (B, k) slot j emitted <end> and was set aside

    def scatter(self, images: Tensor, batch: int) -> _Step:
        """This step of the images still searching, placed at their rows of a (batch, k) step."""

        def full(x: Tensor, fill: float) -> Tensor:
            out = x.new_full((batch, *x.shape[1:]), fill)
            out[images] = x
            return out

        return _Step(full(self.words, 0), full(self.parents, 0), full(self.alphas, 0.0),
                     full(self.betas, 0.0), full(self.scores, -math.inf),
                     full(self.ended, False))


def beam_search(
    decoder: nn.Module,
    a: Tensor,
    *,
    beam_size: int,
    max_len: int,
    start_id: int,
    end_id: int,
    length_norm: float = 0.0,
    mode: str = "soft",
    n_best: int | None = None,
    suppress_ids: Sequence[int] = (),
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Batched beam search: ``B`` images x ``k`` beams in one tensor program.

    Args:
        decoder, a, start_id, end_id, mode, suppress_ids: as in :func:`greedy_decode`.
        beam_size: k, the number of hypotheses kept per image.
        max_len: the maximum number of decode steps; live hypotheses are cut there.
        length_norm: rank candidates by ``log_prob / num_steps ** length_norm`` (0 = plain sum).
        n_best: None -> the best hypothesis per image; an int -> the ``n_best`` best per image,
            best first (``list[list[Hypothesis]]``; at most ``beam_size`` exist).

    Slot j of image b is row ``b * k + j`` of every ``(B*k, ...)`` tensor (the first step, with one
    hypothesis per image, runs on B rows); the annotation vectors stay ``(B, L, D)``, shared by the
    image's k beams. A finished or never filled slot scores -inf, so it is never chosen; once a
    quarter of the images have all k places finished, their rows are dropped (``active``).
    """
    _check_args(a, beam_size, max_len, mode)
    banned = sorted({start_id, *suppress_ids})
    batch, k, device = a.shape[0], beam_size, a.device
    if batch == 0:
        return []
    history: list[_Step] = []
    with _eval_mode(decoder):
        ann = decoder.precompute(a)  # a_i, W_a a_i once per image (B, L, ...), shared by its beams
        state = decoder.init_state(a)  # one row per image until the first step has run
        y = torch.full((batch,), start_id, dtype=torch.long, device=device)
        dtype = torch.promote_types(a.dtype, torch.float32)  # scores in at least float32
        scores, capacity = _empty_beams(batch, k, dtype, device)  # (B, k) and (B, 1)
        active = torch.arange(batch, device=device)  # the images still searching
        for t in range(max_len):
            n = active.shape[0]
            out = decoder.step(y, state, ann, mode=mode)
            if t == 0:  # each image has one (empty) hypothesis: its step, copied to the k slots
                out = _rows(out, batch, lambda x: x.repeat_interleave(k, dim=0))
            step, flat, scores, capacity = _beam_step(out, scores, capacity, banned, end_id)
            history.append(step if n == batch else step.scatter(active, batch))
            searching = torch.isfinite(scores).any(dim=1)  # (n,) images with a live hypothesis
            if not bool(searching.any()):
                break
            state = _rows(out.state, n * k, lambda x, i=flat: x[i])
            y = step.words.view(-1)
            if int(searching.sum()) <= 0.75 * n:  # drop the rows of the images that are done
                keep = searching.nonzero().squeeze(1)
                ann, state, y = _keep_images(keep, k, ann, state, y)
                scores, capacity, active = scores[keep], capacity[keep], active[keep]
    live_scores = torch.full((batch, k), -math.inf, device=device, dtype=dtype)
    live_scores[active] = scores
    return _collect(history, live_scores, end_id, length_norm, n_best)


def _empty_beams(
    batch: int, k: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """The start of :func:`beam_search`: one empty hypothesis per image, in slot 0.

    Returns the slots' scores ``(B, k)`` (0, then -inf: never filled) and each image's capacity
    ``(B, 1)``: k minus the hypotheses it has finished (none yet).
    """
    scores = torch.full((batch, k), -math.inf, device=device, dtype=dtype)
    scores[:, 0] = 0.0  # one empty hypothesis per image
    capacity = torch.full((batch, 1), k, device=device)  # k minus the finished, per image
    return scores, capacity


def _beam_step(
    out: Any, scores: Tensor, capacity: Tensor, banned: Sequence[int], end_id: int
) -> tuple[_Step, Tensor, Tensor, Tensor]:
    """One step's bookkeeping in :func:`beam_search`: each image's k best of its k*K candidates.

    ``out``: the decoder's step on the ``n*k`` live rows; ``scores`` ``(n, k)``: log p(y_<t | a)
    of each slot (-inf: finished or never filled); ``capacity`` ``(n, 1)``: k minus the finished.
    Returns the :class:`_Step`, its back-pointers as rows of the ``(n*k, ...)`` tensors, the
    new slots' scores (-inf where a slot was not kept or ended with ``<end>``) and capacities.
    """
    n, k = scores.shape
    logp = _log_probs(out.logits, banned)  # (n*k, K)
    num_words = logp.shape[1]
    cand = (scores.view(-1, 1) + logp).view(n, k * num_words)
    top, idx = cand.topk(k, dim=1)  # (n, k), best first
    parents, words = idx // num_words, idx % num_words
    rank = torch.arange(k, device=scores.device)[None, :]
    kept = (rank < capacity) & torch.isfinite(top)
    ended = kept & (words == end_id)
    alive = kept & ~ended
    # back-pointers as rows of the (n*k, ...) tensors
    flat = (torch.arange(n, device=scores.device)[:, None] * k + parents).view(-1)
    step = _Step(
        words=words,
        parents=parents,
        alphas=out.alpha[flat].view(n, k, -1),
        betas=_beta(out, out.alpha)[flat].view(n, k),
        scores=top,
        ended=ended,
    )
    capacity = capacity - ended.sum(dim=1, keepdim=True)
    return step, flat, top.masked_fill(~alive, -math.inf), capacity


def _keep_images(keep: Tensor, k: int, ann: Any, state: Any, y: Tensor) -> tuple[Any, Any, Tensor]:
    """The rows of the images ``keep`` (those still searching): ``ann`` has one row per image,
    ``state`` and the words ``y`` have k (``b * k + j``); the finished images' rows are dropped."""
    n = y.shape[0] // k
    rows = (keep[:, None] * k + torch.arange(k, device=keep.device)[None, :]).view(-1)
    ann = _rows(ann, n, lambda x, i=keep: x[i])
    state = _rows(state, n * k, lambda x, i=rows: x[i])
    return ann, state, y[rows]


def decode(
    decoder: nn.Module,
    a: Tensor,
    vocab: Any,
    *,
    beam_size: int = 3,
    max_len: int = 20,
    mode: str = "soft",
    length_norm: float = 0.0,
) -> list[Hypothesis]:
    """The one way ``sat_core`` turns annotation vectors into captions: per-epoch validation
    (``train``), ``evaluate`` and ``caption`` all call it, so they decode alike.

    ``beam_size == 1`` is :func:`greedy_decode`, otherwise :func:`beam_search`; ``<pad>`` is never
    emitted (nor ``<start>``). ``vocab`` needs ``start_id``, ``end_id`` and ``pad_id``.
    """
    common = dict(max_len=max_len, start_id=vocab.start_id, end_id=vocab.end_id, mode=mode,
                  suppress_ids=(vocab.pad_id,))
    if beam_size == 1:
        return greedy_decode(decoder, a, **common)
    return beam_search(decoder, a, beam_size=beam_size, length_norm=length_norm, **common)


def _collect(
    history: list[_Step],
    live_scores: Tensor,
    end_id: int,
    length_norm: float,
    n_best: int | None,
) -> list[Hypothesis] | list[list[Hypothesis]]:
    """Rank every image's candidates and rebuild the chosen ones by following the back-pointers."""
    words = torch.stack([s.words for s in history]).cpu()  # (T, B, k)
    parents = torch.stack([s.parents for s in history]).cpu()  # (T, B, k)
    alphas = torch.stack([s.alphas for s in history]).cpu()  # (T, B, k, L)
    betas = torch.stack([s.betas for s in history]).cpu()  # (T, B, k)
    scores = torch.stack([s.scores for s in history]).cpu()  # (T, B, k)
    ended = torch.stack([s.ended for s in history]).cpu()  # (T, B, k)
    live = torch.isfinite(live_scores).cpu()  # (B, k): cut at the last step
    last = len(history) - 1

    results = []
    for b in range(words.shape[1]):
        # candidates (step t, slot j, finished): every <end> set aside, plus the live at the end
        cands = [(int(t), int(j), True) for t, j in ended[:, b].nonzero().tolist()]
        cands += [(last, int(j), False) for j in live[b].nonzero().flatten().tolist()]
        ranked = sorted(
            cands,
            key=lambda c: normalized_score(float(scores[c[0], b, c[1]]), c[0] + 1, length_norm),
            reverse=True,
        )
        hyps = []
        for t, j, finished in ranked[: 1 if n_best is None else n_best]:
            steps, slot = [], j
            for s in range(t, -1, -1):  # follow the back-pointers to step 0
                steps.append((int(words[s, b, slot]), s, slot))
                slot = int(parents[s, b, slot])
            steps.reverse()
            tokens = [w for w, _, _ in steps]
            lp = float(scores[t, b, j])
            hyps.append(
                Hypothesis(
                    tokens=tokens[:-1] if finished else tokens,
                    score=normalized_score(lp, t + 1, length_norm),
                    log_prob=lp,
                    alphas=torch.stack([alphas[s, b, sl] for _, s, sl in steps]),
                    betas=torch.stack([betas[s, b, sl] for _, s, sl in steps]),
                    finished=finished,
                )
            )
        results.append(hyps)
    if n_best is None:
        return [hyps[0] for hyps in results]
    return results
