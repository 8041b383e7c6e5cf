"""The speed seam: where the decoder's speed comes from, kept out of the equation modules.

``attention.py`` and ``decoder.py`` hold the maths of Xu et al. (2015) and the structural speed
choices that are part of the lesson (W_a a projected once per image, T_y applied to all steps in
one matmul, the deep output on all steps at once). Everything else that makes a step faster
without changing what it computes lives here, behind these calls:

* :func:`attention_scores` (guarded by :func:`applies`): Eq. (4), e_ti = w_att^T tanh(a_proj_i +
  U_a h_{t-1}) + c, for :meth:`sat_core.attention.SoftAttention.scores`, on the CPU in
  float32/float64 without autocast. Elsewhere (GPU, autocast) ``scores`` runs its plain formula.
* :func:`stepwise`: the per-step linear maps T_hz and U_a for the teacher-forced loop of
  :meth:`sat_core.decoder.AttentionDecoder.forward`, when their weight gradients are needed.
* :func:`sample_categorical`: Eq. (8)'s draw s_t ~ Multinoulli_L(alpha_t) for
  :func:`sat_core.attention.sample_locations` on the CPU (same distribution, other random numbers
  than ``torch.multinomial``).

Outside the equation modules: :func:`channels_last` (the small CNN's pretraining),
:func:`adam_options` (``sat_core.train.make_optimizer``) and :func:`compile_cell` (``train
--compile``).

They compute the same values (the sampler: the same distribution) as the plain code
(tests/test_attention.py, tests/test_decoder.py, tests/test_pretrain.py and tests/test_train.py
check values and gradients against it). The tricks, why they help, and what
they measured (2-core EPYC, 2 torch threads unless said otherwise):

1. **tanh through sigmoid** (:class:`_CpuScores`, :func:`_chunked_scores`). The (B, L, A) block
   of pre-activations a_proj + U_a h_{t-1} is the decoder's largest tensor (32 x 196 x 512
   floats are 12.8 MB, one block per step), and on the CPU each pass over it costs more than its
   arithmetic. With tanh(x) = 2 sigmoid(2x) - 1 the forward is one add, one in-place sigmoid and
   one product with w_att; PyTorch's CPU sigmoid is 3-5x faster than its tanh (2.0 vs 7.1 ms on
   one such block). With d tanh(x)/dx = 4 s (1 - s) the hand-written backward needs only the
   saved s and never builds the outer product g_e w^T of ``nn.Linear``'s backward: eight passes
   over the block per training step instead of eleven.
2. **batched matmuls instead of matrix-vector products** (:func:`_dot_rows`,
   :func:`_weighted_rows`). MKL's matrix-vector kernel is slow with two threads: s w takes
   1.2-1.5 ms with ``torch.mv`` on a 32 x 196 x 512 block against 0.3-0.6 ms as B products
   (1 x A)(A x L) (0.4 ms with one thread); s^T g takes 0.8-1.3 ms against 0.2-0.3 ms.
3. **chunked scores when decoding** (:func:`_chunked_scores`, :data:`CHUNK_BYTES`). Beam search's
   160 x 196 x 512 block (32 images x 5 beams) is 64 MB: glibc serves an allocation that large
   with a fresh mmap every step, and touching its pages for the first time costs more than the
   arithmetic (40 ms for one such add, 8 ms into a reused buffer). Blocks of a few MB are
   recycled by malloc, so the rows go in chunks of at most 8 MB, whole images at a time, all
   written into ONE block allocated per call (a fresh 8 MB block per chunk is still an mmap on
   glibc, whose threshold stops just below it: on a 2-core Xeon beam search at k = 5 took
   0.57-0.61 s instead of 0.62-0.67 s). An image's a_proj (L, A) is read once and broadcast
   against its k beams' U_a h (k, 1, A), never copied per beam.
4. **deferred weight gradients** (:func:`stepwise`, :class:`_StepwiseLinear`). Plain autograd
   computes dL/dW = g_t^T x_t at each of the T steps of the loop (thin, memory-bound matmuls)
   and adds each into W.grad. Here each step's backward returns only dL/dx_t and records g_t;
   one backward that autograd runs after all the steps computes sum_t g_t^T x_t = G^T X in ONE
   matmul (what cuDNN's RNNs do). Same gradients up to the order of the sums; on every device.
5. **GEMM orientation** (:func:`_thin_matmul`). x W^T for a thin x (B rows) is computed on the
   CPU as (W x^T)^T: MKL's GEMM runs the tall orientation (4n x B) faster than the flat one
   (B x 4n), about 1.4x for T_hz at our paper-scale sizes (B=32, n=1024, D=512: 6.8 instead of
   10.9 ms forward, 6.7 instead of 9.8 ms backward, measured with
   benchmarks/bench_train_step.py's profile). The backward's g_t W is (W^T g_t^T)^T with W^T
   copied ONCE per sequence into a contiguous matrix (:meth:`_Tape.transposed`): on a 2-core
   Xeon with AMX the tall product from a transposed view of W took 3.3 ms, from the contiguous
   copy 1.5 ms (flat: 1.7 ms); the whole training step went from 0.44 to 0.41 s.

6. **channels-last convolutions** (:func:`channels_last`). oneDNN's CPU convolutions run faster on
   NHWC tensors than on PyTorch's default NCHW: a pretraining step of the small CNN
   (:mod:`sat_core.pretrain`, 64 images of 64 px, 2 threads) takes 0.09-0.11 s instead of
   0.14-0.17 s. Same convolutions, summed in another order.

7. **inverse-CDF sampling** (:func:`sample_categorical`). ``torch.multinomial`` draws one
   location per row in 100-170 us on a (32-64) x 64 block of attention weights on the CPU; one
   uniform number per row and a count over the cumulative sums take 22-28 us. Hard attention
   draws at every step of every caption.
8. **fused Adam** (:func:`adam_options`). ``torch.optim.Adam`` loops over the parameters one by
   one on the CPU unless told otherwise; its fused kernel updates them all in one call (about
   2 ms of a Shapes training step of 30-55 ms).

9. **a compiled step on a GPU** (:func:`compile_cell`, ``train --compile``). At our sizes a
   training step on a GPU is bound by launching its small kernels, not by arithmetic: on an
   NVIDIA H200 (B=32, T=20, paper-scale sizes) the GPU computed for 5-6 ms of a 21-32 ms
   step. torch.compile fuses the step's elementwise work into fewer kernels: 1552 captions/s
   against 1017-1255 eager (bench_train_step.py --compile). Compiling the whole teacher-forced
   pass instead (before this seam) unrolled the loop, compiled again for each t and each caption
   length, hit torch's recompile limit and ran at 863 captions/s. On the CPU the compiled step
   is slower than tricks 1-5 (0.71 against 0.53 s forward and backward on a 2-core Xeon), so
   ``train`` ignores ``--compile`` there.

``python benchmarks/bench_train_step.py`` measures the whole training step (``--amp``,
``--compile`` as in ``train``).
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

# ------------------------------------------------------------------------------------ the seam


def applies(a_proj: Tensor, u: Tensor) -> bool:
    """Whether :func:`attention_scores` applies: CPU, no autocast, float32/float64 throughout,
    and not inside a step that torch.compile traces (:func:`compile_cell`)."""
    return (a_proj.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
            and a_proj.dtype == u.dtype and a_proj.dtype in (torch.float32, torch.float64)
            and not torch.compiler.is_compiling())


def attention_scores(a_proj: Tensor, u: Tensor, w_att: nn.Linear) -> Tensor:
    """Eq. (4), e = w_att^T tanh(a_proj + u) + c, (B, L, A) + (B, k, 1, A) -> (B*k, L), fast on
    the CPU (k rows of u per image: 1, or beam search's beams, which share their image's a_proj).

    With autograd (training): :class:`_CpuScores`; without (decoding): :func:`_chunked_scores`.
    Call it only where :func:`applies` holds.
    """
    if not torch.is_grad_enabled():
        return _chunked_scores(a_proj, u, w_att)
    B, k, _, A = u.shape
    if k > 1:  # never in training; the per-beam copy autograd would need anyway
        a_proj = a_proj.unsqueeze(1).expand(B, k, *a_proj.shape[1:]).reshape(B * k, -1, A)
    return _CpuScores.apply(a_proj, u.view(B * k, 1, A), w_att.weight, w_att.bias)


def stepwise(linear: nn.Linear) -> Callable[[Tensor], Tensor]:
    """The map x -> W x of a bias-free ``linear`` for use at every step of a loop.

    Returns ``linear`` itself unless its weight gradient will be computed (grad mode on, the
    weight trainable); then a :class:`_StepwiseLinear`, which computes the same products and sums
    the weight gradient over all steps in one matmul. Make a fresh one for each sequence.
    """
    if linear.bias is not None or not (torch.is_grad_enabled() and linear.weight.requires_grad):
        return linear
    if linear in _COMPILED_CELL_LAYERS:  # torch.compile traces the step: plain layers there
        return linear
    return _StepwiseLinear(linear)


def compile_cell(decoder: nn.Module, **options: Any) -> None:
    """torch.compile one step of ``decoder`` (attention and LSTM, Eq. (1)-(6)) for training
    (trick 9); what ``train --compile`` does. ``options`` go to ``torch.compile``.

    The step, not the whole teacher-forced pass: the step's shapes are the same at every t and
    for every caption length, so it compiles once (the whole pass would compile once per length
    and unroll its loop). Inside it the plain formulas run (no tricks 1-5): the compiler fuses
    Eq. (4)'s elementwise block and the LSTM's gates by itself. Decoding (no autograd) keeps the
    eager step. Same values up to the order of float sums.
    """
    if getattr(decoder._recur, "compiled_cell", False):
        return  # compiled already
    eager = type(decoder)._recur
    compiled = torch.compile(eager, **options)

    def recur(self: nn.Module, x_t: Tensor, state: tuple[Tensor, Tensor], ann: Any, mode: str,
              s: Tensor | None = None, mix: Tensor | None = None,
              generator: torch.Generator | None = None, T_hz: Any = None, U_a: Any = None) -> Any:
        if not torch.is_grad_enabled():
            return eager(self, x_t, state, ann, mode, s, mix, generator, T_hz, U_a)
        # x_t: a column of forward's (B, T, 4n) T_y E y, whose strides depend on T: contiguous,
        # one graph serves every length. T_hz and U_a: the layers themselves inside the graph.
        return compiled(self, x_t.contiguous(), state, ann, mode, s, mix, generator)

    recur.compiled_cell = True  # type: ignore[attr-defined]
    # bound to this decoder: copy.deepcopy rebinds it to the copy (a plain closure would not)
    decoder._recur = types.MethodType(recur, decoder)  # type: ignore[method-assign]
    _COMPILED_CELL_LAYERS.update((decoder.T_hz, decoder.attention.U_a))


_COMPILED_CELL_LAYERS: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # see compile_cell


def channels_last(images: Tensor, *modules: nn.Module) -> Tensor:
    """Put ``modules``' 4-d weights and the (B, C, H, W) ``images`` in the channels-last layout
    (trick 6); returns the images. Same values; ``module.to(memory_format=
    torch.contiguous_format)`` undoes it."""
    for module in modules:
        module.to(memory_format=torch.channels_last)
    return images.contiguous(memory_format=torch.channels_last)


def sample_categorical(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of the categorical distributions ``p`` (B, L) -> (B,) long (trick 7).

    Inverse CDF: with u uniform on [0, total) and c the cumulative sums of a row, the draw is the
    number of c_j <= u, i.e. the i with c_{i-1} <= u < c_i: probability p_i, never a p_i = 0.
    """
    c = p.cumsum(-1)
    u = torch.rand(p.shape[:-1], generator=generator, device=p.device, dtype=p.dtype)
    u = (u * c[..., -1]).unsqueeze(-1)
    return (c <= u).sum(-1).clamp_(max=p.shape[-1] - 1)


def adam_options(device: torch.device) -> dict[str, bool]:
    """Extra keyword arguments of ``torch.optim.Adam`` on ``device``: the fused update (trick 8)
    where PyTorch has one (CPU and CUDA)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {}


# ------------------------------------------------------------------- Eq. (4) on the CPU (1-3)


class _CpuScores(torch.autograd.Function):
    """Eq. (4) for training on the CPU: e = w^T tanh(a_proj + u) + c with a hand-written backward.

    Forward: s = sigmoid(2 (a_proj + u)), e = 2 w^T s - sum(w) + c. Backward from the saved s:
    dL/dx = 4 w * g_e s (1 - s) (one fused ``sigmoid_backward`` and one scaling), dL/du is its
    sum over locations, dL/dw = 2 s^T g_e - sum(g_e) and dL/dc = sum(g_e) (tricks 1 and 2 of the
    module docstring).

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
    """s w: (B, L, A), (A,) -> (B, L), as B products (1 x A)(A x L), not ``torch.mv`` (trick 2)."""
    B, L, A = s.shape
    e = torch.bmm(w.view(1, 1, A).expand(B, 1, A), s.transpose(1, 2),
                  out=None if out is None else out.view(B, 1, L))
    return e.view(B, L)


def _weighted_rows(s: Tensor, g: Tensor) -> Tensor:
    """sum_{b,l} g_bl s_bl: (B, L, A), (B, L) -> (A,), as B products (1 x L)(L x A) and a sum
    over B, not ``torch.mv`` of s^T (trick 2)."""
    B, L, A = s.shape
    return torch.bmm(g.reshape(B, 1, L), s).sum(0).view(A)


def _sum_to(grad: Tensor, shape: torch.Size) -> Tensor:
    """Undo broadcasting: sum grad over the dims where ``shape`` has size 1."""
    dims = [i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1]
    return grad.sum(dims, keepdim=True) if dims else grad


CHUNK_BYTES = 8 * 2**20  # the largest pre-activation block _chunked_scores allocates (trick 3)


def _chunked_scores(a_proj: Tensor, u: Tensor, w_att: nn.Linear) -> Tensor:
    """Eq. (4) for decoding on the CPU (no autograd): the sigmoid form of :class:`_CpuScores`,
    images in chunks of at most :data:`CHUNK_BYTES` of pre-activations (tricks 1-3), each image's
    a_proj read once for its k beams. a_proj (B, L, A), u (B, k, 1, A) -> (B*k, L). No
    approximation."""
    B, L, A = a_proj.shape
    k = u.shape[1]
    images = max(1, CHUNK_BYTES // max(1, k * L * A * a_proj.element_size()))
    w = w_att.weight.reshape(A)
    e = torch.empty(B * k, L, dtype=a_proj.dtype, device=a_proj.device)
    block = a_proj.new_empty(min(images, B), k, L, A)  # one block, reused by every chunk
    u2 = u * 2
    for i in range(0, B, images):
        x = block[: min(images, B - i)]
        torch.add(u2[i:i + images], a_proj[i:i + images].unsqueeze(1), alpha=2, out=x).sigmoid_()
        _dot_rows(x.view(-1, L, A), w, out=e[i * k:(i + images) * k])
    return e.mul_(2).add_(w_att.bias - w.sum())


# ------------------------------------------------------- deferred weight gradients (tricks 4-5)


class _Tape:
    """What :class:`_StepwiseLinear` records: inputs x_t (forward) and gradients g_t (backward)."""

    def __init__(self) -> None:
        self.inputs: dict[int, Tensor] = {}
        self.grads: dict[int, Tensor] = {}
        self._weight_t: Tensor | None = None

    def transposed(self, weight: Tensor, dtype: torch.dtype) -> Tensor:
        """W^T (in, out) for every step's backward x_t-gradient g_t W: laid out as its own
        contiguous matrix, made once per sequence (trick 5)."""
        if self._weight_t is None or self._weight_t.dtype != dtype:
            self._weight_t = weight.detach().to(dtype).t().contiguous()
        return self._weight_t


class _WeightAnchor(torch.autograd.Function):
    """Identity on a weight W. Autograd runs its backward only after the backward of EVERY step
    that consumed it, so that is where sum_t g_t^T x_t is computed, as one matmul."""

    @staticmethod
    def forward(ctx, weight: Tensor, tape: _Tape) -> Tensor:
        ctx.tape, ctx.dtype = tape, weight.dtype
        ctx.set_materialize_grads(False)  # the steps send no gradient here; don't build zeros
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, _unused: Tensor | None) -> tuple[Tensor | None, None]:
        tape = ctx.tape
        if not tape.grads:
            return None, None
        steps = sorted(tape.grads)
        G = torch.cat([tape.grads[t] for t in steps])  # (steps * B, out)
        X = torch.cat([tape.inputs[t] for t in steps]).to(G.dtype)  # (steps * B, in)
        tape.grads.clear()
        if G.dtype == torch.float16:  # a sum over all T steps (loss-scaled): fp16 could overflow
            G, X = G.float(), X.float()
        return G.t().mm(X).to(ctx.dtype), None


class _TapedMatmul(torch.autograd.Function):
    """y_t = x_t W^T whose backward returns dL/dx_t only and records g_t = dL/dy_t."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, tape: _Tape, t: int) -> Tensor:
        y = _thin_matmul(x, weight.t())  # under autocast: in the low precision dtype
        ctx.save_for_backward(weight)
        ctx.tape, ctx.t, ctx.x_dtype = tape, t, x.dtype
        tape.inputs[t] = x.detach()
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None, None, None]:
        (weight,) = ctx.saved_tensors
        ctx.tape.grads[ctx.t] = g
        w = ctx.tape.transposed(weight, g.dtype).t()  # W (out, in), a view of a contiguous W^T
        return _thin_matmul(g, w).to(ctx.x_dtype), None, None, None


def _thin_matmul(x: Tensor, w: Tensor) -> Tensor:
    """x @ w for a thin x (B rows, B small) and a large w (in, out); on the CPU as (w^T x^T)^T
    (trick 5), fastest when w^T is a contiguous matrix (w a transposed view of one)."""
    if x.device.type == "cpu":
        return torch.mm(w.t(), x.t()).t()
    return torch.mm(x, w)


class _StepwiseLinear:
    """A bias-free linear layer used at every step of a loop, with its weight gradient deferred.

    Each step's backward (:class:`_TapedMatmul`) only returns dL/dx_t and records g_t; the weight
    enters the loop through :class:`_WeightAnchor`, whose backward autograd runs last and
    computes sum_t g_t^T x_t = G^T X in ONE matmul (trick 4). Build it with :func:`stepwise`.
    """

    def __init__(self, linear: nn.Linear) -> None:
        self.tape = _Tape()
        self.weight = _WeightAnchor.apply(linear.weight, self.tape)
        self.t = 0

    def __call__(self, x: Tensor) -> Tensor:
        self.t += 1
        return _TapedMatmul.apply(x, self.weight, self.tape, self.t)
