"""Synthetic face data sets: in memory, written to disk in parallel, and read back.

On disk the layout is FaceSynthetics' (reference §2.3) with FSE-25 labels::

    DIR/images/{frame_id:06d}.png           RGB face
    DIR/labels_25/{frame_id:06d}_seg.png    FSE-25 ids, one channel
    DIR/anno_list.csv                        frame_id,with_25
    DIR/landmarks.csv                        frame_id,x1,y1,...,x5,y5 (ArcFace order, ref. §5.1)
    DIR/identities.csv                       frame_id,identity
    DIR/list_attr_celeba.txt, list_eval_partition.txt, list_expression.txt
                                             attributes, split and expression in CelebA's
                                             layout (:mod:`parsing.synth.attributes`)
    DIR/occluders/{frame_id:06d}.png         with --occluders: 0 none, 1 sunglasses, 2 mask,
                                             3 hand, 4 scarf (one channel)

Occluders are drawn over the face that would be rendered without them. In ``labels_25``
sunglasses are glasses (23) and a scarf is clothing (22), what a parser should see there;
FSE-25 has no class for a surgical mask or a hand, so their pixels keep the class of the face
part they cover (the occluder mask tells they are covered). With ``identity_regions`` the
bound groups also get distinctive per-identity marks (``identity_marks``, see
:data:`parsing.synth.genes.MARK_GENES`) so a recognizer can tell people from those regions,
and nothing hides a marked region: no glasses over marked eyes or around_eyes, no hats and no
hair-of-the-day changes (tied back, fringe, hairline, volume) over marked hair. Per-image
pose, expression, light and camera still vary.

Image ``i`` shows identity ``i // images_per_identity`` and depends only on (seed, i), so
files are byte-identical for any number of worker processes.
"""

from __future__ import annotations

import contextlib
import csv
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors

from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.io import read_image, read_label_map
from parsing.core.labels import FSE25
from parsing.core.pixels import image_tensor
from parsing.core.progress import progress_bar
from parsing.synth.attributes import write_attribute_lists
from parsing.synth.genes import bound_groups, face_genes, occluder_genes, parse_occluders
from parsing.synth.render import Face, render_face
from parsing.synth.textures import texture_bank

MIN_SIZE = 64
_CHUNK = 32  # most images per worker task


def _check(n_identities: int, images_per_identity: int, size: int) -> None:
    if n_identities < 1:
        raise InputError(f"--identities must be at least 1, got {n_identities}")
    if images_per_identity < 1:
        raise InputError(f"--images-per-identity must be at least 1, got {images_per_identity}")
    if size < MIN_SIZE:
        raise InputError(f"--size must be at least {MIN_SIZE} pixels, got {size}")


def render_index(seed: int, index: int, images_per_identity: int, size: int = 112,
                 loose: bool = False, bound: frozenset[str] | None = None, marks: bool = False,
                 occluders: Sequence[str] = (), occluder_p: float = 0.5) -> Face:
    """Render image ``index`` of the data set with this seed (identity ``index // m``).

    ``marks``: distinctive marks in the bound groups; ``occluders``: kinds drawn over the face
    with probability ``occluder_p`` (then ``Face.occluders`` is the occluder mask).
    """
    genes, nuisance = face_genes(seed, index // images_per_identity, index,
                                 bound_groups(None) if bound is None else bound, marks)
    occluder = occluder_genes(seed, index, occluders, occluder_p)
    face = render_face(genes, nuisance, size, loose, occluder)
    if occluders and face.occluders is None:
        face = face._replace(occluders=np.zeros_like(face.label_map))
    return face


def _options(identity_regions: Iterable[int | str] | None, identity_marks: bool | None,
             occluders: Iterable[str] | None, occluder_p: float) -> tuple:
    if not 0.0 <= occluder_p <= 1.0:
        raise InputError(f"--occluder-p must be in [0, 1], got {occluder_p}")
    marks = identity_regions is not None if identity_marks is None else identity_marks
    return bound_groups(identity_regions), marks, parse_occluders(occluders or ())


def generate(
    n_identities: int,
    images_per_identity: int,
    seed: int,
    size: int = 112,
    identity_regions: Iterable[int | str] | None = None,
    loose: bool = False,
    identity_marks: bool | None = None,
    occluders: Iterable[str] | None = None,
    occluder_p: float = 0.5,
) -> tuple[torch.Tensor, ...]:
    """Render a data set in memory.

    Returns images (N, 3, S, S) uint8, label maps (N, S, S) uint8 (FSE-25), landmarks
    (N, 5, 2) float32 in pixel coordinates, identities (N,) int64, N = n_identities *
    images_per_identity. ``identity_regions`` (FSE-25 classes or groups, e.g. ``["eyes",
    "nose"]``) keeps identity only in those regions; everything else varies per image; those
    regions get distinctive marks unless ``identity_marks`` is False. With ``occluders``
    (kinds, e.g. ``["sunglasses", "mask"]``) a fifth tensor (N, S, S) uint8 holds the
    occluder masks (module docstring).
    """
    _check(n_identities, images_per_identity, size)
    bound, marks, kinds = _options(identity_regions, identity_marks, occluders, occluder_p)
    count = n_identities * images_per_identity
    with _serial_opencv():
        faces = [render_index(seed, i, images_per_identity, size, loose, bound, marks, kinds,
                              occluder_p) for i in range(count)]
    images = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2)
    out = (
        images.contiguous(),
        torch.from_numpy(np.stack([f.label_map for f in faces])),
        torch.from_numpy(np.stack([f.landmarks for f in faces])),
        torch.arange(count, dtype=torch.int64) // images_per_identity,
    )
    if kinds:
        out += (torch.from_numpy(np.stack([f.occluders for f in faces])),)
    return out


def _png(path: Path, array: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    path.write_bytes(data.tobytes())


def _write_chunk(job: tuple) -> np.ndarray:
    out, seed, start, stop, images_per_identity, size, loose, bound, marks, kinds, p = job
    landmarks = np.empty((stop - start, 5, 2), np.float32)
    for k, index in enumerate(range(start, stop)):
        face = render_index(seed, index, images_per_identity, size, loose, bound, marks, kinds, p)
        _png(out / "images" / f"{index:06d}.png", face.image[..., ::-1])  # OpenCV writes BGR
        _png(out / "labels_25" / f"{index:06d}_seg.png", face.label_map)
        if kinds:
            _png(out / "occluders" / f"{index:06d}.png", face.occluders)
        landmarks[k] = face.landmarks
    return landmarks


@contextlib.contextmanager
def _serial_opencv() -> Iterator[None]:
    """Keep OpenCV's thread pool out of rendering: faces are small and processes give the
    parallelism. Forked workers then never use a pool whose threads stayed in the parent
    (reconfiguring it in the child deadlocks), and they touch no torch (its OpenMP pool has
    the same problem): they render with numpy and OpenCV only.
    """
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _prepare(out: Path, occluders: bool = False) -> None:
    try:
        for sub in ("images", "labels_25", *(["occluders"] if occluders else [])):
            (out / sub).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise InputError(f"cannot write to output folder {out}: {exc.strerror or exc}") from None


def write_dataset(
    out: str | os.PathLike,
    n_identities: int,
    images_per_identity: int,
    seed: int,
    size: int = 112,
    identity_regions: Iterable[int | str] | None = None,
    loose: bool = False,
    workers: int | None = None,
    progress: bool = True,
    identity_marks: bool | None = None,
    occluders: Iterable[str] | None = None,
    occluder_p: float = 0.5,
) -> Path:
    """Render a data set into ``out`` (layout in the module docstring) with ``workers`` processes.

    ``workers`` defaults to the number of usable cores. Returns ``out`` as a ``Path``. The
    other arguments are those of :func:`generate`.
    """
    _check(n_identities, images_per_identity, size)
    bound, marks, kinds = _options(identity_regions, identity_marks, occluders, occluder_p)
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    out = Path(out)
    _prepare(out, bool(kinds))
    count = n_identities * images_per_identity
    workers = workers or len(os.sched_getaffinity(0))
    chunk = max(1, min(_CHUNK, count // (4 * workers)))  # chunking never changes the files
    jobs = [(out, seed, start, min(start + chunk, count), images_per_identity, size, loose, bound,
             marks, kinds, occluder_p) for start in range(0, count, chunk)]
    workers = min(workers, len(jobs))
    texture_bank(size)  # built once here, shared by forked workers
    bar = progress_bar(total=count, unit="img", desc="synth faces", disable=not progress)
    with _serial_opencv():
        if workers == 1:
            results = _run(map(_write_chunk, jobs), bar)
        else:
            with multiprocessing.get_context().Pool(workers) as pool:
                results = _run(pool.imap(_write_chunk, jobs), bar)
    bar.close()
    landmarks = np.concatenate(results).reshape(count, 10)
    ids = range(count)
    _write_csv(out / "anno_list.csv", ["frame_id", "with_25"], ([i, "True"] for i in ids))
    _write_csv(out / "landmarks.csv",
               ["frame_id", *(f"{a}{k}" for k in range(1, 6) for a in "xy")],
               ([i, *(f"{v:.4f}" for v in row)] for i, row in zip(ids, landmarks, strict=True)))
    _write_csv(out / "identities.csv", ["frame_id", "identity"],
               ([i, i // images_per_identity] for i in ids))
    write_attribute_lists(out, seed, count, images_per_identity, bound, marks, kinds, occluder_p)
    return out


def _run(chunks: Iterable[np.ndarray], bar: Any) -> list[np.ndarray]:
    results = []
    for landmarks in chunks:
        results.append(landmarks)
        bar.update(len(landmarks))
    return results


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path: Path, header: Sequence[str]) -> dict[int, list[str]]:
    """Rows of a CSV keyed by its first column (an integer frame id), checked against header."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (is this a parsing.synth data set?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not rows or [c.strip() for c in rows[0]] != list(header):
        raise DataError(f"{path}: expected the header {','.join(header)}")
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} columns")
            out[int(row[0])] = row[1:]
        except ValueError as exc:
            raise DataError(f"{path}, line {line}: malformed row ({exc})") from None
    return out


class SynthFaces(torch.utils.data.Dataset):
    """A data set written by ``python -m parsing.synth`` (or :func:`write_dataset`): the one
    reader of that layout (the parsing and recognition datasets read through it).

    ``ds[i]`` is a sample (:mod:`parsing.core.samples`): ``{"image": uint8 (3, H, W), "mask":
    FSE-25 ids uint8 (H, W), "landmarks": float32 (5, 2), "identity": int}``. A torchvision v2
    ``transform`` is called as ``transform(image, mask, keypoints)`` with ``tv_tensors`` Image,
    Mask and KeyPoints, so geometric transforms move the landmarks too (a horizontal flip also
    swaps which point is the image-left eye: reorder them if the ArcFace order matters).
    ``frame_ids`` and ``identities`` list every sample's frame id and identity.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: no such data set folder")
        self.transform = transform
        anno = _read_csv(self.root / "anno_list.csv", ["frame_id", "with_25"])
        self.frame_ids = sorted(i for i, (flag,) in anno.items()
                                if flag.strip().lower() in ("true", "1"))
        lm_header = ["frame_id", *(f"{a}{k}" for k in range(1, 6) for a in "xy")]
        landmarks = _read_csv(self.root / "landmarks.csv", lm_header)
        ids = _read_csv(self.root / "identities.csv", ["frame_id", "identity"])
        for name, table in (("landmarks.csv", landmarks), ("identities.csv", ids)):
            missing = [i for i in self.frame_ids if i not in table]
            if missing:
                raise DataError(f"{self.root / name}: no row for frame {missing[0]}")
        try:
            self._landmarks = torch.tensor(
                [[float(v) for v in landmarks[i]] for i in self.frame_ids], dtype=torch.float32
            ).reshape(-1, 5, 2)
            self.identities = [int(ids[i][0]) for i in self.frame_ids]
        except ValueError as exc:
            raise DataError(f"{self.root}: malformed landmarks or identities ({exc})") from None

    def __len__(self) -> int:
        return len(self.frame_ids)

    def occluder_mask(self, index: int) -> torch.Tensor:
        """(H, W) uint8 occluder kinds of sample ``index`` (0 everywhere without occluders/)."""
        fid = self.frame_ids[index]
        path = self.root / "occluders" / f"{fid:06d}.png"
        if not (self.root / "occluders").is_dir():
            image = read_image(self.root / "images" / f"{fid:06d}.png")
            return torch.zeros(image.shape[:2], dtype=torch.uint8)
        return torch.from_numpy(read_label_map(path))

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label_map = self.load(index)
        landmarks = self._landmarks[index]
        if self.transform is not None:
            image, label_map, landmarks = self.transform(
                tv_tensors.Image(image), tv_tensors.Mask(label_map),
                tv_tensors.KeyPoints(landmarks, canvas_size=tuple(image.shape[1:])))
            image, label_map, landmarks = (t.as_subclass(torch.Tensor)
                                           for t in (image, label_map, landmarks))
        return {"image": image, "mask": label_map, "landmarks": landmarks,
                "identity": self.identities[index]}

    def image_path(self, index: int) -> Path:
        return self.root / "images" / f"{self.frame_ids[index]:06d}.png"

    def load_image(self, index: int) -> torch.Tensor:
        """The image of sample ``index`` as stored: uint8 (3, H, W); DataError names the file."""
        return image_tensor(read_image(self.image_path(index)))

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``index`` as stored, without ``transform``: image uint8 (3, H, W) and
        FSE-25 label map uint8 (H, W); DataError names an unreadable or mismatched file."""
        image_path = self.image_path(index)
        label_path = self.root / "labels_25" / f"{self.frame_ids[index]:06d}_seg.png"
        image = self.load_image(index)
        label_map = torch.from_numpy(read_label_map(label_path))
        try:
            FSE25.check(label_map, str(label_path))
        except LabelError as exc:  # a corrupt data file: skippable like any other
            raise DataError(str(exc)) from None
        if label_map.shape != image.shape[1:]:
            raise DataError(f"{label_path}: size {tuple(label_map.shape)} does not match "
                            f"{image_path} ({tuple(image.shape[1:])})")
        return image, label_map
