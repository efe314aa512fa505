"""Five-point similarity alignment of faces and label maps to the ArcFace 112x112 template.

The template and point order are those of reference §5.1; ``python -m parsing.align`` is the
command over a folder.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import invert_affine_transform, warp_affine
from PIL import Image

from parsing.core.errors import DataError, InputError
from parsing.core.io import IMAGE_EXTENSIONS

# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner
ARCFACE_TEMPLATE = torch.tensor(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=torch.float64,
)


def landmarks5_from_68(points68: torch.Tensor | np.ndarray) -> torch.Tensor:
    """iBUG-68 (..., 68+, 2) -> ArcFace five points (..., 5, 2): eye centres, nose tip, mouth.

    Extra trailing points (FaceSynthetics' two pupils) are ignored.
    """
    p = torch.as_tensor(points68, dtype=torch.float64)
    if p.dim() < 2 or p.shape[-1] != 2 or p.shape[-2] < 68:
        raise InputError(f"expected (..., 68, 2) landmarks, got {tuple(p.shape)}")
    return torch.stack(
        [p[..., [36, 39], :].mean(-2), p[..., [42, 45], :].mean(-2), p[..., 30, :],
         p[..., 48, :], p[..., 54, :]],
        dim=-2,
    )


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor | None = None) -> torch.Tensor:
    """Least-squares similarity (Umeyama, as skimage's ``SimilarityTransform``) src -> dst.

    ``src`` is (B, N, 2) or (N, 2); ``dst`` defaults to :data:`ARCFACE_TEMPLATE`. Returns the
    (B, 2, 3) (or (2, 3)) matrices mapping source pixel coordinates to destination ones.
    """
    src = torch.as_tensor(src)
    single = src.dim() == 2
    s = (src[None] if single else src).to(torch.float64)
    d = torch.as_tensor(ARCFACE_TEMPLATE if dst is None else dst, dtype=torch.float64)
    d = d.to(s.device).expand_as(s)
    if s.shape[-1] != 2 or s.shape[-2] < 2:
        raise InputError(f"landmarks must be (B, N, 2) with N >= 2, got {tuple(src.shape)}")
    mu_s, mu_d = s.mean(1, keepdim=True), d.mean(1, keepdim=True)
    xs, xd = s - mu_s, d - mu_d
    var_s = xs.pow(2).sum((1, 2)) / s.shape[1]
    if (var_s <= 1e-12).any():
        raise InputError("degenerate landmarks: all points coincide")
    cov = xd.transpose(1, 2) @ xs / s.shape[1]
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    diag = torch.stack([torch.ones_like(sign), sign], dim=1)
    rot = u @ torch.diag_embed(diag) @ vh
    scale = (sv * diag).sum(1) / var_s
    shift = mu_d.squeeze(1) - scale[:, None] * (rot @ mu_s.transpose(1, 2)).squeeze(2)
    m = torch.cat([scale[:, None, None] * rot, shift[:, :, None]], dim=2)
    return (m[0] if single else m).to(src.dtype if src.dtype.is_floating_point else torch.float32)


def align_face(
    image: torch.Tensor | np.ndarray | Image.Image,
    landmarks5: torch.Tensor | np.ndarray,
    size: int = 112,
    mode: str = "bilinear",
) -> torch.Tensor | np.ndarray:
    """Warp faces to the ArcFace template with their five points; border value 0.

    Tensors (B, C, H, W) or (C, H, W), float or uint8, give tensors of the same layout and
    dtype on the same device (batched on that device). An (H, W, 3) uint8 array or PIL image
    gives an (size, size, 3) uint8 array. The template is scaled by ``size / 112``.
    ``mode="nearest"`` warps label maps (given as (B, 1, H, W)) without mixing ids.
    """
    if isinstance(image, (np.ndarray, Image.Image)):
        arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"expected an (H, W, 3) image, got shape {arr.shape}")
        out = align_face(torch.from_numpy(np.require(arr, requirements="CW")).permute(2, 0, 1),
                         landmarks5, size, mode)
        return out.permute(1, 2, 0).numpy()
    single = image.dim() == 3
    batch = image[None] if single else image
    if batch.dim() != 4:
        raise InputError(f"expected a (B, C, H, W) or (C, H, W) image, got {tuple(image.shape)}")
    pts = torch.as_tensor(landmarks5, dtype=torch.float64, device=batch.device)
    pts = pts[None] if pts.dim() == 2 else pts
    if pts.shape != (batch.shape[0], 5, 2):
        raise InputError(
            f"landmarks must be (B, 5, 2) for {batch.shape[0]} image(s), got {tuple(pts.shape)}"
        )
    matrix = estimate_similarity(pts, ARCFACE_TEMPLATE.to(batch.device) * (size / 112.0))
    src = batch.float() if not batch.dtype.is_floating_point else batch
    warped = warp_affine(src, matrix.to(src.dtype), dsize=(size, size), mode=mode,
                         padding_mode="zeros", align_corners=True)
    if not batch.dtype.is_floating_point:
        warped = warped.round().clamp(0, 255).to(batch.dtype)
    return warped[0] if single else warped


def align_label_map(label_map: torch.Tensor, landmarks5: torch.Tensor, size: int = 112
                    ) -> torch.Tensor:
    """Warp (B, H, W) / (H, W) integer label maps like :func:`align_face`, nearest neighbour.

    Pixels that fall outside the source become 0 (background).
    """
    single = label_map.dim() == 2
    maps = label_map[None] if single else label_map
    warped = align_face(maps[:, None].float(), landmarks5, size, mode="nearest")
    out = warped[:, 0].round().to(label_map.dtype)
    return out[0] if single else out


def unalign_label_map(label_map: torch.Tensor, landmarks5: torch.Tensor,
                      shape: tuple[int, int]) -> torch.Tensor:
    """The inverse of :func:`align_label_map`: an aligned (S, S) map back onto the (H, W) photo
    whose five points are ``landmarks5``, nearest neighbour; 0 outside the aligned crop."""
    size = label_map.shape[-1]
    pts = torch.as_tensor(landmarks5, dtype=torch.float64).reshape(1, 5, 2)
    matrix = estimate_similarity(pts, ARCFACE_TEMPLATE * (size / 112.0)).float()
    back = warp_affine(label_map.float().reshape(1, 1, size, size).cpu(),
                       invert_affine_transform(matrix), dsize=shape, mode="nearest",
                       padding_mode="zeros", align_corners=True)
    return back[0, 0].round().to(label_map.dtype)


def _key(name: str) -> str:
    path = Path(name)
    return str(path.with_suffix("")) if path.suffix.lower() in IMAGE_EXTENSIONS else name


def read_landmarks_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """``{key: (5, 2) float array}`` from a ``key,x1,y1,...,x5,y5`` CSV (header row optional)."""
    out: dict[str, np.ndarray] = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{path}: no such landmarks file") from None
    for n, row in enumerate(rows, 1):
        if not row or (n == 1 and not _is_number(row[-1])):
            continue
        if len(row) != 11 or not all(_is_number(v) for v in row[1:]):
            raise DataError(f"{path}:{n}: expected key and 10 coordinates, got {len(row)} fields")
        points = np.asarray(row[1:], dtype=np.float64).reshape(5, 2)
        if not np.isfinite(points).all():
            raise DataError(f"{path}:{n}: landmarks must be finite numbers, got {row[1:]}")
        out[_key(row[0].strip())] = points
    if not out:
        raise DataError(f"{path}: no landmark rows")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def match_landmarks(keys: list[str], table: dict[str, np.ndarray], source: str) -> list[np.ndarray]:
    numbered = {int(k): v for k, v in table.items() if k.isdigit()}
    found, missing = [], []
    for key in keys:
        name = Path(key).name
        if key in table:
            found.append(table[key])
        elif name.isdigit() and int(name) in numbered:
            found.append(numbered[int(name)])
        else:
            missing.append(key)
    if missing:
        raise DataError(f"{source}: no landmarks for {len(missing)} image(s), e.g. {missing[:3]}")
    return found
