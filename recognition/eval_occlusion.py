"""Occlusion robustness per face region: ``python -m recognition.eval_occlusion
--checkpoint C --network N --data DIR [--masks MASKS] --out OUT``.

Samples verification pairs (half genuine) from an identity-labelled set of aligned 112x112
faces with FSE-25 parsing masks, then erases one region group at a time (eyes, nose,
mouth, ...) in the probe image of every pair (``fserasing.erase_batch`` with explicit
classes) and measures how verification degrades: 10-fold accuracy (SPEC §5.5), TAR at FAR
1e-2 / 1e-1 and AUC, beside the unoccluded baseline. ``DIR`` is a ``parsing.synth`` data set
(masks included) or, with ``--masks`` (a mask folder of ``parsing.predict`` or anything
``fserasing.open_mask_source`` reads), an ImageFolder with one folder per identity.
Writes ``occlusion.json``, ``occlusion.csv`` and the bar chart ``occlusion.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

from fserasing import FILL_MODES, MaskedImageFolder, erase_batch
from parsing.cli import cli_main
from parsing.errors import DataError, InputError
from parsing.labels import FSE25
from parsing.synth import SynthFaces
from recognition.embedding import add_backbone_arguments, embed, load_backbone
from recognition.roc import far_key, verification_report
from recognition.verification import sample_pairs, verification_accuracy

DEFAULT_GROUPS = ("eyes", "brows", "around_eyes", "nose", "mouth", "cheeks", "chin",
                  "forehead", "ears", "hair")
OCCLUSION_FARS = (1e-2, 1e-1)


def open_faces(data: str, masks: str | None) -> tuple[torch.utils.data.Dataset, np.ndarray]:
    """A data set whose items start with (image, mask), and the identity of each item:
    a parsing.synth folder, or with ``masks`` a masked ImageFolder."""
    if masks is None:
        dataset = SynthFaces(data)
        return dataset, np.asarray(dataset.identities)
    dataset = MaskedImageFolder(data, masks)
    return dataset, np.asarray(dataset.targets)


def read_faces(dataset: torch.utils.data.Dataset, indices: np.ndarray, source: str
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 3, 112, 112) and masks (N, 112, 112) of the items ``indices``."""
    samples = [dataset[int(i)] for i in tqdm(indices, desc="read faces", unit="img")]
    images = torch.stack([s[0].as_subclass(torch.Tensor) for s in samples])
    masks = torch.stack([s[1].as_subclass(torch.Tensor) for s in samples])
    if images.shape[-2:] != (112, 112):
        raise DataError(f"{source}: faces must be aligned 112x112, got "
                        f"{tuple(images.shape[-2:])}")
    return images, masks


@torch.no_grad()
def _normalised_embeddings(model, images, batch_size, flip, device) -> torch.Tensor:
    out = [embed(model, images[s:s + batch_size].to(device), flip).double().cpu()
           for s in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=1)


def occlusion_table(model: torch.nn.Module, gallery: torch.Tensor, probes: torch.Tensor,
                    probe_masks: torch.Tensor, issame: np.ndarray,
                    groups: Sequence[str] = DEFAULT_GROUPS, fill: str = "random",
                    batch_size: int = 32, flip: bool = True, seed: int = 0,
                    device: torch.device | str = "cpu") -> dict[str, dict]:
    """Verification of pairs (gallery[i], probes[i]) with nothing, then each region group,
    erased in the probes -> {"none" | group: metrics}."""
    gallery_emb = _normalised_embeddings(model, gallery, batch_size, flip, device)
    table = {}
    for group in tqdm(["none", *groups], desc="occlusions"):
        erased = probes
        area = 0.0
        if group != "none":
            ids = torch.tensor(FSE25.ids(group))
            area = float(torch.isin(probe_masks, ids).float().mean())
            generator = torch.Generator(device=device).manual_seed(seed)
            erased = torch.cat([
                erase_batch(probes[s:s + batch_size].to(device),
                            probe_masks[s:s + batch_size].to(device), p=1.0,
                            n_erase=[group], fill=fill, generator=generator).cpu()
                for s in range(0, len(probes), batch_size)])
        probe_emb = _normalised_embeddings(model, erased, batch_size, flip, device)
        interleaved = torch.stack([gallery_emb, probe_emb], dim=1).flatten(0, 1)
        entry = verification_accuracy(interleaved, issame)
        report, _, _ = verification_report((gallery_emb * probe_emb).sum(1).numpy(), issame,
                                           OCCLUSION_FARS)
        entry.update(tar_at_far=report["tar_at_far"], auc=report["auc"], erased_area=area)
        table[group] = entry
    return table


def plot_occlusion(table: dict[str, dict], path: Path, title: str) -> None:
    """Bars of accuracy and TAR@FAR=1e-2 per erased group, baseline as lines."""
    groups = [g for g in table if g != "none"]
    x = np.arange(len(groups))
    key = far_key(OCCLUSION_FARS[0])
    fig = Figure(figsize=(max(6.0, 0.6 * len(groups) + 2), 4.8))
    ax = fig.subplots()
    ax.bar(x - 0.2, [100 * table[g]["accuracy"] for g in groups], 0.4, label="accuracy")
    ax.bar(x + 0.2, [100 * table[g]["tar_at_far"][key] for g in groups], 0.4,
           label=f"TAR @ FAR {key}")
    ax.axhline(100 * table["none"]["accuracy"], color="C0", ls="--", lw=1,
               label="accuracy, nothing erased")
    ax.axhline(100 * table["none"]["tar_at_far"][key], color="C1", ls="--", lw=1,
               label=f"TAR @ FAR {key}, nothing erased")
    ax.set_xticks(x, groups, rotation=30, ha="right")
    ax.set(ylabel="%", ylim=(0, 100), title=title)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.22))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recognition.eval_occlusion",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_arguments(p)
    p.add_argument("--data", required=True,
                   help="parsing.synth folder, or an ImageFolder of aligned faces with --masks")
    p.add_argument("--masks", help="masks for an ImageFolder --data (fserasing mask source)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pairs", type=int, default=1000, help="verification pairs (half genuine)")
    p.add_argument("--groups", default=",".join(DEFAULT_GROUPS),
                   help="comma-separated FSE-25 groups or classes, one erased at a time")
    p.add_argument("--fill", default="random", choices=FILL_MODES,
                   help="how erased pixels are filled (fserasing; default random)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    for g in groups:
        FSE25.ids(g)  # unknown names raise a LabelError naming them
    if args.pairs < 20:
        raise InputError(f"--pairs must be at least 20 (10 folds), got {args.pairs}")
    dataset, identities = open_faces(args.data, args.masks)
    first, second, issame = sample_pairs(identities, args.pairs, args.seed)
    needed, inverse = np.unique(np.concatenate([first, second]), return_inverse=True)
    images, masks = read_faces(dataset, needed, args.data)
    gallery, probes = images[inverse[:len(first)]], images[inverse[len(first):]]
    probe_masks = masks[inverse[len(first):]]
    device = torch.device(args.device)
    model = load_backbone(args.checkpoint, args.network, args.network_kwargs, device)
    table = occlusion_table(model, gallery, probes, probe_masks, issame, groups, args.fill,
                            args.batch_size, not args.no_flip, args.seed, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"checkpoint": args.checkpoint, "network": args.network, "data": args.data,
               "pairs": args.pairs, "fill": args.fill, "seed": args.seed, "table": table}
    (out / "occlusion.json").write_text(json.dumps(summary, indent=2))
    keys = [far_key(f) for f in OCCLUSION_FARS]
    with open(out / "occlusion.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["erased", "erased_area", "accuracy", "std", *[f"tar@{k}" for k in keys],
                         "auc"])
        for group, e in table.items():
            writer.writerow([group, e["erased_area"], e["accuracy"], e["std"],
                             *[e["tar_at_far"][k] for k in keys], e["auc"]])
    plot_occlusion(table, out / "occlusion.png", f"{args.network or Path(args.checkpoint).name}"
                   f": one region group erased in the probe ({args.pairs} pairs)")
    print(f"{'erased':12s}{'area %':>8s}{'accuracy %':>16s}"
          + "".join(f"{'TAR@' + k:>12s}" for k in keys) + f"{'AUC %':>8s}")
    for group, e in table.items():
        accuracy = f"{100 * e['accuracy']:.2f} ± {100 * e['std']:.2f}"
        print(f"{group:12s}{100 * e['erased_area']:8.1f}{accuracy:>16s}"
              + "".join(f"{100 * e['tar_at_far'][k]:12.2f}" for k in keys)
              + f"{100 * e['auc']:8.2f}")


if __name__ == "__main__":
    sys.exit(main())
