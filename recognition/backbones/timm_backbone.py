"""Any timm model as a face-embedding backbone: ``create_backbone("timm:convnext_nano")``."""

from __future__ import annotations

import torch
from torch import nn

from parsing.core.errors import InputError
from recognition.backbones._utils import body_autocast

__all__ = ["TimmBackbone"]

INPUT_SIZE = 112


class TimmBackbone(nn.Module):
    """A timm trunk (``num_classes=0``: pooled features) + insightface-style embedding head.

    The head is ``fc`` (Linear to ``num_features``) -> ``features`` (BatchNorm1d with its weight
    fixed to 1), as in IResNet. Weights are never downloaded (``pretrained=False``). Models
    with a fixed input size (ViT, Swin, ...) are built for 112x112 images unless ``img_size``
    is given.

    Args:
        model_name: a timm model name (``timm.list_models()``).
        num_features: embedding size.
        dropout: dropout before ``fc``.
        fp16: autocast the trunk with ``amp_dtype`` (see ``IResNet``).
        amp_dtype: autocast dtype when ``fp16`` is set.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``, ``img_size``).
    """

    def __init__(self, model_name: str, num_features: int = 512, dropout: float = 0.0,
                 fp16: bool = False, amp_dtype: torch.dtype = torch.float16,
                 **timm_kwargs) -> None:
        import timm  # imported on first use: it adds seconds to `import recognition`

        super().__init__()
        if not timm.is_model(model_name):
            raise InputError(f"unknown timm model {model_name!r} (see timm.list_models())")
        if timm.get_pretrained_cfg_value(model_name, "fixed_input_size"):
            timm_kwargs.setdefault("img_size", INPUT_SIZE)
        self.fp16 = fp16
        self.amp_dtype = amp_dtype
        self.num_features = num_features
        self.body = timm.create_model(model_name, pretrained=False, num_classes=0, **timm_kwargs)
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(self.body.num_features, num_features)
        self.features = nn.BatchNorm1d(num_features)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with body_autocast(x, self.fp16, self.amp_dtype):
            x = self.dropout(self.body(x))
        if self.fp16:
            x = x.float()
        return self.features(self.fc(x))
