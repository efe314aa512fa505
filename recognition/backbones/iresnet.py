"""IResNet (Deng et al., ArcFace), state_dict-compatible with insightface ``arcface_torch``.

Module names, parameter shapes and registration order follow ``arcface_torch/backbones/
iresnet.py`` exactly (reference §5.2), so a published insightface ``backbone.pth`` loads with
``load_state_dict(..., strict=True)`` and no key surgery.

Layout for (B, 3, 112, 112) inputs: stem ``conv1`` 3x3/1 -> ``bn1`` -> ``prelu``; four stages
``layer1..layer4`` (64/128/256/512 channels, each entered with stride 2: 112->56->28->14->7) of
:class:`IBasicBlock`; head ``bn2`` -> flatten -> ``dropout`` -> ``fc`` (512*7*7 -> 512) ->
``features`` (BatchNorm1d whose weight is fixed to 1).
"""

from __future__ import annotations

import torch
from torch import nn

from recognition.backbones._utils import body_autocast, check_input
from recognition.backbones.registry import register_backbone

__all__ = ["IBasicBlock", "IResNet", "iresnet18", "iresnet34", "iresnet50", "iresnet100",
           "iresnet200"]

BN_EPS = 1e-5
INPUT_SIZE = 112


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: bn1 -> conv1 -> bn2 -> prelu -> conv2 -> bn3 (+ x).

    The stride sits on ``conv2``; there is no activation after the addition.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Registration order = state_dict order: bn1, conv1, bn2, prelu, conv2, bn3, downsample.
        self.bn1 = nn.BatchNorm2d(in_channels, eps=BN_EPS)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=BN_EPS)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        out += x if self.downsample is None else self.downsample(x)  # BN backward keeps no output
        return out


class IResNet(nn.Module):
    """IResNet face-embedding backbone (insightface ``arcface_torch`` layout).

    Args:
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for IResNet-34.
        num_features: embedding size (512 in every published model).
        dropout: dropout probability before ``fc`` (insightface uses 0; 0.4 in some configs).
        fp16: run the convolutional body under ``torch.autocast`` with ``amp_dtype`` and the
            ``fc``/``features`` head in float32, as insightface's ``fp16=True`` does. The
            autocast follows the input's device, so on CPU pass ``amp_dtype=torch.bfloat16``.
            Leave it False to control precision with your own ``torch.autocast`` region.
        amp_dtype: the autocast dtype when ``fp16`` is set (``torch.float16`` or
            ``torch.bfloat16``).
        zero_init_residual: zero ``bn2`` weights of each block at init (insightface option).

    Input (B, 3, 112, 112) normalised with mean = std = 0.5; output (B, num_features) raw
    embeddings. Other sizes raise an error: ``fc`` is fixed to the 7x7 final map. Works with
    ``model.to(memory_format=torch.channels_last)``.
    """

    fc_scale = 7 * 7

    def __init__(self, layers: tuple[int, int, int, int] | list[int], num_features: int = 512,
                 dropout: float = 0.0, fp16: bool = False,
                 amp_dtype: torch.dtype = torch.float16,
                 zero_init_residual: bool = False) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {layers}")
        self.fp16 = fp16
        self.amp_dtype = amp_dtype
        self.num_features = num_features
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=BN_EPS)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        for index, (channels, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            setattr(self, f"layer{index + 1}", self._make_stage(in_channels, channels, blocks))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(512, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(512 * self.fc_scale, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=BN_EPS)
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1, stride=2, bias=False),
            nn.BatchNorm2d(channels, eps=BN_EPS),
        )
        first = IBasicBlock(in_channels, channels, stride=2, downsample=downsample)
        return nn.Sequential(first, *(IBasicBlock(channels, channels) for _ in range(blocks - 1)))

    def _init_weights(self, zero_init_residual: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.1)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, IBasicBlock):
                    nn.init.zeros_(module.bn2.weight)
        # The embedding BN only re-centres and re-scales per feature: its weight stays 1.
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional body: (B, 3, 112, 112) -> (B, 512, 7, 7) after ``bn2``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.bn2(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, INPUT_SIZE, type(self).__name__)
        with body_autocast(x, self.fp16, self.amp_dtype):
            x = self.dropout(torch.flatten(self.forward_features(x), 1))
        if self.fp16:
            x = x.float()
        return self.features(self.fc(x))


@register_backbone
def iresnet18(**kwargs) -> IResNet:
    """IResNet-18: blocks (2, 2, 2, 2), 24.0 M parameters, 2.61 GMACs at 112x112."""
    return IResNet((2, 2, 2, 2), **kwargs)


@register_backbone
def iresnet34(**kwargs) -> IResNet:
    """IResNet-34: blocks (3, 4, 6, 3), 34.1 M parameters, 4.46 GMACs at 112x112."""
    return IResNet((3, 4, 6, 3), **kwargs)


@register_backbone
def iresnet50(**kwargs) -> IResNet:
    """IResNet-50: blocks (3, 4, 14, 3), 43.6 M parameters, 6.31 GMACs at 112x112."""
    return IResNet((3, 4, 14, 3), **kwargs)


@register_backbone
def iresnet100(**kwargs) -> IResNet:
    """IResNet-100: blocks (3, 13, 30, 3), 65.2 M parameters, 12.09 GMACs at 112x112."""
    return IResNet((3, 13, 30, 3), **kwargs)


@register_backbone
def iresnet200(**kwargs) -> IResNet:
    """IResNet-200: blocks (6, 26, 60, 6)."""
    return IResNet((6, 26, 60, 6), **kwargs)
