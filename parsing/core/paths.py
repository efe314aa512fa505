"""Where a command may write: never over, into or around its inputs, never over old files.

Every CLI checks its outputs with these helpers before it writes anything:

* :func:`output_dir` refuses an output folder that equals, lies inside or contains an input
  (the last only where the command writes the whole folder; see ``entries``), and a folder
  that already holds files unless ``--overwrite`` is given;
* :func:`output_file` refuses a file that is an input or lies inside an input folder, and an
  existing file unless ``--overwrite`` is given;
* :func:`check_unique_keys` refuses two inputs that would share one output name
  (``face.jpg`` and ``face.png`` both give the mask ``face.png``).

Inputs are given as ``{flag: path}`` (``None`` paths are ignored), so messages name both flags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from parsing.core.errors import InputError

__all__ = ["check_unique_keys", "data_path", "output_dir", "output_file"]

Inputs = Mapping[str, "str | os.PathLike | Sequence[str | os.PathLike] | None"]


def data_path(spec: str | None) -> str | None:
    """The path of a ``KIND:PATH`` data spec (``synth:data/x`` -> ``data/x``); else as given."""
    if spec is None:
        return None
    kind, sep, rest = spec.partition(":")
    return rest if sep and kind.isalpha() and len(kind) > 1 else spec


def _resolve(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _inputs(inputs: Inputs) -> list[tuple[str, Path]]:
    out = []
    for flag, value in inputs.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        out += [(flag, _resolve(v)) for v in values if v is not None and str(v) != ""]
    return out


def _overlap(target: Path, inputs: list[tuple[str, Path]], flag: str, shown: Path,
             contains: bool) -> None:
    for in_flag, src in inputs:
        if target == src:
            raise InputError(f"{flag} {shown}: is the {in_flag} input; choose another path")
        if src in target.parents:
            raise InputError(f"{flag} {shown}: lies inside the {in_flag} input {src}; choose a "
                             "path outside it")
        if contains and target in src.parents:
            raise InputError(f"{flag} {shown}: contains the {in_flag} input {src}; choose a "
                             "path beside it")


def output_dir(out: str | os.PathLike, inputs: Inputs, *, overwrite: bool = False,
               flag: str = "--out", entries: Iterable[str] | None = None) -> Path:
    """Check and create an output folder; returns it as a ``Path``.

    ``entries``: the files and sub-folders the command writes in ``out``, when that is all it
    writes there. ``out`` may then hold an input beside them (``parsing.annotate --images
    D/images --out D`` writes ``D/labels_25/``), and only those entries must be new (or
    ``overwrite``). Without ``entries`` the whole folder is output: it must not contain an
    input and must be new or empty (or ``overwrite``).
    """
    shown = Path(out)
    target = _resolve(out)
    srcs = _inputs(inputs)
    if target.exists() and not target.is_dir():
        raise InputError(f"{flag} {shown}: exists and is not a folder")
    _overlap(target, srcs, flag, shown, contains=entries is None)
    if entries is None:
        if not overwrite and target.is_dir() and any(target.iterdir()):
            raise InputError(f"{flag} {shown}: folder already holds files; pass --overwrite to "
                             "write over them, or choose a new folder")
    else:
        for entry in entries:
            path = target / entry
            _overlap(path, srcs, flag, shown / entry, contains=True)
            if not overwrite and path.exists() and not (path.is_dir() and not any(path.iterdir())):
                raise InputError(f"{flag} {shown}: {entry} already exists; pass --overwrite to "
                                 "write over it, or choose a new folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{flag} {shown}: cannot write to output folder "
                         f"({exc.strerror or exc})") from None
    return shown


def output_file(path: str | os.PathLike, inputs: Inputs, *, overwrite: bool = False,
                flag: str = "--out") -> Path:
    """Check an output file (and create its folder); returns it as a ``Path``."""
    shown = Path(path)
    target = _resolve(path)
    if target.is_dir():
        raise InputError(f"{flag} {shown}: is a folder; give a file name")
    _overlap(target, _inputs(inputs), flag, shown, contains=False)
    if target.exists() and not overwrite:
        raise InputError(f"{flag} {shown}: already exists; pass --overwrite to replace it")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{flag} {shown}: cannot write to output folder "
                         f"({exc.strerror or exc})") from None
    return shown


def check_unique_keys(paths: Sequence[str | os.PathLike], keys: Sequence[str], what: str) -> None:
    """Refuse two ``paths`` with one ``key`` (an output or mask name), naming both files."""
    seen: dict[str, str | os.PathLike] = {}
    for path, key in zip(paths, keys, strict=True):
        if key in seen:
            raise InputError(f"{what}: {seen[key]} and {path} would share the name {key!r} "
                             "(names drop the suffix); rename one")
        seen[key] = path
