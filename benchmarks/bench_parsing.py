"""Parser inference throughput vs segmentation_models_pytorch, and vs an IResNet-34 train step.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
        .venv/bin/python benchmarks/bench_parsing.py --batch 64 --repeats 5

1. Inference (eval, no grad) at 112x112: ``smp.Unet("resnet18", encoder_weights=None)`` beside
   our ``unet_r18`` as built, with channels_last, with BatchNorm folded into the convs (what
   ``Parser.from_checkpoint`` runs), and folded with smp's 16-channel last decoder stage.
   Runs are interleaved in one process; the median per batch is reported, with time ratios to
   smp (< 1 = faster than smp) and multiply-accumulates.
2. One IResNet-34 training step (forward, backward, SGD; a 1000-way linear head + CE) at the
   same batch, from ``recognition.create_backbone`` when that package is installed: the
   ratio says whether masks can be computed on the fly during recognition training.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from parsing.models import create_model, fuse_batchnorm


def gmacs_per_image(model: torch.nn.Module, size: int) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2e9


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, runs interleaved so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args()
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    ours = create_model("unet_r18", num_classes=25).eval()
    models = {
        "smp_unet_resnet18": (smp.Unet("resnet18", encoder_weights=None, classes=25).eval(), x),
        "unet_r18": (ours, x),
        "unet_r18_channels_last": (create_model("unet_r18", num_classes=25).eval()
                                   .to(memory_format=torch.channels_last), x_cl),
        "unet_r18_fused_bn": (fuse_batchnorm(create_model("unet_r18", num_classes=25)), x),
        "unet_r18_smp_decoder_fused_bn": (fuse_batchnorm(create_model(
            "unet_r18", num_classes=25, decoder_channels=(128, 64, 32, 16))), x),
    }

    def run(model, inp):
        def fn():
            with torch.inference_mode():
                model(inp)
        return fn

    med = interleaved({k: run(m, i) for k, (m, i) in models.items()}, args.repeats)
    base = med["smp_unet_resnet18"]
    result: dict = {
        "batch": args.batch, "size": args.size, "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "malloc_tuned": os.environ.get("MALLOC_MMAP_MAX_") == "0",
        "inference": {
            k: {"seconds_per_batch": round(t, 4), "images_per_second": round(args.batch / t, 1),
                "time_ratio_vs_smp": round(t / base, 3),
                "gmacs_per_image": round(gmacs_per_image(models[k][0], args.size), 3)}
            for k, t in med.items()
        },
    }

    try:
        import recognition
    except ImportError:
        recognition = None
    if recognition is None or not hasattr(recognition, "create_backbone"):
        result["iresnet34_train_step"] = "skipped: recognition.create_backbone is not available"
    else:
        backbone = recognition.create_backbone("iresnet34").train()
        head = torch.nn.Linear(512, 1000)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        labels = torch.randint(0, 1000, (args.batch,))
        parser = models["unet_r18_fused_bn"][0]

        def train_step():
            loss = torch.nn.functional.cross_entropy(head(backbone(x)), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        med2 = interleaved({"iresnet34_train_step": train_step, "parse_batch": run(parser, x)},
                           max(2, args.repeats // 2))
        result["iresnet34_train_step"] = {
            "train_step_seconds": round(med2["iresnet34_train_step"], 4),
            "parse_seconds": round(med2["parse_batch"], 4),
            "parse_to_train_step_ratio": round(med2["parse_batch"] / med2["iresnet34_train_step"],
                                               3),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
