"""IJB-C-scale 1:1 scoring from image features: straightforward reference vs recognition.ijbc.

Both sides get the same inputs, built in memory at the real IJB-C counts (469,375 images,
23,124 templates, 15,658,489 pairs of which 19,557 genuine): flip-fused float32 image
features with an identity structure, template/media ids, faceness scores and the pair list.
Both compute the insightface N1D1 protocol (keep the feature norm, weight by faceness, mean
per media, sum per template, L2 normalise, cosine per pair, ROC, TAR at the nearest FAR, AUC).

reference: the algorithm of insightface's eval_ijbc.py in float64 (a Python loop over
templates, numpy dot products in batches of 100,000 pairs, sklearn.metrics.roc_curve);
ours: recognition.ijbc (scatter-add aggregation, float32 blocked matrix products, and the
screened ROC: genuine pairs and the impostors near each target FAR rescored in float64).

Peak memory: before each side the process gives free heap back to the OS (malloc_trim), the
kernel's resident high-water mark is reset (/proc/self/clear_refs = 5) and the current RSS
noted; the side's peak is VmHWM - that RSS (the inputs, ~1.2 GB, are not counted).

Run: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \
     .venv/bin/python -m benchmarks.bench_ijbc [--scale 1.0] [--seed 0] [--json out.json]

``--baseline REV`` compares instead this tree's scoring with revision REV's (imported from
git into the same process) and with the GEMM floor (the float32 matrix products alone),
interleaved round by round, and checks that both give the same TARs, AUC and ROC points.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import time
from contextlib import contextmanager

import numpy as np
import sklearn.metrics
import sklearn.preprocessing
import torch
from threadpoolctl import threadpool_limits

from benchmarks.baseline import modules_at
from recognition.evaluation import ijbc as this_ijbc
from recognition.evaluation import roc as this_roc
from recognition.evaluation.ijbc import pair_scores
from recognition.evaluation.roc import FARS, far_key, verification_report

IJBC = {"images": 469_375, "subjects": 3_531, "probes": 19_593, "pairs": 15_658_489,
        "genuine": 19_557}


def synthetic_ijbc(scale: float = 1.0, seed: int = 0, dim: int = 512, shuffle: bool = False
                   ) -> dict:
    """An IJB-C-shaped 1:1 protocol with features, built in memory.

    One gallery template per subject and mixed probe templates; each template holds several
    media (stills and video frames, drawn per image among 1 + Binomial media slots); every
    probe but 36 is compared with its subject's gallery template, and with a random sample
    of same-gender non-mated gallery templates (the public protocol samples impostors by
    gender and skin tone), so that the counts match. The image list is grouped by template
    and the pair list by gallery template (as the public meta files appear to be; that order
    is not documented); ``shuffle`` puts both in random order instead.
    Image feature = subject centre + media offset + image noise (float32), scores then give
    TARs in the usual range.
    """
    rng = np.random.default_rng(seed)
    n_subjects = max(4, round(IJBC["subjects"] * scale))
    n_probes = max(4, round(IJBC["probes"] * scale))
    n_templates = n_subjects + n_probes
    n_images = max(n_templates, round(IJBC["images"] * scale))
    n_genuine = n_probes - round(36 * scale)
    # gallery x probe comparisons: the pair count grows with scale squared
    n_impostor = round((IJBC["pairs"] - IJBC["genuine"]) * scale * scale)

    template_ids = rng.choice(np.arange(1, 8 * n_templates + 1), n_templates, replace=False)
    subject_of_template = np.concatenate([np.arange(n_subjects),
                                          rng.integers(0, n_subjects, n_probes)])
    gender = rng.integers(0, 2, n_subjects)

    # images per template: 1 + multinomial over log-normal weights (heavy-tailed like IJB-C)
    weight = rng.lognormal(0.0, 1.0, n_templates)
    per_template = 1 + rng.multinomial(n_images - n_templates, weight / weight.sum())
    image_template = np.repeat(np.arange(n_templates), per_template)
    media_slots = 1 + rng.binomial(per_template - 1, 0.3)
    media_offset = np.concatenate([[0], np.cumsum(media_slots)[:-1]])
    image_media = media_offset[image_template] + (
        rng.random(n_images) * media_slots[image_template]).astype(np.int64)
    # the image list is grouped by template, and by media within a template
    image_order = np.argsort(image_media, kind="stable") if not shuffle else \
        rng.permutation(n_images)
    image_template, image_media = image_template[image_order], image_media[image_order]
    n_media = int(media_slots.sum())
    media_ids = rng.choice(np.arange(1, 4 * n_media + 1), n_media, replace=False)

    faceness = np.where(rng.random(n_images) < 0.02, rng.uniform(0.1, 0.5, n_images),
                        rng.uniform(0.9, 1.0, n_images)).astype(np.float32)

    # media offsets (pose, lighting, video) live in a 16-d subspace: cheap to hold per media
    centres = rng.standard_normal((n_subjects, dim), dtype=np.float32)
    media_basis = rng.standard_normal((16, dim), dtype=np.float32) / 2
    media_coords = rng.standard_normal((n_media, 16), dtype=np.float32)
    features = np.empty((n_images, dim), dtype=np.float32)
    for s in range(0, n_images, 65536):
        t, m = image_template[s:s + 65536], image_media[s:s + 65536]
        block = rng.standard_normal((len(t), dim), dtype=np.float32)
        block *= 2.0
        block += centres[subject_of_template[t]]
        block += media_coords[m] @ media_basis
        features[s:s + 65536] = block

    # pairs: genuine + same-gender non-mated impostors, grouped by gallery template
    probe_subject = subject_of_template[n_subjects:]
    per_probe = np.full(n_probes, n_impostor // n_probes)
    per_probe[rng.choice(n_probes, n_impostor % n_probes, replace=False)] += 1
    first, second = [], []
    for g in (0, 1):
        pool = np.flatnonzero(gender == g)
        probes = np.flatnonzero(gender[probe_subject] == g)
        need = per_probe[probes]
        keys = rng.random((len(probes), len(pool)))
        keys[pool[None, :] == probe_subject[probes][:, None]] = np.inf  # never the mate
        chosen = np.argpartition(keys, need.max() - 1, axis=1)[:, :need.max()]
        take = np.arange(need.max())[None, :] < need[:, None]
        first.append(pool[chosen[take]])
        second.append(np.repeat(probes, need) + n_subjects)
    genuine_probes = rng.choice(n_probes, n_genuine, replace=False)
    first.append(probe_subject[genuine_probes])
    second.append(genuine_probes + n_subjects)
    first, second = np.concatenate(first), np.concatenate(second)
    labels = np.zeros(len(first), dtype=bool)
    labels[-n_genuine:] = True
    order = np.argsort(template_ids[first], kind="stable") if not shuffle else \
        rng.permutation(len(first))
    pairs = np.stack([template_ids[first[order]], template_ids[second[order]]], axis=1)
    return {
        "features": features,
        "templates": template_ids[image_template],
        "medias": media_ids[image_media],
        "faceness": faceness,
        "pairs": pairs,
        "labels": labels[order],
    }


def reference_template_features(features, templates, medias, faceness=None,
                                use_norm_score=True):
    """insightface's image2template_feature: a Python loop over templates, float64."""
    unique_templates = np.unique(templates)
    template_feats = np.zeros((len(unique_templates), features.shape[1]))
    for i, template in enumerate(unique_templates):
        (rows,) = np.where(templates == template)
        feats = features[rows].astype(np.float64)
        if not use_norm_score:
            feats /= np.sqrt(np.sum(feats ** 2, -1, keepdims=True))
        if faceness is not None:
            feats *= faceness[rows, None].astype(np.float64)
        media = medias[rows]
        media_means = [feats[media == m].mean(0) for m in np.unique(media)]
        template_feats[i] = np.sum(media_means, axis=0)
    return unique_templates, sklearn.preprocessing.normalize(template_feats)


def reference_scores(unique_templates, template_feats, pairs, batch_size=100_000):
    """insightface's verification(): numpy dot products in batches of pairs."""
    row_of = np.zeros(unique_templates.max() + 1, dtype=np.int64)
    row_of[unique_templates] = np.arange(len(unique_templates))
    scores = np.zeros(len(pairs))
    for s in range(0, len(pairs), batch_size):
        a = template_feats[row_of[pairs[s:s + batch_size, 0]]]
        b = template_feats[row_of[pairs[s:s + batch_size, 1]]]
        scores[s:s + batch_size] = np.sum(a * b, -1)
    return scores


def reference_tar_at_far(scores, labels, fars=FARS):
    """sklearn's ROC, AUC, and the TAR of the ROC point with the nearest FAR (Python min
    over (|FAR - target|, index) of the flipped curve, as eval_ijbc.py)."""
    fpr, tpr, _ = sklearn.metrics.roc_curve(labels, scores)
    roc_auc = sklearn.metrics.auc(fpr, tpr)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    tars = []
    for far in fars:
        _, nearest = min(zip(np.abs(fpr - far), range(len(fpr)), strict=True))
        tars.append(tpr[nearest])
    return np.asarray(tars), roc_auc


def reference_tar_table(features, templates, medias, faceness, pairs, labels,
                        use_norm_score=True, use_detector_score=True):
    """The straightforward algorithm (insightface eval_ijbc.py), in float64."""
    unique_templates, template_feats = reference_template_features(
        features, templates, medias, faceness if use_detector_score else None, use_norm_score)
    scores = reference_scores(unique_templates, template_feats, pairs)
    return (scores, *reference_tar_at_far(scores, labels))


def ours_tar_table(features, templates, medias, faceness, pairs, labels,
                   use_norm_score=True, use_detector_score=True, stages=None, stages_cpu=None,
                   ijbc=None, roc=None, curve=None):
    """recognition.ijbc from features to the TAR table, stage by stage (the composition of
    ``evaluate_verification``; stage times into ``stages``). Also returns the template
    features and pair rows, for the float64 scores of the exactness check. ``ijbc`` and
    ``roc``: the modules to run (default: this tree's); ``curve``: a dict that receives the
    returned ROC (fpr, tpr)."""
    stages = {} if stages is None else stages
    ijbc, roc = ijbc or this_ijbc, roc or this_roc
    with timed(stages, "templates", stages_cpu):
        unique, tfeats = ijbc.template_features(torch.from_numpy(features), templates, medias,
                                                faceness if use_detector_score else None,
                                                use_norm_score=use_norm_score)
    with timed(stages, "template ids -> rows", stages_cpu):
        rows = ijbc.template_rows(unique, pairs, "pairs")
    with timed(stages, "float32 pair scores", stages_cpu):
        approx = ijbc.pair_scores(tfeats.float(), rows[:, 0], rows[:, 1])
    with timed(stages, "screened ROC, TAR, AUC", stages_cpu):
        report, fpr, tpr = roc.screened_verification_report(
            approx, labels, ijbc.float32_dot_error(tfeats.shape[1]),
            lambda i: ijbc.pair_scores(tfeats, rows[i, 0], rows[i, 1]))
    if curve is not None:
        curve.update(fpr=fpr, tpr=tpr)
    tars = np.array([report["tar_at_far"][far_key(f)] for f in FARS])
    return (tfeats, rows), tars, report["auc"]


def gemm_floor(tfeats: torch.Tensor, rows: np.ndarray, block_bytes: int = 1 << 26) -> None:
    """The float32 matrix products that ``pair_scores`` computes for these pairs, alone: the
    same blocks of first-side templates (the side with fewer distinct templates) times all
    second-side templates, into one reused product buffer."""
    used = [np.bincount(rows[:, j], minlength=len(tfeats)) > 0 for j in (0, 1)]
    first, second = sorted((tfeats.float().numpy()[u] for u in used), key=len)
    rows_per_block = max(1, block_bytes // (4 * len(second)))
    products = np.empty((min(rows_per_block, len(first)), len(second)), dtype=np.float32)
    for start in range(0, len(first), rows_per_block):
        block = first[start:start + rows_per_block]
        np.matmul(block, second.T, out=products[:len(block)])


def compare_revisions(inputs: tuple, revision: str, rounds: int) -> dict:
    """``revision``'s recognition.evaluation (baseline) against this tree's (ours) and the
    GEMM floor, interleaved in rotating order for ``rounds`` rounds: median wall and CPU
    seconds, ratios, and whether both give the same TARs, AUC and ROC points."""
    old = modules_at(revision, ["recognition.evaluation.ijbc", "recognition.evaluation.roc"])
    sides = {"baseline": {"ijbc": old["recognition.evaluation.ijbc"],
                          "roc": old["recognition.evaluation.roc"]},
             "ours": {}}
    wall, cpu, outputs = {}, {}, {}
    floor_inputs = None
    names = ["baseline", "ours", "GEMM floor"]
    for r in range(rounds):
        for name in names[r % 3:] + names[:r % 3]:
            times, times_cpu = {}, {}
            if name == "GEMM floor":
                if floor_inputs is None:
                    continue
                with timed(times, name, times_cpu):
                    gemm_floor(*floor_inputs)
            else:
                curve = {}
                with timed(times, name, times_cpu):
                    (tfeats, rows), tars, auc = ours_tar_table(*inputs, curve=curve,
                                                               **sides[name])
                outputs.setdefault(name, []).append((tars, auc, curve["fpr"], curve["tpr"]))
                floor_inputs = (tfeats, np.ascontiguousarray(rows))
            wall.setdefault(name, []).append(times[name])
            cpu.setdefault(name, []).append(times_cpu[name])
    same = all(np.array_equal(a, b) for x, y in zip(outputs["baseline"], outputs["ours"],
                                                     strict=True)
               for a, b in zip(x, y, strict=True))
    median = {k: float(np.median(v)) for k, v in wall.items()}
    median_cpu = {k: float(np.median(v)) for k, v in cpu.items()}
    result = {"baseline_revision": revision, "rounds": rounds,
              "wall_s": wall, "cpu_s": cpu, "median_wall_s": median, "median_cpu_s": median_cpu,
              "identical_tars_auc_roc": same}
    for clock, m in (("wall", median), ("cpu", median_cpu)):
        result[f"ours_over_baseline_{clock}"] = m["ours"] / m["baseline"]
        result[f"ours_over_gemm_{clock}"] = m["ours"] / m["GEMM floor"]
        result[f"baseline_over_gemm_{clock}"] = m["baseline"] / m["GEMM floor"]
    print(f"{'':12s}{'wall s':>8s}{'cpu s':>8s}  {'/ GEMM (wall, cpu)':>18s}   (median of "
          f"{rounds} rounds)")
    for name in names:
        print(f"{name:12s}{median[name]:8.3f}{median_cpu[name]:8.3f}  "
              f"{median[name] / median['GEMM floor']:8.2f}"
              f"{median_cpu[name] / median_cpu['GEMM floor']:8.2f}")
    print(f"ours / baseline: {result['ours_over_baseline_wall']:.2f} wall, "
          f"{result['ours_over_baseline_cpu']:.2f} cpu; identical TARs, AUC and ROC points: {same}")
    return result


@contextmanager
def timed(stages: dict, name: str, cpu: dict | None = None):
    """Wall seconds into ``stages[name]``; process CPU seconds (all threads) into ``cpu``."""
    start, start_cpu = time.perf_counter(), time.process_time()
    yield
    stages[name] = time.perf_counter() - start
    if cpu is not None:
        cpu[name] = time.process_time() - start_cpu


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


@contextmanager
def peak_memory(out: dict, name: str):
    """Peak resident memory above the current live set while the block runs (MB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_mb("VmRSS")
    yield
    out[name] = _rss_mb("VmHWM") - base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of IJB-C counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shuffle", action="store_true",
                        help="images and pairs in random order instead of grouped by template")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours (median counts)")
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--baseline", metavar="REV",
                        help="instead: this tree's scoring against git revision REV's and the "
                             "GEMM floor, interleaved (see --rounds)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of --baseline")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and BLAS threads (default: their own defaults)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    t0 = time.perf_counter()
    data = synthetic_ijbc(args.scale, args.seed, shuffle=args.shuffle)
    inputs = (data["features"], data["templates"], data["medias"], data["faceness"],
              data["pairs"], data["labels"])
    counts = {"images": len(data["templates"]),
              "templates": len(np.unique(data["templates"])),
              "media": len(np.unique(data["medias"])),
              "pairs": len(data["pairs"]), "genuine": int(data["labels"].sum())}
    print("synthetic protocol: " + ", ".join(f"{v:,} {k}" for k, v in counts.items())
          + f" ({'shuffled' if args.shuffle else 'grouped'} order) in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"torch threads {torch.get_num_threads()}, cpu count {os.cpu_count()}, "
          f"MALLOC_MMAP_MAX_={os.environ.get('MALLOC_MMAP_MAX_', 'unset')}, "
          f"load average {os.getloadavg()[0]:.2f}")

    if args.baseline:
        summary = {"counts": counts, "threads": torch.get_num_threads(),
                   "load_average_start": os.getloadavg()[0],
                   **compare_revisions(inputs, args.baseline, args.rounds),
                   "load_average_end": os.getloadavg()[0]}
        print(f"load average {summary['load_average_start']:.2f} at the start, "
              f"{summary['load_average_end']:.2f} at the end")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(summary, f, indent=2)
        return
    memory, wall, cpu, stages, stages_cpu, results = {}, {}, {}, {}, {}, {}
    runs = []  # ours takes ~1 s: repeated, the median run counts (the first gives the peak)
    for _ in range(args.repeats):
        run_wall, run_cpu, run_stages, run_stages_cpu = {}, {}, {}, {}
        with peak_memory(memory if not runs else {}, "ours"), timed(run_wall, "ours", run_cpu):
            results["ours"] = ours_tar_table(*inputs, stages=run_stages,
                                             stages_cpu=run_stages_cpu)
        runs.append((run_wall["ours"], run_cpu["ours"], run_stages, run_stages_cpu))
        print(f"  ours run {len(runs)}: {run_wall['ours']:.2f} s wall {run_cpu['ours']:.2f} s cpu")
    wall["ours"], cpu["ours"], stages, stages_cpu = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    summary_runs = [r[0] for r in runs]
    for name, seconds in stages.items():
        print(f"  ours (median run): {name:22s} {seconds:6.2f} s wall "
              f"{stages_cpu[name]:6.2f} s cpu")
    if not args.skip_reference:
        with peak_memory(memory, "reference"), timed(wall, "reference", cpu):
            results["reference"] = reference_tar_table(*inputs)

    print(f"{'':10s}" + "".join(f"{far_key(f):>8s}" for f in FARS)
          + "       AUC  wall (s)  cpu (s)  peak MB")
    for name, (_, tars, roc_auc) in results.items():
        print(f"{name:10s}" + "".join(f"{t:8.4f}" for t in tars)
              + f"  {roc_auc:.6f} {wall[name]:9.2f} {cpu[name]:8.2f} {memory[name]:8.0f}")
    summary = {"counts": counts, "order": "shuffled" if args.shuffle else "grouped",
               "wall_s": wall, "cpu_s": cpu, "peak_mb": memory, "ours_stages_wall_s": stages,
               "ours_stages_cpu_s": stages_cpu, "ours_runs_wall_s": summary_runs,
               "tar_at_far": {far_key(f): float(t)
                              for f, t in zip(FARS, results["ours"][1], strict=True)},
               "auc": results["ours"][2]}
    # exactness: our float64 scores against the reference's, and their exact TAR table
    (tfeats, rows), ours_tars, ours_auc = results["ours"]
    scores = pair_scores(tfeats, rows[:, 0], rows[:, 1])
    exact, _, _ = verification_report(scores, data["labels"])
    summary["tars_equal_float64_table"] = bool(np.array_equal(
        ours_tars, [exact["tar_at_far"][far_key(f)] for f in FARS]))
    summary["auc_abs_diff_float64"] = abs(exact["auc"] - ours_auc)
    print(f"TARs equal those of our float64 scores: {summary['tars_equal_float64_table']}; "
          f"|AUC diff| {summary['auc_abs_diff_float64']:.1e}")
    if not args.skip_reference:
        ref = results["reference"]
        summary.update({
            "speedup_wall": wall["reference"] / wall["ours"],
            "speedup_cpu": cpu["reference"] / cpu["ours"],
            "tars_identical": bool(np.array_equal(ref[1], ours_tars)),
            "auc_abs_diff": abs(ref[2] - ours_auc),
            "max_abs_score_diff": float(np.abs(ref[0] - scores).max()),
        })
        print(f"speed-up {summary['speedup_wall']:.1f}x wall, {summary['speedup_cpu']:.1f}x cpu; "
              f"TARs identical to the reference: {summary['tars_identical']}; "
              f"|AUC diff| {summary['auc_abs_diff']:.1e}; "
              f"max |float64 score diff| {summary['max_abs_score_diff']:.1e}")
    summary["load_average_end"] = os.getloadavg()[0]
    print(f"load average at the end {summary['load_average_end']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
