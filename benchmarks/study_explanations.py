"""Does an explanation find the face regions that carry identity? FS-CAM (keep and remove),
Grad-CAM, Group-CAM and RISE scored against known identity regions.

    OMP_NUM_THREADS=2 python -m benchmarks.study_explanations --out runs/study_explanations

Ground truth: ``parsing.synth --identity-regions R`` faces, whose identity lives only in the
regions R (everything else varies per image). For each region set and training seed a small
recognizer is trained with the library's trainer (cached by config hash under
``OUT/cache``), then:

* occlusion check (``recognition.evaluation.occlusion``): held-out pair accuracy with nothing
  erased, with the identity regions erased in the probe, and with the same pixel area erased
  elsewhere (the model must rely on R);
* explanations of held-out genuine pairs (face a, target: cosine similarity to the embedding of
  another face b of the same identity), aggregated per region (pixel maps: mean of the map
  over the region's pixels; FS-CAM: its region scores) over the regions present except the
  background, scored against the known regions: top-k hit rate (k = identity regions
  present), ROC-AUC, deletion and insertion AUC (``cam.metrics``);
* sanity checks (Adebayo et al. 2018) on the first seed: cascading randomisation (the
  backbone's blocks re-initialised from the top down) and a model trained on shuffled
  identities (for the first region set; ``--shuffled all`` for every set); the Spearman
  correlation of each method's region scores with the trained model's. A method is flagged
  when its ranking survives full randomisation (mean rho >= 0.5);
* cost: forward passes through the model and seconds per explained face.

Writes ``study.json``, ``study.md`` (tables) and ``study.png`` (figure) under ``--out``.
``--data DIR --eval DIR --masks M`` runs the same on a real set (ImageFolder or RecordIO for
training; an ImageFolder of aligned faces to explain, with FSE-25 masks from a folder or
``parser:CKPT``); ``--truth R`` then names the regions to score against (without it only the
faithfulness and sanity measures are reported).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from benchmarks.stats import mean_std
from benchmarks.studies import (
    add_common_arguments,
    environment,
    fmt,
    markdown_table,
    network_kwargs,
    run_study,
    seeds,
    shuffled_identities,
    synth_set,
    train_fields,
    train_recognizer,
)
from cam import FSCAM, RISE, GradCAM, GroupCAM, metrics, plot, region_attribution
from cam.fscam.__main__ import default_layer
from cam.targets import SimilarityTarget
from parsing.core.cli import cli_main
from parsing.core.errors import InputError
from parsing.core.labels import FSE25
from parsing.core.pixels import normalise
from parsing.synth.genes import GENE_GROUPS, bound_groups
from recognition.evaluation.embedding import load_backbone
from recognition.evaluation.occlusion import occlusion_table, open_faces, read_faces
from recognition.evaluation.verification import sample_pairs

DEFAULT_SETS = ("eyes,around_eyes", "nose,mouth", "hair")
METHODS = ("fscam_keep", "fscam_remove", "gradcam", "groupcam", "rise")
BACKWARD = {"gradcam": 1, "groupcam": 1}  # one backward pass, to the target layer
FLAG_RHO = 0.5
EPOCHS = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_explanations",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(p, "runs/study_explanations")
    p.add_argument("--sets", default=";".join(DEFAULT_SETS),
                   help="identity-region sets separated by ';' "
                   "(default eyes,around_eyes;nose,mouth;hair)")
    p.add_argument("--identities", type=int, default=100, help="training identities (x scale)")
    p.add_argument("--images-per-identity", type=int, default=6)
    p.add_argument("--eval-identities", type=int, default=20, help="held-out (x scale)")
    p.add_argument("--explain", type=int, default=8, help="explained faces (x scale)")
    p.add_argument("--pairs", type=int, default=200, help="occlusion-check pairs (x scale)")
    p.add_argument("--rise-masks", type=int, default=300)
    p.add_argument("--groups", type=int, default=32, help="Group-CAM channel groups")
    p.add_argument("--step", type=int, default=1045,
                   help="pixels per deletion/insertion step (default: 13 points at 112x112)")
    p.add_argument("--cascade", type=int, default=3,
                   help="randomisation stages (top block, ..., every block)")
    p.add_argument("--shuffled", choices=("first", "all"), default="first",
                   help="train the shuffled-identity model for the first region set only "
                   "(default) or for every set")
    p.add_argument("--synth-options", type=json.loads, default={},
                   help="JSON options for parsing.synth.write_dataset (the ground-truth recipe)")
    p.add_argument("--data", help="real training set (ImageFolder or RecordIO) instead of synth")
    p.add_argument("--eval", dest="eval_data", help="with --data: ImageFolder of aligned faces "
                   "of held-out identities to explain")
    p.add_argument("--masks", help="with --data: FSE-25 masks of --eval (folder, tensor file or "
                   "parser:CKPT)")
    p.add_argument("--truth", help="with --data: regions to score against (e.g. eyes,nose)")
    return p


# ------------------------------------------------------------------------------ truth
def identity_classes(regions: Sequence[str]) -> list[int]:
    """FSE-25 classes whose appearance carries identity in a ``--identity-regions`` set: those
    painted by the gene groups that stay bound (``parsing.synth.genes``)."""
    chosen = set(FSE25.ids(list(regions)))
    painted = {k for g in bound_groups(regions) for k in GENE_GROUPS[g][0]}
    return sorted(chosen & painted) or sorted(chosen)


# ------------------------------------------------------------------------------ explain
class PassCounter:
    """Counts the images that go through ``model`` (forward pre-hook)."""

    def __init__(self, model: nn.Module):
        self.rows = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple) -> None:
        self.rows += len(inputs[0])

    def close(self) -> None:
        self.handle.remove()


def explainers(model: nn.Module, args: argparse.Namespace) -> dict[str, Callable]:
    """method -> fn(images, target, labels) -> (map (B,H,W), region scores (B,25))."""
    layer = default_layer(model, args.device)
    fscam = {m: FSCAM(model, mode=m, batch_size=64) for m in ("keep", "remove")}
    rise = RISE(model, n_masks=args.rise_masks, batch_size=64, seed=0)

    def region(explainer):
        def run(images, target, labels):
            result = explainer.explain(images, target, labels)
            return result.map, result.region_scores
        return run

    def pixel(make):
        def run(images, target, labels):
            with make() as explainer:
                maps = explainer.explain(images, target).map
            return maps, region_attribution(maps, labels, reduce="mean")
        return run

    return {"fscam_keep": region(fscam["keep"]), "fscam_remove": region(fscam["remove"]),
            "gradcam": pixel(lambda: GradCAM(model, layer)),
            "groupcam": pixel(lambda: GroupCAM(model, layer, groups=args.groups)),
            "rise": pixel(lambda: rise)}


def explain_all(model: nn.Module, images: Tensor, partners: Tensor, labels: Tensor,
                args: argparse.Namespace, faithfulness: bool = True) -> dict[str, dict]:
    """Every method on ``images`` (target: cosine similarity to the partners' embeddings):
    region scores (NaN for absent regions and the background), maps, cost and, with
    ``faithfulness``, deletion / insertion AUC per image."""
    model.eval()
    with torch.no_grad():
        reference = model(partners)
    target = SimilarityTarget(reference)
    present = region_attribution(torch.ones(labels.shape, device=labels.device), labels) > 0
    present[:, 0] = False
    out = {}
    for name, run in explainers(model, args).items():
        counter = PassCounter(model)
        wall, cpu = time.perf_counter(), time.process_time()
        maps, scores = run(images, target, labels)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        counter.close()
        entry = {"scores": torch.where(present, scores.double(), float("nan")).cpu(),
                 "map": maps.cpu(), "forwards": counter.rows / len(images),
                 "backwards": BACKWARD.get(name, 0), "seconds": wall / len(images),
                 "cpu_seconds": cpu / len(images)}
        if faithfulness:
            entry["deletion"] = metrics.deletion(model, images, maps, target, args.step).auc.cpu()
            entry["insertion"] = metrics.insertion(model, images, maps, target,
                                                   args.step).auc.cpu()
        out[name] = entry
    return out


def quality(result: dict, truth: Tensor | None) -> dict[str, list[float]]:
    """Per-image measures of one method's explanation."""
    q = {}
    if truth is not None:
        q["hit"] = metrics.top_k_hit_rate(result["scores"], truth).tolist()
        q["auc"] = metrics.region_auc(result["scores"], truth).tolist()
    for key in ("deletion", "insertion"):
        if key in result:
            q[key] = result[key].tolist()
    return q


def randomise_top_down(model: nn.Module) -> list[list[nn.Module]]:
    """The backbone's blocks from the output down: top-level children, with sequential
    containers opened one level (MobileFaceNet's ``layers``, IResNet's ``layer4``, ...)."""
    blocks: list[nn.Module] = []
    for child in model.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(child) > 1:
            blocks.extend(child)
        else:
            blocks.append(child)
    return [b for b in reversed(blocks) if any(True for _ in b.parameters())]


def reinitialise(block: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    for module in block.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()


def sanity_checks(model: nn.Module, trained: dict, images: Tensor, partners: Tensor,
                  labels: Tensor, shuffled: nn.Module | None, args: argparse.Namespace
                  ) -> dict:
    """Spearman rho of region scores with the trained model's: after randomising the top
    1, ..., all blocks (``args.cascade`` stages), and for the shuffled-identity model."""
    blocks = randomise_top_down(model)
    stops = sorted({max(1, round(len(blocks) * (i + 1) / args.cascade))
                    for i in range(args.cascade)})
    cascade, done = [], 0
    for stop in stops:
        for i in range(done, stop):
            reinitialise(blocks[i], 1000 + i)
        done = stop
        result = explain_all(model, images, partners, labels, args, faithfulness=False)
        cascade.append({"blocks": stop, "of": len(blocks),
                        "rho": {m: metrics.spearman(result[m]["scores"],
                                                    trained[m]["scores"]).tolist()
                                for m in METHODS}})
    out = {"cascade": cascade}
    if shuffled is not None:
        result = explain_all(shuffled, images, partners, labels, args, faithfulness=False)
        out["shuffled"] = {m: metrics.spearman(result[m]["scores"], trained[m]["scores"]).tolist()
                           for m in METHODS}
    return out


# ------------------------------------------------------------------------------ data
def open_set(name: str, regions: list[str] | None, args: argparse.Namespace, root: Path,
             scale: float) -> dict:
    """Training folder, held-out faces and pairs of one region set."""
    if args.data:
        train, eval_dir, masks = Path(args.data), args.eval_data, args.masks
        parser = None
        if masks and masks.startswith("parser:"):
            from parsing import Parser
            parser, masks = Parser.from_checkpoint(masks.split(":", 1)[1], device="cpu"), None
        # parsed below: the folder is read with placeholder masks
        dataset, identities = open_faces(eval_dir, masks or (
            lambda path: torch.zeros(112, 112, dtype=torch.uint8)))
    else:
        options = {"identity_regions": regions, **args.synth_options}
        train = synth_set(root, round(args.identities * scale), args.images_per_identity, 0,
                          **options)
        eval_dir = synth_set(root, max(4, round(args.eval_identities * scale)), 6, 1, **options)
        dataset, identities = open_faces(str(eval_dir), None)
        parser = None
    rng = np.random.default_rng(0)
    explain_n = max(2, round(args.explain * scale))
    by_identity: dict[int, list[int]] = {}
    for i, identity in enumerate(identities):
        by_identity.setdefault(int(identity), []).append(i)
    usable = [v for v in by_identity.values() if len(v) > 1]
    if not usable:
        raise InputError(f"{eval_dir}: no identity has two faces to pair")
    picks = [rng.choice(usable[i % len(usable)], 2, replace=False) for i in range(explain_n)]
    first, second = np.array([p[0] for p in picks]), np.array([p[1] for p in picks])
    faces, labels = read_faces(dataset, np.concatenate([first, second]), str(eval_dir))
    if parser is not None:
        with torch.no_grad():
            labels = parser(normalise(faces)).cpu()
    n_pairs = max(20, round(args.pairs * scale))
    a, b, issame = sample_pairs(identities, n_pairs, 0)
    needed, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    pair_faces, pair_masks = read_faces(dataset, needed, str(eval_dir))
    if parser is not None:
        with torch.no_grad():
            pair_masks = torch.cat([parser(normalise(pair_faces[s:s + 64])).cpu()
                                    for s in range(0, len(pair_faces), 64)])
    return {"name": name, "train": train, "faces": faces[:explain_n],
            "partners": faces[explain_n:], "labels": labels[:explain_n].long(),
            "gallery": pair_faces[inverse[:len(a)]], "probes": pair_faces[inverse[len(a):]],
            "probe_masks": pair_masks[inverse[len(a):]], "issame": issame}


# ------------------------------------------------------------------------------ run
def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    run_seeds = seeds(args)
    out = Path(args.out)
    root = Path(args.runs) if args.runs else out / "cache"
    device = torch.device(args.device)
    if args.data:
        if not (args.eval_data and args.masks):
            raise InputError("--data needs --eval (faces to explain) and --masks")
        sets = {args.truth or "real": args.truth.split(",") if args.truth else None}
    else:
        sets = {s.strip(): [r.strip() for r in s.split(",") if r.strip()]
                for s in args.sets.split(";") if s.strip()}
        for regions in sets.values():
            FSE25.ids(regions)  # unknown names: LabelError naming them
    fields = {**train_fields(args, EPOCHS), "aug": "none"}
    report = {"environment": environment("benchmarks.study_explanations", argv),
              "settings": {k: v for k, v in vars(args).items()}, "sets": {}}
    wall = time.perf_counter()
    for name, regions in sets.items():
        data = open_set(name, regions, args, root, args.scale)
        truth = None
        if regions is not None:
            truth = torch.zeros(FSE25.num_classes, dtype=torch.bool)
            truth[identity_classes(regions)] = True
        group = "+".join(FSE25.names[k] for k in identity_classes(regions)) if regions else None
        images = normalise(data["faces"]).to(device)
        partners = normalise(data["partners"]).to(device)
        labels = data["labels"].to(device)
        entry = {"regions": regions, "truth": [FSE25.names[k] for k in
                                               (truth.nonzero()[:, 0].tolist()
                                                if truth is not None else [])],
                 "seeds": {}}
        for seed in run_seeds:
            run_dir, info = train_recognizer(root, args.torchrun, rec=str(data["train"]),
                                             seed=seed, **fields)
            model = load_backbone(run_dir / "model.pt", args.network, network_kwargs(args),
                                  device)
            seed_entry = {"training": info}
            if group is not None:
                seed_entry["occlusion"] = occlusion_table(
                    model, data["gallery"], data["probes"], data["probe_masks"], data["issame"],
                    groups=[group], device=device, elsewhere=True, seed=seed)
            results = explain_all(model, images, partners, labels, args)
            seed_entry["methods"] = {
                m: {**quality(r, truth), "forwards": r["forwards"], "backwards": r["backwards"],
                    "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                    "scores": r["scores"].tolist()} for m, r in results.items()}
            if seed == run_seeds[0]:
                shuffled = None
                if args.shuffled == "all" or name == next(iter(sets)):
                    shuffled_dir, seed_entry["shuffled_training"] = train_recognizer(
                        root, args.torchrun,
                        rec=str(shuffled_identities(Path(data["train"]), root)), seed=seed,
                        **fields)
                    shuffled = load_backbone(shuffled_dir / "model.pt", args.network,
                                             network_kwargs(args), device)
                seed_entry["sanity"] = sanity_checks(model, results, images, partners, labels,
                                                     shuffled, args)
                entry["example"] = figure_example(data, results, truth, out, name)
            entry["seeds"][seed] = seed_entry
        entry["summary"] = summarise(entry, run_seeds)
        report["sets"][name] = entry
    report["wall_seconds"] = time.perf_counter() - wall
    write_outputs(report, out)
    return report


def summarise(entry: dict, run_seeds: list[int]) -> dict:
    """Mean over images per seed, then mean ± std over seeds (and the mean image-level std)."""
    summary = {}
    for m in METHODS:
        row = {}
        for key in ("hit", "auc", "deletion", "insertion", "forwards", "seconds"):
            per_seed, image_sd = [], []
            for seed in run_seeds:
                value = entry["seeds"][seed]["methods"][m].get(key)
                if value is None:
                    continue
                values = np.atleast_1d(np.asarray(value, dtype=float))
                per_seed.append(float(np.nanmean(values)))
                image_sd.append(float(np.nanstd(values, ddof=1)) if values.size > 1 else math.nan)
            if per_seed:
                row[key] = {**mean_std(per_seed), "image_std": float(np.nanmean(image_sd))
                            if not all(math.isnan(v) for v in image_sd) else math.nan}
        sanity = entry["seeds"][run_seeds[0]]["sanity"]
        row["cascade_rho"] = [mean_std(stage["rho"][m]) | {"blocks": stage["blocks"],
                                                           "of": stage["of"]}
                              for stage in sanity["cascade"]]
        if "shuffled" in sanity:
            row["shuffled_rho"] = mean_std(sanity["shuffled"][m])
        row["flagged"] = bool(row["cascade_rho"][-1]["mean"] >= FLAG_RHO)
        summary[m] = row
    if "occlusion" in entry["seeds"][run_seeds[0]]:
        occ = {}
        for seed in run_seeds:
            for key, value in entry["seeds"][seed]["occlusion"].items():
                occ.setdefault(key, []).append(value["accuracy"])
        summary["occlusion"] = {k: mean_std(v) for k, v in occ.items()}
    return summary


# ------------------------------------------------------------------------------ outputs
def figure_example(data: dict, results: dict, truth: Tensor | None, out: Path, name: str) -> str:
    """The first explained face with every method's map and region scores, true regions
    outlined."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"example_{name.replace(',', '_')}.png"
    marked = None if truth is None else truth[data["labels"][0]]
    plot.compare(data["faces"][0], {m: r["map"][0] for m, r in results.items()},
                 {m: r["scores"][0] for m, r in results.items()}, label_map=data["labels"][0],
                 marked=marked, title=f"identity regions {name}: similarity to another face "
                 "of the same identity (true regions outlined)", path=path)
    return path.name


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(report, indent=1, default=float))
    trainings = [seed[key] for e in report["sets"].values() for seed in e["seeds"].values()
                 for key in ("training", "shuffled_training") if key in seed]
    lines = [f"# Explanation study\n\n`{report['environment']['command']}` — commit "
             f"{report['environment']['commit']}, {report['environment']['cores']} cores, "
             f"{report['environment']['threads']} threads, wall "
             f"{report['wall_seconds'] / 60:.1f} min (this invocation; the {len(trainings)} "
             f"trained models took {sum(t['seconds'] for t in trainings) / 60:.1f} min wall "
             "when they ran)\n"]
    occ_rows = []
    rows = []
    for name, entry in report["sets"].items():
        s = entry["summary"]
        if "occlusion" in s:
            o = s["occlusion"]
            keys = list(o)
            occ_rows.append([name, fmt(o["none"]["mean"], o["none"]["std"]),
                             fmt(o[keys[1]]["mean"], o[keys[1]]["std"]),
                             fmt(o[keys[2]]["mean"], o[keys[2]]["std"])])
        for m in METHODS:
            r = s[m]

            def cell(key, r=r):
                v = r.get(key)
                return "—" if v is None else fmt(v["mean"], v["std"])
            rows.append([name, m, cell("hit"), cell("auc"), cell("deletion"), cell("insertion"),
                         fmt(r["cascade_rho"][-1]["mean"], r["cascade_rho"][-1]["std"], 2),
                         fmt(r.get("shuffled_rho", {}).get("mean", math.nan),
                             r.get("shuffled_rho", {}).get("std", math.nan), 2),
                         "**yes**" if r["flagged"] else "no",
                         f"{r['forwards']['mean']:.0f} + {report_backwards(m)}",
                         f"{r['seconds']['mean']:.3f}"])
    if occ_rows:
        lines.append("## Occlusion check (held-out pair accuracy, mean ± std over seeds)\n")
        lines.append(markdown_table(["identity regions", "nothing erased",
                                     "identity regions erased", "same area elsewhere"],
                                    occ_rows))
    lines.append("## Region scores against the true identity regions (mean ± std over seeds "
                 "of the per-image mean)\n")
    lines.append(markdown_table(
        ["regions", "method", "top-k hit", "ROC-AUC", "deletion AUC ↓", "insertion AUC ↑",
         "ρ all blocks random", "ρ shuffled ids", "survives randomisation",
         "passes / face (fwd + bwd)", "s / face"], rows))
    lines.append(f"ρ: Spearman correlation of region scores with the trained model's (first "
                 f"seed); flagged when ρ ≥ {FLAG_RHO} with every block re-initialised.\n\n"
                 "![explanation study](study.png)\n")
    (out / "study.md").write_text("\n".join(lines))
    plot_study(report, out / "study.png")


def report_backwards(method: str) -> int:
    return BACKWARD.get(method, 0)


def plot_study(report: dict, path: Path) -> None:
    sets = list(report["sets"])
    fig = Figure(figsize=(15, 4.2))
    axes = fig.subplots(1, 3)
    width = 0.8 / len(METHODS)
    for ax, key, title in ((axes[0], "hit", "top-k hit rate"), (axes[1], "auc", "ROC-AUC")):
        for i, m in enumerate(METHODS):
            values = [report["sets"][s]["summary"][m].get(key, {"mean": math.nan, "std": 0})
                      for s in sets]
            ax.bar(np.arange(len(sets)) + (i - len(METHODS) / 2 + 0.5) * width,
                   [v["mean"] for v in values], width, yerr=[v["std"] for v in values],
                   label=m, capsize=2)
        ax.set_xticks(range(len(sets)), sets)
        ax.set(ylim=(0, 1.05), title=f"{title} (mean ± std over seeds)")
        if key == "auc":
            ax.axhline(0.5, color="0.4", ls=":", lw=1)
    ax = axes[2]
    for i, m in enumerate(METHODS):
        curves = [report["sets"][s]["summary"][m]["cascade_rho"] for s in sets]
        x = [c["blocks"] / c["of"] for c in curves[0]]
        y = [mean_std([curve[j]["mean"] for curve in curves])["mean"] for j in range(len(x))]
        ax.plot([0, *x], [1, *y], marker="o", color=f"C{i}", label=m)
    ax.axhline(FLAG_RHO, color="0.4", ls=":", lw=1)
    ax.set(xlabel="share of blocks re-initialised (top down)", ylabel="Spearman ρ",
           title="cascading randomisation", ylim=(-1, 1.05))
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run_study(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
