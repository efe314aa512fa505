"""FSErasing as a torchvision transforms-v2 transform (one sample, or one batch, per call)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fserasing.erasing import ClassSpec, Fill, NErase, RegionEraser
from parsing.core.errors import InputError
from parsing.core.labels import LabelSet

__all__ = ["FSErasing"]


class FSErasing(v2.Transform):
    """Erase random face regions of an image using its parsing mask (reference §3).

    Call it on ``(image, mask)`` with the mask a ``tv_tensors.Mask`` (so geometric v2
    transforms before it move image and mask together), or on a dict sample with ``"image"``
    and ``"mask"`` entries (any mask type there). The image may be a tensor or
    ``tv_tensors.Image`` (float normalised or uint8, (C, H, W) or a (B, C, H, W) batch with
    (B, H, W) masks), a PIL image or an (H, W, C) / (H, W) ndarray; the output has the same
    structure and types. Other entries of the sample pass through.

    Options are those of :class:`fserasing.erasing.RegionEraser` (``p``, ``n_erase``,
    ``classes``, ``class_weights``, ``fill``, ``label_set``; ``group_units``, ``present_only``,
    ``blur_sigma`` in ``options``); the pixels are computed by the same code as
    :func:`fserasing.erase_batch`, on a batch of one.

    ``generator`` makes it reproducible in one process; leave it ``None`` inside a
    multi-worker ``DataLoader`` (the global RNG is seeded per worker there, a generator would
    be copied into every worker and repeat the same draws). ``return_erased=True`` returns
    ``(output, erased)`` with ``erased`` a (num_classes,) bool tensor of the classes whose
    pixels were filled (``(B, num_classes)`` for a batch).

    Example::

        tf = v2.Compose([RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True),
                         v2.Normalize([0.5] * 3, [0.5] * 3), FSErasing(p=0.5, n_erase=(1, 3))])
        image, mask = tf(tv_tensors.Image(image), tv_tensors.Mask(label_map))
    """

    _transformed_types = (torch.Tensor, PIL.Image.Image, np.ndarray)

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
        **options: Any,
    ) -> None:
        super().__init__()
        self.eraser = RegionEraser(p, n_erase, classes, class_weights, fill, label_set, **options)
        self.p, self.n_erase, self.fill = p, n_erase, fill  # shown by extra_repr
        self.generator = generator
        self.return_erased = return_erased

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if isinstance(sample, Mapping):
            if "image" not in sample or "mask" not in sample:
                raise InputError(f"FSErasing needs 'image' and 'mask' in a dict sample, got "
                                 f"keys {sorted(map(str, sample))}")
            params = self._erase(sample["image"], _as_mask(sample["mask"]))
            out = copy.copy(sample)
            out["image"] = self.transform(sample["image"], params)
        else:
            flat_inputs, spec = tree_flatten(sample)
            self.check_inputs(flat_inputs)
            pairs = list(zip(flat_inputs, self._needs_transform_list(flat_inputs), strict=True))
            params = self.make_params([x for x, n in pairs if n])
            out = tree_unflatten([self.transform(x, params) if n else x for x, n in pairs], spec)
        return (out, params["erased"]) if self.return_erased else out

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        if len(masks) != 1:
            raise InputError(
                f"FSErasing needs exactly one tv_tensors.Mask beside the image, found "
                f"{len(masks)}; wrap the label map as tv_tensors.Mask(label_map) or pass a dict "
                "sample with a 'mask' entry")
        return self._erase(_find_image(flat_inputs), masks[0])

    def _erase(self, image: Any, mask: tv_tensors.Mask) -> dict[str, Any]:
        images, batched = _image_batch(image)
        mask = mask.as_subclass(torch.Tensor)
        if not batched:
            if mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            if mask.ndim != 2:
                raise InputError(
                    f"mask must be (H, W) for a single image, got shape {tuple(mask.shape)}")
            mask = mask[None]
        out, erasure = self.eraser(images, mask, self.generator)
        erased = self.eraser.erased(mask, erasure) if self.return_erased else None
        return {
            "image": image,
            "output": out if batched else out[0],
            "erased": erased if erased is None or batched else erased[0],
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt is not params["image"]:
            return inpt
        return _restore_type(params["output"], inpt)


def _as_mask(mask: Any) -> tv_tensors.Mask:
    if isinstance(mask, tv_tensors.Mask):
        return mask
    if isinstance(mask, PIL.Image.Image):
        return tv_tensors.Mask(TF.pil_to_tensor(mask)[0])
    if isinstance(mask, np.ndarray):
        return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask)))
    if isinstance(mask, torch.Tensor):
        return tv_tensors.Mask(mask)
    raise InputError(f"cannot read a mask from {type(mask).__name__}")


def _find_image(flat_inputs: list[Any]) -> Any:
    """The one image among the inputs v2 would transform, by v2's own precedence."""
    explicit = [x for x in flat_inputs if isinstance(x, (tv_tensors.Image, PIL.Image.Image))]
    if len(explicit) > 1:
        raise InputError(f"FSErasing needs exactly one image per sample, found {len(explicit)}")
    if explicit:
        return explicit[0]
    for kind in (np.ndarray, torch.Tensor):
        found = [x for x in flat_inputs if isinstance(x, kind)
                 and (kind is np.ndarray or type(x) is torch.Tensor)]
        if found:
            return found[0]
    raise InputError("FSErasing found no image in the sample (tensor, tv_tensors.Image, PIL or "
                     "ndarray)")


def _image_batch(image: Any) -> tuple[torch.Tensor, bool]:
    """Any supported image as a (B, C, H, W) tensor (no copy where possible); batched flag."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("RGB", "L"):
            raise InputError(f"PIL images must be RGB or L, got mode {image.mode}")
        return TF.pil_to_tensor(image)[None], False
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise InputError(f"ndarray images must be (H, W, C) or (H, W), got {image.shape}")
        t = torch.from_numpy(np.ascontiguousarray(image))
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        return t[None], False
    t = image.as_subclass(torch.Tensor)
    if t.ndim == 3:
        return t[None], False
    if t.ndim == 4:
        return t, True
    raise InputError(f"image tensors must be (C, H, W) or (B, C, H, W), got {tuple(t.shape)}")


def _restore_type(out: torch.Tensor, like: Any) -> Any:
    if isinstance(like, PIL.Image.Image):
        return TF.to_pil_image(out, mode=like.mode)
    if isinstance(like, np.ndarray):
        arr = out.numpy()
        return arr[0] if like.ndim == 2 else arr.transpose(1, 2, 0)
    if isinstance(like, tv_tensors.Image):
        return out.as_subclass(tv_tensors.Image)  # tv_tensors.wrap costs ~40 us per call
    return out
