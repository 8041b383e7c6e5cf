"""Decoding: greedy, batched beam search and the one-image reference, against brute force.

Tiny random decoders in float64, eval mode, dropout 0. Every beam-search claim is checked against an
independent computation: exhaustive enumeration of the hypothesis space scored by the decoder's
teacher-forced ``forward`` (a different code path than ``step``), hand-computed scores on a bigram
toy model, and the one-image-at-a-time search.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import pytest
import torch
from torch import nn

from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.decoding import (
    Hypothesis,
    beam_search,
    beam_search_single,
    greedy_decode,
    normalized_score,
)

START, END = 1, 2
DTYPE = torch.float64
TOL = dict(rtol=1e-9, atol=1e-10)


def make_decoder(K: int = 12, D: int = 6, L: int = 5, seed: int = 0, attention: str = "soft",
                 gate: bool = True, scale: float = 1.0) -> AttentionDecoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=K, feature_dim=D, embed_dim=5, hidden_dim=7, attn_dim=4,
                        dropout=0.0, gate=gate, attention=attention)
    dec = AttentionDecoder(cfg).to(DTYPE).eval()
    with torch.no_grad():  # sharper distributions than the default init, so searches disagree
        dec.L_o.weight.mul_(scale)
    return dec


def make_annotations(B: int, L: int = 5, D: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=g, dtype=DTYPE)


# ------------------------------------------------------------------------ brute force reference
def hypothesis_space(K: int, max_len: int, banned: set[int]) -> list[tuple[list[int], bool]]:
    """Every caption the beam search can return: w_1..w_n <end> (n < max_len), or max_len words."""
    words = [w for w in range(K) if w not in banned and w != END]
    space = []
    for n in range(max_len):
        space += [(list(seq) + [END], True) for seq in itertools.product(words, repeat=n)]
    space += [(list(seq), False) for seq in itertools.product(words, repeat=max_len)]
    return space


def teacher_forced_log_probs(dec: AttentionDecoder, a1: torch.Tensor, seqs: list[list[int]]):
    """log p(y | a) of each emitted sequence, via decoder.forward (not decoder.step)."""
    N, T = len(seqs), max(len(s) for s in seqs)
    cap_in = torch.zeros(N, T, dtype=torch.long)
    target = torch.zeros(N, T, dtype=torch.long)
    for i, s in enumerate(seqs):
        cap_in[i, : len(s)] = torch.tensor([START] + s[:-1])
        target[i, : len(s)] = torch.tensor(s)
    lengths = torch.tensor([len(s) for s in seqs])
    with torch.no_grad():
        out = dec(a1.expand(N, -1, -1), cap_in, lengths)
    logp = torch.log_softmax(out.logits.double(), -1).gather(2, target[..., None]).squeeze(-1)
    mask = torch.arange(T)[None] < lengths[:, None]
    return (logp * mask).sum(1)


def brute_force(dec, a1, max_len, length_norm=0.0, banned=(START,)):
    space = hypothesis_space(dec.cfg.vocab_size, max_len, set(banned))
    lp = teacher_forced_log_probs(dec, a1, [s for s, _ in space])
    ranked = sorted(
        ((normalized_score(float(v), len(s), length_norm), float(v), s, f)
         for (s, f), v in zip(space, lp, strict=True)),
        key=lambda r: r[0], reverse=True,
    )
    return ranked  # (score, log_prob, emitted sequence incl. <end>, finished)


def emitted(h: Hypothesis) -> list[int]:
    return h.tokens + [END] if h.finished else h.tokens


def assert_same_hyp(h1: Hypothesis, h2: Hypothesis) -> None:
    assert h1.tokens == h2.tokens
    assert h1.finished == h2.finished
    assert h1.score == pytest.approx(h2.score, rel=1e-9, abs=1e-10)
    assert h1.log_prob == pytest.approx(h2.log_prob, rel=1e-9, abs=1e-10)
    torch.testing.assert_close(h1.alphas, h2.alphas, **TOL)
    torch.testing.assert_close(h1.betas, h2.betas, **TOL)


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_is_greedy(seed):
    dec = make_decoder(seed=seed, scale=3.0)
    a = make_annotations(4, seed=seed + 10)
    greedy = greedy_decode(dec, a, max_len=8, start_id=START, end_id=END)
    for search in (beam_search, beam_search_single):
        beam = search(dec, a, beam_size=1, max_len=8, start_id=START, end_id=END)
        for g, b in zip(greedy, beam, strict=True):
            assert_same_hyp(g, b)
    # greedy's own score is the log-probability of what it emitted (independent path: forward)
    for i, g in enumerate(greedy):
        ref = teacher_forced_log_probs(dec, a[i : i + 1], [emitted(g)])
        assert g.log_prob == pytest.approx(float(ref[0]), abs=1e-9)
        assert g.alphas.shape == (g.num_steps, a.shape[1])


@pytest.mark.parametrize("length_norm", [0.0, 0.7])
def test_batched_equals_one_image_at_a_time(length_norm):
    dec = make_decoder(seed=3, scale=2.0)
    a = make_annotations(5, seed=4)
    kw = dict(beam_size=3, max_len=7, start_id=START, end_id=END, length_norm=length_norm,
              n_best=3)
    batched = beam_search(dec, a, **kw)
    single = beam_search_single(dec, a, **kw)
    assert len(batched) == len(single) == 5
    for hb, hs in zip(batched, single, strict=True):
        assert len(hb) == len(hs) >= 1
        for x, y in zip(hb, hs, strict=True):
            assert_same_hyp(x, y)
        assert [h.score for h in hb] == sorted((h.score for h in hb), reverse=True)
    # the default (n_best=None) is the first of the n-best list
    best = beam_search(dec, a, **{**kw, "n_best": None})
    for h, hb in zip(best, batched, strict=True):
        assert_same_hyp(h, hb[0])


def test_batched_equals_single_when_images_finish_at_different_steps():
    # <end> made likelier so that images are done after 2, 3, 4, 5 ... or all 10 steps: the
    # batched search drops the rows of finished images on the way.
    dec = make_decoder(seed=1, scale=3.0)
    with torch.no_grad():
        dec.L_o.bias[END] += 0.5
    a = make_annotations(8, seed=4)
    kw = dict(beam_size=3, max_len=10, start_id=START, end_id=END, n_best=3)
    batched = beam_search(dec, a, **kw)
    single = beam_search_single(dec, a, **kw)
    done_after = [max(h.num_steps for h in hyps) for hyps in single]
    assert len(set(done_after)) >= 4 and max(done_after) == 10  # the case we mean to test
    for hb, hs in zip(batched, single, strict=True):
        assert len(hb) == len(hs)
        for x, y in zip(hb, hs, strict=True):
            assert_same_hyp(x, y)


@pytest.mark.parametrize("max_len,length_norm", [(3, 0.0), (4, 0.0), (4, 1.0)])
def test_wide_beam_equals_exhaustive_enumeration(max_len, length_norm):
    # K = 5 with the specials <pad>=0, <start>=1, <end>=2: words {0, 3, 4} can be emitted.
    dec = make_decoder(K=5, seed=5, scale=2.0)
    a = make_annotations(3, seed=6)
    n_hyp = len(hypothesis_space(5, max_len, {START}))
    for search in (beam_search, beam_search_single):
        got = search(dec, a, beam_size=n_hyp, max_len=max_len, start_id=START, end_id=END,
                     length_norm=length_norm, n_best=6)
        for i in range(a.shape[0]):
            ref = brute_force(dec, a[i : i + 1], max_len, length_norm)
            for h, (score, lp, seq, fin) in zip(got[i], ref[:6], strict=True):
                assert emitted(h) == seq and h.finished == fin
                assert h.score == pytest.approx(score, abs=1e-9)
                assert h.log_prob == pytest.approx(lp, abs=1e-9)


def test_narrow_beam_never_beats_exhaustive_and_suppress_ids():
    dec = make_decoder(K=5, seed=7, scale=2.0)
    a = make_annotations(2, seed=8)
    for i in range(2):
        ref = brute_force(dec, a[i : i + 1], 4, banned=(START, 0))
        h = beam_search(dec, a[i : i + 1], beam_size=2, max_len=4, start_id=START, end_id=END,
                        suppress_ids=(0,))[0]
        assert 0 not in h.tokens
        assert h.score <= ref[0][0] + 1e-9
        # whatever it returns is a real hypothesis with the right score
        assert (h.score, emitted(h)) in [(pytest.approx(s, abs=1e-9), q) for s, _, q, _ in ref]


class _Bigram(nn.Module):
    """A decoder whose word distribution depends only on the previous word (a lookup table)."""

    class Out(NamedTuple):
        logits: torch.Tensor
        state: tuple
        alpha: torch.Tensor
        beta: torch.Tensor

    def __init__(self, table: torch.Tensor, L: int = 3):
        super().__init__()
        self.table, self.L = table, L

    def precompute(self, a):
        return a

    def init_state(self, a):
        return (torch.zeros(a.shape[0], 1), torch.zeros(a.shape[0], 1))

    def step(self, y_prev, state, ann, mode="soft"):
        B = y_prev.shape[0]
        alpha = torch.full((B, self.L), 1.0 / self.L)
        return self.Out(self.table[y_prev].log(), state, alpha, torch.ones(B))


def test_length_norm_changes_the_ranking_as_computed_by_hand():
    # words: 0 <pad>, 1 <start>, 2 <end>, 3 "circle". p(.|<start>) and p(.|circle):
    table = torch.zeros(4, 4)
    table[START] = torch.tensor([0.0, 0.0, 0.55, 0.45])
    table[3] = torch.tensor([0.0, 0.0, 0.95, 0.05])
    table[0] = table[2] = torch.tensor([0.25, 0.25, 0.25, 0.25])
    dec = _Bigram(table)
    a = torch.zeros(1, 3, 2)
    # by hand: "" = log .55 = -0.598 (1 step); "circle" = log .45 + log .95 = -0.850 (2 steps)
    raw_empty, raw_circle = math.log(0.55), math.log(0.45) + math.log(0.95)
    assert raw_empty > raw_circle and raw_empty / 1 < raw_circle / 2
    kw = dict(beam_size=3, max_len=4, start_id=START, end_id=END, suppress_ids=(0,))
    for search in (beam_search, beam_search_single):
        plain = search(dec, a, **kw)[0]
        assert plain.tokens == [] and plain.finished
        assert plain.score == pytest.approx(raw_empty)
        normed = search(dec, a, length_norm=1.0, **kw)[0]
        assert normed.tokens == [3] and normed.finished
        assert normed.score == pytest.approx(raw_circle / 2)
        assert normed.log_prob == pytest.approx(raw_circle)
        half = search(dec, a, length_norm=0.5, **kw, n_best=2)[0]
        by_hand = sorted([raw_empty / 1**0.5, raw_circle / 2**0.5], reverse=True)
        assert [h.score for h in half] == pytest.approx(by_hand)


def test_finished_hypotheses_take_a_place_in_the_beam_by_hand():
    # k = 2. Step 1 keeps <end> (0.40, finished) and "3" (0.35); "4" (0.25) is out.
    # The beam now has ONE live place: step 2 keeps [3, 3] (.35*.51) over [3, 4] (.35*.49);
    # step 3 keeps [3, 3, 3]. A search that kept 2 live beams would also find [3, 4, <end>].
    table = torch.zeros(5, 5)
    table[START] = torch.tensor([0.0, 0.0, 0.40, 0.35, 0.25])
    table[3] = torch.tensor([0.0, 0.0, 0.0, 0.51, 0.49])
    table[4] = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    table[0] = table[2] = torch.full((5,), 0.2)
    dec = _Bigram(table)
    a = torch.zeros(2, 3, 2)
    for search in (beam_search, beam_search_single):
        got = search(dec, a, beam_size=2, max_len=3, start_id=START, end_id=END, n_best=5,
                     suppress_ids=(0,))
        for hyps in got:
            assert [(h.tokens, h.finished) for h in hyps] == [([], True), ([3, 3, 3], False)]
            assert hyps[0].log_prob == pytest.approx(math.log(0.40))
            assert hyps[1].log_prob == pytest.approx(math.log(0.35 * 0.51**2))


def test_no_reachable_end_returns_unfinished_max_len():
    dec = make_decoder(seed=9)
    with torch.no_grad():
        dec.L_o.bias[END] = -1e4  # <end> is never among the candidates worth keeping
    a = make_annotations(3, seed=10)
    results = [greedy_decode(dec, a, max_len=6, start_id=START, end_id=END)]
    for search in (beam_search, beam_search_single):
        results.append(search(dec, a, beam_size=3, max_len=6, start_id=START, end_id=END))
    for hyps in results:
        for h in hyps:
            assert len(h.tokens) == 6 and not h.finished and END not in h.tokens
            assert h.alphas.shape == (6, 5) and h.betas.shape == (6,)
            assert math.isfinite(h.score)
    for hb, hs in zip(results[1], results[2], strict=True):
        assert_same_hyp(hb, hs)


@pytest.mark.parametrize("mode", ["hard-argmax", "hard-expect"])
def test_hard_attention_modes(mode):
    dec = make_decoder(seed=11, attention="hard", gate=False, scale=2.0)
    a = make_annotations(3, seed=12)
    kw = dict(beam_size=2, max_len=5, start_id=START, end_id=END, mode=mode)
    for hb, hs in zip(beam_search(dec, a, **kw), beam_search_single(dec, a, **kw), strict=True):
        assert_same_hyp(hb, hs)
        torch.testing.assert_close(hb.alphas.sum(-1), torch.ones(hb.num_steps, dtype=DTYPE), **TOL)
        torch.testing.assert_close(hb.betas, torch.ones(hb.num_steps, dtype=DTYPE))  # no gate
    # the words are scored with mode's context: replaying them step by step gives the same score
    h = beam_search(dec, a[:1], **kw)[0]
    with torch.no_grad():
        ann, state = dec.precompute(a[:1]), dec.init_state(a[:1])
        y, total = torch.tensor([START]), 0.0
        for w in emitted(h):
            out = dec.step(y, state, ann, mode=mode)
            total += float(torch.log_softmax(out.logits, -1)[0, w])
            y, state = torch.tensor([w]), out.state
    assert h.log_prob == pytest.approx(total, abs=1e-9)


def test_restores_training_mode_and_rejects_bad_arguments():
    dec = make_decoder(seed=13).train()
    a = make_annotations(2)
    beam_search(dec, a, beam_size=2, max_len=3, start_id=START, end_id=END)
    assert dec.training
    with pytest.raises(ValueError, match="hard-sample"):
        beam_search(dec, a, beam_size=2, max_len=3, start_id=START, end_id=END,
                    mode="hard-sample")
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(dec, a, beam_size=0, max_len=3, start_id=START, end_id=END)
    with pytest.raises(ValueError, match=r"\(B, L, D\)"):
        greedy_decode(dec, a[0], max_len=3, start_id=START, end_id=END)


# ------------------------------------------------------------------ one decode for every caller
@pytest.mark.parametrize("beam_size", [1, 3])
def test_decode_never_emits_pad_and_is_the_search_it_names(beam_size):
    """``decode`` = greedy (k = 1) or beam search with <pad> suppressed; validation (train),
    evaluate and caption all call it, so none of them can emit <pad> (the validation BLEU once
    could: it decoded without suppress_ids)."""
    from types import SimpleNamespace

    from sat_core.decoding import decode

    vocab = SimpleNamespace(pad_id=0, start_id=START, end_id=END)
    dec = make_decoder(scale=3.0)
    with torch.no_grad():
        dec.L_o.bias[0] += 50.0  # <pad> is by far the likeliest word at every step
    a = make_annotations(4)
    hyps = decode(dec, a, vocab, beam_size=beam_size, max_len=4)
    assert all(0 not in h.tokens for h in hyps)
    # without the suppression the same search emits nothing but <pad>
    plain = beam_search(dec, a, beam_size=beam_size, max_len=4, start_id=START, end_id=END)
    assert all(h.tokens == [0, 0, 0, 0] for h in plain)
    search = (greedy_decode(dec, a, max_len=4, start_id=START, end_id=END, suppress_ids=(0,))
              if beam_size == 1 else
              beam_search(dec, a, beam_size=beam_size, max_len=4, start_id=START, end_id=END,
                          suppress_ids=(0,)))
    for h, s in zip(hyps, search, strict=True):
        assert_same_hyp(h, s)


def test_validation_evaluate_and_caption_decode_alike():
    """The three callers go through ``decode`` (one code path), never a search of their own."""
    import sat_core.caption as caption
    import sat_core.decoding as decoding
    import sat_core.evaluate as evaluate
    import sat_core.train as train

    for module in (train, evaluate, caption):
        assert module.decode is decoding.decode
        source = open(module.__file__).read()
        assert "beam_search(" not in source and "greedy_decode(" not in source
