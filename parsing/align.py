"""Five-point similarity alignment to the ArcFace 112x112 template (SPEC §5.1).

``python -m parsing.align --images DIR --out DIR [--detector mtcnn|facemesh]`` detects the
best face of each photo (:mod:`parsing.landmarks`, optional packages) and writes the crops.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from kornia.geometry.transform import warp_affine
from PIL import Image
from tqdm import tqdm

from parsing.cli import cli_main
from parsing.errors import DataError, InputError
from parsing.io import IMAGE_EXTENSIONS, read_image

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


def _detect_landmarks5(images: list[np.ndarray], detector: str, min_score: float) -> list:
    """Five points (5, 2) of the best face per image, or None where none is found."""
    from parsing.landmarks import detect_faces, face_mesh, landmarks5_from_mesh

    if detector == "mtcnn":
        return [f.landmarks5[0] if len(f.scores) else None
                for f in detect_faces(images, min_score=min_score)]
    return [None if m is None else landmarks5_from_mesh(m) for m in face_mesh(images)]


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m parsing.align",
        description="Detect the best face of each image, align it to the ArcFace template and "
        "write OUT/images/{id}.png, OUT/landmarks.csv (frame_id,x1,y1,...,x5,y5 in the source "
        "image) and OUT/align_summary.json (with the images where no face was found).",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of images (recursive)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--detector", choices=("mtcnn", "facemesh"), default="mtcnn",
                        help="five points from MTCNN or from MediaPipe Face Mesh")
    parser.add_argument("--size", type=int, default=112, help="crop size (template scaled)")
    parser.add_argument("--min-score", type=float, default=0.9, help="MTCNN score threshold")
    parser.add_argument("--batch-size", type=int, default=16, help="images per detector call")
    args = parser.parse_args(argv)
    if not args.images.is_dir():
        raise DataError(f"--images {args.images}: no such folder")
    paths = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise DataError(f"--images {args.images}: no images ({', '.join(IMAGE_EXTENSIONS)})")

    (args.out / "images").mkdir(parents=True, exist_ok=True)
    rows, no_face = [], []
    with tqdm(total=len(paths), desc="align", unit="img") as bar:
        for start in range(0, len(paths), args.batch_size):
            chunk = paths[start: start + args.batch_size]
            images = [read_image(p) for p in chunk]
            for path, image, pts in zip(
                chunk, images, _detect_landmarks5(images, args.detector, args.min_score),
                strict=True,
            ):
                frame_id = path.relative_to(args.images).with_suffix("").as_posix()
                if pts is None:
                    no_face.append(frame_id)
                    continue
                target = args.out / "images" / f"{frame_id}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(align_face(image, pts.cpu(), size=args.size)).save(target)
                rows.append([frame_id, *(f"{v:.3f}" for v in pts.flatten().tolist())])
            bar.update(len(chunk))

    with open(args.out / "landmarks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame_id"] + [f"{c}{k}" for k in range(1, 6) for c in "xy"])
        writer.writerows(rows)
    summary = {"images": len(paths), "aligned": len(rows), "no_face": no_face,
               "detector": args.detector, "size": args.size}
    (args.out / "align_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "no_face"}))
    for frame_id in no_face:
        print(f"no face: {frame_id}")


if __name__ == "__main__":
    raise SystemExit(main())
