"""Training configuration: insightface ``arcface_torch`` field names, YAML files, CLI overrides.

Fields that exist in insightface's configs keep their names and meaning (``network``,
``margin_list``, ``embedding_size``, ``sample_rate``, ``fp16``, ``batch_size`` (per process),
``lr``, ``num_epoch``, ``warmup_epoch``, ``rec``, ``num_classes``, ...). insightface-only
switches we do not use (``dali``, ``using_wandb``, ...) are accepted in YAML and ignored with a
warning; any other unknown key is an error.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from parsing.core.cli import device as device_type
from parsing.core.config import Config
from parsing.core.config import load_config as load_dataclass
from parsing.core.errors import InputError

__all__ = ["LOSS_MARGINS", "ImageTrainConfig", "TrainConfig", "load_config"]

log = logging.getLogger(__name__)

#: (m1, m2, m3) of the named losses; ``combined`` takes ``margin_list`` as given.
LOSS_MARGINS = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.4)}
_IGNORED_INSIGHTFACE_KEYS = {
    "dali", "dali_aug", "using_wandb", "wandb_key", "wandb_entity", "wandb_project",
    "wandb_log_all", "wandb_resume", "save_artifacts", "suffix_run_name", "notes", "num_image",
    "save_all_states", "loss_w",
}


@dataclass
class ImageTrainConfig(Config):
    """What every image trainer on :class:`recognition.training.trainer.Trainer` depends on
    (saved in the run folder and the checkpoint): data, backbone, augmentation, optimisation,
    devices. :class:`TrainConfig` adds the recognizer's margin loss and PartialFC head."""

    # -- insightface arcface_torch names --
    rec: str = ""  #: training data: ImageFolder, folder with train.rec, or parsing.synth folder
    network: str = "iresnet34"
    embedding_size: int = 512
    fp16: bool = False  #: mixed precision on CUDA (see amp_dtype)
    batch_size: int = 128  #: per process
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    num_epoch: int = 20
    warmup_epoch: int = 0
    gradient_acc: int = 1
    seed: int = 2048
    num_workers: int = 2
    frequent: int = 10  #: log every this many steps
    verbose: int = 2000  #: validate every this many steps (and at the end)
    output: str = "runs/train"
    resume: bool = False
    # -- ours --
    network_kwargs: dict[str, Any] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)  #: modules to import (custom backbones)
    aug: str = "none"  #: fserasing.augment name: none | fserasing | random-erasing | cutout
    masks: str | None = None  #: folder / tensor file / "parser:CKPT" / "labels" (synth)
    fserasing: dict[str, Any] = field(default_factory=lambda: {"p": 0.5, "n_erase": [1, 3]})
    random_erasing: dict[str, Any] = field(default_factory=lambda: {"p": 0.5})
    cutout: dict[str, Any] = field(default_factory=lambda: {"p": 0.5, "size": 48})
    flip: bool = True  #: random horizontal flip (masks flipped with left/right ids swapped)
    amp_dtype: str = "float16"  #: float16 (with GradScaler) | bfloat16
    channels_last: bool = False
    clip_grad_norm: float = 5.0  #: as insightface; 0 disables
    save_every_steps: int = 0  #: 0: checkpoint at the end of each epoch only
    deterministic: bool = False  #: torch.use_deterministic_algorithms (exact resume on CPU)
    skip_bad: bool = False
    device: str | None = None  #: default: cuda:LOCAL_RANK if available, else cpu
    image_size: int = 112

    def validate(self) -> None:
        """Raise InputError naming the first bad field (numbers are coerced before)."""
        if self.optimizer not in ("sgd", "adamw"):
            raise InputError(f"optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.amp_dtype not in ("float16", "bfloat16"):
            raise InputError(f"amp_dtype must be float16 or bfloat16, got {self.amp_dtype!r}")
        if self.gradient_acc != 1:
            raise InputError("gradient_acc other than 1 is not supported")
        for name in ("batch_size", "num_epoch", "embedding_size", "frequent", "verbose"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_epoch < 0 or self.warmup_epoch > self.num_epoch:
            raise InputError(f"warmup_epoch must be in 0..num_epoch, got {self.warmup_epoch}")
        if self.save_every_steps < 0 or self.num_workers < 0:
            raise InputError("save_every_steps and num_workers must be >= 0")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"lr must be a positive number, got {self.lr}")
        for name in ("momentum", "weight_decay", "clip_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise InputError(f"{name} must be a number >= 0, got {getattr(self, name)}")
        if self.image_size < 16:
            raise InputError(f"image_size must be >= 16, got {self.image_size}")
        if self.device is not None:
            try:
                device_type(str(self.device))
            except argparse.ArgumentTypeError as exc:
                raise InputError(f"device: {exc}") from None

    def aug_options(self) -> dict[str, Any]:
        """Options of ``aug``: the field named after it (``random-erasing``: ``random_erasing``),
        empty if there is none."""
        options = getattr(self, self.aug.replace("-", "_"), None)
        return dict(options) if isinstance(options, dict) else {}


@dataclass
class TrainConfig(ImageTrainConfig):
    """A recognizer's training run: :class:`ImageTrainConfig` plus the margin loss, the
    PartialFC head and the verification sets validated on."""

    # -- insightface arcface_torch names --
    margin_list: tuple[float, float, float] | None = None  #: (m1, m2, m3); default from loss
    sample_rate: float = 1.0  #: PartialFC: fraction of class centres per step (1 = all)
    interclass_filtering_threshold: float = 0.0
    num_classes: int | None = None  #: default: from the data
    val_targets: list[str] = field(default_factory=list)  #: .bin paths or synth:DIR
    # -- ours --
    loss: str = "arcface"  #: arcface | cosface | combined (combined: margin_list as given)

    @property
    def margins(self) -> tuple[float, float, float]:
        return tuple(self.margin_list) if self.margin_list is not None else LOSS_MARGINS[
            self.loss]

    def validate(self) -> None:
        if self.loss not in (*LOSS_MARGINS, "combined"):
            raise InputError(f"loss must be arcface, cosface or combined, got {self.loss!r}")
        if self.margin_list is not None:
            m = tuple(float(v) for v in self.margin_list)
            if len(m) != 3:
                raise InputError(f"margin_list needs three values m1,m2,m3, got {m}")
            self.margin_list = m
            if self.loss == "arcface" and (m[0] != 1.0 or m[2] != 0.0):
                raise InputError(f"margins {m} are not ArcFace (1, m2, 0); use loss: combined")
            if self.loss == "cosface" and (m[0] != 1.0 or m[1] != 0.0):
                raise InputError(f"margins {m} are not CosFace (1, 0, m3); use loss: combined")
        elif self.loss == "combined":
            raise InputError("loss 'combined' needs margin_list (--margins m1,m2,m3)")
        if not 0.0 < self.sample_rate <= 1.0:
            raise InputError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if not 0.0 <= self.interclass_filtering_threshold < 1.0:
            raise InputError("interclass_filtering_threshold must be in [0, 1), got "
                             f"{self.interclass_filtering_threshold}")
        super().validate()


def load_config(path: str | os.PathLike | None = None,
                config_class: type[ImageTrainConfig] = TrainConfig, **overrides: Any
                ) -> ImageTrainConfig:
    """A TrainConfig (or another ``config_class``, e.g. an attribute model's) from a YAML file
    (insightface field names) with ``overrides`` on top.

    ``None`` overrides are ignored, so unset command-line flags keep the file's values.
    """
    cfg = load_dataclass(config_class, path, ignored=_IGNORED_INSIGHTFACE_KEYS,
                         ignored_as="insightface field", **overrides)
    if isinstance(cfg.rec, list):
        raise InputError(f"{path}: multi-dataset 'rec' lists are not supported; give one path")
    return cfg
