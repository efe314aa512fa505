"""Pixel conventions: (H, W, 3) arrays -> (3, H, W) tensors -> the models' input,
``(x / 255 - 0.5) / 0.5``."""

from __future__ import annotations

import numpy as np
import torch


def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB array (read-only ones too, as PIL gives) -> a contiguous (3, H, W)
    uint8 tensor of its own."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1)))


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) RGB -> float32 in [-1, 1] (mean = std = 0.5, reference §5.1)."""
    return images.float().div(127.5).sub_(1.0)


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Float in [-1, 1] -> uint8 RGB (rounded, clamped)."""
    return images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
