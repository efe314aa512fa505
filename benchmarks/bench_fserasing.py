"""FSErasing speed: batched vs per-sample loops, per-sample vs RandomErasing, share of a step.

Run from the repository root (export the allocator setting of reference §8 first):

    python -m benchmarks.bench_fserasing --json runs/bench/fserasing.json

Three comparisons, each measured side by side in this one process, interleaved and repeated
(the median is reported, the minimum beside it):

1. ``erase_batch`` on a (128, 3, 112, 112) batch vs two per-sample Python loops of the
   reference algorithm (reference §3: per image, choose n classes, fill them with per-pixel N(0, 1)
   noise): ``reference_loop`` keeps the published code's structure (a one-hot map of every
   class per image, a full-size noise image per chosen class, ``torch.where``);
   ``lean_loop`` is the same algorithm written tightly (one ``isin`` per image, noise only for
   the erased pixels). ``erase_batch_inplace`` is ``erase_batch(..., inplace=True)`` on a
   batch of its own (as a training loop erases the batch it got from the loader).
2. ``FSErasing`` per image (the DataLoader-worker path, one thread) vs
   ``torchvision.transforms.v2.RandomErasing`` per image.
3. ``erase_batch`` and a reused ``BatchFSErasing`` module (what a training loop holds) as a
   share of one training step (forward, backward, SGD) of the
   recognition backbone at the same batch: ``recognition.create_backbone(--network)`` when
   that package provides it, otherwise torchvision's resnet34 as a stand-in (reported).

``--allocator both`` runs comparison 1 three times more, each in a fresh child process: with
the glibc allocator variables of reference §8, without them, and without them but with the
same setting made at run time (``parsing.core.allocator.keep_freed_memory``, what every
``python -m`` command of the project does); ``batched_by_allocator`` holds all three. Use
``--threads 1`` for the DataLoader-worker setting.

On a GPU (``--device cuda``) every timed call ends with ``torch.cuda.synchronize``; the loops
of comparison 1 run on the CPU as in a Dataset, and once more on the GPU tensors
(``reference_loop_on_device``). A realistic GPU step:
``--device cuda --network iresnet50 --fp16 --channels-last`` (insightface's mixed precision:
autocast body, float32 head, ``GradScaler``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from fserasing import BatchFSErasing, FSErasing, erase_batch
from parsing.core.allocator import ALLOCATOR_VARS, keep_freed_memory
from parsing.core.labels import FSE25

FACE = torch.tensor(FSE25.groups["face"])
ALLOCATOR_SETTING = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000",
                     "MALLOC_TOP_PAD_": "1073741824"}  # reference §8


def face_like_masks(b: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(B, size, size) uint8 FSE-25 maps laid out like an aligned face (sizes matter here)."""
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    jitter = torch.rand(b, 3, 1, 1, generator=generator) * 0.2 - 0.1
    x, y = xx - jitter[:, 0], yy - jitter[:, 1]
    r = (x**2 + (y * 0.8) ** 2).sqrt() * (1 + jitter[:, 2])
    m = torch.full((b, size, size), 21, dtype=torch.uint8)  # hair
    skin = 1 + (x > 0).to(torch.uint8) + 2 * (y > 0.3) + 4 * (y < -0.3)
    m = torch.where(r < 0.75, skin.to(torch.uint8), m)
    parts = [
        ((r < 0.75) & (y < -0.3) & (x.abs() < 0.15), 7),
        (((x + 0.33) ** 2 + (y + 0.1) ** 2) < 0.04, 8),
        (((x - 0.33) ** 2 + (y + 0.1) ** 2) < 0.04, 9),
        (((x + 0.33) ** 2 / 2 + (y + 0.1) ** 2) < 0.006, 11),
        (((x - 0.33) ** 2 / 2 + (y + 0.1) ** 2) < 0.006, 12),
        (((x + 0.33).abs() < 0.15) & ((y + 0.28).abs() < 0.03), 13),
        (((x - 0.33).abs() < 0.15) & ((y + 0.28).abs() < 0.03), 14),
        ((x.abs() < 0.1) & (y > -0.1) & (y < 0.25), 10),
        ((x.abs() < 0.25) & ((y - 0.42).abs() < 0.03), 17),
        ((x.abs() < 0.25) & ((y - 0.38).abs() < 0.03), 18),
        ((x.abs() < 0.25) & ((y - 0.46).abs() < 0.03), 19),
        (((x.abs() - 0.8).abs() < 0.07) & (y.abs() < 0.2), 15),
        ((r > 0.75) & (y > 0.6) & (x.abs() < 0.35), 20),
        ((r > 0.9) & (y > 0.8), 22),
        ((r > 1.1) & (y < 0.6), 0),
    ]
    for where, cls in parts:
        m[where] = cls
    return m


def reference_loop(images: torch.Tensor, masks: torch.Tensor, n_erase: tuple[int, int],
                   num_classes: int = 25) -> torch.Tensor:
    """reference §3 as published: per image a one-hot of every class, full-size noise per class."""
    out = []
    weights = torch.zeros(num_classes)
    weights[FACE] = 1.0
    c, h, w = images.shape[1:]
    for img, label in zip(images, masks, strict=True):
        onehot = torch.zeros(num_classes, h, w, dtype=torch.long, device=images.device)
        for k in range(num_classes):
            onehot[k] = torch.where(label == k, 1, 0)
        onehot = onehot.bool()
        n = int(torch.randint(n_erase[0], n_erase[1] + 1, (1,)))
        for k in weights.multinomial(n, replacement=False):
            noise = torch.empty(c, h, w, device=images.device).normal_()
            img = torch.where(onehot[k], noise, img)
        out.append(img)
    return torch.stack(out)


def lean_loop(images: torch.Tensor, masks: torch.Tensor, n_erase: tuple[int, int]) -> torch.Tensor:
    """The same algorithm per image, written tightly: one ``isin``, noise for erased pixels."""
    out = images.clone()
    for img, label in zip(out, masks, strict=True):
        n = int(torch.randint(n_erase[0], n_erase[1] + 1, (1,)))
        chosen = FACE[torch.randperm(len(FACE))[:n]]
        region = torch.isin(label, chosen.to(label.dtype))
        img[:, region] = torch.randn(img.shape[0], int(region.sum()))
    return out


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def compare(cases: dict[str, Callable[[], object]], repeats: int,
            sync: Callable[[], None] = lambda: None) -> dict[str, dict[str, float]]:
    """Interleaved timing: one call of each case per round, after one warm-up call each.
    Wall time (median, min), the process's CPU time and minor page faults (medians) per
    case."""
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    faults: dict[str, list[int]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start_cpu = time.process_time()
            start_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            times[name].append(timed(fn, sync))
            cpu[name].append(time.process_time() - start_cpu)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                - start_faults)
    return {name: {"median_s": statistics.median(t), "min_s": min(t),
                   "median_cpu_s": statistics.median(cpu[name]),
                   "median_minor_faults": statistics.median(faults[name]), "repeats": len(t)}
            for name, t in times.items()}


def batched_comparison(images: torch.Tensor, masks: torch.Tensor, device: torch.device,
                       n_erase: tuple[int, int], repeats: int,
                       sync: Callable[[], None]) -> dict[str, object]:
    """Comparison 1: ``erase_batch`` (and in place) vs the two per-sample loops (on the CPU,
    as in a Dataset), and the speed-up over each."""
    dev_images, dev_masks = images.to(device), masks.to(device)
    own_batch = dev_images.clone()
    dev_g = torch.Generator(device=device).manual_seed(0)
    options = {"p": 1.0, "n_erase": n_erase, "fill": "random", "generator": dev_g}
    cases = {
        "reference_loop": lambda: reference_loop(images, masks, n_erase),
        "lean_loop": lambda: lean_loop(images, masks, n_erase),
        "erase_batch": lambda: erase_batch(dev_images, dev_masks, **options),
        "erase_batch_inplace": lambda: erase_batch(own_batch, dev_masks, inplace=True, **options),
    }
    if device.type != "cpu":
        cases["reference_loop_on_device"] = lambda: reference_loop(dev_images, dev_masks, n_erase)
    batched: dict[str, object] = compare(cases, repeats, sync)
    ours = ("erase_batch", "erase_batch_inplace")
    for name in sorted(cases.keys() - set(ours)):
        batched[f"speedup_vs_{name}"] = (batched[name]["median_s"]
                                         / batched["erase_batch"]["median_s"])
        batched[f"inplace_speedup_vs_{name}"] = (batched[name]["median_s"]
                                                 / batched["erase_batch_inplace"]["median_s"])
    return batched


def batched_in_child(allocator: str) -> dict[str, object]:
    """Comparison 1 in a fresh process, same args, under one allocator setting: ``env`` (the
    variables of reference §8), ``run-time`` (:func:`keep_freed_memory`, what the commands do)
    or ``none`` (glibc's default)."""
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARS}
    if allocator == "env":
        env.update(ALLOCATOR_SETTING)
    args = [a for a in sys.argv[1:] if a not in ("--allocator", "both")]
    if "--json" in args:
        del args[args.index("--json"):args.index("--json") + 2]
    if allocator == "run-time":
        args.append("--keep-freed-memory")
    run = subprocess.run([sys.executable, "-m", "benchmarks.bench_fserasing", *args,
                          "--only-batched"], env=env, capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def training_step_model(device: torch.device, network: str = "iresnet34", **kwargs
                        ) -> tuple[nn.Module, str]:
    try:
        import recognition
        model = recognition.create_backbone(network, **kwargs)
        options = "".join(f", {k}={v}" for k, v in kwargs.items())
        name = f"recognition.create_backbone({network!r}{options})"
    except (ImportError, AttributeError):
        import torchvision
        model = torchvision.models.resnet34(num_classes=512)
        name = "torchvision resnet34 (stand-in: recognition.create_backbone not available)"
    return model.to(device), name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--n-erase", type=int, nargs=2, default=(1, 3), metavar=("LO", "HI"))
    parser.add_argument("--repeats", type=int, default=7, help="rounds of the batched comparison")
    parser.add_argument("--per-image", type=int, default=300, help="images for comparison 2")
    parser.add_argument("--steps", type=int, default=2, help="timed training steps (1 warm-up)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-step", action="store_true", help="skip comparison 3")
    parser.add_argument("--network", default="iresnet34", help="backbone of comparison 3")
    parser.add_argument("--fp16", action="store_true",
                        help="comparison 3 in mixed precision (CUDA: float16 + GradScaler)")
    parser.add_argument("--channels-last", action="store_true", help="comparison 3")
    parser.add_argument("--allocator", choices=("inherit", "both"), default="inherit",
                        help="both: comparison 1 again in child processes with and without "
                             "the allocator setting of reference §8")
    parser.add_argument("--only-batched", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.keep_freed_memory:
        keep_freed_memory()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    n_erase = tuple(args.n_erase)
    masks = face_like_masks(args.batch, args.size, g)
    images = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    results: dict[str, object] = {
        "batch": args.batch, "size": args.size, "n_erase": n_erase, "threads": args.threads,
        "device": str(device), "torch": torch.__version__, "machine": platform.processor(),
        "allocator": {k: os.environ.get(k) for k in ALLOCATOR_VARS},
        "erased_fraction": None,
    }
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)

    # 1. batched vs per-sample loops (the loops run on the CPU, as in a Dataset)
    dev_images, dev_masks = images.to(device), masks.to(device)
    options = {"p": 1.0, "n_erase": n_erase, "fill": "random",
               "generator": torch.Generator(device=device).manual_seed(0)}
    erased = erase_batch(dev_images, dev_masks, **options)
    results["erased_fraction"] = float((erased != dev_images).any(1).float().mean())
    results["batched"] = batched_comparison(images, masks, device, n_erase, args.repeats, sync)
    if args.only_batched:
        print(json.dumps(results["batched"]))
        return
    if args.allocator == "both":
        results["batched_by_allocator"] = {
            "with_setting": batched_in_child("env"), "without_setting": batched_in_child("none"),
            "run_time_setting": batched_in_child("run-time")}

    # 2. per image, one thread (as in DataLoader workers)
    torch.set_num_threads(1)
    pairs = [(tv_tensors.Image(images[i % args.batch]), tv_tensors.Mask(masks[i % args.batch]))
             for i in range(args.per_image)]
    fse = FSErasing(p=1.0, n_erase=n_erase, fill="random")
    rand_erasing = v2.RandomErasing(p=1.0, value=0)
    per_image = compare({
        "FSErasing": lambda: [fse(im, m) for im, m in pairs],
        "RandomErasing": lambda: [rand_erasing(im) for im, _ in pairs],
    }, 5)
    for row in per_image.values():
        row["per_image_us"] = row.pop("median_s") / args.per_image * 1e6
        row["min_per_image_us"] = row.pop("min_s") / args.per_image * 1e6
    per_image["ratio_FSErasing_to_RandomErasing"] = (
        per_image["FSErasing"]["per_image_us"] / per_image["RandomErasing"]["per_image_us"])
    results["per_image"] = per_image
    torch.set_num_threads(args.threads)

    # 3. share of one training step
    if not args.skip_step:
        amp = args.fp16 and device.type == "cuda"
        model, name = training_step_model(device, args.network, **({"fp16": True} if amp else {}))
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        model.to(memory_format=memory_format)
        step_images = dev_images.contiguous(memory_format=memory_format)
        head = nn.Linear(512, 1000).to(device)
        opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp)
        labels = torch.randint(1000, (args.batch,), generator=g).to(device)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(head(model(step_images).float()), labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        step_times = [timed(step, sync) for _ in range(args.steps + 1)][1:]
        # a training loop holds one module (recognition.augment does): its class tables stay
        # on the device, where erase_batch builds a RegionEraser and copies them every call
        module = BatchFSErasing(**options)
        module(dev_images, dev_masks)
        erase_times = [timed(lambda: erase_batch(dev_images, dev_masks, **options), sync)
                       for _ in range(args.repeats)]
        module_times = [timed(lambda: module(dev_images, dev_masks), sync)
                        for _ in range(args.repeats)]
        step_s, erase_s = statistics.median(step_times), statistics.median(erase_times)
        module_s = statistics.median(module_times)
        results["training_step"] = {
            "model": name, "channels_last": args.channels_last, "step_s": step_s,
            "step_times_s": step_times,
            "erase_batch_s": erase_s, "share_of_step": erase_s / step_s,
            "BatchFSErasing_s": module_s, "module_share_of_step": module_s / step_s}

    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
