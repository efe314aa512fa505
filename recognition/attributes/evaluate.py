"""``python -m recognition.attributes.evaluate``: score an attribute/expression model.

    python -m recognition.attributes.evaluate --model RUN/model.pt --data celeba:/data/celeba \\
        --split test --out runs/eval_attr

Writes ``metrics.json`` (per-attribute accuracy and balanced accuracy, their means; expression
accuracy, mean class accuracy, confusion matrix), ``attributes.png`` (a bar per attribute) and
``confusion.png`` (expressions), and prints the headline figures as JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from parsing.core.cli import (
    ArgumentParser,
    add_import_argument,
    cli_main,
    device,
    non_negative_int,
    positive_int,
)
from parsing.core.paths import data_path, output_dir
from recognition.attributes.data import list_attribute_datasets, open_attribute_dataset
from recognition.attributes.evaluation import evaluate, plot_attributes, plot_confusion
from recognition.attributes.models import load_attribute_model


def build_arg_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="python -m recognition.attributes.evaluate",
                        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", required=True,
                    help="model.pt of a recognition.attributes.train run (model.json beside it)")
    ap.add_argument("--data", required=True,
                    help=f"KIND:PATH, KIND one of {', '.join(list_attribute_datasets())}")
    ap.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--batch-size", type=positive_int, default=64)
    ap.add_argument("--workers", type=non_negative_int, default=0)
    ap.add_argument("--device", type=device, default="cpu")
    ap.add_argument("--skip-bad", action="store_true",
                    help="leave out malformed rows and unreadable images (counted)")
    ap.add_argument("--overwrite", action="store_true")
    add_import_argument(ap)
    return ap


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_arg_parser().parse_args(argv)
    out = output_dir(args.out, {"--model": args.model, "--data": data_path(args.data)},
                     overwrite=args.overwrite)
    model = load_attribute_model(args.model, args.device, args.imports or ())
    dataset = open_attribute_dataset(args.data, args.split, skip_bad=args.skip_bad,
                                     size=model.image_size)
    result = evaluate(model, dataset, args.batch_size, args.workers)
    result = {"model": args.model, "data": args.data, "split": args.split,
              "bad_rows": dataset.bad_rows, **result}
    (out / "metrics.json").write_text(json.dumps(result, indent=1))
    summary = {k: result[k] for k in ("images", "skipped", "bad_rows", "mean_accuracy",
                                      "mean_balanced_accuracy") if k in result}
    if "attributes" in result:
        plot_attributes(result, out / "attributes.png")
    if "expression" in result:
        plot_confusion(result["expression"], out / "confusion.png")
        summary["expression_accuracy"] = result["expression"]["accuracy"]
        summary["expression_mean_class_accuracy"] = result["expression"]["mean_class_accuracy"]
    print(json.dumps({"out": str(out), **summary}))


if __name__ == "__main__":
    raise SystemExit(main())
