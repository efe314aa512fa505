"""``python -m parsing.train``: train a face parser (:mod:`parsing.parser.training`).

    python -m parsing.train --data synth:data/synth --model unet_r18 --labels fse25 \\
        --epochs 30 --batch-size 32 --out runs/parser

The run folder gets ``config.yaml``, ``checkpoint.pt`` (resumable), ``model.pt`` (the best
validated weights; ``model.json`` says how to rebuild them, which epoch and its score),
``metrics.jsonl`` and ``tb/``. ``--resume RUN_DIR`` (or ``--out RUN_DIR --resume``)
continues a killed run exactly, with the run's own settings. ``--config FILE.yaml`` takes
the fields of :class:`parsing.parser.training.ParserTrainConfig`; flags override it.
``torchrun --nproc_per_node=N -m parsing.train ...`` trains with DDP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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
from parsing.core.config import load_config
from parsing.core.errors import InputError
from parsing.core.paths import data_path, output_dir
from parsing.core.training import CHECKPOINT, CONFIG
from parsing.parser.data import AUGMENTATIONS
from parsing.parser.losses import CLASS_WEIGHT_METHODS
from parsing.parser.training import RUN_SETTINGS, ParserTrainConfig, train

log = logging.getLogger("parsing.train")
DEFAULTS = ParserTrainConfig()
# flags that are not config fields
_NOT_FIELDS = ("config", "resume", "overwrite", "allow_data_change")


def build_arg_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m parsing.train", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--config", help="YAML file of ParserTrainConfig fields (flags override it)")
    a("--data", help="KIND:PATH with KIND synth, facesynthetics, celebamask, folder")
    a("--out", dest="output", help="run folder")
    a("--model", help=f"unet_r18, scanet or unet_timm:<timm name> (default {DEFAULTS.model})")
    a("--width", type=positive_int, help="unet_r18/scanet base width (default 64 = ResNet-18)")
    a("--decoder-channels", metavar="C1,C2,...",
      help="U-Net decoder widths, deepest first (default: 2w, w, w/2, w/2, at least 32)")
    a("--labels", help=f"label set to train (default {DEFAULTS.labels})")
    a("--epochs", dest="num_epoch", type=positive_int,
      help=f"default {DEFAULTS.num_epoch}")
    a("--batch-size", type=positive_int, help=f"per process (default {DEFAULTS.batch_size})")
    a("--lr", type=positive_float, help=f"peak learning rate (one-cycle; default {DEFAULTS.lr})")
    a("--weight-decay", type=non_negative_float, help=f"default {DEFAULTS.weight_decay}")
    a("--val-split", type=probability,
      help="held-out fraction where the data has no official split (default "
           f"{DEFAULTS.val_split})")
    a("--seed", type=int, help=f"default {DEFAULTS.seed}")
    a("--size", type=positive_int,
      help="train at SIZE x SIZE, at least 16 (resize; with --align: the aligned size, 112)")
    a("--augment", choices=AUGMENTATIONS,
      help="full: flip (left/right labels swapped) + affine + colour jitter; flip: the flip "
           "only; none (default full)")
    a("--align", action="store_true", default=None,
      help="facesynthetics: 5-point ArcFace alignment to --size (default 112)")
    a("--class-weights", nargs="?", const="inverse_sqrt", choices=CLASS_WEIGHT_METHODS,
      help="class-weighted CE from training-set frequencies (default inverse_sqrt)")
    a("--edge-loss", type=non_negative_float, metavar="W",
      help="weight of the edge loss (edge branch BCE for scanet, edge-pixel CE otherwise); "
           "0 = off")
    a("--distill-from", metavar="MODEL",
      help="self-distillation fine-tuning from this trained parser (run folder or model.pt)")
    a("--distill-alpha", type=probability,
      help=f"weight of the KL term against the hard-label loss (default {DEFAULTS.distill_alpha})")
    a("--distill-temperature", type=positive_float)
    a("--resume", nargs="?", const="", metavar="RUN_DIR",
      help="continue the run in RUN_DIR (default: --out) from its checkpoint")
    a("--skip-bad", action="store_true", default=None, help="skip unreadable files, report them")
    a("--overwrite", action="store_true",
      help="start a new run in an --out that already holds files (replaces them)")
    a("--allow-data-change", action="store_true",
      help="--resume although the training samples differ from the run's")
    a("--workers", dest="num_workers", type=non_negative_int,
      help=f"data-loading processes (default {DEFAULTS.num_workers})")
    a("--device", type=device, help="default: cuda if available, else cpu")
    a("--deterministic", action="store_true", default=None,
      help="torch.use_deterministic_algorithms")
    a("--log-every", type=positive_int, help=f"steps per loss row (default {DEFAULTS.log_every})")
    a("--save-every-steps", type=non_negative_int,
      help="also checkpoint every this many steps (default: at the end of each epoch)")
    return p


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} {text!r}: expected comma-separated integers") from None


def config_from_args(args: argparse.Namespace) -> tuple[ParserTrainConfig, Path | None]:
    """The run's config and the run folder to resume (None for a new run).

    A new run: ``--config`` with the flags on top. A resume: the run's ``config.yaml``; flags
    for :data:`RUN_SETTINGS` that differ from it are ignored with a warning, the others
    (workers, device, ...) apply.
    """
    overrides = {k: v for k, v in vars(args).items() if k not in _NOT_FIELDS}
    overrides["decoder_channels"] = _int_list(args.decoder_channels, "--decoder-channels")
    if args.size is not None and args.size < 16:
        raise InputError(f"--size {args.size}: the parser needs at least 16 x 16 inputs")
    if args.resume is None:
        return load_config(ParserTrainConfig, args.config, **overrides), None
    run = Path(args.resume or args.output or "")
    if not str(run) or str(run) == ".":
        raise InputError("--resume: give the run folder (--resume RUN_DIR or --out RUN_DIR)")
    if not (run / CONFIG).is_file() or not (run / CHECKPOINT).is_file():
        raise InputError(f"--resume {run}: no checkpoint ({CONFIG} and {CHECKPOINT}) there")
    saved = load_config(ParserTrainConfig, run / CONFIG)
    changes = {}
    for key, value in overrides.items():
        if value is None or key == "output":
            continue
        if key in RUN_SETTINGS:
            if value != getattr(saved, key):
                log.warning("--resume: ignoring %s %s (the run uses %s)", key, value,
                            getattr(saved, key))
            continue
        changes[key] = value
    return dataclasses.replace(saved, output=str(run), **changes), run


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    cfg, resume = config_from_args(args)
    if resume is None:
        if not cfg.data:
            raise InputError("--data is required (KIND:PATH)")
        if (Path(cfg.output) / CHECKPOINT).is_file() and not args.overwrite:
            raise InputError(f"{cfg.output} already holds a run: continue it with --resume "
                             f"{cfg.output}, start over with --overwrite, or give another --out")
        output_dir(cfg.output, {"--data": data_path(cfg.data), "--distill-from": cfg.distill_from,
                                "--config": args.config},
                   overwrite=args.overwrite)
    summary = train(cfg, resume_from=resume, overwrite=args.overwrite,
                    allow_data_change=args.allow_data_change)
    if summary is not None:
        print(json.dumps(summary))


if __name__ == "__main__":
    raise SystemExit(main())
