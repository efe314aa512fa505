"""IJB-C / IJB-B evaluation: ``python -m recognition.eval_ijbc --checkpoint C --network N
--data DIR --out OUT``.

Aligns every loose crop with its five points (batched on the device), embeds the image and its
mirror, aggregates templates and scores all template pairs (``recognition.evaluation.ijbc``),
then writes to OUT: ``{name}_features.npy`` (flip-fused image features, reusable with
``--features``), ``{name}_scores.npy`` (one score per line of the pair file),
``{name}_verification.json`` (TAR at FAR 1e-6 ... 1e-1, AUC, and 1:N results when the
gallery/probe files exist) and ``{name}_roc.png``. insightface's published numbers use
``--use-norm-score --use-detector-score`` (its N1D1F1 mode). On CPU, set ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824`` (reference §8).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import torch

from parsing.core.cli import ArgumentParser, cli_main, device, non_negative_int, positive_int
from parsing.core.errors import DataError, InputError
from parsing.core.paths import output_dir
from recognition.evaluation.embedding import add_backbone_arguments, embed_batches, load_backbone
from recognition.evaluation.ijbc import (
    IdentificationProtocol,
    IJBProtocol,
    aligned_batches,
    evaluate_verification,
    format_table,
    identification_report,
    meta_path,
    pair_scores,
    read_identification_protocol,
    read_protocol,
    template_rows,
)
from recognition.evaluation.plots import plot_roc


def check_identification(protocol: IJBProtocol, identification: IdentificationProtocol) -> None:
    """Every 1:N template is one of the protocol's, and no probe template is in a gallery."""
    known = np.unique(protocol.templates)
    probe_file = meta_path(protocol.root, protocol.name, "1N_probe_mixed.csv")
    template_rows(known, identification.probe_templates, probe_file)
    for gallery, (templates, _) in identification.galleries.items():
        gallery_file = meta_path(protocol.root, protocol.name, f"1N_gallery_{gallery}.csv")
        template_rows(known, templates, gallery_file)
        shared = np.intersect1d(templates, identification.probe_templates)
        if len(shared):
            raise DataError(f"{probe_file}: probe template {int(shared[0])} is also enrolled in "
                            f"{gallery_file}; probes and galleries must not share templates")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m recognition.eval_ijbc",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="IJB directory with meta/ and loose_crop/")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    add_backbone_arguments(p, required=False)
    p.add_argument("--name", choices=("ijbc", "ijbb"), default=None,
                   help="protocol (default: whichever meta files exist)")
    p.add_argument("--features", help="saved (N, D) image features (.npy): skip embedding")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--workers", type=non_negative_int, default=2, help="image-reading processes")
    p.add_argument("--device", type=device,
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-flip", action="store_true",
                   help="embed only the image, not f(x) + f(flip x)")
    p.add_argument("--use-detector-score", action="store_true",
                   help="weight image features by their faceness score (insightface D1)")
    p.add_argument("--use-norm-score", action="store_true",
                   help="keep image feature norms when aggregating (insightface N1)")
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.features is None and args.checkpoint is None:
        raise InputError("give --checkpoint (and --network), or --features to re-score")
    protocol = read_protocol(args.data, args.name)
    identification = read_identification_protocol(protocol.root, protocol.name)
    if identification is not None:
        check_identification(protocol, identification)
    written = ("scores.npy", "verification.json", "roc.png",
               *(("features.npy",) if args.features is None else ()))
    out = output_dir(args.out, {"--data": args.data, "--checkpoint": args.checkpoint,
                                "--features": args.features}, overwrite=args.overwrite,
                     entries=[f"{protocol.name}_{w}" for w in written])
    if args.features is not None:
        try:
            features = np.load(args.features)
        except (OSError, ValueError) as exc:
            raise DataError(f"{args.features}: not a readable .npy feature file ({exc})") from None
    else:
        device = torch.device(args.device)
        model = load_backbone(args.checkpoint, args.network, args.network_kwargs, device,
                              args.imports or ())
        features = embed_batches(
            model, aligned_batches(protocol, args.batch_size, args.workers, device),
            flip=not args.no_flip, device=device, total=len(protocol),
            desc=f"embed {protocol.name}").numpy()
        np.save(out / f"{protocol.name}_features.npy", features)
    report, (fpr, tpr), (templates, template_feats), rows = evaluate_verification(
        features, protocol, use_detector_score=args.use_detector_score,
        use_norm_score=args.use_norm_score)
    # float64 cosine scores: roc.verification_report on them gives the same table
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
