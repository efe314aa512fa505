"""MobileFaceNet (Chen et al. 2018), state_dict-compatible with insightface's ``mbf``.

A small backbone for CPU runs: about 2.06 M parameters and 0.44 GMACs at 112x112 (IResNet-34:
34 M / 4.46 G). Module names and order follow ``arcface_torch/backbones/mobilefacenet.py``,
so insightface ``mbf`` checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from parsing.core.errors import InputError
from recognition.backbones._utils import body_autocast, check_input
from recognition.backbones.registry import register_backbone

__all__ = ["MobileFaceNet", "mbf", "mbf_large"]

INPUT_SIZE = 112


class ConvBlock(nn.Module):
    """Conv -> BN -> PReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class LinearBlock(nn.Module):
    """Conv -> BN, no activation."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1,
                 padding: int = 0, groups: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel, stride, padding, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DepthWise(nn.Module):
    """Inverted bottleneck: 1x1 expand to ``hidden`` -> 3x3 depthwise -> 1x1 project."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, stride: int = 1,
                 residual: bool = False) -> None:
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden),
            ConvBlock(hidden, hidden, kernel=3, stride=stride, padding=1, groups=hidden),
            LinearBlock(hidden, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return out + x if self.residual else out


class Residual(nn.Module):
    """``num_blocks`` residual :class:`DepthWise` blocks at constant width."""

    def __init__(self, channels: int, num_blocks: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(DepthWise(channels, channels, hidden, residual=True) for _ in range(num_blocks))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class GDC(nn.Module):
    """Global depthwise convolution over the 7x7 map, then Linear + BatchNorm1d embedding."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, kernel=7, groups=512),
            nn.Flatten(),
            nn.Linear(512, num_features, bias=False),
            nn.BatchNorm1d(num_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """MobileFaceNet as in insightface ``mbf`` (``scale=2``) / ``mbf_large`` (``scale=4``).

    Args:
        num_features: embedding size.
        blocks: residual blocks in the four stages.
        scale: width multiplier of the 64/128-channel stages.
        fp16: autocast the body with ``amp_dtype`` (insightface's switch; see ``IResNet``).
        amp_dtype: autocast dtype when ``fp16`` is set.

    Input (B, 3, 112, 112) normalised with mean = std = 0.5; output (B, num_features).
    """

    def __init__(self, num_features: int = 512, blocks: tuple[int, int, int, int] = (1, 4, 6, 2),
                 scale: int = 2, fp16: bool = False,
                 amp_dtype: torch.dtype = torch.float16) -> None:
        super().__init__()
        if len(blocks) != 4 or not all(isinstance(b, int) and b >= 1 for b in blocks):
            raise InputError(f"MobileFaceNet blocks must be four integers >= 1, got {blocks}")
        if not (isinstance(scale, int) and scale >= 1 and num_features >= 1):
            raise InputError(f"MobileFaceNet scale and num_features must be >= 1, got {scale}, "
                             f"{num_features}")
        self.fp16 = fp16
        self.amp_dtype = amp_dtype
        self.num_features = num_features
        c1, c2 = 64 * scale, 128 * scale
        if blocks[0] == 1:
            stage0: nn.Module = ConvBlock(c1, c1, kernel=3, padding=1, groups=64)
        else:
            stage0 = Residual(c1, blocks[0], hidden=128)
        self.layers = nn.ModuleList([
            ConvBlock(3, c1, kernel=3, stride=2, padding=1),  # 112 -> 56
            stage0,
            DepthWise(c1, c1, hidden=128, stride=2),  # 56 -> 28
            Residual(c1, blocks[1], hidden=128),
            DepthWise(c1, c2, hidden=256, stride=2),  # 28 -> 14
            Residual(c2, blocks[2], hidden=256),
            DepthWise(c2, c2, hidden=512, stride=2),  # 14 -> 7
            Residual(c2, blocks[3], hidden=256),
        ])
        self.conv_sep = ConvBlock(c2, 512)
        self.features = GDC(num_features)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, INPUT_SIZE, type(self).__name__)
        with body_autocast(x, self.fp16, self.amp_dtype):
            for layer in self.layers:
                x = layer(x)
        if self.fp16:
            x = x.float()
        return self.features(self.conv_sep(x))


@register_backbone
def mbf(**kwargs) -> MobileFaceNet:
    """MobileFaceNet (insightface ``mbf``): blocks (1, 4, 6, 2), width scale 2."""
    return MobileFaceNet(**kwargs)


@register_backbone
def mbf_large(**kwargs) -> MobileFaceNet:
    """Wider, deeper MobileFaceNet (insightface ``mbf_large``): blocks (2, 8, 12, 4), scale 4."""
    kwargs.setdefault("blocks", (2, 8, 12, 4))
    kwargs.setdefault("scale", 4)
    return MobileFaceNet(**kwargs)
