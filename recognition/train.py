"""``python -m recognition.train``: train a face recognizer (:mod:`recognition.training`).

``python -m recognition.train --data DIR --network iresnet34 --loss arcface --aug fserasing
--out RUN_DIR`` (``--help`` lists everything; ``--config FILE.yaml`` takes insightface's field
names, flags override it). ``torchrun --nproc_per_node=N -m recognition.train ...`` trains
with DDP; ``--resume RUN_DIR`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from fserasing.augment import list_augmentations
from parsing.core.cli import (
    ArgumentParser,
    add_import_argument,
    cli_main,
    device,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from parsing.core.errors import InputError
from parsing.core.paths import data_path, output_dir
from parsing.core.training import teardown_distributed
from recognition.training.config import ImageTrainConfig, TrainConfig, load_config
from recognition.training.trainer import Trainer


def _parse_list(text: str | None, cast: type = float) -> list | None:
    if text is None:
        return None
    try:
        return [cast(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"cannot read {text!r} as a comma-separated list") from None


def _parse_json(text: str | None, flag: str) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{flag}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{flag}: expected a JSON object")
    return value


def build_arg_parser() -> ArgumentParser:
    ap = ArgumentParser(
        prog="python -m recognition.train",
        description="Train a face recognizer (ArcFace/CosFace/combined margins, PartialFC) "
                    "with optional FSErasing. Flags override --config (insightface names).",
        epilog="CPU: export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 "
               "MALLOC_TOP_PAD_=1073741824 (1.2-1.8x faster, reference §8). Multi-GPU: torchrun "
               "--nproc_per_node=N -m recognition.train ...")
    add_training_arguments(ap, "ImageFolder of aligned faces, folder with train.rec/.idx, or a "
                               "parsing.synth folder")
    a = ap.add_argument
    a("--loss", choices=["arcface", "cosface", "combined"])
    a("--margins", help="m1,m2,m3 of cos(m1*theta + m2) - m3 (scale 64)")
    a("--num-classes", type=positive_int, help="default: the number of identities in the data")
    a("--partial-fc", dest="sample_rate", type=probability,
      help="PartialFC sample rate (1.0 = full softmax)")
    a("--interclass-filtering-threshold", type=probability)
    a("--val", dest="val_targets", action="append",
      help="verification set: a .bin file (lfw.bin, ...) or synth:DIR (repeatable)")
    return ap


def add_training_arguments(ap: ArgumentParser, data_help: str) -> None:
    """The flags of every image trainer built on :class:`recognition.training.trainer.Trainer`:
    config, data, backbone, augmentation, optimisation, devices and the run folder."""
    a = ap.add_argument
    a("--config", help="YAML file with insightface arcface_torch field names")
    a("--data", dest="rec", help=data_help)
    a("--network", help="backbone name (iresnet18..200, mbf, timm:<name>, r50, ...)")
    a("--network-kwargs", help="JSON keyword arguments for the backbone")
    add_import_argument(ap)
    a("--embedding-size", type=positive_int)
    a("--aug", choices=list_augmentations())
    a("--masks", help="FSErasing masks: a mask store (masks.rec from parsing.predict --store), "
      "folder of label PNGs, (N,H,W) tensor file, parser:CKPT (parse each batch on the "
      "device), or 'labels' (a synthetic set's own)")
    a("--aug-p", type=probability, help="probability that an image is erased")
    a("--n-erase", help="FSErasing: classes per image, N or LO,HI")
    a("--aug-options", help="JSON options of the chosen augmentation (fserasing: fill, "
      "classes, ...; random-erasing: scale, ratio, value; cutout: size, value)")
    a("--no-flip", dest="flip", action="store_false", default=None)
    a("--batch-size", type=positive_int, help="per process")
    a("--lr", type=positive_float)
    a("--epochs", dest="num_epoch", type=positive_int)
    a("--warmup-epochs", dest="warmup_epoch", type=non_negative_int)
    a("--optimizer", choices=["sgd", "adamw"])
    a("--momentum", type=non_negative_float)
    a("--weight-decay", type=non_negative_float)
    a("--clip-grad-norm", type=non_negative_float, help="0 disables (default 5, as insightface)")
    a("--fp16", action="store_true", default=None, help="mixed precision on CUDA")
    a("--bf16", action="store_true", help="bfloat16 autocast instead of float16")
    a("--channels-last", action="store_true", default=None)
    a("--seed", type=int)
    a("--workers", dest="num_workers", type=non_negative_int)
    a("--device", type=device)
    a("--out", dest="output", help="run folder")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    a("--save-every-steps", type=non_negative_int)
    a("--log-every", dest="frequent", type=positive_int)
    a("--val-every", dest="verbose", type=positive_int)
    a("--deterministic", action="store_true", default=None)
    a("--skip-bad", action="store_true", default=None, help="skip unreadable samples")
    a("--overwrite", action="store_true", default=None,
      help="start a new run in an --out that already holds files (replaces them)")
    a("--allow-data-change", action="store_true",
      help="--resume although the images differ from the run's (same identity count)")


def config_from_args(args: argparse.Namespace, config_class: type[ImageTrainConfig] = TrainConfig
                     ) -> tuple[ImageTrainConfig, Path | None]:
    """Merge config file, checkpoint config (``--resume``) and flags; flags win."""
    overrides = {k: v for k, v in vars(args).items()
                 if k not in ("config", "resume", "margins", "aug_p", "n_erase", "aug_options",
                              "bf16", "overwrite", "allow_data_change")}
    if hasattr(args, "margins"):  # recognizers only
        overrides["margin_list"] = _parse_list(args.margins)
    for key in [k for k in overrides if k.endswith("_kwargs")]:  # --network-kwargs JSON, ...
        overrides[key] = _parse_json(overrides[key], "--" + key.replace("_", "-"))
    if args.bf16:
        overrides["amp_dtype"] = "bfloat16"
        overrides["fp16"] = True
    aug_options = _parse_json(args.aug_options, "--aug-options") or {}
    if args.aug_p is not None:
        aug_options["p"] = args.aug_p
    if args.n_erase is not None:
        n = _parse_list(args.n_erase, int)
        aug_options["n_erase"] = n[0] if len(n) == 1 else tuple(n)
    resume = None
    base_path = args.config
    if args.resume is not None:
        resume = Path(args.resume)
        saved = resume / "config.yaml"
        if not saved.is_file():
            raise InputError(f"--resume {resume}: no config.yaml (not a run folder)")
        base_path = saved
        overrides["output"] = str(resume)
        # a run folder may come from someone else: import only what this command line names
        unconfirmed = [m for m in load_config(saved, config_class).imports
                       if m not in (args.imports or [])]
        if unconfirmed:
            raise InputError(f"--resume {resume}: the run imports {', '.join(unconfirmed)}; "
                             "importing runs its code, so repeat --import "
                             f"{' --import '.join(unconfirmed)} to allow it")
    cfg = load_config(base_path, config_class, **overrides)
    if aug_options:
        field = cfg.aug.replace("-", "_")
        if cfg.aug == "none":
            raise InputError("--aug-p / --n-erase / --aug-options need --aug")
        setattr(cfg, field, {**getattr(cfg, field), **aug_options})
    # insightface's "resume: true" = continue in the output folder
    if resume is None and cfg.resume and (Path(cfg.output) / "checkpoint.pt").is_file():
        resume = Path(cfg.output)
    return cfg, resume


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run(build_arg_parser().parse_args(argv))


def run(args: argparse.Namespace, config_class: type[ImageTrainConfig] = TrainConfig,
        trainer_class: type[Trainer] = Trainer) -> None:
    """A training command's body: config from the flags, run folder checks, train, summary."""
    cfg, resume = config_from_args(args, config_class)
    if resume is None:
        inputs = {"--data": data_path(cfg.rec), "--masks": data_path(cfg.masks),
                  "--val": [data_path(v) for v in getattr(cfg, "val_targets", [])],
                  "--config": args.config}
        if (Path(cfg.output) / "checkpoint.pt").is_file() and not args.overwrite:
            raise InputError(f"{cfg.output} already holds a run: continue it with --resume "
                             f"{cfg.output}, start over with --overwrite, or give another --out")
        output_dir(cfg.output, inputs, overwrite=bool(args.overwrite), flag="--out")
    trainer = trainer_class(cfg, resume_from=resume, overwrite=bool(args.overwrite),
                            allow_data_change=args.allow_data_change)
    try:
        result = trainer.train()
    finally:
        teardown_distributed()
    if trainer.is_main:
        summary = {"output": str(trainer.out), "global_step": trainer.global_step, **result}
        (trainer.out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary))


if __name__ == "__main__":
    raise SystemExit(main())
