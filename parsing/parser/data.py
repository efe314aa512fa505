"""Face-parsing datasets: FaceSynthetics (+ FSE-25 labels), CelebAMask-HQ, folders, synth.

Every dataset yields a sample ``{"image", "mask"}`` (:mod:`parsing.core.samples`): without a
transform a uint8 (3, H, W) image and its uint8 (H, W) label map; with one, what the transform
makes of them (:func:`train_transform`, :func:`eval_transform`: a float image in [-1, 1] and an
int64 map). Label maps are converted from the dataset's own label set to the ``labels`` asked
for (``parsing.core.labels.convert``). Layouts (reference §2.3, §2.4):

* ``facesynthetics``: ``ROOT/{id:06d}.png``, ``{id:06d}_seg.png`` (own 19 classes),
  ``{id:06d}_ldmks.txt`` (70 lines ``x y``); FSE-25 labels in ``ROOT/labels_25/{id:06d}_seg.png``
  (FSE-10: ``labels_10/`` if present, else converted) for the frames that
  ``ROOT/anno_list.csv`` (``frame_id,with_25``) marks as labelled. ``align=True`` warps image
  and labels to the ArcFace template (reference §5.1) with the five points taken from the 68
  landmarks (labels: nearest neighbour).
* ``synth`` (``python -m parsing.synth``): read by :class:`parsing.synth.SynthFaces` (its
  layout: ``images/``, ``labels_25/``, ``anno_list.csv``, ``landmarks.csv``,
  ``identities.csv``); already aligned.
* ``celebamask``: ``ROOT/CelebA-HQ-img/{idx}.jpg``, part masks
  ``ROOT/CelebAMask-HQ-mask-anno/{idx // 2000}/{idx:05d}_{part}.png`` painted in the official
  part order (later parts over earlier ones); the official split reads
  ``ROOT/CelebA-HQ-to-CelebA-mapping.txt`` and CelebA's ``list_eval_partition.txt`` (``.txt``
  or ``.csv``) from ``ROOT``. Images are resized to the masks' size (512).
* ``folder``: ``ROOT/images/<rel>.<ext>`` and ``ROOT/labels/<rel>.png``; ``ROOT/{split}.txt``
  lists relative image paths (with or without extension) when the split is not ``all``.

Corrupt or missing files raise :class:`DataError` naming the file; with ``skip_bad=True`` the
sample becomes a :class:`parsing.core.samples.BadSample` that :func:`collate` drops and
reports.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from parsing.core.align import align_face, landmarks5_from_68
from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.io import IMAGE_EXTENSIONS, read_image, read_label_map
from parsing.core.labels import (
    CELEBAMASK_OFFICIAL,
    FACESYNTHETICS,
    FSE10,
    FSE25,
    LabelSet,
    convert,
    get_label_set,
)
from parsing.core.paths import check_unique_keys
from parsing.core.pixels import image_tensor
from parsing.core.registry import Registry
from parsing.core.samples import BadSample
from parsing.parser.transforms import RandomHorizontalFlip
from parsing.synth import SynthFaces

log = logging.getLogger(__name__)

__all__ = [
    "AUGMENTATIONS", "CELEBAMASK_PARTS", "CelebAMaskHQ", "DataKind", "DataSpec",
    "FaceSynthetics", "FolderDataset", "ParsingDataset", "SeededSamples", "SynthParsing",
    "build_dataset", "collate", "count_labels", "eval_transform", "has_official_split",
    "list_data_kinds", "parse_data_spec", "register_data_kind", "split_indices",
    "train_transform",
]

SPLITS = ("train", "val", "test", "all")
# Official painting order: part i is painted with id i + 1 of the `official` order.
CELEBAMASK_PARTS = CELEBAMASK_OFFICIAL.names[1:]


class ParsingDataset(Dataset):
    """Base class: subclasses fill ``self.samples`` and implement ``_load``/``_load_labels``."""

    native_labels: LabelSet = FSE25

    def __init__(self, labels: str | LabelSet | None = None,
                 transform: Callable[..., Any] | None = None, skip_bad: bool = False) -> None:
        self.label_set = get_label_set(labels) if labels is not None else self.native_labels
        self.transform = transform
        self.skip_bad = skip_bad
        self.samples: list[Any] = []
        self._convert(torch.zeros(1, 1, dtype=torch.uint8))  # fail now if there is no mapping

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        """A short name for sample ``index`` (its id or relative path)."""
        return str(self.samples[index])

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _convert(self, label_map: torch.Tensor) -> torch.Tensor:
        if self.label_set is not self.native_labels:
            label_map = convert(label_map, self.native_labels, self.label_set)
        return label_map

    def read_labels(self, index: int) -> torch.Tensor:
        """The (H, W) uint8 label map of ``index`` in ``labels`` ids, without augmentation."""
        return self._convert(self._load(index)[1])

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        try:
            image, label_map = self._load(index)
            label_map = self._convert(label_map)
        except DataError as exc:
            if self.skip_bad:
                return BadSample(str(exc))
            raise
        if image.shape[-2:] != label_map.shape[-2:]:
            msg = (f"{self.name(index)}: image {tuple(image.shape[-2:])} and label map "
                   f"{tuple(label_map.shape)} differ in size")
            if self.skip_bad:
                return BadSample(msg)
            raise DataError(msg)
        if self.transform is not None:
            image, label_map = self.transform(tv_tensors.Image(image),
                                              tv_tensors.Mask(label_map))
        return {"image": image, "mask": label_map}


def _image_tensor(path: Path) -> torch.Tensor:
    return image_tensor(read_image(path))


def _label_tensor(path: Path, label_set: LabelSet) -> torch.Tensor:
    """A label PNG whose ids are checked against ``label_set`` (DataError names the file)."""
    label_map = torch.from_numpy(np.array(read_label_map(path)))
    try:
        label_set.check(label_map, str(path))
    except LabelError as exc:  # a corrupt data file: skippable like any other
        raise DataError(str(exc)) from None
    return label_map


def _read_anno_list(path: Path) -> list[int]:
    """Frame ids marked ``with_25`` in a FaceSynthetics/FSE ``anno_list.csv``."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (the FSE-25 frame list, frame_id,with_25)")
    truthy = {"1", "true", "yes", "y", "t"}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if rows and not {"frame_id", "with_25"} <= set(rows[0]):
        raise DataError(f"{path}: expected columns frame_id,with_25, got {','.join(rows[0])}")
    try:
        return [int(r["frame_id"]) for r in rows if str(r["with_25"]).strip().lower() in truthy]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: bad frame_id ({exc})") from None


def _read_landmarks70(path: Path) -> torch.Tensor:
    try:
        pts = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except FileNotFoundError:
        raise DataError(f"{path}: no such landmarks file") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable as 'x y' lines ({exc})") from None
    if pts.shape != (70, 2):
        raise DataError(f"{path}: expected 70 lines of 'x y', got shape {pts.shape}")
    return torch.from_numpy(pts)


class FaceSynthetics(ParsingDataset):
    """Microsoft FaceSynthetics with its own 19 classes or the FSE-25/FSE-10 labels.

    ``labels="fse25"`` (or ``"fse10"``) reads ``labels_25/`` (``labels_10/``) for the frames
    ``anno_list.csv`` marks; ``labels="facesynthetics"`` reads ``{id}_seg.png`` of every image.
    ``align=True`` aligns to ``size`` x ``size`` with the 5 points from ``{id}_ldmks.txt``.
    """

    def __init__(self, root: str | os.PathLike, labels: str | LabelSet = "fse25",
                 align: bool = False, size: int = 112,
                 transform: Callable[..., Any] | None = None, skip_bad: bool = False) -> None:
        label_set = get_label_set(labels)
        has_fse10 = (Path(root) / "labels_10").is_dir()
        self.native_labels = (label_set if label_set is FACESYNTHETICS
                              or (label_set is FSE10 and has_fse10) else FSE25)
        super().__init__(label_set, transform, skip_bad)
        self.root = Path(root)
        self.image_dir = self.root
        self.align, self.size = align, size
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: no such image directory")
        if self.native_labels is FACESYNTHETICS:
            self.label_dir = self.image_dir
            self.samples = sorted(int(p.stem) for p in self.image_dir.glob("[0-9]" * 6 + ".png"))
            if not self.samples:
                raise DataError(f"{self.image_dir}: no {{id:06d}}.png images")
        else:
            self.label_dir = self.root / ("labels_10" if self.native_labels is FSE10
                                          else "labels_25")
            self.samples = _read_anno_list(self.root / "anno_list.csv")

    def name(self, index: int) -> str:
        return f"{self.samples[index]:06d}"

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        fid = self.samples[index]
        image = _image_tensor(self.image_dir / f"{fid:06d}.png")
        label_map = _label_tensor(self.label_dir / f"{fid:06d}_seg.png", self.native_labels)
        if self.align:
            pts = landmarks5_from_68(_read_landmarks70(self.image_dir / f"{fid:06d}_ldmks.txt"))
            image = align_face(image, pts, self.size)
            label_map = align_face(label_map[None], pts, self.size, mode="nearest")[0]
        return image, label_map


class SynthParsing(ParsingDataset):
    """A ``python -m parsing.synth`` set, read by :class:`parsing.synth.SynthFaces` (FSE-25)."""

    def __init__(self, root: str | os.PathLike, labels: str | LabelSet = "fse25",
                 transform: Callable[..., Any] | None = None, skip_bad: bool = False) -> None:
        super().__init__(labels, transform, skip_bad)
        self.faces = SynthFaces(root)
        self.samples = self.faces.frame_ids

    def name(self, index: int) -> str:
        return f"{self.samples[index]:06d}"

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.faces.load(index)


def _read_celeba_split(root: Path) -> dict[int, int]:
    """CelebA-HQ index -> CelebA partition (0 train, 1 val, 2 test) from the two lists."""
    mapping_path = root / "CelebA-HQ-to-CelebA-mapping.txt"
    partition_path = next((p for p in (root / "list_eval_partition.txt",
                                       root / "list_eval_partition.csv") if p.is_file()), None)
    if not mapping_path.is_file():
        raise DataError(f"{mapping_path}: no such file (needed for the official split)")
    if partition_path is None:
        raise DataError(f"{root}/list_eval_partition.txt: no such file (CelebA's partition "
                        "list; copy it next to the mapping file, or use --split all)")
    partition: dict[str, int] = {}
    with open(partition_path) as f:
        for n, line in enumerate(f, 1):
            parts = line.replace(",", " ").split()
            if not parts or parts[0] == "image_id":
                continue
            try:
                partition[parts[0]] = int(parts[1])
            except (IndexError, ValueError):
                raise DataError(f"{partition_path}:{n}: expected '<file> <0|1|2>'") from None
    out: dict[int, int] = {}
    with open(mapping_path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] == "idx":
                continue
            try:
                idx, orig_file = int(parts[0]), parts[2]
            except (IndexError, ValueError):
                raise DataError(f"{mapping_path}:{n}: expected 'idx orig_idx orig_file'") from None
            if orig_file not in partition:
                raise DataError(f"{partition_path}: no partition for {orig_file} "
                                f"(CelebA-HQ image {idx})")
            out[idx] = partition[orig_file]
    return out


class CelebAMaskHQ(ParsingDataset):
    """CelebAMask-HQ: raw part masks merged in the official painting order.

    ``labels`` picks the 19-class order (``celebamask_official`` / ``_bisenet`` / ``_farl``);
    ``split`` is ``train``/``val``/``test`` (CelebA's partition) or ``all``.
    """

    native_labels = CELEBAMASK_OFFICIAL

    def __init__(self, root: str | os.PathLike, split: str = "train",
                 labels: str | LabelSet = "celebamask_official",
                 transform: Callable[..., Any] | None = None, skip_bad: bool = False) -> None:
        super().__init__(labels, transform, skip_bad)
        self.root = Path(root)
        self.image_dir = self.root / "CelebA-HQ-img"
        self.mask_dir = self.root / "CelebAMask-HQ-mask-anno"
        for d in (self.image_dir, self.mask_dir):
            if not d.is_dir():
                raise DataError(f"{d}: no such directory (CelebAMask-HQ layout)")
        if split == "all":
            self.samples = sorted(int(p.stem) for p in self.image_dir.glob("*.jpg")
                                  if p.stem.isdigit())
        else:
            code = {"train": 0, "val": 1, "test": 2}.get(split)
            if code is None:
                raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
            self.samples = sorted(i for i, s in _read_celeba_split(self.root).items() if s == code)

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.samples[index]
        folder = self.mask_dir / str(idx // 2000)
        label_map = None
        for part_id, part in enumerate(CELEBAMASK_PARTS, start=1):
            path = folder / f"{idx:05d}_{part}.png"
            if not path.is_file():
                continue  # parts absent from a face have no file
            try:
                with Image.open(path) as im:
                    painted = np.asarray(im.convert("L")) != 0
            except OSError as exc:
                raise DataError(f"{path}: not a readable part mask ({exc})") from None
            if label_map is None:
                label_map = np.zeros(painted.shape, dtype=np.uint8)
            elif painted.shape != label_map.shape:
                raise DataError(f"{path}: size {painted.shape} differs from the other parts")
            label_map[painted] = part_id
        if label_map is None:
            raise DataError(f"{folder}/{idx:05d}_*.png: no part masks for image {idx}")
        image = _image_tensor(self.image_dir / f"{idx}.jpg")
        if image.shape[-2:] != label_map.shape:
            image = v2.functional.resize(image, list(label_map.shape), antialias=True)
        return image, torch.from_numpy(label_map)


class FolderDataset(ParsingDataset):
    """``ROOT/images/<rel>.<ext>`` with ``ROOT/labels/<rel>.png`` already in ``labels`` ids."""

    def __init__(self, root: str | os.PathLike, split: str = "all",
                 labels: str | LabelSet = "fse25", transform: Callable[..., Any] | None = None,
                 skip_bad: bool = False) -> None:
        self.native_labels = get_label_set(labels)
        super().__init__(labels, transform, skip_bad)
        self.root = Path(root)
        self.image_dir, self.label_dir = self.root / "images", self.root / "labels"
        if not self.image_dir.is_dir():
            raise DataError(f"{self.image_dir}: no such directory (folder layout: images/, "
                            "labels/, optional train.txt/val.txt/test.txt)")
        if split == "all":
            self.samples = sorted(
                p.relative_to(self.image_dir).as_posix() for p in self.image_dir.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS)
            check_unique_keys([self.image_dir / s for s in self.samples],
                              [Path(s).with_suffix("").as_posix() for s in self.samples],
                              str(self.image_dir))
        else:
            list_file = self.root / f"{split}.txt"
            if not list_file.is_file():
                raise DataError(f"{list_file}: no such list file for split {split!r}")
            self.samples = [line.strip() for line in list_file.read_text().splitlines()
                            if line.strip() and not line.startswith("#")]

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rel = Path(self.samples[index])
        stem = rel.with_suffix("") if rel.suffix.lower() in IMAGE_EXTENSIONS else rel
        image_path = self.image_dir / rel
        if image_path.suffix.lower() not in IMAGE_EXTENSIONS:
            found = [p for ext in IMAGE_EXTENSIONS
                     if (p := self.image_dir / f"{stem}{ext}").is_file()]
            image_path = found[0] if found else self.image_dir / f"{stem}.png"
        label_path = self.label_dir / f"{stem}.png"
        label_map = _label_tensor(label_path, self.native_labels)
        return _image_tensor(image_path), label_map


# ---------------------------------------------------------------------------------------------
# Transforms, batching, splits


AUGMENTATIONS = ("full", "flip", "none")


def train_transform(label_set: str | LabelSet = "fse25", size: int | None = None,
                    augment: str = "full", degrees: float = 10.0,
                    scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.05,
                    jitter: float = 0.3) -> v2.Compose:
    """Joint augmentation, then float images normalised to [-1, 1] and int64 label maps.

    ``augment="full"``: left/right-swapping flip, random affine (nearest-neighbour for masks)
    and colour jitter on the image only; ``"flip"``: the flip alone; ``"none"``: nothing.
    """
    if augment not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {augment!r}; use one of {', '.join(AUGMENTATIONS)}")
    ops: list[Any] = [] if size is None else [v2.Resize([size, size])]
    if augment != "none":
        ops.append(RandomHorizontalFlip(0.5, label_set))
    if augment == "full":
        ops += [
            v2.RandomAffine(degrees=degrees, translate=(translate, translate), scale=scale),
            v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=jitter / 6),
        ]
    return v2.Compose(ops + _to_model_input())


def eval_transform(size: int | None = None) -> v2.Compose:
    """Resize (optional; nearest for masks), float images normalised to [-1, 1], int64 maps."""
    return v2.Compose(([] if size is None else [v2.Resize([size, size])]) + _to_model_input())


def _to_model_input() -> list[Any]:
    return [
        v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.int64, "others": None},
                   scale=True),
        v2.Normalize([0.5] * 3, [0.5] * 3),
        v2.ToPureTensor(),
    ]


class SeededSamples(Dataset):
    """``dataset[i]`` read (and augmented) under a torch RNG seeded from (seed, epoch, i).

    The random transform of each sample is then the same whichever loader process reads it,
    so a run gives the same batches with any ``num_workers``. Call :meth:`set_epoch` before
    each epoch's iterator is created (workers copy the dataset when they start).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        entropy = [self.seed % 2**64, self.epoch, index]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]


def collate(batch: Sequence[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """Stack ``{"image", "mask"}`` samples into ``{"image": (B, 3, H, W), "mask": (B, H, W),
    "skipped": count, "errors": [...]}``: :class:`BadSample` s are dropped (B may then be
    smaller than the batch, even 0) and their errors listed."""
    errors = [s.error for s in batch if isinstance(s, BadSample)]
    good = [s for s in batch if not isinstance(s, BadSample)]
    out: dict[str, Any] = {"skipped": len(errors), "errors": errors}
    if not good:
        return {"image": torch.empty(0), "mask": torch.empty(0, dtype=torch.long), **out}
    sizes = {tuple(s["image"].shape) for s in good}
    if len(sizes) > 1:
        raise DataError(f"images of different sizes in one batch {sorted(sizes)}: pass --size")
    return {"image": torch.stack([torch.as_tensor(s["image"]) for s in good]),
            "mask": torch.stack([torch.as_tensor(s["mask"]) for s in good]), **out}


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """A seeded random (train, val) partition of ``range(n)``; val gets round(n * fraction)."""
    if not 0.0 <= val_fraction < 1.0:
        raise InputError(f"--val-split must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = round(n * val_fraction)
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def count_labels(dataset: ParsingDataset, num_classes: int, max_samples: int = 2000,
                 indices: Sequence[int] | None = None) -> torch.Tensor:
    """(K,) pixel counts over up to ``max_samples`` evenly spaced label maps (no images read)."""
    indices = list(range(len(dataset))) if indices is None else list(indices)
    if len(indices) > max_samples:
        indices = [indices[i] for i in np.linspace(0, len(indices) - 1, max_samples).astype(int)]
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for i in indices:
        try:
            lm = dataset.read_labels(i).long().flatten()
        except DataError:
            if dataset.skip_bad:
                continue
            raise
        counts += torch.bincount(lm[lm < num_classes], minlength=num_classes)
    return counts


# ---------------------------------------------------------------------------------------------
# --data KIND:PATH


Opener = Callable[..., ParsingDataset]


class DataKind(NamedTuple):
    """A registered ``--data`` kind.

    ``open(path, split, *, labels, transform, skip_bad, align, size)`` reads ``split``
    (``"all"`` unless ``has_split(path)``: the data comes with its own train/val/test split).
    """

    open: Opener
    has_split: Callable[[Path], bool]


_DATA_KINDS: Registry[DataKind] = Registry("kind")


def _no_split(path: Path) -> bool:
    return False


def register_data_kind(name: str, has_split: Callable[[Path], bool] = _no_split
                       ) -> Callable[[Opener], Opener]:
    """Decorator adding ``--data NAME:PATH``: the function opens a split of ``PATH`` (see
    :class:`DataKind`); ``has_split(path)`` says whether ``PATH`` has its own splits."""

    def add(open_fn: Opener) -> Opener:
        _DATA_KINDS.register(name)(DataKind(open_fn, has_split))
        return open_fn

    return add


def list_data_kinds(pattern: str = "*") -> list[str]:
    """Sorted names of the registered ``--data`` kinds matching ``pattern``."""
    return _DATA_KINDS.names(pattern)


@register_data_kind("synth")
def _open_synth(path: Path, split: str, *, labels: str | LabelSet,
                transform: Callable[..., Any] | None, skip_bad: bool, align: bool,
                size: int) -> ParsingDataset:
    if align:
        raise InputError(f"{path}: synthetic faces are aligned already; drop --align")
    return SynthParsing(path, labels=labels, transform=transform, skip_bad=skip_bad)


@register_data_kind("facesynthetics")
def _open_facesynthetics(path: Path, split: str, *, labels: str | LabelSet,
                         transform: Callable[..., Any] | None, skip_bad: bool, align: bool,
                         size: int) -> ParsingDataset:
    return FaceSynthetics(path, align=align, size=size, labels=labels, transform=transform,
                          skip_bad=skip_bad)


@register_data_kind("celebamask", has_split=lambda path: True)
def _open_celebamask(path: Path, split: str, *, labels: str | LabelSet,
                     transform: Callable[..., Any] | None, skip_bad: bool, align: bool,
                     size: int) -> ParsingDataset:
    return CelebAMaskHQ(path, split=split, labels=labels, transform=transform, skip_bad=skip_bad)


@register_data_kind("folder", has_split=lambda path: (path / "train.txt").is_file())
def _open_folder(path: Path, split: str, *, labels: str | LabelSet,
                 transform: Callable[..., Any] | None, skip_bad: bool, align: bool,
                 size: int) -> ParsingDataset:
    return FolderDataset(path, split=split, labels=labels, transform=transform, skip_bad=skip_bad)


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``--data KIND:PATH`` argument."""

    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_data_spec(spec: str) -> DataSpec:
    """``"synth:data/synth"`` -> ``DataSpec("synth", Path("data/synth"))``; checks the path."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(f"--data {spec!r}: expected KIND:PATH with KIND one of "
                         f"{_DATA_KINDS.known()}")
    if kind not in _DATA_KINDS:
        raise InputError(f"--data {spec!r}: unknown kind {kind!r}; use one of "
                         f"{_DATA_KINDS.known()}")
    if not Path(path).is_dir():
        raise InputError(f"--data {spec!r}: {path} is not a directory")
    return DataSpec(kind, Path(path))


def has_official_split(spec: DataSpec) -> bool:
    """CelebAMask-HQ, and folders with ``train.txt``, come with their own splits."""
    return _DATA_KINDS.get(spec.kind).has_split(spec.path)


def build_dataset(spec: str | DataSpec, split: str = "all", labels: str | LabelSet = "fse25",
                  transform: Callable[..., Any] | None = None, *, align: bool = False,
                  size: int = 112, val_fraction: float = 0.1, seed: int = 0,
                  skip_bad: bool = False) -> ParsingDataset | Subset:
    """The ``split`` of a ``--data`` spec.

    CelebAMask-HQ and folders with ``train.txt`` use their own splits. Elsewhere ``train`` and
    ``val`` are a seeded random partition (``val_fraction``, ``seed``) of everything, and
    ``test`` does not exist: evaluate a separately generated set with ``split="all"``.
    """
    spec = parse_data_spec(spec) if isinstance(spec, str) else spec
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    official = has_official_split(spec)
    ds = _DATA_KINDS.get(spec.kind).open(
        spec.path, split if official else "all", labels=labels, transform=transform,
        skip_bad=skip_bad, align=align, size=size)
    if official or split == "all":
        return ds
    if split == "test":
        raise InputError(f"{spec}: no test split for this kind; evaluate a separately generated "
                         "set with --split all, or the held-out part with --split val")
    train_idx, val_idx = split_indices(len(ds), val_fraction, seed)
    return Subset(ds, train_idx if split == "train" else val_idx)
