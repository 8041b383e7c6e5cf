"""Training: ``python -m sat_core.train --preset shapes-soft`` (or under ``torchrun``).

One loop for every chapter and every dataset (Sec. 4.3 and 5 of Xu et al., 2015):

1. **data** -- the splits (:func:`~sat_core.data.datasets.load_splits`), a vocabulary built from
   the *training* captions, one item per caption, batches of captions of equal length;
2. **features** -- with a frozen encoder (the paper's setting) the annotation vectors a_i are
   computed once into a feature cache and the decoder trains from them; a fine-tuned encoder
   trains from images;
3. **steps** -- teacher forcing, the loss of :func:`~sat_core.losses.caption_loss` (word NLL +
   doubly stochastic penalty, Eq. 14; for hard attention the REINFORCE surrogate of Eq. 12 with
   the moving-average baseline and the 0.5 mixing of Sec. 4.1), gradient clipping, lr schedule;
4. **epochs** -- validation BLEU-4 (each val image decoded once, scored against all its
   references), ``log.csv``/``log.json``, ``last.pt`` and ``best.pt``, early stopping;
5. **the end** -- test-split scores of ``best.pt`` in ``test_scores.json``.

``--resume`` continues a run bit for bit: weights, optimizer, schedule, position inside the
epoch, baseline and every random-number state are in the checkpoint. Under ``torchrun`` each
process trains on its share of the batches (DistributedDataParallel); rank 0 alone validates,
writes files and shows progress (:mod:`sat_core.distributed`; what a checkpoint holds besides the
weights: :mod:`sat_core.run_state`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from sat_core import fast
from sat_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sat_core.config import (
    RUNTIME_FIELDS,
    ConfigError,
    TrainConfig,
    config_diff,
    config_from_args,
    make_config,
    preset,
)
from sat_core.data.batching import (
    CaptionBatch,
    LengthGroupedBatchSampler,
    collate_captions,
    collate_images,
)
from sat_core.data.datasets import (
    CaptionDataset,
    ImageDataset,
    build_vocabulary,
    dataset_paths,
    load_splits,
)
from sat_core.data.karpathy import KarpathyFormatError
from sat_core.data.records import ImageLoadError, Split, check_references
from sat_core.decoding import decode
from sat_core.device import seed_everything
from sat_core.distributed import Dist, setup_distributed
from sat_core.encoder import PretrainedWeightsUnavailable
from sat_core.errors import UserError, command
from sat_core.features import FeatureCacheError
from sat_core.losses import MovingAverageBaseline, attention_entropy, caption_loss
from sat_core.metrics import corpus_bleu
from sat_core.model import Captioner, build_model, teacher_forcing
from sat_core.out_dir import claim_out_dir
from sat_core.paths import shown_path
from sat_core.run_state import RunState, restore_rng_states, rng_states
from sat_core.text import Vocabulary

LOG_FIELDS = (
    "epoch", "step", "train_loss", "train_nll", "train_attention_entropy", "val_bleu1",
    "val_bleu2", "val_bleu3", "val_bleu4", "lr", "epoch_time_s", "tokens_per_s",
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------
# Data and model from a config
# ----------------------------------------------------------------------------------------------


def load_data(cfg: TrainConfig) -> tuple[dict[str, Split], Vocabulary]:
    """The train/val/test splits of ``cfg.dataset`` and the vocabulary of the training captions."""
    if cfg.dataset == "shapes":
        shapes = dict(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test,
                      seed=cfg.shapes_seed, naming_order=cfg.shapes_naming)
        splits = load_splits("shapes", image_size=cfg.image_size, shapes=shapes)
    else:
        splits = load_splits(cfg.dataset, data_root=cfg.data_root, image_size=cfg.image_size,
                             resize=cfg.resize or None)
    source = ("the Shapes world" if cfg.dataset == "shapes"
              else str(dataset_paths(cfg.dataset, cfg.data_root)[0]))
    needed = ("train", "val") + (("test",) if cfg.test_metrics != "none" else ())
    check_references(splits, needed, source)
    vocab = build_vocabulary(splits["train"], min_count=cfg.min_count, max_size=cfg.max_size)
    return splits, vocab


def encoder_weights(cfg: TrainConfig, train_split: Split | None = None) -> str | None:
    """``cfg.encoder_weights`` as :func:`~sat_core.encoder.build_encoder` wants it.

    ``shapes-regions``: the small CNN pretrained on the Shapes world's region labels
    (:mod:`sat_core.pretrain`), read from its cache or pretrained now on ``train_split`` (by
    default the config's own training split).
    """
    if cfg.encoder_weights == "none":
        return None
    if cfg.encoder_weights == "default":
        return None if cfg.encoder == "small" else "DEFAULT"
    if cfg.encoder_weights == "shapes-regions":
        from sat_core.pretrain import get_pretrained_weights, pretrained_weights_path

        path = pretrained_weights_path(features_root(cfg), channels=cfg.encoder_channels,
                                       image_size=cfg.image_size, n_train=cfg.n_train,
                                       shapes_seed=cfg.shapes_seed, seed=cfg.seed,
                                       context=cfg.encoder_context)
        if not path.is_file() and train_split is None:
            train_split = load_data(cfg)[0]["train"]
        return str(get_pretrained_weights(path, train_split, channels=cfg.encoder_channels,
                                          image_size=cfg.image_size, seed=cfg.seed,
                                          context=cfg.encoder_context,
                                          progress=cfg.progress))
    return cfg.encoder_weights


def build_captioner(cfg: TrainConfig, vocab: Vocabulary,
                    train_split: Split | None = None) -> Captioner:
    """Encoder + decoder of the sizes in ``cfg`` (m, n, attention MLP, gate; Sec. 3.1.2, 4.2.1)."""
    enc: dict[str, Any] = dict(weights=encoder_weights(cfg, train_split), fine_tune=cfg.fine_tune,
                               image_size=cfg.image_size, progress=cfg.progress)
    if cfg.encoder == "small":
        enc["channels"] = cfg.encoder_channels
        enc["context"] = cfg.encoder_context
        enc["coord_scale"] = cfg.encoder_coord_scale
    dec = dict(embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, attn_dim=cfg.attn_dim,
               dropout=cfg.dropout, gate=cfg.gate, attention=cfg.attention)
    return build_model(cfg.encoder, len(vocab), encoder_kwargs=enc, decoder_kwargs=dec)


def features_root(cfg: TrainConfig) -> Path:
    """Where feature caches live: ``cfg.features_dir`` or ``<out_dir>/../features``.

    ``abspath``, not ``resolve``: the book's stage links ``artifacts`` to the repository's folder,
    and a resolved path would print as the build machine's absolute path.
    """
    if cfg.features_dir:
        return Path(cfg.features_dir)
    return Path(os.path.abspath(cfg.out_dir)).parent / "features"


def feature_cache_key(cfg: TrainConfig, encoder: nn.Module) -> str:
    """Name of the cache of (dataset, image size, encoder weights, the small encoder's coordinate
    scale): a hash of all of them, so a cache is never reused for another dataset, image size,
    (randomly initialised) encoder, or coordinate channels."""
    h = hashlib.sha256()
    data = dict(dataset=cfg.dataset, image_size=cfg.image_size, resize=cfg.resize,
                data_root=str(Path(cfg.data_root).resolve()) if cfg.dataset != "shapes" else "")
    if cfg.dataset == "shapes":
        data.update(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.shapes_seed,
                    naming=cfg.shapes_naming)
    if cfg.encoder == "small":  # appended after the CNN, so not in its weights
        data.update(coord_scale=cfg.encoder_coord_scale)
    h.update(json.dumps(data, sort_keys=True).encode())
    for name, t in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"{cfg.dataset}-{cfg.encoder}-{cfg.image_size}px-{h.hexdigest()[:12]}"


def use_feature_cache(
    cfg: TrainConfig, encoder: nn.Module, splits: dict[str, Split], run: Dist
) -> dict[str, Split]:
    """Build (rank 0, once) or open the cache of every split; return splits that read features."""
    from sat_core.features import FeatureCache, FeatureCacheError, build_feature_cache, cached_split

    root = features_root(cfg) / feature_cache_key(cfg, encoder)
    out = {}
    for name, split in splits.items():
        path = root / name
        if run.main:
            try:
                cache = FeatureCache.open(path, expect_encoder=encoder.name)
            except FeatureCacheError:
                _say(run, f"building the {name} feature cache at {shown_path(path)}")
                # in a forked RNG: a run that builds the cache and one that finds it built must
                # draw the same dropout masks afterwards (the same weights, step for step)
                cuda = [run.device] if run.device.type == "cuda" else []
                with torch.random.fork_rng(devices=cuda):
                    cache = build_feature_cache(encoder, split, path, device=run.device,
                                                batch_size=64, progress=cfg.progress)
        run.barrier()
        if not run.main:
            cache = FeatureCache.open(path, expect_encoder=encoder.name)
        out[name] = cached_split(split, cache)
    return out


class TrainForward(nn.Module):
    """What DDP wraps: inputs (images or cached a) + captions -> DecoderOutput (teacher forcing)."""

    def __init__(self, model: Captioner) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, captions: Tensor, lengths: Tensor, mode: str,
                mix: Tensor | None, generator: torch.Generator | None) -> Any:
        captions_in, _, steps = teacher_forcing(captions, lengths)
        a = x if x.dim() == 3 else self.model.encode(x)  # cached a (B, L, D) or images
        return self.model.decoder(a, captions_in, steps, mode=mode, mix=mix, generator=generator)


# ----------------------------------------------------------------------------------------------
# Optimizer and learning-rate schedule
# ----------------------------------------------------------------------------------------------


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """Adam or RMSProp over the trainable parameters (the frozen encoder has none)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        speed = fast.adam_options(params[0].device) if params else {}  # the speed seam
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **speed)
    return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """lr(step) / lr for the per-step schedules: linear warm-up, then constant, cosine or step."""
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = cfg.warmup_steps

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "cosine":
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if cfg.lr_schedule == "step":
            return cfg.lr_decay ** (step // max(1, cfg.lr_decay_epochs * steps_per_epoch))
        return 1.0

    return factor


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    """``plateau``: ReduceLROnPlateau on val BLEU-4 (per epoch); others: LambdaLR (per step)."""
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="max", factor=cfg.lr_decay, patience=cfg.lr_decay_epochs)
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, steps_per_epoch))


# ----------------------------------------------------------------------------------------------
# Validation and test scores
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_captions(
    model: Captioner,
    split: Split,
    vocab: Vocabulary,
    *,
    device: torch.device,
    beam_size: int = 1,
    max_len: int = 20,
    mode: str = "soft",
    limit: int = 0,
    batch_size: int = 50,
) -> tuple[list[list[str]], list[list[list[str]]], list[int]]:
    """Decode every image of ``split`` once: (hypotheses, references, image indices).

    ``beam_size == 1`` is greedy decoding; ``limit > 0`` takes the first ``limit`` images.
    """
    data: Any = ImageDataset(split)
    if limit:
        data = Subset(data, range(min(limit, len(data))))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_images)
    was_training = model.training
    model.eval()
    hyps, refs, index = [], [], []
    try:
        for x, references, idx in loader:
            x = x.to(device)
            a = x if x.dim() == 3 else model.encode(x)
            out = decode(model.decoder, a, vocab, beam_size=beam_size, max_len=max_len,
                         mode=mode)
            hyps += [vocab.decode(h.tokens) for h in out]
            refs += references
            index += idx.tolist()
    finally:
        model.train(was_training)
    return hyps, refs, index


def validation_bleu(model: Captioner, split: Split, vocab: Vocabulary, cfg: TrainConfig,
                    device: torch.device) -> list[float]:
    """BLEU-1..4 of the val split with our own :func:`~sat_core.metrics.corpus_bleu`."""
    hyps, refs, _ = generate_captions(model, split, vocab, device=device,
                                      beam_size=cfg.val_beam_size, max_len=cfg.val_max_len,
                                      mode=cfg.eval_mode, limit=cfg.val_images)
    return list(corpus_bleu(hyps, refs).bleu)


def test_scores(model: Captioner, split: Split, vocab: Vocabulary, cfg: TrainConfig,
                device: torch.device) -> dict[str, Any]:
    """Test-split scores: the COCO metrics (with Java) or our BLEU, each image once."""
    from sat_core import metrics

    hyps, refs, index = generate_captions(model, split, vocab, device=device,
                                          beam_size=cfg.test_beam_size,
                                          max_len=cfg.val_max_len, mode=cfg.eval_mode)
    kind = cfg.test_metrics
    if kind == "auto":
        kind = "coco" if metrics.java_available() else "bleu"
    if kind == "coco":
        records = split.records
        raw = {i: (records[i].raw or [" ".join(r) for r in records[i].captions]) for i in index}
        generated = {i: " ".join(h) for i, h in zip(index, hyps, strict=True)}
        scores = dict(metrics.coco_scores(generated, raw))
    else:
        bleu = corpus_bleu(hyps, refs).bleu
        scores = {f"Bleu_{n}": float(b) for n, b in enumerate(bleu, 1)}
    scores = {k: float(v) for k, v in scores.items()}
    examples = [{"image_index": i, "caption": " ".join(h), "references": [" ".join(r) for r in rs]}
                for i, h, rs in list(zip(index, hyps, refs, strict=True))[:20]]
    return {"metrics": kind, "beam_size": cfg.test_beam_size, "num_images": len(hyps),
            "scores": scores, "examples": examples}


# ----------------------------------------------------------------------------------------------
# Logs
# ----------------------------------------------------------------------------------------------


def _say(run: Dist, msg: str) -> None:
    if run.main:
        tqdm.write(msg, file=sys.stderr)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_logs(out_dir: Path, cfg: TrainConfig, history: list[dict[str, Any]]) -> None:
    """``log.csv`` (one row per epoch) and ``log.json`` (config + the same rows)."""
    lines = [",".join(LOG_FIELDS)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}"
                              if isinstance(row[k], float) else str(row[k]) for k in LOG_FIELDS))
    _write_text_atomic(out_dir / "log.csv", "\n".join(lines) + "\n")
    _write_text_atomic(out_dir / "log.json",
                       json.dumps({"config": cfg.to_dict(), "history": history}, indent=1))


class StepLog:
    """``steps.csv``: step, epoch, loss, lr every ``log_every`` steps (the book's loss curves)."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        if resume_step is None or not path.exists():
            path.write_text("step,epoch,loss,nll,lr\n")
        else:  # drop the rows written after the checkpoint we resume from
            with path.open() as f:
                rows = list(csv.reader(f))
            keep = [r for r in rows[1:] if r and int(r[0]) <= resume_step]
            path.write_text("\n".join(",".join(r) for r in [rows[0], *keep]) + "\n")

    def add(self, step: int, epoch: int, loss: float, nll: float, lr: float) -> None:
        with self.path.open("a") as f:
            f.write(f"{step},{epoch},{loss:.6g},{nll:.6g},{lr:.6g}\n")


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` returns (rank 0 has the metrics; other ranks get the same paths)."""

    out_dir: Path
    status: str  # "finished" | "early-stopped" | "max-steps" | "interrupted" | "stopped" (Ctrl-C)
    epoch: int
    step: int
    best_bleu4: float | None
    best_path: Path | None
    last_path: Path
    history: list[dict[str, Any]]
    test_scores: dict[str, Any] | None = None


@dataclass
class _Data:
    """The splits, the vocabulary, and the training captions in batches of equal length."""

    splits: dict[str, Split]
    vocab: Vocabulary
    train_set: CaptionDataset
    sampler: LengthGroupedBatchSampler


@dataclass
class _Optim:
    """What updates the weights: optimizer, lr schedule, fp16 scaler, the baseline b and the
    generator of hard attention's draws (the sampled locations s~ and the 0.5 mixing coins)."""

    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    baseline: MovingAverageBaseline
    hard_gen: torch.Generator


class _CtrlC:
    """Ctrl-C during training: the first one asks the loop to save ``last.pt`` after the step in
    progress and stop (``requested``); a second one stops at once (KeyboardInterrupt). Installed
    only in the main thread (signal handlers live there) and only where SIGINT is not ignored (a
    job a shell started in the background keeps ignoring it), restored on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> _CtrlC:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a checkpoint after this step, then stopping (press Ctrl-C again "
              "to stop at once, without saving)", file=sys.stderr, flush=True)


@dataclass
class _Loop:
    """Everything the epochs share: one object instead of a dozen arguments."""

    cfg: TrainConfig
    run: Dist
    data: _Data
    model: Captioner
    forward: nn.Module  # the model's teacher-forced forward pass, under DDP / compile
    optim: _Optim
    state: RunState
    out_dir: Path
    step_log: StepLog | None  # rank 0 only
    stop_after_steps: int | None = None
    seen: list[Tensor] | None = None  # dataset indices this rank trained on (dump_final_weights)
    ctrl_c: _CtrlC | None = None  # asks the loop to save and stop (train() installs it)

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context of ``--amp`` (``none``, ``bf16`` or ``fp16``) on ``device``."""
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check_runtime(cfg: TrainConfig, device: torch.device, run: Dist) -> bool:
    """Validate amp/compile against the device; return whether to torch.compile."""
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError(f"--amp fp16 needs a CUDA device (this run is on {device}); "
                          "use --amp bf16 or --amp none")
    if cfg.compile and device.type != "cuda":
        if run.main:
            warnings.warn(f"--compile is for CUDA; ignored on {device}", stacklevel=3)
        return False
    return cfg.compile


def train(
    cfg: TrainConfig,
    *,
    resume: str | Path | None = None,
    stop_after_steps: int | None = None,
    dump_final_weights: bool = False,
) -> TrainResult:
    """Train (or continue) a captioner as configured by ``cfg``; see the module docstring.

    ``resume``: a checkpoint path, or ``"auto"`` for ``<out_dir>/last.pt`` (a fresh start if it
    does not exist). The out-dir is locked while the run lasts (:mod:`sat_core.out_dir`); a first
    Ctrl-C saves ``last.pt`` at the current step and returns with status ``"stopped"``.
    ``stop_after_steps`` (tests): stop right after that optimizer step, as if the
    process were killed. ``dump_final_weights`` (tests): every rank writes its final parameters
    and the caption indices it trained on to ``<out_dir>/rank{r}_final.pt``.
    """
    run = setup_distributed(cfg)  # an unknown device, or one this machine lacks: DeviceError
    threads = torch.get_num_threads()
    if cfg.num_threads:  # never more than an explicit OMP_NUM_THREADS (a shared machine's limit)
        limit = os.environ.get("OMP_NUM_THREADS", "")
        torch.set_num_threads(min(cfg.num_threads, int(limit)) if limit.isdigit() and int(limit)
                              else cfg.num_threads)
    try:
        with claim_out_dir(cfg.out_dir, main=run.main), _CtrlC() as ctrl_c:
            return _train(cfg, run, resume, stop_after_steps, dump_final_weights, ctrl_c)
    finally:
        torch.set_num_threads(threads)  # a notebook calling train() keeps its own setting
        run.close()


def _train(cfg: TrainConfig, run: Dist, resume: str | Path | None,
           stop_after_steps: int | None, dump_final_weights: bool,
           ctrl_c: _CtrlC | None = None) -> TrainResult:
    """The whole run: set up, resume, train epoch after epoch, finish. The order of the set-up
    steps is the order of the random draws, which a resumed run must repeat exactly."""
    do_compile = _check_runtime(cfg, run.device, run)
    out_dir = Path(cfg.out_dir)  # checked, created and locked by claim_out_dir
    seed_everything(cfg.seed)
    data, model = _data_and_model(cfg, run, out_dir)
    optim = _optimisation(cfg, model, len(data.sampler), run)
    state, ckpt = _resume(cfg, run, resume, model, optim, data.vocab)
    forward = _wrap_forward(model, run, do_compile)
    if ckpt is not None:  # the very last thing before training: the random states
        _restore_rng(ckpt, run, optim.hard_gen)
    step_log = StepLog(out_dir / "steps.csv", ckpt["step"] if ckpt else None) if run.main else None
    loop = _Loop(cfg, run, data, model, forward, optim, state, out_dir, step_log,
                 stop_after_steps, seen=[] if dump_final_weights else None, ctrl_c=ctrl_c)

    status = "finished"
    model.train()
    while state.epoch < cfg.epochs and status == "finished":
        status = _train_epoch(loop)

    if dump_final_weights:
        _dump_final_weights(loop)
    stopped = status in ("interrupted", "stopped")
    scores = _finish(loop, status) if not stopped and run.main else None
    run.barrier()
    return TrainResult(out_dir=out_dir, status=status, epoch=state.epoch, step=state.step,
                       best_bleu4=state.best["bleu4"],
                       best_path=loop.best_path if loop.best_path.exists() else None,
                       last_path=loop.last_path, history=state.history, test_scores=scores)


# --- set-up ------------------------------------------------------------------------------------


def _data_and_model(cfg: TrainConfig, run: Dist, out_dir: Path) -> tuple[_Data, Captioner]:
    """Splits, vocabulary (saved to ``vocab.json``), the captioner, the feature cache if the
    encoder is frozen, and the sampler of this rank's batches."""
    splits, vocab = load_data(cfg)
    model = build_captioner(cfg, vocab, splits["train"]).to(run.device)
    if cfg.uses_feature_cache:
        splits = use_feature_cache(cfg, model.encoder, splits, run)
    if run.main:
        vocab.save(out_dir / "vocab.json")
    train_set = CaptionDataset(splits["train"], vocab, max_len=cfg.max_len)
    lengths = train_set.lengths if cfg.equal_length else [0] * len(train_set)
    sampler = LengthGroupedBatchSampler(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        num_replicas=run.world, rank=run.rank)
    if len(sampler) == 0:
        raise ConfigError(f"the training split has {len(train_set)} captions: not one batch of "
                          f"{cfg.batch_size} per process; lower --batch-size")
    return _Data(splits, vocab, train_set, sampler), model


def _optimisation(cfg: TrainConfig, model: Captioner, steps_per_epoch: int, run: Dist) -> _Optim:
    """Optimizer, schedule, scaler, baseline and hard-attention generator; then this rank's
    dropout seed."""
    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    baseline = MovingAverageBaseline(momentum=cfg.baseline_decay)
    hard_gen = torch.Generator(device=run.device).manual_seed(cfg.seed * 7919 + 17 + run.rank)
    if run.rank:  # dropout masks differ between ranks; the weights start equal (DDP broadcasts)
        torch.manual_seed(cfg.seed + 104729 * run.rank)
    return _Optim(opt, sched, scaler, baseline, hard_gen)


def _resume(cfg: TrainConfig, run: Dist, resume: str | Path | None, model: Captioner,
            optim: _Optim, vocab: Vocabulary) -> tuple[RunState, dict[str, Any] | None]:
    """Continue from ``resume`` (``"auto"``: ``<out_dir>/last.pt`` if it exists): weights,
    optimizer, schedule, scaler, baseline and the loop's position. Returns the state and the
    checkpoint, whose random states :func:`_restore_rng` restores last; a fresh state if none."""
    if resume is None:
        return RunState(), None
    path = Path(cfg.out_dir) / "last.pt" if str(resume) == "auto" else Path(resume)
    if str(resume) == "auto" and not path.exists():
        _say(run, f"--resume auto: no {path} yet, starting a fresh run")
        return RunState(), None
    ckpt = load_checkpoint(path, vocab=vocab, config=cfg, map_location=run.device)
    changed = {k: v for k, v in config_diff(ckpt["config"], cfg).items()
               if k not in RUNTIME_FIELDS}
    _refuse_changes(path, changed, ckpt["batch_in_epoch"])
    if changed:
        _say(run, f"resuming {path} with changed settings (checkpoint -> now): {changed}")
    model.load_state_dict(ckpt["model"])
    optim.opt.load_state_dict(ckpt["optimizer"])
    optim.sched.load_state_dict(ckpt["scheduler"])
    if ckpt.get("scaler"):
        optim.scaler.load_state_dict(ckpt["scaler"])
    optim.baseline.load_state_dict(ckpt["baseline"])
    _apply_settings(cfg, ckpt["config"], optim)
    state = RunState.from_checkpoint(ckpt)
    _say(run, f"resuming {path}: epoch {state.epoch + 1}, batch {state.batch_in_epoch}, "
              f"step {state.step}")
    return state, ckpt


# Settings a resumed run cannot take over from the command line: the optimizer's state belongs to
# one algorithm; a plateau schedule keeps another state than the per-step ones; and in the middle
# of an epoch the position (batches done) means other captions with other batches.
_NEVER_CHANGED_ON_RESUME = ("optimizer",)
_NOT_CHANGED_MID_EPOCH = ("batch_size", "equal_length", "seed")


def _refuse_changes(path: Path, changed: dict[str, Any], batch_in_epoch: int) -> None:
    """Raise :class:`ConfigError` for a changed setting that resuming cannot apply."""
    refused = [k for k in _NEVER_CHANGED_ON_RESUME if k in changed]
    if "lr_schedule" in changed and "plateau" in changed["lr_schedule"]:
        refused.append("lr_schedule")
    if batch_in_epoch:
        refused += [k for k in _NOT_CHANGED_MID_EPOCH if k in changed]
    if refused:
        listed = ", ".join(f"--{k.replace('_', '-')} {changed[k][0]} -> {changed[k][1]}"
                           for k in refused)
        where = f" in the middle of an epoch (batch {batch_in_epoch})" if batch_in_epoch else ""
        raise ConfigError(f"cannot resume {path} with {listed}{where}: the saved optimizer and "
                          "schedule state would not fit — resume with the checkpoint's values, "
                          "or start a new run in another --out-dir")


def _apply_settings(cfg: TrainConfig, old: TrainConfig, optim: _Optim) -> None:
    """Put the current ``cfg``'s learning rate, weight decay, lr decay and baseline decay into
    the state just loaded from a checkpoint of ``old``, so that a changed setting is used, not
    only reported: the param groups' lr, initial_lr and weight_decay, the schedule's base rates
    (the current rate = new base x the schedule's factor at this step) and its decay."""
    sched = optim.sched
    plateau = isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    for group in optim.opt.param_groups:
        if plateau:  # the decays so far, applied to the new base rate
            if cfg.lr != old.lr:
                group["lr"] = cfg.lr * group["lr"] / old.lr
        else:
            group["lr"] = cfg.lr * sched.lr_lambdas[0](sched.last_epoch)
        group["initial_lr"] = cfg.lr
        group["weight_decay"] = cfg.weight_decay
    if plateau:
        sched.factor, sched.patience = cfg.lr_decay, cfg.lr_decay_epochs
    if hasattr(sched, "base_lrs"):
        sched.base_lrs = [cfg.lr] * len(optim.opt.param_groups)
    sched._last_lr = [g["lr"] for g in optim.opt.param_groups]
    optim.baseline.momentum = cfg.baseline_decay


def _wrap_forward(model: Captioner, run: Dist, do_compile: bool) -> nn.Module:
    """The teacher-forced forward pass, under DistributedDataParallel; with ``do_compile`` the
    decoder's step (:func:`sat_core.fast.compile_cell`) and the encoder are torch.compile'd."""
    if do_compile:
        fast.compile_cell(model.decoder)  # one step, compiled once for every caption length
        if model.encoder is not None:
            model.encoder.compile()  # in place: the checkpoint's parameter names stay
    forward: nn.Module = TrainForward(model)
    if run.distributed:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return forward


# --- random states and checkpoints --------------------------------------------------------------


def _restore_rng(ckpt: dict[str, Any], run: Dist, hard_gen: torch.Generator) -> None:
    """This rank's random states from ``ckpt``; a warning if another number of processes
    wrote it."""
    if len(ckpt["rng"]["ranks"]) != run.world:
        _say(run, f"the checkpoint was written by {len(ckpt['rng']['ranks'])} processes, this run "
                  f"has {run.world}: random states are not continued exactly")
    restore_rng_states(ckpt["rng"], run, hard_gen)


def _save(loop: _Loop, path: Path) -> None:
    """``last.pt`` or ``best.pt``: everything a resumed run needs (written by rank 0)."""
    o, state = loop.optim, loop.state
    rng = rng_states(loop.run, o.hard_gen)  # collective: every rank takes part
    if loop.run.main:
        save_checkpoint(path, model=loop.model, optimizer=o.opt, scheduler=o.sched,
                        vocab=loop.data.vocab, config=loop.cfg, epoch=state.epoch,
                        step=state.step, baseline=o.baseline, rng=rng, best=state.best,
                        history=state.history, batch_in_epoch=state.batch_in_epoch,
                        epoch_stats=state.epoch_stats,
                        scaler=o.scaler.state_dict() if o.scaler.is_enabled() else None)


# --- one epoch ----------------------------------------------------------------------------------


def _train_epoch(loop: _Loop) -> str:
    """One epoch (the rest of it after a resume): its batches, then validation, logs, checkpoints.
    Returns the run's status: "finished" to go on, or why it stops."""
    stop = _run_batches(loop)
    if stop in ("interrupted", "stopped"):
        return stop
    status = _end_of_epoch(loop.cfg, loop.state, loop.model, loop.data.splits, loop.data.vocab,
                           loop.optim.sched, loop.run, loop.run.device)
    _close_epoch(loop)
    return "max-steps" if stop == "max-steps" and status == "finished" else status


def _epoch_loader(loop: _Loop) -> tuple[list[list[int]], DataLoader]:
    """This rank's batches of the epoch in progress, less those a resumed run already did."""
    cfg, state, sampler = loop.cfg, loop.state, loop.data.sampler
    sampler.set_epoch(state.epoch)
    batches = list(sampler)[state.batch_in_epoch:]  # skip what a resumed run already did
    loader = DataLoader(loop.data.train_set, batch_sampler=batches, collate_fn=collate_captions,
                        num_workers=cfg.num_workers, pin_memory=loop.run.device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed + state.epoch))
    return batches, loader


@dataclass
class _Clock:
    """Training time of the epoch (between checkpoints) and tokens/s since the last log line."""

    epoch_start: float = field(default_factory=time.perf_counter)
    window_start: float = field(default_factory=time.perf_counter)
    window_tokens: float = 0

    def lap(self) -> float:
        """Seconds since the last lap (or the epoch's start)."""
        now = time.perf_counter()
        elapsed, self.epoch_start = now - self.epoch_start, now
        return elapsed


def _run_batches(loop: _Loop) -> str | None:
    """The epoch's batches, one :func:`_train_step` each; ``"interrupted"`` (stop_after_steps),
    ``"stopped"`` (Ctrl-C, ``last.pt`` saved at this step) or ``"max-steps"`` if the run stops
    before the epoch's end, else None."""
    cfg, run, state, o = loop.cfg, loop.run, loop.state, loop.optim
    batches, loader = _epoch_loader(loop)
    bar = tqdm(total=len(loop.data.sampler), initial=state.batch_in_epoch, unit="batch",
               desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
               disable=not (cfg.progress and run.main), dynamic_ncols=True, leave=False)
    clock, stop = _Clock(), None
    for indices, batch in zip(batches, loader, strict=True):
        parts = _train_step(cfg, batch, loop.forward, o.opt, o.sched, o.scaler, o.baseline,
                            o.hard_gen, run.device, run, state, loop.last_path)
        if loop.seen is not None:
            loop.seen.append(torch.tensor(indices))
        clock.window_tokens += _count_step(state, batch, parts)
        bar.update(1)
        if cfg.log_every and state.step % cfg.log_every == 0:
            _log_step(loop, bar, clock, parts)
        stop = _after_step(loop, clock)
        if stop:
            break
    bar.close()
    if stop not in ("interrupted", "stopped"):
        state.epoch_stats["time"] += clock.lap()
    return stop


def _after_step(loop: _Loop, clock: _Clock) -> str | None:
    """Checkpoint if due (or asked for by Ctrl-C); why the run stops after this step, if it does."""
    cfg, state = loop.cfg, loop.state
    ctrl_c = loop.run.any(loop.ctrl_c is not None and loop.ctrl_c.requested)  # every rank agrees
    if ctrl_c or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0):
        state.epoch_stats["time"] += clock.lap()
        _save(loop, loop.last_path)
    if ctrl_c:
        return "stopped"
    if loop.stop_after_steps is not None and state.step >= loop.stop_after_steps:
        return "interrupted"
    if cfg.max_steps and state.step >= cfg.max_steps:
        return "max-steps"
    return None


def _count_step(state: RunState, batch: CaptionBatch, parts: dict[str, Tensor]) -> float:
    """Advance the position by one step; add its token-weighted loss to the epoch's sums.
    Returns the step's number of predicted words."""
    state.step += 1
    state.batch_in_epoch += 1
    tokens = float(batch.lengths.sum() - len(batch))
    st = state.epoch_stats
    st["loss"] += float(parts["loss"].detach()) * tokens
    st["nll"] += float(parts["nll"]) * tokens
    st["entropy"] = st.get("entropy", 0.0) + float(parts["attention_entropy"]) * tokens
    st["tokens"] += tokens
    st["batches"] += 1
    return tokens


def _log_step(loop: _Loop, bar: Any, clock: _Clock, parts: dict[str, Tensor]) -> None:
    """Loss, lr and tokens/s on the progress bar, and a row of ``steps.csv``."""
    now = time.perf_counter()
    lr = loop.optim.opt.param_groups[0]["lr"]
    bar.set_postfix(loss=f"{float(parts['loss'].detach()):.3f}",
                    nll=f"{float(parts['nll']):.3f}", lr=f"{lr:.2g}",
                    tok_s=f"{clock.window_tokens / max(now - clock.window_start, 1e-9):.0f}")
    clock.window_start, clock.window_tokens = now, 0
    if loop.step_log:
        loop.step_log.add(loop.state.step, loop.state.epoch + 1, float(parts["loss"].detach()),
                          float(parts["nll"]), lr)


def _close_epoch(loop: _Loop) -> None:
    """Move to the next epoch; write the logs, ``best.pt`` if it improved, and ``last.pt``."""
    state = loop.state
    epoch = state.epoch
    state.epoch, state.batch_in_epoch = epoch + 1, 0
    state.epoch_stats = RunState().epoch_stats
    if loop.run.main:
        write_logs(loop.out_dir, loop.cfg, state.history)
    if state.best["epoch"] == epoch + 1:  # the same decision on every rank (broadcast)
        _save(loop, loop.best_path)
    _save(loop, loop.last_path)


def _train_step(cfg: TrainConfig, batch: CaptionBatch, forward: nn.Module,
                opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler,
                baseline: MovingAverageBaseline, hard_gen: torch.Generator,
                device: torch.device, run: Dist, state: RunState, last_path: Path,
                ) -> dict[str, Tensor]:
    """One optimizer step on one batch (teacher forcing, Eq. 14 / Eq. 12 loss, clipping)."""
    batch = batch.to(device, non_blocking=True)
    hard = cfg.attention == "hard"
    mix = None
    if hard:  # Sec. 4.1: with probability 0.5 use the expected context instead of a sample
        mix = torch.rand(len(batch), generator=hard_gen, device=device) < cfg.hard_mix
    with autocast(cfg.amp, device):
        out = forward(batch.images, batch.captions, batch.lengths,
                      "hard-sample" if hard else "soft", mix, hard_gen if hard else None)
    _, targets, steps = teacher_forcing(batch.captions, batch.lengths)
    # cfg.alpha_c is the authors' lambda for a loss SUMMED over words (arctic-captions);
    # caption_loss averages over the N real tokens, so lambda * B / N gives the same gradients.
    lam = cfg.alpha_c * len(batch) / float(steps.sum().clamp(min=1))
    parts = caption_loss(out, targets, steps, alpha_c=lam, hard=hard,
                         baseline=baseline if hard else None, lambda_r=cfg.lambda_r,
                         lambda_e=cfg.lambda_e, reward=cfg.hard_reward)
    parts["attention_entropy"] = attention_entropy(out.alpha, steps)
    loss = parts["loss"]
    if run.any(not bool(torch.isfinite(loss.detach()))):
        where = (f"the last good checkpoint {last_path} is kept" if last_path.exists()
                 else "no checkpoint was written yet")
        raise NonFiniteLossError(
            f"non-finite loss ({float(loss.detach())}) at step {state.step + 1} "
            f"(epoch {state.epoch + 1}, batch {state.batch_in_epoch + 1}); stopping, {where} — "
            "try a lower --lr, --grad-clip 5, or --amp none, then --resume it")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]],
                                       cfg.grad_clip)
    scaler.step(opt)
    scaler.update()
    if not isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step()
    if hard and run.distributed:  # one baseline for all ranks: the mean of their averages
        baseline.value = run.mean(baseline.value)
    return parts


def _end_of_epoch(cfg: TrainConfig, state: RunState, model: Captioner, splits: dict[str, Split],
                  vocab: Vocabulary, sched: Any, run: Dist, device: torch.device) -> str:
    """Validate (rank 0), log, update best / early stopping, broadcast the decision."""
    epoch = state.epoch
    st = state.epoch_stats
    bleu = [0.0] * 4
    if run.main:
        t0 = time.perf_counter()
        bleu = validation_bleu(model, splits["val"], vocab, cfg, device)
        val_time = time.perf_counter() - t0
    bleu = run.broadcast(bleu)
    improved = state.best["bleu4"] is None or bleu[3] > state.best["bleu4"]
    if improved:
        state.best.update(bleu4=bleu[3], epoch=epoch + 1, step=state.step, bad_epochs=0)
    else:
        state.best["bad_epochs"] += 1
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.step(bleu[3])
    tokens = max(st["tokens"], 1.0)
    row = {
        "epoch": epoch + 1, "step": state.step, "train_loss": st["loss"] / tokens,
        "train_nll": st["nll"] / tokens,
        "train_attention_entropy": st.get("entropy", 0.0) / tokens,
        "val_bleu1": bleu[0], "val_bleu2": bleu[1], "val_bleu3": bleu[2], "val_bleu4": bleu[3],
        "lr": sched.optimizer.param_groups[0]["lr"],
        "epoch_time_s": st["time"],
        "tokens_per_s": st["tokens"] * run.world / max(st["time"], 1e-9),
    }
    state.history.append(row)
    if run.main:
        mark = " *" if improved else ""
        _say(run, f"epoch {epoch + 1}: loss {row['train_loss']:.3f}  val BLEU-1..4 "
                  + " ".join(f"{b:.3f}" for b in bleu) + f"{mark}  ({st['time']:.0f}s train, "
                  f"{val_time:.0f}s val, {row['tokens_per_s']:.0f} tok/s)")
    if cfg.patience and state.best["bad_epochs"] >= cfg.patience:
        _say(run, f"early stopping: no better val BLEU-4 for {cfg.patience} epochs "
                  f"(best {state.best['bleu4']:.4f} at epoch {state.best['epoch']})")
        return "early-stopped"
    return "finished"


# --- the end ------------------------------------------------------------------------------------


def _dump_final_weights(loop: _Loop) -> None:
    """(tests) ``rank{r}_final.pt``: this rank's final parameters and the captions it saw."""
    seen = loop.seen or []
    torch.save({"params": {k: v.detach().cpu() for k, v in loop.model.named_parameters()},
                "seen": torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long),
                "step": loop.state.step}, loop.out_dir / f"rank{loop.run.rank}_final.pt")


def _finish(loop: _Loop, status: str) -> dict[str, Any] | None:
    """(rank 0) Test-split scores of ``best.pt``; ``run.json`` marks the run finished."""
    cfg, state = loop.cfg, loop.state
    scores = None
    if cfg.test_metrics != "none" and loop.best_path.exists():
        scores = _score_best_checkpoint(loop)
    _write_text_atomic(loop.out_dir / "run.json", json.dumps(
        {"finished": True, "status": status, "config": cfg.to_dict(), "best": state.best,
         "step": state.step, "epoch": state.epoch}, indent=1))
    return scores


def _score_best_checkpoint(loop: _Loop) -> dict[str, Any]:
    """Load ``best.pt`` into the model, score the test split, write ``test_scores.json``."""
    cfg, data, device = loop.cfg, loop.data, loop.run.device
    best = load_checkpoint(loop.best_path, vocab=data.vocab, config=cfg, map_location=device)
    loop.model.load_state_dict(best["model"])
    scores = test_scores(loop.model, data.splits["test"], data.vocab, cfg, device)
    scores["checkpoint"] = str(loop.best_path)
    scores["epoch"] = best["epoch"]
    _write_text_atomic(loop.out_dir / "test_scores.json", json.dumps(scores, indent=1))
    _print_scores(cfg, scores)
    return scores


def _print_scores(cfg: TrainConfig, scores: dict[str, Any]) -> None:
    try:
        from sat_core.metrics import format_table1

        text = format_table1(scores["scores"], dataset=cfg.dataset,
                             model_name=f"{cfg.attention}-attention (ours)")
    except (ImportError, ValueError):
        text = json.dumps(scores["scores"], indent=1)
    tqdm.write(f"test split ({scores['num_images']} images, beam {scores['beam_size']}):\n{text}")


# ----------------------------------------------------------------------------------------------
# For the notebooks
# ----------------------------------------------------------------------------------------------


def _learning_fields_differ(a: TrainConfig, b: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in config_diff(a, b).items() if k not in RUNTIME_FIELDS}


def get_or_train(preset_or_config: str | TrainConfig, out_dir: str | Path,
                 **overrides: Any) -> Path:
    """``best.pt`` of a finished run of this config in ``out_dir``; train (or resume) otherwise.

    A run matches when every field that affects learning is equal (fields such as ``device``,
    ``num_workers`` or ``progress`` are ignored, see :data:`~sat_core.config.RUNTIME_FIELDS`).
    An interrupted matching run is resumed from ``last.pt``; a Ctrl-C (interrupt) during the
    training saves ``last.pt`` and raises KeyboardInterrupt.
    """
    overrides["out_dir"] = str(out_dir)
    if isinstance(preset_or_config, str):
        cfg = preset(preset_or_config, **overrides)
    else:
        cfg = make_config(preset_or_config, **overrides)
    out_dir = Path(out_dir)
    best, last, done = out_dir / "best.pt", out_dir / "last.pt", out_dir / "run.json"
    if done.exists() and best.exists():
        info = json.loads(done.read_text())
        old = TrainConfig.from_dict(info.get("config", {}), strict=False)
        if info.get("finished") and not _learning_fields_differ(old, cfg):
            return best
    resume = None
    if last.exists():
        try:
            old = load_checkpoint(last)["config"]
            if not _learning_fields_differ(old, cfg):
                resume = last
        except CheckpointError:
            pass
    result = train(cfg, resume=resume)
    if result.status == "stopped":  # Ctrl-C (a notebook's "interrupt"): last.pt is saved, and
        raise KeyboardInterrupt(f"training stopped; {result.last_path} is saved and the next "
                                "call resumes it")  # the cell stops as asked
    if result.best_path is None:
        raise RuntimeError(f"training in {out_dir} ended without a best.pt ({result.status})")
    return result.best_path


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from sat_core.config import build_parser as config_parser

    parser = config_parser(
        description="Train a Show, Attend and Tell captioner (Xu et al., 2015). Every training "
        "option below overrides the preset; under torchrun each process trains on its share.")
    parser.add_argument("--resume", default=None, metavar="PATH|auto",
                        help="continue from a checkpoint (auto = <out-dir>/last.pt if present)")
    group = parser.add_argument_group("testing (used by the test suite)")
    group.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                       help="stop right after optimizer step N, as if killed")
    group.add_argument("--dump-final-weights", action="store_true",
                       help="every rank writes <out-dir>/rank{r}_final.pt at the end")
    return parser


def _config_of(args: argparse.Namespace) -> TrainConfig:
    """The run's config: with ``--resume`` and no ``--preset``, the checkpoint's config with the
    options given on top (so ``--resume PATH --lr 1e-4`` changes only the lr); else the preset's
    (or the defaults) with the options given."""
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    path = None
    if args.resume and not args.preset:
        path = Path(args.resume)
        if args.resume == "auto":
            path = Path(given.get("out_dir", TrainConfig.out_dir)) / "last.pt"
            path = path if path.exists() else None
    if path is None:
        return config_from_args(args)
    return make_config(load_checkpoint(path)["config"], **given)


def _resume_command(result: TrainResult) -> str:
    return f"python -m sat_core.train --resume {result.last_path}"


def _weights_error(err: PretrainedWeightsUnavailable) -> UserError:
    """The encoder's advice in this command's terms (``--encoder-weights``, not ``weights=``)."""
    name = os.path.basename(err.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    return UserError(
        f"could not download the pretrained weights {err.weights} from {err.url} "
        f"({type(err.reason).__name__}: {err.reason}) — this machine seems to have no internet "
        "access: run with --encoder-weights none (random init; the Shapes presets need no "
        f"pretrained weights), or download {name} where there is internet (e.g. Colab), copy it "
        f"here and pass --encoder-weights /path/to/{name}, or put it at {shown_path(cached)}, "
        "where torchvision finds it")


@command(ConfigError, CheckpointError, NonFiniteLossError, KarpathyFormatError, ImageLoadError,
         FeatureCacheError, PretrainedWeightsUnavailable, OSError)
def main(argv: list[str] | None = None) -> int:
    """``python -m sat_core.train``: a bad option, checkpoint or out-dir is one ``error:`` line
    and exit status 2 (SAT_DEBUG=1 shows the traceback); Ctrl-C saves ``last.pt``, prints the
    command that resumes it and exits with 130."""
    args = build_parser().parse_args(argv)
    cfg = _config_of(args)
    try:
        result = train(cfg, resume=args.resume, stop_after_steps=args.stop_after_steps,
                       dump_final_weights=args.dump_final_weights)
    except PretrainedWeightsUnavailable as err:
        raise _weights_error(err) from err
    except KeyboardInterrupt:  # the second Ctrl-C
        last = Path(cfg.out_dir) / "last.pt"
        print("error: stopped at once by a second Ctrl-C — " + (
            f"resume from the last checkpoint written with: python -m sat_core.train --resume "
            f"{last}" if last.exists() else "no checkpoint was written yet: start the run again"),
            file=sys.stderr)
        return 130
    if result.status == "stopped":
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"stopped by Ctrl-C after step {result.step}; saved {result.last_path} — "
                  f"resume with: {_resume_command(result)}", file=sys.stderr)
        return 130
    if result.best_path is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.status} after {result.step} steps; best val BLEU-4 "
              f"{result.best_bleu4:.4f}: {result.best_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
