"""Progress bars that stay quiet when the output is not a terminal (piped logs, CI)."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm(...)`` drawn only on a terminal: ``disable=None`` is tqdm's "off on non-TTY"."""
    return tqdm(iterable, disable=True if disable else None, **kwargs)
