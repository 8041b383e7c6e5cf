"""The LSTM decoder (Sec. 3.1.2): cell, init state, deep output, teacher forcing, padding, naive twin."""

from __future__ import annotations

import copy
import inspect
import re

import pytest
import torch
import torch._dynamo
from torch import nn

from sat_core import attention, decoder, fast
from sat_core.decoder import AttentionDecoder, DecoderConfig
from sat_core.losses import caption_loss, masked_nll
from sat_core.model import Captioner, build_model, teacher_forcing
from sat_core.naive import NaiveDecoder

K, D, M, N_HID, A, L = 13, 6, 5, 7, 4, 5


def make_decoder(dtype=torch.float64, seed=0, **kw) -> AttentionDecoder:
    torch.manual_seed(seed)
    cfg = DecoderConfig(vocab_size=K, feature_dim=D, embed_dim=M, hidden_dim=N_HID, attn_dim=A,
                        dropout=kw.pop("dropout", 0.0), **kw)
    return AttentionDecoder(cfg).to(dtype)


def make_batch(B=3, T=4, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(B, L, D, generator=g, dtype=dtype)
    captions_in = torch.randint(0, K, (B, T), generator=g)
    targets = torch.randint(0, K, (B, T), generator=g)
    lengths = torch.tensor([T, 2, 3][:B])
    return a, captions_in, targets, lengths


@pytest.fixture
def dec() -> AttentionDecoder:
    return make_decoder()


def test_shapes_alpha_beta(dec):
    a, y, _, lengths = make_batch()
    out = dec(a, y, lengths)
    B, T = y.shape
    assert out.logits.shape == (B, T, K) and out.alpha.shape == (B, T, L) and out.beta.shape == (B, T)
    assert out.s is None and out.log_p_s is None and out.entropy is None
    real = torch.arange(T)[None] < lengths[:, None]
    torch.testing.assert_close(out.alpha.sum(-1)[real], torch.ones(int(real.sum()), dtype=torch.float64))
    assert ((out.beta[real] > 0) & (out.beta[real] < 1)).all()
    # padded steps are exactly zero
    assert (out.logits[~real] == 0).all() and (out.alpha[~real] == 0).all() and (out.beta[~real] == 0).all()


def test_init_state_formula(dec):
    a, *_ = make_batch()
    h0, c0 = dec.init_state(a)
    mean = a.sum(1) / L
    torch.testing.assert_close(h0, torch.tanh(mean @ dec.f_init_h.weight.T + dec.f_init_h.bias))
    torch.testing.assert_close(c0, torch.tanh(mean @ dec.f_init_c.weight.T + dec.f_init_c.bias))


def test_step_lstm_cell_and_deep_output_by_hand(dec):
    """Eq. (1)-(3) and Eq. (7) written out from the module's weights."""
    a, y, _, _ = make_batch()
    ann = dec.precompute(a)
    h_prev, c_prev = dec.init_state(a)
    out = dec.step(y[:, 0], (h_prev, c_prev), ann)
    Ey = dec.embedding.weight[y[:, 0]]
    # context and gate from the attention module (tested on their own in test_attention.py)
    z, alpha = dec.attention(a, h_prev)
    beta = torch.sigmoid(h_prev @ dec.gate.f_beta.weight[0] + dec.gate.f_beta.bias)
    z_hat = beta[:, None] * z
    torch.testing.assert_close(out.alpha, alpha)
    torch.testing.assert_close(out.beta, beta)
    torch.testing.assert_close(out.z_hat, z_hat)
    # T_{D+m+n,n} applied to [E y_{t-1}; h_{t-1}; z_hat_t], rows ordered (i, f, o, g)
    T = torch.cat([dec.T_y.weight, dec.T_hz.weight], dim=1)
    pre = torch.cat([Ey, h_prev, z_hat], dim=1) @ T.T + dec.T_y.bias
    i, f, o, g = pre.split(N_HID, dim=1)
    sig = torch.sigmoid
    c = sig(f) * c_prev + sig(i) * torch.tanh(g)
    h = sig(o) * torch.tanh(c)
    torch.testing.assert_close(out.state[1], c)
    torch.testing.assert_close(out.state[0], h)
    # Eq. (7): p(y_t) ∝ exp(L_o(E y_{t-1} + L_h h_t + L_z z_hat_t))
    arg = Ey + h @ dec.L_h.weight.T + z_hat @ dec.L_z.weight.T
    torch.testing.assert_close(out.logits, arg @ dec.L_o.weight.T + dec.L_o.bias)


def test_annotations_select_follows_rows(dec):
    a, y, _, _ = make_batch()
    ann = dec.precompute(a)
    rows = torch.tensor([2, 0, 2])
    h, c = dec.init_state(a)
    picked = dec.step(y[rows, 0], (h[rows], c[rows]), ann.select(rows))
    full = dec.step(y[:, 0], (h, c), ann)
    torch.testing.assert_close(picked.logits, full.logits[rows])
    torch.testing.assert_close(picked.alpha, full.alpha[rows])


def test_gradcheck_one_step(dec):
    a, y, _, _ = make_batch(B=2)
    h0, c0 = (x.detach().requires_grad_() for x in dec.init_state(a))
    a = a.clone().requires_grad_()

    def one_step(a_, h_, c_):
        out = dec.step(y[:, 0], (h_, c_), dec.precompute(a_))
        return out.logits, out.state[0], out.state[1], out.alpha

    assert torch.autograd.gradcheck(one_step, (a, h0, c0))


def test_gradcheck_forward_wrt_parameters():
    dec = make_decoder(seed=3)
    a, y, _, lengths = make_batch(B=2, T=3)
    params = dict(dec.named_parameters())
    names = ["attention.U_a.weight", "gate.f_beta.weight", "T_hz.weight", "L_z.weight"]

    def f(*ws):
        out = torch.func.functional_call(dec, {**params, **dict(zip(names, ws, strict=True))}, (a, y, lengths))
        return out.logits

    ws = tuple(params[n].detach().clone().requires_grad_() for n in names)
    # fast_mode: checks the Jacobian along random directions (one forward per input, not per entry)
    assert torch.autograd.gradcheck(f, ws, fast_mode=True)


def test_teacher_forcing_equals_a_loop_of_steps(dec):
    a, y, _, lengths = make_batch()
    out = dec(a, y, lengths)
    ann = dec.precompute(a)
    state = dec.init_state(a)
    for t in range(y.shape[1]):
        st = dec.step(y[:, t], state, ann)
        state = st.state
        real = t < lengths
        torch.testing.assert_close(out.logits[real, t], st.logits[real])
        torch.testing.assert_close(out.alpha[real, t], st.alpha[real])
        torch.testing.assert_close(out.beta[real, t], st.beta[real])


def test_forward_gradients_equal_those_of_a_step_loop(dec):
    """forward defers the weight gradients of T_hz and U_a to one matmul each; step uses plain
    autograd."""
    a, y, targets, lengths = make_batch()
    out = dec(a, y, lengths)
    masked_nll(out.logits, targets, lengths).backward()
    fast = {n: p.grad.clone() for n, p in dec.named_parameters()}
    dec.zero_grad()
    ann, state, logits = dec.precompute(a), dec.init_state(a), []
    for t in range(y.shape[1]):
        st = dec.step(y[:, t], state, ann)
        state = st.state
        logits.append(st.logits)
    real = torch.arange(y.shape[1])[None] < lengths[:, None]
    masked_nll(torch.stack(logits, 1) * real[..., None], targets, lengths).backward()
    for name, p in dec.named_parameters():
        torch.testing.assert_close(fast[name], p.grad, msg=name)


def test_stepwise_gives_the_same_values_and_gradients_as_the_layer():
    """fast.stepwise (the decoder's speed seam): the same products at every step of a recurrence,
    and the same gradients, the weight's summed over all steps at the end."""
    torch.manual_seed(5)
    layer = nn.Linear(N_HID, N_HID, bias=False).double()
    xs = torch.randn(4, 3, N_HID, dtype=torch.float64)
    h0 = torch.randn(3, N_HID, dtype=torch.float64)

    def run(linear_map):
        h = h0.clone().requires_grad_()
        out = h
        for x in xs:  # h_t = tanh(x_t + W h_{t-1})
            out = torch.tanh(x + linear_map(out))
        return out, h

    mapped = fast.stepwise(layer)
    assert isinstance(mapped, fast._StepwiseLinear)
    out, h = run(mapped)
    ref, h_ref = run(layer)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out.sum(), (h, layer.weight))
    ref_grads = torch.autograd.grad(ref.sum(), (h_ref, layer.weight))
    for mine, theirs in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    # no weight gradient to defer, or a bias it does not handle: the layer itself
    with torch.no_grad():
        assert fast.stepwise(layer) is layer
    with_bias = nn.Linear(2, 2)
    assert fast.stepwise(with_bias) is with_bias
    layer.weight.requires_grad_(False)
    assert fast.stepwise(layer) is layer


def test_forward_takes_its_step_maps_from_the_seam(dec, monkeypatch):
    asked, stepwise = [], fast.stepwise

    def recording(linear):
        asked.append(linear)
        return stepwise(linear)

    monkeypatch.setattr(fast, "stepwise", recording)
    a, y, _, lengths = make_batch()
    dec(a, y, lengths)
    assert asked == [dec.T_hz, dec.attention.U_a]


COMPILE_CASES = [("cpu", "aot_eager"), ("cuda", "inductor")]


@pytest.mark.parametrize("device,backend", COMPILE_CASES, ids=[d for d, _ in COMPILE_CASES])
@pytest.mark.parametrize("mode", ["soft", "hard-sample"])
def test_compiled_cell_matches_the_eager_decoder(device, backend, mode):
    """fast.compile_cell (train --compile): the same loss and gradients as the eager decoder,
    one compiled step for every caption length, and decoding without autograd stays eager.
    (CPU: aot_eager, the graph capture and autograd of torch.compile without a C++ build.)"""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch._dynamo.reset()
    dtype = torch.float64 if device == "cpu" else torch.float32
    ref = make_decoder(dtype=dtype).to(device)
    dec = make_decoder(dtype=dtype).to(device)
    fast.compile_cell(dec, backend=backend)
    fast.compile_cell(dec, backend=backend)  # a second call changes nothing
    assert fast.stepwise(dec.T_hz) is dec.T_hz  # plain layers inside the compiled step
    assert isinstance(fast.stepwise(ref.T_hz), fast._StepwiseLinear)
    a, y, targets, lengths = (t.to(device) for t in make_batch(dtype=dtype))
    eager_recur, graphs = ref._recur, []
    for T in (4, 3, 2):  # three caption lengths: one compiled step serves them all
        lengths_T = lengths.clamp(max=T)
        losses, grads = [], []
        for model in (ref, dec):
            model.zero_grad()
            gen = torch.Generator(device).manual_seed(3) if mode != "soft" else None
            out = model(a, y[:, :T], lengths_T, mode=mode, generator=gen)
            loss = caption_loss(out, targets[:, :T], lengths_T, alpha_c=0.7)["loss"]
            loss.backward()
            losses.append(loss.detach())
            grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(losses[1], losses[0], **tol)
        for name in grads[0]:
            torch.testing.assert_close(grads[1][name], grads[0][name], msg=name, **tol)
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    # The step's graphs (hard: split at the draw, a torch.Generator is not traced; on an H200
    # soft made 2, hard 13) are made for the first length; none is added for another length.
    assert graphs[0] > 0 and graphs == [graphs[0]] * 3, graphs
    if device == "cpu" and mode == "soft":
        assert graphs[0] == 1  # the whole step in one graph
    with torch.no_grad():  # decoding: the eager step, not a compiled one
        before = torch._dynamo.utils.counters["stats"]["calls_captured"]
        dec(a, y, lengths)
        assert torch._dynamo.utils.counters["stats"]["calls_captured"] == before
    assert ref._recur == eager_recur
    # a deep copy runs its own compiled step, on its own weights
    twin = copy.deepcopy(dec)
    with torch.no_grad():
        for model in (twin, ref):
            model.T_hz.weight.mul_(1.5)
    losses = [caption_loss(m(a, y, lengths, mode="soft"), targets, lengths)["loss"]
              for m in (twin, ref, dec)]
    torch.testing.assert_close(losses[0], losses[1], **tol)
    assert not torch.allclose(losses[0], losses[2])


@pytest.mark.parametrize("module", [attention, decoder], ids=["attention", "decoder"])
def test_equation_modules_hold_no_speed_machinery(module):
    """The book shows attention.py and decoder.py: their speed tricks stay in sat_core/fast.py,
    reached through the named seam only (fast.applies/attention_scores, fast.stepwise,
    fast.sample_categorical)."""
    for name, obj in vars(module).items():
        if inspect.isclass(obj):
            assert not issubclass(obj, torch.autograd.Function), f"{module.__name__}.{name}"
            assert "tape" not in name.lower(), f"{module.__name__}.{name}"
    source = inspect.getsource(module)
    for word in ("autograd.Function", "ctx.", "_Tape", "sigmoid_backward", "torch.mm("):
        assert word not in source, f"{word!r} in {module.__name__}"
    seam = {"applies", "attention_scores", "stepwise", "sample_categorical", "py"}  # "py": the file named in prose
    used = set(re.findall(r"\bfast\.(\w+)", source))
    assert used and used <= seam, used - seam


def _loss_and_grads(dec, a, y, targets, lengths):
    dec.zero_grad()
    out = dec(a, y, lengths)
    loss = caption_loss(out, targets, lengths, alpha_c=0.7)["loss"]
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in dec.named_parameters()}


def test_padding_changes_neither_loss_nor_gradients(dec):
    a, y, targets, lengths = make_batch()
    loss, grads = _loss_and_grads(dec, a, y, targets, lengths)
    # junk in the padded positions, and 3 more padding columns
    g = torch.Generator().manual_seed(9)
    y2 = torch.cat([y, torch.randint(0, K, (3, 3), generator=g)], 1)
    t2 = torch.cat([targets, torch.randint(0, K, (3, 3), generator=g)], 1)
    real = torch.arange(y2.shape[1])[None] < lengths[:, None]
    y2 = torch.where(real, y2, torch.randint(0, K, y2.shape, generator=g))
    t2 = torch.where(real, t2, torch.randint(0, K, t2.shape, generator=g))
    loss2, grads2 = _loss_and_grads(dec, a, y2, t2, lengths)
    torch.testing.assert_close(loss2, loss)
    for name in grads:
        torch.testing.assert_close(grads2[name], grads[name], msg=name)


def test_results_do_not_depend_on_other_batch_members(dec):
    a, y, _, lengths = make_batch()
    out = dec(a, y, lengths)
    for b in range(3):
        T_b = int(lengths[b])
        alone = dec(a[b : b + 1], y[b : b + 1, :T_b], lengths[b : b + 1])
        torch.testing.assert_close(alone.logits[0], out.logits[b, :T_b])
        torch.testing.assert_close(alone.alpha[0], out.alpha[b, :T_b])


def test_dropout_acts_only_on_the_deep_output():
    dec = make_decoder(dropout=0.5).train()
    a, y, _, lengths = make_batch()
    torch.manual_seed(0)
    train = dec(a, y, lengths)
    ev = dec.eval()(a, y, lengths)
    torch.testing.assert_close(train.alpha, ev.alpha)  # the recurrence sees no dropout
    torch.testing.assert_close(train.beta, ev.beta)
    assert not torch.allclose(train.logits, ev.logits)


def test_no_gate_means_beta_one():
    dec = make_decoder(gate=False)
    a, y, _, lengths = make_batch()
    out = dec(a, y, lengths)
    real = torch.arange(y.shape[1])[None] < lengths[:, None]
    assert (out.beta[real] == 1).all()
    assert dec.gate is None


def test_naive_decoder_with_copied_weights_matches(dec):
    a, y, _, lengths = make_batch()
    naive = NaiveDecoder.from_decoder(dec)
    logits, alpha = naive(a, y, lengths)
    out = dec(a, y, lengths)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(alpha, out.alpha)


AUTOCAST_CASES = [("cpu", torch.bfloat16), ("cpu", torch.float16),
                  ("cuda", torch.bfloat16), ("cuda", torch.float16)]


@pytest.mark.parametrize("device,dtype", AUTOCAST_CASES, ids=[f"{d}-{str(t)[6:]}" for d, t in AUTOCAST_CASES])
def test_autocast_close_to_float32(device, dtype):
    """Loss and every gradient under autocast (bf16 / fp16) stay near the float32 ones."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    dec = make_decoder(dtype=torch.float32).to(device)
    a, y, targets, lengths = (t.to(device) for t in make_batch(dtype=torch.float32))
    ref = caption_loss(dec(a, y, lengths), targets, lengths)["loss"]
    ref.backward()
    ref_grads = {n: p.grad.clone() for n, p in dec.named_parameters() if p.grad is not None}
    dec.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=dtype):
        out = dec(a, y, lengths)
        loss = caption_loss(out, targets, lengths)["loss"]
        hard = dec(a, y, lengths, mode="hard-sample",
                   generator=torch.Generator(device).manual_seed(0))
    assert out.alpha.dtype == torch.float32 and out.logits.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(hard.log_p_s).all()
    torch.testing.assert_close(loss.float(), ref, rtol=2e-2, atol=2e-2)
    loss.backward()
    for name, g in ref_grads.items():
        if name == "attention.w_att.bias":  # softmax ignores a shift of e: dL/db = 0, up to rounding
            assert float(dec.get_parameter(name).grad.abs().max()) < 1e-3
            continue
        got = dec.get_parameter(name).grad
        assert got is not None and got.dtype == torch.float32, name
        # relative to the gradient's size: low precision rounds each of many small products
        err = float((got - g).norm() / g.norm().clamp(min=1e-12))
        assert err < 5e-2, f"{name}: relative gradient error {err:.3g} under {dtype}"


def test_float16_features_are_accepted(dec):
    a, y, _, lengths = make_batch()
    out16 = dec(a.half(), y, lengths)
    out = dec(a.half().double(), y, lengths)
    torch.testing.assert_close(out16.logits, out.logits)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda d, a, y, n: d(a[..., :-1], y, n), "feature_dim"),
        (lambda d, a, y, n: d(a, y, n, mode="stochastic"), "unknown attention mode"),
        (lambda d, a, y, n: d(a, y, n + 5), "lengths"),
        (lambda d, a, y, n: d(a, y, n, mode="hard-forced"), "hard-forced"),
        (lambda d, a, y, n: d(a, y, n, mix=torch.ones(3, dtype=torch.bool)), "mix"),
        (lambda d, a, y, n: d(a, y.float(), n), "captions_in"),
    ],
)
def test_bad_inputs_raise_clear_errors(dec, call, match):
    a, y, _, lengths = make_batch()
    with pytest.raises(ValueError, match=match):
        call(dec, a, y, lengths)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="attention"):
        DecoderConfig(vocab_size=5, feature_dim=3, attention="stochastic")
    with pytest.raises(ValueError, match="dropout"):
        DecoderConfig(vocab_size=5, feature_dim=3, dropout=1.0)


class TinyEncoder(nn.Module):
    """A 2x2-stride conv: images (B, 3, 4, 4) -> a (B, L=4, D)."""

    feature_dim, num_locations = D, 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, D, kernel_size=2, stride=2)

    def forward(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)


def test_captioner_shifts_captions_and_runs_the_encoder(dec):
    torch.manual_seed(4)
    enc = TinyEncoder().double()
    model = Captioner(enc, dec)
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    captions = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 10, 2, 0]])
    lengths = torch.tensor([5, 3, 4])
    out = model(x, captions, lengths)
    y_in, targets, steps = teacher_forcing(captions, lengths)
    assert torch.equal(steps, lengths - 1) and torch.equal(targets, captions[:, 1:])
    ref = dec(enc(x), y_in, steps)
    torch.testing.assert_close(out.logits, ref.logits)
    # features-only model reads a directly
    feats = Captioner(None, dec)(enc(x), captions, lengths)
    torch.testing.assert_close(feats.logits, ref.logits)
    assert masked_nll(out.logits, targets, steps) > 0


def test_build_model_features_only_and_errors():
    model = build_model(None, K, decoder_kwargs=dict(feature_dim=D, embed_dim=M, hidden_dim=N_HID,
                                                     attn_dim=A))
    assert model.encoder is None and model.decoder.cfg.feature_dim == D
    with pytest.raises(ValueError, match="feature_dim"):
        build_model(None, K)
    with pytest.raises(ValueError, match="cached features"):
        model.encode(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="feature_dim"):
        Captioner(TinyEncoder(), AttentionDecoder(DecoderConfig(vocab_size=K, feature_dim=D + 1)))
