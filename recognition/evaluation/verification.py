"""Verification ``.bin`` sets (LFW, CFP-FP, AgeDB-30): safe loading and 10-fold accuracy.

A ``.bin`` is a pickle of ``(images, issame)``: 2N encoded images (bytes; pair i is images
2i and 2i + 1) and N booleans, written by Python 2 in insightface's releases. Plain
``pickle.load`` runs whatever a pickle names, so :func:`load_bin` uses an unpickler that
resolves only the handful of numpy names a boolean array needs and refuses everything else.
Accuracy follows insightface's ``verification.py`` (reference §5.5): squared L2 distance of
L2-normalised flip-fused embeddings, 10 folds in file order, the threshold from
``arange(0, 4, 0.01)`` with the best accuracy on the other nine folds, mean ± std.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import KFold
from torchvision.transforms.v2 import functional as TF

from parsing.core.errors import DataError, InputError
from parsing.core.progress import progress_bar
from recognition.evaluation.embedding import embed_batches, image_batches

THRESHOLDS = np.arange(0, 4, 0.01)

_reconstruct = np.array([True]).__reduce__()[0]
_scalar = np.bool_(True).__reduce__()[0]
_frombuffer = np.array([True]).__reduce_ex__(5)[0]


def _only_bool(dtype) -> np.dtype:
    dtype = np.dtype(dtype.decode() if isinstance(dtype, bytes) else dtype)
    if dtype != np.bool_:
        raise pickle.UnpicklingError(f"dtype {dtype} (only boolean arrays are accepted)")
    return dtype


class _NDArrayName:
    """Stands for ``numpy.ndarray`` in a .bin: an argument of ``_reconstruct``, never called."""


def _safe_reconstruct(subtype, shape, dtype):
    # numpy pickles an array as _reconstruct(ndarray, (0,), "b") + __setstate__(bool data)
    if subtype is not _NDArrayName or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"_reconstruct({subtype!r}, {shape!r})")
    return _reconstruct(np.ndarray, (0,), dtype)


def _safe_dtype(name, align=False, copy=False):
    _only_bool(name)
    return np.dtype(name.decode() if isinstance(name, bytes) else name, align, copy)


def _safe_scalar(dtype, data):
    return _scalar(_only_bool(dtype), data)


def _safe_frombuffer(buffer, dtype, shape, order):
    # protocol-5 pickles of contiguous arrays
    return _frombuffer(buffer, _only_bool(dtype), shape, order)


def _latin1_bytes(text, encoding):
    # Python 3 writes bytes in protocol <= 2 pickles as _codecs.encode(text, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return codecs.encode(text, "latin1")


# Every global a .bin may name: what numpy (either module path) and Python 3's protocol-2
# bytes need. Each is a checking wrapper, so even these cannot build anything but bools.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy.core.multiarray", "scalar"): _safe_scalar,
    ("numpy._core.multiarray", "scalar"): _safe_scalar,
    ("numpy.core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _safe_frombuffer,
    ("numpy", "ndarray"): _NDArrayName,
    ("numpy", "dtype"): _safe_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _BinUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a .bin holds only encoded images and "
                "booleans, and loading this name could run code") from None


def load_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """Read a verification ``.bin`` without running code -> (2N encoded images, N bools)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such verification file") from None
    try:
        # encoding="bytes": Python 2 str objects (the encoded images) stay bytes
        loaded = _BinUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise DataError(f"{path}: not a verification .bin ({exc})") from None
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise DataError(f"{path}: expected a pickled (images, issame) pair, got "
                        f"{type(loaded).__name__}")
    images, issame = loaded
    if not isinstance(images, (list, tuple)) or not all(
            isinstance(b, (bytes, bytearray)) for b in images):
        raise DataError(f"{path}: the first item must be a list of encoded images (bytes)")
    issame = np.asarray(issame)
    if issame.dtype != np.bool_ or issame.ndim != 1:
        raise DataError(f"{path}: the second item must be a list of booleans, got "
                        f"{issame.dtype} of shape {issame.shape}")
    if len(images) != 2 * len(issame):
        raise DataError(f"{path}: {len(images)} images for {len(issame)} pairs "
                        f"(expected {2 * len(issame)})")
    return [bytes(b) for b in images], issame


def decode_images(blobs: list[bytes], size: int = 112, source: str | os.PathLike = "images",
                  progress: bool = True) -> torch.Tensor:
    """Encoded images -> (N, 3, size, size) uint8 RGB (shorter side resized, centre crop)."""
    out = torch.empty(len(blobs), 3, size, size, dtype=torch.uint8)
    for i, blob in enumerate(progress_bar(blobs, desc=f"decode {Path(source).name}",
                                  disable=not progress, leave=False)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                image = TF.pil_to_tensor(im.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise DataError(f"{source}: image {i} is not a readable image ({exc})") from None
        if image.shape[1:] != (size, size):
            image = TF.center_crop(TF.resize(image, size, antialias=True), size)
        out[i] = image
    return out


def verification_accuracy(embeddings: np.ndarray | torch.Tensor, issame: np.ndarray,
                          n_folds: int = 10, thresholds: np.ndarray = THRESHOLDS) -> dict:
    """10-fold accuracy of pairs (2i, 2i + 1) of L2-normalised embeddings (insightface rule).

    For each fold, the threshold with the best accuracy on the other folds (first of equals;
    "same" when the squared distance is below it) is applied to the fold. All thresholds and
    folds at once: a (thresholds, pairs) table of correct decisions summed per fold.
    """
    emb = np.asarray(torch.as_tensor(embeddings).cpu(), dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    if emb.ndim != 2 or len(emb) != 2 * len(issame):
        raise InputError(f"need (2N, D) embeddings for {len(issame)} pairs, got {emb.shape}")
    if len(issame) < n_folds:
        raise InputError(f"{len(issame)} pairs cannot be split into {n_folds} folds")
    dist = np.sum(np.square(emb[0::2] - emb[1::2]), axis=1)
    fold = np.empty(len(issame), dtype=np.int64)
    for f, (_, test) in enumerate(KFold(n_splits=n_folds, shuffle=False).split(dist)):
        fold[test] = f
    correct = (dist[None, :] < thresholds[:, None]) == issame[None, :]
    per_fold = np.stack([np.count_nonzero(correct[:, fold == f], axis=1)
                         for f in range(n_folds)], axis=1)  # (thresholds, folds)
    fold_size = np.bincount(fold, minlength=n_folds)
    # same denominator for every threshold of a fold: argmax of counts == argmax of accuracy
    best = np.argmax(per_fold.sum(1, keepdims=True) - per_fold, axis=0)
    accuracy = per_fold[best, np.arange(n_folds)] / fold_size
    return {
        "accuracy": float(np.mean(accuracy)),
        "std": float(np.std(accuracy)),
        "fold_accuracy": accuracy.tolist(),
        "best_threshold": thresholds[best].tolist(),
        "pairs": int(len(issame)),
    }


def distinct_pairs(identities: np.ndarray) -> tuple[int, int]:
    """How many distinct (genuine, impostor) image pairs these identity labels make."""
    counts = np.unique(np.asarray(identities), return_counts=True)[1]
    genuine = int((counts * (counts - 1) // 2).sum())
    return genuine, len(identities) * (len(identities) - 1) // 2 - genuine


def sample_pairs(identities: np.ndarray, n_pairs: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_pairs`` distinct-image pairs, half of them genuine, in random order ->
    (first indices, second indices, issame)."""
    identities = np.asarray(identities)
    rng = np.random.default_rng(seed)
    subjects, inverse, counts = np.unique(identities, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts >= 2)
    if len(repeated) == 0 or len(subjects) < 2:
        raise InputError("need at least two identities, one of them with two or more images")
    n_genuine = n_pairs // 2
    genuine, impostor = distinct_pairs(identities)
    if n_pairs < 1 or n_genuine > genuine or n_pairs - n_genuine > impostor:
        raise InputError(f"--pairs {n_pairs}: {len(identities)} images make only {genuine} "
                         f"genuine and {impostor} impostor pairs (half of the pairs are genuine)")
    members = [np.flatnonzero(inverse == s) for s in range(len(subjects))]
    first, second = [], []
    for s in rng.choice(repeated, n_genuine):
        a, b = rng.choice(members[s], 2, replace=False)
        first.append(a)
        second.append(b)
    for _ in range(n_pairs - n_genuine):
        s, t = rng.choice(len(subjects), 2, replace=False)
        first.append(rng.choice(members[s]))
        second.append(rng.choice(members[t]))
    order = rng.permutation(n_pairs)
    issame = np.arange(n_pairs) < n_genuine
    return np.asarray(first)[order], np.asarray(second)[order], issame[order]


def write_bin(path: str | os.PathLike, images: list[bytes], issame: np.ndarray) -> None:
    """Write a verification ``.bin``: a pickle of (2N encoded images, N booleans)."""
    issame = [bool(v) for v in np.asarray(issame, dtype=bool)]
    if len(images) != 2 * len(issame):
        raise InputError(f"{len(images)} images for {len(issame)} pairs (expected "
                         f"{2 * len(issame)})")
    with open(path, "wb") as f:
        pickle.dump(([bytes(b) for b in images], issame), f, protocol=pickle.HIGHEST_PROTOCOL)


def evaluate_bin(model: torch.nn.Module, path: str | Path, batch_size: int = 64,
                 flip: bool = True, device: torch.device | str = "cpu") -> dict:
    """Accuracy ± std of ``model`` on one ``.bin`` set (see ``verification_accuracy``)."""
    blobs, issame = load_bin(path)
    images = decode_images(blobs, source=path)
    features = embed_batches(model, image_batches(images, batch_size), flip=flip,
                             device=device, total=len(images), desc=f"embed {Path(path).name}")
    return verification_accuracy(F.normalize(features.double(), dim=1), issame)
