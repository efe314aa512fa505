"""IJB-C / IJB-B evaluation: ``python -m recognition.eval_ijbc --checkpoint C --network N
--data DIR --out OUT``.

Aligns every loose crop with its five points (batched on the device), embeds the image and
its mirror, aggregates templates and scores all template pairs (``recognition.ijbc``), then
writes to OUT: ``{name}_features.npy`` (flip-fused image features, reusable with
``--features``), ``{name}_scores.npy`` (one score per line of the pair file),
``{name}_verification.json`` (TAR at FAR 1e-6 ... 1e-1, AUC, and 1:N results when the
gallery/probe files exist) and ``{name}_roc.png``. insightface's published numbers use
``--use-norm-score --use-detector-score`` (its N1D1F1 mode). On CPU, set
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824``
(SPEC §8).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from parsing.align import align_face
from parsing.cli import cli_main
from parsing.errors import DataError, InputError
from parsing.io import read_image
from recognition.embedding import add_backbone_arguments, embed_batches, load_backbone
from recognition.ijbc import (
    IJBProtocol,
    evaluate_verification,
    identification_report,
    meta_path,
    pair_scores,
    read_identification_protocol,
    read_protocol,
)
from recognition.roc import FARS, far_key


class LooseCrops(torch.utils.data.Dataset):
    """``protocol.image_dir`` images as uint8 (3, H, W) tensors with their five points."""

    def __init__(self, protocol: IJBProtocol) -> None:
        self.protocol = protocol

    def __len__(self) -> int:
        return len(self.protocol)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.protocol.image_dir / str(self.protocol.image_names[index]))
        return (torch.tensor(image).permute(2, 0, 1),
                torch.from_numpy(self.protocol.landmarks[index]))


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """Stack crops of different sizes by zero-padding right and bottom. The alignment warp
    reads zeros outside an image anyway: the padding changes no output pixel beyond float
    rounding (at most 1 grey level on < 0.1% of pixels)."""
    height = max(image.shape[1] for image, _ in batch)
    width = max(image.shape[2] for image, _ in batch)
    images = torch.zeros(len(batch), 3, height, width, dtype=torch.uint8)
    for i, (image, _) in enumerate(batch):
        images[i, :, :image.shape[1], :image.shape[2]] = image
    return images, torch.stack([points for _, points in batch])


def aligned_batches(protocol: IJBProtocol, batch_size: int, workers: int,
                    device: torch.device) -> Iterator[torch.Tensor]:
    """Aligned 112x112 uint8 faces of the protocol's images, in order, batch by batch."""
    loader = torch.utils.data.DataLoader(LooseCrops(protocol), batch_size=batch_size,
                                         num_workers=workers, collate_fn=pad_collate)
    for images, points in loader:
        yield align_face(images.to(device), points.to(device))


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, report: dict, label: str, path: Path) -> None:
    """ROC on a log-FAR axis with the TAR@FAR table points marked."""
    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.subplots()
    ax.plot(np.maximum(fpr, 1e-7), tpr, lw=1.5, label=f"{label} (AUC {100 * report['auc']:.2f}%)")
    tars = [report["tar_at_far"][far_key(f)] for f in FARS]
    ax.plot(FARS, tars, "o", ms=4, color="C3", label="TAR @ FAR (nearest ROC point)")
    ax.set(xscale="log", xlim=(1e-6, 1), ylim=(0, 1.0), xlabel="False accept rate",
           ylabel="True accept rate", title=f"ROC on {label}")
    ax.grid(True, which="both", ls=":", lw=0.5)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def format_table(name: str, report: dict) -> str:
    head = f"{name + ' 1:1  FAR':16s}" + "".join(f"{far_key(f):>8s}" for f in FARS)
    row = f"{'TAR (%)':16s}" + "".join(f"{100 * report['tar_at_far'][far_key(f)]:8.2f}"
                                     for f in FARS)
    return f"{head}   AUC (%)\n{row}  {100 * report['auc']:8.2f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recognition.eval_ijbc",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="IJB directory with meta/ and loose_crop/")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_backbone_arguments(p, required=False)
    p.add_argument("--name", choices=("ijbc", "ijbb"), default=None,
                   help="protocol (default: whichever meta files exist)")
    p.add_argument("--features", help="saved (N, D) image features (.npy): skip embedding")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="image-reading processes")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-flip", action="store_true",
                   help="embed only the image, not f(x) + f(flip x)")
    p.add_argument("--use-detector-score", action="store_true",
                   help="weight image features by their faceness score (insightface D1)")
    p.add_argument("--use-norm-score", action="store_true",
                   help="keep image feature norms when aggregating (insightface N1)")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.features is None and args.checkpoint is None:
        raise InputError("give --checkpoint (and --network), or --features to re-score")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}")
    protocol = read_protocol(args.data, args.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.features is not None:
        try:
            features = np.load(args.features)
        except (OSError, ValueError) as exc:
            raise DataError(f"{args.features}: not a readable .npy feature file ({exc})") from None
    else:
        device = torch.device(args.device)
        model = load_backbone(args.checkpoint, args.network, args.network_kwargs, device)
        features = embed_batches(
            model, aligned_batches(protocol, args.batch_size, args.workers, device),
            flip=not args.no_flip, device=device, total=len(protocol),
            desc=f"embed {protocol.name}").numpy()
        np.save(out / f"{protocol.name}_features.npy", features)
    report, (fpr, tpr), (templates, template_feats), rows = evaluate_verification(
        features, protocol, use_detector_score=args.use_detector_score,
        use_norm_score=args.use_norm_score)
    # float64 cosine scores: recognition.roc.verification_report on them gives the same table
    np.save(out / f"{protocol.name}_scores.npy",
            pair_scores(template_feats.cpu(), rows[:, 0], rows[:, 1]))
    result = {
        "protocol": protocol.name, "data": str(protocol.root), "images": len(protocol),
        "templates": int(len(templates)),
        "settings": {"checkpoint": args.checkpoint, "network": args.network,
                     "features": args.features, "flip": not args.no_flip,
                     "use_norm_score": args.use_norm_score,
                     "use_detector_score": args.use_detector_score},
        "verification": report,
    }
    identification = read_identification_protocol(protocol.root, protocol.name)
    if identification is not None:
        result["identification"] = identification_report(
            templates, template_feats, identification,
            source=meta_path(protocol.root, protocol.name, "1N_probe_mixed.csv"))
    with open(out / f"{protocol.name}_verification.json", "w") as f:
        json.dump(result, f, indent=2)
    plot_roc(fpr, tpr, report, protocol.name.upper(), out / f"{protocol.name}_roc.png")
    print(format_table(protocol.name, report))
    if identification is not None:
        for gallery, entry in result["identification"].items():
            tpir = ", ".join(f"{100 * v:.2f}@{k}" for k, v in entry["tpir_at_fpir"].items())
            print(f"{protocol.name} 1:N {gallery:5s} top1 {100 * entry['top1']:.2f}  "
                  f"top5 {100 * entry['top5']:.2f}  top10 {100 * entry['top10']:.2f}  "
                  f"TPIR(%)@FPIR {tpir}")


if __name__ == "__main__":
    sys.exit(main())
