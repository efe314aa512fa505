"""Training-time augmentation of whole batches on the device, right after the data loader.

The loader only decodes (uint8 images and masks); :class:`BatchAugment` then normalises,
flips (masks too, with left/right ids swapped) and erases, drawing every random number from
one ``torch.Generator``. Its state goes into the checkpoint, so a resumed run draws the
same flips and erasures as an uninterrupted one whatever the number of loader workers.

The erasing step is a registered augmentation (``list_augmentations()``: ``none``,
``fserasing``, ``random-erasing``, ``cutout``). A new one is one decorated ``nn.Module``
class, built with its options as keyword arguments and called on normalised float batches::

    @register_augmentation("my-erasing")
    class MyErasing(nn.Module):
        needs_masks = False  # True: built with label_set=..., called (images, masks, generator)

        def forward(self, images, generator=None): ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fserasing.box_erasing import BatchCutout, BatchRandomErasing
from fserasing.erasing import BatchFSErasing
from parsing.core.errors import InputError
from parsing.core.labels import get_label_set
from parsing.core.pixels import normalise
from parsing.core.registry import Registry

__all__ = ["BatchAugment", "BatchCutout", "BatchRandomErasing", "FSErasingAugment",
           "create_augmentation", "flip_batch", "list_augmentations", "register_augmentation"]

_AUGMENTATIONS: Registry[type[nn.Module]] = Registry("augmentation")


def register_augmentation(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a batch augmentation to the registry under ``name``."""
    return _AUGMENTATIONS.register(name)


def list_augmentations(pattern: str = "*") -> list[str]:
    """Sorted names of the registered batch augmentations matching ``pattern``."""
    return _AUGMENTATIONS.names(pattern)


def create_augmentation(name: str, **options) -> nn.Module:
    """The registered augmentation ``name`` built with ``options``."""
    return _AUGMENTATIONS.create(name, **options)


@register_augmentation("none")
class NoErasing(nn.Module):
    """No erasing: the batch as it is."""

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None
                ) -> torch.Tensor:
        return images


@register_augmentation("fserasing")
class FSErasingAugment(BatchFSErasing):
    """:class:`fserasing.BatchFSErasing` drawing from the caller's generator; options as in
    :class:`fserasing.RegionEraser`, where a YAML/CLI ``n_erase`` ``[lo, hi]`` is a range.

    It erases the batch it is given in place (:class:`BatchAugment` hands it a freshly
    normalised batch), which keeps the CPU step free of a full-batch allocation.
    """

    needs_masks = True

    def __init__(self, label_set: str = "fse25", **options) -> None:
        n_erase = options.get("n_erase")
        if isinstance(n_erase, list) and len(n_erase) == 2 and all(
                isinstance(v, int) for v in n_erase):
            options["n_erase"] = tuple(n_erase)
        super().__init__(label_set=label_set, **options)

    def forward(self, images: torch.Tensor, masks: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return self.eraser(images, masks, generator, inplace=True)[0]


register_augmentation("random-erasing")(BatchRandomErasing)
register_augmentation("cutout")(BatchCutout)


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
        aug: a registered augmentation (``list_augmentations()``).
        flip: random horizontal flip with probability 1/2 (masks follow, ids swapped).
        options: keyword arguments of the augmentation (e.g. of :class:`fserasing.RegionEraser`,
            :class:`BatchRandomErasing` or :class:`BatchCutout`).
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
        cls = _AUGMENTATIONS.get(aug)
        label = {"label_set": label_set} if getattr(cls, "needs_masks", False) else {}
        try:
            self.eraser = cls(**label, **options)
        except TypeError as exc:
            raise InputError(f"{aug} options {options}: {exc}") from None

    @property
    def needs_masks(self) -> bool:
        return getattr(self.eraser, "needs_masks", False)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        x = normalise(images)
        if self.flip:
            flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
            x, masks = flip_batch(x, masks, flip, self.flip_lut)
        if not self.needs_masks:
            return self.eraser(x, generator)
        if masks is None:
            if self.parser is None:
                raise InputError(f"{self.aug} needs masks: give --masks or parser:CKPT")
            with torch.no_grad():
                masks = self.parser(x)
        return self.eraser(x, masks, generator)
