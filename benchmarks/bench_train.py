"""Training-loop overhead: ``recognition.train.Trainer`` vs a minimal hand-written loop.

Both train the same backbone with the same PartialFC ArcFace head, SGD and batch size, in
this one process. The baseline is the least a loop can do: forward, loss, backward, gradient
clipping (insightface's, which our loop also does), step, on a batch already in memory as a
normalised float tensor. Ours is the real loop: ``Trainer.loader`` decodes PNGs (and label
maps for FSErasing) of a ``parsing.synth`` folder, ``Trainer.optimize_step`` normalises, flips,
(erases), runs the step and the LR scheduler. Steps alternate between the two in rounds and
the medians of the step times (wall clock and process CPU time) are compared, as is the
median of the per-round ratios.

Run (allocator setting of reference §8):
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
    python benchmarks/bench_train.py --network iresnet18 --batch-size 16 --rounds 10 --steps 1

On a GPU (``--device cuda``) both loops run there, every timed step ends with
``torch.cuda.synchronize``, and ``--fp16`` (insightface's mixed precision: autocast body,
float32 head, ``GradScaler`` for float16), ``--channels-last`` and ``--workers`` (DataLoader
processes for our loop; the baseline needs none) make it the usual GPU setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parsing.synth import write_dataset  # noqa: E402
from recognition.backbones import create_backbone  # noqa: E402
from recognition.losses import CombinedMarginLoss, PartialFC  # noqa: E402
from recognition.training.config import TrainConfig  # noqa: E402
from recognition.training.trainer import Trainer  # noqa: E402


class MinimalLoop:
    """The hand-written baseline."""

    def __init__(self, network: str, num_classes: int, batch_size: int, lr: float,
                 device: torch.device | str = "cpu", amp_dtype: torch.dtype | None = None,
                 channels_last: bool = False) -> None:
        device = torch.device(device)
        torch.manual_seed(0)
        kwargs = {} if amp_dtype is None else {"fp16": True, "amp_dtype": amp_dtype}
        self.backbone = create_backbone(network, **kwargs).to(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.backbone.to(memory_format=memory_format)
        self.head = PartialFC(CombinedMarginLoss(64.0, 1.0, 0.5, 0.0), 512, num_classes).to(device)
        self.opt = torch.optim.SGD([{"params": self.backbone.parameters()},
                                    {"params": self.head.parameters()}],
                                   lr=lr, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.x = torch.randn(batch_size, 3, 112, 112).clamp(-1, 1).to(
            device, memory_format=memory_format)
        self.y = torch.randint(0, num_classes, (batch_size,)).to(device)

    def step(self) -> None:
        loss = self.head(self.backbone(self.x).float(), self.y)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)


class OurLoop:
    """``Trainer``'s loader + ``train_step``, restarted when an epoch runs out."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.trainer = Trainer(cfg)
        self.trainer.model.train()
        self.batches = iter(self.trainer.loader)

    def step(self) -> None:
        try:
            batch = next(self.batches)
        except StopIteration:
            self.batches = iter(self.trainer.loader)
            batch = next(self.batches)
        self.trainer.optimize_step(batch)


def timed(fn, sync=lambda: None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
    steadier of the two."""
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - wall, time.process_time() - cpu


def summary(base: list[tuple[float, float]], ours: list[tuple[float, float]], batch: int
            ) -> dict:
    out = {}
    for k, clock in enumerate(("wall", "cpu")):
        b = [t[k] for t in base]
        o = [t[k] for t in ours]
        out[clock] = {
            "baseline_samples_per_s": batch / statistics.median(b),
            "ours_samples_per_s": batch / statistics.median(o),
            "ratio_of_medians": statistics.median(b) / statistics.median(o),
            "median_paired_ratio": statistics.median(x / y for x, y in zip(b, o, strict=True)),
            "baseline_step_s": [round(t, 3) for t in b],
            "ours_step_s": [round(t, 3) for t in o],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", default="iresnet18")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="steps per loop per round")
    ap.add_argument("--augs", default="none,fserasing")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--fp16", action="store_true", help="mixed precision (CUDA), both loops")
    ap.add_argument("--amp-dtype", choices=("float16", "bfloat16"), default="float16")
    ap.add_argument("--channels-last", action="store_true", help="both loops")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of our loop")
    ap.add_argument("--identities", type=int, default=64, help="synthetic identities (x4 faces)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    amp_dtype = getattr(torch, args.amp_dtype) if args.fp16 and device.type == "cuda" else None
    if os.environ.get("MALLOC_MMAP_MAX_") != "0":
        print("note: MALLOC_MMAP_MAX_=0 etc. not set (reference §8); timings will be noisier",
              file=sys.stderr)
    results = {"network": args.network, "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "rounds": args.rounds,
               "steps_per_round": args.steps, "cpu_count": os.cpu_count(),
               "device": str(device), "torch": torch.__version__,
               "amp_dtype": None if amp_dtype is None else args.amp_dtype,
               "channels_last": args.channels_last, "workers": args.workers,
               "identities": args.identities}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "faces", args.identities, 4, seed=0,
                             workers=max(1, args.workers), progress=False)
        for aug in args.augs.split(","):
            cfg = TrainConfig(rec=str(data), network=args.network, batch_size=args.batch_size,
                              num_epoch=1, aug=aug, num_workers=args.workers,
                              output=str(Path(tmp) / aug), device=str(device),
                              fp16=amp_dtype is not None, amp_dtype=args.amp_dtype,
                              channels_last=args.channels_last,
                              fserasing={"p": 0.5, "n_erase": (1, 3)}, lr=0.01,
                              masks="labels" if aug == "fserasing" else None)
            ours = OurLoop(cfg)
            base = MinimalLoop(args.network, ours.trainer.num_classes, args.batch_size, 0.01,
                               device, amp_dtype, args.channels_last)
            for _ in range(1 if device.type == "cpu" else 3):  # warm-up (cuDNN autotuning)
                base.step(), ours.step()
            t_base, t_ours = [], []
            for _ in range(args.rounds):
                t_base += [timed(base.step, sync) for _ in range(args.steps)]
                t_ours += [timed(ours.step, sync) for _ in range(args.steps)]
            results[aug] = summary(t_base, t_ours, args.batch_size)
            for clock in ("wall", "cpu"):
                r = results[aug][clock]
                print(f"{aug} ({clock}): baseline {r['baseline_samples_per_s']:.2f} img/s, ours "
                      f"{r['ours_samples_per_s']:.2f} img/s, ratio {r['ratio_of_medians']:.3f} "
                      f"(median paired {r['median_paired_ratio']:.3f})", file=sys.stderr)
            del ours, base
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
