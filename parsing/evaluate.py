"""Evaluate a trained parser on a data set: confusion matrix, per-class F1, mean F1, mIoU.

``python -m parsing.evaluate --checkpoint runs/parser --data synth:data/synth_test``
prints a table and writes the scores (and the confusion matrix) as JSON (reference §2.5; the
conventions are those of :mod:`parsing.parser.metrics`), with the boundary F1 within 1 and 2
pixels (``"boundary"``).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from parsing.core.cli import (
    ArgumentParser,
    cli_main,
    device,
    non_negative_int,
    positive_int,
    probability,
)
from parsing.core.io import model_files
from parsing.core.paths import data_path, output_file
from parsing.parser.data import (
    build_dataset,
    collate,
    eval_transform,
    has_official_split,
    parse_data_spec,
)
from parsing.parser.inference import Parser, default_device, model_from_checkpoint
from parsing.parser.metrics import confusion_over, format_scores

log = logging.getLogger("parsing.evaluate")

BOUNDARY_TOLERANCES = (1, 2)  # pixels, for the boundary F1


def build_arg_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m parsing.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="a parsing.train run folder or its model.pt")
    p.add_argument("--data", required=True, help="KIND:PATH (synth, facesynthetics, celebamask, "
                   "folder)")
    p.add_argument("--split", choices=("train", "val", "test", "all"), default=None,
                   help="default: test where the data has an official split, else all")
    p.add_argument("--val-split", type=probability, default=None,
                   help="held-out fraction for --split val/train (default: the run's)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: the run's)")
    p.add_argument("--align", action="store_true", default=None,
                   help="facesynthetics: 5-point alignment (default: as in training)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--workers", type=non_negative_int, default=2)
    p.add_argument("--device", type=device, default=default_device())
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, report them")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON file (default: evaluation_<kind>_<split>.json in the run folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    spec = parse_data_spec(args.data)
    split = args.split or ("test" if has_official_split(spec) else "all")
    checkpoint = model_files(args.checkpoint)
    out = args.out or checkpoint[0].parent / f"evaluation_{spec.kind}_{split}.json"
    model, info = model_from_checkpoint(args.checkpoint, args.device)
    output_file(out, {"--checkpoint": checkpoint, "--data": data_path(args.data)},
                overwrite=args.overwrite)
    align = args.align if args.align is not None else bool(info.get("align", False))
    dataset = build_dataset(
        spec, split, info["label_set"], eval_transform(), align=align,
        size=info.get("image_size") or 112,
        val_fraction=args.val_split if args.val_split is not None
        else info.get("val_split", 0.1),
        seed=args.seed if args.seed is not None else info.get("seed", 0),
        skip_bad=args.skip_bad)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size,
                                         num_workers=args.workers, collate_fn=collate)
    parser = Parser(model, info["label_set"], info.get("image_size"), args.batch_size)
    cm, skipped = confusion_over(parser, loader, boundary_tolerances=BOUNDARY_TOLERANCES)
    scores = cm.scores()
    scores.update(checkpoint=str(args.checkpoint), data=str(spec), split=split,
                  num_images=len(dataset) - len(skipped), skipped=skipped)
    print(format_scores(scores))
    if skipped:
        print(f"skipped {len(skipped)} bad file(s):\n  " + "\n  ".join(skipped))
    out.write_text(json.dumps(scores, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
