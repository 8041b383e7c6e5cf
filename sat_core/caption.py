"""Caption images and draw where the model looked: ``python -m sat_core.caption``.

    python -m sat_core.caption --checkpoint runs/shapes-soft/best.pt a.png b.jpg --out-dir out

For every image: resize it as in training, encode it into annotation vectors a_i, decode with the
batched beam search (Sec. 5.2), print the caption, and write ``<out-dir>/<name>_attention.png``:
one panel per word with its attention weights alpha_t (Eq. (5)) upsampled to the image and
smoothed, as in the paper's Fig. 2, 3 and 5 (:func:`sat_core.viz.attention_overlay`).

In a notebook: ``result = caption_image(model, vocab, "a.png", image_size=64)``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from sat_core.checkpoint import CheckpointError
from sat_core.data.karpathy import load_image_file, read_image
from sat_core.data.records import ImageLoadError, denormalize_image
from sat_core.decoding import Hypothesis, decode
from sat_core.device import pick_device
from sat_core.errors import ArgumentParser, command
from sat_core.model import Captioner
from sat_core.out_dir import check_writable_dir
from sat_core.text import Vocabulary


@dataclass
class CaptionResult:
    """The caption of one image, with everything needed to draw its attention.

    ``words`` is the caption (no specials); ``panel_words`` adds ``<end>`` when the caption
    finished, one per row of ``hypothesis.alphas``; ``image`` is what the model saw, float
    ``(H, W, 3)`` in [0, 1]; ``grid`` = (h, w) with h * w = L locations.
    """

    source: str
    words: list[str]
    hypothesis: Hypothesis
    image: np.ndarray
    grid: tuple[int, int]

    @property
    def caption(self) -> str:
        return " ".join(self.words)

    @property
    def panel_words(self) -> list[str]:
        return self.words + ["<end>"] if self.hypothesis.finished else list(self.words)

    def figure(self, smooth: bool = True) -> Figure:
        """The per-word attention overlay (:func:`sat_core.viz.attention_overlay`)."""
        from sat_core.viz import attention_overlay

        fig = attention_overlay(self.image, self.hypothesis.alphas, self.panel_words, self.grid,
                                smooth=smooth, betas=self.hypothesis.betas)
        fig.suptitle(self.caption or "(empty caption)", fontsize=10)
        return fig


def attention_grid(
    model: Captioner, height: int, width: int, num_locations: int
) -> tuple[int, int]:
    """(h, w) of the annotation grid: the encoder's, else a square of ``num_locations``."""
    encoder = model.encoder
    if encoder is not None and hasattr(encoder, "grid_for"):
        grid = tuple(encoder.grid_for(height, width))
    else:
        side = math.isqrt(num_locations)
        grid = (side, num_locations // max(side, 1))
    if grid[0] * grid[1] != num_locations:
        raise ValueError(f"the encoder's grid {grid} does not match L={num_locations} locations")
    return grid  # type: ignore[return-value]


@torch.no_grad()
def caption_image(
    model: Captioner,
    vocab: Vocabulary,
    image: str | Path | torch.Tensor,
    *,
    image_size: int,
    resize: int | None = None,
    beam_size: int = 3,
    max_len: int = 20,
    length_norm: float = 0.0,
    mode: str = "soft",
) -> CaptionResult:
    """Caption one image (a file, or a normalised ``(3, H, W)`` tensor such as
    ``split.load_image(record)``) with beam search; keep alpha_t of every word.

    A missing or unreadable file raises :class:`~sat_core.data.records.ImageLoadError` naming it.
    """
    if isinstance(image, torch.Tensor):
        x, source = image, "<tensor>"
        if x.dim() != 3 or x.shape[0] != 3:
            raise ValueError(f"caption_image: expected a (3, H, W) image tensor, got "
                             f"{tuple(x.shape)}")
    else:
        x, source = load_image_file(image, image_size, resize), str(image)
    device = next(model.parameters()).device
    model.eval()
    a = model.encode(x[None].to(device))  # (1, L, D)
    hyp = decode(model.decoder, a, vocab, beam_size=beam_size, max_len=max_len, mode=mode,
                 length_norm=length_norm)[0]
    grid = attention_grid(model, x.shape[1], x.shape[2], a.shape[1])
    words = [vocab.itos[t] for t in hyp.tokens]  # one per row of alphas (<unk> included)
    return CaptionResult(source, words, hyp, denormalize_image(x.cpu()), grid)


def check_images(paths: list[str | Path]) -> None:
    """Raise :class:`ImageLoadError` naming every path that is missing or not a readable image.

    Each file is read as the model will read it (:func:`~sat_core.data.karpathy.read_image`: any
    bit depth, EXIF orientation applied), so what passes here also captions.
    """
    bad = []
    for p in paths:
        if not Path(p).is_file():
            bad.append(f"{p} (file not found)")
            continue
        try:
            read_image(p)
        except ImageLoadError as e:
            bad.append(f"{p} ({e.reason})")
    if bad:
        raise ImageLoadError(", ".join(bad), "", "fix or leave out these files and run again")


def _png_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem or "image"
    name, k = f"{stem}_attention.png", 1
    while name in used:
        k += 1
        name = f"{stem}_{k}_attention.png"
    used.add(name)
    return name


def build_parser() -> argparse.ArgumentParser:
    """The command's options; usage errors are one ``error:`` line (:mod:`sat_core.errors`)."""
    p = ArgumentParser(
        prog="python -m sat_core.caption",
        description="Caption images with a trained checkpoint and draw the attention map of "
        "every word over the image (one PNG per image). Set SAT_DEBUG=1 to see the traceback "
        "of an error.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True, metavar="CKPT",
                   help="a checkpoint of sat_core.train (e.g. runs/shapes-soft/best.pt)")
    p.add_argument("--beam-size", type=int, default=3, help="beam width k (default 3)")
    p.add_argument("--max-len", type=int, default=None,
                   help="longest caption in words (default: the checkpoint's val_max_len)")
    p.add_argument("--length-norm", type=float, default=0.0,
                   help="rank beams by log p / length^x (default 0)")
    p.add_argument("--mode", default=None, choices=("soft", "hard-expect", "hard-argmax"),
                   help="attention at decode time (default: the checkpoint's)")
    p.add_argument("--out-dir", default="captions", help="where the PNGs go (default captions/)")
    p.add_argument("--no-smooth", action="store_true",
                   help="paint each grid cell flat instead of the smoothed upsampling")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | ... (default auto)")
    return p


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.beam_size < 1:
        p.error(f"--beam-size must be >= 1, got {args.beam_size}")
    if args.max_len is not None and args.max_len < 1:
        p.error(f"--max-len must be >= 1, got {args.max_len}")
    if not (math.isfinite(args.length_norm) and args.length_norm >= 0):
        p.error(f"--length-norm must be a finite number >= 0, got {args.length_norm}")
    check_writable_dir(Path(args.out_dir))  # a file, or read-only: one line, before any work
    return args


def _device(name: str) -> torch.device:
    return pick_device(name)  # an unknown name, or CUDA absent: a DeviceError (one line)


@command(ImageLoadError, CheckpointError, OSError)
def main(argv: list[str] | None = None) -> int:
    """``python -m sat_core.caption``; a bad image, checkpoint or option is one line, status 2."""
    args = _parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # files only, no window
    import matplotlib.pyplot as plt

    from sat_core.evaluate import load_captioner

    check_images(args.images)  # every bad file named at once, before any work
    model, vocab, cfg = load_captioner(args.checkpoint, _device(args.device))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for path in args.images:
        result = caption_image(model, vocab, path, image_size=cfg.image_size,
                               resize=cfg.resize or None, beam_size=args.beam_size,
                               max_len=args.max_len or cfg.val_max_len,
                               length_norm=args.length_norm, mode=args.mode or cfg.eval_mode)
        fig = result.figure(smooth=not args.no_smooth)
        png = out_dir / _png_name(path, used)
        fig.savefig(png, dpi=100)
        plt.close(fig)
        print(f"{path}: {result.caption}")
        print(f"  attention: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
