"""Shared command-line plumbing: bad input ends in one clear line and exit code 2.

Every CLI builds its parser with :class:`ArgumentParser` (argparse errors become one
``error: ...`` line, not a usage block), validates values with the types below (the same rule
for the same kind of value everywhere) and wraps ``main`` in :func:`cli_main`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Callable, Sequence

import torch

from parsing.core.allocator import keep_freed_memory
from parsing.core.errors import InputError

__all__ = ["ArgumentParser", "cli_main", "device", "finite_float", "non_negative_float",
           "non_negative_int", "positive_float", "positive_int", "probability"]


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose usage errors raise :class:`InputError` (one line)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


def cli_main(fn: Callable[[Sequence[str] | None], object]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a CLI ``main(argv)``: user errors print ``error: ...`` and return 2.

    The command also gets glibc's allocator setting of reference §8
    (:func:`parsing.core.allocator.keep_freed_memory`) unless its environment sets one."""

    @functools.wraps(fn)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        keep_freed_memory()
        try:
            fn(argv)
        except (InputError, OSError) as exc:
            sys.stdout.flush()
            if sys.stderr.isatty():  # a progress bar may have left the cursor mid-line
                print("\r\033[K", end="", file=sys.stderr)
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        return 0

    return wrapper


def _one_line(exc: BaseException) -> str:
    """The message; for errors re-raised from a DataLoader worker (which embed the worker's
    whole traceback), the original message only."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.removeprefix(f"{type(exc).__module__}.{type(exc).__qualname__}: ")
    return " ".join(text.split())


# -- argparse types: ``p.add_argument("--batch-size", type=positive_int)`` ------------------


def _number(text: str, cast: type) -> float | int:
    try:
        return cast(text)
    except ValueError:
        kind = "an integer" if cast is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None


def add_import_argument(parser: argparse.ArgumentParser) -> None:
    """``--import MODULE`` (repeatable, into ``imports``): modules that register custom
    backbones or augmentations, imported before anything is built by name."""
    parser.add_argument("--import", dest="imports", action="append", metavar="MODULE",
                        help="import this module first (e.g. one that registers a custom "
                             "backbone); repeatable")


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no nan, no inf)."""
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value:g}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def device(text: str) -> str:
    """A torch device that exists here: ``cpu``, ``cuda``, ``cuda:N`` (N < GPUs), ``mps``."""
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise argparse.ArgumentTypeError(f"{text}: only {count} CUDA GPU(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: unsupported device type; use cpu or cuda")
    return text
