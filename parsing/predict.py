"""Predict label maps for a folder (or list) of face images: this is how FSErasing gets masks.

    python -m parsing.predict --checkpoint runs/parser --images data/faces \\
        --out data/faces_masks [--overlay]

Writes one single-channel label PNG per image at the same relative path with a ``.png``
suffix (``faces/a/b.jpg`` -> ``faces_masks/a/b.png``; two images that would share a mask,
``b.jpg`` and ``b.png``, are refused), read back by
``parsing.core.io.read_label_map``, and ``OUT/predictions.csv`` (image, mask). ``--images`` is a
directory (searched recursively) or a text file listing image paths (relative to the file's
folder, or absolute). ``--overlay`` also writes colour overlays to ``OUT_overlays/`` (or the
folder given); ``--sheet PNG`` a contact sheet of the first 16 faces beside their masks.
OUT must be new or empty (``--overwrite`` writes over what it holds) and apart from the images.

At scale, write a mask store instead of PNGs (:mod:`parsing.parser.prediction`)::

    torchrun --nproc_per_node=8 -m parsing.predict --checkpoint runs/parser --images DATA \
        --store DATA/masks.rec

``--images`` may then also be a ``train.rec`` (or its folder). Each process predicts its
shards; the same command resumes a killed run without redoing finished shards.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from parsing.core.cli import ArgumentParser, cli_main, device, non_negative_int, positive_int
from parsing.core.errors import InputError
from parsing.core.io import list_images, model_files, write_label_map
from parsing.core.paths import check_unique_keys, output_dir, output_file
from parsing.core.pixels import denormalise
from parsing.core.progress import progress_bar
from parsing.core.samples import BadSample
from parsing.core.viz import contact_sheet, overlay
from parsing.parser.inference import ImageFiles, Parser, default_device
from parsing.parser.prediction import predict_store


def build_arg_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m parsing.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a parsing.train run folder or its model.pt")
    p.add_argument("--images", required=True, help="image directory or list file (with "
                   "--store also a train.rec or its folder)")
    p.add_argument("--out", type=Path, help="output directory for label PNGs")
    p.add_argument("--store", type=Path, metavar="REC",
                   help="write a mask store (masks.rec/.idx) instead; torchrun shards it")
    p.add_argument("--shard-size", type=positive_int, default=10_000,
                   help="--store: images per shard (the unit of resuming)")
    p.add_argument("--overlay", nargs="?", const=True, default=None, metavar="DIR",
                   help="also write colour overlays (default folder: OUT_overlays)")
    p.add_argument("--sheet", type=Path, default=None, metavar="PNG",
                   help="also write a contact sheet of the first 16 faces beside their masks")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=2)
    p.add_argument("--device", type=device, default=default_device())
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images, report them")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out (and over an existing --sheet or --store)")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    if (args.out is None) == (args.store is None):
        raise InputError("give one of --out (label PNGs) and --store (a mask store)")
    if args.store is not None:
        if args.overlay is not None or args.sheet is not None:
            raise InputError("--overlay and --sheet need --out")
        summary = predict_store(args.checkpoint, args.images, args.store,
                                batch_size=args.batch_size, workers=args.workers,
                                device=args.device, shard_size=args.shard_size,
                                skip_bad=args.skip_bad, overwrite=args.overwrite)
        if summary is not None:
            print(json.dumps(summary))
        return
    paths, rels = list_images(args.images)
    check_unique_keys(paths, [r.with_suffix("").as_posix() for r in rels],
                      f"--images {args.images}")
    inputs = {"--images": [args.images, *sorted({p.parent for p in paths})],
              "--checkpoint": model_files(args.checkpoint)}
    output_dir(args.out, inputs, overwrite=args.overwrite)
    overlay_dir = None
    if args.overlay is not None:
        overlay_dir = (args.out.with_name(args.out.name + "_overlays") if args.overlay is True
                       else Path(args.overlay))
        output_dir(overlay_dir, inputs, overwrite=args.overwrite, flag="--overlay")
    if args.sheet:
        output_file(args.sheet, inputs, overwrite=args.overwrite, flag="--sheet")
    parser = Parser.from_checkpoint(args.checkpoint, args.device, args.batch_size)
    loader = DataLoader(ImageFiles(paths, args.skip_bad), batch_size=args.batch_size,
                        num_workers=args.workers, collate_fn=list)
    written, skipped, sheet = [], [], []
    for batch in progress_bar(loader, desc="predict", unit="batch"):
        skipped += [s.error for s in batch if isinstance(s, BadSample)]
        good = [s for s in batch if not isinstance(s, BadSample)]
        by_size: dict[tuple[int, ...], list] = {}
        for image, i in good:
            by_size.setdefault(tuple(image.shape), []).append((image, i))
        for group in by_size.values():
            label_maps = parser(torch.stack([g[0] for g in group])).cpu()
            for (image, i), label_map in zip(group, label_maps, strict=True):
                mask_path = args.out / rels[i].with_suffix(".png")
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                write_label_map(mask_path, label_map)
                written.append((str(paths[i]), str(mask_path)))
                rgb = denormalise(image)
                if args.sheet and len(sheet) < 16 and (not sheet or sheet[0][0].shape == rgb.shape):
                    sheet.append((rgb, label_map))
                if overlay_dir is not None:
                    out = overlay_dir / rels[i].with_suffix(".jpg")
                    out.parent.mkdir(parents=True, exist_ok=True)
                    blended = overlay(rgb.permute(1, 2, 0).numpy(),
                                      parser.label_set.colorize(label_map))
                    Image.fromarray(blended).save(out, quality=92)
    with open(args.out / "predictions.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "mask"), *written])
    if sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet(torch.stack([s[0] for s in sheet]), torch.stack([s[1] for s in sheet]),
                      parser.label_set, path=args.sheet, nrow=4)
    print(json.dumps({"out": str(args.out), "written": len(written), "skipped": skipped,
                      "overlays": str(overlay_dir) if overlay_dir else None,
                      "sheet": str(args.sheet) if sheet else None}))


if __name__ == "__main__":
    raise SystemExit(main())
