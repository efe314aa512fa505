"""Region editing from face label maps: recolour lips, hair, brows... keeping the shading.

:func:`recolor` blends the chroma (CIE a*, b*) of the chosen regions toward a target colour
in CIE Lab (kornia) and keeps the lightness L*, so shading, highlights and texture stay;
a Gaussian-blurred mask gives soft edges. This is the recolouring application of the plain
U-Net face segmenter (reference §6).

``python -m parsing.edit --image photo.jpg --annotate --regions lips --color "#a03020"
--out out.png`` labels the photo with Face Mesh (:mod:`parsing.photos.annotate`: face interior
only), ``--parser CKPT`` with a trained parser on the aligned face (:func:`parse_photo`),
``--labels PNG`` with a given FSE-25 map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d
from PIL import Image, ImageColor

from parsing.core.align import align_face, unalign_label_map
from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.pixels import normalise

__all__ = ["parse_photo", "recolor", "region_mask"]

ColorLike = str | tuple[int, int, int]


def _rgb01(color: ColorLike) -> torch.Tensor:
    if isinstance(color, str):
        try:
            rgb = ImageColor.getrgb(color)[:3]
        except ValueError:
            raise InputError(f"color {color!r}: use '#rrggbb' or a colour name") from None
    else:
        rgb = tuple(color)
        if len(rgb) != 3 or not all(0 <= int(v) <= 255 for v in rgb):
            raise InputError(f"color {color!r}: expected three values in 0..255")
    return torch.tensor(rgb, dtype=torch.float32) / 255.0


def region_mask(
    label_map: torch.Tensor,
    regions: int | str | Sequence[int | str],
    feather: float = 2.0,
    label_set: str | LabelSet = "fse25",
) -> torch.Tensor:
    """Soft mask (B, 1, H, W) in [0, 1] of ``regions`` (ids, class or group names).

    ``feather`` is the Gaussian sigma in pixels (0: hard edges); the mask is exactly zero
    farther than ``ceil(3 * feather)`` pixels from the regions.
    """
    ids = torch.tensor(get_label_set(label_set).ids(regions), device=label_map.device)
    mask = torch.isin(label_map.long(), ids).float()[:, None]
    if feather > 0:
        radius = int(np.ceil(3 * feather))
        mask = gaussian_blur2d(mask, 2 * radius + 1, (feather, feather), border_type="replicate")
    return mask


def recolor(
    image: torch.Tensor | np.ndarray | Image.Image,
    label_map: torch.Tensor | np.ndarray,
    regions: int | str | Sequence[int | str] = ("upper_lip", "lower_lip"),
    color: ColorLike = "#a03020",
    strength: float = 0.6,
    feather: float = 2.0,
    label_set: str | LabelSet = "fse25",
) -> torch.Tensor | np.ndarray | Image.Image:
    """Recolour the ``regions`` of ``image`` toward ``color``, keeping lightness (CIE L*).

    ``image``: (B, 3, H, W) or (3, H, W) tensor, float RGB in [0, 1] or uint8; an (H, W, 3)
    uint8 array; or a PIL image. ``label_map``: (B, H, W) or (H, W) ids of ``label_set``.
    Returns the same type, layout, dtype and device. ``strength`` in [0, 1] is how far the
    chroma moves to the target's; ``feather`` the edge softness (Gaussian sigma, pixels).
    Pixels beyond the feathered regions are returned unchanged, bit for bit.
    """
    if isinstance(image, (np.ndarray, Image.Image)):
        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise InputError(f"expected an (H, W, 3) uint8 image, got {arr.dtype} {arr.shape}")
        tensor = torch.from_numpy(np.require(arr, requirements="CW")).permute(2, 0, 1)
        out = recolor(tensor, torch.as_tensor(np.asarray(label_map)), regions, color, strength,
                      feather, label_set).permute(1, 2, 0).numpy()
        return Image.fromarray(out) if isinstance(image, Image.Image) else out
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"strength must be in [0, 1], got {strength}")
    if feather < 0:
        raise InputError(f"feather must be >= 0, got {feather}")
    single = image.dim() == 3
    batch = image[None] if single else image
    labels = torch.as_tensor(label_map, device=image.device)
    labels = labels[None] if labels.dim() == 2 else labels
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise InputError(f"expected a (B, 3, H, W) or (3, H, W) image, got {tuple(image.shape)}")
    if labels.shape != (batch.shape[0], *batch.shape[2:]):
        raise InputError(f"label map {tuple(label_map.shape)} does not match the image "
                         f"{tuple(image.shape)}")
    get_label_set(label_set).check(labels, "label map")

    alpha = strength * region_mask(labels, regions, feather, label_set)[:, 0]
    inside = alpha > 0  # only these pixels change: convert just them (cost ~ region area)
    pixels = batch.movedim(1, -1)[inside]  # (N, 3)
    rgb = pixels.float() / 255.0 if batch.dtype == torch.uint8 else pixels.float()
    lab = rgb_to_lab(rgb.T[None, :, :, None])  # kornia wants (B, 3, H, W): (1, 3, N, 1)
    target = rgb_to_lab(_rgb01(color).to(rgb.device)[None, :, None, None])
    weight = alpha[inside][None, None, :, None]
    chroma = torch.lerp(lab[:, 1:], target[:, 1:].expand_as(lab[:, 1:]), weight)
    edited = lab_to_rgb(torch.cat([lab[:, :1], chroma], dim=1), clip=True)[0, :, :, 0].T
    if batch.dtype == torch.uint8:
        edited = (edited * 255.0).round()
    out = batch.movedim(1, -1).clone()
    out[inside] = edited.to(batch.dtype)
    out = out.movedim(-1, 1).contiguous()
    return out[0] if single else out


def parse_photo(
    image: np.ndarray,
    parser: Callable[[torch.Tensor], torch.Tensor],
    landmarks5: torch.Tensor | np.ndarray,
    size: int = 112,
) -> np.ndarray:
    """Label a photo with a parser trained on aligned faces: align, parse, warp back.

    ``parser`` maps (1, 3, size, size) images normalised with mean = std = 0.5 to (1, size,
    size) label maps (``parsing.Parser``); ``landmarks5`` are the face's five points in the
    photo. Returns an (H, W) uint8 map, background outside the aligned crop.
    """
    pts = torch.as_tensor(landmarks5, dtype=torch.float64).reshape(1, 5, 2)
    photo = torch.from_numpy(np.require(image, requirements="CW")).permute(2, 0, 1)[None].float()
    labels = parser(normalise(align_face(photo, pts, size)))
    return unalign_label_map(labels.to(torch.uint8).reshape(size, size), pts,
                             image.shape[:2]).numpy()
