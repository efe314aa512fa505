"""Parser inference throughput vs segmentation_models_pytorch, and vs an IResNet-34 train step.

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
        .venv/bin/python benchmarks/bench_parsing.py --batch 64 --repeats 5

1. Inference (eval, no grad) at 112x112: ``smp.Unet("resnet18", encoder_weights=None)`` beside
   our ``unet_r18`` as built, with channels_last, with BatchNorm folded into the convs (what
   ``Parser.from_checkpoint`` runs), both, and three lighter options on top of both: smp's
   16-channel last decoder stage, and encoder widths 48 and 32. Runs are interleaved in one
   process; the median per batch is reported, with time ratios to smp (< 1 = faster than
   smp) and multiply-accumulates.
2. One IResNet-34 training step (forward, backward, SGD; a 1000-way linear head + CE) at the
   same batch, from ``recognition.create_backbone`` when that package is installed: the
   ratio says whether masks can be computed on the fly during recognition training.

``--device cuda`` runs both on the GPU (every timed call ends with ``torch.cuda.synchronize``);
``--amp bf16|fp16`` runs every model, ours and smp alike, and the training step under
``torch.autocast`` (fp16 training with a ``GradScaler``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from parsing.parser.models import create_model, fuse_batchnorm


def gmacs_per_image(model: torch.nn.Module, size: int, device: torch.device) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size, device=device))
    return counter.get_total_flops() / 2e9


def interleaved_times(fns: dict, repeats: int, sync: Callable[[], None] = lambda: None
                      ) -> dict[str, dict[str, float]]:
    """Median wall and process-CPU seconds per call of each fn (``{"wall", "cpu"}``), runs
    interleaved so load changes hit all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return {k: {"wall": statistics.median(w for w, _ in v),
                "cpu": statistics.median(c for _, c in v)} for k, v in times.items()}


def interleaved(fns: dict, repeats: int, sync: Callable[[], None] = lambda: None
                ) -> dict[str, float]:
    """Median wall seconds per call of each fn (:func:`interleaved_times`)."""
    return {k: t["wall"] for k, t in interleaved_times(fns, repeats, sync).items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none",
                   help="autocast dtype for every model (default: none, float32)")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args()
    import segmentation_models_pytorch as smp

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def autocast():
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=amp_dtype)

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)

    def ours(channels_last: bool = False, fuse: bool = False, **kw) -> torch.nn.Module:
        model = create_model("unet_r18", num_classes=25, **kw).eval()
        model = fuse_batchnorm(model) if fuse else model
        model = model.to(device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    smp_unet = smp.Unet("resnet18", encoder_weights=None, classes=25).eval().to(device)
    models = {
        "smp_unet_resnet18": (smp_unet, x),
        "unet_r18": (ours(), x),
        "unet_r18_channels_last": (ours(channels_last=True), x_cl),
        "unet_r18_fused_bn": (ours(fuse=True), x),
        "unet_r18_fused_bn_channels_last": (ours(True, fuse=True), x_cl),
        "unet_r18_smp_decoder_fused_bn_channels_last": (
            ours(True, fuse=True, decoder_channels=(128, 64, 32, 16)), x_cl),
        "unet_r18_width48_fused_bn_channels_last": (ours(True, fuse=True, width=48), x_cl),
        "unet_r18_width32_fused_bn_channels_last": (ours(True, fuse=True, width=32), x_cl),
    }
    if device.type == "cuda":  # on a GPU channels-last is the usual first step for smp too
        models["smp_unet_resnet18_channels_last"] = (
            copy.deepcopy(smp_unet).to(memory_format=torch.channels_last), x_cl)

    def run(model, inp):
        def fn():
            with torch.inference_mode(), autocast():
                model(inp)
        return fn

    med = interleaved({k: run(m, i) for k, (m, i) in models.items()}, args.repeats, sync)
    base = med["smp_unet_resnet18"]
    result: dict = {
        "batch": args.batch, "size": args.size, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "device": str(device), "amp": args.amp,
        "torch": torch.__version__,
        **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}),
        "malloc_tuned": os.environ.get("MALLOC_MMAP_MAX_") == "0",
        "inference": {
            k: {"seconds_per_batch": round(t, 6), "images_per_second": round(args.batch / t, 1),
                "time_ratio_vs_smp": round(t / base, 3),
                "gmacs_per_image": round(gmacs_per_image(models[k][0], args.size, device), 3)}
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
        backbone = recognition.create_backbone("iresnet34").train().to(device)
        head = torch.nn.Linear(512, 1000).to(device)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
        scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        labels = torch.randint(0, 1000, (args.batch,)).to(device)
        parser = models["unet_r18_fused_bn_channels_last"][0]

        def train_step():
            with autocast():
                loss = torch.nn.functional.cross_entropy(head(backbone(x)), labels)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        med2 = interleaved({"iresnet34_train_step": train_step, "parse_batch": run(parser, x_cl)},
                           max(2, args.repeats // 2), sync)
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
