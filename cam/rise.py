"""RISE: randomized input sampling (Petsiuk et al., BMVC 2018), reference §4.3."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from cam.base import Explainer, Explanation, minmax, register_explainer
from cam.targets import Target
from parsing.core.errors import InputError
from parsing.core.progress import progress_bar

__all__ = ["RISE", "interpolation_matrix", "rise_masks"]


def interpolation_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """(n_out, n_in) matrix of 1-D linear resizing as ``skimage.transform.resize(order=1,
    mode="reflect", anti_aliasing=False)``: half-pixel centres, mirror borders ("dcb|abcd|cba").

    ``F.interpolate`` clamps at the borders instead and differs on ~7 % of RISE mask pixels.
    """
    src = (torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5
    left = torch.floor(src)
    frac = src - left
    left = left.long()

    def mirror(i: Tensor) -> Tensor:
        if n_in == 1:
            return torch.zeros_like(i)
        period = 2 * (n_in - 1)
        i = i.remainder(period)
        return torch.where(i >= n_in, period - i, i)

    weights = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    weights.index_put_((rows, mirror(left)), 1 - frac, accumulate=True)
    weights.index_put_((rows, mirror(left + 1)), frac, accumulate=True)
    return weights.to(dtype)


def rise_masks(grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
    """RISE masks (N, H, W) from binary grids (N, s, s) and crop shifts (N, 2) in cells.

    Each grid is resized bilinearly to (s + 1) * cell with cell = ceil(H / s) per axis, then
    cropped to H x W at the shift: rows of the two interpolation matrices, one batched product.
    """
    n, s, _ = grids.shape
    out = []
    for axis, length in enumerate(size):
        cell = math.ceil(length / s)
        matrix = interpolation_matrix(s, (s + 1) * cell, grids.dtype).to(grids.device)
        rows = shifts[:, axis, None] + torch.arange(length, device=grids.device)
        out.append(matrix[rows])  # (N, length, s)
    return out[0] @ grids @ out[1].transpose(1, 2)


@register_explainer("rise")
class RISE(Explainer):
    """RISE saliency: sum_i score(x * M_i) M_i / (N p1) over ``n_masks`` random masks.

    ``cell``: grid size s; ``p1``: probability that a grid cell is kept. Masks are drawn from
    ``seed`` at construction (grids and shifts; any input size) and built chunk by chunk in
    torch, so they cost almost nothing next to the forward passes (each of at most
    ``batch_size`` masked images; all images of a batch share the masks). Masked-out pixels
    become 0, the neutral value in normalised space. ``map`` is the min-max of ``raw``.
    """

    def __init__(self, model: nn.Module, n_masks: int = 4000, cell: int = 7, p1: float = 0.5,
                 batch_size: int = 64, seed: int = 0, progress: bool = False):
        super().__init__(model, batch_size, progress)
        if n_masks < 1 or cell < 1 or not 0 < p1 <= 1:
            raise InputError(f"RISE needs n_masks >= 1, cell >= 1 and 0 < p1 <= 1, got "
                             f"n_masks={n_masks}, cell={cell}, p1={p1}")
        self.n_masks, self.cell, self.p1 = n_masks, cell, p1
        generator = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(n_masks, cell, cell, generator=generator) < p1).float()
        # crop shifts as fractions of a cell, so one seed serves every input size
        self.shift_fractions = torch.rand(n_masks, 2, generator=generator, dtype=torch.float64)

    def masks(self, size: tuple[int, int], start: int = 0, stop: int | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
        """Masks ``start:stop`` (default all) for inputs of ``size`` (H, W): (N, H, W)."""
        cells = torch.tensor([math.ceil(length / self.cell) for length in size],
                             dtype=torch.float64)
        shifts = (self.shift_fractions[start:stop] * cells).long()
        grids = self.grids[start:stop].to(device=device, dtype=dtype)
        return rise_masks(grids, shifts.to(device), size)

    def _explain(self, images: Tensor, target: Target) -> Explanation:
        batch, _, height, width = images.shape
        clean = self.forward_rows(lambda s, e: images[s:e], batch)
        target = target.bind(clean)
        scores = target(clean)
        per_step = max(1, self.batch_size // batch)  # masks per forward pass, for all images
        saliency = images.new_zeros(batch, height, width)
        index = torch.arange(batch, device=images.device).repeat_interleave(per_step)
        for start in progress_bar(range(0, self.n_masks, per_step), desc="RISE", leave=False,
                          disable=not self.progress):
            masks = self.masks((height, width), start, start + per_step, images.device,
                               images.dtype)
            rows = (images[:, None] * masks[None, :, None]).flatten(0, 1)
            out = self.forward_rows(lambda s, e, rows=rows: rows[s:e], len(rows))
            mask_scores = target(out, index[: len(rows)]).view(batch, len(masks))
            saliency += torch.einsum("bn,nhw->bhw", mask_scores, masks)
        raw = saliency / (self.n_masks * self.p1)
        return Explanation(minmax(raw), raw, scores)
