"""Does FSErasing make a recognizer more robust, by how much, and against what?

    OMP_NUM_THREADS=2 python -m benchmarks.study_augmentation --out runs/study_augmentation

One backbone, schedule and data set; five arms that differ only in the training augmentation
(``recognition.train --aug``): ``none``, ``random-erasing``, ``cutout``, ``fserasing`` with the
true masks, and ``fserasing`` with the masks of a face parser trained once on the same faces
(``parsing.train``, ``parsing.predict``). Each arm is trained with several seeds (cached by
config hash under ``OUT/cache``) and evaluated on held-out identities:

* clean verification: TAR@FAR and AUC on an IJB-C-layout protocol of loose crops
  (``recognition.make_ijbc_protocol`` / ``eval_ijbc``), 10-fold accuracy on a ``.bin`` set
  (``make_verification_bin`` / ``eval_verification``);
* robustness to occluders no arm trained with: pairs whose probe wears sunglasses, a surgical
  mask, a hand or a scarf (``parsing.synth --occluders``, the same faces as the clean probes);
  and, as a secondary figure (the distribution FSErasing trains on), probes with one region
  group erased (``recognition.evaluation.occlusion``).

Reported: mean ± std over seeds, the paired difference of each arm to ``none`` (seeds paired)
with a 95 % t interval and whether it exceeds seed noise (the interval excludes 0), and the
training cost per epoch. Writes ``study.json``, ``study.md`` and ``study.png`` under ``--out``.
``--data DIR`` (ImageFolder or RecordIO) trains on a real set instead (``--masks`` folder or
``parser:CKPT`` for the FSErasing arm, ``--bin`` / ``--ijbc`` for the evaluation).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from benchmarks.stats import mean_std, paired_difference
from benchmarks.studies import (
    add_common_arguments,
    config_hash,
    environment,
    fmt,
    markdown_table,
    network_kwargs,
    run_study,
    seeds,
    synth_set,
    train_fields,
    train_recognizer,
)
from parsing import evaluate as parsing_evaluate
from parsing import predict as parsing_predict
from parsing import train as parsing_train
from parsing.core.cli import cli_main
from parsing.core.errors import InputError
from parsing.synth import SynthFaces, write_dataset
from recognition import eval_ijbc, eval_verification, make_ijbc_protocol, make_verification_bin
from recognition.evaluation.embedding import load_backbone
from recognition.evaluation.occlusion import (
    normalised_embeddings,
    occlusion_table,
    pair_metrics,
    read_faces,
)
from recognition.evaluation.verification import sample_pairs

ARMS = ("none", "random-erasing", "cutout", "fserasing", "fserasing-parser")
OCCLUDERS = ("sunglasses", "mask", "hand", "scarf")
ERASED_GROUPS = ("eyes", "nose", "mouth")
EPOCHS = 8
COST = {"seconds_per_epoch": "wall s / epoch", "cpu_seconds_per_epoch": "CPU s / epoch"}
HAS_OCCLUDERS = "occluders" in inspect.signature(write_dataset).parameters


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_augmentation",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "runs/study_augmentation")
    p.add_argument("--arms", default=",".join(ARMS), help=f"default {','.join(ARMS)}")
    p.add_argument("--identities", type=int, default=40, help="training identities (x scale)")
    p.add_argument("--images-per-identity", type=int, default=10)
    p.add_argument("--eval-identities", type=int, default=24, help="held-out (x scale)")
    p.add_argument("--pairs", type=int, default=300, help="verification pairs (x scale)")
    p.add_argument("--parser-epochs", type=int, default=3)
    p.add_argument("--synth-options", type=json.loads, default={},
                   help="JSON options for parsing.synth.write_dataset of every set")
    p.add_argument("--data", help="real training set (ImageFolder or RecordIO) instead of synth")
    p.add_argument("--masks", help="with --data: FSErasing masks (folder, tensor file or "
                   "parser:CKPT) for the fserasing-parser arm")
    p.add_argument("--bin", nargs="+", default=[], help="with --data: verification .bin sets")
    p.add_argument("--ijbc", help="with --data: an IJB-C folder (meta/, loose_crop/)")
    return p


# ------------------------------------------------------------------------------ data
def prepare_synthetic(args: argparse.Namespace, root: Path) -> dict:
    """Training faces, a parser and its masks, and the evaluation sets (all cached)."""
    opts = args.synth_options
    n_eval = max(6, round(args.eval_identities * args.scale))
    train = synth_set(root, round(args.identities * args.scale), args.images_per_identity, 0,
                      **opts)
    held_out = synth_set(root, n_eval, 6, 1, **opts)
    loose = synth_set(root, n_eval, 6, 2, size=160, loose=True, **opts)
    parser_dir = root / "parser" / config_hash({"train": train.name,
                                                "epochs": args.parser_epochs})
    if not (parser_dir / "eval.json").is_file():
        check(parsing_train.main([
            "--data", f"synth:{train}", "--out", str(parser_dir), "--width", "16",
            "--epochs", str(args.parser_epochs), "--batch-size", "8", "--lr", "1e-2",
            "--augment", "flip", "--class-weights", "--workers", "0", "--device", args.device,
            "--overwrite"]),
            "parsing.train")
        check(parsing_predict.main(["--checkpoint", str(parser_dir), "--images",
                                    str(train / "images"), "--out", str(parser_dir / "masks"),
                                    "--workers", "0", "--device", args.device, "--overwrite"]),
              "parsing.predict")
        check(parsing_evaluate.main(["--checkpoint", str(parser_dir), "--data",
                                     f"synth:{held_out}", "--split", "all", "--workers", "0",
                                     "--device", args.device, "--out",
                                     str(parser_dir / "eval.json"), "--overwrite"]),
              "parsing.evaluate")
    n_pairs = max(20, round(args.pairs * args.scale))
    bin_path = root / "eval" / f"{held_out.name}_{n_pairs}" / "held_out.bin"
    if not bin_path.is_file():
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        check(make_verification_bin.main(["--faces", str(held_out), "--out", str(bin_path),
                                          "--pairs", str(n_pairs), "--overwrite"]),
              "make_verification_bin")
    ijbc = root / "eval" / f"ijbc_{loose.name}"
    if not (ijbc / "meta").is_dir():
        check(make_ijbc_protocol.main(["--faces", str(loose), "--out", str(ijbc),
                                       "--overwrite"]),
              "make_ijbc_protocol")
    # robustness pairs: gallery clean, probe the same held-out face with an occluder
    faces = SynthFaces(held_out)
    first, second, issame = sample_pairs(np.asarray(faces.identities), n_pairs, 1)
    gallery, _ = read_faces(faces, first, str(held_out))
    probes, probe_masks = read_faces(faces, second, str(held_out))
    occluded = {}
    if HAS_OCCLUDERS:
        for kind in OCCLUDERS:
            kind_set = SynthFaces(synth_set(root, n_eval, 6, 1, occluders=[kind],
                                            occluder_p=1.0, **opts))
            occluded[kind] = read_faces(kind_set, second, kind)[0]
    return {"train": train, "masks": {"fserasing": "labels",
                                      "fserasing-parser": str(parser_dir / "masks")},
            "parser": json.loads((parser_dir / "eval.json").read_text()),
            "bin": [str(bin_path)], "ijbc": str(ijbc), "gallery": gallery, "probes": probes,
            "probe_masks": probe_masks, "issame": issame, "occluded": occluded}


def check(code: int, what: str) -> None:
    if code != 0:
        raise InputError(f"{what} failed (exit {code}); its error is printed above")


# ------------------------------------------------------------------------------ evaluate
def evaluate(run_dir: Path, data: dict, args: argparse.Namespace) -> dict:
    """Clean and occluded verification of one trained model (cached in the run folder)."""
    key = config_hash({"bin": data["bin"], "ijbc": data["ijbc"],
                       "pairs": len(data.get("issame", [])),
                       "occluded": sorted(data.get("occluded", {}))})
    cache = run_dir / f"study_eval_{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    backbone = ["--checkpoint", str(run_dir / "model.pt"), "--network", args.network,
                "--network-kwargs", json.dumps(network_kwargs(args)), "--device", args.device]
    result: dict = {}
    if data["ijbc"]:
        out = run_dir / f"ijbc_{key}"
        check(eval_ijbc.main([*backbone, "--data", data["ijbc"], "--out", str(out),
                              "--workers", "0", "--batch-size", "32", "--overwrite"]),
              "eval_ijbc")
        report = json.loads(next(out.glob("*_verification.json")).read_text())["verification"]
        result["ijbc"] = {"tar_at_far": report["tar_at_far"], "auc": report["auc"]}
    if data["bin"]:
        out = run_dir / f"verification_{key}"
        check(eval_verification.main([*backbone, "--bin", *data["bin"], "--out", str(out),
                                      "--overwrite"]),
              "eval_verification")
        sets = json.loads((out / "verification.json").read_text())["sets"]
        result["bin"] = {name: r["accuracy"] for name, r in sets.items()}
    if "gallery" in data:
        device = torch.device(args.device)
        model = load_backbone(run_dir / "model.pt", args.network, network_kwargs(args), device)
        gallery = normalised_embeddings(model, data["gallery"], 32, True, device)
        result["occluders"] = {
            kind: pair_metrics(gallery, normalised_embeddings(model, probes, 32, True, device),
                               data["issame"]) for kind, probes in data["occluded"].items()}
        result["erased"] = occlusion_table(model, data["gallery"], data["probes"],
                                           data["probe_masks"], data["issame"], ERASED_GROUPS,
                                           device=device)
    cache.write_text(json.dumps(result, indent=1, default=float))
    return result


def measures(result: dict) -> dict[str, float]:
    """The scalar measures compared across arms."""
    out = {}
    if "ijbc" in result:
        for far, tar in result["ijbc"]["tar_at_far"].items():
            if float(far) >= 1e-2:
                out[f"IJB-C TAR@{far}"] = tar
        out["IJB-C AUC"] = result["ijbc"]["auc"]
    for name, acc in result.get("bin", {}).items():
        out[f".bin {name} acc"] = acc
    if "erased" in result:
        out["clean pairs acc"] = result["erased"]["none"]["accuracy"]
    for kind, entry in result.get("occluders", {}).items():
        out[f"{kind} acc"] = entry["accuracy"]
    if result.get("occluders"):
        out["occluders mean acc"] = float(np.mean([e["accuracy"] for e in
                                                   result["occluders"].values()]))
    for group, entry in result.get("erased", {}).items():
        if group != "none":
            out[f"{group} erased acc"] = entry["accuracy"]
    return out


# ------------------------------------------------------------------------------ run
def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    run_seeds = seeds(args)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(arms) - set(ARMS))
    if unknown or "none" not in arms:
        raise InputError(f"--arms: needs 'none' and names from {', '.join(ARMS)}"
                         + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    out = Path(args.out)
    root = Path(args.runs) if args.runs else out / "cache"
    wall = time.perf_counter()
    if args.data:
        if "fserasing" in arms:
            arms.remove("fserasing")  # no true masks for a real set
        if "fserasing-parser" in arms and not args.masks:
            raise InputError("--data with the fserasing-parser arm needs --masks")
        if not (args.bin or args.ijbc):
            raise InputError("--data needs --bin and/or --ijbc to evaluate on")
        data = {"train": Path(args.data), "masks": {"fserasing-parser": args.masks},
                "bin": args.bin, "ijbc": args.ijbc}
    else:
        data = prepare_synthetic(args, root)
    fields = {**train_fields(args, EPOCHS), "rec": str(data["train"])}
    report = {"environment": environment("benchmarks.study_augmentation", argv),
              "settings": dict(vars(args)), "occluders": sorted(data.get("occluded", {})),
              "parser": data.get("parser"), "arms": {}}
    for arm in arms:
        aug = "fserasing" if arm.startswith("fserasing") else arm
        entry = {"seeds": {}}
        for seed in run_seeds:
            run_dir, info = train_recognizer(root, args.torchrun, aug=aug,
                                             masks=data["masks"].get(arm), seed=seed, **fields)
            entry["seeds"][seed] = {"training": info, "eval": evaluate(run_dir, data, args)}
        report["arms"][arm] = entry
    report["summary"] = summarise(report, run_seeds)
    report["wall_seconds"] = time.perf_counter() - wall
    write_outputs(report, out)
    return report


def summarise(report: dict, run_seeds: list[int]) -> dict:
    table = {arm: {s: measures(e["seeds"][s]["eval"]) for s in run_seeds}
             for arm, e in report["arms"].items()}
    names = list(table["none"][run_seeds[0]])
    summary = {}
    for arm, per_seed in table.items():
        row = {m: mean_std([per_seed[s][m] for s in run_seeds]) for m in names}
        if arm != "none":
            for m in names:
                row[m]["vs_none"] = paired_difference([per_seed[s][m] for s in run_seeds],
                                                      [table["none"][s][m] for s in run_seeds])
        runs = [report["arms"][arm]["seeds"][s]["training"] for s in run_seeds]
        row["seconds_per_epoch"] = mean_std([r["seconds_per_epoch"] for r in runs])
        row["cpu_seconds_per_epoch"] = mean_std([r["cpu_seconds"] / r["epochs"] for r in runs])
        summary[arm] = row
    return summary


# ------------------------------------------------------------------------------ outputs
def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(report, indent=1, default=float))
    env, summary = report["environment"], report["summary"]
    arms = list(summary)
    names = [m for m in summary["none"] if m not in COST]
    trainings = [e["seeds"][s]["training"] for e in report["arms"].values() for s in e["seeds"]]
    lines = [f"# Augmentation study\n\n`{env['command']}` — commit {env['commit']}, "
             f"{env['cores']} cores, {env['threads']} threads, wall "
             f"{report['wall_seconds'] / 60:.1f} min (this invocation; the {len(trainings)} "
             f"trainings took {sum(t['seconds'] for t in trainings) / 60:.1f} min wall, "
             f"{sum(t['cpu_seconds'] for t in trainings) / 60:.1f} min CPU when they ran)\n"]
    if report.get("parser"):
        lines.append(f"Parser for the fserasing-parser arm: mean F1 "
                     f"{100 * (report['parser'].get('mean_f1') or float('nan')):.1f} over the "
                     "foreground classes of the held-out faces.\n")
    if not report["occluders"] and "erased" in str(names):
        lines.append("**No occluder renderer in this parsing.synth: robustness is shown on "
                     "erased regions only (the distribution FSErasing trains on).**\n")
    lines.append("## Mean ± std over seeds\n")
    lines.append(markdown_table(
        ["measure", *arms],
        [[m, *(fmt(summary[a][m]["mean"], summary[a][m]["std"]) for a in arms)]
         for m in names] + [[label, *(fmt(summary[a][key]["mean"], summary[a][key]["std"], 1)
                                      for a in arms)] for key, label in COST.items()]))
    lines.append("## Paired difference to `none` (same seed), 95 % t interval\n")
    rows = []
    for m in names:
        cells = []
        for a in arms[1:]:
            d = summary[a][m]["vs_none"]
            cells.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
                         + (" **\\***" if d["exceeds_noise"] else ""))
        rows.append([m, *cells])
    lines.append(markdown_table(["measure", *arms[1:]], rows))
    lines.append("**\\***: the interval excludes 0 (the difference exceeds seed noise).\n\n"
                 "![augmentation study](study.png)\n")
    (out / "study.md").write_text("\n".join(lines))
    plot_study(report, out / "study.png")


def plot_study(report: dict, path: Path) -> None:
    summary = report["summary"]
    arms = list(summary)
    names = [m for m in summary["none"] if m not in COST]
    fig = Figure(figsize=(max(10.0, 0.9 * len(names) + 3), 7.5))
    top, bottom = fig.subplots(2, 1)
    width = 0.8 / len(arms)
    x = np.arange(len(names))
    for i, a in enumerate(arms):
        offset = (i - len(arms) / 2 + 0.5) * width
        top.bar(x + offset, [summary[a][m]["mean"] for m in names], width,
                yerr=[summary[a][m]["std"] for m in names], label=a, capsize=2)
        if a != "none":
            d = [summary[a][m]["vs_none"] for m in names]
            bottom.errorbar(x + offset, [v["mean"] for v in d],
                            yerr=[[v["mean"] - v["low"] for v in d],
                                  [v["high"] - v["mean"] for v in d]],
                            fmt="o", color=f"C{i}", capsize=3, label=a)
    for ax in (top, bottom):
        ax.set_xticks(x, names, rotation=25, ha="right", fontsize=8)
    top.set(ylim=(0, 1.05), title="mean ± std over seeds")
    top.legend(fontsize=7, ncol=len(arms))
    bottom.axhline(0, color="0.3", lw=1)
    bottom.set(title="difference to none, 95 % t interval over paired seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run_study(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
