"""Five-point alignment to the ArcFace 112x112 template (SPEC §5.1) and its CLI.

The maths lives in :mod:`parsing.align` (``align_face`` agrees with skimage's
``SimilarityTransform`` + ``warp``); this module re-exports it for recognition users and adds
``python -m recognition.align --images DIR --out DIR --landmarks FILE.csv``, which writes each
aligned face (and, with ``--label-maps``, its label map warped with nearest neighbours) as a PNG
under the same relative path. Landmarks come from a CSV ``key,x1,y1,...,x5,y5`` whose key is
an image's relative path (with or without extension) or, for numbered files, its number.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import warp_affine
from PIL import Image
from tqdm import tqdm

from parsing.align import ARCFACE_TEMPLATE, align_face, estimate_similarity, landmarks5_from_68
from parsing.cli import cli_main
from parsing.errors import DataError, InputError
from parsing.io import IMAGE_EXTENSIONS, read_image, read_label_map, write_label_map

__all__ = [
    "ARCFACE_TEMPLATE",
    "align_face",
    "align_label_map",
    "estimate_similarity",
    "landmarks5_from_68",
    "read_landmarks_csv",
]


def align_label_map(label_map: torch.Tensor, landmarks5: torch.Tensor, size: int = 112
                    ) -> torch.Tensor:
    """Warp (B, H, W) / (H, W) integer label maps like :func:`align_face`, nearest neighbour.

    Pixels that fall outside the source become 0 (background).
    """
    single = label_map.dim() == 2
    maps = label_map[None] if single else label_map
    pts = torch.as_tensor(landmarks5, dtype=torch.float64, device=maps.device)
    pts = pts[None] if pts.dim() == 2 else pts
    matrix = estimate_similarity(pts, ARCFACE_TEMPLATE.to(maps.device) * (size / 112.0))
    warped = warp_affine(maps[:, None].float(), matrix.float(), dsize=(size, size),
                         mode="nearest", padding_mode="zeros", align_corners=True)
    out = warped[:, 0].round().to(label_map.dtype)
    return out[0] if single else out


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
        out[_key(row[0].strip())] = np.asarray(row[1:], dtype=np.float64).reshape(5, 2)
    if not out:
        raise DataError(f"{path}: no landmark rows")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _match(keys: list[str], table: dict[str, np.ndarray], source: str) -> list[np.ndarray]:
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


def _save(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)


def _read_map(folder: Path, key: str) -> np.ndarray:
    for path in (folder / f"{key}.png", folder / f"{key}_seg.png"):
        if path.is_file():
            return read_label_map(path)
    raise DataError(f"{folder}: no label map {key}.png or {key}_seg.png")


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m recognition.align",
        description="Align face images to the ArcFace 112x112 template from five landmarks.")
    ap.add_argument("--images", required=True, help="folder of images (searched recursively)")
    ap.add_argument("--out", required=True, help="output folder (same relative paths, .png)")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--landmarks", help="CSV key,x1,y1,...,x5,y5 (SPEC §5.1 point order)")
    ap.add_argument("--label-maps", help="folder of label PNGs to align with the images "
                    "(name: image key + .png, or key + '_seg.png' as parsing.synth writes)")
    ap.add_argument("--label-maps-out", help="output folder for the aligned label maps")
    ap.add_argument("--size", type=int, default=112, help="output size (template scaled)")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    root, out = Path(args.images), Path(args.out)
    if not root.is_dir():
        raise InputError(f"--images {root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"--images {root}: no images")
    keys = [str(p.relative_to(root).with_suffix("")) for p in files]
    landmarks = _match(keys, read_landmarks_csv(args.landmarks), args.landmarks)
    maps_dir = Path(args.label_maps) if args.label_maps else None
    if (maps_dir is None) != (args.label_maps_out is None):
        raise InputError("--label-maps and --label-maps-out go together")
    for start in tqdm(range(0, len(files), args.batch_size), desc="aligning", unit="batch"):
        batch = range(start, min(start + args.batch_size, len(files)))
        images = [read_image(files[i]) for i in batch]
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for pos, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(pos)
        for group in by_shape.values():  # one batched warp per image size
            idx = [batch[pos] for pos in group]
            pts = torch.from_numpy(np.stack([landmarks[i] for i in idx]))
            stacked = torch.from_numpy(np.stack([images[pos] for pos in group])).permute(0, 3, 1, 2)
            faces = align_face(stacked, pts, size=args.size).permute(0, 2, 3, 1).numpy()
            for i, face in zip(idx, faces, strict=True):
                _save(Image.fromarray(face), out / f"{keys[i]}.png")
            if maps_dir is not None:
                maps = torch.from_numpy(np.stack([_read_map(maps_dir, keys[i]) for i in idx]))
                for i, aligned in zip(idx, align_label_map(maps, pts, args.size), strict=True):
                    target = Path(args.label_maps_out) / f"{keys[i]}.png"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_label_map(target, aligned)
    print(json.dumps({"aligned": len(files), "out": str(out)}))


if __name__ == "__main__":
    raise SystemExit(main())
