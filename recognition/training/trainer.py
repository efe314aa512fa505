"""Train a face recognizer: backbone + PartialFC margin head, optionally with FSErasing.

``python -m recognition.train --data DIR --network iresnet34 --loss arcface --aug fserasing
--out RUN_DIR`` (``--help`` lists everything; ``--config FILE.yaml`` takes insightface's field
names, flags override it). ``torchrun --nproc_per_node=N -m recognition.train ...`` trains with
DDP (NCCL on GPU, gloo on CPU); the class centres are sharded over the processes (PartialFC).

The run folder gets ``config.yaml``, ``checkpoint.pt`` (everything needed to resume: model,
head shards, optimizer, scheduler, scaler, RNG states, data position), ``model.pt`` (the
backbone state_dict, what evaluation and export load), ``model.json`` (how to rebuild it),
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

import importlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from fserasing.augment import BatchAugment
from parsing.core.errors import DataError, InputError
from parsing.core.io import atomic_save, load_checkpoint, remove_stale_temporaries
from parsing.core.progress import progress_bar
from recognition.backbones import create_backbone
from recognition.data.datasets import FaceDataset, collate_faces, open_dataset
from recognition.evaluation.validation import VerificationSet
from recognition.losses import CombinedMarginLoss, PartialFC
from recognition.training.config import TrainConfig

__all__ = ["PolyWarmup", "Trainer"]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "fserasing.recognition.train/1"
_CENTRE_BLOCK = 4096


class PolyWarmup:
    """insightface's PolyScheduler as a LambdaLR factor: linear warm-up, then (1 - t)^2."""

    def __init__(self, total_steps: int, warmup_steps: int, power: float = 2.0) -> None:
        self.total, self.warmup, self.power = max(total_steps, 1), warmup_steps, power

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / self.warmup
        return max(0.0, 1.0 - (step - self.warmup) / max(self.total - self.warmup, 1)) ** \
            self.power


class EpochSampler(Sampler[int]):
    """``DistributedSampler`` order for (seed, epoch), started ``skip`` samples in (resume)."""

    def __init__(self, dataset: FaceDataset, world_size: int, rank: int, seed: int) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                        shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "augment": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator,
                   device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": npst["key"].numpy().astype(np.uint32),
                                   "pos": npst["pos"]},
                         "has_gauss": npst["has_gauss"], "gauss": npst["gauss"]})
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state["augment"].numel() == generator.get_state().numel():
        generator.set_state(state["augment"])
    else:  # saved by a generator on another kind of device (CPU and CUDA states differ)
        log.warning("resuming on %s a run saved on another device: the augmentation draws "
                    "restart from the seed", device)
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


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


class Trainer:
    """One training run (one process of it under torchrun): build, train, checkpoint, resume.

    ``Trainer(cfg).train()`` is what the CLI runs; ``resume_from`` is a run folder.
    """

    def __init__(self, cfg: TrainConfig, resume_from: str | os.PathLike | None = None,
                 overwrite: bool = False, allow_data_change: bool = False) -> None:
        self.cfg = cfg
        self.allow_data_change = allow_data_change
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(cfg.device or (
            f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.device.index is None:  # "--device cuda"
            self.device = torch.device("cuda", self.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        for module in cfg.imports:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise InputError(f"imports: cannot import {module!r} ({exc})") from None
        self.out = Path(cfg.output)
        self.is_main = self.rank == 0
        # before the data: says whether masks are needed, and checks the options early
        self.augment = BatchAugment(cfg.aug, cfg.flip, cfg.aug_options())

        self.dataset = self._build_dataset()
        self.num_classes = cfg.num_classes or self.dataset.num_classes
        if self.num_classes < self.dataset.num_classes:
            raise InputError(f"num_classes {self.num_classes} < the data's "
                             f"{self.dataset.num_classes} identities")
        self._build_loader()
        self._build_model()
        self._build_optimization()
        if (cfg.masks or "").startswith("parser:"):
            self.augment.parser = self._build_parser()
        self.augment.to(self.device)
        # per-rank randomness (dropout, negative sampling, augmentation) after the shared init
        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed((cfg.seed + self.rank) % 2**32)
        random.seed(cfg.seed + self.rank)
        self.generator = torch.Generator(self.device).manual_seed(
            (cfg.seed << 16) + self.rank + 1)
        self.val_sets = ([VerificationSet.from_target(t) for t in cfg.val_targets]
                         if self.is_main else [])

        self.writer: SummaryWriter | None = None  # opened by train() on rank 0
        self.metrics: Any = None
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # this process's loss since the last metrics row, and its skipped samples (checkpointed)
        self.loss_sum, self.loss_count, self.skipped = torch.zeros((), device=self.device), 0, 0
        self.resumed = resume_from is not None
        if resume_from is not None:
            self.load_checkpoint(Path(resume_from) / "checkpoint.pt")
        elif (self.out / "checkpoint.pt").is_file() and not overwrite:
            raise InputError(f"{self.out} already holds a run: continue it with --resume "
                             f"{self.out}, or give another --out")

    # -- construction helpers ------------------------------------------------------------
    def _build_loader(self) -> None:
        cfg = self.cfg
        self.sampler = EpochSampler(self.dataset, self.world_size, self.rank, cfg.seed)
        self.steps_per_epoch = len(self.sampler.inner) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise InputError(f"{cfg.rec}: {len(self.dataset)} images are fewer than one batch of "
                             f"{cfg.batch_size} x {self.world_size} processes")
        self.total_steps = self.steps_per_epoch * cfg.num_epoch
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=cfg.num_workers, collate_fn=collate_faces,
            persistent_workers=cfg.num_workers > 0, pin_memory=self.device.type == "cuda",
            # its own generator: creating an iterator must not consume the global RNG
            generator=torch.Generator().manual_seed(cfg.seed))

    def _build_model(self) -> None:
        """Backbone (DDP-wrapped as ``model`` under torchrun) and the PartialFC head."""
        cfg = self.cfg
        self.amp = cfg.fp16 and self.device.type == "cuda"
        if cfg.fp16 and not self.amp:
            log.warning("fp16 is for CUDA; training in float32 on %s", self.device)
        torch.manual_seed(cfg.seed)  # same initial backbone on every rank
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
        self.model: nn.Module = self.backbone
        if self.world_size > 1:
            self.model = DistributedDataParallel(
                self.backbone, device_ids=[self.device.index] if self.device.type == "cuda"
                else None)
        m1, m2, m3 = cfg.margins
        margin = CombinedMarginLoss(64.0, m1, m2, m3, cfg.interclass_filtering_threshold)
        self.head = PartialFC(margin, cfg.embedding_size, self.num_classes, cfg.sample_rate)
        init_class_centres(self.head, cfg.seed)
        self.head.to(self.device)

    def _build_optimization(self) -> None:
        """One optimizer over backbone (group 0) and head (group 1), LR schedule, scaler."""
        cfg = self.cfg
        params = [{"params": self.backbone.parameters()}, {"params": self.head.parameters()}]
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                                             weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self._n_backbone_params = len(list(self.backbone.parameters()))
        warmup = self.steps_per_epoch * cfg.warmup_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, PolyWarmup(self.total_steps, warmup))
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp and cfg.amp_dtype == "float16")

    def _build_dataset(self) -> FaceDataset:
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
        return open_dataset(cfg.rec, masks=masks, skip_bad=cfg.skip_bad, size=cfg.image_size,
                            num_classes=cfg.num_classes)

    def _build_parser(self) -> Callable[[torch.Tensor], torch.Tensor]:
        try:
            from parsing import Parser
        except ImportError:
            raise InputError("--masks parser:CKPT needs parsing.Parser, which this install "
                             "lacks") from None
        return Parser.from_checkpoint(self.cfg.masks.split(":", 1)[1], device=self.device)

    # -- checkpoints -----------------------------------------------------------------------
    def _optimizer_state(self) -> dict[str, Any]:
        state = self.optimizer.state_dict()
        if self.rank > 0:  # the backbone's state is the same on every rank: keep rank 0's
            state["state"] = {k: v for k, v in state["state"].items()
                              if k >= self._n_backbone_params}
        return state

    def checkpoint_state(self) -> dict[str, Any] | None:
        """The full training state (on rank 0; ``None`` on the others), gathered to CPU."""
        own = _to_cpu({"head": self.head.state_dict(), "optimizer": self._optimizer_state(),
                       "rng": _rng_state(self.generator, self.device),
                       "log": {"loss_sum": self.loss_sum, "loss_count": self.loss_count,
                               "skipped": self.skipped}})
        ranks = [own]
        if self.world_size > 1:
            ranks = [None] * self.world_size if self.is_main else None
            dist.gather_object(own, ranks, dst=0)
        if not self.is_main:
            return None
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.cfg.to_dict(),
            "world_size": self.world_size,
            "data": self.dataset.fingerprint(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "backbone": _to_cpu(self.backbone.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ranks": ranks,
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()
        if state is not None:
            atomic_save(state, self.out / "checkpoint.pt")

    def save_model(self) -> None:
        if self.is_main:
            atomic_save(_to_cpu(self.backbone.state_dict()), self.out / "model.pt")
            info = {"network": self.cfg.network, "network_kwargs": self.cfg.network_kwargs,
                    "embedding_size": self.cfg.embedding_size, "image_size": self.cfg.image_size,
                    "num_classes": self.num_classes, "global_step": self.global_step}
            (self.out / "model.json").write_text(json.dumps(info, indent=1))

    def load_checkpoint(self, path: Path) -> None:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise DataError(f"{path}: not a recognition.train checkpoint")
        if state["world_size"] != self.world_size:
            raise DataError(f"{path}: written by {state['world_size']} process(es); resume "
                            f"with the same number (got {self.world_size})")
        self._check_data(path, state.get("data"))
        own = state["ranks"][self.rank]
        self.backbone.load_state_dict(state["backbone"])
        self.head.load_state_dict(own["head"])
        optim = own["optimizer"]
        if self.rank > 0:
            shared = state["ranks"][0]["optimizer"]["state"]
            optim["state"] = {**{k: v for k, v in shared.items()
                                 if k < self._n_backbone_params}, **optim["state"]}
        self.optimizer.load_state_dict(optim)
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without float16 AMP (e.g. begun on the CPU)
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(own["rng"], self.generator, self.device)
        if "log" in own:
            self.loss_sum = own["log"]["loss_sum"].to(self.device)
            self.loss_count, self.skipped = own["log"]["loss_count"], own["log"]["skipped"]
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        log.info("resumed %s at epoch %d step %d (global step %d)", path, self.epoch,
                 self.step_in_epoch, self.global_step)

    def _check_data(self, path: Path, saved: dict[str, Any] | None) -> None:
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

    def _open_metrics(self) -> Any:
        """``metrics.jsonl`` for appending; a resumed run drops the rows logged after its
        checkpoint (they are logged again), a new run starts it empty."""
        path = self.out / "metrics.jsonl"
        if not self.resumed or not path.is_file():
            return open(path, "w")  # noqa: SIM115 - closed by train()
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.global_step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        path.write_text("".join(kept))
        return open(path, "a")  # noqa: SIM115 - closed by train()

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> torch.Tensor:
        """One optimisation step on a collated batch; returns the (detached) loss."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True) if "mask" in batch else None
        x = self.augment(images, masks, self.generator)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        embeddings = self.model(x)
        loss = self.head(embeddings.float(), labels)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.backbone.parameters(), self.cfg.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return loss.detach()

    def validate(self) -> dict[str, float]:
        results: dict[str, float] = {}
        if not self.val_sets:
            return results
        self.backbone.eval()
        for val in self.val_sets:
            res = val.evaluate(self.backbone)
            results[f"{val.name}/accuracy"] = res["accuracy"]
            log.info("step %d %s: accuracy %.4f +- %.4f", self.global_step, val.name,
                     res["accuracy"], res["std"])
            if self.writer is not None:
                self.writer.add_scalar(f"val/{val.name}/accuracy", res["accuracy"],
                                       self.global_step)
        self.backbone.train()
        self._record({"step": self.global_step, **results})
        return results

    def _record(self, row: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(json.dumps(row) + "\n")
            self.metrics.flush()

    def train(self) -> dict[str, Any]:
        """Run to ``num_epoch``; returns the last logged metrics."""
        cfg = self.cfg
        self.model.train()
        self.head.train()
        last: dict[str, Any] = {}
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for tmp in remove_stale_temporaries(self.out, ("checkpoint.pt", "model.pt")):
                log.info("removed %s, left by an interrupted save", tmp)
            (self.out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.writer = SummaryWriter(str(self.out / "tb"),
                                        purge_step=self.global_step + 1 if self.resumed else None)
            self.metrics = self._open_metrics()
        try:
            while self.epoch < cfg.num_epoch:
                self.sampler.set_position(self.epoch, self.step_in_epoch * cfg.batch_size)
                bar = progress_bar(total=self.steps_per_epoch * cfg.batch_size * self.world_size,
                           initial=self.step_in_epoch * cfg.batch_size * self.world_size,
                           desc=f"epoch {self.epoch + 1}/{cfg.num_epoch}", unit="img",
                           unit_scale=True, disable=not self.is_main, dynamic_ncols=True)
                seen, tic = 0, time.perf_counter()
                for batch in self.loader:
                    self.skipped += batch["skipped"]
                    self.loss_sum += self.train_step(batch)
                    self.loss_count += 1
                    seen += cfg.batch_size * self.world_size
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(cfg.batch_size * self.world_size)
                    end_of_epoch = self.step_in_epoch == self.steps_per_epoch
                    if self.global_step % cfg.frequent == 0 or end_of_epoch:
                        last = self._log(seen, time.perf_counter() - tic, bar)
                        self.loss_sum.zero_()
                        self.loss_count, seen, tic = 0, 0, time.perf_counter()
                    if end_of_epoch:
                        self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if self.global_step % cfg.verbose == 0 or self.global_step == self.total_steps:
                        last.update(self.validate())
                    if end_of_epoch or (cfg.save_every_steps and
                                        self.global_step % cfg.save_every_steps == 0):
                        self.save_checkpoint()
                    if end_of_epoch:
                        self.save_model()
                        break
                bar.close()
        finally:
            if self.writer is not None:
                self.writer.close()
            if self.metrics is not None:
                self.metrics.close()
        if self.skipped:
            log.warning("skipped %d bad samples (--skip-bad)", self.skipped)
        last["skipped"] = self.skipped
        return last

    def _log(self, seen: int, seconds: float, bar: tqdm) -> dict[str, Any]:
        loss = float(self.loss_sum) / max(self.loss_count, 1)  # one device sync per interval
        lr = self.scheduler.get_last_lr()[0]
        speed = seen / max(seconds, 1e-9)
        row = {"step": self.global_step, "epoch": self.epoch, "loss": loss, "lr": lr,
               "samples_per_s": speed, "skipped": self.skipped}
        if self.is_main:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", refresh=False)
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, self.global_step)
                self.writer.add_scalar("train/lr", lr, self.global_step)
                self.writer.add_scalar("train/samples_per_s", speed, self.global_step)
            self._record(row)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.global_step}")
        return row
