import json

import pytest

import parsing.train as train_mod
from parsing.synth import write_dataset


@pytest.mark.slow
def test_tiny_parser_learns_synthetic_faces(tmp_path):
    """56 CPU steps of a width-8 unet_r18 on 64x64 synthetic faces: mean F1 far above chance.

    Chance (labels drawn with the true class frequencies) gives a mean F1 near 0.03 here;
    a fully trained parser gives > 0.9 (benchmarks/RESULTS.md).
    """
    root = write_dataset(tmp_path / "synth", 12, 6, seed=0, size=64, workers=1, progress=False)
    out = tmp_path / "run"
    rc = train_mod.main(["--data", f"synth:{root}", "--out", str(out), "--width", "8",
                         "--epochs", "8", "--batch-size", "8", "--lr", "1e-2", "--augment", "flip",
                         "--val-split", "0.25", "--workers", "0", "--device", "cpu",
                         "--log-every", "7"])
    assert rc == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # one row per epoch of 7 steps
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0]
    best = max(r["mean_f1"] for r in rows if "mean_f1" in r)
    assert best > 0.2 and json.loads((out / "model.json").read_text())["val_mean_f1"] == best
