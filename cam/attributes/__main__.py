"""Attributes x face regions: which regions drive each output of an attribute model.

    python -m cam.attributes --model RUN/model.pt --data synth:DIR --split test --out DIR
    python -m cam.attributes --model RUN/model.pt --data celeba:DIR --parser parser.pt --out DIR

Explains each attribute (and expression class) on the faces where it is present, with FS-CAM
(the logit's drop when a region is erased) and region-aggregated Grad-CAM (the share of the
map in each region). Writes ``regions.json`` (per method and output: mean +- std per region,
top region, hit rate), ``regions.csv`` and ``heatmap_<method>.png``; prints the hit rate of
each attribute whose true regions are known (exact on synthetic faces). Face regions come
from the data set (a synth set's own label maps), ``--masks`` or ``--parser``.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence

import torch

from cam.attributes import METHODS, TRUE_REGIONS, AttributeRegions, Output, plot_heatmap
from parsing.core.cli import ArgumentParser, add_import_argument, cli_main, device, positive_int
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from parsing.core.paths import data_path, output_dir
from parsing.core.pixels import normalise
from parsing.core.progress import progress_bar
from recognition.attributes.data import open_attribute_dataset
from recognition.attributes.evaluation import shared_attributes
from recognition.attributes.models import AttributeNet, feature_layer, load_attribute_model


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(prog="python -m cam.attributes", description=__doc__.split("\n\n")[0],
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", required=True, help="model.pt of recognition.attributes.train")
    ap.add_argument("--data", required=True, help="KIND:PATH (celeba, rafdb, affectnet, synth)")
    ap.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    regions = ap.add_mutually_exclusive_group()
    regions.add_argument("--masks", help="FSE-25 masks of the images (a mask folder or store; "
                                         "default for synth: its own label maps)")
    regions.add_argument("--parser", help="face parser checkpoint (parsing.Parser)")
    ap.add_argument("--method", default=",".join(METHODS),
                    help=f"comma-separated, of {', '.join(METHODS)} (default both)")
    ap.add_argument("--mode", choices=("keep", "remove"), default="keep",
                    help="FS-CAM: the logit with only the region kept (keep, the default) or "
                         "its drop when the region is erased (remove)")
    ap.add_argument("--gradcam-reduce", choices=("share", "mean"), default="share",
                    help="Grad-CAM per region: the share of the map's positive mass (default) or "
                         "its mean over the region's pixels")
    ap.add_argument("--outputs", help="comma-separated attribute names and expression classes "
                                      "to explain (default: all the data set has)")
    ap.add_argument("--target-layer", help="Grad-CAM layer (default: the attention block, "
                                           "else the backbone's last feature map)")
    ap.add_argument("--limit", type=positive_int, help="explain at most this many faces")
    ap.add_argument("--batch-size", type=positive_int, default=16, help="faces per step")
    ap.add_argument("--device", type=device, default="cpu")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--overwrite", action="store_true")
    add_import_argument(ap)
    return ap.parse_args(argv)


def model_outputs(model: AttributeNet, attribute_names: Sequence[str],
                  expression_names: Sequence[str], chosen: str | None) -> list[Output]:
    """The outputs both the model and the data set know (or those ``chosen``)."""
    outputs = [Output(n, model.attribute_names.index(n), tuple(FSE25.ids(TRUE_REGIONS[n]))
                      if n in TRUE_REGIONS else ()) for n in model.attribute_names
               if n in attribute_names]
    if list(model.expression_names) == list(expression_names):
        outputs += [Output(f"expression:{n}", model.num_attributes + c)
                    for c, n in enumerate(model.expression_names)]
    if chosen is not None:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
        known = {o.name: o for o in outputs} | {o.name.removeprefix("expression:"): o
                                                for o in outputs}
        missing = [n for n in names if n not in known]
        if missing:
            raise InputError(f"--outputs: {', '.join(missing)} not both in the model and the "
                             f"data; known: {', '.join(o.name for o in outputs)}")
        outputs = [known[n] for n in names]
    if not outputs:
        raise InputError("the model and the data set share no attribute or expression")
    return outputs


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    out = output_dir(args.out, {"--model": args.model, "--data": data_path(args.data),
                                "--masks": args.masks, "--parser": args.parser},
                     overwrite=args.overwrite)
    masks = args.masks
    if masks is None and args.parser is None:
        if not args.data.startswith("synth:"):
            raise InputError("face regions needed: give --masks or --parser")
        masks = "labels"
    model = load_attribute_model(args.model, args.device, args.imports or ())
    dataset = open_attribute_dataset(args.data, args.split, masks=masks, size=model.image_size)
    parser = None
    if args.parser is not None:
        from parsing import Parser

        parser = Parser.from_checkpoint(args.parser, device=args.device)
    outputs = model_outputs(model, dataset.attribute_names, dataset.expression_names,
                            args.outputs)
    names, _, data_cols = shared_attributes(model, dataset)
    data_column = dict(zip(names, data_cols, strict=True))
    layer = args.target_layer or ("attention" if model.attention is not None else
                                  "backbone." + feature_layer(model.backbone,
                                                              model.image_size)[0])
    regions = AttributeRegions(model, outputs, methods, layer, args.mode,
                               gradcam_reduce=args.gradcam_reduce)
    count = min(len(dataset), args.limit or len(dataset))
    try:
        for start in progress_bar(range(0, count, args.batch_size), desc="explain",
                                  unit="batch"):
            samples = [dataset[i] for i in range(start, min(start + args.batch_size, count))]
            images = normalise(torch.stack([s["image"] for s in samples]).to(args.device))
            labels = (torch.stack([s["mask"] for s in samples]).to(args.device)
                      if parser is None else parser(images))
            regions.update(images, labels,
                           _positives(samples, outputs, model.num_attributes, data_column))
    finally:
        regions.close()
    result = regions.result()
    (out / "regions.json").write_text(json.dumps(
        {"model": args.model, "data": args.data, "split": args.split, "faces": count,
         "mode": args.mode, "gradcam_reduce": args.gradcam_reduce, "target_layer": layer,
         "methods": result}, indent=1))
    with open(out / "regions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "output", "region", "faces", "mean", "std"])
        for method, rows in result.items():
            for row in rows:
                for region, s in row["regions"].items():
                    writer.writerow([method, row["output"], region, s["count"],
                                     f"{s['mean']:.6g}", f"{s['std']:.6g}"])
    what = {"fscam": f"FS-CAM ({args.mode}): logit",
            "gradcam": f"Grad-CAM: {args.gradcam_reduce} of the map"}
    for method in methods:
        plot_heatmap(regions.table(method), [o.name for o in outputs],
                     out / f"heatmap_{method}.png", f"{what[method]} per region, {count} faces")
    print(json.dumps({"out": str(out), "faces": count, "hit_rate": {
        method: {r["output"]: r["hit_rate"] for r in rows if r["hit_rate"] is not None}
        for method, rows in result.items()}}))


def _positives(samples: list[dict], outputs: Sequence[Output], num_attributes: int,
               data_column: dict[str, int]) -> torch.Tensor:
    """(B, outputs) bool: the faces where each output is present."""
    return torch.tensor([[bool(s["attributes"][data_column[o.name]] > 0.5)
                          if o.column < num_attributes
                          else s["expression"] == o.column - num_attributes for o in outputs]
                         for s in samples], dtype=torch.bool)


if __name__ == "__main__":
    raise SystemExit(main())
