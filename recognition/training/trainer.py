"""Train a face recognizer: backbone + PartialFC margin head, optionally with FSErasing.

``python -m recognition.train --data DIR --network iresnet34 --loss arcface --aug fserasing
--out RUN_DIR`` (``--help`` lists everything; ``--config FILE.yaml`` takes insightface's field
names, flags override it). ``torchrun --nproc_per_node=N -m recognition.train ...`` trains with
DDP (NCCL on GPU, gloo on CPU); the class centres are sharded over the processes (PartialFC).

The loop, run folder and resume are :class:`parsing.core.training.Trainer`'s: the run folder
gets ``config.yaml``, ``checkpoint.pt`` (everything needed to resume: backbone, head shards,
optimizer, scheduler, scaler, RNG states, data position), ``model.pt`` (the backbone
state_dict, what evaluation and export load), ``model.json`` (how to rebuild it),
``metrics.jsonl`` and TensorBoard events in ``tb/``. ``--resume RUN_DIR`` continues from the
last checkpoint; with ``--deterministic`` on CPU it ends with the same weights, bit for bit, as
a run that was never interrupted, with any number of loader workers, and ``metrics.jsonl`` holds
the same losses. The sample order of epoch e is a function of (seed, e); the checkpoint records
a fingerprint of the data (image and identity counts, a hash of the file list) and a resume on
other data is refused.

On CPU, glibc's allocator setting of reference §8 makes training 1.2-1.8x faster:
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fserasing.augment import BatchAugment
from parsing.core.errors import DataError, InputError
from parsing.core.registry import import_plugins
from parsing.core.training import PolyWarmup
from parsing.core.training import Trainer as BaseTrainer
from recognition.backbones import create_backbone
from recognition.data.datasets import FaceDataset, collate_faces, open_dataset
from recognition.evaluation.validation import VerificationSet
from recognition.losses import CombinedMarginLoss, PartialFC
from recognition.training.config import ImageTrainConfig, TrainConfig

__all__ = ["Trainer", "init_class_centres"]

log = logging.getLogger(__name__)
_CENTRE_BLOCK = 4096


def init_class_centres(head: PartialFC, seed: int) -> None:
    """N(0, 0.01) centres drawn in fixed blocks of classes, so the full matrix is the same
    whatever the world size (each rank draws only the blocks its shard overlaps)."""
    first = head.class_start // _CENTRE_BLOCK
    last = (head.class_start + head.num_local - 1) // _CENTRE_BLOCK
    blocks = []
    for b in range(first, last + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        rows = min(_CENTRE_BLOCK, head.num_classes - b * _CENTRE_BLOCK)
        blocks.append(torch.normal(0.0, 0.01, (rows, head.embedding_size), generator=g))
    offset = head.class_start - first * _CENTRE_BLOCK
    with torch.no_grad():
        head.weight.copy_(torch.cat(blocks)[offset: offset + head.num_local])


class Trainer(BaseTrainer):
    """Backbone + PartialFC head on the shared loop (:class:`parsing.core.training.Trainer`).

    ``Trainer(cfg).train()`` is what the CLI runs; ``resume_from`` is a run folder.
    """

    checkpoint_format = "fserasing.recognition.train/1"
    name = "recognition.train"
    collate_fn = staticmethod(collate_faces)
    cfg: TrainConfig

    def __init__(self, cfg: ImageTrainConfig, resume_from: str | os.PathLike | None = None,
                 overwrite: bool = False, allow_data_change: bool = False) -> None:
        import_plugins(cfg.imports)
        # before the data: says whether masks are needed, and checks the options early
        self.augment = BatchAugment(cfg.aug, cfg.flip, cfg.aug_options())
        super().__init__(cfg, resume_from, overwrite, allow_data_change)

    @property
    def log_every(self) -> int:
        return self.cfg.frequent

    @property
    def val_every(self) -> int:
        return self.cfg.verbose

    @property
    def save_every_steps(self) -> int:
        return self.cfg.save_every_steps

    # -- construction ----------------------------------------------------------------------
    def build_data(self) -> FaceDataset:
        cfg = self.cfg
        if not cfg.rec:
            raise InputError("no training data: give --data (config field 'rec')")
        if not Path(cfg.rec).exists():
            raise DataError(f"{cfg.rec}: no such dataset")
        masks = cfg.masks
        if masks is not None and masks.startswith("parser:"):
            masks = None
        needs_masks = self.augment.needs_masks
        if needs_masks and masks is None and not (cfg.masks or "").startswith("parser:"):
            if not (Path(cfg.rec) / "anno_list.csv").is_file():
                raise InputError(f"--aug {cfg.aug} needs --masks (a mask store, a mask folder, an "
                                 "(N, H, W) tensor file, or parser:CKPT)")
            masks = "labels"
            log.info("%s masks: the synthetic set's own labels_25 maps", cfg.aug)
        if not needs_masks and masks is not None:
            log.info("--masks given but --aug %s does not use them; not loading", cfg.aug)
            masks = None
        dataset = open_dataset(cfg.rec, masks=masks, skip_bad=cfg.skip_bad, size=cfg.image_size,
                               num_classes=cfg.num_classes)
        self.num_classes = cfg.num_classes or dataset.num_classes
        if self.num_classes < dataset.num_classes:
            raise InputError(f"num_classes {self.num_classes} < the data's "
                             f"{dataset.num_classes} identities")
        if len(dataset) < cfg.batch_size * self.world_size:
            raise InputError(f"{cfg.rec}: {len(dataset)} images are fewer than one batch of "
                             f"{cfg.batch_size} x {self.world_size} processes")
        return dataset

    def amp_dtype(self) -> torch.dtype | None:
        return getattr(torch, self.cfg.amp_dtype) if self.amp else None

    @property
    def amp(self) -> bool:
        return self.cfg.fp16 and self.device.type == "cuda"

    def build_model(self) -> None:
        """Backbone (DDP-wrapped as ``model`` under torchrun), the PartialFC head, the masks'
        parser (``--masks parser:CKPT``) and the verification sets."""
        cfg = self.cfg
        if cfg.fp16 and not self.amp:
            log.warning("fp16 is for CUDA; training in float32 on %s", self.device)
        kwargs = {"num_features": cfg.embedding_size, **cfg.network_kwargs}
        if self.amp:
            kwargs.update(fp16=True, amp_dtype=getattr(torch, cfg.amp_dtype))
        try:
            self.backbone = create_backbone(cfg.network, **kwargs).to(self.device)
        except TypeError as exc:
            hint = (" (mixed precision passes fp16= and amp_dtype= to the backbone, as "
                    "insightface does)") if self.amp else ""
            raise InputError(f"network {cfg.network!r} with {kwargs}: {exc}{hint}") from None
        if cfg.channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        self.model: nn.Module = self.ddp(self.backbone)
        m1, m2, m3 = cfg.margins
        margin = CombinedMarginLoss(64.0, m1, m2, m3, cfg.interclass_filtering_threshold)
        self.head = PartialFC(margin, cfg.embedding_size, self.num_classes, cfg.sample_rate)
        init_class_centres(self.head, cfg.seed)
        self.head.to(self.device)
        if (cfg.masks or "").startswith("parser:"):
            self.augment.parser = self._build_parser()
        self.augment.to(self.device)
        self.val_sets = ([VerificationSet.from_target(t) for t in cfg.val_targets]
                         if self.is_main else [])

    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: backbone (group 0) and head (group 1)."""
        return [{"params": self.backbone.parameters()}, {"params": self.head.parameters()}]

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """One optimizer over :meth:`param_groups`, the poly LR schedule."""
        cfg = self.cfg
        params = self.param_groups()
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._n_backbone_params = len(list(self.backbone.parameters()))
        warmup = self.steps_per_epoch * cfg.warmup_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, PolyWarmup(self.total_steps, warmup))
        return optimizer, scheduler

    def _build_parser(self) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            from parsing import Parser
        except ImportError:
            raise InputError("--masks parser:CKPT needs parsing.Parser, which this install "
                             "lacks") from None
        return Parser.from_checkpoint(self.cfg.masks.split(":", 1)[1], device=self.device)

    def train_modules(self) -> list[nn.Module]:
        return [self.model, self.head]

    # -- checkpoints -----------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        return self.backbone.state_dict()

    def model_info(self) -> dict[str, Any]:
        return {"network": self.cfg.network, "network_kwargs": self.cfg.network_kwargs,
                "embedding_size": self.cfg.embedding_size, "image_size": self.cfg.image_size,
                "num_classes": self.num_classes, "imports": self.cfg.imports}

    def shared_state(self) -> dict[str, Any]:
        return {"backbone": self.backbone.state_dict()}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        self.backbone.load_state_dict(state["backbone"])

    def rank_state(self) -> dict[str, Any]:
        """This process's head shard and optimizer state (the backbone's part of the optimizer
        state is the same on every rank: only rank 0 keeps it)."""
        optim = self.optimizer.state_dict()
        if self.rank > 0:
            optim["state"] = {k: v for k, v in optim["state"].items()
                              if k >= self._n_backbone_params}
        return {"head": self.head.state_dict(), "optimizer": optim}

    def load_rank_state(self, own: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
        self.head.load_state_dict(own["head"])
        optim = own["optimizer"]
        if self.rank > 0:
            shared = ranks[0]["optimizer"]["state"]
            optim["state"] = {**{k: v for k, v in shared.items()
                                 if k < self._n_backbone_params}, **optim["state"]}
        self.optimizer.load_state_dict(optim)

    def data_fingerprint(self) -> dict[str, Any]:
        return self.dataset.fingerprint()

    def check_data(self, path: Path, saved: dict[str, Any] | None) -> None:
        """Refuse to resume on other data than the run's (``allow_data_change``: other images
        of as many identities are accepted)."""
        if saved is None:
            return
        now = self.dataset.fingerprint()
        if saved["identities"] != now["identities"]:
            raise DataError(f"{path}: the run was trained on {saved['identities']} identities, "
                            f"{self.cfg.rec} has {now['identities']}; the classifier cannot "
                            "continue on them: start a new run")
        if saved != now and not self.allow_data_change:
            raise DataError(f"{path}: the run was trained on other data ({saved['images']} "
                            f"images, file-list hash {saved['files'][:12]}; {self.cfg.rec} now "
                            f"has {now['images']}, hash {now['files'][:12]}); pass "
                            "--allow-data-change to continue on it")

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """The margin loss of one collated batch (augmented on the device)."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True) if "mask" in batch else None
        x = self.augment(images, masks, self.generator)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        embeddings = self.model(x)
        return self.head(embeddings.float(), labels)

    def clip_gradients(self) -> None:
        if self.cfg.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.backbone.parameters(), self.cfg.clip_grad_norm)

    def validate(self) -> dict[str, float]:
        results: dict[str, float] = {}
        for val in self.val_sets:
            res = val.evaluate(self.backbone)
            results[f"{val.name}/accuracy"] = res["accuracy"]
            log.info("step %d %s: accuracy %.4f +- %.4f", self.global_step, val.name,
                     res["accuracy"], res["std"])
        return results
