"""Training-loop overhead: ``recognition.train.Trainer`` vs a minimal hand-written loop.

Both train the same backbone with the same PartialFC ArcFace head, SGD and batch size, in
this one process. The baseline is the least a loop can do: forward, loss, backward, gradient
clipping (insightface's, which our loop also does), step, on a batch already in memory as a
normalised float tensor. Ours is the real loop: ``Trainer.loader`` decodes PNGs (and label
maps for FSErasing) from a synthetic folder, ``Trainer.train_step`` normalises, flips,
(erases), runs the step and the LR scheduler. Steps alternate between the two in rounds and
the medians of the step times are compared.

Run (allocator setting of SPEC §8):
  MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 MALLOC_TOP_PAD_=1073741824 \\
    python benchmarks/bench_train.py --network iresnet18 --batch-size 16 --rounds 5
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

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recognition.backbones import create_backbone  # noqa: E402
from recognition.config import TrainConfig  # noqa: E402
from recognition.losses import CombinedMarginLoss, PartialFC  # noqa: E402
from recognition.train import Trainer  # noqa: E402


def write_set(root: Path, identities: int, per_identity: int) -> Path:
    """Random 112x112 faces and FSE-25 label maps in the parsing.synth layout."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels_25").mkdir()
    rows = ["frame_id,identity"]
    for n in range(identities * per_identity):
        img = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{n:06d}.png")
        labels = np.kron(rng.integers(0, 25, (8, 8)), np.ones((14, 14))).astype(np.uint8)
        Image.fromarray(labels, mode="L").save(root / "labels_25" / f"{n:06d}_seg.png")
        rows.append(f"{n:06d},{n // per_identity}")
    (root / "identities.csv").write_text("\n".join(rows) + "\n")
    return root


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


def timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--network", default="iresnet18")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="steps per loop per round")
    ap.add_argument("--augs", default="none,fserasing")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if os.environ.get("MALLOC_MMAP_MAX_") != "0":
        print("note: MALLOC_MMAP_MAX_=0 etc. not set (SPEC §8); timings will be noisier",
              file=sys.stderr)
    results = {"network": args.network, "batch_size": args.batch_size,
               "threads": torch.get_num_threads(), "rounds": args.rounds,
               "steps_per_round": args.steps, "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_set(Path(tmp) / "faces", identities=64, per_identity=4)
        for aug in args.augs.split(","):
            cfg = TrainConfig(rec=str(data), network=args.network, batch_size=args.batch_size,
                              num_epoch=1, aug=aug, num_workers=0, output=str(Path(tmp) / aug),
                              fserasing={"p": 0.5, "n_erase": (1, 3)}, lr=0.01)
            ours = OurLoop(cfg)
            base = MinimalLoop(args.network, ours.trainer.num_classes, args.batch_size, 0.01)
            base.step(), ours.step()  # warm-up
            t_base, t_ours = [], []
            for _ in range(args.rounds):
                t_base += [timed(base.step) for _ in range(args.steps)]
                t_ours += [timed(ours.step) for _ in range(args.steps)]
            b, o = statistics.median(t_base), statistics.median(t_ours)
            results[aug] = {
                "baseline_samples_per_s": args.batch_size / b,
                "ours_samples_per_s": args.batch_size / o,
                "ratio": b / o,
                "baseline_step_s": [round(t, 3) for t in t_base],
                "ours_step_s": [round(t, 3) for t in t_ours],
            }
            print(f"{aug}: baseline {args.batch_size / b:.2f} img/s, ours "
                  f"{args.batch_size / o:.2f} img/s, ratio {b / o:.3f}", file=sys.stderr)
            del ours, base
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
