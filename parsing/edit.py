"""``python -m parsing.edit``: recolour face regions of a photo (:mod:`parsing.photos.edit`).

``--annotate`` labels the photo with Face Mesh, ``--parser CKPT`` with a trained parser on the
aligned face, ``--labels PNG`` takes a given FSE-25 map.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from parsing.core.cli import ArgumentParser, cli_main, non_negative_float, probability
from parsing.core.errors import InputError
from parsing.core.io import read_image, read_label_map
from parsing.core.labels import get_label_set
from parsing.core.paths import output_file
from parsing.photos.edit import parse_photo, recolor


def _labels_for(args: argparse.Namespace, image: np.ndarray) -> np.ndarray:
    if args.labels is not None:
        return read_label_map(args.labels)
    from parsing.photos.landmarks import detect_faces, face_mesh, landmarks5_from_mesh

    if args.annotate:
        from parsing.photos.annotate import annotate

        labels = annotate(image)
        if labels is None:
            raise InputError(f"--image {args.image}: Face Mesh found no face")
        return labels
    try:
        from parsing import Parser
    except ImportError:
        raise InputError("--parser needs parsing.Parser, which this install lacks") from None
    parser = Parser.from_checkpoint(args.parser)
    faces = detect_faces(image)
    if len(faces.scores):
        points = faces.landmarks5[0]
    else:
        mesh = face_mesh(image)
        if mesh is None:
            raise InputError(f"--image {args.image}: no face found")
        points = landmarks5_from_mesh(mesh)
    return parse_photo(image, parser, points, size=getattr(parser, "image_size", None) or 112)


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m parsing.edit",
        description="Recolour face regions of a photo, keeping its shading. Writes OUT and "
        "OUT with suffix .json (regions, colour, pixels changed).",
    )
    parser.add_argument("--image", required=True, type=Path, help="photo to edit")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--parser", type=Path,
                        help="a parsing.train run folder or its model.pt")
    source.add_argument("--annotate", action="store_true",
                        help="label with Face Mesh landmarks (face interior only: no hair)")
    source.add_argument("--labels", type=Path, help="FSE-25 label map PNG of the photo")
    parser.add_argument("--regions", nargs="+", default=["lips"],
                        help="FSE-25 classes or groups (lips, hair, brows, ...)")
    parser.add_argument("--color", default="#a03020", help="target colour, '#rrggbb' or a name")
    parser.add_argument("--strength", type=probability, default=0.6, help="0..1 chroma blend")
    parser.add_argument("--feather", type=non_negative_float, default=2.0,
                        help="edge softness (pixels)")
    parser.add_argument("--out", required=True, type=Path, help="output image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    if Image.registered_extensions().get(args.out.suffix.lower()) not in Image.SAVE:
        raise InputError(f"--out {args.out}: unknown image format {args.out.suffix!r} "
                         "(use .png or .jpg)")
    image = read_image(args.image)
    labels = _labels_for(args, image)
    if labels.shape != image.shape[:2]:
        raise InputError(f"label map {labels.shape} does not match --image {image.shape[:2]}")
    ids = get_label_set("fse25").ids(args.regions)
    if not np.isin(labels, ids).any():
        hint = " (--annotate labels only the face interior)" if args.annotate else ""
        raise InputError(f"regions {' '.join(args.regions)} are not in the label map{hint}")
    inputs = {"--image": args.image, "--labels": args.labels, "--parser": args.parser}
    for path in (args.out, args.out.with_suffix(".json")):
        output_file(path, inputs, overwrite=args.overwrite)
    edited = recolor(image, labels, args.regions, args.color, args.strength, args.feather)
    Image.fromarray(edited).save(args.out)
    report = {"image": str(args.image), "out": str(args.out), "regions": args.regions,
              "color": args.color, "strength": args.strength, "feather": args.feather,
              "pixels_changed": int((edited != image).any(-1).sum()),
              "region_pixels": int(np.isin(labels, ids).sum())}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    raise SystemExit(main())
