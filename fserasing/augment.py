"""Training-time augmentation of whole batches on the device, right after the data loader.

The loader only decodes (uint8 images and masks); :class:`BatchAugment` then normalises,
flips (masks too, with left/right ids swapped) and erases, drawing every random number from
one ``torch.Generator``. Its state goes into the checkpoint, so a resumed run draws the
same flips and erasures as an uninterrupted one whatever the number of loader workers.

torchvision's ``v2.RandomErasing`` draws one box per call, so a batch would share one box;
:class:`BatchRandomErasing` draws a box per image with the same rule (area fraction uniform
in ``scale``, log aspect ratio uniform in ``log(ratio)``, up to 10 tries, else no erase) and
fills all boxes in one pass. :class:`BatchCutout` is DeVries & Taylor's Cutout: a fixed-size
square centred anywhere in the image, clipped at the borders, filled with 0 (the mean colour
in normalised space).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fserasing import RegionEraser
from fserasing.box_erasing import BatchCutout, BatchRandomErasing
from parsing.core.errors import InputError
from parsing.core.labels import get_label_set
from parsing.core.pixels import normalise

__all__ = ["BatchAugment", "BatchCutout", "BatchRandomErasing", "flip_batch"]


def flip_batch(images: torch.Tensor, masks: torch.Tensor | None, flip: torch.Tensor,
               flip_lut: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mirror the images (and masks) where ``flip`` (B,) is True; ``flip_lut`` (256,) swaps ids."""
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if masks is not None:
        mirrored = masks.flip(-1)
        if flip_lut is not None:
            mirrored = flip_lut.to(masks.device)[mirrored.long()].to(masks.dtype)
        masks = torch.where(flip[:, None, None], mirrored, masks)
    return images, masks


class BatchAugment(nn.Module):
    """uint8 batch (+ masks) -> normalised, flipped, erased float batch, on the batch's device.

    Args:
        aug: ``none`` | ``fserasing`` | ``random-erasing`` | ``cutout``.
        flip: random horizontal flip with probability 1/2 (masks follow, ids swapped).
        options: keyword arguments of :class:`fserasing.RegionEraser`,
            :class:`BatchRandomErasing` or :class:`BatchCutout`.
        parser: ``fn(normalised images) -> (B, H, W) masks`` used when no masks come with the
            batch (``--masks parser:CKPT``); it runs after the flip, so it sees what it parses.
        label_set: label set of the masks.
    """

    def __init__(self, aug: str = "none", flip: bool = True, options: dict | None = None,
                 parser: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 label_set: str = "fse25") -> None:
        super().__init__()
        options = dict(options or {})
        self.aug, self.flip, self.parser = aug, flip, parser
        self.register_buffer("flip_lut", get_label_set(label_set).flip_lut(), persistent=False)
        try:
            if aug == "fserasing":
                n_erase = options.get("n_erase")
                if isinstance(n_erase, list) and len(n_erase) == 2 and all(
                        isinstance(v, int) for v in n_erase):
                    options["n_erase"] = tuple(n_erase)  # a YAML/CLI [lo, hi] is a range
                self.eraser = RegionEraser(label_set=label_set, **options)
            elif aug == "random-erasing":
                self.eraser = BatchRandomErasing(**options)
            elif aug == "cutout":
                self.eraser = BatchCutout(**options)
            elif aug == "none":
                self.eraser = None
            else:
                raise InputError(f"unknown augmentation {aug!r}")
        except TypeError as exc:
            raise InputError(f"{aug} options {options}: {exc}") from None

    @property
    def needs_masks(self) -> bool:
        return self.aug == "fserasing"

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = normalise(images)
        if self.flip:
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
            x, masks = flip_batch(x, masks, flip, self.flip_lut)
        if self.aug == "fserasing":
            if masks is None:
                if self.parser is None:
                    raise InputError("fserasing needs masks: give --masks or parser:CKPT")
                with torch.no_grad():
                    masks = self.parser(x)
            return self.eraser(x, masks, generator)[0]
        if self.eraser is not None:
            return self.eraser(x, generator)
        return x
