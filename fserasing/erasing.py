"""Face Semantic Erasing (reference §3): erase randomly chosen parsing regions of face images.

One vectorised implementation serves every entry point. :class:`RegionEraser` resolves the
options once; :meth:`RegionEraser.draw` makes every random decision for a batch (an
:class:`Erasure`) and :meth:`RegionEraser.apply` fills the chosen pixels. :func:`erase_batch`,
:class:`BatchFSErasing` and the per-sample :class:`fserasing.FSErasing` (a batch of one) all
call these two methods, so they agree exactly for the same random draws.

Conventions:

* Float images are taken to be normalised (mean = std = 0.5, the project's convention): the
  random fills are N(0, 1) values in that space. uint8 images get the same fills mapped through
  that normalisation (``255 * (0.5 + 0.5 z)``, rounded and clamped), so a uint8 image erased and
  then normalised looks like a normalised image erased. Constant fills are written as given,
  in the image's own value range (as in ``torchvision.transforms.v2.RandomErasing``).
* Class choice follows the reference: with probability ``p`` an image gets ``n_erase`` classes
  drawn without replacement (weighted by ``class_weights``) among all allowed classes, so a
  chosen class absent from the image erases nothing. ``present_only=True`` chooses among the
  classes present in each image instead.
* Label ids outside the label set raise :class:`~parsing.errors.LabelError`; pixels holding
  the set's ignore id (e.g. 255 in FaceSynthetics) are never erased.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.registry import Registry

__all__ = ["FILL_MODES", "Erasure", "FillMode", "RegionEraser", "erase_batch", "BatchFSErasing",
           "list_fill_modes", "register_fill_mode"]

_IDS = 256  # per-class lookup tables cover every uint8 id, so ignore ids need no clamping
_CHUNK = 1 << 18  # pixels per int64 index chunk on the CPU (2 MB, stays in cache)

ClassSpec = int | str | Iterable[int | str]
NErase = int | tuple[int, int] | list[int | str]
Fill = str | float | Sequence[float]


@dataclass
class Erasure:
    """The random decisions for one batch; index it (``erasure[i]``) for sample ``i``'s share.

    ``selected`` (B, K) bool: classes chosen per image (chosen but absent classes included).
    ``region`` (B, H, W) bool: pixels to fill. ``noise_region`` (B, H, W) bool and ``noise``
    (``noise_region.sum()``, C), one row per pixel in (b, h, w) order: per-pixel N(0, 1)
    values. ``colours`` (B, K, C): one N(0, 1) colour per class. ``shuffle_keys`` (B, H*W):
    random sort keys for ``fill="shuffle"``.
    """

    selected: torch.Tensor
    region: torch.Tensor
    channels: int
    noise_region: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    colours: torch.Tensor | None = None
    shuffle_keys: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.selected.shape[0]

    def __getitem__(self, i: int) -> Erasure:
        sl = slice(i, i + 1)
        noise = None
        if self.noise is not None:
            per_image = self.noise_region.flatten(1).sum(1)
            stop = int(per_image[: i + 1].sum())
            noise = self.noise[stop - int(per_image[i]) : stop]
        return Erasure(
            selected=self.selected[sl],
            region=self.region[sl],
            channels=self.channels,
            noise_region=None if self.noise_region is None else self.noise_region[sl],
            noise=noise,
            colours=None if self.colours is None else self.colours[sl],
            shuffle_keys=None if self.shuffle_keys is None else self.shuffle_keys[sl],
        )


class RegionEraser:
    """Resolved FSErasing options: draws erasures for batches and applies them.

    Args:
        p: probability that an image is erased at all.
        n_erase: classes to erase per image: an int; a ``(lo, hi)`` tuple, drawn uniformly
            with both ends included; or a list of class ids / names / group names that are
            always the ones erased.
        classes: candidate classes (ids, names, group names such as ``"eyes"``); default:
            the label set's ``"face"`` group (FSE-25 ids 1-19), else every class but
            background. ``range(25)`` reproduces the reference's candidates (background too).
        class_weights: relative choice weights: a sequence aligned with the candidates
            (sorted ids, or the ``classes`` entries when ``group_units``) or a mapping from
            id / name / group name to weight (unlisted candidates weigh 1).
        fill: a registered fill mode (:func:`list_fill_modes`) or a constant (number or
            per-channel tuple).
            ``random``: per-pixel N(0, 1); ``random_1``: one N(0, 1) colour per channel per
            region; ``random_mix``: each region takes ``random`` or ``random_1`` with
            probability 1/2 (per region, as in the reference); ``mean``: the image's mean
            colour; ``region_mean``: the region's own mean colour; ``shuffle``: the region's
            pixels permuted among themselves; ``blur``: a Gaussian-blurred copy of the image.
        label_set: label set of the masks (``"fse25"``).
        group_units: erase each entry of ``classes`` as a whole (``["eyes", "nose"]`` erases
            both eyes together) instead of choosing single classes.
        present_only: choose only among classes present in each image.
        blur_sigma: Gaussian sigma in pixels for ``fill="blur"``; default ``max(H, W) / 28``.
    """

    def __init__(
        self,
        p: float = 0.5,
        n_erase: NErase = 1,
        classes: ClassSpec | None = None,
        class_weights: Sequence[float] | Mapping[int | str, float] | None = None,
        fill: Fill = "random",
        label_set: str | LabelSet = "fse25",
        group_units: bool = False,
        present_only: bool = False,
        blur_sigma: float | None = None,
    ) -> None:
        self.label_set = get_label_set(label_set)
        if not 0.0 <= float(p) <= 1.0:
            raise InputError(f"p must be in [0, 1], got {p}")
        self.p = float(p)
        self.fill = _check_fill(fill)
        self._fill_mode = _FILLS.create(self.fill) if isinstance(self.fill, str) else \
            ConstantFill()
        if blur_sigma is not None and not blur_sigma > 0:
            raise InputError(f"blur_sigma must be positive, got {blur_sigma}")
        self.blur_sigma = blur_sigma
        self.present_only = bool(present_only)
        ls = self.label_set
        if classes is None:
            classes = "face" if "face" in ls.groups else range(1, ls.num_classes)
        entries = [classes] if isinstance(classes, (int, str)) else list(classes)
        if not entries:
            raise InputError("classes is empty: give at least one class or group")
        units = [tuple(ls.ids(e)) for e in entries] if group_units else [
            (i,) for i in ls.ids(entries)]
        self.units = units
        membership = torch.zeros(len(units), ls.num_classes, dtype=torch.bool)
        for u, ids in enumerate(units):
            membership[u, list(ids)] = True
        self._membership = membership
        self._weights = _unit_weights(class_weights, units, entries, group_units, ls)
        self.n_range, self.explicit = _check_n_erase(n_erase, len(units), self.present_only, ls)
        self._device_tables: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __repr__(self) -> str:
        n = self.n_range if self.explicit is None else self.explicit.nonzero().flatten().tolist()
        return (f"RegionEraser(p={self.p}, n_erase={n}, units={len(self.units)}, "
                f"fill={self.fill!r}, label_set={self.label_set.key!r})")

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        if device not in self._device_tables:
            explicit = self.explicit.to(device) if self.explicit is not None else None
            self._device_tables[device] = (
                self._membership.to(device), self._weights.to(device), explicit)
        return self._device_tables[device]

    # -- validation ---------------------------------------------------------------------

    def check_masks(self, masks: torch.Tensor, what: str = "masks") -> None:
        """Raise a :class:`LabelError` naming ``what`` if ``masks`` has ids outside the set."""
        if masks.dtype.is_floating_point or masks.dtype == torch.bool or masks.is_complex():
            raise InputError(f"{what}: label maps must be an integer tensor, got {masks.dtype}")
        if masks.numel() == 0:
            return
        lo, hi = torch.aminmax(masks)
        if int(lo) < 0 or int(hi) >= self.label_set.num_classes:
            self.label_set.check(masks, what)  # precise message, allows the ignore id
            if int(hi) > 255:  # an ignore id within the set but not a valid pixel value
                raise InputError(f"{what}: label ids above 255")

    def check_pair(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Validate a (B, C, H, W) image batch against its masks; return masks as (B, H, W)."""
        if images.ndim != 4:
            raise InputError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise InputError("images is an empty batch (B = 0): nothing to erase")
        if masks.ndim == 4 and masks.shape[1] == 1:
            masks = masks[:, 0]
        if masks.ndim != 3:
            raise InputError(f"masks must be (B, H, W), got shape {tuple(masks.shape)}")
        if masks.shape[0] != images.shape[0]:
            raise InputError(f"{masks.shape[0]} masks for {images.shape[0]} images")
        if masks.shape[-2:] != images.shape[-2:]:
            raise InputError(
                f"mask size {tuple(masks.shape[-2:])} differs from image size "
                f"{tuple(images.shape[-2:])} (H, W)")
        if masks.device != images.device:
            raise InputError(f"masks on {masks.device} but images on {images.device}")
        if not (images.dtype.is_floating_point or images.dtype == torch.uint8):
            raise InputError(f"images must be floating point or uint8, got {images.dtype}")
        self.check_masks(masks)
        return masks

    # -- the two halves -----------------------------------------------------------------

    def draw(
        self, masks: torch.Tensor, channels: int, generator: torch.Generator | None = None
    ) -> Erasure:
        """Make every random decision for a (B, H, W) batch of valid masks."""
        device = masks.device
        if generator is not None and generator.device.type != device.type:
            raise InputError(
                f"generator is on {generator.device} but the batch is on {device}; "
                f"create it with torch.Generator(device={str(device)!r})")
        membership, weights, explicit = self._tables(device)
        b, k = masks.shape[0], self.label_set.num_classes
        apply = torch.rand(b, generator=generator, device=device) < self.p
        if explicit is not None:
            selected = apply[:, None] & explicit
        else:
            lo, hi = self.n_range
            if lo == hi:
                n = torch.full((b,), lo, device=device)
            else:
                n = torch.randint(lo, hi + 1, (b,), generator=generator, device=device)
            w = weights.expand(b, -1)
            if self.present_only:
                present = _present(masks)[:, :k]
                w = w * (present.float() @ membership.T.float() > 0)
            # Exponential race (Gumbel-top-k): the n smallest E/w are a weighted draw
            # without replacement, i.e. the same law as torch.multinomial(replacement=False).
            race = torch.empty(b, w.shape[1], device=device).exponential_(generator=generator)
            rank = (race / w).argsort(dim=1).argsort(dim=1)
            chosen = (rank < n[:, None]) & (w > 0) & apply[:, None]
            selected = chosen.float() @ membership.float() > 0
        region = _per_pixel(selected, masks)
        erasure = Erasure(selected=selected, region=region, channels=channels)
        self._fill_mode.draw(erasure, masks, generator)
        return erasure

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              inplace: bool = False) -> torch.Tensor:
        """Fill ``erasure.region`` of (B, C, H, W) images; every other pixel is copied as is.

        ``inplace=True`` writes into ``images`` and returns them (as torchvision's
        ``RandomErasing(inplace=True)``): no new batch is allocated.
        """
        if erasure.region.shape != masks.shape or erasure.channels != images.shape[1]:
            raise InputError("this erasure was drawn for a batch of another shape")
        return self._fill_mode.apply(images, masks, erasure, self, inplace)

    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        generator: torch.Generator | None = None,
        inplace: bool = False,
    ) -> tuple[torch.Tensor, Erasure]:
        """Check, draw and apply: ``(erased images, erasure)``."""
        masks = self.check_pair(images, masks)
        erasure = self.draw(masks, images.shape[1], generator)
        return self.apply(images, masks, erasure, inplace), erasure

    def erased(self, masks: torch.Tensor, erasure: Erasure) -> torch.Tensor:
        """(B, K) bool: the chosen classes that were present, i.e. whose pixels were filled."""
        k = self.label_set.num_classes
        return erasure.selected & _present(masks.reshape(erasure.region.shape))[:, :k]


def erase_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    p: float = 0.5,
    n_erase: NErase = 1,
    classes: ClassSpec | None = None,
    class_weights: Sequence[float] | Mapping[int | str, float] | None = None,
    fill: Fill = "random",
    label_set: str | LabelSet = "fse25",
    generator: torch.Generator | None = None,
    return_erased: bool = False,
    inplace: bool = False,
    **options,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Erase random parsing regions of a whole batch in one vectorised pass.

    ``images`` (B, C, H, W) float (normalised) or uint8; ``masks`` (B, H, W) integer label
    maps on the same device. Options as in :class:`RegionEraser` (``group_units``,
    ``present_only``, ``blur_sigma`` go in ``options``). ``generator`` must be on the images'
    device. Returns new images of the same shape, dtype and device; with ``return_erased`` also
    the (B, num_classes) bool map of classes whose pixels were filled. ``inplace=True`` erases
    ``images`` themselves and returns them: no batch-sized allocation, which on the CPU
    also spares the page faults of a fresh batch under glibc's default allocator (reference §8).
    """
    eraser = RegionEraser(p, n_erase, classes, class_weights, fill, label_set, **options)
    out, erasure = eraser(images, masks, generator, inplace)
    if return_erased:
        return out, eraser.erased(masks, erasure)
    return out


class BatchFSErasing(nn.Module):
    """:func:`erase_batch` as a module, for the training loop right after the data loader.

    ``BatchFSErasing(p=0.5, n_erase=(1, 3))(images, masks)`` erases whatever mode the module
    is in: it is an augmentation step to call while training, not a layer of the model.
    Arguments as in :class:`RegionEraser`; ``generator`` (on the batch's device) seeds it;
    ``inplace=True`` erases the given batch itself (see :func:`erase_batch`).
    """

    def __init__(
        self,
        p: float = 0.5,
        n_erase: NErase = 1,
        classes: ClassSpec | None = None,
        class_weights: Sequence[float] | Mapping[int | str, float] | None = None,
        fill: Fill = "random",
        label_set: str | LabelSet = "fse25",
        generator: torch.Generator | None = None,
        return_erased: bool = False,
        inplace: bool = False,
        **options,
    ) -> None:
        super().__init__()
        self.eraser = RegionEraser(p, n_erase, classes, class_weights, fill, label_set, **options)
        self.generator = generator
        self.return_erased = return_erased
        self.inplace = inplace

    def extra_repr(self) -> str:
        return repr(self.eraser)

    def forward(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out, erasure = self.eraser(images, masks, self.generator, self.inplace)
        if self.return_erased:
            return out, self.eraser.erased(masks, erasure)
        return out


# -- fill modes --------------------------------------------------------------------------


class FillMode:
    """How a named fill erases: :meth:`draw` adds its random decisions to the
    :class:`Erasure` once the region is chosen, :meth:`apply` fills ``erasure.region``.

    A new mode is one subclass decorated with ``@register_fill_mode("name")``; it is then a
    valid ``fill`` everywhere (``RegionEraser``, ``erase_batch``, ``FSErasing``, ...).
    """

    def draw(self, erasure: Erasure, masks: torch.Tensor,
             generator: torch.Generator | None) -> None:
        """Store this mode's random draws in ``erasure``; ``masks``: (B, H, W) class ids."""

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        """(B, C, H, W) images with ``erasure.region`` filled (written into ``images`` when
        ``inplace``); ``eraser`` holds the options."""
        raise NotImplementedError


_FILLS: Registry[type[FillMode]] = Registry("fill", "or a number / per-channel tuple")


def register_fill_mode(name: str) -> Callable[[type[FillMode]], type[FillMode]]:
    """Class decorator adding a :class:`FillMode` subclass to the registry under ``name``."""
    return _FILLS.register(name)


def list_fill_modes(pattern: str = "*") -> list[str]:
    """Sorted names of the registered fill modes matching ``pattern``."""
    return _FILLS.names(pattern)


def _draw_noise(erasure: Erasure, noise_region: torch.Tensor,
                generator: torch.Generator | None) -> None:
    erasure.noise_region = noise_region
    count = int(noise_region.count_nonzero())
    erasure.noise = torch.randn(count, erasure.channels, generator=generator,
                                device=noise_region.device)


def _draw_colours(erasure: Erasure, generator: torch.Generator | None) -> torch.Tensor:
    """One colour per class into ``erasure``; returns (B, K) coin flips: the classes that
    ``random_mix`` fills per pixel (drawn for ``random_1`` too, so both use one stream)."""
    (b, k), channels, device = erasure.selected.shape, erasure.channels, erasure.region.device
    per_pixel = torch.rand(b, k, generator=generator, device=device) < 0.5
    erasure.colours = torch.randn(b, k, channels, generator=generator, device=device)
    return per_pixel


def _put_noise(out: torch.Tensor, erasure: Erasure) -> torch.Tensor:
    noise = _from_normalised(erasure.noise, out.dtype)
    return _put_pixels(out, _pixel_indices(erasure.noise_region), noise)


@register_fill_mode("random")
class RandomFill(FillMode):
    """Per-pixel N(0, 1)."""

    def draw(self, erasure: Erasure, masks: torch.Tensor,
             generator: torch.Generator | None) -> None:
        _draw_noise(erasure, erasure.region, generator)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        return _put_noise(images if inplace else images.clone(), erasure)


@register_fill_mode("random_1")
class RegionColourFill(FillMode):
    """One N(0, 1) colour per channel per region."""

    def draw(self, erasure: Erasure, masks: torch.Tensor,
             generator: torch.Generator | None) -> None:
        _draw_colours(erasure, generator)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        colours = _from_normalised(erasure.colours, images.dtype)
        return _fill_by_class(images if inplace else images.clone(), masks, erasure.region,
                              colours)


@register_fill_mode("random_mix")
class MixedRandomFill(RegionColourFill):
    """Each region ``random`` or ``random_1`` with probability 1/2."""

    def draw(self, erasure: Erasure, masks: torch.Tensor,
             generator: torch.Generator | None) -> None:
        per_pixel = _draw_colours(erasure, generator)
        _draw_noise(erasure, erasure.region & _per_pixel(per_pixel, masks), generator)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        return _put_noise(super().apply(images, masks, erasure, eraser, inplace), erasure)


@register_fill_mode("mean")
class MeanFill(FillMode):
    """The image's mean colour."""

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        mean = _as_float(images).mean(dim=(2, 3), keepdim=True)
        return torch.where(erasure.region[:, None], _from_image_space(mean, images.dtype),
                           images, out=images if inplace else None)


@register_fill_mode("region_mean")
class RegionMeanFill(FillMode):
    """Each region's own mean colour."""

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        means = _region_means(images, masks, eraser.label_set.num_classes)
        return _fill_by_class(images if inplace else images.clone(), masks, erasure.region,
                              _from_image_space(means, images.dtype))


@register_fill_mode("shuffle")
class ShuffleFill(FillMode):
    """Each region's pixels permuted among themselves."""

    def draw(self, erasure: Erasure, masks: torch.Tensor,
             generator: torch.Generator | None) -> None:
        erasure.shuffle_keys = torch.randint(
            0, 2**31, (masks.shape[0], masks[0].numel()), generator=generator,
            device=masks.device)

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        out = _shuffle(images, masks, erasure)
        return images.copy_(out) if inplace else out


@register_fill_mode("blur")
class BlurFill(FillMode):
    """A Gaussian-blurred copy of the image (sigma: ``blur_sigma``)."""

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        sigma = eraser.blur_sigma or max(images.shape[-2:]) / 28
        size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(images.shape[-2:]) // 2) - 1)
        if size < 3:
            return images if inplace else images.clone()
        blurred = TF.gaussian_blur(images, [size, size], [sigma, sigma])
        return torch.where(erasure.region[:, None], blurred, images,
                           out=images if inplace else None)


class ConstantFill(FillMode):
    """``fill`` given as a number or a per-channel tuple, in the image's value range."""

    def apply(self, images: torch.Tensor, masks: torch.Tensor, erasure: Erasure,
              eraser: RegionEraser, inplace: bool = False) -> torch.Tensor:
        return torch.where(erasure.region[:, None], _constant(eraser.fill, images), images,
                           out=images if inplace else None)


#: The built-in fill modes in registration order (the columns of the fill sheet).
FILL_MODES = tuple(_FILLS)


# -- option parsing ----------------------------------------------------------------------


def _check_fill(fill: Fill) -> Fill:
    if isinstance(fill, str):
        _FILLS.get(fill)
        return fill
    values = [fill] if isinstance(fill, (int, float)) else list(fill)
    if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        raise InputError(f"fill must be a mode name, a number or a tuple of numbers, got {fill!r}")
    return float(values[0]) if isinstance(fill, (int, float)) else tuple(map(float, values))


def _check_n_erase(
    n_erase: NErase, n_units: int, present_only: bool, ls: LabelSet
) -> tuple[tuple[int, int] | None, torch.Tensor | None]:
    if isinstance(n_erase, list):
        explicit = torch.zeros(ls.num_classes, dtype=torch.bool)
        explicit[ls.ids(n_erase)] = True
        return None, explicit
    if isinstance(n_erase, tuple):
        if len(n_erase) != 2:
            raise InputError(f"n_erase as a tuple must be (lo, hi), got {n_erase!r}")
        lo, hi = n_erase
    else:
        lo = hi = n_erase
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not (
            0 <= lo <= hi):
        raise InputError(
            f"n_erase must be an int >= 0, a (lo, hi) tuple with 0 <= lo <= hi, or a list of "
            f"classes; got {n_erase!r}")
    if hi > n_units and not present_only:
        raise InputError(f"n_erase={n_erase!r} but there are only {n_units} candidate classes")
    return (lo, hi), None


def _unit_weights(
    class_weights: Sequence[float] | Mapping[int | str, float] | None,
    units: list[tuple[int, ...]],
    entries: list[int | str],
    group_units: bool,
    ls: LabelSet,
) -> torch.Tensor:
    weights = torch.ones(len(units), dtype=torch.float32)
    if class_weights is None:
        pass
    elif isinstance(class_weights, Mapping):
        for key, value in class_weights.items():
            if group_units:
                hits = [u for u, e in enumerate(entries) if e == key]
            else:
                ids = set(ls.ids(key))
                hits = [u for u, (i,) in enumerate(units) if i in ids]
            if not hits:
                raise InputError(f"class_weights names {key!r}, which is not a candidate class")
            weights[hits] = float(value)
    else:
        values = torch.as_tensor(list(class_weights), dtype=torch.float32)
        if values.shape != (len(units),):
            raise InputError(
                f"class_weights has {values.numel()} values for {len(units)} candidate classes")
        weights = values
    if not torch.isfinite(weights).all() or (weights < 0).any() or not (weights > 0).any():
        raise InputError("class_weights must be finite, >= 0, and not all zero")
    return weights


# -- vectorised kernels ------------------------------------------------------------------


def _widen(per_class: torch.Tensor) -> torch.Tensor:
    """Pad the last dim of a per-class table from K to 256 entries (ids >= K: ignore ids)."""
    return F.pad(per_class, (0, _IDS - per_class.shape[-1]))


def _index_chunks(masks: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """(B, ...) label maps as int64 (rows, n_pixels) indices, chunk by chunk of images.

    On the CPU the chunks share one cache-sized buffer: no full-batch int64 copy of the maps
    (8x their uint8 size), whose allocation glibc's default allocator serves with fresh pages
    (reference §8); elsewhere one chunk, to keep the kernel launches few.
    """
    flat = masks.reshape(masks.shape[0], -1)
    if flat.dtype == torch.int64 or flat.device.type != "cpu":
        yield slice(None), flat.long()
        return
    step = max(1, _CHUNK // max(flat.shape[1], 1))
    buffer = torch.empty(min(step, len(flat)), flat.shape[1], dtype=torch.int64)
    for start in range(0, len(flat), step):
        rows = slice(start, start + step)
        yield rows, buffer[:len(flat[rows])].copy_(flat[rows])


def _per_pixel(per_class: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Look a (B, K) table up at every pixel of (B, H, W) integer label maps."""
    table = _widen(per_class)
    out = torch.empty(masks.shape, dtype=table.dtype, device=masks.device)
    flat_out = out.view(masks.shape[0], -1)
    for rows, index in _index_chunks(masks):
        torch.gather(table[rows], 1, index, out=flat_out[rows])
    return out


def _present(masks: torch.Tensor) -> torch.Tensor:
    """(B, 256) bool: which ids occur in each image of (B, H, W) integer label maps."""
    present = torch.zeros(masks.shape[0], _IDS, dtype=torch.bool, device=masks.device)
    for rows, index in _index_chunks(masks):
        present[rows].scatter_(1, index, True)
    return present


def _pixel_indices(where: torch.Tensor) -> torch.Tensor:
    """Flat indices of the True pixels of a (B, H, W) bool map, in (b, h, w) order."""
    if where.device.type == "cpu":  # numpy's flatnonzero is ~4x faster than torch's nonzero
        return torch.from_numpy(np.flatnonzero(where.numpy()))
    return where.view(-1).nonzero().squeeze(1)


def _put_pixels(out: torch.Tensor, pixels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Write ``values`` (n, C) into (B, C, H, W) ``out`` in place at ``pixels``, flat
    (b, h, w) indices (as from :func:`_pixel_indices`); return ``out``. Plain index
    assignment (no ``put_``, which ``torch.use_deterministic_algorithms`` forbids)."""
    c, h, w = out.shape[1:]
    if out.is_contiguous():
        first = pixels + pixels // (h * w) * ((c - 1) * h * w)  # channel 0 in (B, C, H, W)
        out.view(-1)[first[:, None] + torch.arange(0, c * h * w, h * w, device=out.device)] = (
            values)
    elif out.is_contiguous(memory_format=torch.channels_last):
        out.permute(0, 2, 3, 1).view(-1, c)[pixels] = values
    else:
        out[pixels // (h * w), :, pixels // w % h, pixels % w] = values
    return out


def _fill_by_class(out: torch.Tensor, masks: torch.Tensor, region: torch.Tensor,
                   colours: torch.Tensor) -> torch.Tensor:
    """Paint each ``region`` pixel of ``out`` (B, C, H, W) in place with its class's colour
    from the (B, K, C) table ``colours`` (of ``out``'s dtype); return ``out``."""
    pixels = _pixel_indices(region)
    classes = masks.reshape(-1)[pixels].long()  # region pixels hold ids < K, never ignore ids
    return _put_pixels(out, pixels, colours[pixels // region[0].numel(), classes])


def _as_float(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype.is_floating_point else images.float()


def _from_normalised(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Normalised-space values (mean = std = 0.5) as pixel values of ``dtype``."""
    if dtype.is_floating_point:
        return values.to(dtype)
    return (values * 127.5 + 127.5).round_().clamp_(0, 255).to(dtype)


def _from_image_space(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Float values already in the image's range as pixel values of ``dtype``."""
    if dtype.is_floating_point:
        return values.to(dtype)
    return values.round().clamp_(0, 255).to(dtype)


def _region_means(images: torch.Tensor, masks: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K, C) float32 mean colour of every class region of every image."""
    b, c = images.shape[:2]
    idx = masks.flatten(1).long()
    # float32 sums and counts: in half precision counts stop at 2048 (bfloat16: 256) and
    # CUDA's atomic adds round every partial sum
    values = images.flatten(2).float()
    sums = values.new_zeros(b, c, _IDS).scatter_add_(2, idx[:, None].expand(b, c, -1), values)
    counts = values.new_zeros(b, _IDS).scatter_add_(1, idx, values.new_ones(idx.shape))
    return (sums / counts.clamp(min=1)[:, None])[..., :k].transpose(1, 2)


def _shuffle(images: torch.Tensor, masks: torch.Tensor, erasure: Erasure) -> torch.Tensor:
    """Permute each erased region's pixels among themselves (one random permutation each)."""
    b, c = images.shape[:2]
    region = erasure.region.flatten(1)
    position = torch.arange(region.shape[1], device=images.device).expand_as(region)
    # Group by class (untouched pixels form group 256); inside a group the canonical order
    # is by position and the random order by key, so rank j of one maps to rank j of the other.
    group = torch.where(region, masks.flatten(1).long(), _IDS) << 32
    canonical = (group + position).argsort(dim=1)
    shuffled = (group + torch.where(region, erasure.shuffle_keys, position)).argsort(dim=1)
    flat = images.flatten(2)
    source = flat.gather(2, shuffled[:, None].expand(b, c, -1))
    return flat.scatter(2, canonical[:, None].expand(b, c, -1), source).view_as(images)


def _constant(fill: float | tuple[float, ...], images: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(fill, dtype=torch.float32, device=images.device).flatten()
    if values.numel() not in (1, images.shape[1]):
        raise InputError(
            f"fill has {values.numel()} values but the images have {images.shape[1]} channels")
    return _from_image_space(values.view(1, -1, 1, 1), images.dtype)
