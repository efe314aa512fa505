"""The shared loop (parsing.core.training) with the least a trainer needs: a classifier."""

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import parsing.core.training as core_training
from parsing.core.config import Config
from parsing.core.errors import InputError
from parsing.core.io import load_checkpoint, read_model
from parsing.core.training import Trainer


@dataclass
class ToyConfig(Config):
    output: str = ""
    seed: int = 0
    batch_size: int = 4
    num_epoch: int = 3
    num_workers: int = 0
    device: str | None = "cpu"
    deterministic: bool = False  # True would switch torch to deterministic mode for the
    # whole test process; this model is deterministic on the CPU anyway


class Faces(Dataset):
    """20 samples of the contract's keys: image and label (3 classes)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8, generator=g)
        self.labels = torch.arange(20) % 3

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.labels[i])}


class ToyTrainer(Trainer):
    checkpoint_format = "tests.toy/1"
    log_every = 2

    def build_data(self):
        return Faces()

    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(192, 3))

    def build_optimizer(self):
        optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, core_training.PolyWarmup(self.total_steps, 2))

    def train_step(self, batch):
        noise = torch.rand(batch["image"].shape, generator=self.generator)  # augmentation
        logits = self.model(batch["image"].float() / 255 + noise * 0.1)
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return loss, {"accuracy": (logits.argmax(1) == batch["label"]).float().mean()}

    def validate(self):
        with torch.no_grad():
            data = self.dataset
            logits = self.model(data.images.float() / 255)
        return {"accuracy": float((logits.argmax(1) == data.labels).float().mean())}

    def model_info(self):
        return {"classes": ["a", "b", "c"]}


def _rows(run):
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_classifier_on_the_loop_resumes_exactly(tmp_path, monkeypatch):
    full = ToyTrainer(ToyConfig(output=str(tmp_path / "full")))
    summary = full.train()
    assert full.global_step == 15 and summary["skipped"] == 0
    for name in ("config.yaml", "checkpoint.pt", "model.pt", "model.json", "metrics.jsonl"):
        assert (tmp_path / "full" / name).is_file(), name
    weights, info, _ = read_model(tmp_path / "full")
    assert info == {"classes": ["a", "b", "c"], "epoch": 3, "global_step": 15}
    rows = _rows(tmp_path / "full")
    assert [r["step"] for r in rows if "loss" in r] == [2, 4, 5, 6, 8, 10, 12, 14, 15]
    assert [r["step"] for r in rows if "loss" not in r] == [5, 10, 15]  # validation
    assert all("accuracy" in r for r in rows)

    class Killed(Exception):
        pass

    real = core_training.atomic_save

    def save_then_die(obj, path):
        real(obj, path)
        if path.name == "checkpoint.pt" and obj["global_step"] == 7:
            raise Killed

    monkeypatch.setattr(core_training, "atomic_save", save_then_die)
    trainer = ToyTrainer(ToyConfig(output=str(tmp_path / "cut")))
    trainer.save_every_steps = 1
    with pytest.raises(Killed):
        trainer.train()
    monkeypatch.setattr(core_training, "atomic_save", real)
    resumed = ToyTrainer(ToyConfig(output=str(tmp_path / "cut")), resume_from=tmp_path / "cut")
    assert (resumed.epoch, resumed.step_in_epoch) == (1, 2)
    resumed.train()
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["ranks"][0]["rng"]["augment"], b["ranks"][0]["rng"]["augment"])
    assert _rows(tmp_path / "cut") == rows
    with pytest.raises(InputError, match="already holds a run"):
        ToyTrainer(ToyConfig(output=str(tmp_path / "cut")))
