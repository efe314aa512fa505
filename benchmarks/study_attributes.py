"""Does FSErasing help a facial-attribute model, and does the model look where the attribute is?

    OMP_NUM_THREADS=2 python -m benchmarks.study_attributes --out runs/study_attributes \\
        --seeds 5 --jobs 2        # the RESULTS.md run: trainings 1 thread each, explanations 2

Ground truth: synthetic faces (``parsing.synth``, 112 px) whose 11 CelebA-named attributes and
3-class expression are known exactly (:mod:`parsing.synth.attributes`); identity-disjoint
train / test splits (60 % / 20 % of the identities). Two arms that differ only in the training
augmentation (``recognition.attributes.train --aug none`` or ``fserasing`` with the set's own
masks, the library's default options: p = 0.5, 1-3 of the face regions 1-19), trained with
the same seeds (paired), a MobileFaceNet with GCNet channel attention. Reported on the test
faces: mean accuracy, mean balanced accuracy and expression accuracy (mean ± std over seeds,
the paired difference fserasing - none with a 95 % t interval), per-attribute accuracy, and the
top-1 hit rate on the regions that carry the exactly-known attributes (``cam.attributes``;
eyeglasses: eyes, around-eye, glasses; hat: headwear, forehead; open mouth and smile: mouth;
black and blond hair: hair) of FS-CAM keep (the reference), FS-CAM remove and Grad-CAM
aggregated per region (its share of the positive mass, and its mean over the region's pixels),
beside the rate of a random pick among the regions present.
Models are trained ``--jobs`` at a time and cached by config hash under ``OUT/cache``.
Writes ``study.json``, ``study.md`` and ``heatmap_<explanation>.png`` (seed 0, fserasing)
under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.stats import mean_std, paired_difference
from benchmarks.studies import (
    NETWORK,
    NETWORK_KWARGS,
    environment,
    fmt,
    markdown_table,
    network_kwargs,
    run_study,
    synth_set,
    train_recognizers,
)
from cam.attributes import TRUE_REGIONS, AttributeRegions, Output, plot_heatmap
from cam.metrics import top_k_hit_rate
from parsing.core.cli import cli_main
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from parsing.core.pixels import normalise
from recognition.attributes.data import open_attribute_dataset
from recognition.attributes.evaluation import evaluate
from recognition.attributes.models import load_attribute_model
from recognition.attributes.training import AttributeConfig, AttributeTrainer

ARMS = ("none", "fserasing")
EXPLANATIONS = ("fscam_keep", "fscam_remove", "gradcam_share", "gradcam_mean")
EXPLAINED = ("Eyeglasses", "Wearing_Hat", "Mouth_Slightly_Open", "Smiling", "Black_Hair",
             "Blond_Hair")
HEADLINE = ("mean_accuracy", "mean_balanced_accuracy", "expression_accuracy")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_attributes",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study_attributes")
    p.add_argument("--runs", help="cache of data sets and trained models (default OUT/cache)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--identities", type=int, default=400)
    p.add_argument("--per-identity", type=int, default=6)
    p.add_argument("--size", type=int, default=112, help="image size (default 112)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--network", default=NETWORK, help=f"backbone (default {NETWORK})")
    p.add_argument("--network-kwargs", type=json.loads,
                   help=f"JSON backbone options (default for mbf: {json.dumps(NETWORK_KWARGS)})")
    p.add_argument("--attention", default="gc")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--explain", type=int, default=160, help="test faces explained per model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=1,
                   help="models trained at once, in separate processes (default 1)")
    return p


def _explain(model: Any, test: Any, faces: int, device: str
             ) -> tuple[dict, dict[str, AttributeRegions]]:
    """Hit rates of FS-CAM (keep and remove) and Grad-CAM (share and mean per region) on the
    first ``faces`` test faces."""
    outputs = [Output(n, model.attribute_names.index(n), tuple(FSE25.ids(TRUE_REGIONS[n])))
               for n in EXPLAINED]
    columns = [test.attribute_names.index(n) for n in EXPLAINED]
    explainers = {"fscam_keep": AttributeRegions(model, outputs, ("fscam",), mode="keep"),
                  "fscam_remove": AttributeRegions(model, outputs, ("fscam",), mode="remove"),
                  "gradcam_share": AttributeRegions(model, outputs, ("gradcam",), "attention"),
                  "gradcam_mean": AttributeRegions(model, outputs, ("gradcam",), "attention",
                                                   gradcam_reduce="mean")}
    try:
        for start in range(0, faces, 16):
            samples = [test[i] for i in range(start, min(start + 16, faces))]
            images = normalise(torch.stack([s["image"] for s in samples]).to(device))
            labels = torch.stack([s["mask"] for s in samples]).to(device)
            positive = torch.stack([s["attributes"][columns] > 0.5 for s in samples])
            for regions in explainers.values():
                regions.update(images, labels, positive)
    finally:
        for regions in explainers.values():
            regions.close()
    return {name: {r["output"]: r["hit_rate"] for r in next(iter(regions.result().values()))}
            for name, regions in explainers.items()}, explainers


def _chance(test: Any, faces: int) -> dict[str, float]:
    """The top-1 hit rate of a random pick among the regions present on each face (a constant
    score), per explained attribute, over the faces where it is present."""
    columns = [test.attribute_names.index(n) for n in EXPLAINED]
    truths = [torch.zeros(FSE25.num_classes, dtype=torch.bool).index_fill_(
        0, torch.tensor(FSE25.ids(TRUE_REGIONS[n])), True) for n in EXPLAINED]
    rates: dict[str, list[float]] = {n: [] for n in EXPLAINED}
    for i in range(faces):
        sample = test[i]
        present = torch.bincount(sample["mask"].flatten().long(), minlength=FSE25.num_classes)
        scores = torch.where(present > 0, 0.0, float("nan"))[None]
        for name, column, truth in zip(EXPLAINED, columns, truths, strict=True):
            if sample["attributes"][column] > 0.5:
                rate = float(top_k_hit_rate(scores, truth, k=1)[0])
                if rate == rate:
                    rates[name].append(rate)
    return {n: sum(r) / len(r) if r else float("nan") for n, r in rates.items()}


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> None:
    if args.seeds < 1:
        raise InputError(f"--seeds must be >= 1, got {args.seeds}")
    out = Path(args.out)
    root = Path(args.runs) if args.runs else out / "cache"
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    data = synth_set(root, args.identities, args.per_identity, 0, size=args.size)
    spec = f"synth:{data}"
    test = open_attribute_dataset(spec, "test", masks="labels", size=args.size)
    fields = dict(rec=spec, network=args.network, network_kwargs=network_kwargs(args),
                  embedding_size=128,
                  attention=args.attention, image_size=args.size, num_epoch=args.epochs,
                  warmup_epoch=1, batch_size=args.batch_size, optimizer=args.optimizer,
                  lr=args.lr, weight_decay=args.weight_decay, device=args.device,
                  num_workers=0, frequent=1000, verbose=10**9)
    plan = [(seed, arm) for seed in range(args.seeds) for arm in ARMS]
    trained = train_recognizers(root, [dict(
        config_class=AttributeConfig, trainer_class=AttributeTrainer,
        command="recognition.attributes.train", seed=seed, aug=arm, **fields)
        for seed, arm in plan], args.jobs)
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for (seed, arm), (folder, info) in zip(plan, trained, strict=True):
        cached = folder / "study_eval.json"
        record = json.loads(cached.read_text()) if cached.is_file() else {}
        if set(record.get("hit_rate", {})) != set(EXPLANATIONS):  # none, or other methods
            model = load_attribute_model(folder / "model.pt", args.device)
            result = evaluate(model, test, progress=False)
            hits, explainers = _explain(model, test, min(args.explain, len(test)), args.device)
            record = {"seed": seed, "arm": arm, "seconds": info["seconds"], **result,
                      "hit_rate": hits}
            cached.write_text(json.dumps(record, indent=1))
            if seed == 0 and arm == "fserasing":
                for name, regions in explainers.items():
                    plot_heatmap(regions.table(regions.methods[0]), EXPLAINED,
                                 out / f"heatmap_{name}.png",
                                 f"{name}, seed 0, fserasing: region scores on test faces")
        runs[arm].append(record)
    summary = _summarise(runs)
    summary["chance_hit_rate"] = _chance(test, min(args.explain, len(test)))
    summary.update(question="FSErasing vs none on exactly-labelled synthetic attributes",
                   data={"identities": args.identities, "per_identity": args.per_identity,
                         "size": args.size, "train_faces": len(open_attribute_dataset(
                             spec, "train", size=args.size)), "test_faces": len(test)},
                   config={k: v for k, v in fields.items() if k != "rec"},
                   seeds=args.seeds, explained_faces=min(args.explain, len(test)),
                   seconds=time.perf_counter() - tic, environment=environment(
                       "benchmarks.study_attributes", argv))
    (out / "study.json").write_text(json.dumps(summary, indent=1))
    (out / "study.md").write_text(_markdown(summary))


def _summarise(runs: dict[str, list[dict]]) -> dict[str, Any]:
    def value(record: dict, key: str) -> float:
        return record["expression"]["accuracy"] if key == "expression_accuracy" else record[key]

    arms = {}
    for arm, records in runs.items():
        row = {key: mean_std([value(r, key) for r in records]) for key in HEADLINE}
        row["attributes"] = {a["attribute"]: mean_std([r["attributes"][k]["accuracy"]
                                                       for r in records])
                             for k, a in enumerate(records[0]["attributes"])}
        row["hit_rate"] = {m: {n: mean_std([r["hit_rate"][m][n] for r in records])
                               for n in EXPLAINED} for m in EXPLANATIONS}
        row["seconds_per_run"] = mean_std([r["seconds"] for r in records])
        arms[arm] = row
    diff = {key: paired_difference([value(r, key) for r in runs["fserasing"]],
                                   [value(r, key) for r in runs["none"]]) for key in HEADLINE}
    return {"arms": arms, "fserasing_minus_none": diff, "runs": runs}


def _markdown(s: dict[str, Any]) -> str:
    arms, diff = s["arms"], s["fserasing_minus_none"]
    head = ["arm", "mean accuracy", "mean balanced accuracy", "expression accuracy",
            "wall s / run"]
    rows = [[arm, *(fmt(a[k]["mean"], a[k]["std"], 4) for k in HEADLINE),
             fmt(a["seconds_per_run"]["mean"], a["seconds_per_run"]["std"], 0)]
            for arm, a in arms.items()]
    rows.append(["fserasing − none (95 % CI)", *(
        f"{diff[k]['mean']:+.4f} [{diff[k]['low']:+.4f}, {diff[k]['high']:+.4f}]"
        + (" *" if diff[k]["exceeds_noise"] else "") for k in HEADLINE), ""])
    text = (f"Test faces: {s['data']['test_faces']} (train {s['data']['train_faces']}), "
            f"{s['seeds']} seeds, mean ± std; * = the interval excludes 0.\n\n")
    text += markdown_table(head, rows) + "\n"
    names = list(arms["none"]["attributes"])
    text += "Per-attribute test accuracy:\n\n" + markdown_table(
        ["attribute", *arms], [[n, *(fmt(a["attributes"][n]["mean"], a["attributes"][n]["std"],
                                         3) for a in arms.values())] for n in names]) + "\n"
    text += (f"Top-1 hit rate on the true regions ({s['explained_faces']} test faces per model, "
             "faces where the attribute is present):\n\n")
    text += markdown_table(["method", "arm", *EXPLAINED], [
        [m, arm, *(fmt(a["hit_rate"][m][n]["mean"], a["hit_rate"][m][n]["std"], 3)
                   for n in EXPLAINED)] for m in EXPLANATIONS for arm, a in arms.items()]
        + [["random region (chance)", "", *(f"{s['chance_hit_rate'][n]:.3f}"
                                            for n in EXPLAINED)]])
    env = s["environment"]
    text += (f"\nCommand: `{env['command']}` (commit {env['commit']}, {env['cores']} cores, "
             f"{env['threads']} threads, {env['cpu']}); {s['seconds']:.0f} s in all.\n")
    return text


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run_study(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
