"""Training sets of aligned faces: ImageFolder, insightface RecordIO, the synthetic set.

Every dataset yields a sample (:mod:`parsing.core.samples`) ``{"image": uint8 (3, H, W),
"label": int}`` plus ``"mask": uint8 (H, W)`` (FSE-25 ids) when it has masks, and does nothing
random: flips and erasing happen on the device after the loader (:mod:`fserasing.augment`), so
a run resumes exactly with any number of workers. With ``skip_bad=True`` an unreadable sample
comes back as a :class:`~parsing.core.samples.BadSample` and :func:`collate_faces` counts it
and fills its slot with another sample of the batch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate
from torchvision.datasets.folder import find_classes, make_dataset

from fserasing.masks import open_mask_source
from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.io import IMAGE_EXTENSIONS, decode_image
from parsing.core.labels import FSE25
from parsing.core.pixels import image_tensor
from parsing.core.recordio import RecordIOReader, read_layout
from parsing.core.registry import Registry
from parsing.core.samples import BadSample, read_or_skip
from parsing.synth import SynthFaces

__all__ = [
    "FaceDataset",
    "ImageFolderFaces",
    "RecordIOFaces",
    "SynthFaceSet",
    "collate_faces",
    "create_face_dataset",
    "decode_face",
    "list_face_datasets",
    "open_dataset",
    "register_face_dataset",
]


def decode_face(data: bytes, where: str, size: int | None = 112) -> torch.Tensor:
    """Decode JPEG/PNG bytes to a (3, H, W) uint8 RGB tensor; DataError names ``where``."""
    return _check_size(image_tensor(decode_image(data, where)), where, size)


def _check_size(image: torch.Tensor, where: str, size: int | None) -> torch.Tensor:
    if size is not None and tuple(image.shape[1:]) != (size, size):
        raise DataError(f"{where}: image is {image.shape[2]}x{image.shape[1]}, expected "
                        f"aligned {size}x{size} faces")
    return image


class FaceDataset(Dataset):
    """Base of the face training sets.

    Subclasses set ``root``, ``keys`` (each sample's path under ``root``), ``labels`` and
    ``num_classes``; ``_read(i)`` reads ``image_path(i)`` unless overridden.
    ``_read(i)`` returns the sample without ``"mask"``; a mask source
    (:func:`fserasing.open_mask_source`: folder, tensor file, callable) pairs masks with
    samples by that path. A new reader is one subclass decorated with
    ``@register_face_dataset("name")`` whose static ``detect(path)`` recognises its folders.
    """

    root: Path
    num_classes: int
    keys: list[str]
    labels: torch.Tensor

    def __init__(self, masks: Any = None, skip_bad: bool = False, size: int | None = 112):
        self.mask_source = open_mask_source(masks) if masks is not None else None
        self.skip_bad = skip_bad
        self.size = size

    @staticmethod
    def detect(path: Path) -> bool:
        """Whether ``path`` is in this reader's format (:func:`open_dataset`)."""
        return False

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> dict[str, Any]:
        """Image count, identity count and a SHA-256 of the (key, label) list: what a resumed
        run checks it continues on the same data."""
        digest = hashlib.sha256()
        for key, label in zip(self.keys, self.labels.tolist(), strict=True):
            digest.update(f"{key}\t{label}\n".encode())
        return {"images": len(self.keys), "identities": int(self.num_classes),
                "files": digest.hexdigest()}

    def image_path(self, index: int) -> Path:
        return self.root / self.keys[index]

    def _widen_classes(self, num_classes: int | None, where: Path) -> None:
        """Use ``num_classes`` classifier rows (>= the identities found) if given."""
        if num_classes is not None:
            if num_classes < self.num_classes:
                raise DataError(f"{where}: holds {self.num_classes} identities but num_classes "
                                f"is {num_classes}")
            self.num_classes = num_classes

    def _check_masks(self) -> None:
        if self.mask_source is not None:
            self.mask_source.check_keys(self.keys, self.root)

    def _read(self, index: int) -> dict[str, Any]:
        """The sample ``index`` without its mask source's mask."""
        path = self.image_path(index)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: unreadable image ({exc.strerror})") from None
        return {"image": decode_face(data, str(path), self.size),
                "label": int(self.labels[index])}

    def _mask(self, index: int, image: torch.Tensor) -> torch.Tensor:
        path = self.image_path(index)
        mask = self.mask_source.load(index, path, self.root)
        problem = None
        if mask.shape != image.shape[1:]:
            problem = f"mask is {tuple(mask.shape)}, image is {tuple(image.shape[1:])}"
        else:
            try:
                FSE25.check(mask, "mask")
            except LabelError as exc:  # a corrupt data file: skippable like any other
                problem = str(exc).removeprefix("mask: ")
        if problem is not None:  # where it came from is only worked out for the message
            raise DataError(f"{self.mask_source.describe(index, path, self.root)}: {problem}")
        return mask.to(torch.uint8)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        return read_or_skip(lambda: self._sample(index), self.skip_bad)

    def _sample(self, index: int) -> dict[str, Any]:
        sample = self._read(index)
        if self.mask_source is not None:
            sample["mask"] = self._mask(index, sample["image"])
        return sample


_FACE_DATASETS: Registry[type[FaceDataset]] = Registry("dataset kind")


def register_face_dataset(name: str) -> Callable[[type[FaceDataset]], type[FaceDataset]]:
    """Class decorator adding a training-set reader: :func:`open_dataset` uses it for a path
    its ``detect(path)`` accepts, trying the readers in registration order."""
    return _FACE_DATASETS.register(name)


def create_face_dataset(name: str, root: str | os.PathLike, **kwargs: Any) -> FaceDataset:
    """The registered reader ``name`` on ``root`` (``masks``, ``skip_bad``, ``size``,
    ``num_classes`` as in :func:`open_dataset`)."""
    return _FACE_DATASETS.create(name, root, **kwargs)


def list_face_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered training-set readers matching ``pattern``."""
    return _FACE_DATASETS.names(pattern)


@register_face_dataset("imagefolder")
class ImageFolderFaces(FaceDataset):
    """Aligned faces, one folder per identity; labels are the sorted folder indices."""

    def __init__(self, root: str | os.PathLike, masks: Any = None, skip_bad: bool = False,
                 size: int | None = 112, num_classes: int | None = None) -> None:
        super().__init__(masks, skip_bad, size)
        self.root = Path(root)
        try:
            self.classes, class_to_idx = find_classes(str(self.root))
            items = make_dataset(str(self.root), class_to_idx, extensions=IMAGE_EXTENSIONS)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise DataError(f"{self.root}: not an image folder of identities ({exc})") from None
        self.keys = [str(Path(p).relative_to(self.root)) for p, _ in items]
        self.labels = torch.tensor([c for _, c in items], dtype=torch.long)
        self.num_classes = len(self.classes)
        self._widen_classes(num_classes, self.root)
        self._check_masks()


@register_face_dataset("recordio")
class RecordIOFaces(FaceDataset):
    """insightface ``train.rec`` + ``train.idx`` (reference §5.4), read without mxnet.

    With the header record (key 0, flag > 0) the images are keys ``1..a-1`` and the identity
    records say which key range belongs to which identity; each image's label is checked
    against them. A header with an empty identity range (``b == a``: no identity records, as
    insightface's reader accepts) and a file without a header take every image's label as it
    is (all keys are images without the header). A label
    that is not a whole number in ``0..num_classes-1``, or that disagrees with its identity
    record, raises DataError naming the record (or is skipped with ``skip_bad``).
    """

    def __init__(self, root: str | os.PathLike, masks: Any = None, skip_bad: bool = False,
                 size: int | None = 112, num_classes: int | None = None) -> None:
        super().__init__(masks, skip_bad, size)
        root = Path(root)
        rec = root / "train.rec" if root.is_dir() else root
        self.root = rec.parent
        self.reader = RecordIOReader(rec)
        image_keys, identity_keys = read_layout(self.reader)
        self.expected: np.ndarray | None = None
        if identity_keys:
            self.num_classes = len(identity_keys)
            self.expected = self._identity_labels(identity_keys.start, identity_keys.stop)
            labels = self.expected
        else:
            labels = np.array([self._label(k, None) for k in image_keys], dtype=np.int64)
            self.num_classes = int(labels.max(initial=-1)) + 1
        self._widen_classes(num_classes, rec)
        self.image_keys = image_keys
        self.keys = [str(k) for k in image_keys]
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        self._check_masks()

    @staticmethod
    def detect(path: Path) -> bool:
        return path.suffix == ".rec" or (path / "train.rec").is_file()

    def _identity_labels(self, first_id: int, end_id: int) -> np.ndarray:
        expected = np.full(first_id - 1, -1, dtype=np.int64)
        for identity, key in enumerate(range(first_id, end_id)):
            head = self.reader.read_labels(key)
            start, stop = (int(v) for v in (head.labels + (0, 0))[:2])
            if head.flag < 2 or not 1 <= start <= stop <= first_id:
                raise DataError(f"{self.reader.where(key)}: identity record with key range "
                                f"{head.labels} outside the images 1..{first_id - 1}")
            expected[start - 1: stop - 1] = identity
        if (expected < 0).any():
            key = int(np.flatnonzero(expected < 0)[0]) + 1
            raise DataError(f"{self.reader.where(key)}: image belongs to no identity record")
        return expected

    def _label(self, key: int, header: Any) -> int:
        head = header if header is not None else self.reader.read_labels(key)
        value = head.label
        if not (value >= 0 and float(value).is_integer()):
            raise DataError(f"{self.reader.where(key)}: label {value} is not an identity index")
        return int(value)

    def _read(self, index: int) -> dict[str, Any]:
        key = self.image_keys[index]
        header, payload = self.reader.read_header(key)
        label = self._label(key, header)
        if self.expected is not None and label != self.expected[index]:
            raise DataError(f"{self.reader.where(key)}: label {label} but its identity record "
                            f"says {self.expected[index]}")
        if label >= self.num_classes:
            raise DataError(f"{self.reader.where(key)}: label {label} >= num_classes "
                            f"{self.num_classes}")
        return {"image": decode_face(payload, self.reader.where(key), self.size), "label": label}


@register_face_dataset("synth")
class SynthFaceSet(FaceDataset):
    """The synthetic set of ``python -m parsing.synth``, read by :class:`SynthFaces`.

    Labels are the sorted index of each identity; ``masks="labels"`` uses the set's own
    ``labels_25`` maps, any other mask source is used as given.
    """

    def __init__(self, root: str | os.PathLike, masks: Any = None, skip_bad: bool = False,
                 size: int | None = 112, num_classes: int | None = None) -> None:
        root = Path(root)
        self.own_masks = isinstance(masks, str) and masks == "labels"
        super().__init__(None if self.own_masks else masks, skip_bad, size)
        self.faces = SynthFaces(root)
        if len(self.faces) == 0:
            raise DataError(f"{root}: no images listed in anno_list.csv")
        self.root = root / "images"
        self.identities = sorted(set(self.faces.identities))
        to_label = {c: i for i, c in enumerate(self.identities)}
        self.keys = [f"{fid:06d}.png" for fid in self.faces.frame_ids]
        self.labels = torch.tensor([to_label[c] for c in self.faces.identities],
                                   dtype=torch.long)
        self.num_classes = len(self.identities)
        self._widen_classes(num_classes, root)
        if self.own_masks:
            missing = [k for k in self.faces.frame_ids
                       if not (root / "labels_25" / f"{k:06d}_seg.png").is_file()]
            if missing:
                raise DataError(f"{len(missing)} of {len(self.keys)} images have no mask (e.g. "
                                f"{root / 'labels_25' / f'{missing[0]:06d}_seg.png'})")
        self._check_masks()

    @staticmethod
    def detect(path: Path) -> bool:
        return (path / "identities.csv").is_file() and (path / "anno_list.csv").is_file()

    def _read(self, index: int) -> dict[str, Any]:
        where = str(self.faces.image_path(index))
        if not self.own_masks:
            image = _check_size(self.faces.load_image(index), where, self.size)
            return {"image": image, "label": int(self.labels[index])}
        image, label_map = self.faces.load(index)  # FSE-25 checked, sizes matched
        return {"image": _check_size(image, where, self.size), "label": int(self.labels[index]),
                "mask": label_map}


def open_dataset(path: str | os.PathLike, masks: Any = None, skip_bad: bool = False,
                 size: int | None = 112, num_classes: int | None = None) -> FaceDataset:
    """Pick the reader from the folder: the first registered one whose ``detect`` accepts it
    (``train.rec`` -> RecordIO, ``identities.csv`` and ``anno_list.csv`` -> synthetic set),
    else an ImageFolder of identities. Readers are called ``reader(path, masks, skip_bad, size,
    num_classes)``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such dataset")
    reader = next((_FACE_DATASETS.get(name) for name in _FACE_DATASETS
                   if _FACE_DATASETS.get(name).detect(path)), ImageFolderFaces)
    if isinstance(masks, str) and masks == "labels" and reader is not SynthFaceSet:
        raise InputError(f"{path}: masks='labels' needs a parsing.synth folder")
    return reader(path, masks, skip_bad, size, num_classes)


def collate_faces(batch: list[dict[str, Any] | BadSample]) -> dict[str, Any]:
    """``default_collate`` plus ``"skipped"``: how many samples were unreadable
    (:class:`BadSample`).

    Their slots are filled with copies of readable samples of the same batch, so every batch
    keeps its size (DDP and PartialFC need the same batch size on every process).
    """
    good = [s for s in batch if not isinstance(s, BadSample)]
    if not good:
        raise DataError(f"all {len(batch)} samples of a batch are unreadable")
    out = default_collate([s if not isinstance(s, BadSample) else good[i % len(good)]
                           for i, s in enumerate(batch)])
    out["skipped"] = len(batch) - len(good)
    return out
