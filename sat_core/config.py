"""Training configuration: one dataclass, named presets, and a command line generated from it.

Every knob of a run lives in :class:`TrainConfig`. A *preset* is a named set of overrides of the
defaults (``shapes-soft`` for a CPU in minutes, ``flickr8k-soft`` for the paper's Flickr8k setting
at our paper-scale sizes, ...), and the command line overrides any field of the preset::

    python -m sat_core.train --preset shapes-soft --lr 3e-4 --attention hard --no-gate

The parser is generated from the dataclass fields, so ``--help`` always lists every field with its
default and help text, and a new field is a command-line option without further work.
"""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from sat_core.data.shapes import NAMING_ORDERS

DATASETS = ("shapes", "flickr8k", "flickr30k", "coco")
ENCODERS = ("small", "vgg19", "resnet101")
ATTENTIONS = ("soft", "hard")
OPTIMIZERS = ("adam", "rmsprop")
SCHEDULES = ("constant", "cosine", "step", "plateau")
AMP_MODES = ("none", "bf16", "fp16")
FEATURE_CACHE = ("auto", "on", "off")
TEST_METRICS = ("auto", "coco", "bleu", "none")
HARD_REWARDS = ("caption", "to-go")
DECODE_MODES = ("auto", "soft", "hard-expect", "hard-argmax")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


# The range of every numeric field: (low, high, low included, high included); None = unbounded.
# Floats must also be finite (no nan, no inf). Checked by TrainConfig.validate, i.e. whenever a
# config is built: a bad value stops a run before any data is loaded or anything is written.
_AT_LEAST_1 = (1, None, True, False)
_AT_LEAST_0 = (0, None, True, False)
_ABOVE_0 = (0, None, False, False)
_UNIT = (0, 1, True, True)
RANGES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    **dict.fromkeys(("n_train", "n_val", "n_test", "embed_dim", "hidden_dim", "attn_dim",
                     "batch_size", "epochs", "val_beam_size", "test_beam_size", "val_max_len",
                     "max_size", "encoder_channels", "max_len", "min_count"), _AT_LEAST_1),
    "image_size": (16, None, True, False),  # the small CNN's four stride-2 blocks need 16 px
    **dict.fromkeys(("resize", "shapes_seed", "seed", "max_steps", "checkpoint_every",
                     "patience", "num_workers", "warmup_steps", "val_images", "num_threads",
                     "log_every", "encoder_context", "encoder_coord_scale", "lr_decay_epochs",
                     "weight_decay", "grad_clip", "alpha_c", "lambda_r", "lambda_e"), _AT_LEAST_0),
    "lr": _ABOVE_0,
    "lr_decay": (0, 1, False, True),
    "dropout": (0, 1, True, False),
    **dict.fromkeys(("hard_mix", "baseline_decay"), _UNIT),
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _range_message(name: str, value: Any, rule: str) -> str:
    return f"{name} ({_flag(name)}) is {value!r}; it must be {rule} — set {_flag(name)} to {rule}"


def _check_range(name: str, value: Any, low: float | None, high: float | None,
                 low_in: bool, high_in: bool) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a number (finite) in the range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} ({_flag(name)}) is {value!r}, not a number — give "
                          f"{_flag(name)} a number")
    parts = []
    if low is not None:
        parts.append(f"{'>=' if low_in else '>'} {low}")
    if high is not None:
        parts.append(f"{'<=' if high_in else '<'} {high}")
    kind = "a finite number" if isinstance(value, float) else "an integer"
    rule = f"{kind} " + " and ".join(parts)
    ok = not isinstance(value, float) or math.isfinite(value)
    ok = ok and (low is None or (value >= low if low_in else value > low))
    ok = ok and (high is None or (value <= high if high_in else value < high))
    if not ok:
        raise ConfigError(_range_message(name, value, rule))


def _f(default: Any, help: str, choices: Sequence[str] | None = None) -> Any:
    """A dataclass field carrying its command-line help text (and choices)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults are generic; presets hold the tuned recipes.

    Notation follows Xu et al. (2015): ``embed_dim`` is m, ``hidden_dim`` is n, ``alpha_c`` is the
    lambda of the doubly stochastic penalty (Eq. 14), ``lambda_r``/``lambda_e`` weight the REINFORCE
    and entropy terms of the hard-attention gradient (Eq. 12).
    """

    # --- data ---
    dataset: str = _f("shapes", "caption dataset", DATASETS)
    data_root: str = _f("data", "folder of the downloaded datasets (sat_core.data.download)")
    n_train: int = _f(2000, "Shapes: number of training images")
    n_val: int = _f(200, "Shapes: number of validation images")
    n_test: int = _f(200, "Shapes: number of test images")
    image_size: int = _f(64, "input image side in pixels (Shapes renders at this size)")
    shapes_seed: int = _f(0, "Shapes: seed of the generated world")
    shapes_naming: str = _f(
        "salience", "Shapes: which object a caption names first (salience: big first, then left "
        "to right, top to bottom; any: a random one, the old captions)", NAMING_ORDERS,
    )
    resize: int = _f(0, "photos: shorter side resized to this, then centre crop (0 = squash)")
    # --- encoder ---
    encoder: str = _f("small", "CNN producing the annotation vectors a_i", ENCODERS)
    encoder_weights: str = _f(
        "default", "'default' (ImageNet for vgg19/resnet101, random for small), 'none', "
        "'shapes-regions' (small: pretrained on the Shapes world's region labels), or a file"
    )
    encoder_channels: int = _f(64, "small encoder: channels of its last conv layer (= D)")
    encoder_context: int = _f(
        1, "small encoder: stride-1 context blocks after the four strided ones (each widens the "
        "receptive field by 16 px: 0 -> 17 px, 1 -> 33 px)",
    )
    encoder_coord_scale: float = _f(
        8.0, "small encoder: the (x, y) of each cell appended to a_i spans [-s, s] (0: left out; "
        "the book's first Shapes runs had 1)",
    )
    fine_tune: bool = _f(False, "train the encoder too (the paper keeps it frozen)")
    feature_cache: str = _f(
        "auto", "train from cached annotation vectors: auto = when the encoder is frozen",
        FEATURE_CACHE,
    )
    features_dir: str = _f("", "feature cache folder ('' = <out_dir>/../features)")
    # --- decoder ---
    attention: str = _f("soft", "deterministic soft or stochastic hard attention", ATTENTIONS)
    # m and n: our paper-scale sizes; the paper gives none (the authors' COCO script: 512, 1800)
    embed_dim: int = _f(512, "m: word embedding size")
    hidden_dim: int = _f(1024, "n: LSTM hidden size")
    attn_dim: int = _f(512, "hidden size of the attention MLP f_att")
    dropout: float = _f(0.5, "dropout before the deep output layer")
    gate: bool = _f(True, "gating scalar beta on the context z_hat (Sec. 4.2.1)")
    # --- vocabulary and captions ---
    min_count: int = _f(1, "keep words seen at least this often in the training captions")
    max_size: int = _f(10000, "keep at most this many words (the paper: 10,000), specials excluded")
    max_len: int = _f(50, "longest training caption in words (longer ones are truncated)")
    # --- batches ---
    batch_size: int = _f(64, "captions per batch (per process under torchrun)")
    equal_length: bool = _f(True, "batches of captions of equal length (the paper's trick)")
    # --- optimisation ---
    epochs: int = _f(20, "maximum number of epochs")
    max_steps: int = _f(0, "stop after this many optimizer steps in total (0 = no limit)")
    optimizer: str = _f(
        "adam", "the paper: RMSProp on Flickr8k, Adam on Flickr30k/COCO", OPTIMIZERS
    )
    lr: float = _f(4e-4, "learning rate")
    weight_decay: float = _f(0.0, "L2 weight decay")
    lr_schedule: str = _f("constant", "learning-rate schedule", SCHEDULES)
    warmup_steps: int = _f(0, "linear warm-up steps (constant and cosine schedules)")
    lr_decay: float = _f(0.5, "step/plateau schedules: multiply the lr by this")
    lr_decay_epochs: int = _f(5, "step: decay every this many epochs; plateau: patience in epochs")
    # clipping is this book's choice: neither the paper nor the authors' code clips by default
    grad_clip: float = _f(5.0, "clip the gradient norm to this (0 = off)")
    alpha_c: float = _f(1.0, "lambda of the doubly stochastic penalty sum_i (1 - sum_t alpha_ti)^2")
    lambda_r: float = _f(1.0, "hard attention: weight of the REINFORCE term (Eq. 12)")
    lambda_e: float = _f(0.01, "hard attention: weight of the entropy term (Eq. 12)")
    hard_mix: float = _f(0.5, "hard attention: probability of using the expectation alpha")
    baseline_decay: float = _f(0.9, "hard attention: moving-average baseline decay")
    hard_reward: str = _f(
        "caption", "hard attention: score each s_t with log p(y|s,a) (caption, Eq. 12) or only "
        "the words from t on (to-go)", HARD_REWARDS,
    )
    patience: int = _f(5, "early stopping: epochs without a better val BLEU-4 (0 = off)")
    # --- validation and test ---
    val_beam_size: int = _f(1, "beam size of the per-epoch validation (1 = greedy)")
    val_max_len: int = _f(20, "longest caption generated at validation/test time")
    val_images: int = _f(0, "validate on this many val images (0 = all)")
    test_beam_size: int = _f(3, "beam size of the final test-split scores")
    decode_mode: str = _f(
        "auto", "context at val/test time: auto = soft, or hard-expect for hard models",
        DECODE_MODES,
    )
    test_metrics: str = _f(
        "auto", "final scores: auto = COCO metrics if Java is found, else own BLEU", TEST_METRICS
    )
    # --- runtime ---
    device: str = _f("auto", "auto | cpu | cuda | cuda:1 | mps")
    amp: str = _f("none", "mixed precision (fp16 needs CUDA and uses a GradScaler)", AMP_MODES)
    compile: bool = _f(False, "torch.compile one decoder step and the encoder (CUDA only; "
                              "ignored on CPU, where it is slower)")
    seed: int = _f(0, "seed of everything random in the run")
    num_threads: int = _f(
        0, "torch CPU threads (0 = torch's default; 1 is fastest for small models on a busy CPU)"
    )
    num_workers: int = _f(0, "DataLoader worker processes")
    out_dir: str = _f("runs/default", "where checkpoints, logs and scores go")
    checkpoint_every: int = _f(500, "write last.pt every this many steps (0 = at epoch end only)")
    log_every: int = _f(10, "refresh the progress-bar figures every this many steps")
    progress: bool = _f(True, "show tqdm progress bars")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(
                    f"{f.name}={value!r} is not valid; choose one of {', '.join(choices)}"
                )
        for f in fields(self):
            if f.name in RANGES:
                _check_range(f.name, getattr(self, f.name), *RANGES[f.name])
        from sat_core.device import DeviceError, parse_device

        try:
            parse_device(self.device)  # the name only: whether this machine has it is for train
        except DeviceError as e:
            raise ConfigError(str(e)) from None
        if self.lr_schedule == "plateau" and self.lr_decay >= 1:
            raise ConfigError(f"lr_decay (--lr-decay) is {self.lr_decay!r}: with --lr-schedule "
                              "plateau it must be < 1 — give --lr-decay a value in (0, 1)")
        if self.lr_schedule == "step" and self.lr_decay_epochs < 1:
            raise ConfigError(f"lr_decay_epochs (--lr-decay-epochs) is {self.lr_decay_epochs}: "
                              "with --lr-schedule step it must be >= 1 — set --lr-decay-epochs "
                              "to an integer >= 1")
        if self.encoder_weights == "shapes-regions" and (self.encoder, self.dataset) != (
                "small", "shapes"):
            raise ConfigError(
                "encoder_weights='shapes-regions' pretrains the small CNN on the Shapes world: "
                f"it needs --encoder small --dataset shapes (got {self.encoder}, {self.dataset})"
            )
        if self.fine_tune and self.feature_cache == "on":
            raise ConfigError(
                "feature_cache='on' with fine_tune: a fine-tuned encoder cannot be cached; "
                "use --feature-cache auto (or off)"
            )

    # --- derived settings ---
    @property
    def uses_feature_cache(self) -> bool:
        """Train from cached annotation vectors? ``auto``: exactly when the encoder is frozen."""
        if self.feature_cache == "auto":
            return not self.fine_tune
        return self.feature_cache == "on"

    @property
    def eval_mode(self) -> str:
        """Decoder mode at validation/test time (``decode_mode``, resolved)."""
        if self.decode_mode != "auto":
            return self.decode_mode
        return "soft" if self.attention == "soft" else "hard-expect"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = True) -> TrainConfig:
        """A config from :meth:`to_dict` output; unknown keys raise unless ``strict=False``.

        A field missing from ``d`` takes its :data:`LEGACY_DEFAULTS` value if it has one (what a
        config stored before that field existed meant), else its default.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown and strict:
            raise ConfigError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**{**LEGACY_DEFAULTS, **{k: v for k, v in d.items() if k in known}})


# Fields added after configs were first stored (checkpoints, run.json), with the value that such a
# stored config meant: its model was trained that way and must be rebuilt that way.
LEGACY_DEFAULTS: dict[str, Any] = {"encoder_coord_scale": 1.0}


# Fields that change the network (its parameters or what they compute). A checkpoint made with
# different values cannot be loaded into the model the current config builds.
ARCHITECTURE_FIELDS = (
    "encoder", "encoder_weights", "encoder_channels", "encoder_context", "encoder_coord_scale",
    "fine_tune", "image_size", "attention", "embed_dim", "hidden_dim", "attn_dim", "gate",
)

# Fields that only say *where/how fast* a run executes, never what it learns: ignored when
# deciding whether an existing run matches a requested config (see train.get_or_train).
RUNTIME_FIELDS = (
    "data_root", "device", "compile", "num_threads", "num_workers", "out_dir", "checkpoint_every",
    "log_every", "progress", "features_dir", "test_metrics",
)

# The paper-scale recipe. From the paper (Sec. 4.3, 5.1): frozen VGG-19 conv5_4 (L=196, D=512),
# 10,000 words, minibatches of captions of equal length, dropout, the doubly stochastic penalty,
# early stopping on BLEU, RMSProp on Flickr8k and Adam on Flickr30k/COCO. This book's
# choices, in neither the paper nor the authors' code: m=512, n=1024 (the paper gives no sizes;
# the authors' COCO script uses 512 and 1800), gradient clipping at 5, the learning rates,
# epochs and patience of the presets below, and the 0.5 mixing coin drawn per caption (the
# authors draw one per minibatch).
_PAPER = dict(
    encoder="vgg19", encoder_weights="default", fine_tune=False, feature_cache="auto",
    image_size=224, resize=256, embed_dim=512, hidden_dim=1024, attn_dim=512, dropout=0.5,
    gate=True, min_count=1, max_size=10000, max_len=50, batch_size=64, equal_length=True,
    alpha_c=1.0, grad_clip=5.0, patience=5, val_beam_size=1, val_max_len=30, test_beam_size=3,
    lambda_r=1.0, lambda_e=0.01, hard_mix=0.5, baseline_decay=0.9, checkpoint_every=1000,
)
# The Shapes recipe (chapter 6 says where and why it departs from the paper): the small CNN
# pretrained on the world's region labels and frozen (the analogue of ImageNet VGG), each cell's
# (x, y) appended spanning [-8, 8] (relation words compare two objects' positions),
# no doubly stochastic penalty (with T < L it is smallest for uniform attention), captions up to
# 22 words.
_SHAPES = dict(
    dataset="shapes", n_train=2000, n_val=200, n_test=200, image_size=64, encoder="small",
    encoder_weights="shapes-regions", encoder_channels=64, encoder_coord_scale=8.0,
    fine_tune=False, feature_cache="auto", embed_dim=64, hidden_dim=256, attn_dim=64, dropout=0.1,
    batch_size=32, optimizer="adam", lr=3e-3, lr_schedule="cosine", epochs=10, patience=0,
    alpha_c=0.0, val_beam_size=1, val_max_len=24, test_beam_size=3, checkpoint_every=0,
    num_threads=2,
)

# The doubly stochastic penalty (Eq. 14) belongs to deterministic soft attention (Sec. 4.2.1).
# The authors' code adds it to the cost in stochastic mode too, but its gradient never reaches
# the hard model: there theano.grad's known_grads replaces the gradient through alpha by the
# REINFORCE and entropy terms. The hard presets therefore train without it (alpha_c=0).
_HARD = dict(attention="hard", alpha_c=0.0)

# The Shapes hard recipe departs from Sec. 4.1 in three measured ways (chapter 7 says why, and
# benchmarks/bench_shapes_ablation.py shows what each is worth): each location s_t is scored by the
# log-likelihood of the words from t on (reward-to-go, unbiased, far less variance than the
# whole caption's), the REINFORCE term is weighted 0.1 as in the authors' code, and 75 % of the
# captions (not 50 %) use the expected context. Its steps cost more than soft attention's (a draw
# per step), so it trains 8 epochs, not 10, to stay within three minutes on two CPU cores; 8 and 10
# epochs measured the same caption accuracy (0.905 and 0.910) and grounding (0.880 and 0.853).
_SHAPES_HARD = dict(hard_reward="to-go", lambda_r=0.1, hard_mix=0.75, epochs=8)

PRESETS: dict[str, dict[str, Any]] = {
    "shapes-soft": dict(_SHAPES, attention="soft", out_dir="runs/shapes-soft"),
    "shapes-hard": dict(_SHAPES, **_HARD, **_SHAPES_HARD, out_dir="runs/shapes-hard"),
    "flickr8k-soft": dict(_PAPER, dataset="flickr8k", attention="soft", optimizer="rmsprop",
                          lr=1e-4, epochs=30, out_dir="runs/flickr8k-soft"),
    "flickr8k-hard": dict(_PAPER, **_HARD, dataset="flickr8k", optimizer="rmsprop",
                          lr=1e-4, epochs=30, out_dir="runs/flickr8k-hard"),
    "flickr30k-soft": dict(_PAPER, dataset="flickr30k", attention="soft", optimizer="adam",
                           lr=4e-4, epochs=20, out_dir="runs/flickr30k-soft"),
    "flickr30k-hard": dict(_PAPER, **_HARD, dataset="flickr30k", optimizer="adam",
                           lr=4e-4, epochs=20, out_dir="runs/flickr30k-hard"),
    "coco-soft": dict(_PAPER, dataset="coco", attention="soft", optimizer="adam", lr=4e-4,
                      epochs=15, patience=3, out_dir="runs/coco-soft"),
    "coco-hard": dict(_PAPER, **_HARD, dataset="coco", optimizer="adam", lr=4e-4,
                      epochs=15, patience=3, out_dir="runs/coco-hard"),
}

PRESET_DOCS: dict[str, str] = {
    "shapes-soft": "Shapes world, small CNN, soft attention: a 2-core CPU in a few minutes",
    "shapes-hard": "Shapes world, small CNN, stochastic hard attention (REINFORCE + baseline)",
    "flickr8k-soft": "the paper on Flickr8k: frozen VGG-19 conv5_4, 10k words, RMSProp, soft",
    "flickr8k-hard": "the paper on Flickr8k: frozen VGG-19 conv5_4, 10k words, RMSProp, hard",
    "flickr30k-soft": "the paper on Flickr30k: frozen VGG-19 conv5_4, 10k words, Adam, soft",
    "flickr30k-hard": "the paper on Flickr30k: frozen VGG-19 conv5_4, 10k words, Adam, hard",
    "coco-soft": "the paper on MS COCO: frozen VGG-19 conv5_4, 10k words, Adam, soft",
    "coco-hard": "the paper on MS COCO: frozen VGG-19 conv5_4, 10k words, Adam, hard",
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The config of preset ``name`` with ``overrides`` applied (unknown names list the presets)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; the presets are: {', '.join(PRESETS)}")
    return make_config(PRESETS[name], **overrides)


def make_config(base: dict[str, Any] | TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """Defaults <- ``base`` <- ``overrides``; unknown field names raise :class:`ConfigError`."""
    values = base.to_dict() if isinstance(base, TrainConfig) else dict(base or {})
    values.update(overrides)
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config fields: {', '.join(unknown)}; "
            "see `python -m sat_core.train --help` for the list"
        )
    return TrainConfig(**values)


# --- command line ---------------------------------------------------------------------------


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def _preset_help() -> str:
    width = max(len(n) for n in PRESETS)
    return "\n".join(f"  {n:<{width}}  {PRESET_DOCS[n]}" for n in PRESETS)


def add_config_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--preset`` and one option per :class:`TrainConfig` field (``--embed-dim``, ...).

    Options default to ``argparse.SUPPRESS`` so that only what the user typed overrides the
    preset; ``--help`` shows the dataclass default of each field. Booleans get ``--x/--no-x``.
    """
    parser.add_argument(
        "--preset", default=None, metavar="NAME",
        help="start from a named preset (see the list below); options given override it",
    )
    types = _field_types()
    group = parser.add_argument_group("training configuration (every TrainConfig field)")
    for f in fields(TrainConfig):
        typ = types[f.name]
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata.get('help', '')} (default: {f.default})".replace("%", "%%")
        kwargs: dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if typ is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = typ
            kwargs["metavar"] = typ.__name__.upper()
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        group.add_argument(flag, **kwargs)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults <- preset (if ``args.preset``) <- the fields given on the command line."""
    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    name = getattr(args, "preset", None)
    return preset(name, **given) if name else make_config(None, **given)


def build_parser(prog: str = "python -m sat_core.train", description: str = "") -> (
    argparse.ArgumentParser
):
    from sat_core.errors import ArgumentParser  # usage errors: one ``error:`` line, status 2

    parser = ArgumentParser(
        prog=prog, description=description,
        epilog="presets:\n" + _preset_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return add_config_arguments(parser)


def parse_config(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse a command line into a :class:`TrainConfig`; errors exit with argparse's message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return config_from_args(args)
    except ConfigError as e:
        parser.error(str(e))
    raise AssertionError("unreachable")


def config_diff(a: TrainConfig, b: TrainConfig, names: Sequence[str] | None = None) -> dict:
    """``{field: (a_value, b_value)}`` where ``a`` and ``b`` differ (among ``names``)."""
    names = names if names is not None else [f.name for f in fields(TrainConfig)]
    return {n: (getattr(a, n), getattr(b, n)) for n in names if getattr(a, n) != getattr(b, n)}


__all__ = [
    "ARCHITECTURE_FIELDS", "ConfigError", "PRESETS", "PRESET_DOCS", "RUNTIME_FIELDS",
    "TrainConfig", "add_config_arguments", "build_parser", "config_diff", "config_from_args",
    "make_config", "parse_config", "preset",
]
