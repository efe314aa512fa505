"""What the two studies share: cached synthetic sets and training runs, the command-line
options for size, data and device, and their Markdown output.

Training runs go through the library (``recognition.training.Trainer``, or ``torchrun -m
recognition.train`` with ``--torchrun N``) into ``RUNS/models/<hash>/``, the hash taken over
the training config and the data; a folder with ``study.json`` is reused, an interrupted one
resumed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

import parsing.synth
from parsing.core.errors import InputError
from parsing.synth import write_dataset
from recognition.training.config import TrainConfig, load_config
from recognition.training.trainer import Trainer

__all__ = ["add_common_arguments", "config_hash", "environment", "fmt", "markdown_table",
           "network_kwargs", "shuffled_identities", "synth_set", "train_fields", "train_recognizer",
           "train_recognizers"]

# the recognizer of `make demo`: small MobileFaceNet, ~1 min per 400 faces x 8 epochs (2 cores)
NETWORK = "mbf"
NETWORK_KWARGS = {"blocks": [1, 2, 3, 1], "scale": 1}


def config_hash(value: Any) -> str:
    """12 hex digits of SHA-1 over ``value`` as sorted JSON."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:12]


def generator_version() -> str:
    """A hash of the generator's source (``parsing/synth/*.py``): a cached set made by other
    generator code is not reused."""
    sources = sorted(Path(parsing.synth.__file__).parent.glob("*.py"))
    return hashlib.sha1(b"".join(f.read_bytes() for f in sources)).hexdigest()[:12]


def synth_set(root: Path, identities: int, per_identity: int, seed: int, **options: Any) -> Path:
    """A ``parsing.synth`` set under ``root/synth/<hash>`` (written once, then reused while the
    generator's code is the same); ``options`` go to :func:`parsing.synth.write_dataset`
    (``identity_regions``, ...)."""
    spec = {"identities": identities, "per_identity": per_identity, "seed": seed, **options,
            "generator": generator_version()}
    out = root / "synth" / config_hash(spec)
    if not (out / "identities.csv").is_file():
        tmp = out.with_name(out.name + ".tmp")
        write_dataset(tmp, identities, per_identity, seed, progress=False, workers=1,
                      **{k: v for k, v in options.items() if v is not None})
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1))
        tmp.rename(out)
    return out


def shuffled_identities(data: Path, root: Path, seed: int = 0) -> Path:
    """The images of ``data`` with identity labels permuted over images (class sizes kept):
    the "model trained on random labels" of Adebayo et al. (2018). Symbolic links under
    ``root/shuffled/<hash>``: a ``parsing.synth`` set gets a permuted ``identities.csv``; an
    ImageFolder becomes ``<class>/<n>_<name>`` links."""
    out = root / "shuffled" / config_hash({"data": str(data.resolve()), "seed": seed})
    if out.is_dir():
        return out
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if (data / "identities.csv").is_file():
        for name in os.listdir(data):
            if name != "identities.csv":
                (tmp / name).symlink_to((data / name).resolve())
        with open(data / "identities.csv") as f:
            rows = list(csv.reader(f))
        labels = rng.permutation([r[1] for r in rows[1:]])
        with open(tmp / "identities.csv", "w", newline="") as f:
            csv.writer(f).writerows([rows[0], *([r[0], lab] for r, lab in
                                                zip(rows[1:], labels, strict=True))])
    elif data.is_dir() and not (data / "train.rec").is_file():
        from torchvision.datasets import ImageFolder
        samples = ImageFolder(str(data)).samples
        labels = rng.permutation([t for _, t in samples])
        for n, ((path, _), label) in enumerate(zip(samples, labels, strict=True)):
            (tmp / f"{label:06d}").mkdir(exist_ok=True)
            (tmp / f"{label:06d}" / f"{n}_{Path(path).name}").symlink_to(Path(path).resolve())
    else:
        raise InputError(f"{data}: the shuffled-identity check needs a parsing.synth set or an "
                         "ImageFolder (a RecordIO set cannot be relabelled by links)")
    tmp.rename(out)
    return out


def train_recognizer(root: Path, torchrun: int = 0, config_class: type = TrainConfig,
                     trainer_class: type = Trainer, command: str = "recognition.train",
                     **fields: Any) -> tuple[Path, dict]:
    """Train (or reuse) a recognizer with the library's trainer: ``fields`` are
    ``TrainConfig`` fields (``rec``, ``network``, ``aug``, ``seed``, ...). Returns the run
    folder and its ``study.json`` (seconds, seconds per epoch, final loss). Another model
    trained the same way: ``config_class``, ``trainer_class`` and the ``command`` torchrun
    runs (e.g. ``AttributeConfig``, ``AttributeTrainer``, ``recognition.attributes.train``)."""
    probe = load_config(None, config_class, **fields)
    spec = {k: v for k, v in probe.to_dict().items() if k not in ("output", "num_workers",
                                                                  "frequent", "verbose")}
    out = root / "models" / config_hash(spec)
    record = out / "study.json"
    if record.is_file():
        return out, json.loads(record.read_text())
    cfg = load_config(None, config_class, **{**fields, "output": str(out)})
    resume = out if (out / "checkpoint.pt").is_file() else None
    wall, cpu = time.perf_counter(), time.process_time()
    if torchrun > 1:
        out.mkdir(parents=True, exist_ok=True)
        config = out.with_suffix(".yaml")
        config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={torchrun}", "-m", command]
        command += ["--resume", str(out)] if resume else ["--config", str(config)]
        subprocess.run(command, check=True)
        summary = json.loads((out / "summary.json").read_text())
    else:
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        summary = trainer_class(cfg, resume_from=resume).train()
    seconds = time.perf_counter() - wall
    info = {"seconds": seconds, "cpu_seconds": time.process_time() - cpu,
            "seconds_per_epoch": seconds / cfg.num_epoch, "epochs": cfg.num_epoch,
            "loss": summary.get("loss"), "resumed": resume is not None,
            "processes": max(torchrun, 1), "config": spec}
    record.write_text(json.dumps(info, indent=1))
    return out, info


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_one(job: tuple[Path, dict[str, Any]]) -> tuple[Path, dict]:
    root, kwargs = job
    return train_recognizer(root, **kwargs)


def train_recognizers(root: Path, runs: Sequence[dict[str, Any]], jobs: int = 1
                      ) -> list[tuple[Path, dict]]:
    """:func:`train_recognizer` for each keyword dict of ``runs``, ``jobs`` at a time in
    separate processes (each with an equal share of this process's threads). Small models
    train faster as independent single-threaded processes than as one process on all cores."""
    if jobs < 1:
        raise InputError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(runs) < 2:
        return [train_recognizer(root, **kwargs) for kwargs in runs]
    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=torch.multiprocessing.get_context("spawn"),
                             initializer=_set_threads, initargs=(threads,)) as pool:
        return list(pool.map(_train_one, [(root, kwargs) for kwargs in runs]))


def add_common_arguments(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument("--runs", help="cache of data sets and trained models (default OUT/cache)")
    p.add_argument("--seeds", type=int, default=3, help="training seeds (default 3)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply identities, evaluation pairs and explained faces (default 1)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the study's)")
    p.add_argument("--network", default=NETWORK, help=f"backbone (default {NETWORK})")
    p.add_argument("--network-kwargs", type=json.loads,
                   help=f"JSON backbone options (default for mbf: {json.dumps(NETWORK_KWARGS)})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--loss", default="cosface", choices=("arcface", "cosface"),
                   help="margin loss (default cosface)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--torchrun", type=int, default=0, metavar="N",
                   help="train each model with torchrun on N processes (DDP; gloo on CPU)")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")


def train_fields(args: argparse.Namespace, epochs: int) -> dict[str, Any]:
    """The TrainConfig fields every run of a study shares (all but data, aug and seed)."""
    return {"network": args.network, "network_kwargs": network_kwargs(args),
            "loss": args.loss, "num_epoch": args.epochs or epochs,
            "warmup_epoch": args.warmup_epochs, "batch_size": args.batch_size, "lr": args.lr,
            "channels_last": args.device == "cpu", "device": args.device,
            "num_workers": args.workers, "frequent": 1000, "verbose": 10**9}


def network_kwargs(args: argparse.Namespace) -> dict:
    if args.network_kwargs is not None:
        return args.network_kwargs
    return NETWORK_KWARGS if args.network == NETWORK else {}


def seeds(args: argparse.Namespace) -> list[int]:
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    if args.scale <= 0:
        raise InputError(f"--scale must be positive, got {args.scale}")
    return list(range(args.seeds))


def fmt(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std`` (``—`` for NaN)."""
    if mean != mean:
        return "—"
    return f"{mean:.{digits}f}" + ("" if std != std else f" ± {std:.{digits}f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def environment(module: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """Command, commit, hardware and thread count of a study run."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    args = sys.argv[1:] if argv is None else list(argv)
    return {"command": " ".join(["python", "-m", module, *args]), "commit": commit,
            "cpu": platform.processor() or platform.machine(),
            "cores": len(os.sched_getaffinity(0)), "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__}


def run_study(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace, Any], None],
              argv: Sequence[str] | None) -> None:
    """A study command's body: parse, run (writes ``--out``), print ``--out/study.md``."""
    args = parser.parse_args(argv)
    run(args, argv)
    print((Path(args.out) / "study.md").read_text())
