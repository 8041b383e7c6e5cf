"""Time and memory of the real recipes, estimated from sizes (chapter 10).

Counts are of the matrix products only (a multiply-add is 2 floating-point operations, FLOP):
they are where the time goes in VGG-19 and in the decoder at our paper-scale sizes; elementwise
work (tanh, sigmoid, softmax, dropout) and data movement are left out. A time computed from a
count is an **estimate**: ``flop / (peak x utilisation)``, with the device's published peak and a
fraction of it that real training reaches (a small-batch recurrent decoder uses a GPU poorly:
20-40 % is a fair range, lower when kernel launches dominate). Measure to know.

* :func:`decoder_flops`: one caption through the attention decoder of :mod:`sat_core.decoder`
  (Eq. 1-7, soft attention, gate), forward and backward, from cached features;
* :func:`vgg19_flops`: one image through VGG-19 up to conv5_4 (the encoder of the feature cache);
* :func:`feature_cache_bytes`, :func:`decoder_parameters`, :data:`PEAK_TFLOPS`,
  :func:`estimate_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PEAK_TFLOPS", "VGG19_CONV", "FlopCount", "decoder_flops", "decoder_parameters",
           "estimate_seconds", "feature_cache_bytes", "vgg19_flops"]

# Published peak throughput in TFLOP/s (dense, no sparsity): NVIDIA's T4 and A100 data sheets.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "T4": {"fp32": 8.1, "fp16": 65.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
}

# VGG-19's convolutions up to conv5_4 (torchvision's "E" configuration; "M" = 2x2 max-pooling).
# conv5_4's output, before the last pooling, is the paper's 14 x 14 x 512 annotation grid.
VGG19_CONV: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                     512, 512, 512, 512, "M", 512, 512, 512, 512)


@dataclass(frozen=True)
class FlopCount:
    """Forward and backward FLOP of one item, with the forward multiply-adds of each term."""

    forward: int
    backward: int
    terms: dict[str, int] = field(default_factory=dict)  # name -> forward multiply-adds

    @property
    def total(self) -> int:
        """Forward plus backward: one training step's share for this item."""
        return self.forward + self.backward


def decoder_flops(*, L: int, D: int, m: int, n: int, attn: int, K: int, steps: int,
                  gate: bool = True) -> FlopCount:
    """FLOP of one caption of ``steps`` decode steps (words + ``<end>``) in training (soft).

    Once per caption (each caption is its own item, its image's features included):
    ``W_a a`` (L x D x attn multiply-adds, Eq. 4's projection, done once: chapter 4) and the
    initial state ``f_init_h``, ``f_init_c`` (2 x D x n). Per step: ``U_a h`` (n x attn), the scores
    ``w_att^T tanh(.)`` (L x attn), the context ``sum_i alpha_i a_i`` (L x D), the gate (n), the
    LSTM's ``T_{D+m+n,n}`` (split as m x 4n for the embedding and (n + D) x 4n for ``h`` and
    ``z_hat``, Eq. 1-3) and the deep output (n x m + D x m + m x K, Eq. 7).

    Backward: each product ``Y = X W`` costs two more products of its size (the gradients of ``W``
    and of ``X``), except where ``X`` is the cached features, which need no gradient: ``W_a a``,
    the context's ``a`` and the mean of ``a`` in the initial state cost one.
    """
    sizes = dict(L=L, D=D, m=m, n=n, attn=attn, K=K, steps=steps)
    if any(v < 1 for v in sizes.values()):
        raise ValueError(f"decoder_flops: every size must be >= 1, got {sizes}")
    once = {"W_a a": L * D * attn, "f_init": 2 * D * n}
    per_step = {"U_a h": n * attn, "scores": L * attn, "context": L * D, "gate": n if gate else 0,
                "T_y (embedding)": m * 4 * n, "T_hz (h, z_hat)": (n + D) * 4 * n,
                "L_h, L_z": n * m + D * m, "L_o (K words)": m * K}
    features_input = {"W_a a", "f_init", "context"}  # products whose X is the constant features
    terms = {**once, **{k: v * steps for k, v in per_step.items()}}
    forward = 2 * sum(terms.values())
    backward = sum(2 * (1 if k in features_input else 2) * v for k, v in terms.items())
    return FlopCount(forward=forward, backward=backward, terms=terms)


def decoder_parameters(*, D: int, m: int, n: int, attn: int, K: int, gate: bool = True) -> int:
    """Parameters of :class:`sat_core.decoder.AttentionDecoder` (biases included)."""
    attention = D * attn + attn + n * attn + attn + 1  # W_a (+b), U_a, w_att (+c)
    lstm = K * m + m * 4 * n + 4 * n + (n + D) * 4 * n  # embedding, T_y (+b), T_hz
    init = 2 * (D * n + n)
    output = n * m + D * m + m * K + K
    return attention + lstm + init + output + ((n + 1) if gate else 0)


def vgg19_flops(image_size: int = 224) -> int:
    """Forward FLOP of VGG-19 up to conv5_4 for one ``image_size`` x ``image_size`` image
    (3 x 3 convolutions with padding 1: side x side x C_in x C_out x 9 multiply-adds each)."""
    if image_size < 16 or image_size % 16:
        raise ValueError(f"vgg19_flops: image_size must be a multiple of 16, got {image_size}")
    side, c_in, macs = image_size, 3, 0
    for layer in VGG19_CONV:
        if layer == "M":
            side //= 2
        else:
            macs += side * side * c_in * int(layer) * 9
            c_in = int(layer)
    return 2 * macs


def feature_cache_bytes(n_images: int, L: int = 196, D: int = 512, bytes_per_value: int = 2) -> int:
    """Size of the float16 feature cache: ``n_images x L x D`` values of 2 bytes."""
    return n_images * L * D * bytes_per_value


def estimate_seconds(flop: float, device: str, precision: str, utilisation: float) -> float:
    """``flop / (peak x utilisation)`` on ``device`` (a key of :data:`PEAK_TFLOPS`) at
    ``precision``; an estimate, not a measurement."""
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation is a fraction of the peak in (0, 1], got {utilisation}")
    try:
        peak = PEAK_TFLOPS[device][precision]
    except KeyError:
        known = "; ".join(f"{d}: {', '.join(p)}" for d, p in PEAK_TFLOPS.items())
        raise ValueError(f"no published peak for {device} at {precision}; known: {known}") from None
    return flop / (peak * 1e12 * utilisation)
