"""Face detection (MTCNN, five points) and dense landmarks (MediaPipe Face Mesh) on real photos.

Both models ship inside their wheels, so they run offline; both packages are optional
(the Makefile's ``.venv`` set-up installs them, reference §7). Without them the functions here raise
:class:`~parsing.core.errors.MissingDependencyError` (an ``ImportError`` and an ``InputError``).

Coordinates are pixels with the centre of pixel (row i, column j) at (x, y) = (j, i), the
convention of :func:`parsing.core.align.align_face` and ``skimage.draw``. Images are (H, W, 3)
uint8 arrays, PIL images or (3, H, W) uint8 tensors; a (B, H, W, 3) array, a (B, 3, H, W)
tensor or a list gives one result per image. Results are float32 tensors on the input
tensor's device (CPU otherwise).

Two work-arounds for the pinned versions live here rather than in site-packages:

* facenet-pytorch 2.5.3 imports ``requests`` at package import, only to download
  InceptionResnetV1 weights, which MTCNN never needs. When ``requests`` is absent (``make
  landmarks`` installs with ``--no-deps``) a placeholder stands in for the import and is
  removed again afterwards.
* mediapipe 0.10.21's pybind11_protobuf asks protobuf for ``MessageFactory.GetPrototype``,
  which protobuf 5 removed in favour of ``message_factory.GetMessageClass`` (same result).
  Without it ``import mediapipe`` prints an ``AttributeError`` and leaves the native proto
  casting uninitialised; we add the method back before the import when it is missing.
MediaPipe's C++ logger still prints a few ``W0000 ...`` lines to stderr on first use.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import sys
import types
import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from parsing.core.errors import InputError, MissingDependencyError

__all__ = [
    "Faces",
    "detect_faces",
    "face_mesh",
    "landmarks5_from_mesh",
    "load_face_mesh",
    "load_mtcnn",
    "to_hwc_uint8",
]

_INSTALL_HINT = (
    "install them as `make test` does: pip install --no-deps -c constraints.txt mediapipe "
    "facenet-pytorch absl-py attrs flatbuffers protobuf"
)

# Face Mesh indices of the five ArcFace points (subject's right = image-left first, reference §5.1):
# eye corners (33, 133) and (362, 263), nose tip 1, mouth corners 61 and 291.
_MESH_EYE_CORNERS = ((33, 133), (362, 263))
_MESH_NOSE_TIP = 1
_MESH_MOUTH_CORNERS = (61, 291)


class Faces(NamedTuple):
    """Faces found in one image, best score first."""

    boxes: torch.Tensor  # (N, 4) float32 x1, y1, x2, y2
    scores: torch.Tensor  # (N,) float32 detection probabilities
    landmarks5: torch.Tensor  # (N, 5, 2) float32 in ArcFace order


def to_hwc_uint8(image: Any) -> tuple[list[np.ndarray], bool, torch.device]:
    """The accepted image inputs (module docstring) as a list of (H, W, 3) uint8 arrays.

    Returns the list, whether the input was a batch, and the device results go to.
    """
    cpu = torch.device("cpu")
    if isinstance(image, (list, tuple)):
        items = [to_hwc_uint8(im) for im in image]
        if any(batched for _, batched, _ in items):
            raise InputError("a list of images must hold single images, not batches")
        device = items[0][2] if items else cpu
        return [arrs[0] for arrs, _, _ in items], True, device
    if isinstance(image, Image.Image):
        return [np.asarray(image.convert("RGB"))], False, cpu
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise InputError(
                f"expected a uint8 (3, H, W) or (B, 3, H, W) image tensor, got "
                f"{image.dtype} {tuple(image.shape)}"
            )
        arr = image.detach().cpu().movedim(-3, -1).numpy()
        batched = image.dim() == 4
        return (list(arr) if batched else [arr]), batched, image.device
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (3, 4) or image.shape[-1] != 3:
            raise InputError(
                f"expected a uint8 (H, W, 3) or (B, H, W, 3) image array, got "
                f"{image.dtype} {image.shape}"
            )
        batched = image.ndim == 4
        return (list(image) if batched else [image]), batched, cpu
    raise InputError(f"expected an image array, tensor or PIL image, got {type(image).__name__}")


@contextlib.contextmanager
def _placeholder_requests() -> Iterator[None]:
    """Stand-in ``requests`` for facenet-pytorch's import, removed again afterwards."""
    requests = types.ModuleType("requests")
    requests.adapters = types.ModuleType("requests.adapters")
    requests.adapters.HTTPAdapter = type("HTTPAdapter", (), {})
    sys.modules.update({"requests": requests, "requests.adapters": requests.adapters})
    try:
        yield
    finally:
        del sys.modules["requests"], sys.modules["requests.adapters"]


def _import_mtcnn() -> type:
    try:
        from facenet_pytorch import MTCNN
    except ModuleNotFoundError as exc:
        if exc.name != "requests":
            raise MissingDependencyError(
                f"MTCNN needs facenet-pytorch==2.5.3 ({exc}); {_INSTALL_HINT}"
            ) from None
        with _placeholder_requests():
            from facenet_pytorch import MTCNN
    return MTCNN


@functools.lru_cache(maxsize=4)
def load_mtcnn(device: str | torch.device = "cpu") -> torch.nn.Module:
    """The facenet-pytorch MTCNN detector (weights from its wheel) on ``device``; cached."""
    mtcnn = _import_mtcnn()(keep_all=True, select_largest=False, device=torch.device(device))
    return mtcnn.eval()


def _import_face_mesh() -> types.ModuleType:
    try:
        from google.protobuf import message_factory
    except ImportError as exc:
        raise MissingDependencyError(f"Face Mesh needs protobuf ({exc}); {_INSTALL_HINT}") from None
    if not hasattr(message_factory.MessageFactory, "GetPrototype"):
        message_factory.MessageFactory.GetPrototype = (
            lambda self, descriptor: message_factory.GetMessageClass(descriptor)
        )
    try:
        return importlib.import_module("mediapipe.python.solutions.face_mesh")
    except ImportError as exc:
        raise MissingDependencyError(
            f"Face Mesh needs mediapipe==0.10.21 ({exc}); {_INSTALL_HINT}"
        ) from None


@functools.lru_cache(maxsize=2)
def load_face_mesh(refine: bool = True) -> Any:
    """A static-image MediaPipe ``FaceMesh`` (bundled models, one face); cached.

    ``refine=True`` adds the ten iris points (478 landmarks instead of 468).
    """
    face_mesh_module = _import_face_mesh()
    with warnings.catch_warnings():  # mediapipe calls protobuf's deprecated FieldDescriptor.label
        warnings.filterwarnings("ignore", "label\\(\\) is deprecated", DeprecationWarning)
        return face_mesh_module.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=refine,
            min_detection_confidence=0.5,
        )


def detect_faces(
    image: Any, min_score: float = 0.9, device: str | torch.device | None = None
) -> Faces | list[Faces]:
    """Find faces and their five ArcFace landmarks with MTCNN.

    Images of equal size are detected in one batched pass (the library's batch mode); the
    networks run on ``device`` (default: the input tensor's device). Faces scoring below
    ``min_score`` are dropped. Returns :class:`Faces` for one image, a list for a batch.
    """
    arrays, batched, out_device = to_hwc_uint8(image)
    mtcnn = load_mtcnn(torch.device(device) if device is not None else out_device)
    results: list[Faces | None] = [None] * len(arrays)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, arr in enumerate(arrays):
        by_size.setdefault(arr.shape, []).append(i)
    for indices in by_size.values():
        stack = np.stack([arrays[i] for i in indices])
        boxes, scores, points = mtcnn.detect(stack, landmarks=True)
        for i, b, s, p in zip(indices, boxes, scores, points, strict=True):
            results[i] = _faces(b, s, p, min_score, out_device)
    return results if batched else results[0]


def _faces(boxes: Any, scores: Any, points: Any, min_score: float, device: torch.device) -> Faces:
    if boxes is None:
        empty = torch.zeros(0, device=device)
        return Faces(empty.reshape(0, 4), empty, empty.reshape(0, 5, 2))
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    s = torch.as_tensor(np.asarray(scores, dtype=np.float32))
    p = torch.as_tensor(np.asarray(points, dtype=np.float32))
    order = torch.argsort(s, descending=True)
    order = order[s[order] >= min_score]
    return Faces(b[order].to(device), s[order].to(device), p[order].to(device))


def face_mesh(image: Any, refine: bool = True) -> torch.Tensor | None | list[torch.Tensor | None]:
    """MediaPipe Face Mesh landmarks of the most prominent face, in pixels.

    Returns a (478, 2) float32 tensor ((468, 2) with ``refine=False``), or None when no face
    is found; a list of those for a batch (MediaPipe runs one image at a time).
    """
    arrays, batched, device = to_hwc_uint8(image)
    mesh = load_face_mesh(refine)
    out: list[torch.Tensor | None] = []
    for arr in arrays:
        result = mesh.process(np.ascontiguousarray(arr))
        if not result.multi_face_landmarks:
            out.append(None)
            continue
        h, w = arr.shape[:2]
        norm = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], np.float32)
        # MediaPipe's normalised coordinates put pixel edges at 0 and 1, centres at +0.5.
        pixels = norm * np.array([w, h], np.float32) - 0.5
        out.append(torch.from_numpy(pixels).to(device))
    return out if batched else out[0]


def landmarks5_from_mesh(mesh: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Face Mesh (..., 468+, 2) -> ArcFace five points (..., 5, 2): eye centres, nose, mouth."""
    p = torch.as_tensor(mesh)
    if p.dim() < 2 or p.shape[-1] != 2 or p.shape[-2] < 468:
        raise InputError(f"expected (..., 468, 2) Face Mesh landmarks, got {tuple(p.shape)}")
    (r0, r1), (l0, l1) = _MESH_EYE_CORNERS
    return torch.stack(
        [p[..., [r0, r1], :].mean(-2), p[..., [l0, l1], :].mean(-2), p[..., _MESH_NOSE_TIP, :],
         p[..., _MESH_MOUTH_CORNERS[0], :], p[..., _MESH_MOUTH_CORNERS[1], :]],
        dim=-2,
    )
