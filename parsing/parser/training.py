"""Train a face parser (reference §6).

    python -m parsing.train --data synth:data/synth --model unet_r18 --labels fse25 \\
        --epochs 30 --batch-size 32 --out runs/parser

Writes ``RUN_DIR/last.pt`` every epoch and ``RUN_DIR/best.pt`` whenever the validation mean F1
improves (the last epoch when there is no validation set), both atomically and loadable with
``torch.load(..., weights_only=True)``; ``RUN_DIR/history.json`` (one row per epoch) and
TensorBoard scalars in ``RUN_DIR/tb``. ``--resume`` continues ``RUN_DIR/last.pt`` with the
run's saved settings; every epoch's shuffle is seeded from (seed, epoch) and every sample's
augmentation from (seed, epoch, index), so an interrupted run resumed from its last checkpoint
gives the same weights as an uninterrupted one, with any ``--workers``. AdamW with a one-cycle
schedule stepped per batch; mixed precision on CUDA.

CPU note: glibc's allocator is slow with large tensors; export ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824`` (reference §8).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter

from parsing.core.errors import DataError, InputError
from parsing.core.io import atomic_save, remove_stale_temporaries
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.progress import progress_bar
from parsing.evaluate import confusion_over
from parsing.parser.data import (
    DataSpec,
    SeededSamples,
    build_dataset,
    collate,
    count_labels,
    eval_transform,
    has_official_split,
    parse_data_spec,
    train_transform,
)
from parsing.parser.inference import Parser, model_from_checkpoint
from parsing.parser.losses import (
    ParsingLoss,
    class_weights,
    distillation_loss,
)
from parsing.parser.models import ParserOutput, create_model

log = logging.getLogger("parsing.parser.training")

# Settings that define a run; --resume takes them from the checkpoint.
RUN_SETTINGS = ("data", "model", "width", "decoder_channels", "labels", "epochs", "batch_size",
                "lr", "weight_decay", "val_split", "seed", "size", "augment", "align",
                "class_weights", "edge_loss", "distill_from", "distill_alpha",
                "distill_temperature", "skip_bad")


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def _unwrap(ds: Any) -> tuple[Any, list[int] | None]:
    return (ds.dataset, list(ds.indices)) if isinstance(ds, Subset) else (ds, None)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected comma-separated integers") from None
    if any(v < 1 for v in values):
        raise InputError(f"{what} {text!r}: widths must be positive")
    return values


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


LOG_EVERY = 20  # steps between progress/TensorBoard updates (each one waits for the device)


def _datasets(args: argparse.Namespace, spec: DataSpec, label_set: LabelSet) -> tuple:
    """(train set, validation set or None, training image size or None)."""
    resize = None if args.align else args.size
    common = {"align": args.align, "size": args.size or 112, "val_fraction": args.val_split,
              "seed": args.seed, "skip_bad": args.skip_bad}
    train_ds = build_dataset(spec, "train", label_set,
                             train_transform(label_set, resize, args.augment), **common)
    if len(train_ds) == 0:
        raise InputError(f"--data {spec}: the training split is empty")
    val_ds = None
    if has_official_split(spec) or args.val_split > 0:
        val_ds = build_dataset(spec, "val", label_set, eval_transform(resize), **common)
        if len(val_ds) == 0:
            log.warning("the validation split of %s is empty: best.pt will be the last epoch",
                        spec)
            val_ds = None
    image_size = args.size or (112 if args.align else None)
    if image_size is None:  # the data's own size, if square (read without augmentation)
        base, idx = _unwrap(train_ds)
        try:
            h, w = base.read_labels(idx[0] if idx else 0).shape
            image_size = h if h == w else None
        except DataError:
            if not args.skip_bad:
                raise
    return train_ds, val_ds, image_size


def _models(args: argparse.Namespace, label_set: LabelSet, device: torch.device) -> tuple:
    """(model, its registry name, its kwargs, frozen teacher or None)."""
    if not args.distill_from:
        kwargs: dict[str, Any] = {} if args.width is None else {"width": args.width}
        if args.decoder_channels:
            kwargs["decoder_channels"] = _int_list(args.decoder_channels, "--decoder-channels")
        model = create_model(args.model, num_classes=label_set.num_classes, **kwargs)
        return model.to(device), args.model, kwargs, None
    teacher, ckpt = model_from_checkpoint(args.distill_from, device)
    teacher.requires_grad_(False)
    if ckpt["label_set"] != label_set.key:
        raise InputError(f"--distill-from {args.distill_from}: trained on {ckpt['label_set']}, "
                         f"not {label_set.key}")
    if args.model not in (ckpt["model_name"], "unet_r18"):
        log.warning("--distill-from: fine-tuning the teacher's %s, not --model %s",
                    ckpt["model_name"], args.model)
    model = create_model(ckpt["model_name"], num_classes=label_set.num_classes,
                         **ckpt["model_kwargs"])
    model.load_state_dict(teacher.state_dict())  # self-distillation fine-tunes the model itself
    return model.to(device), ckpt["model_name"], ckpt["model_kwargs"], teacher


def _class_weights(args: argparse.Namespace, train_ds: Any,
                   label_set: LabelSet) -> torch.Tensor | None:
    if not args.class_weights:
        return None
    base, idx = _unwrap(train_ds)
    weights = class_weights(count_labels(base, label_set.num_classes, indices=idx),
                            args.class_weights)
    log.info("class weights (%s): %s", args.class_weights,
             ", ".join(f"{n}={w:.2f}" for n, w in zip(label_set.names, weights.tolist(),
                                                     strict=True)))
    return weights


def train(args: argparse.Namespace, resume_ckpt: dict | None = None) -> dict[str, Any]:
    """Run (or continue) training as configured by the CLI arguments; returns a summary."""
    device = torch.device(args.device)
    amp = device.type == "cuda"
    spec = parse_data_spec(args.data)
    label_set = get_label_set(args.labels)
    args.out.mkdir(parents=True, exist_ok=True)
    for tmp in remove_stale_temporaries(args.out, ("last.pt", "best.pt")):
        log.info("removed %s, left by an interrupted save", tmp)
    torch.manual_seed(args.seed)
    train_ds, val_ds, image_size = _datasets(args, spec, label_set)
    model, model_name, model_kwargs, teacher = _models(args, label_set, device)
    weights = (resume_ckpt.get("class_weights") if resume_ckpt is not None
               else _class_weights(args, train_ds, label_set))
    loss_fn = ParsingLoss(weights, args.edge_loss).to(device)

    gen = torch.Generator()
    seeded = SeededSamples(train_ds, args.seed)
    loader = DataLoader(seeded, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                        num_workers=args.workers, generator=gen, pin_memory=amp)
    val_loader = DataLoader(val_ds, batch_size=args.batch_size, collate_fn=collate,
                            num_workers=args.workers, pin_memory=amp) if val_ds else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=args.epochs * len(loader), pct_start=0.1)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)

    start_epoch, best_f1, history = 0, float("-inf"), []
    if resume_ckpt is not None:
        model.load_state_dict(resume_ckpt["model"])
        optimizer.load_state_dict(resume_ckpt["optimizer"])
        scheduler.load_state_dict(resume_ckpt["scheduler"])
        if resume_ckpt["scaler"]:  # empty when saved without AMP (a run begun on the CPU)
            scaler.load_state_dict(resume_ckpt["scaler"])
        start_epoch, best_f1 = resume_ckpt["epoch"], resume_ckpt["best_mean_f1"]
        history = list(resume_ckpt["history"])
        log.info("resuming %s after epoch %d", args.out, start_epoch)

    writer = SummaryWriter(str(args.out / "tb"), purge_step=start_epoch * len(loader) or None)
    skipped: set[str] = set()
    step = start_epoch * len(loader)
    for epoch in range(start_epoch, args.epochs):
        epoch_seed = args.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed)  # the model's own randomness (dropout)
        gen.manual_seed(epoch_seed)  # shuffle order
        seeded.set_epoch(epoch)  # augmentation: per sample, from (seed, epoch, index)
        model.train()
        t0, loss_sum, n_batches = time.perf_counter(), torch.zeros((), device=device), 0
        bar = progress_bar(loader, desc=f"epoch {epoch + 1}/{args.epochs}", leave=False)
        for images, targets, bad in bar:
            skipped.update(bad)
            if not len(images):
                continue
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                output = model(images)
                loss, parts = loss_fn(output, targets)
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(images)
                    logits = output.logits if isinstance(output, ParserOutput) else output
                    kd = distillation_loss(logits, soft, targets, args.distill_temperature)
                    loss = (1 - args.distill_alpha) * loss + args.distill_alpha * kd
                    parts["kd"] = kd.detach()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            n_batches += 1
            loss_sum += loss.detach()
            if step % LOG_EVERY == 0 or n_batches == len(loader):
                bar.set_postfix(loss=f"{float(loss_sum) / n_batches:.4f}")
                writer.add_scalar("train/loss", float(loss.detach()), step)
                for name, value in parts.items():
                    writer.add_scalar(f"train/{name}", float(value), step)
                writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)

        row: dict[str, Any] = {"epoch": epoch + 1,
                               "train_loss": float(loss_sum) / max(1, n_batches),
                               "lr": scheduler.get_last_lr()[0]}
        if val_loader is not None:
            cm, bad_val = confusion_over(Parser(model, label_set), val_loader,
                                         desc=f"val {epoch + 1}")
            skipped.update(bad_val)
            scores = cm.scores()
            row.update(val_mean_f1=scores["mean_f1"], val_miou=scores["miou"],
                       val_pixel_accuracy=scores["pixel_accuracy"])
            for key in ("mean_f1", "miou", "pixel_accuracy"):
                if scores[key] is not None:
                    writer.add_scalar(f"val/{key}", scores[key], epoch + 1)
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        score = row.get("val_mean_f1")
        improved = score is not None and score > best_f1
        if improved:
            best_f1 = score
        ckpt = {
            "model": model.state_dict(), "model_name": model_name,
            "model_kwargs": model_kwargs, "num_classes": label_set.num_classes,
            "label_set": label_set.key, "image_size": image_size,
            "epoch": epoch + 1, "best_mean_f1": best_f1, "history": history,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "class_weights": weights, "args": _plain_args(args),
        }
        atomic_save(ckpt, args.out / "last.pt")
        if improved or (val_loader is None and epoch + 1 == args.epochs):
            atomic_save(ckpt, args.out / "best.pt")
        _write_json(args.out / "history.json", history)
        log.info("epoch %d/%d: %s", epoch + 1, args.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in row.items()
                           if k != "epoch" and v is not None))
    writer.close()
    if skipped:
        log.warning("skipped %d bad file(s):\n  %s", len(skipped), "\n  ".join(sorted(skipped)))
    return {"run": str(args.out), "epochs": args.epochs,
            "best_val_mean_f1": best_f1 if best_f1 > float("-inf") else None,
            "last": history[-1] if history else None, "skipped": sorted(skipped)}
