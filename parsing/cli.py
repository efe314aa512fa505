"""Shared command-line plumbing: bad input ends in one clear line and exit code 2."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Sequence

from parsing.errors import InputError


def cli_main(fn: Callable[[Sequence[str] | None], object]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a CLI ``main(argv)``: user errors print ``error: ...`` and return 2."""

    @functools.wraps(fn)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        try:
            fn(argv)
        except (InputError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    return wrapper
