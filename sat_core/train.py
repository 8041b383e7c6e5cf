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
writes files and shows progress.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from sat_core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    to_plain,
)
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
from sat_core.data.datasets import CaptionDataset, ImageDataset, build_vocabulary, load_splits
from sat_core.data.records import Split
from sat_core.decoding import decode
from sat_core.device import pick_device, seed_everything
from sat_core.losses import MovingAverageBaseline, attention_entropy, caption_loss
from sat_core.metrics import corpus_bleu
from sat_core.model import Captioner, build_model, teacher_forcing
from sat_core.text import Vocabulary

LOG_FIELDS = (
    "epoch", "step", "train_loss", "train_nll", "train_attention_entropy", "val_bleu1",
    "val_bleu2", "val_bleu3", "val_bleu4", "lr", "epoch_time_s", "tokens_per_s",
)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""


# ----------------------------------------------------------------------------------------------
# Processes: one, or several under torchrun
# ----------------------------------------------------------------------------------------------


@dataclass
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes, on ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False  # we called init_process_group (and must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, values: list[float]) -> list[float]:
        """Rank 0's ``values`` on every rank."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; init the process group (gloo/nccl) if > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(cfg.device)
    if world <= 1:
        return Dist(0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device, owns)


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
    """Encoder + decoder of the sizes in ``cfg`` (the paper's m, n, attention MLP, gate)."""
    enc: dict[str, Any] = dict(weights=encoder_weights(cfg, train_split), fine_tune=cfg.fine_tune,
                               image_size=cfg.image_size, progress=cfg.progress)
    if cfg.encoder == "small":
        enc["channels"] = cfg.encoder_channels
        enc["context"] = cfg.encoder_context
    dec = dict(embed_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim, attn_dim=cfg.attn_dim,
               dropout=cfg.dropout, gate=cfg.gate, attention=cfg.attention)
    return build_model(cfg.encoder, len(vocab), encoder_kwargs=enc, decoder_kwargs=dec)


def features_root(cfg: TrainConfig) -> Path:
    """Where feature caches live: ``cfg.features_dir`` or ``<out_dir>/../features``."""
    return Path(cfg.features_dir) if cfg.features_dir else Path(cfg.out_dir).resolve().parent / (
        "features")


def feature_cache_key(cfg: TrainConfig, encoder: nn.Module) -> str:
    """Name of the cache of (dataset, image size, encoder weights): a hash of all three, so a
    cache is never reused for another dataset, image size, or (randomly initialised) encoder."""
    h = hashlib.sha256()
    data = dict(dataset=cfg.dataset, image_size=cfg.image_size, resize=cfg.resize,
                data_root=str(Path(cfg.data_root).resolve()) if cfg.dataset != "shapes" else "")
    if cfg.dataset == "shapes":
        data.update(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.shapes_seed,
                    naming=cfg.shapes_naming)
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
                _say(run, f"building the {name} feature cache at {path}")
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
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
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
    status: str  # "finished" | "early-stopped" | "max-steps" | "interrupted"
    epoch: int
    step: int
    best_bleu4: float | None
    best_path: Path | None
    last_path: Path
    history: list[dict[str, Any]]
    test_scores: dict[str, Any] | None = None


@dataclass
class _State:
    """Everything that moves during training and goes into ``last.pt``."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of that epoch already done
    step: int = 0  # optimizer steps done in total
    best: dict[str, Any] = field(default_factory=lambda: {"bleu4": None, "epoch": None,
                                                          "step": None, "bad_epochs": 0})
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_stats: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("loss", "nll", "tokens", "batches", "time", "entropy"), 0.0))


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.amp == "bf16" else torch.float16
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
    does not exist). ``stop_after_steps`` (tests): stop right after that optimizer step, as if the
    process were killed. ``dump_final_weights`` (tests): every rank writes its final parameters
    and the caption indices it trained on to ``<out_dir>/rank{r}_final.pt``.
    """
    run = setup_distributed(cfg)
    threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(cfg, run, resume, stop_after_steps, dump_final_weights)
    finally:
        torch.set_num_threads(threads)  # a notebook calling train() keeps its own setting
        if run.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, run: Dist, resume: str | Path | None,
           stop_after_steps: int | None, dump_final_weights: bool) -> TrainResult:
    device = run.device
    do_compile = _check_runtime(cfg, device, run)
    out_dir = Path(cfg.out_dir)
    if run.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    # --- data, vocabulary, model -----------------------------------------------------------
    splits, vocab = load_data(cfg)
    model = build_captioner(cfg, vocab, splits["train"]).to(device)
    if cfg.uses_feature_cache:
        splits = use_feature_cache(cfg, model.encoder, splits, run)
    if run.main:
        vocab.save(out_dir / "vocab.json")
    train_set = CaptionDataset(splits["train"], vocab, max_len=cfg.max_len)
    lengths = train_set.lengths if cfg.equal_length else [0] * len(train_set)
    sampler = LengthGroupedBatchSampler(lengths, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                        num_replicas=run.world, rank=run.rank)
    steps_per_epoch = len(sampler)
    if steps_per_epoch == 0:
        raise ConfigError(f"the training split has {len(train_set)} captions: not one batch of "
                          f"{cfg.batch_size} per process; lower --batch-size")

    opt = make_optimizer(cfg, model)
    sched = make_scheduler(cfg, opt, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16")
    baseline = MovingAverageBaseline(momentum=cfg.baseline_decay)
    hard_gen = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + 17 + run.rank)
    if run.rank:  # dropout masks differ between ranks; the weights start equal (DDP broadcasts)
        torch.manual_seed(cfg.seed + 104729 * run.rank)
    state = _State()
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    ckpt = None
    if resume is not None:
        path = last_path if str(resume) == "auto" else Path(resume)
        if str(resume) == "auto" and not path.exists():
            _say(run, f"--resume auto: no {path} yet, starting a fresh run")
        else:
            ckpt = load_checkpoint(path, vocab=vocab, config=cfg, map_location=device)
            changed = {k: v for k, v in config_diff(ckpt["config"], cfg).items()
                       if k not in RUNTIME_FIELDS}
            if changed:
                _say(run, f"resuming {path} with changed settings (checkpoint -> now): {changed}")
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                scaler.load_state_dict(ckpt["scaler"])
            baseline.load_state_dict(ckpt["baseline"])
            state = _State(epoch=ckpt["epoch"], batch_in_epoch=ckpt["batch_in_epoch"],
                           step=ckpt["step"], best=ckpt["best"], history=ckpt["history"],
                           epoch_stats=ckpt["epoch_stats"])
            _say(run, f"resuming {path}: epoch {state.epoch + 1}, batch {state.batch_in_epoch}, "
                      f"step {state.step}")

    forward: nn.Module = TrainForward(model)
    if run.distributed:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None)
    if do_compile:
        forward = torch.compile(forward)

    # --- checkpoints -------------------------------------------------------------------------
    def rng_state() -> dict[str, Any]:
        mine = to_plain(capture_rng_state({"hard": hard_gen}))
        if not run.distributed:
            return {"ranks": [mine]}
        every: list[Any] = [None] * run.world
        dist.all_gather_object(every, mine)
        return {"ranks": every}

    def save(path: Path) -> None:
        rng = rng_state()  # collective: every rank takes part
        if run.main:
            save_checkpoint(path, model=model, optimizer=opt, scheduler=sched, vocab=vocab,
                            config=cfg, epoch=state.epoch, step=state.step, baseline=baseline,
                            rng=rng, best=state.best, history=state.history,
                            batch_in_epoch=state.batch_in_epoch, epoch_stats=state.epoch_stats,
                            scaler=scaler.state_dict() if scaler.is_enabled() else None)

    if ckpt is not None:  # the very last thing before training: the random states
        ranks = ckpt["rng"]["ranks"]
        if len(ranks) != run.world:
            _say(run, f"the checkpoint was written by {len(ranks)} processes, this run has "
                      f"{run.world}: random states are not continued exactly")
        restore_rng_state(ranks[run.rank % len(ranks)], {"hard": hard_gen})
    step_log = StepLog(out_dir / "steps.csv", ckpt["step"] if ckpt else None) if run.main else None
    seen: list[Tensor] = []  # dataset indices this rank trained on (dump_final_weights)
    status = "finished"

    # --- epochs --------------------------------------------------------------------------------
    model.train()
    while state.epoch < cfg.epochs and status == "finished":
        epoch = state.epoch
        sampler.set_epoch(epoch)
        batches = list(sampler)[state.batch_in_epoch:]  # skip what a resumed run already did
        loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate_captions,
                            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(cfg.seed + epoch))
        bar = tqdm(total=steps_per_epoch, initial=state.batch_in_epoch, unit="batch",
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and run.main),
                   dynamic_ncols=True, leave=False)
        t_epoch, t_window, tok_window = time.perf_counter(), time.perf_counter(), 0
        stop_epoch = False
        for indices, batch in zip(batches, loader, strict=True):
            parts = _train_step(cfg, batch, forward, opt, sched, scaler, baseline, hard_gen,
                                device, run, state, last_path)
            if dump_final_weights:
                seen.append(torch.tensor(indices))
            state.step += 1
            state.batch_in_epoch += 1
            tokens = float(batch.lengths.sum() - len(batch))
            st = state.epoch_stats
            st["loss"] += float(parts["loss"].detach()) * tokens
            st["nll"] += float(parts["nll"]) * tokens
            st["entropy"] = st.get("entropy", 0.0) + float(parts["attention_entropy"]) * tokens
            st["tokens"] += tokens
            st["batches"] += 1
            tok_window += tokens
            bar.update(1)
            if cfg.log_every and state.step % cfg.log_every == 0:
                now = time.perf_counter()
                lr = opt.param_groups[0]["lr"]
                bar.set_postfix(loss=f"{float(parts['loss'].detach()):.3f}",
                                nll=f"{float(parts['nll']):.3f}", lr=f"{lr:.2g}",
                                tok_s=f"{tok_window / max(now - t_window, 1e-9):.0f}")
                t_window, tok_window = now, 0
                if step_log:
                    step_log.add(state.step, epoch + 1, float(parts["loss"].detach()),
                                 float(parts["nll"]),
                                 lr)
            if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                state.epoch_stats["time"] += time.perf_counter() - t_epoch
                t_epoch = time.perf_counter()
                save(last_path)
            if stop_after_steps is not None and state.step >= stop_after_steps:
                status = "interrupted"
                break
            if cfg.max_steps and state.step >= cfg.max_steps:
                stop_epoch = True
                break
        bar.close()
        if status == "interrupted":
            break
        state.epoch_stats["time"] += time.perf_counter() - t_epoch
        status = _end_of_epoch(cfg, state, model, splits, vocab, sched, run, device)
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        state.epoch_stats = _State().epoch_stats
        if run.main:
            write_logs(out_dir, cfg, state.history)
        if state.best["epoch"] == epoch + 1:  # the same decision on every rank (broadcast)
            save(best_path)
        save(last_path)
        if stop_epoch and status == "finished":
            status = "max-steps"

    # --- the end -------------------------------------------------------------------------------
    if dump_final_weights:
        torch.save({"params": {k: v.detach().cpu() for k, v in model.named_parameters()},
                    "seen": torch.cat(seen) if seen else torch.zeros(0, dtype=torch.long),
                    "step": state.step}, out_dir / f"rank{run.rank}_final.pt")
    scores = None
    if status != "interrupted" and run.main and cfg.test_metrics != "none" and best_path.exists():
        best = load_checkpoint(best_path, vocab=vocab, config=cfg, map_location=device)
        model.load_state_dict(best["model"])
        scores = test_scores(model, splits["test"], vocab, cfg, device)
        scores["checkpoint"] = str(best_path)
        scores["epoch"] = best["epoch"]
        _write_text_atomic(out_dir / "test_scores.json", json.dumps(scores, indent=1))
        _print_scores(cfg, scores)
    if status != "interrupted" and run.main:
        _write_text_atomic(out_dir / "run.json", json.dumps(
            {"finished": True, "status": status, "config": cfg.to_dict(), "best": state.best,
             "step": state.step, "epoch": state.epoch}, indent=1))
    run.barrier()
    return TrainResult(out_dir=out_dir, status=status, epoch=state.epoch, step=state.step,
                       best_bleu4=state.best["bleu4"],
                       best_path=best_path if best_path.exists() else None,
                       last_path=last_path, history=state.history, test_scores=scores)


def _train_step(cfg: TrainConfig, batch: CaptionBatch, forward: nn.Module,
                opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler,
                baseline: MovingAverageBaseline, hard_gen: torch.Generator,
                device: torch.device, run: Dist, state: _State, last_path: Path,
                ) -> dict[str, Tensor]:
    """One optimizer step on one batch (teacher forcing, Eq. 14 / Eq. 12 loss, clipping)."""
    batch = batch.to(device, non_blocking=True)
    hard = cfg.attention == "hard"
    mix = None
    if hard:  # Sec. 4.1: with probability 0.5 use the expected context instead of a sample
        mix = torch.rand(len(batch), generator=hard_gen, device=device) < cfg.hard_mix
    with _autocast(cfg, device):
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
            f"(epoch {state.epoch + 1}, batch {state.batch_in_epoch + 1}); stopping, {where}. "
            "Try a lower --lr, --grad-clip 5, or --amp none, then --resume it.")
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
        value = baseline.value.to(device).clone()
        dist.all_reduce(value)
        baseline.value = value / run.world
    return parts


def _end_of_epoch(cfg: TrainConfig, state: _State, model: Captioner, splits: dict[str, Split],
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
    An interrupted matching run is resumed from ``last.pt``.
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [k for k in vars(args) if k in TrainConfig.__dataclass_fields__]
    try:
        if args.resume and args.resume != "auto" and not given and not args.preset:
            cfg = load_checkpoint(args.resume)["config"]  # continue exactly that run
        else:
            cfg = config_from_args(args)
        result = train(cfg, resume=args.resume, stop_after_steps=args.stop_after_steps,
                       dump_final_weights=args.dump_final_weights)
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.best_path is not None and int(os.environ.get("RANK", "0")) == 0:
        print(f"{result.status} after {result.step} steps; best val BLEU-4 "
              f"{result.best_bleu4:.4f}: {result.best_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
