"""The CNNs a sweep can train: a small registry of 1x48x48 -> 7-logit networks.

Every constructor takes a `ModelConfig` and the input side (48, or the crop size of a model trained on random
crops: `TrainConfig.crop`) and returns an `nn.Module` mapping a float batch of shape (N, 1, S, S) to (N, 7)
logits (no softmax inside); the module's `input_size` attribute is S, which evaluation reads to cut its views.
Input normalisation and augmentation belong to the trainer, not the model.

Normalisation layers on conv feature maps (`ModelConfig.norm`):
  - "batch": `nn.BatchNorm2d(C)`.
  - "layer": `nn.GroupNorm(1, C)`, i.e. layer norm that normalises each sample over (C, H, W) with a
    per-channel affine; it does not depend on the batch, so it behaves the same in train and eval.
  - "none": `nn.Identity()`; only then do convolutions carry a bias (a norm's shift makes it redundant).

Pooling (`ModelConfig.pooling`): "max"/"avg" end every stage with a 2x2 pool; "none" makes the first
conv (or block) of every stage use stride 2 instead, so all three shrink the map by 2 per stage.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from fer_sweep.config import (
    HEADS,
    IMAGE_SIZE,
    NORMS,
    NUM_CLASSES,
    POOLINGS,
    ModelConfig,
    RunConfig,
    TrainConfig,
    UserError,
)

# Final layer init: std 0.05/sqrt(fan_in) keeps the first logits small, so the initial loss
# is ~ln 7 whatever the depth, yet every earlier layer still gets a gradient on the first step.
HEAD_INIT_GAIN = 0.05


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _conv(c_in: int, c_out: int, kernel: int, stride: int, norm: str) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=norm == "none")


def _conv_size(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def _pool(kind: str) -> nn.Module:
    return nn.MaxPool2d(2) if kind == "max" else nn.AvgPool2d(2)


def _check(cfg: ModelConfig, input_size: int = IMAGE_SIZE) -> None:
    if not 1 <= input_size <= IMAGE_SIZE:
        raise UserError(f"input size must be in 1..{IMAGE_SIZE} (a crop of the {IMAGE_SIZE}x{IMAGE_SIZE} face), "
                        f"got {input_size}")
    for name, value, known in (("norm", cfg.norm, NORMS), ("pooling", cfg.pooling, POOLINGS),
                               ("head", cfg.head, HEADS)):
        if value not in known:
            raise UserError(f"unknown {name} {value!r} (known: {', '.join(known)})")
    if not cfg.conv:
        raise UserError("model needs at least one conv stage")
    for channels, kernel in cfg.conv:
        if channels < 1 or kernel < 1:
            raise UserError(f"bad conv stage ({channels}, {kernel}): channels and kernel must be >= 1")
    if cfg.depth < 1:
        raise UserError(f"depth must be >= 1, got {cfg.depth}")
    for name, p in (("dropout", cfg.dropout), ("stage_dropout", cfg.stage_dropout)):
        if not 0.0 <= p < 1.0:
            raise UserError(f"{name} must be in [0, 1), got {p}")
    if cfg.fc_units < 0:
        raise UserError(f"fc_units must be >= 0, got {cfg.fc_units}")


def _stage_tail(cfg: ModelConfig, layers: list[nn.Module], size: int) -> int:
    """Append the stage's pooling and dropout; return the new map size."""
    if cfg.pooling != "none":
        layers.append(_pool(cfg.pooling))
        size //= 2
    if cfg.stage_dropout > 0:
        layers.append(nn.Dropout2d(cfg.stage_dropout))
    if size < 1:
        raise UserError(f"{len(cfg.conv)} stages shrink the input below 1x1; use fewer stages (or a larger crop)")
    return size


def _plain_features(cfg: ModelConfig, input_size: int) -> tuple[nn.Sequential, int, int]:
    """Stages of `depth` x (conv -> norm -> ReLU) + pool/dropout; returns (features, channels, size)."""
    layers: list[nn.Module] = []
    c_in, size = 1, input_size
    for channels, kernel in cfg.conv:
        for i in range(cfg.depth):
            stride = 2 if (i == 0 and cfg.pooling == "none") else 1
            layers += [_conv(c_in, channels, kernel, stride, cfg.norm), _norm(cfg.norm, channels),
                       nn.ReLU(inplace=True)]
            c_in, size = channels, _conv_size(size, kernel, stride)
        size = _stage_tail(cfg, layers, size)
    return nn.Sequential(*layers), c_in, size


class GlobalAvgPool(nn.Module):
    """(N, C, H, W) -> (N, C, 1, 1) mean over H and W. Same as nn.AdaptiveAvgPool2d(1), whose CUDA backward
    has no deterministic kernel (torch.use_deterministic_algorithms raises); a mean's backward does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def _head(cfg: ModelConfig, channels: int, size: int, hidden_layers: int) -> nn.Sequential:
    """Flatten (or global average pool), `hidden_layers` x [Dropout -> Linear -> ReLU], Dropout, Linear(7)."""
    if cfg.head == "gap":
        layers: list[nn.Module] = [GlobalAvgPool(), nn.Flatten()]
        width = channels
    else:
        layers, width = [nn.Flatten()], channels * size * size
    if cfg.fc_units > 0:
        for _ in range(hidden_layers):
            layers += [nn.Dropout(cfg.dropout), nn.Linear(width, cfg.fc_units), nn.ReLU(inplace=True)]
            width = cfg.fc_units
    layers += [nn.Dropout(cfg.dropout), nn.Linear(width, NUM_CLASSES)]
    return nn.Sequential(*layers)


def _init(model: nn.Module) -> nn.Module:
    """Kaiming (fan-in, ReLU) for convs and hidden linears, small final layer, zero biases."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    last = linears[-1]
    nn.init.normal_(last.weight, std=HEAD_INIT_GAIN / math.sqrt(last.in_features))
    return model


class PlainCNN(nn.Module):
    """Conv stages then a head; `cnn` uses one hidden FC layer, `vgg` two (as the VGG-style FER nets)."""

    def __init__(self, cfg: ModelConfig, hidden_layers: int, input_size: int = IMAGE_SIZE):
        super().__init__()
        _check(cfg, input_size)
        self.input_size = input_size
        self.features, channels, size = _plain_features(cfg, input_size)
        self.head = _head(cfg, channels, size, hidden_layers)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-norm-ReLU-conv-norm plus skip (1x1 conv + norm when shape changes)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str):
        super().__init__()
        self.conv1, self.norm1 = _conv(c_in, c_out, kernel, stride, norm), _norm(norm, c_out)
        self.conv2, self.norm2 = _conv(c_out, c_out, kernel, 1, norm), _norm(norm, c_out)
        self.relu = nn.ReLU(inplace=True)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=norm == "none"),
                                      _norm(norm, c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.skip(x))


class ResidualCNN(nn.Module):
    """Stem conv, then per stage `depth` basic blocks + pool/dropout, then the cnn head."""

    def __init__(self, cfg: ModelConfig, input_size: int = IMAGE_SIZE):
        super().__init__()
        _check(cfg, input_size)
        self.input_size = input_size
        c_stem, k_stem = cfg.conv[0]
        layers: list[nn.Module] = [_conv(1, c_stem, k_stem, 1, cfg.norm), _norm(cfg.norm, c_stem),
                                   nn.ReLU(inplace=True)]
        c_in, size = c_stem, _conv_size(input_size, k_stem, 1)
        for channels, kernel in cfg.conv:
            for i in range(cfg.depth):
                stride = 2 if (i == 0 and cfg.pooling == "none") else 1
                layers.append(BasicBlock(c_in, channels, kernel, stride, cfg.norm))
                c_in = channels
                size = _conv_size(_conv_size(size, kernel, stride), kernel, 1)
            size = _stage_tail(cfg, layers, size)
        self.features = nn.Sequential(*layers)
        self.head = _head(cfg, c_in, size, hidden_layers=1)
        _init(self)
        if cfg.norm == "none":
            # Without norms every block would double the activation variance; shrinking each branch's
            # last conv by 1/sqrt(blocks) keeps the growth to ~e in total (the Fixup/SkipInit idea).
            blocks = [m for m in self.modules() if isinstance(m, BasicBlock)]
            with torch.no_grad():
                for block in blocks:
                    block.conv2.weight.mul_(len(blocks) ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cnn(cfg: ModelConfig, input_size: int = IMAGE_SIZE) -> nn.Module:
    """The original notebooks' plain CNN: depth x (conv-norm-ReLU) per stage, pool, one hidden FC layer."""
    return PlainCNN(cfg, hidden_layers=1, input_size=input_size)


def residual(cfg: ModelConfig, input_size: int = IMAGE_SIZE) -> nn.Module:
    """ResNet-style CNN with basic blocks; the original notebooks' best model family."""
    return ResidualCNN(cfg, input_size=input_size)


def vgg(cfg: ModelConfig, input_size: int = IMAGE_SIZE) -> nn.Module:
    """VGG-style net after the ~73% FER2013 CNNs (e.g. conv 64-128-256-512, depth 2, two FC layers)."""
    return PlainCNN(cfg, hidden_layers=2, input_size=input_size)


# The registry: every architecture a spec may name (`ModelConfig.arch`), and the only list of them; spec validation
# reads its names from here.
MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": cnn, "residual": residual, "vgg": vgg}


def input_size_of(train: TrainConfig | dict | None) -> int:
    """The side of the square input a model trained with `train` takes: its crop, else the whole 48x48 face.
    `train` may be a config.json's "train" dict (folders written before crops existed have no key: 48)."""
    crop = (train.get("crop", 0) if isinstance(train, dict) else getattr(train, "crop", 0)) or 0
    return int(crop) or IMAGE_SIZE


def build_model(cfg: ModelConfig, *, seed: int | None = None, input_size: int = IMAGE_SIZE) -> nn.Module:
    """Build the registered model named by `cfg.arch` (on CPU) for input_size x input_size faces.

    With `seed`, the initial weights depend only on it (the global RNG state is left untouched).
    """
    if cfg.arch not in MODELS:
        raise UserError(f"unknown arch {cfg.arch!r} (known: {', '.join(MODELS)})")
    if seed is None:
        return MODELS[cfg.arch](cfg, input_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[cfg.arch](cfg, input_size)


def model_for(cfg: RunConfig, *, seed: int | None = None) -> nn.Module:
    """The model of a run: its architecture, at the input size its training recipe feeds it (the crop)."""
    return build_model(cfg.model, seed=seed, input_size=input_size_of(cfg.train))
