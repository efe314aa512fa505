"""Shared command-line plumbing: bad input ends in one clear line and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

from parsing.core.errors import InputError


def cli_main(fn: Callable[[Sequence[str] | None], object]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a CLI ``main(argv)``: user errors print ``error: ...`` and return 2."""

    @functools.wraps(fn)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            fn(argv)
        except (InputError, OSError) as exc:
            print(f"error: {_one_line(exc)}", file=sys.stderr)
            return 2
        return 0

    return wrapper


def _one_line(exc: BaseException) -> str:
    """The message; for errors re-raised from a DataLoader worker (which embed the worker's
    whole traceback), the original message only."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    return last.removeprefix(f"{type(exc).__module__}.{type(exc).__qualname__}: ")
