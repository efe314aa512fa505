"""Explain a face model region by region: FS-CAM beside Grad-CAM, RISE and Group-CAM.

    python -m cam.fscam --image face.jpg --landmarks x1,y1,...,x5,y5 --model model.pt \\
        --parser parser.pt --method all --out runs/explain
    python -m cam.fscam --images aligned/ --aligned --labels labels/ --model model.pt --out DIR

Writes, per image, a PNG figure (overlays and per-region bars) and a JSON of per-region
scores, plus ``regions.csv`` (one row per image, method and region); with ``--images`` also
``summary.csv``/``summary.json`` (mean +- std per region over the folder). On CPU set
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824``
(reference §8); RISE at 4000 masks costs about 2 minutes per image with IResNet-34 on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cam import plot
from cam.base import (
    ActivationGradientExplainer,
    Explainer,
    Explanation,
    create_explainer,
    explainer_class,
    list_explainers,
)
from cam.fscam import FSCAM
from cam.regions import RegionStats, region_attribution
from cam.targets import SimilarityTarget, Target
from parsing import Parser
from parsing.core.align import align_face
from parsing.core.cli import ArgumentParser, cli_main, device, positive_int
from parsing.core.errors import InputError
from parsing.core.io import list_images, read_image, read_label_map
from parsing.core.labels import FSE25
from parsing.core.paths import check_unique_keys, output_dir
from parsing.core.pixels import normalise
from parsing.core.progress import progress_bar
from parsing.photos.landmarks import detect_faces
from recognition.evaluation.embedding import add_backbone_arguments, load_backbone

#: ``--method all``, in this order (figure panels, CSV rows)
METHODS = ("fscam", "gradcam", "rise", "groupcam")
FACE_IDS = FSE25.ids("face")
IMAGES_PER_STEP = 8


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = ArgumentParser(
        prog="python -m cam.fscam", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="one face image")
    source.add_argument("--images", help="a folder of face images (searched recursively)")
    ap.add_argument("--reference", help="explain the similarity to this face (default: to the "
                                        "image's own embedding)")
    add_backbone_arguments(ap, flag="--model")
    labels = ap.add_mutually_exclusive_group()
    labels.add_argument("--parser", help="face parser: a parsing.train run folder or its model.pt")
    labels.add_argument("--labels", help="FSE-25 label PNG of the aligned --image, or with "
                                         "--images a folder of PNGs named like the images")
    ap.add_argument("--method", choices=(*list_explainers(), "all"), default="fscam")
    ap.add_argument("--mode", choices=("keep", "remove"), default="keep",
                    help="FS-CAM: score each region alone (keep) or its removal (remove)")
    align = ap.add_mutually_exclusive_group()
    align.add_argument("--aligned", action="store_true",
                       help="the images are 112x112 ArcFace crops already (default: align "
                            "with --landmarks, or with MTCNN's five points)")
    align.add_argument("--landmarks", help="x1,y1,...,x5,y5: five points of --image (eyes, "
                                           "nose tip, mouth corners; image-left first)")
    ap.add_argument("--reference-landmarks", help="five points of --reference")
    ap.add_argument("--target-layer", help="layer for Grad-CAM/Group-CAM (default: the last "
                                           "block of layer4)")
    ap.add_argument("--mark", metavar="REGIONS",
                    help="outline these FSE-25 regions in the figures, e.g. the known identity "
                         "regions of a parsing.synth --identity-regions set (eyes,nose)")
    ap.add_argument("--rise-masks", type=positive_int, default=4000)
    ap.add_argument("--groups", type=positive_int, default=32, help="Group-CAM channel groups")
    ap.add_argument("--batch-size", type=positive_int, default=64, help="rows per forward pass")
    ap.add_argument("--device", type=device, default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="RISE masks")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--overwrite", action="store_true",
                    help="write into an --out that already holds files")
    return ap.parse_args(argv)


def parse_landmarks(text: str, what: str) -> Tensor:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 10:
        raise InputError(f"{what}: expected ten comma-separated numbers x1,y1,...,x5,y5, "
                         f"got {text!r}")
    return torch.tensor(values, dtype=torch.float64).view(5, 2)


def load_face(path: Path, aligned: bool, landmarks: str | None, what: str) -> Tensor:
    """An aligned 112x112 face as a uint8 tensor (3, 112, 112): as given (``--aligned``),
    aligned with given five points, or with the five points of the best MTCNN face."""
    image = read_image(path)
    face = torch.from_numpy(image.copy()).permute(2, 0, 1)
    if aligned:
        if face.shape[1:] != (112, 112):
            raise InputError(f"{path}: --aligned expects a 112x112 ArcFace crop, got "
                             f"{face.shape[2]}x{face.shape[1]}; drop --aligned to align it")
        return face
    if landmarks is not None:
        return align_face(face, parse_landmarks(landmarks, what))
    found = detect_faces(image)  # MissingDependencyError (exit 2) says how to install MTCNN
    if not len(found.scores):
        raise InputError(f"{path}: no face found by MTCNN; give {what} x1,y1,...,x5,y5")
    return align_face(face, found.landmarks5[0])


def images_to_explain(image: str | None, images: str | None, landmarks: str | None
                      ) -> tuple[list[Path], list[str]]:
    """``image``, or every image under the folder ``images``, with the names of their outputs
    (relative path without the suffix)."""
    if image:
        return [Path(image)], [Path(image).stem]
    paths, rels = list_images(images)
    if landmarks:
        raise InputError("--landmarks describes one --image; a folder is aligned by MTCNN or "
                         "given as --aligned crops")
    names = [r.with_suffix("").as_posix() for r in rels]
    check_unique_keys(paths, names, f"--images {images}")
    return paths, names


class LabelSource:
    """FSE-25 label maps of aligned faces: from a parser checkpoint, or from PNGs (``labels``:
    one file for a single image, else a folder mirroring ``images_root``)."""

    def __init__(self, parser: str | None, labels: str | None, images_root: str | None = None,
                 device: str = "cpu"):
        self.labels, self.images_root, self.parser = labels, images_root, None
        if parser:
            self.parser = Parser.from_checkpoint(parser, device=device)
        elif not labels:
            raise InputError("FS-CAM and the region scores need face regions: give --parser CKPT "
                             "or --labels PNG/DIR")

    def __call__(self, paths: list[Path], images: Tensor) -> Tensor:
        if self.parser is not None:
            with torch.no_grad():
                maps = self.parser(images).cpu()
        else:
            maps = torch.stack([self._read(path) for path in paths])
        for path, label_map in zip(paths, maps, strict=True):
            FSE25.check(label_map, f"label map of {path}")
            if not torch.isin(label_map, torch.tensor(FACE_IDS, dtype=label_map.dtype)).any():
                raise InputError(f"{path}: no face region found in its label map")
        return maps

    def _read(self, path: Path) -> Tensor:
        labels = Path(self.labels)
        file = labels if self.images_root is None else \
            labels / path.relative_to(self.images_root).with_suffix(".png")
        label_map = torch.from_numpy(read_label_map(file))
        if label_map.shape != (112, 112):
            raise InputError(f"{file}: label map is {label_map.shape[1]}x{label_map.shape[0]}, "
                             "the aligned face is 112x112")
        return label_map


def default_layer(model: nn.Module, device: str) -> str:
    """IResNet: the last block of layer4 (7x7). Other backbones: the last top-level module
    whose output is still a spatial (B, C, H, W) map (e.g. MobileFaceNet's ``conv_sep``)."""
    stage = getattr(model, "layer4", None)
    if isinstance(stage, nn.Sequential):
        return f"layer4.{len(stage) - 1}"
    spatial: list[str] = []

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, out: Tensor) -> None:
            if isinstance(out, Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1:
                spatial.append(name)
        return hook

    handles = [child.register_forward_hook(record(name)) for name, child in
               model.named_children()]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, 112, 112, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not spatial:
        raise InputError(f"{type(model).__name__}: no spatial layer found for Grad-CAM/Group-CAM;"
                         " give --target-layer")
    return spatial[-1]


def uses_gradients(method: str) -> bool:
    """Whether the registered explainer ``method`` works on a layer's gradients."""
    return issubclass(explainer_class(method), ActivationGradientExplainer)


def build_explainers(model: nn.Module, methods: Sequence[str], *, target_layer: str | None = None,
                     mode: str = "keep", batch_size: int = 64, rise_masks: int = 4000,
                     seed: int = 0, groups: int = 32, device: str = "cpu"
                     ) -> dict[str, Explainer]:
    """The registered explainers ``methods`` on ``model`` with this command's options; the
    gradient methods use ``target_layer`` (default: :func:`default_layer`)."""
    gradient = [m for m in methods if uses_gradients(m)]
    layer = target_layer or (default_layer(model, device) if gradient else None)
    options = {
        "fscam": {"mode": mode, "batch_size": batch_size},
        "rise": {"n_masks": rise_masks, "batch_size": batch_size, "seed": seed,
                 "progress": True},
        "groupcam": {"groups": groups, "batch_size": batch_size},
    }
    return {name: create_explainer(name, model, **options.get(name, {}),
                                   **({"target_layer": layer} if name in gradient else {}))
            for name in methods}


def targets_for(model: nn.Module, methods: Sequence[str], reference: str | None = None,
                aligned: bool = False, reference_landmarks: str | None = None,
                device: str = "cpu") -> tuple[dict[str, Target], str]:
    """Target per method and a sentence saying what is explained: the similarity to the
    ``reference`` face's embedding, else to each image's own."""
    if reference:
        face = load_face(Path(reference), aligned and not reference_landmarks,
                         reference_landmarks, "--reference-landmarks")
        with torch.no_grad():
            embedding = model(normalise(face[None]).to(device))[0]
        target = SimilarityTarget(embedding)
        return dict.fromkeys(methods, target), \
            f"cosine similarity to the embedding of {reference}"
    # the cosine to the image's own embedding has zero gradient at the image
    targets = {m: SimilarityTarget(metric="dot" if uses_gradients(m) else "cosine")
               for m in methods}
    description = "self-similarity: cosine to the image's own embedding"
    if any(uses_gradients(m) for m in methods):
        description += (" (Grad-CAM and Group-CAM: projection on it, as the cosine has zero "
                        "gradient there)")
    return targets, description


def run(args: argparse.Namespace) -> None:
    paths, names = images_to_explain(args.image, args.images, args.landmarks)
    out = output_dir(args.out, {"--image": args.image, "--images": args.images,
                                "--reference": args.reference, "--model": args.model,
                                "--parser": args.parser, "--labels": args.labels},
                     overwrite=args.overwrite)
    model = load_backbone(args.model, args.network, args.network_kwargs, args.device,
                          args.imports or ())
    label_source = LabelSource(args.parser, args.labels, None if args.image else args.images,
                               args.device)
    methods = METHODS if args.method == "all" else (args.method,)
    explainers = build_explainers(model, methods, target_layer=args.target_layer, mode=args.mode,
                                  batch_size=args.batch_size, rise_masks=args.rise_masks,
                                  seed=args.seed, groups=args.groups, device=args.device)
    targets, description = targets_for(model, methods, args.reference, args.aligned,
                                       args.reference_landmarks, args.device)
    marked = torch.tensor(FSE25.ids(args.mark.split(","))) if args.mark else None
    print(f"target: {description}")
    stats = {name: RegionStats() for name in explainers}
    fscam_stats = RegionStats()
    rows = []
    for start in progress_bar(range(0, len(paths), IMAGES_PER_STEP), desc="explain", unit="step",
                      disable=len(paths) <= IMAGES_PER_STEP):
        chunk = paths[start:start + IMAGES_PER_STEP]
        faces = torch.stack([load_face(p, args.aligned, args.landmarks, "--landmarks")
                             for p in chunk])
        images = normalise(faces).to(args.device)
        label_maps = label_source(chunk, images)
        results: dict[str, Explanation] = {}
        for name, explainer in explainers.items():
            if isinstance(explainer, FSCAM):
                results[name] = explainer.explain(images, targets[name], label_maps)
                fscam_stats.update(results[name].region_scores)
            else:
                results[name] = explainer.explain(images, targets[name])
        shares = {name: region_attribution(r.map.cpu(), label_maps, reduce="share")
                  for name, r in results.items()}
        present = region_attribution(torch.ones(label_maps.shape), label_maps) > 0
        for name in results:  # absent regions do not count in the summary
            stats[name].update(torch.where(present, shares[name], float("nan")))
        for i, path in enumerate(chunk):
            rows += write_image_outputs(out, path, names[start + i], faces[i], label_maps[i],
                                        results, shares, i, description, marked)
    for explainer in explainers.values():
        explainer.close()
    write_csv(out / "regions.csv", rows)
    if args.images:
        write_summary(out, stats, fscam_stats if "fscam" in explainers else None, len(paths),
                      description)
    print(f"wrote {len(paths)} figure(s) and regions.csv to {out}")


def write_image_outputs(out: Path, path: Path, key: str, face: Tensor, label_map: Tensor,
                        results: dict[str, Explanation], shares: dict[str, Tensor], i: int,
                        description: str, marked: Tensor | None = None) -> list[dict]:
    (out / key).parent.mkdir(parents=True, exist_ok=True)
    present = torch.unique(label_map).tolist()
    absent = torch.ones(FSE25.num_classes, dtype=torch.bool)
    absent[present] = False
    bars = {name: (r.region_scores[i] if r.region_scores is not None else
                   shares[name][i].masked_fill(absent, float("nan")))
            for name, r in results.items()}
    titles = {name: f"{name} ({'region score' if r.region_scores is not None else 'share'})"
              for name, r in results.items()}
    plot.compare(face, {titles[n]: r.map[i] for n, r in results.items()},
                 {titles[n]: v for n, v in bars.items()}, label_map=label_map,
                 title=f"{path.name}: {description}" + ("" if marked is None else
                                                        " (outlined: marked regions)"),
                 path=out / f"{key}.png",
                 marked=None if marked is None else torch.isin(label_map.long(), marked))
    record = {"image": str(path), "target": description, "methods": {}}
    rows = []
    for name, r in results.items():
        entry = {"target_score": float(r.scores[i]), "share": {}}
        if r.region_scores is not None:
            entry["region_score"] = {}
        for k in present:
            region = FSE25.names[k]
            entry["share"][region] = float(shares[name][i, k])
            row = {"image": str(path), "method": name, "region": region,
                   "share": float(shares[name][i, k]), "region_score": ""}
            if r.region_scores is not None:
                entry["region_score"][region] = row["region_score"] = float(r.region_scores[i, k])
            rows.append(row)
        record["methods"][name] = entry
    (out / f"{key}.json").write_text(json.dumps(record, indent=2))
    first = next(iter(results))
    top = sorted(present, key=lambda k: -float(bars[first][k].nan_to_num(float("-inf"))))[:5]
    print(f"{path.name}: top regions by {titles[first]}: "
          + ", ".join(f"{FSE25.names[k]} {float(bars[first][k]):.3f}" for k in top))
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["image"])
        writer.writeheader()
        writer.writerows(rows)


def write_summary(out: Path, stats: dict[str, RegionStats], fscam_stats: RegionStats | None,
                  n_images: int, description: str) -> None:
    rows = [{"method": name, "measure": "share", **row} for name, s in stats.items()
            for row in s.table()]
    if fscam_stats is not None:
        rows += [{"method": "fscam", "measure": "region_score", **row}
                 for row in fscam_stats.table()]
    write_csv(out / "summary.csv", rows)
    (out / "summary.json").write_text(json.dumps(
        {"images": n_images, "target": description, "regions": rows}, indent=2))
    print(f"{'method':<9} {'measure':<12} {'region':<17} {'n':>5} {'mean':>8} {'std':>8}")
    for row in rows:
        print(f"{row['method']:<9} {row['measure']:<12} {row['region']:<17} {row['count']:>5} "
              f"{row['mean']:>8.3f} {row['std']:>8.3f}")


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
