"""Which face parser? What width, class weights, attention, the edge loss and self-distillation
buy, on which classes and at what cost, beside segmentation_models_pytorch's U-Nets.

    OMP_NUM_THREADS=1 python -m benchmarks.study_parsing --out runs/study_parsing

Every arm is trained by ``python -m parsing.train`` (same data, schedule and seeds; only the
model and loss flags differ), ``--jobs`` trainings at a time, one thread each:

* ``unet_r18`` (the paper-faithful ResNet-18 U-Net, stride-1 stem) at widths 16, 32, 64;
* ``+cw``: the chain width (``--chain-width``, default 16) with inverse-sqrt class weights;
* ``scanet+cw``: position/channel attention and the edge branch's features, class weights;
* ``scanet+cw+edge``: plus the edge branch's loss (``--edge-loss 1``);
* ``+sd``: self-distillation fine-tuning (``--distill-from``, half the epochs, a fifth of the
  learning rate) from the arm with the best held-out mean F1 among those above, same seed;
* ``smp_unet_r18`` = ``smp.Unet("resnet18", encoder_weights=None)``, plain cross-entropy like
  ``unet_r18`` (and, with ``--arms``, ``smp_unet_mobilenet_v2``).

Evaluated on held-out identities (``parsing.synth`` seed 1; the training set is seed 0): mean
F1 over the 24 foreground classes, mean F1 of the thin classes (brows, ears, eyes, glasses,
lips), mIoU, boundary F1 within 1 and 2 px (:mod:`parsing.parser.metrics`). Robustness: the
same faces with one occluder each (sunglasses, surgical mask, hand, scarf; ``parsing.synth
--occluders ... --occluder-p 1``, never seen in training): mean F1 of the visible pixels, and
per occluder kind the fraction of its pixels labelled as their true class (for a mask or a
hand: the face part under it, FSE-25 having no class for them; sunglasses are glasses, a scarf
clothing) or as background, and the mean F1 over the occluder's pixels alone (confusion
matrix of those pixels: "F1 on hand / mask occlusions", the quantity Han & Yoon report above
99). Cost: parameters, GMAC per 112x112 face (``torch.utils.flop_counter``), faces/s at batch
64 on the CPU (all threads; BatchNorm folded, channels-last: what ``Parser.from_checkpoint``
runs), arms interleaved in one process with CPU time beside wall time; ``--device cuda`` adds
a GPU column. Domain gap: agreement (per-class F1) of each synthetic-trained parser with
``parsing.annotate``'s landmark annotation of the two packaged photos, aligned to 112x112.

Mean ± std over seeds, and paired differences (same seed) with a 95 % t interval for each
ablation step. Trainings are cached under ``RUNS/models/<hash>/``. Writes ``study.json``,
``study.md`` and ``study.png`` (accuracy vs faces/s) under ``--out``. ``--data KIND:PATH``
(``facesynthetics:``, ``celebamask:``; ``--train-flags "--size 112"`` or ``"--align"``) trains
and tests on a real set instead (its test split, else its validation split; no occluders).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from benchmarks.bench_parsing import gmacs_per_image, interleaved_times
from benchmarks.stats import mean_std, paired_difference
from benchmarks.studies import (
    config_hash,
    environment,
    fmt,
    markdown_table,
    run_study,
    seeds,
    synth_set,
)
from parsing.core.cli import cli_main
from parsing.core.errors import InputError
from parsing.core.io import read_image, read_label_map
from parsing.core.labels import FSE25
from parsing.core.pixels import normalise
from parsing.parser.data import (
    SynthParsing,
    build_dataset,
    collate,
    eval_transform,
    has_official_split,
    parse_data_spec,
)
from parsing.parser.inference import Parser, model_from_checkpoint
from parsing.parser.metrics import ConfusionMatrix, confusion_over
from parsing.parser.models import fuse_batchnorm

OCCLUDERS = ("sunglasses", "mask", "hand", "scarf")  # parsing.synth occluder ids 1..4
THIN = tuple(FSE25.groups["brows"] + FSE25.groups["ears"] + FSE25.groups["eyes"]
             + FSE25.groups["lips"] + FSE25.groups["accessories"][:1])  # + glasses
GAP_CLASSES = (*FSE25.groups["skin"], *FSE25.groups["eyes"], *FSE25.groups["brows"],
               *FSE25.groups["nose"], *FSE25.groups["lips"])
BOUNDARY_TOLERANCES = (1, 2)
OPTIONAL_ARMS = ("smp_unet_mobilenet_v2",)  # trained only when --arms names them
MEASURES = ("mean_f1", "thin_f1", "miou", "boundary_f1_1px", "boundary_f1_2px",
            "occluded_visible_f1", "hand_f1", "mask_f1", "hand_as_under", "mask_as_under",
            "photo_agreement_f1")


@dataclass(frozen=True)
class Arm:
    """One parser configuration: ``parsing.train`` flags beside the shared schedule."""

    model: str
    width: int | None = None
    flags: tuple[str, ...] = ()
    distill: bool = False  # fine-tune the best non-distilled arm by self-distillation
    ours: bool = True  # our model family (a candidate default), not a baseline

    def argv(self) -> list[str]:
        return ["--model", self.model, *(["--width", str(self.width)] if self.width else []),
                *self.flags]


def arms(chain_width: int) -> dict[str, Arm]:
    w, cw, edge = chain_width, ("--class-weights",), ("--class-weights", "--edge-loss", "1")
    return {
        "unet_r18_w16": Arm("unet_r18", 16),
        "unet_r18_w32": Arm("unet_r18", 32),
        "unet_r18_w64": Arm("unet_r18", 64),
        f"unet_r18_w{w}+cw": Arm("unet_r18", w, cw),
        f"scanet_w{w}+cw": Arm("scanet", w, cw),
        f"scanet_w{w}+cw+edge": Arm("scanet", w, edge),
        "+sd": Arm("", distill=True),
        "smp_unet_r18": Arm("smp_unet_r18", ours=False),
        "smp_unet_mobilenet_v2": Arm("smp_unet:mobilenet_v2", ours=False),
    }


# Ablation steps reported as paired differences: (arm, baseline); "+sd" is against its teacher.
def steps(chain_width: int) -> list[tuple[str, str]]:
    w = chain_width
    return [("unet_r18_w32", "unet_r18_w16"), ("unet_r18_w64", "unet_r18_w16"),
            (f"unet_r18_w{w}+cw", f"unet_r18_w{w}"), (f"scanet_w{w}+cw", f"unet_r18_w{w}+cw"),
            (f"scanet_w{w}+cw+edge", f"scanet_w{w}+cw"), ("+sd", "teacher"),
            ("unet_r18_w16", "smp_unet_r18"), ("unet_r18_w32", "smp_unet_r18")]


def trained_checkpoint(run_dir: Path) -> Path:
    """The weights ``parsing.train`` keeps for evaluation in ``run_dir`` (best validation)."""
    return run_dir / "model.pt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.study_parsing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/study_parsing", help="output folder")
    p.add_argument("--runs", help="cache of data sets and trained parsers (default OUT/cache)")
    p.add_argument("--seeds", type=int, default=2, help="training seeds (default 2)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply training and test identities (default 1)")
    p.add_argument("--identities", type=int, default=100, help="training identities (x scale)")
    p.add_argument("--images-per-identity", type=int, default=10)
    p.add_argument("--test-identities", type=int, default=30, help="held-out (x scale)")
    p.add_argument("--epochs", type=int, default=1,
                   help="training epochs (default 1: 122 steps of batch 8 at the default size)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--chain-width", type=int, default=16,
                   help="width of the +cw / scanet / +edge arms (default 16)")
    p.add_argument("--arms", help="comma-separated arms (default all but "
                   f"{', '.join(OPTIONAL_ARMS)}, which did not fit the 2-core time box)")
    p.add_argument("--data", help="KIND:PATH real training set (facesynthetics, celebamask, "
                   "folder) instead of synthetic faces")
    p.add_argument("--train-flags", default="", help='extra parsing.train flags for every arm, '
                   'e.g. "--size 112" or "--align"')
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timing rounds (default 3)")
    p.add_argument("--device", default="cpu", help="training device; cuda adds a GPU timing")
    p.add_argument("--no-photos", action="store_true", help="skip the real-photo domain gap")
    return p


# ------------------------------------------------------------------------------ data
@dataclass
class Data:
    train: str  # --data spec
    test: Any  # dataset of (image, labels) in eval form
    occluded: SynthParsing | None = None
    notes: list[str] = field(default_factory=list)


def prepare_data(args: argparse.Namespace, root: Path) -> Data:
    if args.data:
        spec = parse_data_spec(args.data)
        split = "test" if has_official_split(spec) else "val"
        flags = shlex.split(args.train_flags)
        size = int(flags[flags.index("--size") + 1]) if "--size" in flags else 112
        test = build_dataset(spec, split, "fse25", eval_transform(None if "--align" in flags
                                                                  else size),
                             align="--align" in flags, size=size, seed=0)
        note = (f"test: the official {split} split of {spec}" if split == "test" else
                f"test: the seed-0 validation split of {spec} (images, not identities, held out)")
        return Data(str(spec), test, None, [note, "no occluder set for a real data set"])
    n_train = max(2, round(args.identities * args.scale))
    n_test = max(2, round(args.test_identities * args.scale))
    train = synth_set(root, n_train, args.images_per_identity, 0)
    test = synth_set(root, n_test, 3, 1)
    occluded = synth_set(root, n_test, 3, 1, occluders=list(OCCLUDERS), occluder_p=1.0)
    return Data(f"synth:{train}", SynthParsing(test, transform=eval_transform()),
                SynthParsing(occluded, transform=eval_transform()),
                [f"train: {n_train * args.images_per_identity} synthetic faces of {n_train} "
                 f"identities (seed 0); test: {n_test * 3} faces of {n_test} other identities "
                 "(seed 1), and the same faces with one occluder each"])


# ------------------------------------------------------------------------------ training
@dataclass
class Job:
    name: str
    seed: int
    argv: list[str]
    run_dir: Path


def train_argv(args: argparse.Namespace, data: Data, arm: Arm, seed: int,
               teacher: Path | None = None) -> list[str]:
    epochs, lr = args.epochs, args.lr
    if teacher is not None:
        epochs, lr = max(1, args.epochs // 2), args.lr / 5
    argv = ["--data", data.train, *arm.argv(), "--epochs", str(epochs), "--batch-size",
            str(args.batch_size), "--lr", str(lr), "--augment", "flip", "--val-split", "0.02",
            "--seed", str(seed), "--workers", "0", "--device", args.device,
            *shlex.split(args.train_flags)]
    if teacher is not None:
        argv += ["--distill-from", str(teacher)]
    return argv


def run_jobs(jobs: list[Job], parallel: int, device: str) -> dict[tuple[str, int], dict]:
    """Run ``python -m parsing.train`` for each job not yet done, ``parallel`` at a time (one
    thread each on the CPU); returns {(name, seed): {"seconds", "cpu_seconds", ...}}."""
    done: dict[tuple[str, int], dict] = {}
    todo = []
    for job in jobs:
        record = job.run_dir / "study_run.json"
        if record.is_file():
            done[job.name, job.seed] = json.loads(record.read_text())
        else:
            todo.append(job)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if device == "cpu":
        env["OMP_NUM_THREADS"] = "1"
    running: dict[int, tuple[Job, subprocess.Popen, float, Any]] = {}
    while todo or running:
        while todo and len(running) < max(1, parallel):
            job = todo.pop(0)
            job.run_dir.parent.mkdir(parents=True, exist_ok=True)
            log = open(job.run_dir.with_suffix(".log"), "w")  # noqa: SIM115 (closed below)
            cmd = [sys.executable, "-m", "parsing.train", *job.argv, "--out", str(job.run_dir),
                   "--overwrite"]
            print(f"[study_parsing] train {job.name} seed {job.seed}: {shlex.join(cmd)}",
                  flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[proc.pid] = (job, proc, time.perf_counter(), log)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        job, proc, start, log = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        if proc.returncode != 0:
            raise InputError(f"parsing.train failed for {job.name} seed {job.seed} (exit "
                             f"{proc.returncode}); see {job.run_dir.with_suffix('.log')}")
        info = {"seconds": time.perf_counter() - start,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "command": shlex.join(["python", "-m", "parsing.train", *job.argv])}
        (job.run_dir / "study_run.json").write_text(json.dumps(info, indent=1))
        done[job.name, job.seed] = info
    return done


def run_dir(root: Path, argv: list[str]) -> Path:
    return root / "models" / config_hash(argv)


# ------------------------------------------------------------------------------ evaluation
def _loader(ds: Any) -> DataLoader:
    return DataLoader(ds, batch_size=64, collate_fn=collate, num_workers=0)


def evaluate(ckpt: Path, data: Data, device: str, photos: Path | None) -> dict:
    parser = Parser.from_checkpoint(ckpt, device)
    k, names = parser.label_set.num_classes, parser.label_set.names
    clean, _ = confusion_over(parser, _loader(data.test), progress=False,
                              boundary_tolerances=BOUNDARY_TOLERANCES)
    s = clean.scores()
    f1 = {r["id"]: r["f1"] for r in s["per_class"]}
    result = {"mean_f1": s["mean_f1"], "miou": s["miou"],
              "thin_f1": _mean([f1[c] for c in THIN]),
              "boundary_f1_1px": s["boundary"][0]["mean_f1"],
              "boundary_f1_2px": s["boundary"][1]["mean_f1"],
              "per_class_f1": {names[c]: f1[c] for c in range(k)},
              "per_class_boundary_f1_1px": {r["name"]: r["f1"]
                                            for r in s["boundary"][0]["per_class"]}}
    if data.occluded is not None:
        result.update(occlusion_scores(parser, data.occluded))
    if photos is not None:
        result.update(photo_agreement(parser, photos))
    return result


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def occlusion_scores(parser: Parser, ds: SynthParsing) -> dict:
    """Visible-pixel mean F1, and per occluder kind where its pixels are labelled."""
    k, names = parser.label_set.num_classes, parser.label_set.names
    visible = ConfusionMatrix(k, names=names)
    under = {kind: ConfusionMatrix(k, names=names) for kind in OCCLUDERS}
    fractions = {kind: np.zeros(3) for kind in OCCLUDERS}  # as true class, as background, all
    start = 0
    for batch in _loader(ds):
        images, targets = batch["image"], batch["mask"]
        pred = parser(images.to(parser.device)).cpu().long()
        occ = torch.stack([ds.faces.occluder_mask(i) for i in range(start, start + len(images))])
        start += len(images)
        visible.update(pred, targets.masked_fill(occ > 0, 255))
        for kind_id, kind in enumerate(OCCLUDERS, 1):
            sel = occ == kind_id
            if sel.any():
                t, p = targets[sel], pred[sel]
                under[kind].update(p, t)
                fractions[kind] += [(p == t).sum(), ((p == 0) & (t != 0)).sum(), len(p)]
    out: dict[str, Any] = {"occluded_visible_f1": visible.scores()["mean_f1"], "occluders": {}}
    for kind in OCCLUDERS:
        true, background, n = fractions[kind]
        s = under[kind].scores()
        out["occluders"][kind] = {
            "pixels": int(n), "mean_f1": s["mean_f1"],
            "as_true_class": float(true / n) if n else None,
            "as_background": float(background / n) if n else None,
            "as_other": float((n - true - background) / n) if n else None}
    for kind in ("hand", "mask"):
        out[f"{kind}_f1"] = out["occluders"][kind]["mean_f1"]
        out[f"{kind}_as_under"] = out["occluders"][kind]["as_true_class"]
    return out


def prepare_photos(root: Path) -> Path | None:
    """The packaged photos aligned to 112x112 with ``parsing.annotate`` labels (cached);
    None when MediaPipe (or the photos) are not available."""
    out = root / "photos"
    if (out / "aligned" / "labels_25").is_dir():
        return out / "aligned"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmds = [["parsing.photos", "--out", str(out / "raw")],
            ["parsing.align", "--images", str(out / "raw"), "--out", str(out / "aligned")],
            ["parsing.annotate", "--images", str(out / "aligned" / "images"), "--out",
             str(out / "aligned")]]
    for cmd in cmds:
        r = subprocess.run([sys.executable, "-m", *cmd, "--overwrite"], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"[study_parsing] photos skipped: {cmd[0]} failed: "
                  f"{r.stderr.strip().splitlines()[-1:]}", flush=True)
            return None
    return out / "aligned"


def photo_agreement(parser: Parser, aligned: Path) -> dict:
    """Per-class F1 between the parser and the landmark annotation on the aligned photos."""
    k, names = parser.label_set.num_classes, parser.label_set.names
    cm = ConfusionMatrix(k, names=names)
    for label_path in sorted((aligned / "labels_25").glob("*_seg.png")):
        stem = label_path.name[:-len("_seg.png")]
        image = torch.from_numpy(np.array(read_image(aligned / "images" / f"{stem}.png")))
        pred = parser(normalise(image.permute(2, 0, 1))[None].to(parser.device)).cpu()
        cm.update(pred[0], torch.from_numpy(read_label_map(label_path)).long())
    f1 = {r["id"]: r["f1"] for r in cm.scores()["per_class"]}
    return {"photo_agreement_f1": _mean([f1[c] for c in GAP_CLASSES]),
            "photo_per_class_f1": {names[c]: f1[c] for c in GAP_CLASSES}}


def measure_speed(ckpts: dict[str, Path], repeats: int, device: str) -> dict[str, dict]:
    """Parameters, GMAC/face and faces/s at batch 64 (interleaved; wall and CPU time)."""
    devices = ["cpu"] + (["cuda"] if device.startswith("cuda") else [])
    out: dict[str, dict] = {}
    for dev in devices:
        models, size = {}, 112
        for name, ckpt in ckpts.items():
            model, meta = model_from_checkpoint(ckpt, dev)
            size = meta.get("image_size") or 112
            if dev == "cpu":
                out[name] = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                             "gmac": gmacs_per_image(model, size, torch.device(dev))}
            models[name] = fuse_batchnorm(model).to(memory_format=torch.channels_last)
        x = torch.randn(64, 3, size, size, device=dev).contiguous(
            memory_format=torch.channels_last)

        def call(m, x=x):
            def fn():
                with torch.inference_mode():
                    m(x)
            return fn

        sync = (lambda: torch.cuda.synchronize()) if dev == "cuda" else (lambda: None)
        times = interleaved_times({n: call(m) for n, m in models.items()}, repeats, sync)
        for name, t in times.items():
            out[name][f"faces_per_s_{dev}"] = 64 / t["wall"]
            if dev == "cpu":
                out[name]["cpu_s_per_batch"] = t["cpu"]
                out[name]["wall_s_per_batch"] = t["wall"]
    return out


# ------------------------------------------------------------------------------ the study
def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict:
    run_seeds = seeds(args)
    all_arms = arms(args.chain_width)
    chosen = ([a for a in all_arms if a not in OPTIONAL_ARMS] if not args.arms
              else [a.strip() for a in args.arms.split(",")])
    unknown = sorted(set(chosen) - set(all_arms))
    if unknown:
        raise InputError(f"--arms: unknown {', '.join(unknown)}; known: {', '.join(all_arms)}")
    out = Path(args.out)
    root = Path(args.runs) if args.runs else out / "cache"
    wall, cpu = time.perf_counter(), time.process_time()
    data = prepare_data(args, root)
    photos = None if args.no_photos else prepare_photos(root)
    base = [a for a in chosen if not all_arms[a].distill]
    jobs = [Job(a, s, argv_, run_dir(root, argv_)) for a in base for s in run_seeds
            for argv_ in [train_argv(args, data, all_arms[a], s)]]
    trainings = run_jobs(jobs, args.jobs, args.device)
    dirs = {(j.name, j.seed): j.run_dir for j in jobs}
    evals = {key: evaluate(trained_checkpoint(d), data, args.device, photos)
             for key, d in dirs.items()}
    teacher = None
    if "+sd" in chosen:
        candidates = [a for a in base if all_arms[a].ours]
        if not candidates:
            raise InputError("--arms: +sd needs one of our arms to distil")
        teacher = max(candidates, key=lambda a: np.mean([evals[a, s]["mean_f1"]
                                                          for s in run_seeds]))
        teacher_arm = all_arms[teacher]
        sd_jobs = [Job("+sd", s, argv_, run_dir(root, argv_)) for s in run_seeds
                   for argv_ in [train_argv(args, data, teacher_arm, s,
                                            trained_checkpoint(dirs[teacher, s]))]]
        sd_train = run_jobs(sd_jobs, args.jobs, args.device)
        for j in sd_jobs:  # the cost of a distilled parser includes its teacher's training
            t = trainings[teacher, j.seed]
            info = sd_train["+sd", j.seed]
            trainings["+sd", j.seed] = {**info, "seconds": info["seconds"] + t["seconds"],
                                        "cpu_seconds": info["cpu_seconds"] + t["cpu_seconds"]}
            dirs["+sd", j.seed] = j.run_dir
            evals["+sd", j.seed] = evaluate(trained_checkpoint(j.run_dir), data, args.device,
                                            photos)
    names = [a for a in chosen if a in {k[0] for k in dirs}]
    speed_ckpts = {a: trained_checkpoint(dirs[a, run_seeds[0]]) for a in names if a != "+sd"}
    speed = measure_speed(speed_ckpts, args.repeats, args.device)
    if teacher is not None and "+sd" in names:
        speed["+sd"] = speed[teacher]
    report = {"environment": environment("benchmarks.study_parsing", argv),
              "settings": dict(vars(args)), "notes": data.notes, "teacher": teacher,
              "arms": {a: {"flags": shlex.join(train_argv(args, data, all_arms[a], 0)[2:])
                           if a != "+sd" else f"--distill-from <{teacher} seed N>",
                           "seeds": {s: {"training": trainings[a, s], "eval": evals[a, s]}
                                     for s in run_seeds}, "cost": speed[a]}
                       for a in names}}
    report["summary"] = summarise(report, run_seeds, args.chain_width)
    report["recommended"] = recommend(report)
    report["wall_seconds"] = time.perf_counter() - wall
    report["cpu_seconds_main"] = time.process_time() - cpu
    write_outputs(report, out)
    return report


def summarise(report: dict, run_seeds: list[int], chain_width: int) -> dict:
    arms_ = report["arms"]
    values = {a: {m: [e["seeds"][s]["eval"].get(m) for s in run_seeds] for m in MEASURES}
              for a, e in arms_.items()}
    summary: dict[str, Any] = {"arms": {}, "steps": []}
    for a, e in arms_.items():
        row = {m: mean_std([np.nan if v is None else v for v in values[a][m]]) for m in MEASURES}
        runs = [e["seeds"][s]["training"] for s in run_seeds]
        row["train_minutes"] = mean_std([r["seconds"] / 60 for r in runs])
        row["train_cpu_minutes"] = mean_std([r["cpu_seconds"] / 60 for r in runs])
        summary["arms"][a] = row
    for arm, baseline in steps(chain_width):
        baseline = report.get("teacher") if baseline == "teacher" else baseline
        if arm in values and baseline in values:
            summary["steps"].append({"arm": arm, "baseline": baseline, **{
                m: paired_difference([np.nan if v is None else v for v in values[arm][m]],
                                     [np.nan if v is None else v for v in values[baseline][m]])
                for m in ("mean_f1", "thin_f1", "boundary_f1_1px")}})
    return summary


def recommend(report: dict) -> dict | None:
    """Of our arms at least as fast as smp's ResNet-18 U-Net on the CPU, the one with the best
    thin-class F1 (the users' criterion: thin-class F1 against faces/s)."""
    arms_, summary = report["arms"], report["summary"]["arms"]
    if "smp_unet_r18" not in arms_:
        return None
    smp_speed = arms_["smp_unet_r18"]["cost"]["faces_per_s_cpu"]
    fast = [a for a, e in arms_.items() if a not in ("smp_unet_r18", "smp_unet_mobilenet_v2")
            and a != "+sd" and e["cost"]["faces_per_s_cpu"] >= smp_speed]
    if not fast:
        return {"arm": None, "reason": "none of our arms is as fast as smp_unet_r18"}
    best = max(fast, key=lambda a: summary[a]["thin_f1"]["mean"])
    return {"arm": best, "speed_ratio_vs_smp": arms_[best]["cost"]["faces_per_s_cpu"] / smp_speed,
            **{f"{m}_minus_smp": summary[best][m]["mean"] - summary["smp_unet_r18"][m]["mean"]
               for m in ("mean_f1", "thin_f1", "boundary_f1_1px", "miou")}}


# ------------------------------------------------------------------------------ outputs
def _pct(ms: dict) -> str:
    return fmt(100 * ms["mean"], 100 * ms["std"], 1)


def write_outputs(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(report, indent=1, default=float))
    env, summary, arms_ = report["environment"], report["summary"]["arms"], report["arms"]
    n_train = sum(len(e["seeds"]) for e in arms_.values())
    train_min = sum(t["training"]["seconds"] for e in arms_.values()
                    for t in e["seeds"].values()) / 60
    lines = [f"# Parser study\n\n`{env['command']}` — commit {env['commit']}, {env['cpu']}, "
             f"{env['cores']} cores, torch {env['torch']}; wall {report['wall_seconds'] / 60:.1f}"
             f" min for this invocation ({n_train} trainings, {train_min:.1f} min of training "
             f"wall time counted per run when they ran).\n", *(f"- {n}" for n in report["notes"]),
             f"\nSelf-distillation teacher (best held-out mean F1): `{report['teacher']}`.\n",
             "## Accuracy (mean ± std over seeds, %) and cost\n"]
    gpu = any("faces_per_s_cuda" in e["cost"] for e in arms_.values())
    header = ["arm", "mean F1", "thin F1", "mIoU", "bF1 1px", "bF1 2px", "occl. visible F1",
              "hand F1 / as under", "mask F1 / as under", "photos F1", "params M",
              "GMAC", "faces/s CPU", "CPU s/batch", *(["faces/s GPU"] if gpu else []),
              "train min"]
    rows = []
    for a, e in arms_.items():
        s, c = summary[a], e["cost"]
        rows.append([f"`{a}`", _pct(s["mean_f1"]), _pct(s["thin_f1"]), _pct(s["miou"]),
                     _pct(s["boundary_f1_1px"]), _pct(s["boundary_f1_2px"]),
                     _pct(s["occluded_visible_f1"]),
                     f"{_pct(s['hand_f1'])} / {_pct(s['hand_as_under'])}",
                     f"{_pct(s['mask_f1'])} / {_pct(s['mask_as_under'])}",
                     _pct(s["photo_agreement_f1"]), f"{c['params_m']:.2f}", f"{c['gmac']:.2f}",
                     f"{c['faces_per_s_cpu']:.0f}", f"{c['cpu_s_per_batch']:.2f}",
                     *([f"{c.get('faces_per_s_cuda', float('nan')):.0f}"] if gpu else []),
                     fmt(s["train_minutes"]["mean"], s["train_minutes"]["std"], 1)])
    lines.append(markdown_table(header, rows))
    lines.append("## Ablation steps: paired difference (same seed), percentage points, 95 % t "
                 "interval\n")
    srows = []
    for st in report["summary"]["steps"]:
        cells = [f"{100 * st[m]['mean']:+.1f} [{100 * st[m]['low']:+.1f}, "
                 f"{100 * st[m]['high']:+.1f}]" + (" **\\***" if st[m]["exceeds_noise"] else "")
                 for m in ("mean_f1", "thin_f1", "boundary_f1_1px")]
        srows.append([f"`{st['arm']}` − `{st['baseline']}`", *cells])
    lines.append(markdown_table(["step", "mean F1", "thin F1", "boundary F1 1px"], srows))
    lines.append("**\\***: the interval excludes 0. With 2 seeds the t interval is wide "
                 "(t = 12.7).\n")
    occ_rows = []
    for a, e in arms_.items():
        occ = [e["seeds"][s]["eval"].get("occluders") for s in e["seeds"]]
        if occ[0] is None:
            continue
        cells = []
        for kind in OCCLUDERS:
            vals = {f: mean_std([o[kind][f] for o in occ if o[kind][f] is not None])["mean"]
                    for f in ("as_true_class", "as_background", "as_other")}
            cells.append(f"{100 * vals['as_true_class']:.0f} / {100 * vals['as_background']:.0f}"
                         f" / {100 * vals['as_other']:.0f}")
        occ_rows.append([f"`{a}`", *cells])
    if occ_rows:
        lines.append("## Occluder pixels: % labelled as their true class / background / "
                     "another class (mean over seeds)\n\nTrue class: the face part under a "
                     "mask or hand; glasses for sunglasses, clothing for a scarf.\n")
        lines.append(markdown_table(["arm", *OCCLUDERS], occ_rows))
    photo_rows = []
    for a, e in arms_.items():
        per = [e["seeds"][s]["eval"].get("photo_per_class_f1") for s in e["seeds"]]
        if per[0] is None:
            continue
        photo_rows.append([f"`{a}`", *(fmt(100 * mean_std([p[FSE25.names[c]] or 0.0
                                                          for p in per])["mean"], np.nan, 0)
                                       for c in GAP_CLASSES)])
    if photo_rows:
        lines.append("## Domain gap: per-class F1 against the landmark annotation of the two "
                     "packaged photos (aligned 112x112; mean over seeds)\n")
        lines.append(markdown_table(["arm", *(FSE25.names[c] for c in GAP_CLASSES)],
                                    photo_rows))
    rec = report.get("recommended")
    if rec:
        lines.append(f"\nRecommended (best thin-class F1 among our arms at least as fast as "
                     f"smp_unet_r18 on the CPU): `{rec.get('arm')}` "
                     + json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                   for k, v in rec.items() if k != "arm"}) + "\n")
    lines.append("![accuracy vs speed](study.png)\n")
    (out / "study.md").write_text("\n".join(lines))
    plot_study(report, out / "study.png")


def plot_study(report: dict, path: Path) -> None:
    summary, arms_ = report["summary"]["arms"], report["arms"]
    fig = Figure(figsize=(11, 4.5))
    axes = fig.subplots(1, 2)
    for ax, m, label in zip(axes, ("mean_f1", "thin_f1"),
                            ("mean F1, 24 foreground classes (%)",
                             "F1 of thin classes: brows, ears, eyes, glasses, lips (%)"),
                            strict=True):
        for i, (a, e) in enumerate(arms_.items()):
            x = e["cost"]["faces_per_s_cpu"]
            y, dy = 100 * summary[a][m]["mean"], 100 * summary[a][m]["std"]
            marker = "s" if a.startswith("smp") else "o"
            ax.errorbar([x], [y], yerr=[0 if dy != dy else dy], fmt=marker, color=f"C{i % 10}",
                        capsize=3, label=a)
            ax.annotate(a, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel="faces/s, CPU, batch 64 at 112x112 (log)", ylabel=label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Face parsers on held-out synthetic identities: accuracy vs CPU speed "
                 "(mean ± std over seeds; squares: segmentation_models_pytorch)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run_study(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
