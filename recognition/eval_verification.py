"""Verification accuracy on ``.bin`` sets: ``python -m recognition.eval_verification
--checkpoint C --network iresnet34 --bin lfw.bin cfp_fp.bin agedb_30.bin``.

Each ``.bin`` is loaded without running code (``recognition.evaluation.verification.load_bin``), its
faces decoded, embedded as ``normalise(f(x) + f(flip x))`` and scored with insightface's
10-fold protocol. Prints a table of accuracy ± std and, with ``--out``, writes
``verification.json`` and ``verification.csv`` there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from parsing.core.cli import ArgumentParser, cli_main, device, positive_int
from parsing.core.paths import output_dir
from recognition.evaluation.embedding import (
    add_backbone_arguments,
    load_backbone,
)
from recognition.evaluation.verification import evaluate_bin


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m recognition.eval_verification",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_backbone_arguments(p)
    p.add_argument("--bin", nargs="+", required=True, metavar="FILE",
                   help="verification sets (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--no-flip", action="store_true", help="embed f(x) only")
    p.add_argument("--device", type=device,
                   default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", help="folder for verification.json and verification.csv")
    p.add_argument("--overwrite", action="store_true", help="replace those files in --out")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.out:
        output_dir(args.out, {"--checkpoint": args.checkpoint, "--bin": args.bin},
                   overwrite=args.overwrite, entries=("verification.json", "verification.csv"))
    device = torch.device(args.device)
    model = load_backbone(args.checkpoint, args.network, args.network_kwargs, device,
                          args.imports or ())
    results = {}
    for path in args.bin:
        results[Path(path).stem] = evaluate_bin(model, path, args.batch_size,
                                                not args.no_flip, device)
    print(f"{'set':12s} {'pairs':>6s}  accuracy (%)")
    for name, r in results.items():
        print(f"{name:12s} {r['pairs']:6d}  {100 * r['accuracy']:.2f} ± {100 * r['std']:.2f}")
    if args.out:
        out = Path(args.out)
        summary = {"checkpoint": args.checkpoint, "network": args.network,
                   "flip": not args.no_flip, "sets": results}
        (out / "verification.json").write_text(json.dumps(summary, indent=2))
        with open(out / "verification.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["set", "pairs", "accuracy", "std"])
            writer.writerows([name, r["pairs"], r["accuracy"], r["std"]]
                             for name, r in results.items())


if __name__ == "__main__":
    sys.exit(main())
