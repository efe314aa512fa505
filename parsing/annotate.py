"""``python -m parsing.annotate``: FSE-25 label maps for photos from Face Mesh landmarks.

The method is in :mod:`parsing.photos.annotate`; this command reads a folder of photos and
writes one label PNG per photo, optionally with a base segmentation and a contact sheet.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from parsing.core.cli import ArgumentParser, cli_main, positive_int
from parsing.core.errors import DataError
from parsing.core.io import list_images, read_image, read_label_map, write_label_map
from parsing.core.labels import (
    FSE25,
    convert,
    get_label_set,
)
from parsing.core.paths import check_unique_keys, output_dir, output_file
from parsing.core.progress import progress_bar
from parsing.core.viz import contact_sheet
from parsing.photos.annotate import annotate


def _base_path(base_dir: Path, frame_id: str) -> Path:
    for candidate in (base_dir / f"{frame_id}_seg.png", base_dir / f"{frame_id}.png"):
        if candidate.is_file():
            return candidate
    raise DataError(f"--base-seg {base_dir}: no {frame_id}_seg.png or {frame_id}.png")


def _face_box(labels: np.ndarray, margin: float = 0.3) -> tuple[slice, slice]:
    """The labelled face with ``margin`` of its size around it, clipped to the image."""
    rows, cols = np.nonzero(labels)
    h, w = labels.shape
    pad_r, pad_c = int(margin * np.ptp(rows)), int(margin * np.ptp(cols))
    return (slice(max(rows.min() - pad_r, 0), min(rows.max() + pad_r + 1, h)),
            slice(max(cols.min() - pad_c, 0), min(cols.max() + pad_c + 1, w)))


def _contact_sheet(path: Path, items: list[tuple[np.ndarray, np.ndarray]], size: int = 224) -> None:
    """Each face cropped around its labels and resized, beside its FSE-25 map (parsing.core.viz)."""
    faces, maps = [], []
    for img, labels in items:
        box = _face_box(labels)
        faces.append(np.asarray(Image.fromarray(img[box]).resize((size, size), Image.BILINEAR)))
        maps.append(np.asarray(Image.fromarray(labels[box]).resize((size, size), Image.NEAREST)))
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2), np.stack(maps),
                  "fse25", path, nrow=min(len(items), 4))


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m parsing.annotate",
        description="Label face photos with FSE-25 and FSE-10 regions from Face Mesh landmarks. "
        "Writes OUT/labels_25/{id}_seg.png, OUT/labels_10/{id}_seg.png, OUT/anno_list.csv "
        "(frame_id,with_25; 0 = no face found) and OUT/annotate_summary.json.",
    )
    parser.add_argument("--images", required=True, type=Path, help="folder of images "
                        "(searched recursively; *_seg.png files are skipped)")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--base-seg", type=Path, help="folder of base label maps "
                        "{id}_seg.png or {id}.png (FaceSynthetics, CelebAMask-HQ, parser output)")
    parser.add_argument("--base-labels", default="facesynthetics", help="label set of "
                        "--base-seg: facesynthetics, fse25, celebamask_official, "
                        "celebamask_bisenet, celebamask_farl (default: %(default)s)")
    parser.add_argument("--limit", type=positive_int, help="annotate only the first N images")
    parser.add_argument("--sheet", type=Path, help="also save a figure of the first images")
    parser.add_argument("--sheet-count", type=positive_int, default=4,
                        help="images on the figure")
    parser.add_argument("--overwrite", action="store_true",
                        help="write over the outputs of an earlier run in OUT (and --sheet)")
    args = parser.parse_args(argv)
    base_labels = get_label_set(args.base_labels)
    paths = [p for p in list_images(args.images)[0] if not p.stem.endswith("_seg")][: args.limit]
    if args.base_seg is not None and not args.base_seg.is_dir():
        raise DataError(f"--base-seg {args.base_seg}: no such folder")
    frame_ids = [p.relative_to(args.images).with_suffix("").as_posix() for p in paths]
    check_unique_keys(paths, frame_ids, f"--images {args.images}")
    inputs = {"--images": args.images, "--base-seg": args.base_seg}
    output_dir(args.out, inputs, overwrite=args.overwrite,
               entries=("labels_25", "labels_10", "anno_list.csv", "annotate_summary.json"))
    if args.sheet is not None:
        output_file(args.sheet, inputs, overwrite=args.overwrite, flag="--sheet")
    for sub in ("labels_25", "labels_10"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)

    rows, sheet_items = [], []
    start = time.perf_counter()
    for path, frame_id in progress_bar(list(zip(paths, frame_ids, strict=True)),
                                       desc="annotate", unit="img"):
        image = read_image(path)
        base = None
        if args.base_seg is not None:
            base = read_label_map(_base_path(args.base_seg, frame_id))
        labels = annotate(image, base, base_labels)
        rows.append((frame_id, int(labels is not None)))
        if labels is None:
            continue
        for sub, label_map in (("labels_25", labels),
                               ("labels_10", convert(labels, FSE25, "fse10"))):
            target = args.out / sub / f"{frame_id}_seg.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_label_map(target, label_map)
        if args.sheet is not None and len(sheet_items) < args.sheet_count:
            sheet_items.append((image, labels))
    seconds = time.perf_counter() - start

    with open(args.out / "anno_list.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["frame_id", "with_25"])
        writer.writerows(rows)
    annotated = sum(r[1] for r in rows)
    summary = {
        "images": len(rows), "annotated": annotated, "failed": len(rows) - annotated,
        "detection_rate": annotated / len(rows), "seconds_per_image": seconds / len(rows),
        "base_labels": base_labels.key if args.base_seg is not None else None,
        "failures": [r[0] for r in rows if not r[1]],
    }
    (args.out / "annotate_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.sheet is not None and sheet_items:
        _contact_sheet(args.sheet, sheet_items)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))


if __name__ == "__main__":
    raise SystemExit(main())
