"""Real photographs that ship inside installed packages (reference §7), for tests and demos.

``python -m parsing.photos --out DIR`` writes them as ``DIR/{name}.png``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from parsing.core.errors import InputError

__all__ = ["PHOTOS", "load_photo"]

PHOTOS = ("astronaut", "grace_hopper")


def load_photo(name: str) -> np.ndarray:
    """A packaged photo as (H, W, 3) uint8 RGB: ``astronaut`` (scikit-image, 512x512, Eileen
    Collins) or ``grace_hopper`` (matplotlib, 600x512)."""
    if name == "astronaut":
        from skimage import data

        return data.astronaut()
    if name == "grace_hopper":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as im:
            return np.asarray(im.convert("RGB"))
    raise InputError(f"unknown packaged photo {name!r}; known: {', '.join(PHOTOS)}")
