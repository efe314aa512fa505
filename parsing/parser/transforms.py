"""Joint image + label-map transforms (torchvision transforms v2)."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from parsing.core.labels import LabelSet, get_label_set


class RandomHorizontalFlip(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` that also swaps left/right ids in ``tv_tensors.Mask`` inputs.

    A plain flip moves a right eye to where a left eye belongs but keeps calling it "right
    eye"; this one relabels every pair in ``label_set.flip_pairs`` (reference §2.1).
    """

    def __init__(self, p: float = 0.5, label_set: str | LabelSet = "fse25") -> None:
        super().__init__(p=p)
        self.label_set = get_label_set(label_set)
        self.register_buffer("_lut", self.label_set.flip_lut(), persistent=False)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if isinstance(out, tv_tensors.Mask):
            lut = self._lut.to(out.device)
            swapped = lut[out.as_subclass(torch.Tensor).long()].to(out.dtype)
            out = tv_tensors.wrap(swapped, like=out)
        return out
