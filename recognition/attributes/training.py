"""Train an attribute/expression model with the recognition trainer's machinery.

:class:`AttributeTrainer` is :class:`recognition.training.trainer.Trainer` (the shared loop of
:mod:`parsing.core.training`: run folder, exact resume, DDP, AMP, TensorBoard, the
recognition trainer's imports, device-side augmentation and masks) with the model, loss and
validation of attributes: an :class:`~recognition.attributes.models.AttributeNet`, binary
cross-entropy over the attributes plus ``expression_weight`` x cross-entropy over the
expressions, and the mean accuracy, mean balanced accuracy and expression accuracy of the
``val_split`` of the same data set at each validation.

The config is :class:`AttributeConfig`: ``ImageTrainConfig``'s fields (``rec`` is a
``KIND:PATH`` spec of :mod:`recognition.attributes.data`) plus the attention block, an optional
backbone checkpoint and the validation split; a recognizer's margin-loss and PartialFC fields
are not among them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from parsing.core.errors import DataError, InputError
from parsing.core.training import Trainer as BaseTrainer
from recognition.attributes.data import SPLITS, AttributeDataset, open_attribute_dataset
from recognition.attributes.evaluation import evaluate
from recognition.attributes.models import (
    create_attribute_model,
    list_attentions,
    model_info,
)
from recognition.training.config import ImageTrainConfig
from recognition.training.trainer import Trainer

__all__ = ["AttributeConfig", "AttributeTrainer"]

log = logging.getLogger(__name__)


@dataclass
class AttributeConfig(ImageTrainConfig):
    """``ImageTrainConfig`` plus what an attribute model needs (``rec``: ``KIND:PATH``)."""

    attention: str | None = None  #: channel attention block: gc | se | None ("none")
    attention_kwargs: dict[str, Any] = field(default_factory=dict)  #: e.g. {"reduction": 8}
    backbone_checkpoint: str | None = None  #: initial backbone weights (a recognizer's model.pt)
    expression_weight: float = 1.0  #: weight of the expression loss beside the attribute loss
    split: str = "train"  #: the split trained on
    val_split: str | None = "val"  #: the split validated on (None or "none": no validation)

    def validate(self) -> None:
        super().validate()
        # "none" lets a flag or a YAML file unset what a config file or a resumed run set
        if self.attention == "none":
            self.attention = None
        if self.val_split == "none":
            self.val_split = None
        if self.attention is not None and self.attention not in list_attentions():
            raise InputError(f"attention must be one of {', '.join(list_attentions())}, got "
                             f"{self.attention!r}")
        for name in ("split", "val_split"):
            value = getattr(self, name)
            if value is not None and value not in (*SPLITS, "all"):
                raise InputError(f"{name} must be train, val, test or all, got {value!r}")
        if not self.expression_weight >= 0:
            raise InputError(f"expression_weight must be >= 0, got {self.expression_weight}")


class AttributeTrainer(Trainer):
    """The recognition trainer with an attribute model, its losses and its validation."""

    checkpoint_format = "fserasing.recognition.attributes.train/1"
    name = "recognition.attributes.train"
    cfg: AttributeConfig

    def build_data(self) -> AttributeDataset:
        cfg = self.cfg
        if not cfg.rec:
            raise InputError("no training data: give --data KIND:PATH (config field 'rec')")
        masks = None
        if self.augment.needs_masks and not (cfg.masks or "").startswith("parser:"):
            masks = cfg.masks
            if masks is None:
                if not cfg.rec.startswith("synth:"):
                    raise InputError(f"--aug {cfg.aug} needs --masks (a mask store, a mask "
                                     "folder, or parser:CKPT)")
                masks = "labels"
                log.info("%s masks: the synthetic set's own labels_25 maps", cfg.aug)
        elif cfg.masks is not None and not self.augment.needs_masks:
            log.info("--masks given but --aug %s does not use them; not loading", cfg.aug)
        dataset = open_attribute_dataset(cfg.rec, cfg.split, masks=masks, skip_bad=cfg.skip_bad,
                                         size=cfg.image_size)
        if len(dataset) < cfg.batch_size * self.world_size:
            raise InputError(f"{cfg.rec}: {len(dataset)} images are fewer than one batch of "
                             f"{cfg.batch_size} x {self.world_size} processes")
        return dataset

    def build_model(self) -> None:
        """The attribute model (DDP-wrapped as ``model``), masks' parser, validation set."""
        cfg = self.cfg
        if cfg.fp16 and not self.amp:
            log.warning("fp16 is for CUDA; training in float32 on %s", self.device)
        self.network_kwargs = {"num_features": cfg.embedding_size, **cfg.network_kwargs}
        kwargs = dict(self.network_kwargs)
        if self.amp:
            kwargs.update(fp16=True, amp_dtype=getattr(torch, cfg.amp_dtype))
        try:
            self.net = create_attribute_model(
                cfg.network, self.dataset.attribute_names, self.dataset.expression_names,
                cfg.attention, kwargs, cfg.image_size, cfg.backbone_checkpoint,
                attention_kwargs=cfg.attention_kwargs).to(self.device)
        except TypeError as exc:
            raise InputError(f"network {cfg.network!r} with {kwargs}: {exc}") from None
        if cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.backbone = self.net  # what the recognition trainer clips
        self.model: nn.Module = self.ddp(self.net)
        if (cfg.masks or "").startswith("parser:"):
            self.augment.parser = self._build_parser()
        self.augment.to(self.device)
        self.val_set = self._validation_set() if self.is_main else None

    def _validation_set(self) -> AttributeDataset | None:
        cfg = self.cfg
        if cfg.val_split is None:
            return None
        try:
            return open_attribute_dataset(cfg.rec, cfg.val_split, skip_bad=cfg.skip_bad,
                                          size=cfg.image_size)
        except InputError as exc:  # e.g. RAF-DB has no validation split
            log.warning("no validation: %s", exc)
            return None

    def param_groups(self) -> list[dict[str, Any]]:
        return [{"params": self.net.parameters()}]

    def train_modules(self) -> list[nn.Module]:
        return [self.model]

    # -- checkpoints -----------------------------------------------------------------------
    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def model_info(self) -> dict[str, Any]:
        return model_info(self.net, self.cfg.network, self.network_kwargs, self.cfg.imports)

    def shared_state(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_shared_state(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def rank_state(self) -> dict[str, Any]:
        return {}

    def load_rank_state(self, own: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
        return None

    def check_data(self, path: Path, saved: dict[str, Any] | None) -> None:
        if saved is not None and (saved["attributes"], saved["expressions"]) != (
                self.dataset.attribute_names, self.dataset.expression_names):
            raise DataError(f"{path}: the run was trained on other labels "
                            f"({saved['attributes'] + saved['expressions']}); start a new run")
        BaseTrainer.check_data(self, path, saved)

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """BCE over the attributes + ``expression_weight`` x CE over the expressions."""
        images = batch["image"].to(self.device, non_blocking=True)
        masks = batch["mask"].to(self.device, non_blocking=True) if "mask" in batch else None
        x = self.augment(images, masks, self.generator)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.model(x)
        attr_logits, expr_logits = self.net.split(logits.float())
        parts: dict[str, torch.Tensor] = {}
        if "attributes" in batch:
            parts["attribute_loss"] = F.binary_cross_entropy_with_logits(
                attr_logits, batch["attributes"].to(self.device))
        if "expression" in batch:
            parts["expression_loss"] = F.cross_entropy(
                expr_logits, batch["expression"].to(self.device))
        loss = parts.get("attribute_loss", 0.0) + self.cfg.expression_weight * parts.get(
            "expression_loss", 0.0)
        return loss, parts

    def validate(self) -> dict[str, float]:
        if self.val_set is None:
            return {}
        result = evaluate(self.net, self.val_set, self.cfg.batch_size, progress=False)
        scores = {k: result[k] for k in ("mean_accuracy", "mean_balanced_accuracy")
                  if k in result}
        if "expression" in result:
            scores["expression_accuracy"] = result["expression"]["accuracy"]
            scores["expression_mean_class_accuracy"] = result["expression"][
                "mean_class_accuracy"]
        log.info("step %d %s: %s", self.global_step, self.cfg.val_split,
                 ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return scores
