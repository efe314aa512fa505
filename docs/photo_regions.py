"""Make docs/photo_regions.png from `make demo` outputs (DEMO defaults to runs/demo).

    python -m docs.photo_regions runs/demo docs/photo_regions.png

Columns: packaged photo, its landmark FSE-25 annotation, lips recoloured (parsing.edit),
the ArcFace-aligned crop (parsing.align) and FSErasing on it (two regions, random fill).
"""

import sys

import numpy as np
import torch
from PIL import Image

from fserasing import erase_batch
from parsing.core.io import read_image, read_label_map
from parsing.core.labels import FSE25

HEIGHT = 168


def fit(tile: np.ndarray, nearest: bool = False) -> np.ndarray:
    width = round(tile.shape[1] * HEIGHT / tile.shape[0])
    resample = Image.NEAREST if nearest else Image.LANCZOS
    return np.asarray(Image.fromarray(tile).resize((width, HEIGHT), resample))


def face_box(labels: np.ndarray, margin: float = 0.15) -> tuple[slice, slice]:
    rows, cols = np.nonzero(labels)
    pad_r, pad_c = int(margin * np.ptp(rows)), int(margin * np.ptp(cols))
    return (slice(max(rows.min() - pad_r, 0), rows.max() + pad_r + 1),
            slice(max(cols.min() - pad_c, 0), cols.max() + pad_c + 1))


def main(demo: str, out: str) -> None:
    generator = torch.Generator().manual_seed(4)
    gap = np.full((HEIGHT, 4, 3), 255, np.uint8)
    rows = []
    for name in ("astronaut", "grace_hopper"):
        photo = read_image(f"{demo}/photos/{name}.png")
        labels = read_label_map(f"{demo}/photos_anno/labels_25/{name}_seg.png")
        edited = read_image(f"{demo}/{name}_lips.png")
        crop = read_image(f"{demo}/photos_aligned/images/{name}.png")
        crop_labels = read_label_map(f"{demo}/photos_aligned/labels_25/{name}_seg.png")
        erased = erase_batch(torch.from_numpy(crop.copy()).permute(2, 0, 1)[None],
                             torch.from_numpy(crop_labels)[None], p=1.0, n_erase=2,
                             fill="random", generator=generator)[0].permute(1, 2, 0).numpy()
        box = face_box(labels)
        tiles = [fit(photo[box]), fit(FSE25.colorize(labels[box]), nearest=True),
                 fit(edited[box]), fit(crop), fit(erased)]
        rows.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
    sheet = np.concatenate([rows[0], np.full((4, width, 3), 255, np.uint8), rows[1]])
    Image.fromarray(sheet).quantize(colors=256, dither=Image.Dither.NONE).save(out, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
