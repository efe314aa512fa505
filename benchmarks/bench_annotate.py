"""Landmark annotation, detection and recolouring: speed, detection rates, agreement.

    python -m benchmarks.bench_annotate [--synth DIR ...] [--sections ...] [--out results.json]

* packaged photos: seconds per image for Face Mesh, rasterising the regions, and merging a
  base segmentation; agreement of annotate(flip(photo)) with the label-swapped flip of
  annotate(photo);
* MTCNN: one batched call per same-size batch (ours) vs one call per image (baseline);
* recolour of the lips of a batch of astronaut photos: ours (kornia Lab on the pixels the
  feathered mask reaches, batched) vs a per-image scikit-image/scipy full-image reference;
* ``--synth DIR ...`` (``python -m parsing.synth`` layout: images/, labels_25/): Face Mesh and
  MTCNN detection rates, and per-class F1 (reference §2.5, one confusion matrix over the set) of
  the landmark skin regions 1-9 against the true ones. The true label map is the base with
  its skin regions merged into "skin", so only the landmark split of the skin is measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from skimage import color as skcolor

from parsing.core.io import read_image, read_label_map
from parsing.core.labels import FSE25, convert
from parsing.photos.annotate import annotate, landmark_regions
from parsing.photos.edit import recolor
from parsing.photos.landmarks import detect_faces, face_mesh
from parsing.photos.packaged import PHOTOS, load_photo


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_photos(repeats: int) -> dict:
    out = {}
    lut = FSE25.flip_lut().numpy()
    for name in PHOTOS:
        img = load_photo(name)
        mesh = face_mesh(img)
        labels = annotate(img, landmarks=mesh)
        base = np.where((labels >= 1) & (labels <= 9), 1, labels).astype(np.uint8)
        flipped = annotate(np.ascontiguousarray(img[:, ::-1]))
        expected = lut[labels[:, ::-1]]
        face = (expected > 0) | (flipped > 0)
        ious = {FSE25.names[c]: float(((expected == c) & (flipped == c)).sum()
                                      / ((expected == c) | (flipped == c)).sum())
                for c in range(1, 20) if c not in (15, 16)}
        out[name] = {
            "size": list(img.shape[:2]),
            "face_mesh_s": _best_time(lambda img=img: face_mesh(img), repeats),
            "regions_s": _best_time(lambda m=mesh, s=img.shape[:2]: landmark_regions(m, s),
                                    repeats),
            "annotate_s": _best_time(lambda img=img: annotate(img), repeats),
            "annotate_with_base_s": _best_time(
                lambda img=img, b=base, m=mesh: annotate(img, b, "fse25", landmarks=m), repeats),
            "flip_pixel_agreement": float((expected == flipped)[face].mean()),
            "flip_mean_iou": float(np.mean(list(ious.values()))),
            "flip_iou": {k: round(v, 3) for k, v in ious.items()},
        }
    return out


def bench_mtcnn(repeats: int, batch: int = 4) -> dict:
    img = load_photo("astronaut")
    rng = np.random.default_rng(0)
    images = [np.roll(img, tuple(rng.integers(-20, 20, 2)), axis=(0, 1)) for _ in range(batch)]
    stacked = np.stack(images)
    batched = _best_time(lambda: detect_faces(stacked), repeats)
    looped = _best_time(lambda: [detect_faces(im) for im in images], repeats)
    return {"images": batch, "size": list(img.shape[:2]), "batched_s_per_image": batched / batch,
            "loop_s_per_image": looped / batch, "speedup": looped / batched}


def _recolor_reference(rgb, labels, ids, target, strength, sigma):
    mask = np.isin(labels, ids).astype(np.float64)
    alpha = strength * ndimage.gaussian_filter(mask, sigma, mode="nearest", truncate=3.0)
    lab = skcolor.rgb2lab(rgb)
    t = skcolor.rgb2lab(np.asarray(target, np.float64).reshape(1, 1, 3) / 255.0)[0, 0]
    lab[..., 1:] = lab[..., 1:] * (1 - alpha[..., None]) + t[1:] * alpha[..., None]
    return np.where(alpha[..., None] > 0, np.clip(skcolor.lab2rgb(lab), 0, 1), rgb)


def bench_recolor(repeats: int, batch: int = 8) -> dict:
    img = load_photo("astronaut")
    labels = annotate(img, landmarks=np.load("tests/data/astronaut_facemesh.npy"))
    images = torch.from_numpy(img).permute(2, 0, 1)[None].repeat(batch, 1, 1, 1)
    maps = torch.from_numpy(labels)[None].repeat(batch, 1, 1)
    ours = _best_time(lambda: recolor(images, maps, "lips", (160, 48, 32), 0.6, 2.0), repeats)
    rgb = img.astype(np.float64) / 255.0
    reference = _best_time(lambda: [
        _recolor_reference(rgb, labels, [18, 19], (160, 48, 32), 0.6, 2.0)
        for _ in range(batch)], 1)
    return {"images": batch, "size": list(img.shape[:2]), "regions": "lips",
            "ours_s_per_image": ours / batch, "reference_s_per_image": reference / batch,
            "speedup": reference / ours}


def bench_synth(folder: Path, limit: int | None) -> dict:
    paths = sorted((folder / "images").glob("*.png"))[:limit]
    if not paths:
        raise SystemExit(f"{folder}/images: no PNG images (python -m parsing.synth layout)")
    confusion = np.zeros((10, 10), np.int64)
    mesh_found = mtcnn_found = 0
    fse10_agree = fse10_total = 0
    annotate_seconds = 0.0
    for path in paths:
        img = read_image(path)
        truth = read_label_map(folder / "labels_25" / f"{path.stem}_seg.png")
        mtcnn_found += int(len(detect_faces(img).scores) > 0)
        start = time.perf_counter()
        mesh = face_mesh(img)
        ours = None if mesh is None else annotate(img, truth, "fse25", landmarks=mesh)
        annotate_seconds += time.perf_counter() - start
        if mesh is None:
            continue
        mesh_found += 1
        skin = (truth >= 1) & (truth <= 9)
        confusion += np.bincount(truth[skin].astype(np.int64) * 10 + ours[skin],
                                 minlength=100).reshape(10, 10)
        alone = landmark_regions(mesh, img.shape[:2])
        t10, o10 = convert(truth, FSE25, "fse10"), convert(alone, FSE25, "fse10")
        face10 = (t10 > 0) | (o10 > 0)
        fse10_agree += int((t10 == o10)[face10].sum())
        fse10_total += int(face10.sum())
    tp = np.diag(confusion)
    f1 = 2 * tp / np.maximum(confusion.sum(0) + confusion.sum(1), 1)
    return {
        "folder": str(folder), "images": len(paths), "size": list(img.shape[:2]),
        "face_mesh_detection_rate": mesh_found / len(paths),
        "mtcnn_detection_rate": mtcnn_found / len(paths),
        "skin_f1": {FSE25.names[c]: round(float(f1[c]), 4) for c in range(1, 10)},
        "skin_mean_f1": float(f1[1:].mean()),
        "skin_pixel_accuracy": float(tp[1:].sum() / max(confusion[1:, 1:].sum(), 1)),
        "fse10_landmarks_only_pixel_agreement": fse10_agree / max(fse10_total, 1),
        "annotate_s_per_image": annotate_seconds / len(paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", type=Path, nargs="+", default=[],
                        help="parsing.synth folders to measure on")
    parser.add_argument("--limit", type=int, help="first N synthetic images")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sections", nargs="*", default=["photos", "mtcnn", "recolor"],
                        choices=["photos", "mtcnn", "recolor"], help="what to time")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(2)
    benches = {"photos": bench_photos, "mtcnn": bench_mtcnn, "recolor": bench_recolor}
    results = {name: benches[name](args.repeats) for name in args.sections}
    results["synth"] = [bench_synth(folder, args.limit) for folder in args.synth]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
