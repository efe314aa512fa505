"""Real photographs that ship inside installed packages (SPEC §7), for tests and demos.

``python -m parsing.photos --out DIR`` writes them as ``DIR/{name}.png``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from parsing.cli import cli_main
from parsing.errors import InputError

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


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m parsing.photos", description="Write the packaged photos as PNG files."
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--names", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        path = args.out / f"{name}.png"
        Image.fromarray(load_photo(name)).save(path)
        print(path)


if __name__ == "__main__":
    raise SystemExit(main())
