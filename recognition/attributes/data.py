"""Readers of facial attribute and expression data sets, in their published layouts.

``open_attribute_dataset("celeba:PATH", split="train")`` picks the reader by its prefix:

* ``celeba``: ``list_attr_celeba.txt`` (a count line, a line of the 40 attribute names, then
  ``000001.jpg -1  1 ...`` rows of -1/1), ``list_eval_partition.txt`` (``000001.jpg 0``:
  0 train, 1 val, 2 test) and ``img_align_celeba/``, either all in PATH or in the published
  ``Anno/``, ``Eval/`` and ``Img/`` folders.
* ``rafdb``: RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (the published spelling;
  ``train_00001.jpg 5`` with labels 1-7 = surprise, fear, disgust, happiness, sadness, anger,
  neutral) and ``Image/aligned/train_00001_aligned.jpg``; the split is the name's prefix
  (RAF-DB has train and test only).
* ``affectnet``: ``training.csv`` / ``validation.csv`` (``subDirectory_filePath, face_x,
  face_y, face_width, face_height, facial_landmarks, expression, valence, arousal``) and
  ``Manually_Annotated_Images/``; expressions 0-7 (neutral, happiness, sadness, surprise,
  fear, disgust, anger, contempt); the non-face classes 8-10 (none, uncertain, no-face) are
  left out and counted, as users do; each image is cropped to its face box. The validation
  file serves as ``val`` and ``test`` (AffectNet's test set is not public).
* ``synth``: a ``python -m parsing.synth`` set: the CelebA lists it writes
  (:mod:`parsing.synth.attributes`) plus ``list_expression.txt``; ``masks="labels"`` uses
  its own label maps.

A sample is ``{"image": uint8 (3, S, S), "attributes": float32 (A,) of 0/1,
"expression": int}`` (the keys the data set has) plus ``"mask"`` (FSE-25, S x S) with a mask
source. Images that are not S x S are centre-cropped to a square and resized (masks with
nearest neighbours). A malformed row raises DataError naming the file and line; with
``skip_bad=True`` it is left out and counted in ``bad_rows``, and an unreadable image comes
back as a :class:`~parsing.core.samples.BadSample` (``collate_faces`` counts it).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.v2.functional as TF
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from fserasing.masks import MaskFolder, open_mask_source
from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.labels import FSE25
from parsing.core.registry import Registry
from parsing.core.samples import BadSample, read_or_skip
from recognition.data.datasets import decode_face

__all__ = ["AFFECTNET_EXPRESSIONS", "AttributeDataset", "RAFDB_EXPRESSIONS",
           "create_attribute_dataset", "list_attribute_datasets", "open_attribute_dataset",
           "register_attribute_dataset"]

log = logging.getLogger(__name__)

RAFDB_EXPRESSIONS = ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral")
AFFECTNET_EXPRESSIONS = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust",
                         "anger", "contempt")
_AFFECTNET_NON_FACE = (8, 9, 10)  # none, uncertain, no-face
SPLITS = {"train": 0, "val": 1, "test": 2}


class AttributeDataset(Dataset):
    """Base of the readers: ``root`` (images), ``keys`` (paths under it), ``attributes``
    (N, A) uint8 0/1 or None, ``expressions`` (N,) int64 or None, their names, optional face
    ``boxes`` (N, 4) x, y, w, h; ``bad_rows`` counts rows left out by ``skip_bad``."""

    root: Path
    keys: list[str]
    attribute_names: list[str]
    expression_names: list[str]
    attributes: torch.Tensor | None = None
    expressions: torch.Tensor | None = None
    boxes: torch.Tensor | None = None

    def __init__(self, masks: Any = None, skip_bad: bool = False, size: int = 112) -> None:
        self.mask_source = open_mask_source(masks) if masks is not None else None
        self.skip_bad, self.size = skip_bad, size
        self.bad_rows = 0
        self.attribute_names, self.expression_names = [], []

    def _bad(self, where: str, problem: str) -> None:
        """A malformed row: DataError, or counted with ``skip_bad``."""
        if not self.skip_bad:
            raise DataError(f"{where}: {problem}")
        log.warning("skipping bad row: %s: %s", where, problem)
        self.bad_rows += 1

    def _finish(self, split: str) -> None:
        if not self.keys:
            raise DataError(f"{self.root}: no {split} images listed")
        if self.mask_source is not None:
            self.mask_source.check_keys(self.keys, self.root)

    def __len__(self) -> int:
        return len(self.keys)

    def fingerprint(self) -> dict[str, Any]:
        """Image count, label names and a SHA-256 of the keys and labels: what a resumed run
        checks it continues on the same data."""
        digest = hashlib.sha256()
        for i, key in enumerate(self.keys):
            row = [] if self.attributes is None else self.attributes[i].tolist()
            row += [] if self.expressions is None else [int(self.expressions[i])]
            digest.update(f"{key}\t{row}\n".encode())
        return {"images": len(self.keys), "attributes": self.attribute_names,
                "expressions": self.expression_names, "files": digest.hexdigest()}

    def image_path(self, index: int) -> Path:
        return self.root / self.keys[index]

    def _image(self, index: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """The image, cropped to its face box and then to a centred square, resized; and the
        square (x, y, w, h) it was cut from."""
        path = self.image_path(index)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: unreadable image ({exc.strerror})") from None
        image = decode_face(data, str(path), None)
        height, width = image.shape[1:]
        x0, y0, x1, y1 = 0, 0, width, height
        if self.boxes is not None:
            bx, by, bw, bh = self.boxes[index].tolist()
            x0, y0, x1, y1 = max(bx, 0), max(by, 0), min(bx + bw, width), min(by + bh, height)
            if x1 <= x0 or y1 <= y0:
                raise DataError(f"{path}: face box {bx},{by},{bw},{bh} lies outside the "
                                f"{width}x{height} image")
        side = min(x1 - x0, y1 - y0)
        box = (x0 + (x1 - x0 - side) // 2, y0 + (y1 - y0 - side) // 2, side, side)
        return self._fit(image, box, InterpolationMode.BILINEAR), box

    def _fit(self, image: torch.Tensor, box: tuple[int, int, int, int],
             mode: InterpolationMode) -> torch.Tensor:
        x, y, w, h = box
        if (x, y, w, h) != (0, 0, *image.shape[-1:-3:-1]) or w != self.size:
            image = TF.resized_crop(image, y, x, h, w, [self.size, self.size], mode,
                                    antialias=mode == InterpolationMode.BILINEAR)
        return image

    def _mask(self, index: int, box: tuple[int, int, int, int]) -> torch.Tensor:
        path = self.image_path(index)
        mask = self.mask_source.load(index, path, self.root)
        x, y, w, h = box
        if mask.shape[0] < y + h or mask.shape[1] < x + w:
            raise DataError(f"{self.mask_source.describe(index, path, self.root)}: mask is "
                            f"{tuple(mask.shape)}, smaller than its image")
        mask = self._fit(mask[None], box, InterpolationMode.NEAREST_EXACT)[0]
        try:
            FSE25.check(mask, "mask")
        except LabelError as exc:
            raise DataError(f"{self.mask_source.describe(index, path, self.root)}: "
                            f"{str(exc).removeprefix('mask: ')}") from None
        return mask.to(torch.uint8)

    def __getitem__(self, index: int) -> dict[str, Any] | BadSample:
        return read_or_skip(lambda: self._sample(index), self.skip_bad)

    def _sample(self, index: int) -> dict[str, Any]:
        image, box = self._image(index)
        sample: dict[str, Any] = {"image": image}
        if self.attributes is not None:
            sample["attributes"] = self.attributes[index].float()
        if self.expressions is not None:
            sample["expression"] = int(self.expressions[index])
        if self.mask_source is not None:
            sample["mask"] = self._mask(index, box)
        return sample


_ATTRIBUTE_DATASETS: Registry[type[AttributeDataset]] = Registry(
    "attribute data set", "as KIND:PATH")


def register_attribute_dataset(name: str
                               ) -> Callable[[type[AttributeDataset]], type[AttributeDataset]]:
    """Class decorator adding a reader ``cls(root, split, masks, skip_bad, size)``."""
    return _ATTRIBUTE_DATASETS.register(name)


def list_attribute_datasets(pattern: str = "*") -> list[str]:
    """Sorted names of the registered readers matching ``pattern``."""
    return _ATTRIBUTE_DATASETS.names(pattern)


def create_attribute_dataset(name: str, root: str | os.PathLike, split: str = "train",
                             **kwargs: Any) -> AttributeDataset:
    """The reader ``name`` on ``root`` (``masks``, ``skip_bad``, ``size`` as keywords)."""
    if split not in (*SPLITS, "all"):
        raise InputError(f"split must be train, val, test or all, got {split!r}")
    return _ATTRIBUTE_DATASETS.create(name, Path(root), split, **kwargs)


def open_attribute_dataset(spec: str, split: str = "train", **kwargs: Any) -> AttributeDataset:
    """The data set of a ``KIND:PATH`` spec (``celeba:/data/celeba``); see the module docstring."""
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise InputError(f"--data {spec!r}: expected KIND:PATH with KIND one of "
                         f"{', '.join(list_attribute_datasets())}")
    if not Path(path).exists():
        raise DataError(f"{path}: no such data set")
    return create_attribute_dataset(kind, path, split, **kwargs)


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None


def _find(root: Path, name: str, folders: tuple[str, ...]) -> Path:
    """``root/name`` or ``root/FOLDER/name`` for the first folder that has it."""
    for folder in ("", *folders):
        if (root / folder / name).exists():
            return root / folder / name
    raise DataError(f"{root}: no {name} (looked in {', '.join(['.', *folders])})")


class _ListFile:
    """CelebA's list layout: a count line, a line of names, then ``file v1 v2 ...`` rows of
    one value per name (or of ``width`` values)."""

    def __init__(self, reader: AttributeDataset, path: Path, values: Callable[[str], int],
                 allowed: str, width: int | None = None) -> None:
        lines = _read_lines(path)
        if len(lines) < 2:
            raise DataError(f"{path}: expected a count line and a line of names")
        try:
            count = int(lines[0].strip())
        except ValueError:
            raise DataError(f"{path}, line 1: expected the number of images, got "
                            f"{lines[0].strip()!r}") from None
        self.names = lines[1].split()
        width = len(self.names) if width is None else width
        self.rows: dict[str, list[int]] = {}
        rows = [(n, line) for n, line in enumerate(lines[2:], start=3) if line.strip()]
        if len(rows) != count:
            raise DataError(f"{path}, line 1: says {count} images, the file lists {len(rows)}")
        for n, line in rows:
            fields = line.split()
            where = f"{path}, line {n}"
            if len(fields) != width + 1:
                reader._bad(where, f"{len(fields) - 1} values, expected {width}")
            elif fields[0] in self.rows:
                reader._bad(where, f"{fields[0]} listed twice")
            else:
                try:
                    self.rows[fields[0]] = [values(v) for v in fields[1:]]
                except ValueError:
                    reader._bad(where, f"values must be {allowed}, got {' '.join(fields[1:])}")


def _sign(text: str) -> int:
    if text not in ("1", "-1"):
        raise ValueError(text)
    return int(text == "1")


def _partition(reader: AttributeDataset, path: Path, keys: list[str]) -> dict[str, int]:
    """``file split`` rows of ``list_eval_partition.txt`` for the listed ``keys``."""
    found: dict[str, int] = {}
    for n, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            reader._bad(f"{path}, line {n}", f"expected 'FILE 0|1|2', got {line.strip()!r}")
            continue
        found[fields[0]] = int(fields[1])
    for key in keys:
        if key not in found:
            reader._bad(str(path), f"no partition for {key}")
    return found


@register_attribute_dataset("celeba")
class CelebAAttributes(AttributeDataset):
    """CelebA's 40 attributes (module docstring); ``split``: train, val, test or all."""

    image_folder = "img_align_celeba"

    def __init__(self, root: Path, split: str = "train", masks: Any = None,
                 skip_bad: bool = False, size: int = 112) -> None:
        super().__init__(masks, skip_bad, size)
        attrs = _ListFile(self, _find(root, "list_attr_celeba.txt", ("Anno",)), _sign, "-1 or 1")
        names = sorted(attrs.rows)
        parts = _partition(self, _find(root, "list_eval_partition.txt", ("Eval",)), names)
        keep = [k for k in names if k in parts and (split == "all" or parts[k] == SPLITS[split])]
        self.root = _find(root, self.image_folder, ("Img",))
        self.keys = keep
        self.attribute_names = attrs.names
        self.attributes = torch.tensor([attrs.rows[k] for k in keep], dtype=torch.uint8
                                       ).view(len(keep), len(attrs.names))
        expressions = root / "list_expression.txt"
        if expressions.is_file():
            table = _ListFile(self, expressions, int, "a class index", width=1)
            self.expression_names = table.names
            labels = []
            for k in keep:
                value = table.rows.get(k, [-1])[0]
                if not 0 <= value < len(table.names):
                    raise DataError(f"{expressions}: {k} has no expression in 0.."
                                    f"{len(table.names) - 1}")
                labels.append(value)
            self.expressions = torch.tensor(labels, dtype=torch.long)
        self._finish(split)


class _SynthLabelMaps(MaskFolder):
    """A synthetic set's ``labels_25/<frame>_seg.png`` beside ``images/<frame>.png``."""

    def path_for(self, image_path: Path, root: Path) -> Path:
        return self.root / f"{Path(image_path).relative_to(root).stem}_seg.png"


@register_attribute_dataset("synth")
class SynthAttributes(CelebAAttributes):
    """A ``parsing.synth`` set read as CelebA (``masks="labels"``: its own label maps)."""

    image_folder = "images"

    def __init__(self, root: Path, split: str = "train", masks: Any = None,
                 skip_bad: bool = False, size: int = 112) -> None:
        if not (root / "list_attr_celeba.txt").is_file():
            raise DataError(f"{root}: no list_attr_celeba.txt (not a parsing.synth set, or one "
                            "written before it had attributes: write it again)")
        if isinstance(masks, str) and masks == "labels":
            masks = _SynthLabelMaps(root / "labels_25")
        super().__init__(root, split, masks, skip_bad, size)


@register_attribute_dataset("rafdb")
class RAFDBExpressions(AttributeDataset):
    """RAF-DB basic expressions (module docstring); ``split``: train, test or all."""

    def __init__(self, root: Path, split: str = "train", masks: Any = None,
                 skip_bad: bool = False, size: int = 112) -> None:
        super().__init__(masks, skip_bad, size)
        if split == "val":
            raise InputError("RAF-DB basic has no validation split; use train or test")
        path = _find(root, "list_patition_label.txt", ("EmoLabel",))
        self.root = _find(root, "aligned", ("Image",))
        keys, labels = [], []
        for n, line in enumerate(_read_lines(path), start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}, line {n}"
            if len(fields) != 2 or not fields[0].endswith(".jpg"):
                self._bad(where, f"expected 'NAME.jpg LABEL', got {line.strip()!r}")
            elif fields[1] not in {str(k) for k in range(1, 8)}:
                self._bad(where, f"expression {fields[1]!r} is not 1-7")
            elif not fields[0].startswith(("train_", "test_")):
                self._bad(where, f"{fields[0]}: the name must start with train_ or test_")
            elif split in ("all", fields[0].split("_")[0]):
                keys.append(fields[0].removesuffix(".jpg") + "_aligned.jpg")
                labels.append(int(fields[1]) - 1)
        self.keys = keys
        self.expression_names = list(RAFDB_EXPRESSIONS)
        self.expressions = torch.tensor(labels, dtype=torch.long)
        self._finish(split)


@register_attribute_dataset("affectnet")
class AffectNetExpressions(AttributeDataset):
    """AffectNet's eight expressions, faces cropped to their boxes (module docstring)."""

    COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height",
               "expression")

    def __init__(self, root: Path, split: str = "train", masks: Any = None,
                 skip_bad: bool = False, size: int = 112) -> None:
        super().__init__(masks, skip_bad, size)
        files = {"train": ["training.csv"], "val": ["validation.csv"],
                 "test": ["validation.csv"], "all": ["training.csv", "validation.csv"]}[split]
        self.root = _find(root, "Manually_Annotated_Images", ())
        self.non_face = 0  # rows of the classes 8-10, left out
        keys, boxes, labels = [], [], []
        for name in files:
            for key, box, label in self._rows(_find(root, name, ())):
                keys.append(key)
                boxes.append(box)
                labels.append(label)
        self.keys = keys
        self.boxes = torch.tensor(boxes, dtype=torch.long).view(-1, 4)
        self.expression_names = list(AFFECTNET_EXPRESSIONS)
        self.expressions = torch.tensor(labels, dtype=torch.long)
        self._finish(split)

    def _rows(self, path: Path) -> list[tuple[str, list[int], int]]:
        try:
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable ({exc})") from None
        header = [c.strip() for c in rows[0]] if rows else []
        missing = [c for c in self.COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}, line 1: no column {', '.join(missing)} in the header")
        col = [header.index(c) for c in self.COLUMNS]
        out = []
        for n, row in enumerate(rows[1:], start=2):
            if not row:
                continue
            where = f"{path}, line {n}"
            if len(row) != len(header):
                self._bad(where, f"{len(row)} columns, the header has {len(header)}")
                continue
            key, *numbers = (row[c].strip() for c in col)
            try:
                x, y, w, h, label = (int(float(v)) for v in numbers)
            except ValueError:
                self._bad(where, f"face box and expression must be numbers, got {numbers}")
                continue
            if label in _AFFECTNET_NON_FACE:
                self.non_face += 1
            elif not 0 <= label < len(AFFECTNET_EXPRESSIONS):
                self._bad(where, f"expression {label} is not 0-10")
            elif w <= 0 or h <= 0 or not key:
                self._bad(where, f"empty file name or face box {x},{y},{w},{h}")
            else:
                out.append((key, [x, y, w, h], label))
        return out
