"""Reading and writing images, label maps, checkpoints and trained models (``model.pt`` +
``model.json``), with errors that name the file."""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import pickle
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from parsing.core.errors import DataError, InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: A trained model in a run folder: its state_dict (and beside it, ``model.json``).
MODEL = "model.pt"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such image file") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, ...) as (H, W, 3) uint8 RGB; DataError names
    ``where`` (a record of a ``.rec`` file, say)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.array(im.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"{where}: undecodable image (no image format recognised)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where}: undecodable image ({exc})") from None


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as (H, W) uint8 ids."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"{path}: label maps must be single-channel, got mode {im.mode}")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"{path}: no such label map") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable label map ({exc})") from None
    if arr.max(initial=0) > 255:
        raise DataError(f"{path}: label ids above 255")
    return arr.astype(np.uint8)


def write_label_map(path: str | os.PathLike, label_map: np.ndarray | torch.Tensor) -> None:
    """Write (H, W) integer ids as an 8-bit single-channel PNG, creating folders."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(torch.as_tensor(label_map).cpu(), dtype=np.uint8)
    Image.fromarray(arr, mode="L").save(path)


def _umask() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it (and put it back)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync and rename
    it to ``path``: never a half file. On an exception the temporary file is removed.

    The file gets the mode of any new file (``0o666`` less the umask), not ``mkstemp``'s
    ``0o600``. A temporary file left by a killed process is named ``.{name}.XXXXXXXX``;
    :func:`remove_stale_temporaries` deletes those.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`: a checkpoint is whole or absent."""
    with atomic_write(path) as f:
        torch.save(obj, f)


def remove_stale_temporaries(folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_save` calls left for
    ``folder/name`` (one process per run folder: call it before that process saves)."""
    removed = []
    for name in names:
        pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}")
        for tmp in Path(folder).glob(f".{glob.escape(name)}.*"):
            if pattern.fullmatch(tmp.name) and tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    return removed


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by :func:`atomic_save` (``weights_only=True``: no code runs)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported (?:global: GLOBAL|class) ([\w.]+)", str(exc))
        if found is None:
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            reason = detail.group(1).strip() if detail else str(exc).splitlines()[0]
            raise DataError(f"{path}: not a loadable checkpoint ({reason})") from None
        raise DataError(f"{path}: refused: it holds objects that could run code when loaded "
                        f"(it names {found.group(1)}), not only tensors and plain values") from None
    except Exception as exc:  # torch raises several types for truncated/unsafe files
        first_line = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
        reason = f"{type(exc).__name__}: {first_line.strip()}"
        raise DataError(f"{path}: not a loadable checkpoint ({reason})") from None


def write_model(path: str | os.PathLike, state: dict[str, torch.Tensor],
                info: dict[str, Any]) -> None:
    """Write a state_dict to ``path`` (``model.pt``) and ``info`` beside it as JSON, same stem
    (``model.json``), both atomically."""
    path = Path(path)
    atomic_save({k: v.detach().cpu() for k, v in state.items()}, path)
    with atomic_write(path.with_suffix(".json"), "w") as f:
        f.write(json.dumps(info, indent=1))


def model_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, info) files of a trained model given as a run folder (``model.pt``,
    ``model.json``) or a weights file ``X.pt`` (``X.json`` beside it): what a command reads,
    and so must not write over."""
    path = Path(path)
    if path.is_dir():
        if not (path / MODEL).is_file():
            raise DataError(f"{path}: no {MODEL} (not a run folder, or its first epoch has not "
                            "ended)")
        path = path / MODEL
    return path, path.with_suffix(".json")


def read_model(path: str | os.PathLike, map_location: str | torch.device = "cpu"
               ) -> tuple[Any, dict[str, Any] | None, Path]:
    """(weights, info, weights file) of a run folder (its ``model.pt``) or a ``.pt`` file;
    ``info`` is the JSON beside it (``model.json``), None if there is none."""
    path, info_path = model_files(path)
    state = load_checkpoint(path, map_location)
    if not info_path.is_file():
        return state, None, path
    try:
        info = json.loads(info_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{info_path}: not readable JSON ({exc})") from None
    if not isinstance(info, dict):
        raise DataError(f"{info_path}: expected a JSON object")
    return state, info, path


def list_images(source: str | os.PathLike, flag: str = "--images"
                ) -> tuple[list[Path], list[Path]]:
    """(paths, relative paths) of the images under a folder (recursive) or in a list file.

    A list file holds one path per line (relative to the file); relative paths are then taken
    from the entries' common folder. No image at all is an :class:`InputError` naming ``flag``.
    """
    src = Path(source)
    if src.is_dir():
        paths = sorted(p for p in src.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS
                       and p.is_file())
        rels = [p.relative_to(src) for p in paths]
    elif src.is_file():
        entries = [line.strip() for line in src.read_text().splitlines()
                   if line.strip() and not line.startswith("#")]
        paths = [Path(e) if Path(e).is_absolute() else src.parent / e for e in entries]
        root = Path(os.path.commonpath([p.resolve().parent for p in paths])) if paths else src
        rels = [Path(e) if not Path(e).is_absolute() and ".." not in Path(e).parts
                else p.resolve().relative_to(root) for e, p in zip(entries, paths, strict=True)]
    else:
        raise InputError(f"{flag} {source}: no such folder or list file")
    if not paths:
        raise InputError(f"{flag} {source}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths, rels


def write_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor) -> None:
    """Write (H, W, 3) uint8 RGB as a PNG (or the format of the suffix), creating folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(torch.as_tensor(image).cpu(), dtype=np.uint8)).save(path)
