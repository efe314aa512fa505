"""Where a dataset's parsing masks come from, and an ImageFolder that pairs them with images.

Four sources, chosen by :func:`open_mask_source`:

* a mask store ``masks.rec``/``masks.idx`` (:mod:`parsing.core.maskstore`, written by
  ``python -m parsing.predict --store``), given as the ``.rec`` file or its folder, keyed by
  the images' RecordIO keys or relative paths: :class:`MaskStoreSource` (what to use at scale);
* a folder of label PNGs at the images' relative paths with a ``.png`` suffix (what
  ``python -m parsing.predict`` writes; two images that would share one mask, ``a.jpg`` and
  ``a.png``, are refused): :class:`MaskFolder`;
* one (N, H, W) integer tensor with a mask per image in the dataset's sample order, in a
  ``.pt``/``.pth`` file (loaded with ``weights_only=True``) or a ``.npy`` file (memory-mapped),
  or given in memory: :class:`MaskTensor`;
* a callable ``fn(image_path) -> (H, W) mask`` (tensor, ndarray or PIL): :class:`MaskCallable`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torchvision import datasets, tv_tensors

from parsing.core.errors import DataError
from parsing.core.io import load_checkpoint, read_image, read_label_map
from parsing.core.labels import LabelSet, get_label_set
from parsing.core.maskstore import STORE_NAME, MaskStore
from parsing.core.paths import check_unique_keys
from parsing.core.pixels import image_tensor

__all__ = ["MaskSource", "MaskFolder", "MaskStoreSource", "MaskTensor", "MaskCallable",
           "open_mask_source", "MaskedImageFolder"]


class MaskSource:
    """A mask per image: ``load(index, image_path, root)`` -> (H, W) integer tensor."""

    def load(self, index: int, image_path: Path, root: Path) -> torch.Tensor:
        raise NotImplementedError

    def describe(self, index: int, image_path: Path, root: Path) -> str:
        """Where the mask of this image comes from, for error messages."""
        raise NotImplementedError

    def check_dataset(self, image_paths: Sequence[Path], root: Path) -> None:
        """Fail early if the source cannot serve these images (missing files, wrong count)."""

    def check_keys(self, keys: Sequence[str], root: Path) -> None:
        """:meth:`check_dataset` for images given by their paths relative to ``root``."""
        self.check_dataset([root / k for k in keys], root)


class MaskFolder(MaskSource):
    """Label PNGs under ``root`` at each image's relative path, with suffix ``suffix``."""

    def __init__(self, root: str | os.PathLike, suffix: str = ".png") -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such mask folder")
        self.suffix = suffix

    def __repr__(self) -> str:
        return f"MaskFolder({str(self.root)!r})"

    def path_for(self, image_path: Path, root: Path) -> Path:
        return self.root / Path(image_path).relative_to(root).with_suffix(self.suffix)

    def load(self, index: int, image_path: Path, root: Path) -> torch.Tensor:
        return torch.from_numpy(read_label_map(self.path_for(image_path, root)))

    def describe(self, index: int, image_path: Path, root: Path) -> str:
        return str(self.path_for(image_path, root))

    def check_dataset(self, image_paths: Sequence[Path], root: Path) -> None:
        masks = [self.path_for(i, root) for i in image_paths]
        check_unique_keys(image_paths, [str(m) for m in masks], f"masks {self.root}")
        missing = [p for p in masks if not p.is_file()]
        if missing:
            shown = ", ".join(str(p) for p in missing[:3])
            raise DataError(
                f"{self.root}: {len(missing)} of {len(image_paths)} images have no mask "
                f"(e.g. {shown})")


class MaskStoreSource(MaskSource):
    """Masks from a store (``masks.rec``), found by each image's path relative to the root.

    A RecordIO data set's images are ``root/<key>``, so their relative paths are the keys of
    a store written for it; an ImageFolder's are the names of a store written for the folder.
    """

    def __init__(self, store: str | os.PathLike | MaskStore) -> None:
        self.store = store if isinstance(store, MaskStore) else MaskStore(store)

    def __repr__(self) -> str:
        return f"MaskStoreSource({self.store!r})"

    @staticmethod
    def key(image_path: Path, root: Path) -> str:
        """The store name of an image: its path relative to ``root``, ``/``-separated."""
        path, prefix = str(image_path), str(root) + os.sep
        if path.startswith(prefix):  # a string slice: Path.relative_to costs 10 us a sample
            return path[len(prefix):].replace(os.sep, "/")
        return Path(image_path).relative_to(root).as_posix()

    def load(self, index: int, image_path: Path, root: Path) -> torch.Tensor:
        return torch.from_numpy(self.store[self.key(image_path, root)])

    def describe(self, index: int, image_path: Path, root: Path) -> str:
        return self.store.where(self.key(image_path, root))

    def check_dataset(self, image_paths: Sequence[Path], root: Path) -> None:
        self.check_keys([self.key(p, root) for p in image_paths], root)

    def check_keys(self, keys: Sequence[str], root: Path) -> None:  # no Path per image
        self.store.check_keys([k.replace(os.sep, "/") for k in keys] if os.sep != "/" else keys,
                              str(root))


class MaskTensor(MaskSource):
    """Masks stacked in one (N, H, W) integer tensor, indexed by sample position."""

    def __init__(self, masks: str | os.PathLike | torch.Tensor | np.ndarray) -> None:
        self.name = "masks tensor"
        if isinstance(masks, (str, os.PathLike)):
            self.name = str(masks)
            masks = _load_mask_file(Path(masks))
        self.masks = masks
        if masks.ndim != 3 or not _is_integer(masks):
            raise DataError(f"{self.name}: need an (N, H, W) integer array of masks, got "
                            f"{tuple(masks.shape)} {masks.dtype}")

    def __repr__(self) -> str:
        return f"MaskTensor({self.name!r}, shape={tuple(self.masks.shape)})"

    def __len__(self) -> int:
        return self.masks.shape[0]

    def load(self, index: int, image_path: Path, root: Path) -> torch.Tensor:
        return torch.as_tensor(np.array(self.masks[index]) if isinstance(
            self.masks, np.ndarray) else self.masks[index])

    def describe(self, index: int, image_path: Path, root: Path) -> str:
        return f"{self.name}[{index}] (mask of {image_path})"

    def check_dataset(self, image_paths: Sequence[Path], root: Path) -> None:
        if len(self) != len(image_paths):
            raise DataError(f"{self.name}: {len(self)} masks for {len(image_paths)} images "
                            f"under {root}")


class MaskCallable(MaskSource):
    """Masks computed by ``fn(image_path)`` (a tensor, ndarray or PIL label image)."""

    def __init__(self, fn: Callable[[str], Any]) -> None:
        self.fn = fn

    def __repr__(self) -> str:
        return f"MaskCallable({self.fn!r})"

    def load(self, index: int, image_path: Path, root: Path) -> torch.Tensor:
        mask = self.fn(str(image_path))
        if not isinstance(mask, (torch.Tensor, np.ndarray, PIL.Image.Image)):
            raise DataError(f"{self.describe(index, image_path, root)}: returned "
                            f"{type(mask).__name__}, not an (H, W) label map")
        if isinstance(mask, PIL.Image.Image):
            mask = np.array(mask)
        mask = torch.as_tensor(mask)
        return mask[0] if mask.ndim == 3 and mask.shape[0] == 1 else mask

    def describe(self, index: int, image_path: Path, root: Path) -> str:
        return f"mask from {getattr(self.fn, '__name__', repr(self.fn))}({image_path})"


def open_mask_source(masks: Any) -> MaskSource:
    """A :class:`MaskSource` from a mask store (``.rec`` or a folder holding ``masks.rec``), a
    folder of label PNGs, a tensor file, a tensor/ndarray or a callable."""
    if isinstance(masks, MaskSource):
        return masks
    if isinstance(masks, (torch.Tensor, np.ndarray)):
        return MaskTensor(masks)
    if isinstance(masks, (str, os.PathLike)):
        path = Path(masks)
        if path.suffix == ".rec" or (path / STORE_NAME).is_file():
            return MaskStoreSource(path)
        if path.is_dir():
            return MaskFolder(path)
        if path.is_file():
            return MaskTensor(path)
        raise DataError(f"{path}: no such mask folder or mask file")
    if callable(masks):
        return MaskCallable(masks)
    raise DataError(f"cannot use {type(masks).__name__} as a mask source; give a mask store "
                    "(masks.rec), a folder of label PNGs, an (N, H, W) .pt/.npy file or tensor, "
                    "or a callable")


class MaskedImageFolder(datasets.ImageFolder):
    """``ImageFolder`` (class = sorted sub-folder index) whose samples carry parsing masks.

    ``ds[i]`` is a sample (:mod:`parsing.core.samples`) ``{"image", "mask", "label"}``: a uint8
    ``tv_tensors.Image`` (3, H, W), its ``tv_tensors.Mask`` (H, W) and the class index (the
    sorted sub-folder), after ``transform(image, mask)`` if given
    (a v2 transform or ``v2.Compose``, so geometric transforms keep both aligned). ``masks`` is
    anything :func:`open_mask_source` accepts. A missing mask fails at construction; a mask
    whose size differs from its image, or with ids outside ``label_set``, fails when loaded;
    every error names the file.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        masks: Any,
        transform: Callable[..., Any] | None = None,
        label_set: str | LabelSet = "fse25",
    ) -> None:
        try:
            super().__init__(root)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise DataError(f"{root}: {exc}") from None
        self.mask_source = open_mask_source(masks)
        self.label_set = get_label_set(label_set)
        self.transform = transform
        self.mask_source.check_dataset([Path(p) for p, _ in self.samples], Path(self.root))

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        path, root = Path(path), Path(self.root)
        image = tv_tensors.Image(image_tensor(read_image(path)))
        where = self.mask_source.describe(index, path, root)
        mask = self.mask_source.load(index, path, root)
        if mask.ndim != 2 or mask.shape != image.shape[-2:]:
            raise DataError(f"{where}: mask is {_size(mask)} but image {path} is "
                            f"{_size(image)}")
        self.label_set.check(mask, where)
        mask = tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return {"image": image, "mask": mask, "label": label}


def _size(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape[-2:])) if t.ndim >= 2 else f"shape {tuple(t.shape)}"


def _is_integer(masks: torch.Tensor | np.ndarray) -> bool:
    if isinstance(masks, np.ndarray):
        return masks.dtype.kind in "iu"
    return not (masks.dtype.is_floating_point or masks.dtype.is_complex or
                masks.dtype == torch.bool)


def _load_mask_file(path: Path) -> torch.Tensor | np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npy mask array ({exc})") from None
    masks = load_checkpoint(path)
    if not isinstance(masks, torch.Tensor):
        raise DataError(f"{path}: expected one (N, H, W) tensor, found {type(masks).__name__}")
    return masks
