"""CPU scale of the recognition backbones: inference ms/image and train-step seconds.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \
        .venv/bin/python benchmarks/bench_backbones.py --networks mbf iresnet18 iresnet34

For each network, side by side in this process (interleaved in rotating order, median):
our module in the default (contiguous) layout, the same module in ``channels_last``, and,
with ``--insightface-dir DIR`` (a checkout's ``recognition/arcface_torch/backbones``), the
insightface reference implementation with the same weights, as the no-overhead baseline.
A train step is forward + PartialFC ArcFace loss (1,000 classes) + backward + SGD step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import recognition
from recognition.losses import CombinedMarginLoss, PartialFC

ALLOCATOR_VARS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def load_insightface(directory: Path, network: str) -> nn.Module | None:
    """The reference model from an insightface checkout, or None if it has no such network."""
    if network.startswith("iresnet"):
        spec = importlib.util.spec_from_file_location("insightface_iresnet",
                                                      directory / "iresnet.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, network)()
    if network == "mbf":
        spec = importlib.util.spec_from_file_location("insightface_mbf",
                                                      directory / "mobilefacenet.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_mbf(False, 512)
    return None


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn(*args)``. With one thread on a shared machine
    the CPU time is the steadier figure: it leaves out time spent descheduled."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def forward(model: nn.Module, images: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        model(images)


def train_step(model: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
               images: torch.Tensor, labels: torch.Tensor) -> None:
    model.train()
    loss = head(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def bench_network(network: str, args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    ours = recognition.create_backbone(network)
    variants: dict[str, tuple[nn.Module, torch.memory_format]] = {
        "ours": (ours, torch.contiguous_format),
    }
    last = recognition.create_backbone(network).to(memory_format=torch.channels_last)
    last.load_state_dict(ours.state_dict())
    variants["ours_channels_last"] = (last, torch.channels_last)
    if args.insightface_dir is not None:
        reference = load_insightface(args.insightface_dir, network)
        if reference is not None:
            reference.load_state_dict(ours.state_dict())
            variants["insightface"] = (reference, torch.contiguous_format)

    images = torch.randn(args.batch, 3, 112, 112)
    labels = torch.randint(0, 1000, (args.batch,))
    setups = {}
    for name, (model, fmt) in variants.items():
        head = PartialFC(CombinedMarginLoss(64.0, 1.0, 0.5, 0.0), 512, 1000)
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        setups[name] = (model, head, torch.optim.SGD(params, lr=0.01, momentum=0.9),
                        images.contiguous(memory_format=fmt))

    timings = {name: {"forward": [], "train": []} for name in variants}
    order = list(setups)
    for step in range(args.steps + 1):  # step 0 warms up (allocator, oneDNN primitives)
        for name in order[step % len(order):] + order[:step % len(order)]:  # rotate: no bias
            model, head, optimizer, x = setups[name]
            fwd = timed(forward, model, x)
            train = timed(train_step, model, head, optimizer, x, labels)
            if step > 0:
                timings[name]["forward"].append(fwd)
                timings[name]["train"].append(train)
    result = {}
    for name, t in timings.items():
        wall_fwd, cpu_fwd = (statistics.median(v) for v in zip(*t["forward"], strict=True))
        wall_train, cpu_train = (statistics.median(v) for v in zip(*t["train"], strict=True))
        result[name] = {
            "forward_ms_per_image": 1000 * wall_fwd / args.batch,
            "forward_cpu_ms_per_image": 1000 * cpu_fwd / args.batch,
            "train_step_s": wall_train,
            "train_step_cpu_s": cpu_train,
        }
    for name in variants:
        if name != "ours":
            for key in ("forward_cpu_ms_per_image", "train_step_cpu_s"):
                result[name][f"{key.split('_')[0]}_cpu_ratio_ours_over_this"] = (
                    result["ours"][key] / result[name][key])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", default=["mbf", "iresnet18", "iresnet34"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--insightface-dir", type=Path, default=None,
                        help="insightface recognition/arcface_torch/backbones directory")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/backbones.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "torch": torch.__version__,
        "threads": args.threads,
        "batch": args.batch,
        "steps": args.steps,
        "allocator": {k: os.environ.get(k) for k in ALLOCATOR_VARS},
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "networks": {},
    }
    for network in args.networks:
        report["networks"][network] = bench_network(network, args)
        for name, r in report["networks"][network].items():
            ratios = "".join(f"  {k}={v:.3f}" for k, v in r.items() if "ratio" in k)
            print(f"{network:10s} {name:19s} forward {r['forward_ms_per_image']:6.1f} ms/image "
                  f"(cpu {r['forward_cpu_ms_per_image']:6.1f})  train step "
                  f"{r['train_step_s']:6.2f} s (cpu {r['train_step_cpu_s']:6.2f}){ratios}",
                  flush=True)
    report["load_average_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
