"""Write a synthetic face data set: ``python -m parsing.synth --out DIR --identities N ...``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from parsing.core.cli import ArgumentParser, cli_main, probability
from parsing.core.paths import output_dir, output_file
from parsing.core.viz import contact_sheet
from parsing.synth.dataset import SynthFaces, write_dataset


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m parsing.synth",
        description="Render procedural faces with exact FSE-25 label maps, five ArcFace "
        "landmarks and identities, in the FaceSynthetics layout (images/, labels_25/, "
        "anno_list.csv) plus landmarks.csv and identities.csv. Prints a JSON summary.",
    )
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--identities", type=int, required=True, help="number of identities")
    p.add_argument("--images-per-identity", type=int, required=True)
    p.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    p.add_argument("--size", type=int, default=112,
                   help="image size; without --loose the face is ArcFace-aligned (default 112)")
    p.add_argument("--loose", action="store_true",
                   help="unaligned crops: the face smaller, turned and off-centre in the canvas")
    p.add_argument("--identity-regions", default=None, metavar="REGIONS",
                   help="comma-separated FSE-25 classes or groups (e.g. eyes,nose) that alone "
                   "carry identity; everything else varies per image. Those regions get "
                   "per-identity marks and are never hidden by glasses (eyes, around_eyes) or "
                   "hats (hair)")
    p.add_argument("--no-identity-marks", dest="identity_marks", action="store_false",
                   default=None, help="with --identity-regions: keep those regions' natural "
                   "look instead of adding distinctive per-identity colours, patterns and marks")
    p.add_argument("--occluders", default=None, metavar="KINDS",
                   help="comma-separated occluders drawn over faces: sunglasses, mask, hand, "
                   "scarf; writes occluders/{id}.png (0 none, 1 sunglasses, 2 mask, 3 hand, "
                   "4 scarf)")
    p.add_argument("--occluder-p", type=probability, default=0.5,
                   help="probability that a face gets one occluder (default 0.5)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes (default: all usable cores); output does not depend on it")
    p.add_argument("--sheet", default=None, metavar="PNG",
                   help="also write a contact sheet of faces beside their colour-coded masks")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out that already holds files (and over --sheet)")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    regions = None
    if args.identity_regions is not None:
        regions = [r.strip() for r in args.identity_regions.split(",") if r.strip()]
    output_dir(args.out, {}, overwrite=args.overwrite)
    if args.sheet:
        output_file(args.sheet, {"--out": args.out}, overwrite=args.overwrite, flag="--sheet")
    occluders = None
    if args.occluders is not None:
        occluders = [k.strip() for k in args.occluders.split(",") if k.strip()]
    start = time.perf_counter()
    out = write_dataset(args.out, args.identities, args.images_per_identity, args.seed,
                        size=args.size, identity_regions=regions, loose=args.loose,
                        workers=args.workers, identity_marks=args.identity_marks,
                        occluders=occluders, occluder_p=args.occluder_p)
    seconds = time.perf_counter() - start
    count = args.identities * args.images_per_identity
    summary = {"out": str(out), "images": count, "identities": args.identities,
               "size": args.size, "seconds": round(seconds, 3),
               "images_per_s": round(count / seconds, 1)}
    if args.sheet:
        summary["sheet"] = str(write_sheet(out, args.sheet))
    print(json.dumps(summary))


def write_sheet(root: str, path: str, identities: int = 8, per_identity: int = 4) -> str:
    """Contact sheet of a written data set: a row per identity (evenly spread), 4 images each."""
    ds = SynthFaces(root)
    by_identity: dict[int, list[int]] = {}
    for i, identity in enumerate(ds.identities):
        by_identity.setdefault(identity, []).append(i)
    keys = sorted(by_identity)
    chosen = [keys[int(k)] for k in np.unique(np.linspace(0, len(keys) - 1, identities).round())]
    picks = [i for identity in chosen for i in by_identity[identity][:per_identity]]
    samples = [ds[i] for i in picks]
    contact_sheet(torch.stack([s["image"] for s in samples]),
                  torch.stack([s["mask"] for s in samples]),
                  path=path, nrow=per_identity)
    return path


if __name__ == "__main__":
    sys.exit(main())
