"""Every dataset keeps the sample contract of parsing.core.samples."""

import shutil

import torch

from fserasing import MaskedImageFolder
from parsing.core.samples import Sample
from parsing.parser.data import build_dataset, eval_transform
from parsing.synth import SynthFaces, write_dataset
from recognition.data.datasets import open_dataset

KEYS = set(Sample.__annotations__)


def _check(sample, keys, float_image=False):
    assert set(sample) == keys and keys <= KEYS
    h, w = sample["image"].shape[1:]
    assert sample["image"].shape == (3, h, w)
    assert sample["image"].dtype == (torch.float32 if float_image else torch.uint8)
    if "mask" in keys:
        assert sample["mask"].shape == (h, w)
        assert sample["mask"].dtype == (torch.int64 if float_image else torch.uint8)
    for key in ("label", "identity"):
        if key in keys:
            assert isinstance(sample[key], int)
    if "landmarks" in keys:
        assert sample["landmarks"].shape == (5, 2) and sample["landmarks"].dtype == torch.float32


def test_every_dataset_returns_the_documented_keys(tmp_path):
    root = write_dataset(tmp_path / "synth", 2, 2, seed=0, size=64, workers=1, progress=False)
    _check(SynthFaces(root)[0], {"image", "mask", "landmarks", "identity"})
    _check(build_dataset(f"synth:{root}")[1], {"image", "mask"})
    _check(build_dataset(f"synth:{root}", transform=eval_transform())[1], {"image", "mask"},
           float_image=True)
    _check(open_dataset(root, size=64)[2], {"image", "label"})
    _check(open_dataset(root, masks="labels", size=64)[2], {"image", "label", "mask"})
    folder, masks = tmp_path / "faces" / "a", tmp_path / "masks" / "a"
    folder.mkdir(parents=True)
    masks.mkdir(parents=True)
    shutil.copy(root / "images" / "000000.png", folder / "0.png")
    shutil.copy(root / "labels_25" / "000000_seg.png", masks / "0.png")
    _check(MaskedImageFolder(tmp_path / "faces", tmp_path / "masks")[0],
           {"image", "mask", "label"})
