"""Running a trained parser: ``Parser.from_checkpoint(path)(images) -> label maps``."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from parsing.core.errors import DataError, InputError
from parsing.core.io import MODEL, read_image, read_model, write_model
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.pixels import normalise
from parsing.core.samples import BadSample
from parsing.parser.models import create_model, fuse_batchnorm

__all__ = ["ImageFiles", "Parser", "default_device", "model_from_checkpoint", "parser_info",
           "save_parser"]

_REQUIRED_KEYS = ("model_name", "model_kwargs", "num_classes", "label_set")


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"`` (the CLIs' ``--device`` default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def parser_info(model_name: str, model_kwargs: dict[str, Any], label_set: str | LabelSet,
                image_size: int | None = None) -> dict[str, Any]:
    """What ``model.json`` says about a parser: how to rebuild it and what it predicts."""
    ls = get_label_set(label_set)
    return {"model_name": model_name, "model_kwargs": model_kwargs,
            "num_classes": ls.num_classes, "label_set": ls.key, "image_size": image_size}


def save_parser(path: str | os.PathLike, model: nn.Module, model_name: str,
                model_kwargs: dict[str, Any], label_set: str | LabelSet = "fse25",
                image_size: int | None = None) -> Path:
    """Write ``model`` as ``parsing.train`` does: ``path`` (a folder gets ``model.pt``) and the
    JSON beside it; :meth:`Parser.from_checkpoint` loads either. Returns the weights file."""
    path = Path(path)
    if path.suffix != ".pt":
        path = path / MODEL
    write_model(path, model.state_dict(),
                parser_info(model_name, model_kwargs, label_set, image_size))
    return path


def model_from_checkpoint(checkpoint: str | os.PathLike,
                          device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a ``parsing.train`` model (eval mode); returns it and its ``model.json``.

    ``checkpoint`` is a run folder or its ``model.pt`` (read with the ``model.json`` beside
    it; any ``X.pt`` with its ``X.json``). A single file holding a dict with the weights under
    ``"model"`` and the same metadata (what ``parsing.train`` wrote before run folders) is read
    too; its training arguments (``"args"``) are merged into the returned info.
    """
    state, info, where = read_model(checkpoint, device)
    if info is None:
        if not (isinstance(state, dict) and "model" in state and "model_name" in state):
            raise DataError(f"{where}: not a parsing.train model (no "
                            f"{where.with_suffix('.json').name} beside it)")
        legacy = dict(state)
        state = legacy.pop("model")
        info = {**legacy.pop("args", {}), **legacy}
    missing = [k for k in _REQUIRED_KEYS if k not in info]
    if missing:
        raise DataError(f"{where}: not a parsing.train model (missing {', '.join(missing)})")
    name, kwargs, classes = info["model_name"], info["model_kwargs"], info["num_classes"]
    if not (isinstance(name, str) and isinstance(kwargs, dict) and isinstance(state, dict)
            and isinstance(classes, int) and not isinstance(classes, bool) and classes > 0):
        raise DataError(f"{where}: inconsistent metadata (model_name {name!r}, model_kwargs "
                        f"{kwargs!r}, num_classes {classes!r})")
    label_set = get_label_set(info["label_set"])
    if label_set.num_classes != classes:
        raise DataError(f"{where}: num_classes {classes} but label set {label_set.key} has "
                        f"{label_set.num_classes}")
    try:
        model = create_model(name, num_classes=classes, **kwargs)
        model.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        raise DataError(f"{where}: weights and metadata do not fit ({name} with {kwargs}, "
                        f"{classes} classes): {first}") from None
    return model.to(device).eval(), info


class Parser:
    """Batched, gradient-free face parsing on any device.

    ``parser(images)`` takes float (B, 3, H, W) images normalised with mean = std = 0.5 and
    returns (B, H, W) uint8 label maps on the images' device. If ``image_size`` is set and the
    images are another size, they are resized to it and the logits resized back (bilinear).
    ``channels_last`` feeds channels-last inputs, for a model converted with
    ``model.to(memory_format=torch.channels_last)``.
    """

    def __init__(self, model: nn.Module, label_set: str | LabelSet = "fse25",
                 image_size: int | None = None, batch_size: int = 64,
                 channels_last: bool = False) -> None:
        self.model = model.eval()
        self.label_set = get_label_set(label_set)
        self.image_size = image_size
        self.batch_size = batch_size
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "cpu",
                        batch_size: int = 64, fuse: bool = True) -> Parser:
        """Load a ``parsing.train`` model (run folder or ``model.pt``, ``weights_only=True``)
        onto ``device``.

        ``fuse`` folds BatchNorm into the convolutions and runs in channels-last memory format
        (together about 15 % faster on CPU; the same labels up to float rounding).
        """
        model, info = model_from_checkpoint(path, device)
        if fuse:
            fuse_batchnorm(model).to(memory_format=torch.channels_last)
        return cls(model, info["label_set"], info.get("image_size"), batch_size,
                   channels_last=fuse)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, K, H, W) float logits on the images' device."""
        return self._run(images, lambda y: y)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images, lambda y: y.argmax(1).to(torch.uint8))

    @torch.inference_mode()
    def _run(self, images: torch.Tensor,
             reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if not (isinstance(images, torch.Tensor) and images.dim() == 4 and images.shape[1] == 3
                and images.dtype.is_floating_point):
            got = (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                   else type(images).__name__)
            raise InputError(f"Parser expects float (B, 3, H, W) images normalised to [-1, 1], "
                             f"got {got}")
        size = tuple(images.shape[-2:])
        resize = self.image_size is not None and size != (self.image_size, self.image_size)
        out = []
        for chunk in images.split(self.batch_size):
            x = chunk.to(self.device, torch.float32).contiguous(memory_format=self.memory_format)
            if resize:
                x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                                  align_corners=False, antialias=True)
            y = self.model(x)
            if resize:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out.append(reduce(y).to(images.device))
        return torch.cat(out)


class ImageFiles(Dataset):
    """Images as normalised float (3, H, W) tensors with their index; bad files as BadSample."""

    def __init__(self, paths: Sequence[Path], skip_bad: bool = False) -> None:
        self.paths, self.skip_bad = list(paths), skip_bad

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | BadSample:
        try:
            arr = read_image(self.paths[i])
        except DataError as exc:
            if self.skip_bad:
                return BadSample(str(exc))
            raise
        image = torch.from_numpy(np.array(arr)).permute(2, 0, 1)
        return normalise(image), i
