"""The sample contract: what every dataset of the project returns for ``ds[i]``.

A sample is a dict with the keys of :class:`Sample` that the dataset has (a face-parsing set
has ``image`` and ``mask``; a recognition set ``image``, ``label`` and, with masks,
``mask``; the synthetic set all of them and ``identity`` and ``landmarks``). The keys mean the
same everywhere:

* ``image``: (3, H, W) RGB, uint8 as stored; float normalised to [-1, 1]
  (:func:`parsing.core.pixels.normalise`) after a model-input transform.
* ``mask``: (H, W) region ids of the dataset's label set (FSE-25 unless said otherwise),
  uint8 as stored; int64 after a model-input transform. The name is FSErasing's: a sample
  can be handed to :class:`fserasing.FSErasing` as it is.
* ``label``: the class index (``int``) a classifier is trained on, ``0 .. num_classes - 1``
  (recognition: the identity's index).
* ``identity``: the identity as the data set names it (``int``; synthetic sets).
* ``landmarks``: (5, 2) float32 pixel coordinates of the eyes, nose tip and mouth corners
  (ArcFace order).
* ``attributes``: (A,) float32 of 0/1, the facial attributes present (multi-label;
  ``recognition.attributes``, in the data set's ``attribute_names`` order).
* ``expression``: the expression class index (``int``, in the data set's ``expression_names``).

A sample that cannot be read, when the dataset was asked to skip such files
(``skip_bad=True``), is a :class:`BadSample` naming the file and the reason instead; the
collate functions drop it (or fill its slot) and count it. Collated batches keep the keys,
with tensors stacked, plus ``skipped`` (how many samples of the batch were bad).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple, TypedDict

import torch

from parsing.core.errors import DataError

__all__ = ["BadSample", "Sample", "read_or_skip"]

log = logging.getLogger(__name__)


class Sample(TypedDict, total=False):
    """The keys a dataset sample may have (see the module docstring)."""

    image: torch.Tensor
    mask: torch.Tensor
    label: int
    identity: int
    landmarks: torch.Tensor
    attributes: torch.Tensor
    expression: int


class BadSample(NamedTuple):
    """Stands in for a sample whose file could not be read (``skip_bad=True``)."""

    error: str


def read_or_skip(read: Callable[[], dict[str, Any]], skip_bad: bool) -> dict[str, Any] | BadSample:
    """``read()``; with ``skip_bad``, a :class:`BadSample` (logged) where it raises a
    :class:`~parsing.core.errors.DataError`."""
    try:
        return read()
    except DataError as exc:
        if not skip_bad:
            raise
        log.warning("skipping bad sample: %s", exc)
        return BadSample(str(exc))
