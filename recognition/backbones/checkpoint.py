"""Backbone weights from insightface ``.pth`` files and training checkpoints."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from parsing.core.errors import DataError
from parsing.core.io import load_checkpoint

# Where a training checkpoint dict keeps the backbone: ours, then insightface's train_v2.py.
BACKBONE_KEYS = ("backbone", "state_dict_backbone")


def backbone_state_dict(checkpoint: Mapping, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The backbone state_dict inside a loaded checkpoint.

    Accepts a plain state_dict (insightface ``backbone.pth``) or a training checkpoint dict
    holding it under ``"backbone"`` (``recognition.train``) or ``"state_dict_backbone"``
    (insightface ``checkpoint_gpu_0.pt``). A ``module.`` prefix left by DDP is removed.
    ``source`` names the file in errors.
    """
    if not isinstance(checkpoint, Mapping):
        raise DataError(f"{source}: expected a state_dict or a checkpoint dict, "
                        f"got {type(checkpoint).__name__}")
    for key in BACKBONE_KEYS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    if not checkpoint or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        keys = ", ".join(list(map(str, checkpoint))[:8])
        raise DataError(f"{source}: no backbone weights found: not a state_dict and no "
                        f"{' / '.join(BACKBONE_KEYS)} entry (top-level keys: {keys})")
    if all(k.startswith("module.") for k in checkpoint):
        checkpoint = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    return dict(checkpoint)


def load_backbone_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint file into ``model`` strictly; mismatches name the file and keys."""
    state = backbone_state_dict(load_checkpoint(path), path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
                   if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected),
                             ("wrong shape", wrong_shape)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
        raise DataError(f"{path}: does not fit {type(model).__name__}: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model
