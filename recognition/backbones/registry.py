"""Backbone registry: ``create_backbone("iresnet34")``, ``create_backbone("timm:resnet18")``."""

from __future__ import annotations

import os
from collections.abc import Callable

from torch import nn

from parsing.core.errors import InputError, MissingDependencyError
from parsing.core.registry import Registry
from recognition.backbones.checkpoint import load_backbone_weights
from recognition.backbones.timm_backbone import TimmBackbone

_BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", "or 'timm:<model name>'")
# insightface's config names (``config.network = "r50"``) resolve to ours.
_ALIASES = {
    "r18": "iresnet18",
    "r34": "iresnet34",
    "r50": "iresnet50",
    "r100": "iresnet100",
    "r200": "iresnet200",
}
TIMM_PREFIX = "timm:"


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a backbone constructor under its function name (timm style decorator)."""
    return _BACKBONES.register(fn)


def require_backbone(name: str, imports: list[str], source: str) -> None:
    """A :class:`MissingDependencyError` saying which ``--import`` to give when ``name`` is not
    a known backbone but the run that made ``source`` (a ``model.json``) imported ``imports``."""
    if imports and not name.startswith(TIMM_PREFIX) and _ALIASES.get(name, name) not in _BACKBONES:
        raise MissingDependencyError(
            f"{source}: backbone {name!r} was registered by the run's --import "
            f"{' --import '.join(imports)}; give the same --import")


def list_backbones(pattern: str = "*") -> list[str]:
    """Sorted names of the registered backbones matching a shell-style ``pattern``.

    Any timm model is also available as ``"timm:<name>"`` (see ``timm.list_models``).
    """
    return _BACKBONES.names(pattern)


def create_backbone(name: str, checkpoint_path: str | os.PathLike | None = None,
                    **kwargs) -> nn.Module:
    """Build a face-embedding backbone by name.

    Args:
        name: a registered name (``list_backbones()``), an insightface alias (``"r50"``) or
            ``"timm:<model>"`` for any timm model with a 512-d embedding head.
        checkpoint_path: optional weights to load strictly: an insightface ``backbone.pth``
            or a training checkpoint (see ``backbones.checkpoint.backbone_state_dict``).
        **kwargs: passed to the constructor (e.g. ``num_features``, ``dropout``, ``fp16``).

    Returns:
        An ``nn.Module`` mapping (B, 3, 112, 112) images normalised with mean = std = 0.5 to
        (B, num_features) raw, unnormalised embeddings.
    """
    if name.startswith(TIMM_PREFIX):
        model = TimmBackbone(name[len(TIMM_PREFIX):], **kwargs)
    else:
        key = _ALIASES.get(name, name)
        try:
            model = _BACKBONES.create(key, **kwargs)
        except TypeError as exc:  # an unknown or missing keyword argument
            if "argument" not in str(exc):
                raise
            raise InputError(f"backbone {name!r}: {exc}") from None
    if checkpoint_path is not None:
        load_backbone_weights(model, checkpoint_path)
    return model
