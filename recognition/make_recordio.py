"""``python -m recognition.make_recordio``: pack an ImageFolder into insightface's train.rec."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from parsing.core.cli import ArgumentParser, cli_main
from parsing.core.paths import output_dir
from recognition.data.recordio import pack_image_folder


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    ap = ArgumentParser(
        prog="python -m recognition.make_recordio",
        description="Pack an ImageFolder of aligned faces into insightface's train.rec/train.idx.")
    ap.add_argument("--images", required=True, help="folder with one sub-folder per identity")
    ap.add_argument("--out", required=True, help="output folder for train.rec and train.idx")
    ap.add_argument("--overwrite", action="store_true", help="replace train.rec/train.idx in OUT")
    args = ap.parse_args(argv)
    output_dir(args.out, {"--images": args.images}, overwrite=args.overwrite,
               entries=("train.rec", "train.idx"))
    n = pack_image_folder(args.images, args.out)
    print(json.dumps({"images": n, "rec": str(Path(args.out) / "train.rec")}))


if __name__ == "__main__":
    raise SystemExit(main())
