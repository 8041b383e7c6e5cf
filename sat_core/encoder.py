"""The encoder: an image becomes L annotation vectors a_1..a_L, each of dimension D (Sec. 3.1.1).

    a = {a_1, ..., a_L},  a_i in R^D                                   (Sec. 3.1.1)

"We use a convolutional neural network in order to extract a set of feature vectors which we refer
to as annotation vectors ... extracting features from a lower convolutional layer" so that each a_i
describes one region of the image, and the decoder can attend to it. Every encoder here is an
``nn.Module`` with ``forward(images (B, 3, H, W)) -> a (B, L, D)``: the (D, h, w) feature map is
flattened row-major, so location ``i = row * w + col``.

* ``vgg19``: the paper's encoder, VGG-19 up to conv5_4 and its ReLU, before the last max-pool:
  224 x 224 -> 14 x 14 x 512, i.e. L = 196, D = 512.
* ``resnet101``: ResNet-101 up to ``layer4`` then an adaptive average pool to 14 x 14 (D = 2048);
  what most PyTorch tutorials use.
* ``small``: a 4-layer CNN for the Shapes world, trained from scratch on a CPU: 64 x 64 -> 8 x 8
  (L = 64), with 2 coordinate channels appended so the decoder knows where a_i is.
* ``precomputed``: the identity, for annotation vectors read from the feature cache
  (``sat_core.features``).

Pretrained torchvision weights expect images normalised with the ImageNet statistics
(``sat_core.data.records.normalize_image``).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import nn

from sat_core.paths import shown_path

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# torchvision is imported where VGG-19 or ResNet-101 are built, not here: importing it costs
# seconds (it pulls in torch._dynamo), and the Shapes chapters never need it.
WeightsSpec = Union[None, str, os.PathLike, "WeightsEnum"]
FineTune = None | bool | int

ENCODER_NAMES = ("vgg19", "resnet101", "small", "precomputed")
_STATE_DICT_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".pkl"}


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but could not be downloaded (no internet)."""

    def __init__(self, weights: WeightsEnum, reason: BaseException) -> None:
        self.weights = weights
        self.url = weights.url
        self.reason = reason
        filename = os.path.basename(weights.url)
        cache_file = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
        super().__init__(
            f"could not download the pretrained weights {weights} from {weights.url} "
            f"({type(reason).__name__}: {reason}): no internet access, or the address is blocked.\n"
            "What to do, any one of:\n"
            "  1. run with weights=None (random init) -- the Shapes chapters need no pretrained "
            "weights;\n"
            "  2. download the file once where there is internet (e.g. Colab: "
            f"torch.hub.download_url_to_file('{weights.url}', '{filename}')), copy it here and "
            "pass its path: weights='/path/to/" + filename + "';\n"
            f"  3. or place it at {shown_path(cache_file)} ($TORCH_HOME/hub/checkpoints/"
            f"{filename}), where torchvision finds it without downloading."
        )


# --------------------------------------------------------------------------------------------
# The common interface
# --------------------------------------------------------------------------------------------


class Encoder(nn.Module):
    """Base class: images (B, 3, H, W) -> annotation vectors a (B, L, D), Sec. 3.1.1.

    Attributes, for the default input size ``image_size``: ``feature_dim`` (D), ``grid`` (h, w),
    ``num_locations`` (L = h * w) and ``name``.

    Freezing (``set_fine_tune``): the encoder is cut into ``blocks()`` (input -> output); the last
    ``k`` blocks are trainable, the others have ``requires_grad=False`` AND stay in eval mode: this
    class overrides ``train()`` so that a parent's ``model.train()`` puts the frozen blocks straight
    back into eval mode, so their BatchNorm layers keep using (and never update) their running
    statistics.
    """

    name: str = "encoder"

    def __init__(self, feature_dim: int, grid: tuple[int, int], image_size: int) -> None:
        super().__init__()
        self.feature_dim = int(feature_dim)
        self.grid = (int(grid[0]), int(grid[1]))
        self.num_locations = self.grid[0] * self.grid[1]
        self.image_size = int(image_size)
        self.weights_tag = "random-init"  # where the weights came from; recorded by feature caches
        self._num_trainable_blocks = 1 << 30  # all trainable, as for any nn.Module

    # -- subclasses provide these ------------------------------------------------------------
    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> feature map (B, D, h, w)."""
        raise NotImplementedError

    def blocks(self) -> list[nn.Module]:
        """The encoder's stages from input to output; ``fine_tune=k`` trains the last k."""
        raise NotImplementedError

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the annotation grid for an input of ``height`` x ``width`` pixels."""
        return self.grid

    def _from_torchvision_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Rename a torchvision model's state_dict to this encoder's keys (drop the classifier)."""
        return state_dict

    # -- the forward pass --------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> a (B, L, D), L = h * w, location i = row * w + col."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"the {self.name} encoder expects images of shape (B, 3, H, W), got "
                f"{tuple(images.shape)}; cached annotation vectors (B, L, D) go with "
                "build_encoder('precomputed', ...)"
            )
        fmap = self.feature_map(images)
        return fmap.flatten(2).transpose(1, 2).contiguous()

    # -- freezing ----------------------------------------------------------------------------
    def set_fine_tune(self, fine_tune: bool | int) -> None:
        """False: freeze all; True: train all; k (int): train the last k ``blocks()`` only."""
        blocks = self.blocks()
        if isinstance(fine_tune, bool):
            k = len(blocks) if fine_tune else 0
        elif isinstance(fine_tune, int) and fine_tune >= 0:
            k = min(fine_tune, len(blocks))
        else:
            raise ValueError(
                f"fine_tune must be True, False or a number of blocks >= 0, got {fine_tune!r}"
            )
        self._num_trainable_blocks = k
        for i, block in enumerate(blocks):
            trainable = i >= len(blocks) - k
            for p in block.parameters():
                p.requires_grad_(trainable)
        self.train(self.training)  # re-apply eval mode to the frozen blocks

    def train(self, mode: bool = True) -> Encoder:
        """Like ``nn.Module.train``, but frozen blocks always stay in eval mode."""
        super().train(mode)
        blocks = self.blocks()
        for block in blocks[: len(blocks) - self._num_trainable_blocks]:
            block.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser should see (``requires_grad=True``)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- weights -----------------------------------------------------------------------------
    def load_weights_file(self, path: str | os.PathLike) -> None:
        """Load a local state_dict file: this encoder's own, or the full torchvision model's."""
        state_dict = _read_state_dict(path)
        self.load_weights(state_dict, source=str(path))
        self.weights_tag = str(path)

    def load_weights(self, state_dict: dict[str, torch.Tensor], source: str) -> None:
        """Load ``state_dict`` (own keys, or torchvision keys that are renamed); clear errors."""
        if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from DDP
            state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
        own = self.state_dict()
        if not any(k in own for k in state_dict):
            state_dict = self._from_torchvision_keys(state_dict)
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"the weights in {source} do not fit the {self.name} encoder: "
                f"{len(missing)} missing keys {missing[:4]}, {len(unexpected)} unexpected keys "
                f"{unexpected[:4]}. Pass a state_dict of this encoder (torch.save(enc.state_dict()"
                ", path)) or of the matching torchvision model."
            )
        bad = [k for k in own if own[k].shape != state_dict[k].shape]
        if bad:
            k = bad[0]
            raise ValueError(
                f"the weights in {source} do not fit the {self.name} encoder: {k} has shape "
                f"{tuple(state_dict[k].shape)}, expected {tuple(own[k].shape)} (another width?)"
            )
        self.load_state_dict(state_dict, strict=True)


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass weights=None for a random init, or the "
            "path of a state_dict saved with torch.save(model.state_dict(), path)"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure gets the same advice
        raise ValueError(
            f"cannot read weights file {path} ({type(e).__name__}: {e}); expected a state_dict "
            "saved with torch.save(model.state_dict(), path)"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"weights file {path} does not hold a state_dict (a dict of tensors) but "
            f"{type(obj).__name__}; save one with torch.save(model.state_dict(), path)"
        )
    return obj


# --------------------------------------------------------------------------------------------
# VGG-19 (the paper's encoder) and ResNet-101
# --------------------------------------------------------------------------------------------

VGG19_CONV5_4_RELU = 36  # features[:36] ends with conv5_4 + ReLU, before the last max-pool


class VGG19Encoder(Encoder):
    """VGG-19 ``features[:36]``: conv1_1 .. conv5_4 + ReLU, no last max-pool (Sec. 4.3).

    224 x 224 -> 14 x 14 x 512 (4 max-pools: grid = image_size // 16). ``blocks()`` are the five
    conv stages, so ``fine_tune=1`` trains conv5_1..conv5_4, ``fine_tune=2`` adds conv4_x, ...
    """

    name = "vgg19"

    def __init__(self, image_size: int = 224) -> None:
        g = image_size // 16
        super().__init__(feature_dim=512, grid=(g, g), image_size=image_size)
        # Only the conv layers are built (the 120M-parameter classifier is never needed); the
        # layer list and the init are torchvision's own, so the state_dict keys line up.
        from torchvision.models import vgg

        features = vgg.make_layers(vgg.cfgs["E"])
        self.cnn = features[:VGG19_CONV5_4_RELU]
        for m in self.cnn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.cnn(images)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        return height // 16, width // 16  # four 2x2 max-pools

    def blocks(self) -> list[nn.Module]:
        stages, start = [], 0
        for i, layer in enumerate(self.cnn):
            if isinstance(layer, nn.MaxPool2d):
                stages.append(self.cnn[start : i + 1])
                start = i + 1
        stages.append(self.cnn[start:])  # conv5_1 .. conv5_4 (+ ReLUs)
        return stages

    def _from_torchvision_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        out = {}
        for k, v in state_dict.items():
            parts = k.split(".")
            if parts[0] == "features" and int(parts[1]) < VGG19_CONV5_4_RELU:
                out["cnn." + ".".join(parts[1:])] = v
        return out


class ResNet101Encoder(Encoder):
    """ResNet-101 up to ``layer4``, then ``AdaptiveAvgPool2d(grid)`` -> (B, 196, 2048).

    At 224 x 224 ``layer4`` is 7 x 7; the pool resamples it to ``grid`` x ``grid`` (14 by default)
    whatever the input size. ``blocks()`` = [stem, layer1, layer2, layer3, layer4], so
    ``fine_tune=1`` trains layer4, ``fine_tune=2`` layer3 and layer4, ...
    """

    name = "resnet101"
    _TORCHVISION_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, image_size: int = 224, grid: int = 14) -> None:
        super().__init__(feature_dim=2048, grid=(grid, grid), image_size=image_size)
        from torchvision.models import resnet101

        resnet = resnet101(weights=None)
        self.cnn = nn.Sequential(
            OrderedDict((n, getattr(resnet, n)) for n in self._TORCHVISION_PARTS)
        )
        self.pool = nn.AdaptiveAvgPool2d((grid, grid))

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cnn(images))

    def blocks(self) -> list[nn.Module]:
        return [self.cnn[:4], self.cnn.layer1, self.cnn.layer2, self.cnn.layer3, self.cnn.layer4]

    def _from_torchvision_keys(self, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
        keep = set(self._TORCHVISION_PARTS)
        return {"cnn." + k: v for k, v in state_dict.items() if k.split(".")[0] in keep}


# --------------------------------------------------------------------------------------------
# The small Shapes encoder
# --------------------------------------------------------------------------------------------


def conv_block(c_in: int, c_out: int, stride: int, pad: tuple[int, int, int, int]) -> nn.Sequential:
    """ZeroPad2d(pad) -> 3x3 conv (stride) -> BatchNorm -> ReLU: one local step.

    With stride 2 a one-sided padding (1 on one side, 0 on the other) halves any size exactly
    (floor(n / 2)); which side is chosen places the receptive field over its own cell.
    """
    return nn.Sequential(
        nn.ZeroPad2d(pad),
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def coordinate_channels(h: int, w: int, device: torch.device | None = None,
                        scale: float = 1.0) -> torch.Tensor:
    """(2, h, w): channel 0 = x (column), channel 1 = y (row), both spanning [-scale, scale]."""
    ys = torch.linspace(-scale, scale, h, device=device) if h > 1 else torch.zeros(1, device=device)
    xs = torch.linspace(-scale, scale, w, device=device) if w > 1 else torch.zeros(1, device=device)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy])


class SmallEncoder(Encoder):
    """A compact CNN whose annotation vectors stay LOCAL, so attention can localise (Shapes).

    Four ``conv_block``s (3x3 kernels, strides 1, 2, 2, 2) -> grid = image_size // 8 (64 -> 8 x 8,
    L = 64), then ``context`` stride-1 blocks on that grid. Receptive field
    (``receptive_field(encoder)``): 1 + 2*1 + 2*1 + 2*2 + 2*4 = 17 px after the four blocks, +16 px
    per context block: 33 px with the default ``context=1``, enough to hold a whole big object
    (at most 31 px wide), so one a_i can tell a big square from a big circle. Cell ``c`` sees
    pixels ``8c - 12 .. 8c + 20`` along each axis, centred within half a pixel of its own 8 x 8
    patch. Then 2 coordinate channels (x, y of the cell, spanning [-coord_scale, coord_scale]:
    ``coordinate_channels``) are appended to every a_i, so D = channels + 2 (default 96 + 2 = 98);
    ``coord_scale=0`` leaves them out. The default 8 makes a one-cell step (16/7 on the 8 x 8
    grid) larger than a typical CNN feature, so position weighs in the attention scores and the
    LSTM from the first update: relation words need the decoder to compare two objects' positions
    (chapter 6 measures what the scale is worth).

    Locality is exact in eval mode; in train mode BatchNorm's batch statistics couple all
    positions (through two numbers per channel). Built alone, the encoder is trainable
    (``fine_tune=True``); the Shapes presets pretrain it on the world's region labels and freeze it
    (``sat_core.pretrain``), as the paper freezes an ImageNet-trained VGG.
    """

    name = "small"

    def __init__(self, channels: int = 96, image_size: int = 64, coord_scale: float = 8.0,
                 context: int = 1) -> None:
        g = image_size // 8
        if not coord_scale >= 0:
            raise ValueError(f"coord_scale must be >= 0 (0: no coordinates), got {coord_scale}")
        super().__init__(feature_dim=channels + (2 if coord_scale else 0), grid=(g, g),
                         image_size=image_size)
        if context < 0:
            raise ValueError(f"context must be >= 0 blocks, got {context}")
        widths = (max(8, channels // 4), max(8, channels // 2), channels, channels)
        widths += (channels,) * context
        strides = (1, 2, 2, 2) + (1,) * context
        # ZeroPad2d order: (left, right, top, bottom)
        pads = ((1, 1, 1, 1), (1, 0, 1, 0), (1, 0, 1, 0), (0, 1, 0, 1)) + ((1, 1, 1, 1),) * context
        layers, c_in = [], 3
        for c_out, s, p in zip(widths, strides, pads, strict=True):
            layers.append(conv_block(c_in, c_out, s, p))
            c_in = c_out
        self.cnn = nn.Sequential(*layers)
        self.channels = channels
        self.coord_scale = float(coord_scale)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.cnn(images)
        if not self.coord_scale:
            return fmap
        b, _, h, w = fmap.shape
        xy = coordinate_channels(h, w, fmap.device, self.coord_scale).to(fmap.dtype)
        return torch.cat([fmap, xy.unsqueeze(0).expand(b, -1, -1, -1)], dim=1)

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        return height // 8, width // 8  # three exact halvings

    def blocks(self) -> list[nn.Module]:
        return list(self.cnn)


class PrecomputedEncoder(Encoder):
    """The identity on cached annotation vectors a (B, L, D) (see ``sat_core.features``)."""

    name = "precomputed"

    def __init__(self, feature_dim: int, grid: tuple[int, int] | int, image_size: int = 0) -> None:
        grid = (grid, grid) if isinstance(grid, int) else grid
        super().__init__(feature_dim=feature_dim, grid=grid, image_size=image_size)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if a.ndim != 3 or a.shape[-1] != self.feature_dim:
            raise ValueError(
                f"the precomputed encoder expects annotation vectors (B, L, {self.feature_dim}), "
                f"got {tuple(a.shape)}; images go through build_encoder('vgg19' | 'resnet101' | "
                "'small')"
            )
        return a

    def blocks(self) -> list[nn.Module]:
        return []


# --------------------------------------------------------------------------------------------
# build_encoder
# --------------------------------------------------------------------------------------------


def _is_weights_enum(obj: object) -> bool:
    """Whether ``obj`` is a torchvision weights enum (never, if torchvision was not imported)."""
    models = sys.modules.get("torchvision.models")
    return models is not None and isinstance(obj, models.WeightsEnum)


def _resolve_weights(arch: str, weights: WeightsSpec) -> WeightsEnum | Path | None:
    """None | torchvision enum | its name ("DEFAULT", "IMAGENET1K_V1") | path of a state_dict."""
    if weights is None:
        return None
    enum_cls = None
    if arch in ("vgg19", "resnet101"):
        from torchvision.models import get_model_weights

        enum_cls = get_model_weights(arch)
    if _is_weights_enum(weights):
        if enum_cls is None or not isinstance(weights, enum_cls):
            raise ValueError(f"weights {weights} are not weights of the {arch} encoder")
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, a name, an enum or a path, got {type(weights)}")
    text = str(weights)
    if enum_cls is not None:
        short = text.removeprefix(enum_cls.__name__ + ".")
        if short in enum_cls.__members__:
            return enum_cls[short]
    path = Path(text)
    if path.exists() or "/" in text or os.sep in text or path.suffix in _STATE_DICT_SUFFIXES:
        return path
    names = ", ".join(enum_cls.__members__) if enum_cls is not None else "(none)"
    raise ValueError(
        f"unknown weights {text!r} for the {arch} encoder: use None (random init), a torchvision "
        f"weights name [{names}], or the path of a state_dict file"
    )


def _download_state_dict(weights: WeightsEnum, progress: bool = True) -> dict[str, torch.Tensor]:
    """torchvision's pretrained state_dict, from $TORCH_HOME/hub/checkpoints or the internet."""
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except OSError as e:  # URLError, socket timeouts, connection resets, unwritable cache dir
        raise PretrainedWeightsUnavailable(weights, e) from e


def build_encoder(
    name: str, *, weights: WeightsSpec = None, fine_tune: FineTune = None, **kw: Any
) -> Encoder:
    """Build an encoder by name: ``"vgg19"``, ``"resnet101"``, ``"small"`` or ``"precomputed"``.

    weights: None (random init); a torchvision weights enum or its name (``"DEFAULT"``,
        ``"IMAGENET1K_V1"``); or the path of a local state_dict file (this encoder's own, or the
        whole torchvision model's), read with ``torch.load(weights_only=True)``. A failed download
        raises :class:`PretrainedWeightsUnavailable` saying what to do.
    fine_tune: False freezes everything (and keeps it in eval mode); True trains everything;
        an int k trains the last k ``blocks()`` only. None = the encoder's default: frozen for
        ``vgg19``/``resnet101`` (as in the paper), trainable for ``small``.
    kw: ``progress`` (download bar), ``image_size`` (all), ``grid`` (resnet101: pooled grid
        side), ``channels``, ``coord_scale`` and ``context`` (small), ``feature_dim`` and
        ``grid`` (precomputed).
    """
    if name not in ENCODER_NAMES:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODER_NAMES)}")
    if name == "precomputed":
        return PrecomputedEncoder(**kw)
    progress = kw.pop("progress", True)
    resolved = _resolve_weights(name, weights)
    state_dict = None
    if _is_weights_enum(resolved):  # download (or fail) before building anything
        state_dict = _download_state_dict(resolved, progress=progress)
    if name == "vgg19":
        encoder: Encoder = VGG19Encoder(**kw)
    elif name == "resnet101":
        encoder = ResNet101Encoder(**kw)
    else:
        encoder = SmallEncoder(**kw)
    if state_dict is not None:
        encoder.load_weights(state_dict, source=str(resolved))
        encoder.weights_tag = str(resolved)
    elif isinstance(resolved, Path):
        encoder.load_weights_file(resolved)
    if fine_tune is None:
        fine_tune = name == "small"
    encoder.set_fine_tune(fine_tune)
    return encoder


# --------------------------------------------------------------------------------------------
# Receptive field (for the book's figure of what one a_i "sees")
# --------------------------------------------------------------------------------------------

_POINTWISE = (
    nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.BatchNorm2d, nn.Dropout, nn.Dropout2d,
)


def _layers(module: nn.Module) -> Iterator[nn.Module]:
    """Leaf layers in execution order; for residual blocks the main path (longest) only."""
    children = list(module.named_children())
    if not children:
        yield module
        return
    for name, child in children:
        if name == "downsample":  # ResNet shortcut projection (1x1): never the longest path
            continue
        yield from _layers(child)


def _square(value: Any, what: str, layer: nn.Module) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"receptive_field handles square layers only; {layer} has {what}")
        value = value[0]
    return int(value)


def receptive_field_geometry(encoder: str | nn.Module) -> tuple[int, int, int]:
    """(size, stride, start) in input pixels, walking the layer list (square layers).

    Cell ``j`` (along either axis) sees input pixels ``start + j * stride`` to
    ``start + j * stride + size - 1``. Per layer with kernel k, dilation d, stride s and
    left/top padding p, from (size, stride, start) = (1, 1, 0):
        start -= p * stride;  size += d * (k - 1) * stride;  stride *= s.
    Pointwise layers change nothing; adaptive pools (ResNet's resampling to 14 x 14) are skipped.
    """
    if isinstance(encoder, str):
        with torch.device("meta"):  # no memory, no init cost: only the layer list matters
            encoder = build_encoder(encoder)
    size, stride, start = 1, 1, 0
    for layer in _layers(encoder):
        if isinstance(layer, (nn.ZeroPad2d, nn.ConstantPad2d)):
            left, right, top, bottom = layer.padding
            if (left, right) != (top, bottom):
                raise ValueError(f"receptive_field handles square layers only; {layer} is not")
            start -= left * stride
        elif isinstance(layer, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k = _square(layer.kernel_size, "kernel_size", layer)
            s = _square(layer.stride, "stride", layer)
            d = _square(getattr(layer, "dilation", 1), "dilation", layer)
            pad = layer.padding
            if pad == "valid":
                pad = 0
            elif pad == "same":
                pad = d * (k - 1) // 2
            p = _square(pad, "padding", layer)
            start -= p * stride
            size += d * (k - 1) * stride
            stride *= s
        elif isinstance(layer, (*_POINTWISE, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            continue
        else:
            raise ValueError(f"receptive_field does not know the layer {layer}")
    return size, stride, start


def receptive_field(encoder: str | nn.Module) -> int:
    """Receptive field in input pixels of one annotation vector a_i (one cell of the grid).

    ``vgg19``: 252 px at conv5_4 (more than the 224-px image: every a_i sees it all, but is
    centred on its own 16 x 16 cell and weighs the centre most); ``small``: 33 px (about four
    8-px cells, half the 64-px image).
    """
    return receptive_field_geometry(encoder)[0]
