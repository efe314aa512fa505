"""Train a face parser (reference §6) on the shared loop of :mod:`parsing.core.training`.

    train(ParserTrainConfig(data="synth:data/synth", output="runs/parser", num_epoch=30))

The run folder is the one every trainer writes: ``config.yaml``, ``checkpoint.pt`` (resumable:
weights, optimizer, one-cycle schedule, scaler, RNG states, data position), ``model.pt``,
``model.json``, ``metrics.jsonl`` (loss, lr and loss parts every ``log_every`` steps; the
validation mean F1, mIoU and pixel accuracy after each epoch) and TensorBoard events in
``tb/``. ``model.pt`` holds the **best validated** weights: it is rewritten only when an
epoch's validation mean F1 beats every earlier one (every epoch when there is no validation
set), and ``model.json`` says which epoch it is and its score. Evaluation, prediction, export
and FSErasing's ``parser:`` masks load it (or the run folder); the last weights are in
``checkpoint.pt``, for ``--resume``. One file for the weights people use, chosen by held-out
data, keeps a run folder the same for every trainer and spares a second copy of the model.

A resumed run (``resume_from=RUN_DIR``) continues with the same weights, bit for bit, as an
uninterrupted one, with any ``num_workers``: every epoch's order is a function of (seed,
epoch) and every sample's augmentation is drawn from (seed, epoch, index)
(:class:`parsing.parser.data.SeededSamples`). AdamW with a one-cycle schedule stepped per
batch; float16 autocast on CUDA; DDP under ``torchrun``.

CPU note: glibc's allocator is slow with large tensors; export ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824`` (reference §8).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from parsing.core.cli import device as device_type
from parsing.core.config import Config
from parsing.core.errors import DataError, InputError
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.training import Trainer, teardown_distributed
from parsing.parser.data import (
    AUGMENTATIONS,
    SeededSamples,
    build_dataset,
    collate,
    count_labels,
    eval_transform,
    has_official_split,
    parse_data_spec,
    train_transform,
)
from parsing.parser.inference import Parser, model_from_checkpoint, parser_info
from parsing.parser.losses import (
    CLASS_WEIGHT_METHODS,
    ParsingLoss,
    class_weights,
    distillation_loss,
)
from parsing.parser.metrics import confusion_over
from parsing.parser.models import ParserOutput, create_model

__all__ = ["RUN_SETTINGS", "ParserTrainConfig", "ParserTrainer", "train"]

log = logging.getLogger(__name__)

#: Settings that define a run: a resume keeps the run's own (flags for these are ignored).
RUN_SETTINGS = ("data", "model", "width", "decoder_channels", "labels", "num_epoch",
                "batch_size", "lr", "weight_decay", "val_split", "seed", "size", "augment",
                "align", "class_weights", "edge_loss", "distill_from", "distill_alpha",
                "distill_temperature", "skip_bad")


@dataclass
class ParserTrainConfig(Config):
    """Everything a parser training run depends on (``config.yaml`` of the run folder)."""

    data: str = ""  #: KIND:PATH (synth, facesynthetics, celebamask, folder)
    output: str = "runs/parser"  #: the run folder
    model: str = "unet_r18"  #: parser registry name (unet_r18, scanet, unet_timm:<name>)
    width: int | None = None  #: unet_r18 / scanet base width (default 64)
    decoder_channels: list[int] | None = None  #: U-Net decoder widths, deepest first
    labels: str = "fse25"  #: label set to train
    num_epoch: int = 30
    batch_size: int = 32  #: per process
    lr: float = 2e-3  #: peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4
    val_split: float = 0.1  #: held-out fraction where the data has no official split
    seed: int = 0
    size: int | None = None  #: train at size x size (with align: the aligned size, 112)
    augment: str = "full"  #: full | flip | none (:func:`parsing.parser.data.train_transform`)
    align: bool = False  #: facesynthetics: 5-point ArcFace alignment
    class_weights: str | None = None  #: inverse_sqrt | median_frequency
    edge_loss: float = 0.0  #: weight of the edge loss; 0 = off
    distill_from: str | None = None  #: self-distillation from this trained parser
    distill_alpha: float = 0.5  #: weight of the KL term
    distill_temperature: float = 1.0
    skip_bad: bool = False  #: skip unreadable files, report them
    num_workers: int = 2  #: data-loading processes
    device: str | None = None  #: default: cuda:LOCAL_RANK if available, else cpu
    deterministic: bool = False  #: torch.use_deterministic_algorithms
    log_every: int = 20  #: steps between loss rows (each waits for the device)
    save_every_steps: int = 0  #: 0: checkpoint at the end of each epoch only

    def validate(self) -> None:
        """Raise InputError naming the first bad field."""
        for name in ("num_epoch", "batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width is not None and self.width < 1:
            raise InputError(f"width must be >= 1, got {self.width}")
        if self.decoder_channels is not None:
            try:
                self.decoder_channels = [int(c) for c in self.decoder_channels]
            except (TypeError, ValueError):
                raise InputError(f"decoder_channels: expected integers, got "
                                 f"{self.decoder_channels!r}") from None
            if not self.decoder_channels or min(self.decoder_channels) < 1:
                raise InputError(f"decoder_channels {self.decoder_channels}: widths must be "
                                 "positive")
        if self.size is not None and self.size < 16:
            raise InputError(f"size {self.size}: the parser needs at least 16 x 16 inputs")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        for name in ("weight_decay", "edge_loss"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.val_split < 1.0:
            raise InputError(f"val_split must be in [0, 1), got {self.val_split}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise InputError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not (math.isfinite(self.distill_temperature) and self.distill_temperature > 0):
            raise InputError("distill_temperature must be a positive number, got "
                             f"{self.distill_temperature}")
        if self.augment not in AUGMENTATIONS:
            raise InputError(f"augment must be one of {', '.join(AUGMENTATIONS)}, got "
                             f"{self.augment!r}")
        if self.class_weights is not None and self.class_weights not in CLASS_WEIGHT_METHODS:
            raise InputError(f"class_weights must be one of {', '.join(CLASS_WEIGHT_METHODS)}, "
                             f"got {self.class_weights!r}")
        if self.num_workers < 0 or self.save_every_steps < 0:
            raise InputError("num_workers and save_every_steps must be >= 0")
        get_label_set(self.labels)
        if self.device is not None:
            try:
                device_type(str(self.device))
            except argparse.ArgumentTypeError as exc:
                raise InputError(f"device: {exc}") from None


def _unwrap(ds: Any) -> tuple[Any, list[int] | None]:
    return (ds.dataset, list(ds.indices)) if isinstance(ds, Subset) else (ds, None)


class ParserTrainer(Trainer):
    """A face parser on the shared loop: ``ParserTrainer(cfg).train()``.

    ``model.pt`` keeps the best validated weights (see the module docstring).
    """

    checkpoint_format = "fserasing.parsing.train/1"
    name = "parsing.train"
    collate_fn = staticmethod(collate)
    drop_last = False  # every sample every epoch; the last batch may be smaller
    persistent_workers = False  # the workers' copy of SeededSamples must see set_epoch
    cfg: ParserTrainConfig

    @property
    def log_every(self) -> int:
        return self.cfg.log_every

    @property
    def save_every_steps(self) -> int:
        return self.cfg.save_every_steps

    # -- construction ----------------------------------------------------------------------
    def build_data(self) -> Dataset:
        """The training split wrapped in :class:`SeededSamples`; also the validation loader,
        the training image size, the class weights and the data fingerprint."""
        cfg = self.cfg
        if not cfg.data:
            raise InputError("--data is required (KIND:PATH)")
        spec = parse_data_spec(cfg.data)
        self.label_set: LabelSet = get_label_set(cfg.labels)
        resize = None if cfg.align else cfg.size
        common = {"align": cfg.align, "size": cfg.size or 112, "val_fraction": cfg.val_split,
                  "seed": cfg.seed, "skip_bad": cfg.skip_bad}
        train_ds = build_dataset(spec, "train", self.label_set,
                                 train_transform(self.label_set, resize, cfg.augment), **common)
        if len(train_ds) == 0:
            raise InputError(f"--data {spec}: the training split is empty")
        val_ds = None
        if has_official_split(spec) or cfg.val_split > 0:
            val_ds = build_dataset(spec, "val", self.label_set, eval_transform(resize), **common)
            if len(val_ds) == 0:
                log.warning("the validation split of %s is empty: model.pt will be the last "
                            "epoch's weights", spec)
                val_ds = None
        self.val_loader = None
        if val_ds is not None and self.is_main:
            self.val_loader = DataLoader(val_ds, batch_size=cfg.batch_size, collate_fn=collate,
                                         num_workers=cfg.num_workers,
                                         pin_memory=self.device.type == "cuda")
        self.has_validation = val_ds is not None
        self.image_size = self._image_size(train_ds)
        self.fingerprint = self._fingerprint(train_ds)
        self.weights = self._class_weights(train_ds)
        self.seeded = SeededSamples(train_ds, cfg.seed)
        self.bad_files: set[str] = set()
        self.best_f1 = -math.inf
        self.improved = False
        return self.seeded

    def _image_size(self, train_ds: Any) -> int | None:
        cfg = self.cfg
        image_size = cfg.size or (112 if cfg.align else None)
        if image_size is None:  # the data's own size, if square (read without augmentation)
            base, idx = _unwrap(train_ds)
            try:
                h, w = base.read_labels(idx[0] if idx else 0).shape
                image_size = h if h == w else None
            except DataError:
                if not cfg.skip_bad:
                    raise
        return image_size

    @staticmethod
    def _fingerprint(train_ds: Any) -> dict[str, Any]:
        """Sample count and a SHA-256 of the training samples' names."""
        base, idx = _unwrap(train_ds)
        digest = hashlib.sha256()
        for i in idx if idx is not None else range(len(base)):
            digest.update(f"{base.name(i)}\n".encode())
        return {"samples": len(train_ds), "names": digest.hexdigest()}

    def _class_weights(self, train_ds: Any) -> torch.Tensor | None:
        method = self.cfg.class_weights
        if method is None:
            return None
        base, idx = _unwrap(train_ds)
        ls = self.label_set
        weights = class_weights(count_labels(base, ls.num_classes, indices=idx), method)
        log.info("class weights (%s): %s", method,
                 ", ".join(f"{n}={w:.2f}" for n, w in zip(ls.names, weights.tolist(),
                                                         strict=True)))
        return weights

    def build_model(self) -> None:
        """The parser (or, with ``distill_from``, the teacher's architecture started from its
        weights), the frozen teacher and the loss."""
        cfg = self.cfg
        self.teacher = None
        if not cfg.distill_from:
            kwargs: dict[str, Any] = {} if cfg.width is None else {"width": cfg.width}
            if cfg.decoder_channels:
                kwargs["decoder_channels"] = list(cfg.decoder_channels)
            self.model_name, self.model_kwargs = cfg.model, kwargs
            try:
                net = create_model(cfg.model, num_classes=self.label_set.num_classes, **kwargs)
            except TypeError as exc:  # --width / --decoder-channels for a model without them
                if "unexpected keyword argument" not in str(exc):
                    raise
                raise InputError(f"--model {cfg.model} takes no "
                                 f"{' or '.join(kwargs)} ({exc})") from None
        else:
            teacher, info = model_from_checkpoint(cfg.distill_from, self.device)
            teacher.requires_grad_(False)
            if info["label_set"] != self.label_set.key:
                raise InputError(f"--distill-from {cfg.distill_from}: trained on "
                                 f"{info['label_set']}, not {self.label_set.key}")
            if cfg.model not in (info["model_name"], "unet_r18"):
                log.warning("--distill-from: fine-tuning the teacher's %s, not --model %s",
                            info["model_name"], cfg.model)
            self.model_name, self.model_kwargs = info["model_name"], info["model_kwargs"]
            net = create_model(self.model_name, num_classes=self.label_set.num_classes,
                               **self.model_kwargs)
            net.load_state_dict(teacher.state_dict())  # self-distillation fine-tunes itself
            self.teacher = teacher
        self.net = net.to(self.device)
        self.model = self.ddp(self.net)
        self.loss_fn = ParsingLoss(self.weights, cfg.edge_loss).to(self.device)

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        cfg = self.cfg
        optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=self.total_steps, pct_start=0.1)
        return optimizer, scheduler

    def amp_dtype(self) -> torch.dtype | None:
        return torch.float16 if self.device.type == "cuda" else None

    def on_epoch_start(self, epoch: int) -> None:
        self.seeded.set_epoch(epoch)  # augmentation: per sample, from (seed, epoch, index)

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        self.bad_files.update(batch["errors"])  # the loop counts batch["skipped"]
        if not len(batch["image"]):
            return None
        images = batch["image"].to(self.device, non_blocking=True)
        targets = batch["mask"].to(self.device, non_blocking=True)
        cfg = self.cfg
        with self.autocast():
            output = self.model(images)
            loss, parts = self.loss_fn(output, targets)
            if self.teacher is not None:
                with torch.no_grad():
                    soft = self.teacher(images)
                logits = output.logits if isinstance(output, ParserOutput) else output
                kd = distillation_loss(logits, soft, targets, cfg.distill_temperature)
                loss = (1 - cfg.distill_alpha) * loss + cfg.distill_alpha * kd
                parts["kd"] = kd.detach()
        return loss, parts

    def validate(self) -> dict[str, float]:
        """Mean F1, mIoU and pixel accuracy on the validation split (rank 0)."""
        self.improved = False
        if self.val_loader is None:
            return {}
        cm, bad = confusion_over(Parser(self.net, self.label_set), self.val_loader,
                                 desc=f"val {self.epoch}")
        self.bad_files.update(bad)
        scores = cm.scores()
        f1 = scores["mean_f1"]
        if f1 is not None and f1 > self.best_f1:
            self.best_f1, self.improved = f1, True
        return {"mean_f1": f1, "miou": scores["miou"],
                "pixel_accuracy": scores["pixel_accuracy"]}

    # -- what the run folder keeps ---------------------------------------------------------
    def save_model(self) -> None:
        """``model.pt``: rewritten when the validation mean F1 improved (or every epoch
        without validation)."""
        if self.improved or not self.has_validation:
            super().save_model()

    def model_info(self) -> dict[str, Any]:
        cfg = self.cfg
        return {**parser_info(self.model_name, self.model_kwargs, self.label_set,
                              self.image_size),
                "selected_by": "val_mean_f1" if self.has_validation else "last_epoch",
                "val_mean_f1": self.best_f1 if self.best_f1 > -math.inf else None,
                # what evaluation needs to find the held-out split again
                "data": cfg.data, "align": cfg.align, "val_split": cfg.val_split,
                "seed": cfg.seed}

    def shared_state(self) -> dict[str, Any]:
        return {**super().shared_state(), "class_weights": self.weights,
                "best_mean_f1": self.best_f1}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        super().load_shared_state(state)
        self.best_f1 = state["best_mean_f1"]
        if state["class_weights"] is not None:  # the run's, whatever the data says now
            self.weights = state["class_weights"]
            self.loss_fn = ParsingLoss(self.weights, self.cfg.edge_loss).to(self.device)

    def data_fingerprint(self) -> dict[str, Any]:
        return self.fingerprint


def train(cfg: ParserTrainConfig, resume_from: str | os.PathLike | None = None,
          overwrite: bool = False, allow_data_change: bool = False) -> dict[str, Any] | None:
    """Run (or, with ``resume_from`` a run folder, continue) a parser training; rank 0
    returns a summary (the others None): the run folder, the best validation mean F1, the
    last logged row and the files skipped (``skip_bad``)."""
    try:
        trainer = ParserTrainer(cfg, resume_from, overwrite, allow_data_change)
        last = trainer.train()
    finally:
        teardown_distributed()
    if not trainer.is_main:
        return None
    if trainer.bad_files:
        log.warning("skipped %d bad file(s):\n  %s", len(trainer.bad_files),
                    "\n  ".join(sorted(trainer.bad_files)))
    return {"run": str(trainer.out), "epochs": cfg.num_epoch,
            "global_step": trainer.global_step,
            "best_val_mean_f1": trainer.best_f1 if trainer.best_f1 > -math.inf else None,
            "last": last, "skipped": sorted(trainer.bad_files)}
