"""Occlusion robustness per face region: ``python -m recognition.eval_occlusion
--checkpoint C --network N --data DIR [--masks MASKS] --out OUT``.

Samples verification pairs (half genuine) from an identity-labelled set of aligned 112x112
faces with FSE-25 parsing masks, then erases one region group at a time (eyes, nose,
mouth, ...) in the probe image of every pair (``fserasing.erase_batch`` with explicit
classes) and measures how verification degrades: 10-fold accuracy (reference §5.5), TAR at FAR
1e-2 / 1e-1 and AUC, beside the unoccluded baseline. A group may join names with ``+``
(``eyes+nose``: erased together); ``--elsewhere`` adds, for each group, the control that
erases the same pixel area per probe in other face regions chosen at random, never in the
regions of ``--protect`` (the identity regions, so that no control erases them). ``DIR`` is a
``parsing.synth`` data set (masks included) or, with ``--masks`` (a mask folder of
``parsing.predict`` or anything ``fserasing.open_mask_source`` reads), an ImageFolder with
one folder per identity.
Writes ``occlusion.json``, ``occlusion.csv`` and the bar chart ``occlusion.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fserasing import list_fill_modes
from parsing.core.cli import ArgumentParser, cli_main, device, positive_int
from parsing.core.errors import InputError
from parsing.core.paths import output_dir
from recognition.evaluation.embedding import add_backbone_arguments, load_backbone
from recognition.evaluation.occlusion import (
    DEFAULT_GROUPS,
    OCCLUSION_FARS,
    group_ids,
    occlusion_table,
    open_faces,
    read_faces,
)
from recognition.evaluation.plots import plot_occlusion
from recognition.evaluation.roc import far_key
from recognition.evaluation.verification import sample_pairs


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m recognition.eval_occlusion",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_arguments(p)
    p.add_argument("--data", required=True,
                   help="parsing.synth folder, or an ImageFolder of aligned faces with --masks")
    p.add_argument("--masks", help="masks for an ImageFolder --data (fserasing mask source)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pairs", type=positive_int, default=1000,
                   help="verification pairs (half genuine)")
    p.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                   help="comma-separated FSE-25 groups or classes, one erased at a time; "
                   "join names with + to erase them together (eyes+nose)")
    p.add_argument("--elsewhere", action="store_true",
                   help="also erase, per group, the same pixel area in other face regions "
                   "(random whole regions, the last cut to size): the matched-area control")
    p.add_argument("--protect", default=None, metavar="REGIONS",
                   help="with --elsewhere: comma-separated groups or classes no control ever "
                   "erases (e.g. the identity regions)")
    p.add_argument("--fill", default="random", choices=list_fill_modes(),
                   help="how erased pixels are filled (fserasing; default random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--device", type=device,
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    for g in groups:
        group_ids(g)  # unknown names raise a LabelError naming them
    protect = [] if args.protect is None else group_ids(args.protect.replace(",", "+"))
    if protect and not args.elsewhere:
        raise InputError("--protect needs --elsewhere (it only restricts the control)")
    if args.pairs < 20:
        raise InputError(f"--pairs must be at least 20 (10 folds), got {args.pairs}")
    dataset, identities = open_faces(args.data, args.masks)
    first, second, issame = sample_pairs(identities, args.pairs, args.seed)
    out = output_dir(args.out, {"--data": args.data, "--masks": args.masks,
                                "--checkpoint": args.checkpoint}, overwrite=args.overwrite,
                     entries=("occlusion.json", "occlusion.csv", "occlusion.png"))
    needed, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    images, masks = read_faces(dataset, needed, args.data)
    gallery, probes = images[inverse[:len(first)]], images[inverse[len(first):]]
    probe_masks = masks[inverse[len(first):]]
    device = torch.device(args.device)
    model = load_backbone(args.checkpoint, args.network, args.network_kwargs, device,
                          args.imports or ())
    table = occlusion_table(model, gallery, probes, probe_masks, issame, groups, args.fill,
                            args.batch_size, not args.no_flip, args.seed, device,
                            args.elsewhere, protect)
    summary = {"checkpoint": args.checkpoint, "network": args.network, "data": args.data,
               "pairs": args.pairs, "fill": args.fill, "seed": args.seed,
               "elsewhere": args.elsewhere, "protect": protect, "table": table}
    (out / "occlusion.json").write_text(json.dumps(summary, indent=2))
    keys = [far_key(f) for f in OCCLUSION_FARS]
    with open(out / "occlusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["erased", "erased_area", "accuracy", "std", *[f"tar@{k}" for k in keys],
                         "auc"])
        for group, e in table.items():
            writer.writerow([group, e["erased_area"], e["accuracy"], e["std"],
                             *[e["tar_at_far"][k] for k in keys], e["auc"]])
    plot_occlusion(table, out / "occlusion.png", f"{args.network or Path(args.checkpoint).name}"
                   f": one region group erased in the probe ({args.pairs} pairs)")
    width = max(12, *(len(g) + 2 for g in table))
    print(f"{'erased':{width}s}{'area %':>8s}{'accuracy %':>16s}"
          + "".join(f"{'TAR@' + k:>12s}" for k in keys) + f"{'AUC %':>8s}")
    for group, e in table.items():
        accuracy = f"{100 * e['accuracy']:.2f} ± {100 * e['std']:.2f}"
        print(f"{group:{width}s}{100 * e['erased_area']:8.1f}{accuracy:>16s}"
              + "".join(f"{100 * e['tar_at_far'][k]:12.2f}" for k in keys)
              + f"{100 * e['auc']:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
