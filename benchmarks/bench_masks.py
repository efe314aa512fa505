"""FSErasing masks at scale: mask codes, loader rate per worker, parsing.predict faces/s.

Run from the repository root (export the allocator setting of reference §8 first):

    python -m benchmarks.bench_masks --work runs/bench/masks --faces 10000 \\
        --scales 10000 100000 --parser runs/demo/parser --json runs/bench/masks.json

1. **Codes** for 112x112 FSE-25 maps (the synthetic faces' true maps, and the maps ``--parser``
   predicts for them): bytes and encode/decode time of PNG, a byte run-length code
   (value, length <= 255 pairs), the run-length code under zlib and zlib of the raw ids (the
   store's code, :mod:`parsing.core.maskstore`); every code round-trips exactly.
2. **Loader** per worker (``num_workers=0``, one thread, batch 128 with ``collate_faces``, a
   random order as in training): ``RecordIOFaces`` of a ``train.rec`` written by
   :func:`recognition.data.recordio.write_recordio` (JPEG q95) alone, with masks from the store,
   from a folder of label PNGs and from a memory-mapped (N, 112, 112) ``.npy`` — interleaved
   in rotating order, repeated, median reported with CPU time beside wall time. ``--faces``
   faces are rendered by ``parsing.synth``; a larger scale repeats them (records i and
   i + faces hold the same image and mask, identities are renumbered), which keeps the
   file sizes and access pattern of a larger set but not its variety. All files are in the
   page cache (written just before), as on a node that has read the set once. Beside it, the
   CPU microseconds per sample of the image decode and of each step of the store's mask path.
3. **Sizes**: bytes per mask of each format on disk and the projection to MS1MV2 (5.8M) and
   WebFace42M (42.5M images).
4. **Prediction**: ``parsing.parser.prediction.predict_store`` faces/s for the first
   ``--predict`` faces on ``--device`` (CPU: ``--threads`` intra-op threads, one loader
   worker), with ``--parser`` or an untrained ``unet_r18`` of ``--width`` (speed does not
   depend on the weights); and the merge of ten shards into a store at the largest scale.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from parsing.core.io import write_label_map
from parsing.core.labels import FSE25
from parsing.core.maskstore import MaskStore, MaskStoreWriter, encode_mask, merge_stores
from parsing.core.recordio import RecordIOReader, unpack
from parsing.parser.inference import save_parser
from parsing.parser.models import create_model
from parsing.parser.prediction import predict_store
from parsing.synth import generate
from recognition.data.datasets import RecordIOFaces, collate_faces
from recognition.data.recordio import write_recordio

ALLOCATOR_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")
PROJECT = {"MS1MV2": 5_800_000, "WebFace42M": 42_500_000}


# --- codes ------------------------------------------------------------------------------------

def png_encode(m: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(m, "L").save(out, "PNG")
    return out.getvalue()


def png_decode(b: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(b)) as im:
        return np.asarray(im)


def rle_encode(m: np.ndarray) -> bytes:
    """(value, length) byte pairs along the rows; runs longer than 255 are split."""
    flat = m.ravel()
    starts = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    pieces = (lengths + 254) // 255
    values = np.repeat(flat[starts], pieces)
    counts = np.full(int(pieces.sum()), 255, dtype=np.int64)
    counts[np.cumsum(pieces) - 1] = lengths - 255 * (pieces - 1)
    return np.stack([values, counts], 1).astype(np.uint8).tobytes()


def rle_decode(b: bytes, shape: tuple[int, int] = (112, 112)) -> np.ndarray:
    pairs = np.frombuffer(b, dtype=np.uint8).reshape(-1, 2)
    return np.repeat(pairs[:, 0], pairs[:, 1]).reshape(shape)


def zlib_decode(b: bytes, shape: tuple[int, int] = (112, 112)) -> np.ndarray:
    return np.frombuffer(zlib.decompress(b), dtype=np.uint8).reshape(shape)


CODES = {
    "PNG (PIL, level 6)": (png_encode, png_decode),
    "run-length bytes": (rle_encode, rle_decode),
    "run-length + zlib": (lambda m: zlib.compress(rle_encode(m), 6),
                          lambda b: rle_decode(zlib.decompress(b))),
    "zlib of raw ids (store)": (lambda m: encode_mask(m)[6:],  # the store's code, sans shape
                                zlib_decode),
}


def measure_codes(maps: np.ndarray, repeats: int = 3) -> dict[str, dict[str, float]]:
    out = {}
    for name, (encode, decode) in CODES.items():
        t = time.perf_counter()
        blobs = [encode(m) for m in maps]
        enc = (time.perf_counter() - t) / len(maps)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            decoded = [decode(b) for b in blobs]
            best = min(best, (time.perf_counter() - t) / len(maps))
        assert all(np.array_equal(d, m) for d, m in zip(decoded, maps, strict=True)), name
        out[name] = {"bytes": float(np.mean([len(b) for b in blobs])),
                     "encode_us": enc * 1e6, "decode_us": best * 1e6}
    return out


# --- data ---------------------------------------------------------------------------------------

def render(faces: int, work: Path) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """JPEG bytes, true maps and identities of ``faces`` synthetic faces (cached in ``work``)."""
    cache = work / f"synth_{faces}.npz"
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        jpegs = [bytes(z["blob"][a:b]) for a, b in zip(z["ends"][:-1], z["ends"][1:],
                                                        strict=True)]
        return jpegs, z["maps"], z["ids"]
    per_id, jpegs, maps, ids = 10, [], [], []
    chunk = 100  # identities per call
    for first in range(0, faces // per_id, chunk):
        n = min(chunk, faces // per_id - first)
        images, label_maps, _, identities = generate(n, per_id, seed=first)
        for image in images:
            buf = io.BytesIO()
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, "JPEG", quality=95)
            jpegs.append(buf.getvalue())
        maps.append(label_maps.numpy())
        ids.append(identities.numpy() + first)
        print(f"rendered {len(jpegs)} / {faces} faces", flush=True)
    ends = np.cumsum([0] + [len(j) for j in jpegs])
    np.savez(cache, blob=np.frombuffer(b"".join(jpegs), np.uint8), ends=ends,
             maps=np.concatenate(maps), ids=np.concatenate(ids))
    return jpegs, np.concatenate(maps), np.concatenate(ids)


def write_scale(work: Path, scale: int, jpegs: list[bytes], maps: np.ndarray,
                ids: np.ndarray) -> dict[str, Path]:
    """train.rec, masks.rec, a PNG mask folder and a .npy of ``scale`` faces (repeated)."""
    root = work / f"scale_{scale}"
    if (root / "done").is_file():
        return {"rec": root, "store": root / "masks.rec", "png": root / "png",
                "npy": root / "masks.npy"}
    shutil.rmtree(root, ignore_errors=True)
    n, n_ids = len(jpegs), int(ids.max()) + 1
    write_recordio(root, ((jpegs[i % n], int(ids[i % n]) + (i // n) * n_ids)
                          for i in range(scale)))
    with MaskStoreWriter(root / "masks.rec") as w:
        for i in range(scale):
            w.write(i + 1, maps[i % n])
    for i in range(scale):
        write_label_map(root / "png" / f"{i + 1}.png", maps[i % n])
    npy = np.lib.format.open_memmap(root / "masks.npy", "w+", np.uint8, (scale, *maps.shape[1:]))
    for i in range(0, scale, n):
        npy[i: i + n] = maps[: scale - i]
    npy.flush()
    del npy
    (root / "done").write_text("ok")
    return {"rec": root, "store": root / "masks.rec", "png": root / "png",
            "npy": root / "masks.npy"}


# --- loader -------------------------------------------------------------------------------------

def loader_rates(paths: dict[str, Path], samples: int, rounds: int, batch: int,
                 seed: int) -> dict[str, dict[str, float]]:
    variants = {"images only": None, "store (masks.rec)": paths["store"],
                "PNG folder": paths["png"], "memory-mapped .npy": paths["npy"]}
    datasets, opened = {}, {}
    for name, masks in variants.items():
        t = time.perf_counter()
        datasets[name] = RecordIOFaces(paths["rec"], masks=masks)
        opened[name] = time.perf_counter() - t
    n = len(datasets["images only"])
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    rng = np.random.default_rng(seed)
    names = list(variants)
    for r in range(rounds):
        order = rng.permutation(n)[:samples].tolist()
        for name in names[r % len(names):] + names[: r % len(names)]:
            loader = DataLoader(datasets[name], batch_size=batch, sampler=order, num_workers=0,
                                collate_fn=collate_faces)
            w, c = time.perf_counter(), time.process_time()
            seen = sum(len(b["label"]) for b in loader)
            wall[name].append(seen / (time.perf_counter() - w))
            cpu[name].append(seen / (time.process_time() - c))
    base = statistics.median(wall["images only"])
    base_cpu = statistics.median(cpu["images only"])
    return {name: {"images_per_s": statistics.median(wall[name]),
                   "images_per_cpu_s": statistics.median(cpu[name]),
                   "cost_vs_images_only": base / statistics.median(wall[name]) - 1,
                   "cpu_cost_vs_images_only": base_cpu / statistics.median(cpu[name]) - 1,
                   "open_and_check_s": opened[name]} for name in variants}


def breakdown(paths: dict[str, Path], samples: int, rounds: int, seed: int) -> dict[str, float]:
    """Microseconds per sample (median of ``rounds`` interleaved passes over random samples)
    of the image read + decode and of the store's mask path, split into its parts."""
    ds = RecordIOFaces(paths["rec"], masks=paths["store"])
    source, root = ds.mask_source, ds.root
    order = np.random.default_rng(seed).permutation(len(ds))[:samples].tolist()
    images = {i: ds._read(i)["image"] for i in order}
    masks = {i: source.load(i, ds.image_path(i), root) for i in order}
    parts = {
        "image: read + JPEG decode": lambda i: ds._read(i),
        "mask: whole path (FaceDataset._mask)": lambda i: ds._mask(i, images[i]),
        "mask: record read + zlib decode": lambda i: source.store[ds.keys[i]],
        "mask: zlib.decompress alone": lambda i: zlib.decompress(
            memoryview(source.store.reader.read(int(ds.keys[i])))[30:]),  # IRHeader + shape
        "mask: FSE-25 id check": lambda i: FSE25.check(masks[i], "mask"),
    }
    times: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(rounds):
        for name, fn in parts.items():
            t = time.process_time()
            for i in order:
                fn(i)
            times[name].append((time.process_time() - t) / len(order) * 1e6)
    return {name: statistics.median(v) for name, v in times.items()}


def disk_bytes(paths: dict[str, Path], scale: int) -> dict[str, float]:
    png = paths["png"]
    files = list(png.iterdir())
    allocated = sum(f.stat().st_blocks * 512 for f in files)
    return {"store (masks.rec + .idx)": (paths["store"].stat().st_size
                                         + paths["store"].with_suffix(".idx").stat().st_size)
            / scale,
            "PNG folder (file bytes)": sum(f.stat().st_size for f in files) / scale,
            "PNG folder (allocated blocks)": allocated / scale,
            "memory-mapped .npy": paths["npy"].stat().st_size / scale,
            "train.rec images (JPEG q95)": (paths["rec"] / "train.rec").stat().st_size / scale}


# --- prediction ---------------------------------------------------------------------------------

def predict_rate(work: Path, rec_root: Path, faces: int, parser: Path | None, width: int,
                 device: str) -> tuple[dict, np.ndarray]:
    sub = work / f"predict_{faces}"
    shutil.rmtree(sub, ignore_errors=True)
    if parser is None:
        torch.manual_seed(0)
        model = create_model("unet_r18", num_classes=25, width=width)
        parser = save_parser(work / f"unet_r18_w{width}.pt", model, "unet_r18",
                             {"width": width})
    # the first `faces` images of the set, as their own train.rec (same JPEG bytes)
    reader = RecordIOReader(rec_root / "train.rec")
    records = [unpack(reader.read(k)) for k in range(1, faces + 1)]
    write_recordio(sub, ((payload, int(h.label)) for h, payload in records))
    summary = predict_store(parser, sub, sub / "masks.rec", batch_size=64, workers=1,
                            device=device, shard_size=max(1, faces // 4))
    store = MaskStore(sub / "masks.rec")
    predicted = np.stack([store[str(k)] for k in range(1, min(faces, 2000) + 1)])
    return summary, predicted


def merge_rate(paths: dict[str, Path], scale: int, work: Path) -> dict[str, float]:
    """Cut the scale's store into ten shards and time :func:`merge_stores` on them."""
    store = MaskStore(paths["store"])
    tmp = work / "merge"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    per = -(-scale // 10)
    shard_paths = []
    for s in range(10):
        with MaskStoreWriter(tmp / f"shard-{s}.rec") as w:
            for k in range(s * per + 1, min(scale, (s + 1) * per) + 1):
                w.write(k, store[str(k)])
        shard_paths.append(tmp / f"shard-{s}.rec")
    t = time.perf_counter()
    n = merge_stores(shard_paths, tmp / "masks.rec")
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    MaskStore(tmp / "masks.rec").check_keys([str(k) for k in range(1, scale + 1)], "bench")
    check = time.perf_counter() - t
    shutil.rmtree(tmp)
    return {"masks": n, "merge_s": seconds, "open_and_check_s": check}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/bench/masks"))
    ap.add_argument("--faces", type=int, default=10_000, help="synthetic faces rendered")
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--samples", type=int, default=4096, help="images per timed loader pass")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--parser", type=Path, default=None, help="parsing.train checkpoint")
    ap.add_argument("--width", type=int, default=16, help="untrained unet_r18 width without "
                    "--parser")
    ap.add_argument("--predict", type=int, default=2000, help="faces predicted (0: skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for prediction")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = {"torch": torch.__version__, "python": platform.python_version(),
                    "allocator_env": {k: os.environ.get(k) for k in ALLOCATOR_VARS},
                    "load_before": os.getloadavg(), "args": {k: str(v) for k, v in
                                                             vars(args).items()}}
    jpegs, maps, ids = render(args.faces, args.work)
    torch.set_num_threads(1)
    result["codes_true_maps"] = measure_codes(maps[:1000])
    for scale in args.scales:
        paths = write_scale(args.work, scale, jpegs, maps, ids)
        result[f"loader_{scale}"] = loader_rates(paths, args.samples, args.rounds, args.batch,
                                                 seed=scale)
        result[f"disk_{scale}"] = disk_bytes(paths, scale)
        result[f"breakdown_us_{scale}"] = breakdown(paths, 2000, args.rounds, seed=scale)
        print(json.dumps({f"loader_{scale}": result[f"loader_{scale}"]}, indent=1), flush=True)
    result["merge"] = merge_rate(paths, args.scales[-1], args.work)
    if args.predict:
        torch.set_num_threads(args.threads)
        summary, predicted = predict_rate(args.work, args.work / f"scale_{args.scales[0]}",
                                          args.predict, args.parser, args.width, args.device)
        result["predict"] = summary
        torch.set_num_threads(1)
        result["codes_predicted_maps"] = measure_codes(predicted[:1000])
    per_mask = result[f"disk_{args.scales[-1]}"]
    result["projected_GB"] = {fmt: {name: b * n / 1e9 for name, n in PROJECT.items()}
                              for fmt, b in per_mask.items()}
    result["load_after"] = os.getloadavg()
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
