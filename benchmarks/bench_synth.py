"""Speed of the synthetic face generator (``parsing.synth``) at 112 x 112.

Measures, in one process: rendering in memory (``generate``), and writing a data set with
``write_dataset`` (rendering + PNG encoding + CSVs) with 1 and with 2 worker processes.
Reports the best of ``--repeat`` runs in images/s of wall time and of CPU time (CPU time,
workers included, is the fairer figure on a shared machine), the ratio to the 300 images/s
target and the 2-worker speed-up of wall time.

``--baseline REV`` measures instead this tree's ``write_dataset`` (1 worker) against revision
REV's, imported from git into the same process, in alternating rounds, and checks that both
write byte-identical files (SHA-256 over every file written: images, label maps, CSVs).

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
        .venv/bin/python -m benchmarks.bench_synth --images 800 --json runs/bench_synth.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.baseline import modules_at
from parsing.synth import generate, write_dataset

TARGET = 300.0  # images/s on one core (issue 2)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # joined pool workers
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _measure(fn, images: int, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` runs (least disturbed by other processes) of wall and CPU time."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), _cpu()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(_cpu() - cpu)
    wall, cpu = min(walls), min(cpus)
    return {"images": images, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "images_per_s_wall": round(images / wall, 1),
            "images_per_cpu_s": round(images / cpu, 1)}


def _digest(folder: Path) -> str:
    """SHA-256 over every file's name and bytes, in name order."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def compare_revisions(revision: str, identities: int, per_identity: int, size: int,
                      rounds: int) -> dict:
    """``write_dataset`` with 1 worker: revision's (baseline) and this tree's (ours), in
    alternating order, ``rounds`` rounds; faces per CPU second and per wall second, the
    median over rounds, and whether both wrote the same bytes."""
    old = modules_at(revision, ["parsing.synth"])["parsing.synth"]
    sides = {"baseline": old, "ours": None}
    n = identities * per_identity
    runs: dict[str, list[tuple[float, float]]] = {"baseline": [], "ours": []}
    digests: dict[str, set[str]] = {"baseline": set(), "ours": set()}
    for module in (old, None):  # warm-up: texture banks, caches
        (module.generate if module else generate)(1, 4, seed=1, size=size)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in (("baseline", "ours") if r % 2 == 0 else ("ours", "baseline")):
                write = sides[name].write_dataset if sides[name] else write_dataset
                out = Path(tmp) / f"{name}{r}"
                wall, cpu = time.perf_counter(), _cpu()
                write(out, identities, per_identity, seed=0, size=size, workers=1,
                      progress=False)
                runs[name].append((time.perf_counter() - wall, _cpu() - cpu))
                digests[name].add(_digest(out))
    result = {"baseline_revision": revision, "rounds": rounds, "images": n,
              "runs_wall_cpu_s": runs, "sha256": {k: sorted(v) for k, v in digests.items()},
              "identical_files": len(digests["baseline"] | digests["ours"]) == 1}
    for name, r in runs.items():
        result[name] = {"images_per_cpu_s": round(n / statistics.median(c for _, c in r), 1),
                        "images_per_s_wall": round(n / statistics.median(w for w, _ in r), 1)}
    result["ours_over_baseline_cpu"] = round(result["ours"]["images_per_cpu_s"]
                                             / result["baseline"]["images_per_cpu_s"], 3)
    result["ours_over_baseline_wall"] = round(result["ours"]["images_per_s_wall"]
                                              / result["baseline"]["images_per_s_wall"], 3)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=800, help="images per measurement")
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--baseline", metavar="REV",
                   help="instead: this tree against git revision REV, alternating rounds")
    p.add_argument("--rounds", type=int, default=6, help="rounds of --baseline")
    args = p.parse_args()
    per_identity = 10
    identities = max(1, args.images // per_identity)
    n = identities * per_identity
    if args.baseline:
        load = os.getloadavg()[0]
        results = compare_revisions(args.baseline, identities, per_identity, args.size,
                                    args.rounds)
        results["load_average_start_end"] = [load, os.getloadavg()[0]]
        for name in ("baseline", "ours"):
            r = results[name]
            print(f"{name:9s} {r['images_per_s_wall']:8.1f} images/s wall "
                  f"{r['images_per_cpu_s']:8.1f} images per CPU s")
        print(f"ours / baseline: {results['ours_over_baseline_cpu']} CPU, "
              f"{results['ours_over_baseline_wall']} wall; identical files: "
              f"{results['identical_files']} ({results['sha256']['ours'][0][:16]}...); "
              f"load average {results['load_average_start_end']}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2))
        return
    generate(1, 4, seed=1, size=args.size)  # warm-up: texture bank, caches
    results = {"size": args.size,
               "in_memory_1_process": _measure(
                   lambda: generate(identities, per_identity, seed=0, size=args.size), n,
                   args.repeat)}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            results[f"write_{workers}_worker{'s' * (workers > 1)}"] = _measure(
                lambda w=workers: write_dataset(Path(tmp) / f"w{w}", identities, per_identity,
                                                seed=0, size=args.size, workers=w,
                                                progress=False), n, args.repeat)
    one, two = results["write_1_worker"], results["write_2_workers"]
    results["ratio_in_memory_cpu_to_target"] = round(
        results["in_memory_1_process"]["images_per_cpu_s"] / TARGET, 2)
    results["ratio_write_1_worker_cpu_to_target"] = round(one["images_per_cpu_s"] / TARGET, 2)
    results["speedup_2_workers_wall"] = round(one["wall_s"] / two["wall_s"], 2)
    print(f"{'measurement':24s} {'images/s (wall)':>16s} {'images per CPU s':>17s}")
    for key in ("in_memory_1_process", "write_1_worker", "write_2_workers"):
        r = results[key]
        print(f"{key:24s} {r['images_per_s_wall']:16.1f} {r['images_per_cpu_s']:17.1f}")
    print(json.dumps(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
