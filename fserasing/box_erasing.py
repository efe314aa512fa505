"""Box erasers, batched: random erasing (Zhong et al. 2020) and Cutout (DeVries & Taylor 2017).

torchvision's ``v2.RandomErasing`` draws one box per call, so a batch would share one box;
:class:`BatchRandomErasing` draws a box per image with the same rule (area fraction uniform
in ``scale``, log aspect ratio uniform in ``log(ratio)``, up to 10 tries, else no erase) and
fills all boxes in one pass. :class:`BatchCutout` is a fixed-size square centred anywhere in
the image, clipped at the borders, filled with 0 (the mean colour in normalised space).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from parsing.core.errors import InputError


def _fill_boxes(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                height: torch.Tensor, width: torch.Tensor, apply: torch.Tensor,
                value: float | Sequence[float] | str, generator: torch.Generator | None
                ) -> torch.Tensor:
    _, c, h, w = images.shape
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    inside_r = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    inside_c = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    box = (inside_r[:, :, None] & inside_c[:, None, :] & apply[:, None, None])[:, None]
    if value == "random":
        fill = torch.randn(images.shape, generator=generator, device=images.device,
                           dtype=images.dtype)
    else:
        fill = torch.as_tensor(value, dtype=images.dtype, device=images.device)
        fill = fill.reshape(-1, 1, 1).expand(c, h, w) if fill.numel() > 1 else fill
    return torch.where(box, fill, images)


class BatchRandomErasing(nn.Module):
    """``v2.RandomErasing`` with a box per image, for normalised float batches.

    ``value``: a number, a per-channel sequence, or ``"random"`` (per-pixel N(0, 1)).
    ``forward(images, generator)`` returns the erased batch; ``boxes(images, generator)``
    returns the draws ``(top, left, height, width, apply)`` it uses.
    """

    def __init__(self, p: float = 0.5, scale: Sequence[float] = (0.02, 0.33),
                 ratio: Sequence[float] = (0.3, 3.3), value: Any = 0.0, attempts: int = 10):
        super().__init__()
        if not 0.0 <= p <= 1.0 or not 0.0 < scale[0] <= scale[1] <= 1.0 or not (
                0.0 < ratio[0] <= ratio[1]):
            raise InputError(f"random erasing: bad p={p}, scale={scale} or ratio={ratio}")
        self.p, self.scale, self.ratio = float(p), tuple(scale), tuple(ratio)
        self.value, self.attempts = value, attempts

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}"

    def boxes(self, images: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, ...]:
        b, _, h, w = images.shape
        dev = images.device

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=dev, dtype=torch.float64) * (
                hi - lo) + lo

        apply = uniform(0, 1, b) < self.p
        area = h * w * uniform(*self.scale, b, self.attempts)
        aspect = torch.exp(uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), b,
                                   self.attempts))
        height = torch.sqrt(area * aspect).round().long()
        width = torch.sqrt(area / aspect).round().long()
        fits = (height < h) & (width < w)
        first = fits.long().argmax(1, keepdim=True)  # first attempt that fits, as torchvision
        apply &= fits.any(1)
        height, width = height.gather(1, first)[:, 0], width.gather(1, first)[:, 0]
        top = (uniform(0, 1, b) * (h - height + 1)).floor().long()
        left = (uniform(0, 1, b) * (w - width + 1)).floor().long()
        return top, left, height, width, apply

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        return _fill_boxes(images, *self.boxes(images, generator), self.value, generator)


class BatchCutout(nn.Module):
    """Cutout: with probability ``p`` a ``size`` x ``size`` square centred uniformly in the
    image (clipped at the borders) is set to ``value`` (0 = mean colour when normalised)."""

    def __init__(self, size: int = 48, p: float = 0.5, value: Any = 0.0):
        super().__init__()
        if size < 1 or not 0.0 <= p <= 1.0:
            raise InputError(f"cutout: bad size={size} or p={p}")
        self.size, self.p, self.value = int(size), float(p), value

    def extra_repr(self) -> str:
        return f"size={self.size}, p={self.p}, value={self.value!r}"

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        b, _, h, w = images.shape
        draws = torch.rand((3, b), generator=generator, device=images.device)
        cy, cx = (draws[0] * h).long(), (draws[1] * w).long()
        top, left = (cy - self.size // 2).clamp(min=0), (cx - self.size // 2).clamp(min=0)
        bottom = (cy - self.size // 2 + self.size).clamp(max=h)
        right = (cx - self.size // 2 + self.size).clamp(max=w)
        return _fill_boxes(images, top, left, bottom - top, right - left, draws[2] < self.p,
                           self.value, generator)
