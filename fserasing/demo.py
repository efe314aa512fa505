"""A contact sheet of faces with the same regions erased under every fill mode.

    python -m fserasing --data runs/demo/synth --sheet runs/demo/fserasing_sheet.png

``--data`` is a ``parsing.synth`` folder (``images/{id}.png`` + ``labels_25/{id}_seg.png``);
``--images DIR --masks DIR`` reads any images with label PNGs at the same relative paths
(what ``parsing.predict`` writes). Writes the sheet and a JSON file beside it listing, per
face, the source files and the classes erased.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fserasing.erasing import FILL_MODES, RegionEraser  # noqa: E402
from parsing.core.cli import ArgumentParser, cli_main, non_negative_int, positive_int  # noqa: E402
from parsing.core.errors import DataError  # noqa: E402
from parsing.core.io import IMAGE_EXTENSIONS, read_image, read_label_map  # noqa: E402
from parsing.core.labels import FSE25  # noqa: E402
from parsing.core.paths import check_unique_keys, output_file  # noqa: E402


def find_pairs(
    data: Path | None = None, images: Path | None = None, masks: Path | None = None
) -> list[tuple[Path, Path]]:
    """(image, label PNG) pairs from a synth folder, or from parallel image/mask folders."""
    if data is not None:
        image_dir, label_dir = data / "images", data / "labels_25"
        pairs = [(p, label_dir / f"{p.stem}_seg.png") for p in sorted(image_dir.glob("*.png"))]
    else:
        image_dir = images
        pairs = [(p, (masks / p.relative_to(images)).with_suffix(".png"))
                 for p in sorted(images.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
        check_unique_keys([i for i, _ in pairs], [str(m) for _, m in pairs], f"--images {images}")
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: no such image folder")
    pairs = [(i, m) for i, m in pairs if m.is_file()]
    if not pairs:
        raise DataError(f"{image_dir}: no images with a label map found")
    return pairs


def erasure_sheet(
    images: torch.Tensor,
    masks: torch.Tensor,
    fills: Sequence[str | float] = FILL_MODES,
    n_erase: int | tuple[int, int] = (1, 3),
    classes: str | Sequence[int | str] = "face",
    seed: int = 0,
) -> tuple[list[list[np.ndarray]], torch.Tensor]:
    """Rows of (original, colour mask, one image per fill) and the (B, 25) erased classes.

    Every fill starts from the same seed, so each face loses the same classes in every column;
    classes are drawn among those present in each face, so every row shows an erasure.
    """
    rows = [[img.permute(1, 2, 0).numpy(), FSE25.colorize(m)] for img, m in
            zip(images, masks, strict=True)]
    erased = None
    for fill in fills:
        eraser = RegionEraser(p=1.0, n_erase=n_erase, classes=classes, fill=fill,
                              present_only=True)
        out, erasure = eraser(images, masks, torch.Generator().manual_seed(seed))
        erased = eraser.erased(masks, erasure)
        for row, img in zip(rows, out, strict=True):
            row.append(img.permute(1, 2, 0).numpy())
    return rows, erased


def save_sheet(path: Path, rows: list[list[np.ndarray]], columns: list[str],
               row_labels: list[str]) -> None:
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols, 1.45 * n_rows),
                             squeeze=False)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            ax = axes[r][c]
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=8)
        axes[r][0].set_ylabel(row_labels[r], fontsize=6)
    fig.tight_layout(pad=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    parser = ArgumentParser(
        prog="python -m fserasing",
        description="Sheet of faces with the same regions erased under each fill mode.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="parsing.synth folder (images/, labels_25/)")
    source.add_argument("--images", type=Path, help="image folder (use with --masks)")
    parser.add_argument("--masks", type=Path, help="label PNGs at the images' relative paths")
    parser.add_argument("--sheet", type=Path, required=True, help="output PNG")
    parser.add_argument("--faces", type=positive_int, default=6, help="rows in the sheet")
    parser.add_argument("--n-erase", type=non_negative_int, nargs=2, default=(1, 3),
                        metavar=("LO", "HI"))
    parser.add_argument("--classes", nargs="+", default=["face"],
                        help="candidate classes or groups (FSE-25 names)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --sheet")
    args = parser.parse_args(argv)
    if args.images is not None and args.masks is None:
        parser.error("--images needs --masks")
    if args.n_erase[0] > args.n_erase[1]:
        parser.error(f"--n-erase {args.n_erase[0]} {args.n_erase[1]}: LO must not exceed HI")
    pairs = find_pairs(args.data, args.images, args.masks)[: args.faces]
    inputs = {"--data": args.data, "--images": args.images, "--masks": args.masks}
    for path in (args.sheet, args.sheet.with_suffix(".json")):
        output_file(path, inputs, overwrite=args.overwrite, flag="--sheet")
    images = [torch.from_numpy(read_image(i).copy()).permute(2, 0, 1) for i, _ in pairs]
    masks = [torch.from_numpy(read_label_map(m)) for _, m in pairs]
    sizes = {tuple(t.shape[-2:]) for t in images + masks}
    if len(sizes) != 1:
        raise DataError(f"images and masks must share one size for a sheet, found {sizes}")
    images_t, masks_t = torch.stack(images), torch.stack(masks)
    FSE25.check(masks_t, f"label maps under {pairs[0][1].parent}")
    rows, erased = erasure_sheet(images_t, masks_t, FILL_MODES, tuple(args.n_erase),
                                 args.classes, args.seed)
    names = [[FSE25.names[i] for i in row.nonzero().flatten().tolist()] for row in erased]
    save_sheet(args.sheet, rows, ["image", "mask", *FILL_MODES],
               ["\n".join(n) or "(none)" for n in names])
    record = {
        "sheet": str(args.sheet), "fills": list(FILL_MODES), "seed": args.seed,
        "n_erase": list(args.n_erase), "classes": args.classes,
        "faces": [{"image": str(i), "mask": str(m), "erased": n}
                  for (i, m), n in zip(pairs, names, strict=True)],
    }
    args.sheet.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"wrote {args.sheet} and {args.sheet.with_suffix('.json')}")
