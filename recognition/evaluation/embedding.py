"""Flip-fused face embeddings in batches (insightface's test-time protocol, reference §5.5)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from parsing.core.cli import add_import_argument
from parsing.core.errors import DataError, InputError
from parsing.core.pixels import normalise
from parsing.core.progress import progress_bar
from parsing.core.registry import import_plugins
from recognition.backbones import create_backbone
from recognition.backbones.registry import require_backbone


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """Embeddings of uint8 (B, 3, H, W) faces: ``f(x) + f(flip x)`` (or ``f(x)``), (B, D).

    The image and its mirror go through the model as one batch of 2B.
    """
    x = normalise(images)
    if not flip:
        return model(x)
    out = model(torch.cat([x, x.flip(-1)]))
    return out[:len(x)] + out[len(x):]


@torch.no_grad()
def embed_batches(model: nn.Module, batches: Iterable[torch.Tensor], flip: bool = True,
                  device: torch.device | str = "cpu", total: int | None = None,
                  desc: str = "embed") -> torch.Tensor:
    """Embed an iterable of uint8 image batches with a progress bar -> (N, D) float32, CPU.

    With ``total`` (the number of images) the output is allocated once, not concatenated.
    """
    chunks, out, filled = [], None, 0
    with progress_bar(total=total, desc=desc, unit="img") as bar:
        for images in batches:
            features = embed(model, images.to(device), flip).float().cpu()
            if total is not None:
                if out is None:
                    out = torch.empty(total, features.shape[1])
                out[filled:filled + len(features)] = features
            else:
                chunks.append(features)
            filled += len(features)
            bar.update(len(features))
    if total is not None and filled != total:
        raise InputError(f"{desc}: expected {total} images, got {filled}")
    if out is not None:
        return out
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def image_batches(images: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    """Consecutive batches of an (N, ...) tensor."""
    return (images[s:s + batch_size] for s in range(0, len(images), batch_size))


def load_backbone(checkpoint: str | os.PathLike, network: str | None = None,
                  network_kwargs: dict | None = None, device: torch.device | str = "cpu",
                  imports: Sequence[str] = ()) -> nn.Module:
    """A backbone with the weights of ``checkpoint`` (a plain state_dict or a training
    checkpoint), in eval mode on ``device``.

    ``network`` names it for ``recognition.create_backbone`` (with ``network_kwargs``); if it
    is None, the ``model.json`` that ``recognition.train`` writes beside ``model.pt`` supplies
    the network, its keyword arguments and the embedding size. ``imports``: modules that
    register a custom backbone (``--import``).
    """
    import_plugins(imports)
    kwargs = dict(network_kwargs or {})
    if network is None:
        info_path = Path(checkpoint).with_name("model.json")
        try:
            info = json.loads(info_path.read_text())
            network = info["network"]
        except FileNotFoundError:
            raise InputError(f"give --network: no {info_path} beside the checkpoint") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{info_path}: not a model description ({exc})") from None
        require_backbone(network, info.get("imports") or [], str(info_path))
        kwargs = {"num_features": info.get("embedding_size", 512),
                  **(info.get("network_kwargs") or {}), **kwargs}
    return create_backbone(network, checkpoint_path=checkpoint, **kwargs).to(device).eval()


def network_kwargs_arg(text: str) -> dict:
    """argparse type for ``--network-kwargs '{"num_features": 128}'``."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_backbone_arguments(parser: argparse.ArgumentParser, required: bool = True,
                           flag: str = "--checkpoint") -> None:
    """``flag`` (the weights), ``--network`` and ``--network-kwargs`` for :func:`load_backbone`."""
    parser.add_argument(flag, required=required,
                        help="backbone state_dict (a run's model.pt) or training checkpoint")
    parser.add_argument("--network", help="backbone name for recognition.create_backbone "
                        f"(default: from the model.json beside {flag})")
    parser.add_argument("--network-kwargs", type=network_kwargs_arg, metavar="JSON",
                        help="keyword arguments for the backbone, e.g. '{\"num_features\": 128}'")
    add_import_argument(parser)
