"""Landmark-based FSE-25 / FSE-10 annotation: how the FSE-25 labels are made (reference §2.1-2.3).

The skin of the face is split into the nine regions of FSE-10 by polygons over MediaPipe
Face Mesh landmarks; the inner parts (nose, eyes, brows, lips, mouth) come from the
standard Face Mesh contours, or, with a base segmentation, every non-skin class comes from
the base (FaceSynthetics, CelebAMask-HQ or FSE-25 ids 10-24) and the base's skin is split
by the landmark regions.

Skin regions (Face Mesh indices; "right" is the subject's right, image-left on a photo).
Three landmark lines and the midline (the 28 mesh vertices a horizontal flip maps onto
themselves: 10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11-18, 200, 199,
175, 152) cut the face oval (FACEMESH_FACE_OVAL) into the nine regions:

* brow line 162-46-53-52-65-55-8: from the oval at brow height along the *lower* edge of
  the brow to the glabella. Above it: the forehead, brows included (FSE-10 absorbs them);
  the middle forehead is the strip between the inner brow ends 55-107-108-109 and its
  mirror image, up to the top of the oval (109-10-338).
* under-eye line 127-143-31-228-229-230-231-232-128-188-197: the third mesh ring below
  the eye (about a fifth of the eye distance below the corners), from the oval at eye
  height to the nose bridge. Between it and the brow line: the around-eye region, holding
  the eye, the lids and the skin just below them.
* nasolabial line 98-92-186-57-202-210-169-150: from the nose wing past the outside of
  the mouth corner down to the jaw. With the nose base 2-97-98 it bounds the chin region:
  upper-lip skin, mouth, lips and chin (FSE-10 absorbs mouth and lips into it). The cheeks
  are the rest below the eye band and run down the side of the face to the jaw.

These follow anatomy (the perioral region and chin below the nose, cheeks to the jaw) and
match the regions of the synthetic faces (``parsing.synth``); benchmarks/RESULTS.md has the
per-class agreement. Each region is a polygon of oval, line and midline vertices
(``SKIN_POLYGONS``). Left-side polygons are the mirror images (``MIRROR``: the index a
horizontal flip maps each vertex to, checked against Face Mesh on flipped photos in the
tests). Face Mesh's oval ends about two-thirds up the forehead; with a base segmentation,
base skin outside the polygons takes the nearest region (Euclidean distance transform).

Inner parts are the closed contours of MediaPipe's published connection sets
(``mediapipe/python/solutions/face_mesh_connections.py``, v0.10.21): FACEMESH_RIGHT_EYE /
LEFT_EYE, FACEMESH_RIGHT_EYEBROW / LEFT_EYEBROW (upper and lower chains joined at the
ends), FACEMESH_LIPS (outer and inner rings: upper lip = outer upper + inner upper chain,
lower lip likewise, mouth = inner ring) and, for the nose, the part of FACEMESH_NOSE's lower
loop under the tip (64-98-97-2-326-327-294) closed over the nose wings and up the sides of
the bridge along 129-209-198-174-196-122-193 to the nasion 168 (FACEMESH_NOSE's own loop
stops at the tip and has only a midline on the bridge).

Base classes (``base_labels``): FaceSynthetics via :func:`parsing.core.labels.convert` (skin,
beard and facewear are skin, as the labels module documents); FSE-25 ids 1-9 are skin and
10-24 kept; CelebAMask-HQ maps by name, with eye, brow, ear and earring sides taken from
the landmarks (the l_/r_ convention of the published masks is not documented) and the
necklace as neck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from parsing.core.errors import InputError
from parsing.core.labels import (
    CELEBAMASK_OFFICIAL,
    FSE25,
    LabelSet,
    convert,
    get_label_set,
)
from parsing.photos.landmarks import face_mesh, to_hwc_uint8

__all__ = [
    "MIDLINE",
    "MIRROR",
    "PART_CONTOURS",
    "SKIN_POLYGONS",
    "annotate",
    "base_to_fse25",
    "landmark_regions",
]

MIDLINE = (10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 164, 0, 11, 12, 13, 14, 15,
           16, 17, 18, 200, 199, 175, 152)

# Mirror partner of every off-midline vertex used below (subject's right -> left).
_MIRROR_PAIRS = (
    (109, 338), (67, 297), (103, 332), (54, 284), (21, 251), (162, 389), (127, 356),
    (234, 454), (93, 323), (132, 361), (58, 288), (172, 397), (136, 365), (150, 379),
    (149, 378), (176, 400), (148, 377),
    (46, 276), (53, 283), (52, 282), (65, 295), (55, 285), (70, 300), (63, 293), (105, 334),
    (66, 296), (107, 336), (108, 337),
    (143, 372), (31, 261), (228, 448), (229, 449), (230, 450), (231, 451), (232, 452),
    (128, 357), (188, 412),
    (92, 322), (186, 410), (57, 287), (202, 422), (210, 430), (169, 394),
    (33, 263), (246, 466), (161, 388), (160, 387), (159, 386), (158, 385), (157, 384),
    (173, 398), (133, 362), (155, 382), (154, 381), (153, 380), (145, 374), (144, 373),
    (163, 390), (7, 249),
    (193, 417), (122, 351), (196, 419), (174, 399), (198, 420), (209, 429), (129, 358),
    (64, 294), (98, 327), (97, 326),
    (61, 291), (185, 409), (40, 270), (39, 269), (37, 267), (146, 375), (91, 321),
    (181, 405), (84, 314), (78, 308), (191, 415), (80, 310), (81, 311), (82, 312), (95, 324),
    (88, 318), (178, 402), (87, 317),
)
MIRROR: dict[int, int] = {i: i for i in MIDLINE}
MIRROR |= {a: b for a, b in _MIRROR_PAIRS} | {b: a for a, b in _MIRROR_PAIRS}


def _mirrored(indices: Sequence[int]) -> tuple[int, ...]:
    return tuple(MIRROR[i] for i in reversed(indices))


_UNDER_EYE = (127, 143, 31, 228, 229, 230, 231, 232, 128, 188, 197)
_NASOLABIAL = (98, 92, 186, 57, 202, 210, 169, 150)
_RIGHT_SKIN = {
    "right_forehead": (109, 67, 103, 54, 21, 162, 46, 53, 52, 65, 55, 107, 108),
    "around_right_eye": (162, *_UNDER_EYE, 6, 168, 8, 55, 65, 52, 53, 46),
    "right_cheek": (127, 234, 93, 132, 58, 172, 136, *_NASOLABIAL[::-1], 97, 2, 94, 19, 1, 4, 5,
                    195, *_UNDER_EYE[::-1][:-1]),
    "right_chin": (2, 97, *_NASOLABIAL, 149, 176, 148, 152, 175, 199, 200, 18, 17, 16, 15, 14,
                   13, 12, 11, 0, 164),
}
_RIGHT_PARTS = {
    "right_eye": (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7),
    "right_brow": (70, 63, 105, 66, 107, 55, 65, 52, 53, 46),
}

# Closed polygons of Face Mesh indices per FSE-25 class, painted in this order.
SKIN_POLYGONS: dict[str, tuple[int, ...]] = {
    **_RIGHT_SKIN,
    **{k.replace("right", "left"): _mirrored(v) for k, v in _RIGHT_SKIN.items()},
    "middle_forehead": (10, 109, 108, 107, 55, 8, 285, 336, 337, 338),
}
_UPPER_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
_UPPER_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
_LOWER_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
_LOWER_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
_NOSE_RIGHT = (168, 193, 122, 196, 174, 198, 209, 129, 64, 98, 97)
PART_CONTOURS: dict[str, tuple[int, ...]] = {
    "nose": _NOSE_RIGHT + (2,) + _mirrored(_NOSE_RIGHT)[:-1],
    **_RIGHT_PARTS,
    **{k.replace("right", "left"): _mirrored(v) for k, v in _RIGHT_PARTS.items()},
    "upper_lip": _UPPER_OUTER + _UPPER_INNER[::-1],
    "lower_lip": _LOWER_OUTER + _LOWER_INNER[::-1],
    "mouth": _UPPER_INNER + _LOWER_INNER[::-1][1:-1],
}

_SKIN = 255  # marker for "skin of the base": replaced by the landmark regions
_CELEBA_TO_FSE25 = {
    "background": 0, "skin": _SKIN, "nose": 10, "mouth": 17, "u_lip": 18, "l_lip": 19,
    "neck": 20, "neck_l": 20, "hair": 21, "cloth": 22, "eye_g": 23, "hat": 24,
}
# CelebAMask parts whose side is read from the landmarks: (subject's right id, left id).
_CELEBA_SIDED = {"l_eye": (11, 12), "r_eye": (11, 12), "l_brow": (13, 14), "r_brow": (13, 14),
                 "l_ear": (15, 16), "r_ear": (15, 16), "ear_r": (15, 16)}


def _points(landmarks: torch.Tensor | np.ndarray) -> np.ndarray:
    p = np.asarray(torch.as_tensor(landmarks).detach().cpu(), dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape[0] < 468:
        raise InputError(f"expected (468 or 478, 2) Face Mesh landmarks, got {p.shape}")
    return p


def _paint(out: np.ndarray, p: np.ndarray, polygons: dict[str, tuple[int, ...]]) -> None:
    for name, indices in polygons.items():
        xy = p[list(indices)]
        rr, cc = draw_polygon(xy[:, 1], xy[:, 0], shape=out.shape)
        out[rr, cc] = FSE25.id(name)


def landmark_regions(
    landmarks: torch.Tensor | np.ndarray, shape: tuple[int, int], parts: bool = True
) -> np.ndarray:
    """FSE-25 label map (H, W) uint8 from Face Mesh landmarks (pixel coordinates).

    Skin regions 1-9 inside the face oval, then (``parts=True``) nose, eyes, brows, lips and
    mouth over them; everything else 0.
    """
    p = _points(landmarks)
    out = np.zeros(shape, dtype=np.uint8)
    _paint(out, p, SKIN_POLYGONS)
    if parts:
        _paint(out, p, PART_CONTOURS)
    return out


def _subject_right(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels on the subject's right of the line from forehead 10 to chin 152."""
    top, bottom = p[10], p[152]
    d = bottom - top
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    side = d[0] * (ys - top[1]) - d[1] * (xs - top[0])
    right_eye = d[0] * (p[33, 1] - top[1]) - d[1] * (p[33, 0] - top[0])
    return (side * right_eye) > 0


def base_to_fse25(
    base: np.ndarray, base_labels: str | LabelSet, landmarks: torch.Tensor | np.ndarray
) -> np.ndarray:
    """A base segmentation in FSE-25 ids, with 255 where it is skin (to be split by landmarks)."""
    label_set = get_label_set(base_labels)
    base = np.asarray(base)
    label_set.check(base, f"base segmentation ({label_set.key})")
    if label_set is FSE25:
        return np.where((base >= 1) & (base <= 9), _SKIN, base).astype(np.uint8)
    if label_set.key == "facesynthetics":
        return convert(base, label_set, FSE25, unmapped=_SKIN).astype(np.uint8)
    if label_set.key.startswith("celebamask"):
        official = convert(base, label_set, CELEBAMASK_OFFICIAL)
        names = CELEBAMASK_OFFICIAL.names
        lut = np.array([_CELEBA_TO_FSE25.get(n, _SKIN) for n in names], dtype=np.uint8)
        out = lut[official]
        right = _subject_right(_points(landmarks), base.shape)
        for name, (right_id, left_id) in _CELEBA_SIDED.items():
            sel = official == names.index(name)
            out[sel] = np.where(right[sel], right_id, left_id)
        return out
    raise InputError(f"cannot use {label_set.key} labels as a base segmentation")


def _merge(skin_regions: np.ndarray, base25: np.ndarray) -> np.ndarray:
    """Base classes over the landmark regions; base skin takes the nearest region."""
    skin = base25 == _SKIN
    regions = skin_regions > 0
    if not skin.any() or not regions.any():
        return np.where(skin, 0, base25).astype(np.uint8)
    # Every query (base skin) and feature (region) pixel lies in their joint bounding box.
    rows, cols = np.nonzero(skin | regions)
    box = np.s_[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    _, (r, c) = ndimage.distance_transform_edt(~regions[box], return_indices=True)
    out = base25.copy()
    out[box] = np.where(skin[box], skin_regions[box][r, c], base25[box])
    return out


def annotate(
    image: Any,
    base: Any = None,
    base_labels: str | LabelSet = "facesynthetics",
    landmarks: Any = None,
) -> np.ndarray | torch.Tensor | None | list[np.ndarray | torch.Tensor | None]:
    """FSE-25 label map of a face photo from its Face Mesh landmarks (and a base segmentation).

    ``image`` as in :mod:`parsing.photos.landmarks` (one image or a batch). ``base``: a label map
    (H, W) in ``base_labels`` ids per image (resized with nearest neighbour if its size
    differs); ``landmarks``: (468+, 2) Face Mesh points per image, found with
    :func:`parsing.photos.landmarks.face_mesh` when not given. Returns an (H, W) uint8 array (a
    tensor on the input's device for tensor input), None where no face is found, or a list
    for a batch.
    """
    arrays, batched, device = to_hwc_uint8(image)
    bases = _per_image(base, len(arrays), batched, "base")
    if landmarks is None:
        meshes = face_mesh(arrays)
    else:
        meshes = _per_image(landmarks, len(arrays), batched, "landmarks")
    tensor_input = isinstance(image, torch.Tensor) or (
        isinstance(image, (list, tuple)) and len(image) > 0 and isinstance(image[0], torch.Tensor)
    )
    out: list[np.ndarray | torch.Tensor | None] = []
    for arr, b, mesh in zip(arrays, bases, meshes, strict=True):
        if mesh is None:
            out.append(None)
            continue
        shape = arr.shape[:2]
        if b is None:
            labels = landmark_regions(mesh, shape)
        else:
            b = _resize_nearest(np.asarray(torch.as_tensor(b).cpu()), shape)
            labels = _merge(landmark_regions(mesh, shape, parts=False),
                            base_to_fse25(b, base_labels, mesh))
        out.append(torch.from_numpy(labels).to(device) if tensor_input else labels)
    return out if batched else out[0]


def _per_image(value: Any, n: int, batched: bool, what: str) -> list[Any]:
    if value is None:
        return [None] * n
    if not batched:
        return [value]
    items = list(value)
    if len(items) != n:
        raise InputError(f"{what}: got {len(items)} for a batch of {n} images")
    return items


def _resize_nearest(label_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if label_map.ndim != 2:
        raise InputError(f"base segmentation must be (H, W), got {label_map.shape}")
    if label_map.shape == tuple(shape):
        return label_map
    rows = (np.arange(shape[0]) + 0.5) * label_map.shape[0] / shape[0]
    cols = (np.arange(shape[1]) + 0.5) * label_map.shape[1] / shape[1]
    return label_map[rows.astype(int)[:, None], cols.astype(int)[None, :]]
