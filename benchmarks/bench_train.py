"""Training-loop overhead: ``recognition.train.Trainer`` vs a minimal hand-written loop.

Both train the same backbone with the same PartialFC ArcFace head, SGD and batch size, in
this one process. The baseline is the least a loop can do: forward, loss, backward, gradient
clipping (insightface's, which our loop also does), step, on a batch already in memory as a
normalised float tensor. Ours is the real loop: ``Trainer.loader`` decodes PNGs (and label
maps for FSErasing) of a ``parsing.synth`` folder, ``Trainer.train_step`` normalises, flips,
(erases), runs the step and the LR scheduler. Steps alternate between the two in rounds and
the medians of the step times (wall clock and process CPU time) are compared, as is the
median of the per-round ratios.

Run (allocator setting of SPEC §8):
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
    python benchmarks/bench_train.py --network iresnet18 --batch-size 16 --rounds 10 --steps 1
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
from recognition.config import TrainConfig  # noqa: E402
from recognition.losses import CombinedMarginLoss, PartialFC  # noqa: E402
from recognition.train import Trainer  # noqa: E402


class MinimalLoop:
    """The hand-written baseline."""

    def __init__(self, network: str, num_classes: int, batch_size: int, lr: float) -> None:
        torch.manual_seed(0)
        self.backbone = create_backbone(network)
        self.head = PartialFC(CombinedMarginLoss(64.0, 1.0, 0.5, 0.0), 512, num_classes)
        self.opt = torch.optim.SGD([{"params": self.backbone.parameters()},
                                    {"params": self.head.parameters()}],
                                   lr=lr, momentum=0.9, weight_decay=5e-4)
        self.x = torch.randn(batch_size, 3, 112, 112).clamp(-1, 1)
        self.y = torch.randint(0, num_classes, (batch_size,))

    def step(self) -> None:
        loss = self.head(self.backbone(self.x), self.y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.backbone.parameters(), 5.0)
        self.opt.step()
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
        self.trainer.train_step(batch)


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the
    steadier of the two."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
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
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if os.environ.get("MALLOC_MMAP_MAX_") != "0":
        print("note: MALLOC_MMAP_MAX_=0 etc. not set (SPEC §8); timings will be noisier",
              file=sys.stderr)
    results = {"network": args.network, "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "rounds": args.rounds,
               "steps_per_round": args.steps, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_dataset(Path(tmp) / "faces", 64, 4, seed=0, workers=1, progress=False)
        for aug in args.augs.split(","):
            cfg = TrainConfig(rec=str(data), network=args.network, batch_size=args.batch_size,
                              num_epoch=1, aug=aug, num_workers=0, output=str(Path(tmp) / aug),
                              fserasing={"p": 0.5, "n_erase": (1, 3)}, lr=0.01,
                              masks="labels" if aug == "fserasing" else None)
            ours = OurLoop(cfg)
            base = MinimalLoop(args.network, ours.trainer.num_classes, args.batch_size, 0.01)
            base.step(), ours.step()  # warm-up
            t_base, t_ours = [], []
            for _ in range(args.rounds):
                t_base += [timed(base.step) for _ in range(args.steps)]
                t_ours += [timed(ours.step) for _ in range(args.steps)]
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
