"""Contact sheets: faces beside their colour-coded label maps, with a legend."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from parsing.core.errors import InputError
from parsing.core.labels import LabelSet, get_label_set


def _as_uint8_images(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = torch.as_tensor(images).detach().cpu()
    if t.dim() != 4 or t.shape[1] != 3:
        raise InputError(f"images must be (N, 3, H, W), got {tuple(t.shape)}")
    if t.dtype.is_floating_point:
        t = (t.clamp(0, 1) * 255).round()
    return t.to(torch.uint8)


def legend(label_set: LabelSet, width: int, present: set[int] | None = None) -> np.ndarray:
    """A (h, width, 3) uint8 strip of the set's colours and class names (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    ids = [i for i in range(label_set.num_classes) if present is None or i in present]
    columns = max(1, min(len(ids), width // 130))
    rows = -(-len(ids) // columns)
    dpi = 100
    fig = Figure(figsize=(width / dpi, (rows * 15 + 10) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    handles = [Patch(facecolor=label_set.palette[i] / 255, edgecolor="0.5", label=f"{i} {name}")
               for i, name in ((i, label_set.names[i]) for i in ids)]
    fig.legend(handles=handles, loc="center", ncol=columns, fontsize=7, frameon=False,
               handlelength=1.2, columnspacing=0.8, borderaxespad=0.0)
    fig.canvas.draw()
    strip = np.asarray(fig.canvas.buffer_rgba())[:, :width, :3]
    return np.pad(strip, ((0, 0), (0, width - strip.shape[1]), (0, 0)), constant_values=255)


def contact_sheet(
    images: torch.Tensor | np.ndarray,
    label_maps: torch.Tensor | np.ndarray | None = None,
    label_set: str | LabelSet = "fse25",
    path: str | os.PathLike | None = None,
    nrow: int = 8,
    with_legend: bool = True,
) -> np.ndarray:
    """Grid of faces, each beside its colour-coded label map, ``nrow`` faces per row.

    ``images`` are (N, 3, H, W) uint8 (or float in [0, 1]); ``label_maps`` (N, H, W) class ids
    of ``label_set`` (predicted masks, ground truth, ...) or None for faces alone. A legend of
    the classes present is added below. Returns the sheet as (H, W, 3) uint8 and writes it as
    PNG to ``path`` if given.
    """
    faces = _as_uint8_images(images)
    tiles = faces
    label_set = get_label_set(label_set)
    present = None
    if label_maps is not None:
        maps = torch.as_tensor(label_maps).detach().cpu()
        if maps.shape != (faces.shape[0], *faces.shape[2:]):
            raise InputError(f"label maps {tuple(maps.shape)} do not match images "
                             f"{tuple(faces.shape)}")
        coloured = torch.from_numpy(label_set.colorize(maps)).permute(0, 3, 1, 2)
        tiles = torch.stack([faces, coloured], dim=1).flatten(0, 1)
        nrow *= 2
        present = set(torch.unique(maps).tolist())
    grid = make_grid(tiles, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
    if with_legend and label_maps is not None:
        strip = legend(label_set, grid.shape[1], present)
        grid = np.concatenate([grid, np.full((4, grid.shape[1], 3), 255, np.uint8), strip])
    if path is not None:
        Image.fromarray(grid).save(path, format="PNG")
    return grid


def overlay(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend (H, W, 3) uint8 colour-coded labels over an (H, W, 3) uint8 image."""
    return (image * (1 - alpha) + colours * alpha).round().astype(np.uint8)
