"""``python -m parsing.align``: align face images to the ArcFace 112x112 template.

Five points per image come from a CSV (``--landmarks``, keyed by relative path or frame
number) or from a detector (``--detector mtcnn|facemesh``, optional packages). Writes
``OUT/images/{key}.png``, ``OUT/landmarks.csv`` (the five points in the source image),
``OUT/align_summary.json`` and, with ``--label-maps``, the label maps warped with the images
(nearest neighbour) to ``OUT/labels/{key}.png``. OUT may hold the images' folder, never lie
inside it; files already at those places are kept unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from parsing.core.align import align_face, align_label_map, match_landmarks, read_landmarks_csv
from parsing.core.cli import ArgumentParser, cli_main, positive_int, probability
from parsing.core.errors import DataError, InputError
from parsing.core.io import list_images, read_image, read_label_map, write_image, write_label_map
from parsing.core.paths import check_unique_keys, output_dir
from parsing.core.progress import progress_bar


def _detect_landmarks5(images: list[np.ndarray], detector: str, min_score: float) -> list:
    """Five points (5, 2) of the best face per image, or None where none is found."""
    from parsing.photos.landmarks import detect_faces, face_mesh, landmarks5_from_mesh

    if detector == "mtcnn":
        return [f.landmarks5[0] if len(f.scores) else None
                for f in detect_faces(images, min_score=min_score)]
    return [None if m is None else landmarks5_from_mesh(m) for m in face_mesh(images)]


def _read_map(folder: Path, key: str) -> np.ndarray:
    for path in (folder / f"{key}.png", folder / f"{key}_seg.png"):
        if path.is_file():
            return read_label_map(path)
    raise DataError(f"{folder}: no label map {key}.png or {key}_seg.png")


def build_arg_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m parsing.align", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, type=Path, help="folder of images (recursive)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--landmarks", type=Path, default=None,
                        help="CSV key,x1,y1,...,x5,y5 (reference §5.1 order): no detection")
    parser.add_argument("--detector", choices=("mtcnn", "facemesh"), default="mtcnn",
                        help="without --landmarks: five points from MTCNN or MediaPipe Face Mesh")
    parser.add_argument("--label-maps", type=Path, default=None,
                        help="folder of label PNGs ({key}.png or {key}_seg.png) to align too")
    parser.add_argument("--size", type=positive_int, default=112,
                        help="crop size, at least 16 (template scaled)")
    parser.add_argument("--min-score", type=probability, default=0.9,
                        help="MTCNN score threshold")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per batch")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over the outputs of an earlier run in OUT")
    return parser


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    if args.size < 16:
        raise InputError(f"--size {args.size}: must be at least 16")
    paths, rels = list_images(args.images, "--images")
    keys = [r.with_suffix("").as_posix() for r in rels]
    check_unique_keys(paths, keys, f"--images {args.images}")
    given = None
    if args.landmarks is not None:
        given = match_landmarks(keys, read_landmarks_csv(args.landmarks), str(args.landmarks))
    output_dir(args.out, {"--images": args.images, "--landmarks": args.landmarks,
                          "--label-maps": args.label_maps}, overwrite=args.overwrite,
               entries=("images", "labels", "landmarks.csv", "align_summary.json"))

    rows, no_face = [], []
    with progress_bar(total=len(paths), desc="align", unit="img") as bar:
        for start in range(0, len(paths), args.batch_size):
            idx = range(start, min(start + args.batch_size, len(paths)))
            images = [read_image(paths[i]) for i in idx]
            if given is not None:
                points = [torch.from_numpy(given[i]) for i in idx]
            else:
                points = _detect_landmarks5(images, args.detector, args.min_score)
            for i, image, pts in zip(idx, images, points, strict=True):
                if pts is None:
                    no_face.append(keys[i])
                    continue
                pts = pts.cpu()
                write_image(args.out / "images" / f"{keys[i]}.png",
                            align_face(image, pts, size=args.size))
                if args.label_maps is not None:
                    label_map = torch.from_numpy(_read_map(args.label_maps, keys[i]))
                    write_label_map(args.out / "labels" / f"{keys[i]}.png",
                                    align_label_map(label_map, pts, args.size))
                rows.append([keys[i], *(f"{v:.3f}" for v in pts.flatten().tolist())])
            bar.update(len(idx))

    with open(args.out / "landmarks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame_id"] + [f"{c}{k}" for k in range(1, 6) for c in "xy"])
        writer.writerows(rows)
    summary = {"images": len(paths), "aligned": len(rows), "no_face": no_face,
               "landmarks": "csv" if given is not None else args.detector, "size": args.size}
    (args.out / "align_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "no_face"}))
    for key in no_face:
        print(f"no face: {key}")


if __name__ == "__main__":
    raise SystemExit(main())
