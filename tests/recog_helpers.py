"""Tiny backbones for the recognition tests, registered on import, so that a training run can
use them with ``--import tests.recog_helpers``."""

import torch
from torch import nn

from recognition.backbones import register_backbone
from recognition.backbones._utils import body_autocast


class TinyNet(nn.Module):
    """8x8 average pool -> small MLP (optionally a BatchNorm) -> embedding; ``fp16`` and
    ``amp_dtype`` as the built-in backbones (the Trainer passes them for ``--fp16`` on CUDA)."""

    def __init__(self, num_features: int = 512, hidden: int = 32, batch_norm: bool = True,
                 fp16: bool = False, amp_dtype: torch.dtype = torch.float16):
        super().__init__()
        self.fp16, self.amp_dtype = fp16, amp_dtype
        self.pool = nn.AdaptiveAvgPool2d(8)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8) if batch_norm else nn.Identity()
        self.act = nn.PReLU(8)
        self.fc1 = nn.Linear(8 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with body_autocast(x, self.fp16, self.amp_dtype):
            x = self.act(self.bn(self.conv(self.pool(x)))).flatten(1)
        if self.fp16:
            x = x.float()
        return self.fc2(torch.relu(self.fc1(x)))


@register_backbone
def tiny_cnn(num_features: int = 512, **kwargs) -> nn.Module:
    return TinyNet(num_features, batch_norm=True, **kwargs)


@register_backbone
def tiny_nobn(num_features: int = 512, **kwargs) -> nn.Module:
    return TinyNet(num_features, batch_norm=False, **kwargs)

