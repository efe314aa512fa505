"""The extension points: one Registry helper; each registry creates a toy entry registered in
the test by name and names its known entries when asked for an unknown one."""

import pytest
import torch
from torch import nn

import parsing
import recognition
from parsing.core.errors import InputError
from parsing.core.registry import Registry
from parsing.parser import models as parser_models
from recognition.backbones import registry as backbone_registry


@pytest.fixture
def scratch(monkeypatch):
    """Give a registry a private copy of its entries for this test."""

    def isolate(registry: Registry) -> Registry:
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        return registry

    return isolate


def test_registry_helper():
    reg: Registry = Registry("widget", "or 'w:<n>'")

    @reg.register
    def small(k: int = 1) -> int:
        return k

    reg.register("large")(lambda k=1: 10 * k)
    assert reg.names() == ["large", "small"] and reg.names("s*") == ["small"]
    assert reg.create("small", 3) == 3 and reg.create("large", k=2) == 20
    assert "small" in reg and "tiny" not in reg
    with pytest.raises(InputError, match=r"unknown widget 'tiny'; known: large, small, or 'w:<n>'"):
        reg.create("tiny")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("small")(len)


def test_backbone_registry(scratch):
    scratch(backbone_registry._BACKBONES)

    @recognition.register_backbone
    def toy_backbone(num_features: int = 8) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_features))

    assert "toy_backbone" in recognition.list_backbones("toy*")
    model = recognition.create_backbone("toy_backbone", num_features=4)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(InputError, match="unknown backbone 'toy'; known: .*toy_backbone"):
        recognition.create_backbone("toy")


def test_parser_model_registry(scratch):
    scratch(parser_models._MODELS)

    @parser_models.register_model("toy_parser")
    def toy_parser(num_classes: int = 25) -> nn.Module:
        return nn.Conv2d(3, num_classes, 1)

    assert parser_models.list_models("toy*") == ["toy_parser"]
    model = parsing.create_model("toy_parser", num_classes=3)
    assert model(torch.zeros(1, 3, 4, 4)).shape == (1, 3, 4, 4)
    with pytest.raises(InputError, match="unknown model 'toy'; known: .*toy_parser.*unet_timm:"):
        parsing.create_model("toy")


def test_augmentation_registry(scratch):
    from fserasing import augment

    scratch(augment._AUGMENTATIONS)

    @augment.register_augmentation("toy-invert")
    class ToyInvert(nn.Module):
        def __init__(self, scale: float = 1.0):
            super().__init__()
            self.scale = scale

        def forward(self, images, generator=None):
            return -self.scale * images

    assert "toy-invert" in augment.list_augmentations("toy*")
    assert isinstance(augment.create_augmentation("toy-invert", scale=2.0), ToyInvert)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = augment.BatchAugment("toy-invert", flip=False, options={"scale": 2.0})(images)
    torch.testing.assert_close(out, -2.0 * (images.float() / 127.5 - 1))
    with pytest.raises(InputError, match="unknown augmentation 'toy'; known: .*cutout.*toy-invert"):
        augment.BatchAugment("toy")
    from recognition.train import build_arg_parser

    action = next(a for a in build_arg_parser()._actions if a.dest == "aug")
    assert list(action.choices) == augment.list_augmentations()


def test_fill_mode_registry(scratch):
    from fserasing import FillMode, erase_batch, erasing, list_fill_modes, register_fill_mode

    scratch(erasing._FILLS)

    @register_fill_mode("toy_colour")
    class ToyColour(FillMode):
        """One N(0, 1) value per image, drawn after the region."""

        def draw(self, erasure, masks, generator):
            erasure.colours = torch.randn(masks.shape[0], 1, 1, generator=generator)

        def apply(self, images, masks, erasure, eraser, inplace=False):
            value = erasure.colours.view(-1, 1, 1, 1).expand_as(images)
            return torch.where(erasure.region[:, None], value, images,
                               out=images if inplace else None)

    assert list_fill_modes("toy*") == ["toy_colour"]
    masks = torch.zeros(3, 8, 8, dtype=torch.uint8)
    masks[:, 2:5, 2:6] = 10  # nose
    out = erase_batch(torch.zeros(3, 3, 8, 8), masks, p=1.0, n_erase=["nose"],
                      fill="toy_colour", generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.rand(3, generator=g)  # the eraser's own draw: which images are erased
    colours = torch.randn(3, generator=g)
    expected = torch.where(masks[:, None] == 10, colours.view(-1, 1, 1, 1), 0.0)
    torch.testing.assert_close(out, expected.expand(3, 3, 8, 8))
    with pytest.raises(InputError, match="unknown fill 'toy'; known: .*random_mix.*toy_colour"):
        erase_batch(torch.zeros(1, 3, 8, 8), masks[:1], fill="toy")


def test_explainer_registry(scratch):
    import cam
    from cam.base import _EXPLAINERS, Explainer, Explanation

    scratch(_EXPLAINERS)

    @cam.register_explainer("toy_cam")
    class ToyCAM(Explainer):
        """The mean image intensity as the map."""

        def __init__(self, model, scale: float = 1.0):
            super().__init__(model)
            self.scale = scale

        def _explain(self, images, target):
            maps = self.scale * images.mean(1)
            return Explanation(maps, maps, maps.flatten(1).mean(1))

    assert cam.list_explainers("toy*") == ["toy_cam"]
    assert {"fscam", "gradcam", "groupcam", "rise"} <= set(cam.list_explainers())
    explainer = cam.create_explainer("toy_cam", nn.Identity(), scale=2.0)
    assert isinstance(explainer, ToyCAM)
    images = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(explainer.explain(images, 0).raw, 2.0 * images.mean(1))
    gradcam = cam.create_explainer("gradcam", nn.Sequential(nn.Conv2d(3, 2, 3)), target_layer="0")
    assert isinstance(gradcam, cam.GradCAM)
    with pytest.raises(InputError, match="unknown explainer 'toy'; known: .*rise, toy_cam"):
        cam.create_explainer("toy", nn.Identity())


def test_parsing_data_kind_registry(scratch, tmp_path):
    from parsing.parser import data

    scratch(data._DATA_KINDS)

    @data.register_data_kind("toy", has_split=lambda path: (path / "split").is_file())
    def open_toy(path, split, *, labels, transform, skip_bad, align, size):
        return [split] * 4

    assert data.list_data_kinds("t*") == ["toy"]
    assert data.build_dataset(f"toy:{tmp_path}", "all") == ["all"] * 4
    assert len(data.build_dataset(f"toy:{tmp_path}", "train", val_fraction=0.25)) == 3
    (tmp_path / "split").touch()
    assert data.build_dataset(f"toy:{tmp_path}", "val") == ["val"] * 4
    with pytest.raises(InputError, match="unknown kind 'toyy'; use one of .*folder, synth, toy"):
        data.build_dataset(f"toyy:{tmp_path}")


def test_face_dataset_registry(scratch, tmp_path):
    from recognition.data import datasets

    scratch(datasets._FACE_DATASETS)

    @datasets.register_face_dataset("toy")
    class ToyFaces(datasets.FaceDataset):
        def __init__(self, root, masks=None, skip_bad=False, size=112, num_classes=None):
            super().__init__(masks, skip_bad, size)
            self.root, self.keys = root, ["a", "b"]
            self.labels, self.num_classes = torch.tensor([0, 1]), 2
            self._widen_classes(num_classes, root)

        @staticmethod
        def detect(path):
            return (path / "toy.txt").is_file()

        def _read(self, index):
            return {"image": torch.zeros(3, 4, 4, dtype=torch.uint8),
                    "label": int(self.labels[index])}

    assert "toy" in datasets.list_face_datasets()
    (tmp_path / "toy.txt").touch()
    ds = datasets.open_dataset(tmp_path, num_classes=5)
    assert isinstance(ds, ToyFaces) and ds.num_classes == 5 and ds[1]["label"] == 1
    assert isinstance(datasets.create_face_dataset("toy", tmp_path), ToyFaces)
    with pytest.raises(InputError, match="unknown dataset kind 'toyy'; known: .*synth, toy"):
        datasets.create_face_dataset("toyy", tmp_path)
