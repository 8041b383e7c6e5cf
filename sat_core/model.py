"""The whole captioner: an optional CNN encoder (Sec. 3.1.1) followed by the attention decoder.

With an encoder, ``x`` is a batch of images (B, 3, H, W); without one (training from the feature
cache), ``x`` already holds the annotation vectors a (B, L, D).

``Captioner.forward`` takes a collated batch as it comes (``CaptionBatch.captions`` with
``<start> ... <end>`` and ``CaptionBatch.lengths`` = caption lengths T_i) and does the shift of
teacher forcing itself; :func:`teacher_forcing` gives the matching targets for the loss::

    out = model(batch.images, batch.captions, batch.lengths, mode=model.decoder.cfg.train_mode)
    _, targets, steps = teacher_forcing(batch.captions, batch.lengths)
    parts = caption_loss(out, targets, steps, alpha_c=1.0)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sat_core.decoder import AttentionDecoder, DecoderConfig, DecoderOutput


def teacher_forcing(captions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Split padded captions (B, T_max) with lengths T_i into (captions_in, targets, steps).

    captions_in = captions[:, :-1] (y_0 = <start>, ...), targets = captions[:, 1:], and
    steps = lengths - 1 is the number of real decode steps of each caption.
    """
    if captions.dim() != 2 or lengths.shape != captions.shape[:1]:
        raise ValueError(
            f"expected captions (B, T_max) and lengths (B,), got {tuple(captions.shape)} and "
            f"{tuple(lengths.shape)}"
        )
    if captions.shape[0] and int(lengths.min()) < 2:
        raise ValueError(
            "every caption needs at least <start> and <end> (length >= 2); got a length of "
            f"{int(lengths.min())}: lengths must be CaptionBatch.lengths (tokens, not decode steps)"
        )
    return captions[:, :-1], captions[:, 1:], lengths - 1


class Captioner(nn.Module):
    """encoder (images -> a) + :class:`AttentionDecoder`; ``encoder=None`` reads features."""

    def __init__(self, encoder: nn.Module | None, decoder: AttentionDecoder) -> None:
        super().__init__()
        if encoder is not None:
            D = getattr(encoder, "feature_dim", None)
            if D is not None and D != decoder.cfg.feature_dim:
                raise ValueError(
                    f"encoder produces D={D} features but the decoder expects "
                    f"feature_dim={decoder.cfg.feature_dim}; build both with the same D"
                )
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> annotation vectors a (B, L, D); features pass through."""
        if self.encoder is None:
            if x.dim() != 3:
                raise ValueError(
                    f"this Captioner has no encoder and reads cached features (B, L, D), got a "
                    f"tensor of shape {tuple(x.shape)}; build it with an encoder to feed images"
                )
            return x
        if x.dim() != 4:
            raise ValueError(f"expected images (B, 3, H, W), got shape {tuple(x.shape)}")
        return self.encoder(x)

    def forward(
        self,
        x: Tensor,
        captions: Tensor,
        lengths: Tensor,
        mode: str = "soft",
        s: Tensor | None = None,
        mix: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput:
        """Teacher-forced pass over a batch; returns the decoder's output over T_max - 1 steps.

        ``captions``/``lengths`` are ``CaptionBatch.captions``/``.lengths`` (with <start> and
        <end>); ``s`` (for "hard-forced") is (B, T_max - 1).
        """
        captions_in, _, steps = teacher_forcing(captions, lengths)
        a = self.encode(x)
        return self.decoder(a, captions_in, steps, mode=mode, s=s, mix=mix, generator=generator)


def build_model(
    encoder_name: str | None,
    vocab_size: int,
    *,
    encoder_kwargs: dict[str, Any] | None = None,
    decoder_kwargs: dict[str, Any] | None = None,
) -> Captioner:
    """Build a :class:`Captioner`.

    ``encoder_name`` goes to ``sat_core.encoder.build_encoder`` (e.g. "vgg19", "resnet101",
    "small") with ``encoder_kwargs``; the decoder's feature_dim D is taken from the encoder.
    ``encoder_name=None`` builds a features-only model: then ``decoder_kwargs`` must give
    ``feature_dim``. ``decoder_kwargs`` are the other :class:`DecoderConfig` fields.
    """
    decoder_kwargs = dict(decoder_kwargs or {})
    encoder = None
    if encoder_name is not None:
        from sat_core.encoder import build_encoder  # lazy: torchvision only when needed

        encoder = build_encoder(encoder_name, **(encoder_kwargs or {}))
        D = int(encoder.feature_dim)
        if decoder_kwargs.setdefault("feature_dim", D) != D:
            raise ValueError(
                f"decoder_kwargs feature_dim={decoder_kwargs['feature_dim']} contradicts encoder "
                f"{encoder_name!r} (D={D}); drop feature_dim from decoder_kwargs"
            )
    elif "feature_dim" not in decoder_kwargs:
        raise ValueError(
            "build_model(None, ...) builds a features-only model: pass "
            "decoder_kwargs={'feature_dim': D} with the D of your cached features"
        )
    elif encoder_kwargs:
        raise ValueError("encoder_kwargs were given but encoder_name is None")
    cfg = DecoderConfig(vocab_size=vocab_size, **decoder_kwargs)
    return Captioner(encoder, AttentionDecoder(cfg))
