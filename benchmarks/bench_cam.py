"""Explainer costs: Grad-CAM vs pytorch-grad-cam and vs one inference pass, RISE overhead
outside the model, FS-CAM forward passes per image. Baseline and ours in one process.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \
        .venv/bin/python benchmarks/bench_cam.py --batch 16 --repeats 5 --rise-masks 512

``--device cuda`` runs everything on the GPU; each timed call then ends with
``torch.cuda.synchronize()`` (and so does ``model.forward`` for the RISE share), so the
numbers are GPU work, not kernel launches. Process CPU time is reported on the GPU too, but
there it only measures the host's share.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from pytorch_grad_cam import GradCAM as ReferenceGradCAM
from torch import nn

from cam import FSCAM, RISE, GradCAM
from cam.targets import SimilarityTarget


def build(network: str) -> tuple[nn.Module, str, str]:
    """(model, target layer, description): IResNet from recognition when it is there,
    otherwise torchvision's ResNet-34 at 112x112 as a stand-in."""
    try:
        from recognition import create_backbone
    except ImportError:
        create_backbone = None
    if create_backbone is not None:
        model = create_backbone(network)
        return model, f"layer4.{len(model.layer4) - 1}", network
    import torchvision
    model = torchvision.models.resnet34(num_classes=512)
    return model, "layer4.2", "torchvision resnet34 (stand-in: recognition.create_backbone absent)"


def synchronizer(device: torch.device):
    """Waits for the device's queued work (a no-op on the CPU)."""
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def timed(fn, sync=lambda: None) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def timed_cpu(fn, sync=lambda: None) -> tuple[float, float]:
    """(wall, process CPU) seconds: on a loaded machine CPU time is what the work cost."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


class ForwardClock:
    """Accumulates the wall time spent inside ``model.forward`` (synchronised on a GPU)."""

    def __init__(self, model: nn.Module, sync=lambda: None):
        self.seconds, self.calls, self.rows = 0.0, 0, 0
        self.sync = sync
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._stop)

    def _start(self, module, inputs):
        self.sync()
        self._t0 = time.perf_counter()

    def _stop(self, module, inputs, output):
        self.sync()
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1
        self.rows += len(inputs[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="iresnet34")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rise-masks", type=int, default=512)
    ap.add_argument("--rise-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--json", help="write the numbers here too")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    sync = synchronizer(device)
    torch.manual_seed(0)
    model, layer, description = build(args.network)
    model.eval().to(device)
    x = torch.randn(args.batch, 3, 112, 112).to(device)
    with torch.no_grad():
        refs = model(torch.randn(args.batch, 3, 112, 112).to(device))
    print(f"model: {description}; target layer {layer}; batch {args.batch}, 112x112, "
          f"{torch.get_num_threads()} threads, device {device}")
    results: dict[str, float | int | str] = {"model": description, "batch": args.batch,
                                             "device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)

    def inference():
        with torch.no_grad():
            model(x)

    reference = ReferenceGradCAM(model, [model.get_submodule(layer)])
    ref_targets = [lambda out, r=r: F.cosine_similarity(out, r, dim=0) for r in refs]
    ours = GradCAM(model, layer)
    target = SimilarityTarget(refs)
    maps_ref, maps_ours = reference(x, ref_targets), ours(x, target)
    results["gradcam_max_abs_diff"] = float(
        (maps_ours.cpu() - torch.from_numpy(maps_ref)).abs().max())
    inference(), reference(x, ref_targets), ours(x, target)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {"inference": [], "pytorch_grad_cam": [],
                                                    "gradcam": []}
    for _ in range(args.repeats):  # interleaved, so machine load hits all three alike
        runs["inference"].append(timed_cpu(inference, sync))
        runs["pytorch_grad_cam"].append(timed_cpu(lambda: reference(x, ref_targets), sync))
        runs["gradcam"].append(timed_cpu(lambda: ours(x, target), sync))
    reference.activations_and_grads.release()
    ours.close()
    # on a shared machine the fastest of the interleaved repeats is the least disturbed one
    wall = {k: min(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: min(c for _, c in v) for k, v in runs.items()}
    results["median_wall_s"] = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    results["min_wall_s"], results["min_cpu_s"] = wall, cpu
    for clock, t in (("wall", wall), ("cpu", cpu)):
        results[f"speedup_vs_pytorch_grad_cam_{clock}"] = t["pytorch_grad_cam"] / t["gradcam"]
        results[f"gradcam_over_inference_{clock}"] = t["gradcam"] / t["inference"]
        print(f"{clock} (min of {args.repeats} interleaved runs): inference "
              f"{t['inference']:.3f} s | pytorch-grad-cam {t['pytorch_grad_cam']:.3f} s | ours "
              f"{t['gradcam']:.3f} s | speed-up {t['pytorch_grad_cam'] / t['gradcam']:.2f}x | "
              f"ours / inference {t['gradcam'] / t['inference']:.3f}")
    print(f"max |ours - pytorch-grad-cam| {results['gradcam_max_abs_diff']:.1e}")

    clock = ForwardClock(model, sync)
    rise = RISE(model, n_masks=args.rise_masks, batch_size=args.rise_batch, seed=0)
    rise.explain(x[:1], SimilarityTarget())  # warm-up
    shares = []
    for _ in range(max(1, args.repeats // 2)):
        clock.seconds = 0.0
        total = timed(lambda: rise.explain(x[:1], SimilarityTarget()), sync)
        shares.append((1 - clock.seconds / total, total))
    outside, total = min(shares)
    results |= {"rise_masks": args.rise_masks, "rise_s": total, "rise_share_outside_forward":
                outside, "rise_s_per_image_at_4000": total * 4000 / args.rise_masks}
    print(f"RISE N={args.rise_masks}: {total:.2f} s, {100 * outside:.2f} % outside forward "
          f"(per-mask work, so the share holds at N=4000: ~{total * 4000 / args.rise_masks:.3g} "
          f"s per image)")

    labels = _face_labels(4).to(device)
    clock.calls = clock.rows = 0
    fscam = FSCAM(model, batch_size=64)
    if device.type == "cuda":  # new shapes' first CUDA calls pay cuDNN and allocator setup
        fscam.explain(x[:4], SimilarityTarget(), labels)
        clock.calls = clock.rows = 0
    t_fscam = timed(lambda: fscam.explain(x[:4], SimilarityTarget(), labels), sync)
    present = [len(torch.unique(m)) for m in labels]
    results |= {"fscam_regions_present": present, "fscam_rows": clock.rows,
                "fscam_forward_calls": clock.calls, "fscam_s_4_images": t_fscam}
    print(f"FS-CAM on 4 faces: regions present {present} -> {clock.rows} rows "
          f"(= sum + 4) in {clock.calls} batched forward calls, {t_fscam:.2f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def _face_labels(n: int) -> torch.Tensor:
    """FSE-25 label maps of ``n`` synthetic faces."""
    from parsing.synth import generate

    return generate(n, 1, seed=0)[1]


if __name__ == "__main__":
    main()
