"""Texture fields for the synthetic faces, built once per image size from a fixed seed.

Every field is a (2S, 2S) float32 array in [0, 1] (noise: standard normal) so an
image of size S takes an S x S window at any offset: per-image variety costs a slice, and
the bank is identical in every process, which keeps the generator deterministic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

_BANK_SEED = 20240611


@dataclass(frozen=True)
class TextureBank:
    """Texture fields for S x S images; each list holds (2S, 2S) fields in [0, 1]."""

    size: int
    smooth: list[np.ndarray]  # blotchy low-frequency noise (backgrounds, skin tone variation)
    patterns: list[np.ndarray]  # stripes, checks, dots, knit (clothing, headwear, walls)
    strands: list[np.ndarray]  # hair strands radiating from the bank's centre (the crown)
    curls: list[np.ndarray]  # small blobs (curly hair)
    noise: np.ndarray  # standard normal, for sensor grain

    def window(self, field: np.ndarray, top: float, left: float) -> np.ndarray:
        """The S x S window of ``field`` starting at (top, left), clamped into the field."""
        s = self.size
        y = min(max(round(top), 0), field.shape[-2] - s)
        x = min(max(round(left), 0), field.shape[-1] - s)
        return field[..., y : y + s, x : x + s]


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    low = rng.random((cells, cells), dtype=np.float32)
    field = cv2.resize(low, (n, n), interpolation=cv2.INTER_CUBIC)
    field -= field.min()
    return field / max(float(field.max()), 1e-6)


def _patterns(n: int, s: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / s * 112.0
    out = []
    for period, angle in ((7.0, 0.0), (5.0, np.pi / 2), (9.0, np.pi / 4), (4.0, -np.pi / 5)):
        u = xx * np.cos(angle) + yy * np.sin(angle)
        out.append((np.sin(2 * np.pi * u / period) > 0.2).astype(np.float32))  # stripes
    for period in (8.0, 12.0):  # checks
        out.append(((np.floor(xx / period) + np.floor(yy / period)) % 2).astype(np.float32))
    for period in (6.0, 9.0):  # dots
        d = np.hypot((xx % period) - period / 2, (yy % period) - period / 2)
        out.append((d < period * 0.22).astype(np.float32))
    knit = 0.5 + 0.5 * np.sin(2 * np.pi * xx / 2.5) * np.cos(2 * np.pi * yy / 3.5)
    out.append(knit.astype(np.float32))
    return out


def _strands(rng: np.random.Generator, n: int, count: float) -> np.ndarray:
    """Hair strands radiating from the field's centre, in irregular clumps."""
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) - n / 2
    theta = np.arctan2(yy, xx)
    radius = np.hypot(yy, xx) / n
    bins = ((theta + np.pi) / (2 * np.pi) * (n - 1)).astype(np.int64)
    phase_noise = cv2.resize(rng.random((1, 48), dtype=np.float32), (n, 1),
                             interpolation=cv2.INTER_CUBIC)[0]
    clumps = cv2.resize(rng.random((1, 96), dtype=np.float32), (n, 1),
                        interpolation=cv2.INTER_CUBIC)[0]
    phase = count * theta + 6.0 * phase_noise[bins] + 0.8 * np.sin(2 * np.pi * 4.0 * radius)
    strands = 0.5 + 0.5 * np.sin(phase)
    field = 0.55 * strands + 0.45 * np.clip(clumps[bins], 0.0, 1.0)
    fade = np.clip(radius / 0.1, 0.0, 1.0)  # strands converge at the crown: calm it down
    return (0.5 + (field - 0.5) * fade).astype(np.float32)


def _curls(rng: np.random.Generator, n: int, s: int) -> np.ndarray:
    cells = max(8, int(n * 112 / s / 4))
    return _smooth_noise(rng, n, cells) ** 2


@functools.lru_cache(maxsize=4)
def texture_bank(size: int) -> TextureBank:
    """The texture bank for ``size`` x ``size`` images (cached; same in every process)."""
    rng = np.random.default_rng(_BANK_SEED)
    n = 2 * size
    return TextureBank(
        size=size,
        smooth=[_smooth_noise(rng, n, cells) for cells in (3, 4, 6, 8, 12, 16)],
        patterns=_patterns(n, size),
        strands=[_strands(rng, n, count) for count in (70.0, 100.0, 130.0)],
        curls=[_curls(rng, n, size) for _ in range(3)],
        noise=rng.standard_normal((n, n), dtype=np.float32),
    )
