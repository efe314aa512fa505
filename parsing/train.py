"""``python -m parsing.train``: train a face parser (:mod:`parsing.parser.training`).

    python -m parsing.train --data synth:data/synth --model unet_r18 --labels fse25 \\
        --epochs 30 --batch-size 32 --out runs/parser
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from parsing.core.cli import (
    ArgumentParser,
    cli_main,
    device,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from parsing.core.errors import InputError
from parsing.core.io import load_checkpoint
from parsing.core.paths import data_path, output_dir
from parsing.parser.data import (
    AUGMENTATIONS,
)
from parsing.parser.inference import default_device
from parsing.parser.losses import (
    CLASS_WEIGHT_METHODS,
)
from parsing.parser.training import RUN_SETTINGS, log, train


def build_arg_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m parsing.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="KIND:PATH with KIND synth, facesynthetics, celebamask, folder")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    p.add_argument("--model", default="unet_r18",
                   help="unet_r18, scanet or unet_timm:<timm name> (default unet_r18)")
    p.add_argument("--width", type=positive_int, default=None,
                   help="unet_r18/scanet base width (default 64 = ResNet-18)")
    p.add_argument("--decoder-channels", default=None, metavar="C1,C2,...",
                   help="U-Net decoder widths, deepest first (default: 2w, w, w/2, w/2, "
                        "at least 32)")
    p.add_argument("--labels", default="fse25", help="label set to train (default fse25)")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=2e-3, help="peak learning rate (one-cycle)")
    p.add_argument("--weight-decay", type=non_negative_float, default=1e-4)
    p.add_argument("--val-split", type=probability, default=0.1,
                   help="held-out fraction where the data has no official split (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=positive_int, default=None,
                   help="train at SIZE x SIZE, at least 16 (resize; with --align: the aligned "
                        "size, 112)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default="full",
                   help="full: flip (left/right labels swapped) + affine + colour jitter; "
                        "flip: the flip only; none (default full)")
    p.add_argument("--align", action="store_true",
                   help="facesynthetics: 5-point ArcFace alignment to --size (default 112)")
    p.add_argument("--class-weights", nargs="?", const="inverse_sqrt", default=None,
                   choices=CLASS_WEIGHT_METHODS,
                   help="class-weighted CE from training-set frequencies (default inverse_sqrt)")
    p.add_argument("--edge-loss", type=non_negative_float, default=0.0, metavar="W",
                   help="weight of the edge loss (edge branch BCE for scanet, edge-pixel CE "
                        "otherwise); 0 = off")
    p.add_argument("--distill-from", default=None, metavar="CKPT",
                   help="self-distillation fine-tuning from this trained checkpoint")
    p.add_argument("--distill-alpha", type=probability, default=0.5,
                   help="weight of the KL term against the hard-label loss (default 0.5)")
    p.add_argument("--distill-temperature", type=positive_float, default=1.0)
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/last.pt")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable files, report them")
    p.add_argument("--overwrite", action="store_true",
                   help="start a new run in an --out that already holds files (replaces them)")
    p.add_argument("--workers", type=non_negative_int, default=2, help="data-loading processes")
    p.add_argument("--device", type=device, default=default_device())
    return p


def _resolve_resume(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict | None:
    last = args.out / "last.pt"
    if not args.resume:
        if last.exists() and not args.overwrite:
            raise InputError(f"{last} exists: pass --resume to continue it or choose a new --out")
        if not args.data:
            raise InputError("--data is required (KIND:PATH)")
        if args.size is not None and args.size < 16:
            raise InputError(f"--size {args.size}: the parser needs at least 16 x 16 inputs")
        output_dir(args.out, {"--data": data_path(args.data), "--distill-from": args.distill_from},
                   overwrite=args.overwrite)
        return None
    if not last.is_file():
        raise InputError(f"--resume: no checkpoint {last}")
    ckpt = load_checkpoint(last)
    saved = ckpt.get("args", {})
    for key in RUN_SETTINGS:
        given = getattr(args, key)
        if given != parser.get_default(key) and given != saved.get(key):
            log.warning("--resume: ignoring --%s %s (the run uses %s)", key.replace("_", "-"),
                        given, saved.get(key))
        setattr(args, key, saved.get(key))
    return ckpt


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    resume_ckpt = _resolve_resume(args, parser)
    summary = train(args, resume_ckpt)
    print(json.dumps(summary))


if __name__ == "__main__":
    raise SystemExit(main())
