"""Small helpers shared by the backbones."""

from __future__ import annotations

import contextlib

import torch

from parsing.core.errors import InputError


def check_input(x: torch.Tensor, size: int, model: str) -> None:
    """Raise a clear error unless ``x`` is a (B, 3, size, size) batch."""
    if torch.jit.is_tracing():  # ONNX export traces one fixed-size example
        return
    if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (size, size):
        raise InputError(
            f"{model} expects images of shape (B, 3, {size}, {size}) (aligned {size}x{size} "
            f"faces; its fc layer is fixed to the {size // 16}x{size // 16} final feature map), "
            f"got {tuple(x.shape)}"
        )


def body_autocast(x: torch.Tensor, enabled: bool, dtype: torch.dtype):
    """insightface's ``fp16`` switch: autocast the convolutional body on the input's device.

    Disabled means *no context at all*, so an autocast region opened by the caller still
    applies (``torch.autocast(enabled=False)`` would switch it off).
    """
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, dtype=dtype)
