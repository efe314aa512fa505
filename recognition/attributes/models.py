"""Attribute and expression networks on any registered backbone, with contextual channel
attention.

:class:`AttributeNet` puts a multi-label attribute head (one logit per attribute, trained with
binary cross-entropy) and a single-label expression head (one logit per class, softmax
cross-entropy) on the embedding of a ``recognition.create_backbone`` backbone (IResNet,
MobileFaceNet, ``timm:<name>``). Its output is one (B, A + E) tensor, attribute logits first,
so ``cam.targets.ClassTarget(k)`` explains attribute k and ``ClassTarget(A + c)`` expression c.

Channel attention (FAER, reference §6, computes channel weights from a global context of the
feature map; its code was never released, so the block below follows the published designs
it cites):

* ``"gc"``: GCNet's global context block (Cao et al., "GCNet: Non-local Networks Meet
  Squeeze-Excitation Networks and Beyond", ICCVW 2019) with its ``channel_mul`` fusion:
  context c = sum_j softmax_j(W_k x_j) x_j (attention pooling over the H x W positions, W_k a
  1x1 conv to one channel), transform t = W_2 ReLU(LayerNorm(W_1 c)) (a bottleneck of C/r
  channels), output x * sigmoid(t) (each channel scaled by its weight).
* ``"se"``: the squeeze-and-excitation block (Hu et al., CVPR 2018): c = the spatial mean,
  t = W_2 ReLU(W_1 c), output x * sigmoid(t).

The block is inserted after one layer of the backbone (default: the last layer whose output is
a feature map larger than 1 x 1, e.g. IResNet's ``bn2``, MobileFaceNet's ``conv_sep``, a timm
trunk's last stage) by a forward hook, so the backbone's own weights keep their names and a
recognition checkpoint initialises it. More blocks: ``register_attention``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from parsing.core.errors import DataError, InputError, MissingDependencyError
from parsing.core.io import load_checkpoint
from parsing.core.registry import Registry, import_plugins
from recognition.backbones import create_backbone
from recognition.backbones.registry import require_backbone

__all__ = ["AttributeNet", "ContextChannelAttention", "create_attention",
           "create_attribute_model", "feature_layer", "list_attentions",
           "load_attribute_model", "model_info", "register_attention"]

_ATTENTIONS: Registry[Callable[..., nn.Module]] = Registry("channel attention")


def register_attention(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a channel-attention constructor ``fn(channels, **kwargs)``."""
    return _ATTENTIONS.register(name)


def list_attentions(pattern: str = "*") -> list[str]:
    """Sorted names of the registered channel-attention blocks matching ``pattern``."""
    return _ATTENTIONS.names(pattern)


def create_attention(name: str, channels: int, **kwargs: Any) -> nn.Module:
    """The registered block ``name`` for a feature map of ``channels`` channels."""
    return _ATTENTIONS.create(name, channels, **kwargs)


class ContextChannelAttention(nn.Module):
    """Channel weights from a global context of the feature map (module docstring).

    Args:
        channels: C of the (B, C, H, W) input.
        reduction: bottleneck ratio r (hidden channels: max(C // r, 8)).
        pooling: ``"attention"`` (GCNet) or ``"average"`` (SE).
        norm: LayerNorm in the bottleneck (GCNet) or not (SE).
    """

    def __init__(self, channels: int, reduction: int = 16, pooling: str = "attention",
                 norm: bool = True) -> None:
        super().__init__()
        if pooling not in ("attention", "average"):
            raise InputError(f"pooling must be 'attention' or 'average', got {pooling!r}")
        if reduction < 1:
            raise InputError(f"reduction must be >= 1, got {reduction}")
        hidden = max(channels // reduction, 8)
        self.key = nn.Conv2d(channels, 1, 1) if pooling == "attention" else None
        self.transform = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.LayerNorm([hidden, 1, 1]) if norm else nn.Identity(),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1))

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The global context (B, C, 1, 1) of a feature map (B, C, H, W)."""
        if self.key is None:
            return x.mean(dim=(2, 3), keepdim=True)
        weights = self.key(x).flatten(2).softmax(dim=-1)  # (B, 1, HW)
        return torch.einsum("bcn,bkn->bck", x.flatten(2), weights)[..., None]

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights (B, C, 1, 1) in (0, 1)."""
        return torch.sigmoid(self.transform(self.context(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


@register_attention("gc")
def gc(channels: int, reduction: int = 16) -> ContextChannelAttention:
    """GCNet's global context block, channel_mul fusion."""
    return ContextChannelAttention(channels, reduction, "attention", norm=True)


@register_attention("se")
def se(channels: int, reduction: int = 16) -> ContextChannelAttention:
    """Squeeze-and-excitation."""
    return ContextChannelAttention(channels, reduction, "average", norm=False)


def _trace(backbone: nn.Module, image_size: int) -> tuple[list[tuple[str, torch.Size]], int]:
    """(name, output shape) of every module in the order they finish on one blank image, and
    the embedding size."""
    finished: list[tuple[str, torch.Size]] = []
    handles = [m.register_forward_hook(
        lambda mod, inp, out, name=name: finished.append((name, out.shape))
        if isinstance(out, torch.Tensor) else None)
        for name, m in backbone.named_modules() if name]
    was_training = backbone.training
    param = next(backbone.parameters())
    try:
        backbone.eval()
        with torch.no_grad():
            out = backbone(torch.zeros(1, 3, image_size, image_size, device=param.device))
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    if out.dim() != 2:
        raise InputError(f"the backbone returns {tuple(out.shape)}, not (B, D) embeddings")
    return finished, out.shape[1]


def feature_layer(backbone: nn.Module, image_size: int = 112) -> tuple[str, int]:
    """Name and channel count of the last layer whose output is a feature map larger than
    1 x 1 (where :class:`AttributeNet` puts its attention by default)."""
    maps = [(n, s) for n, s in _trace(backbone, image_size)[0] if len(s) == 4 and s[2] * s[3] > 1]
    if not maps:
        raise InputError(f"{type(backbone).__name__} has no layer with a feature map output")
    name, shape = maps[-1]
    return name, shape[1]


class AttributeNet(nn.Module):
    """Backbone + optional channel attention + attribute and expression heads.

    Args:
        backbone: maps (B, 3, S, S) to (B, D) embeddings.
        attribute_names: the multi-label attributes (A logits).
        expression_names: the expression classes (E logits; empty: no expression head).
        attention: a registered channel-attention name (``list_attentions()``) or None.
        attention_layer: backbone layer the block follows (default :func:`feature_layer`).
        attention_kwargs: passed to the block (``reduction``).
        image_size: input size S.

    ``forward`` returns (B, A + E) logits, attributes first (:meth:`split` separates them).
    """

    def __init__(self, backbone: nn.Module, attribute_names: Sequence[str] = (),
                 expression_names: Sequence[str] = (), attention: str | None = None,
                 attention_layer: str | None = None, attention_kwargs: dict | None = None,
                 image_size: int = 112) -> None:
        super().__init__()
        if not attribute_names and not expression_names:
            raise InputError("an attribute model needs attributes, expressions or both")
        self.attribute_names = list(attribute_names)
        self.expression_names = list(expression_names)
        self.attention_name, self.attention_kwargs = attention, dict(attention_kwargs or {})
        self.image_size = image_size
        self.backbone = backbone
        finished, dim = _trace(backbone, image_size)
        self.attention: nn.Module | None = None
        self.attention_layer = None
        if attention is not None:
            shapes = dict(finished)
            if attention_layer is None:
                attention_layer, channels = feature_layer(backbone, image_size)
            elif attention_layer not in shapes or len(shapes[attention_layer]) != 4:
                raise InputError(f"attention layer {attention_layer!r} is not a layer of the "
                                 "backbone with a (B, C, H, W) output")
            else:
                channels = shapes[attention_layer][1]
            self.attention_layer = attention_layer
            self.attention = create_attention(attention, channels, **self.attention_kwargs)
            backbone.get_submodule(attention_layer).register_forward_hook(self._attend)
        self.heads = nn.Linear(dim, len(self.attribute_names) + len(self.expression_names))

    def _attend(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.attention(output)

    @property
    def num_attributes(self) -> int:
        return len(self.attribute_names)

    @property
    def num_expressions(self) -> int:
        return len(self.expression_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x).float())

    def split(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attribute logits (B, A), expression logits (B, E)) of the output."""
        return logits[:, :self.num_attributes], logits[:, self.num_attributes:]


def create_attribute_model(network: str, attribute_names: Sequence[str] = (),
                           expression_names: Sequence[str] = (), attention: str | None = None,
                           network_kwargs: dict | None = None, image_size: int = 112,
                           backbone_checkpoint: str | os.PathLike | None = None,
                           **kwargs: Any) -> AttributeNet:
    """An :class:`AttributeNet` on ``recognition.create_backbone(network, **network_kwargs)``
    (weights from ``backbone_checkpoint``, e.g. a recognition run's ``model.pt``, if given);
    ``kwargs`` go to :class:`AttributeNet` (``attention_layer``, ``attention_kwargs``)."""
    backbone = create_backbone(network, checkpoint_path=backbone_checkpoint,
                               **(network_kwargs or {}))
    return AttributeNet(backbone, attribute_names, expression_names, attention,
                        image_size=image_size, **kwargs)


def model_info(model: AttributeNet, network: str, network_kwargs: dict,
               imports: Sequence[str] = ()) -> dict[str, Any]:
    """What :func:`load_attribute_model` needs to rebuild ``model`` (``model.json``;
    ``imports``: the training run's ``--import`` modules)."""
    return {"kind": "attributes", "network": network, "network_kwargs": network_kwargs,
            "imports": list(imports),
            "attention": model.attention_name, "attention_layer": model.attention_layer,
            "attention_kwargs": model.attention_kwargs,
            "attribute_names": model.attribute_names,
            "expression_names": model.expression_names, "image_size": model.image_size}


def load_attribute_model(path: str | os.PathLike, device: torch.device | str = "cpu",
                         imports: Sequence[str] = ()) -> AttributeNet:
    """The model saved as ``path`` (a run's ``model.pt``) rebuilt from the ``model.json``
    beside it, in eval mode on ``device``; ``imports``: modules registering a custom backbone
    (``--import``)."""
    path = Path(path)
    info_path = path.with_name("model.json")
    import_plugins(imports)
    try:
        info = json.loads(info_path.read_text())
        if info.get("kind") != "attributes":
            raise KeyError("kind")
        require_backbone(info["network"], info.get("imports", []), str(info_path))
        model = create_attribute_model(
            info["network"], info["attribute_names"], info["expression_names"],
            info["attention"], info["network_kwargs"], info["image_size"],
            attention_layer=info["attention_layer"], attention_kwargs=info["attention_kwargs"])
    except MissingDependencyError:
        raise
    except FileNotFoundError:
        raise DataError(f"{info_path}: missing (an attribute model needs the model.json "
                        "that recognition.attributes.train writes beside model.pt)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{info_path}: not an attribute model description ({exc})") from None
    state = load_checkpoint(path)
    try:
        model.load_state_dict(state)
    except (RuntimeError, AttributeError) as exc:
        raise DataError(f"{path}: weights do not fit {info_path} ({exc})") from None
    return model.to(device).eval()
