"""The training loop every trainer of the project shares: run folder, exact resume, DDP, AMP.

A trainer is a subclass of :class:`Trainer` that fills in a few hooks; the loop, checkpoints,
logging and process handling are written once here. ``Trainer(cfg).train()`` runs to
``cfg.num_epoch``; ``Trainer(cfg, resume_from=RUN_DIR).train()`` continues a killed run.

**The run folder** (``cfg.output``): ``config.yaml`` (``cfg.to_dict()``), ``checkpoint.pt``
(everything needed to resume: weights, optimizer, scheduler, AMP scaler, every RNG state, the
data position and a fingerprint of the data), ``model.pt`` (a plain state_dict: what
evaluation, export and inference load), ``model.json`` (how to rebuild the model for
``model.pt``), ``metrics.jsonl`` (one JSON row per log interval and per validation, each with
its ``step``) and TensorBoard events in ``tb/``. Files are written atomically
(:func:`parsing.core.io.atomic_save`) and loaded with ``weights_only=True``.

**Exact resume.** The sample order of epoch ``e`` is a function of ``(seed, e)``
(:class:`EpochSampler`), a resume skips the samples already seen, and the checkpoint holds the
torch / numpy / python RNG states and the augmentation generator of every process. With
``cfg.deterministic`` on the CPU, a run killed and resumed ends with the same weights, bit for
bit, and the same ``metrics.jsonl`` rows as one never interrupted, with any number of loader
workers, as long as the dataset itself does nothing random (or draws from a seed of its own,
as :class:`parsing.parser.data.SeededSamples` does).

**Processes.** Under ``torchrun`` every process builds the same trainer; :meth:`Trainer.ddp`
wraps a module in DistributedDataParallel (NCCL on GPU, gloo on CPU), rank 0 writes the run
folder and gathers the per-process states into the checkpoint.

**The config** is any object with ``seed``, ``batch_size`` (per process), ``num_epoch``,
``num_workers``, ``output``, ``device`` (``None``: ``cuda:LOCAL_RANK`` if there is a GPU),
``deterministic`` and ``to_dict()`` (:class:`RunConfig`).

**Hooks** (a subclass overrides these; the defaults say what is optional):

* ``build_data() -> Dataset``: the training set. ``collate_fn``, ``drop_last`` (class
  attributes) shape the batches; a batch that is a dict may carry ``"skipped"`` (samples that
  could not be read), which the loop counts.
* ``build_model()``: create the modules on ``self.device``, the trained one as ``self.model``
  (``self.ddp(module)`` wraps one for several processes; ``train_modules()`` lists them all if
  there are more, such as a separate head). Seeded with ``cfg.seed`` on every process, so all
  start equal. Frozen modules (a teacher) stay out of ``train_modules()``.
* ``build_optimizer() -> (optimizer, scheduler or None)``: the scheduler is stepped once per
  optimisation step; ``self.steps_per_epoch`` and ``self.total_steps`` are known by then.
* ``train_step(batch) -> loss`` or ``(loss, {name: scalar tensor})``: the forward pass on one
  batch (use ``with self.autocast():`` for mixed precision). The loop does the backward pass,
  :meth:`Trainer.clip_gradients`, the optimizer, scaler and scheduler steps. The named scalars
  are averaged over each log interval like the loss. ``None`` skips the batch.
* ``validate() -> {name: float}`` (default: nothing): run every ``val_every`` steps (``None``:
  at the end of each epoch) and at the last step, with ``train_modules()`` in eval mode; the
  loop logs the results to
  ``metrics.jsonl`` and TensorBoard (``val/<name>``).
* ``model_info() -> dict`` and ``model_state() -> state_dict`` (default: ``self.model``'s):
  what ``model.json`` and ``model.pt`` hold, written at the end of every epoch by
  :meth:`Trainer.save_model` (override it to keep, say, the best validated weights instead of
  the last).
* ``shared_state() / load_shared_state(state)``: rank 0's part of the checkpoint (default:
  the ``model_state()`` weights and the optimizer state); ``rank_state() /
  load_rank_state(own, ranks)``: the part each process keeps for itself (sharded heads, ...).
* ``data_fingerprint() -> dict | None``: saved in the checkpoint; :meth:`Trainer.check_data`
  refuses a resume on other data unless ``allow_data_change``.
* ``amp_dtype() -> torch.dtype | None``: mixed precision (a float16 run gets a GradScaler).
* ``log_every``, ``val_every``, ``save_every_steps`` (properties or attributes): intervals in
  optimisation steps; ``save_every_steps = 0`` checkpoints at the end of each epoch only.

A single-label or multi-label classifier, for instance, is ``build_data`` (a dataset of
images and targets), ``build_model`` (backbone + linear head), ``build_optimizer`` and a
``train_step`` returning its cross-entropy or BCE loss, with ``validate`` returning accuracy
or mAP and ``model_info`` naming the backbone and the classes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sized
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter

from parsing.core.errors import DataError, InputError
from parsing.core.io import (
    MODEL,
    atomic_save,
    atomic_write,
    load_checkpoint,
    remove_stale_temporaries,
    write_model,
)
from parsing.core.progress import progress_bar

__all__ = [
    "CHECKPOINT", "CONFIG", "METRICS", "MODEL", "MODEL_INFO", "EpochSampler", "PolyWarmup",
    "RunConfig", "Trainer", "restore_rng_state", "rng_state", "setup_distributed",
    "teardown_distributed", "to_cpu", "unwrap",
]

log = logging.getLogger(__name__)

#: The files of a run folder (``model.pt`` and ``model.json``: :func:`parsing.core.io.write_model`).
CONFIG, CHECKPOINT, METRICS = "config.yaml", "checkpoint.pt", "metrics.jsonl"
MODEL_INFO = Path(MODEL).with_suffix(".json").name


class RunConfig(Protocol):
    """What :class:`Trainer` reads from a config (the task's dataclass has more)."""

    seed: int
    batch_size: int
    num_epoch: int
    num_workers: int
    output: str
    device: str | None
    deterministic: bool

    def to_dict(self) -> dict[str, Any]: ...


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
    """``DistributedSampler`` order for (seed, epoch), started ``skip`` samples in (resume).

    ``drop_last`` drops the tail that does not divide evenly over the processes.
    """

    def __init__(self, dataset: Sized, world_size: int, rank: int, seed: int,
                 drop_last: bool = True) -> None:
        self.inner = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                        shuffle=True, seed=seed, drop_last=drop_last)
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.inner)[self.skip:])

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    """The torch, numpy, python (and CUDA) RNG states and ``generator``'s, as tensors and
    plain values (loadable with ``weights_only=True``)."""
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


def restore_rng_state(state: dict[str, Any], generator: torch.Generator,
                      device: torch.device) -> None:
    """Undo :func:`rng_state`."""
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


def to_cpu(obj: Any) -> Any:
    """Tensors in nested dicts / lists / tuples detached and moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the module itself)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group under torchrun.

    ``device=None`` is ``cuda:LOCAL_RANK`` when a GPU is visible, else the CPU; ``"cuda"``
    without an index is also this process's GPU.
    """
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = torch.device(device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return rank, world_size, dev


def teardown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


class Trainer:
    """One training run (one process of it under torchrun): build, train, checkpoint, resume.

    See the module docstring for the hooks a subclass fills in. ``resume_from`` is a run
    folder; ``overwrite`` starts a new run in a folder that holds one;
    ``allow_data_change`` resumes on data whose fingerprint differs.
    """

    #: ``checkpoint.pt``'s format tag: a resume refuses any other.
    checkpoint_format: str = "fserasing.train/1"
    #: what the errors call the command (``--resume`` of which trainer).
    name: str = "train"
    collate_fn: Any = None
    drop_last: bool = True
    log_every: int = 20
    val_every: int | None = None
    save_every_steps: int = 0
    #: whether loader workers outlive an epoch (datasets that need ``on_epoch_start`` in the
    #: workers set this to False)
    persistent_workers: bool = True

    def __init__(self, cfg: RunConfig, resume_from: str | os.PathLike | None = None,
                 overwrite: bool = False, allow_data_change: bool = False) -> None:
        self.cfg = cfg
        self.allow_data_change = allow_data_change
        self.rank, self.world_size, self.device = setup_distributed(cfg.device)
        self.is_main = self.rank == 0
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.out = Path(cfg.output)

        self.dataset = self.build_data()
        self._build_loader()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.build_model()
        self.optimizer, self.scheduler = self.build_optimizer()
        dtype = self.amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
        # per-rank randomness (dropout, sampling, augmentation) after the shared init
        torch.manual_seed(cfg.seed + self.rank)
        np.random.seed((cfg.seed + self.rank) % 2**32)
        random.seed(cfg.seed + self.rank)
        self.generator = torch.Generator(self.device).manual_seed(
            (cfg.seed << 16) + self.rank + 1)

        self.writer: SummaryWriter | None = None  # opened by train() on rank 0
        self.metrics: Any = None
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        # this process's sums since the last metrics row, and its skipped samples (checkpointed)
        self.loss_sum, self.loss_count, self.skipped = torch.zeros((), device=self.device), 0, 0
        self.scalar_sums: dict[str, torch.Tensor] = {}
        self.resumed = resume_from is not None
        if resume_from is not None:
            self.load_checkpoint(Path(resume_from) / CHECKPOINT)
        elif (self.out / CHECKPOINT).is_file() and not overwrite:
            raise InputError(f"{self.out} already holds a run: continue it with --resume "
                             f"{self.out}, or give another --out")

    # -- hooks -----------------------------------------------------------------------------
    def build_data(self) -> Dataset:
        """The training set."""
        raise NotImplementedError

    def build_model(self) -> None:
        """Create the modules on ``self.device`` (``self.ddp`` wraps one for DDP)."""
        raise NotImplementedError

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        """(optimizer, per-step LR scheduler or None)."""
        raise NotImplementedError

    def train_step(self, batch: Any) -> torch.Tensor | tuple[torch.Tensor, dict] | None:
        """The loss of one batch (the loop does backward and the optimizer step)."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation scores (logged by the loop); none by default."""
        return {}

    def model_state(self) -> dict[str, torch.Tensor]:
        """What ``model.pt`` holds: ``self.model``'s state_dict (without the DDP wrapper)."""
        return unwrap(self.model).state_dict()

    def model_info(self) -> dict[str, Any]:
        """What ``model.json`` holds: how to rebuild the model for ``model.pt``."""
        return {}

    def shared_state(self) -> dict[str, Any]:
        """Rank 0's part of the checkpoint: the model weights and the optimizer state."""
        return {"model": self.model_state(), "optimizer": self.optimizer.state_dict()}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`shared_state` (default: the weights into ``self.model``, the
        optimizer state)."""
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def rank_state(self) -> dict[str, Any]:
        """The part of the checkpoint each process keeps for itself (none by default)."""
        return {}

    def load_rank_state(self, own: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
        """Restore :meth:`rank_state` (``ranks``: every process's, for shared entries)."""

    def data_fingerprint(self) -> dict[str, Any] | None:
        """What identifies the training data (checked on resume); ``None``: not checked."""
        return None

    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype for mixed precision, or None (float32)."""
        return None

    def train_modules(self) -> list[nn.Module]:
        """The modules in training mode while training, in eval mode while validating
        (default: ``self.model``)."""
        return [self.model]

    def clip_gradients(self) -> None:
        """Called after backward, gradients unscaled (nothing by default)."""

    # -- helpers for the hooks -------------------------------------------------------------
    def ddp(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped in DistributedDataParallel when there are several processes."""
        if self.world_size == 1:
            return module
        return DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def autocast(self) -> AbstractContextManager:
        """``torch.autocast`` with :meth:`amp_dtype` (a no-op without mixed precision)."""
        dtype = self.amp_dtype()
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch's loader iterator is created."""

    def _build_loader(self) -> None:
        cfg = self.cfg
        self.sampler = EpochSampler(self.dataset, self.world_size, self.rank, cfg.seed,
                                    self.drop_last)
        per_rank = len(self.sampler.inner)
        self.steps_per_epoch = (per_rank // cfg.batch_size if self.drop_last
                                else math.ceil(per_rank / cfg.batch_size))
        if self.steps_per_epoch == 0:
            raise InputError(f"{len(self.dataset)} training samples are fewer than one batch of "
                             f"{cfg.batch_size} x {self.world_size} processes")
        self.total_steps = self.steps_per_epoch * cfg.num_epoch
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler,
            drop_last=self.drop_last, num_workers=cfg.num_workers, collate_fn=self.collate_fn,
            persistent_workers=cfg.num_workers > 0 and self.persistent_workers,
            pin_memory=self.device.type == "cuda",
            # its own generator: creating an iterator must not consume the global RNG
            generator=torch.Generator().manual_seed(cfg.seed))

    # -- checkpoints -----------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any] | None:
        """The full training state (on rank 0; ``None`` on the others), gathered to CPU."""
        own = to_cpu({**self.rank_state(), "rng": rng_state(self.generator, self.device),
                      "log": {"loss_sum": self.loss_sum, "loss_count": self.loss_count,
                              "skipped": self.skipped, "scalars": self.scalar_sums}})
        ranks = [own]
        if self.world_size > 1:
            ranks = [None] * self.world_size if self.is_main else None
            dist.gather_object(own, ranks, dst=0)
        if not self.is_main:
            return None
        return {
            "format": self.checkpoint_format,
            "config": self.cfg.to_dict(),
            "world_size": self.world_size,
            "data": self.data_fingerprint(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            **to_cpu(self.shared_state()),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "ranks": ranks,
        }

    def save_checkpoint(self) -> None:
        state = self.checkpoint_state()
        if state is not None:
            atomic_save(state, self.out / CHECKPOINT)

    def save_model(self) -> None:
        """Write ``model.pt`` and ``model.json`` (rank 0; at the end of each epoch)."""
        if self.is_main:
            write_model(self.out / MODEL, self.model_state(),
                        {**self.model_info(), "epoch": self.epoch,
                         "global_step": self.global_step})

    def load_checkpoint(self, path: Path) -> None:
        state = load_checkpoint(path)
        if not isinstance(state, dict) or state.get("format") != self.checkpoint_format:
            raise DataError(f"{path}: not a {self.name} checkpoint")
        if state["world_size"] != self.world_size:
            raise DataError(f"{path}: written by {state['world_size']} process(es); resume "
                            f"with the same number (got {self.world_size})")
        self.check_data(path, state.get("data"))
        own = state["ranks"][self.rank]
        self.load_shared_state(state)
        self.load_rank_state(own, state["ranks"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # empty when saved without float16 AMP (e.g. begun on the CPU)
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(own["rng"], self.generator, self.device)
        self.loss_sum = own["log"]["loss_sum"].to(self.device)
        self.loss_count, self.skipped = own["log"]["loss_count"], own["log"]["skipped"]
        self.scalar_sums = {k: v.to(self.device)
                            for k, v in own["log"].get("scalars", {}).items()}
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        log.info("resumed %s at epoch %d step %d (global step %d)", path, self.epoch,
                 self.step_in_epoch, self.global_step)

    def check_data(self, path: Path, saved: dict[str, Any] | None) -> None:
        """Refuse to resume on other data than the run's, unless ``allow_data_change``."""
        if saved is None:
            return
        now = self.data_fingerprint()
        if saved != now and not self.allow_data_change:
            raise DataError(f"{path}: the run was trained on other data ({saved}; now {now}); "
                            "pass --allow-data-change to continue on it")

    def _open_metrics(self) -> Any:
        """``metrics.jsonl`` for appending; a resumed run drops the rows logged after its
        checkpoint (they are logged again), a new run starts it empty."""
        path = self.out / METRICS
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

    def record(self, row: dict[str, Any]) -> None:
        """Append a row to ``metrics.jsonl`` (rank 0)."""
        if self.metrics is not None:
            self.metrics.write(json.dumps(row) + "\n")
            self.metrics.flush()

    # -- training --------------------------------------------------------------------------
    def optimize_step(self, batch: Any) -> torch.Tensor | None:
        """One optimisation step on a collated batch; returns the (detached) loss, or None
        if ``train_step`` skipped the batch."""
        out = self.train_step(batch)
        if out is None:
            return None
        loss, scalars = out if isinstance(out, tuple) else (out, {})
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        self.clip_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        for name, value in scalars.items():
            value = value.detach().float()
            self.scalar_sums[name] = self.scalar_sums.get(name, 0) + value
        return loss.detach()

    def _run_validation(self) -> dict[str, float]:
        results = self.validate()
        if results:
            if self.writer is not None:
                for name, value in results.items():
                    if value is not None:
                        self.writer.add_scalar(f"val/{name}", value, self.global_step)
            self.record({"step": self.global_step, **results})
        return results

    def _open_run_folder(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        for tmp in remove_stale_temporaries(self.out, (CHECKPOINT, MODEL, MODEL_INFO)):
            log.info("removed %s, left by an interrupted save", tmp)
        with atomic_write(self.out / CONFIG, "w") as f:
            f.write(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        self.writer = SummaryWriter(str(self.out / "tb"),
                                    purge_step=self.global_step + 1 if self.resumed else None)
        self.metrics = self._open_metrics()

    def train(self) -> dict[str, Any]:
        """Run to ``num_epoch``; returns the last logged metrics (and ``skipped``)."""
        cfg = self.cfg
        self.model_train(True)
        last: dict[str, Any] = {}
        if self.is_main:
            self._open_run_folder()
        step_samples = cfg.batch_size * self.world_size
        try:
            while self.epoch < cfg.num_epoch:
                self.sampler.set_position(self.epoch, self.step_in_epoch * cfg.batch_size)
                self.on_epoch_start(self.epoch)
                total = len(self.sampler.inner) * self.world_size
                bar = progress_bar(total=total, initial=self.step_in_epoch * step_samples,
                                   desc=f"epoch {self.epoch + 1}/{cfg.num_epoch}", unit="img",
                                   unit_scale=True, disable=not self.is_main, dynamic_ncols=True)
                seen, tic = 0, time.perf_counter()
                for batch in self.loader:
                    if isinstance(batch, dict):
                        self.skipped += batch.get("skipped", 0)
                    loss = self.optimize_step(batch)
                    if loss is not None:
                        self.loss_sum += loss
                        self.loss_count += 1
                    seen += step_samples
                    self.step_in_epoch += 1
                    self.global_step += 1
                    bar.update(step_samples)
                    end_of_epoch = self.step_in_epoch == self.steps_per_epoch
                    if self.global_step % self.log_every == 0 or end_of_epoch:
                        last = self._log(seen, time.perf_counter() - tic, bar)
                        self.loss_sum.zero_()
                        self.scalar_sums = {}
                        self.loss_count, seen, tic = 0, 0, time.perf_counter()
                    if end_of_epoch:
                        self.epoch, self.step_in_epoch = self.epoch + 1, 0
                    if (self.global_step == self.total_steps
                            or (self.val_every is None and end_of_epoch)
                            or (self.val_every and self.global_step % self.val_every == 0)):
                        self.model_train(False)
                        last.update(self._run_validation())
                        self.model_train(True)
                    if end_of_epoch:
                        # model.pt before the checkpoint: a run killed between the two redoes
                        # the epoch and writes the same model.pt again
                        self.save_model()
                    if end_of_epoch or (self.save_every_steps and
                                        self.global_step % self.save_every_steps == 0):
                        self.save_checkpoint()
                    if end_of_epoch:
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

    def model_train(self, mode: bool) -> None:
        """Put :meth:`train_modules` in training (or eval) mode."""
        for module in self.train_modules():
            module.train(mode)

    def _log(self, seen: int, seconds: float, bar: Any) -> dict[str, Any]:
        count = max(self.loss_count, 1)
        loss = float(self.loss_sum) / count  # one device sync per interval
        lr = (self.scheduler.get_last_lr()[0] if self.scheduler is not None
              else self.optimizer.param_groups[0]["lr"])
        speed = seen / max(seconds, 1e-9)
        row = {"step": self.global_step, "epoch": self.epoch, "loss": loss, "lr": lr,
               "samples_per_s": speed, "skipped": self.skipped}
        row.update({name: float(value) / count for name, value in self.scalar_sums.items()})
        if self.is_main:
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}", refresh=False)
            if self.writer is not None:
                for name in ("loss", "lr", "samples_per_s", *self.scalar_sums):
                    self.writer.add_scalar(f"train/{name}", row[name], self.global_step)
            self.record(row)
        if not math.isfinite(loss):
            raise FloatingPointError(f"loss is {loss} at step {self.global_step}")
        return row
