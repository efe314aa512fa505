"""``python -m parsing.photos --out DIR``: write the packaged photos as ``DIR/{name}.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from parsing.core.cli import ArgumentParser, cli_main
from parsing.core.paths import output_dir
from parsing.photos.packaged import PHOTOS, load_photo


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m parsing.photos", description="Write the packaged photos as PNG files."
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--names", nargs="+", default=list(PHOTOS), choices=PHOTOS)
    parser.add_argument("--overwrite", action="store_true", help="replace existing photos in OUT")
    args = parser.parse_args(argv)
    output_dir(args.out, {}, overwrite=args.overwrite, entries=[f"{n}.png" for n in args.names])
    for name in args.names:
        path = args.out / f"{name}.png"
        Image.fromarray(load_photo(name)).save(path)
        print(path)


if __name__ == "__main__":
    raise SystemExit(main())
