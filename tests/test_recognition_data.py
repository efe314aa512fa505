import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from parsing.core.errors import DataError
from parsing.core.io import read_image, read_label_map, write_label_map
from parsing.synth import write_dataset
from recognition.data.datasets import ImageFolderFaces, SynthFaceSet, collate_faces, open_dataset
from recognition.data.recordio import write_recordio
from recognition.evaluation.validation import VerificationSet
from recognition.evaluation.verification import write_bin


def _image_folder(root, rng, names=("bob", "alice"), per=2):
    for name in names:
        (root / name).mkdir(parents=True)
        for k in range(per):
            arr = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"{k}.png")
    return root


def test_image_folder_labels_and_masks(tmp_path):
    rng = np.random.default_rng(0)
    root = _image_folder(tmp_path / "faces", rng)
    for p in root.rglob("*.png"):  # a parsing.predict-style mask folder: same relative path
        target = tmp_path / "masks" / p.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_label_map(target, rng.integers(0, 25, (112, 112)).astype(np.uint8))
    ds = ImageFolderFaces(root, masks=tmp_path / "masks")
    assert ds.num_classes == 2 and ds.labels.tolist() == [0, 0, 1, 1]  # alice, bob: sorted
    s = ds[3]
    assert s["image"].shape == (3, 112, 112) and s["image"].dtype == torch.uint8
    assert np.array_equal(s["mask"].numpy(), read_label_map(tmp_path / "masks/bob/1.png"))
    batch = collate_faces([ds[i] for i in range(4)])
    assert batch["mask"].shape == (4, 112, 112) and batch["skipped"] == 0
    write_label_map(tmp_path / "masks/bob/1.png", np.zeros((100, 112), np.uint8))
    with pytest.raises(DataError, match=r"bob/1.png: mask is \(100, 112\), image is"):
        ds[3]
    write_label_map(tmp_path / "masks/bob/1.png", np.full((112, 112), 30, np.uint8))
    with pytest.raises(DataError, match="outside fse25"):
        ds[3]
    (tmp_path / "masks/bob/1.png").unlink()
    with pytest.raises(DataError, match="1 of 4 images have no mask"):
        ImageFolderFaces(root, masks=tmp_path / "masks")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(root / "bob" / "0.png")
    (root / "alice" / "1.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="expected aligned 112x112"):
        ds[2]
    lenient = ImageFolderFaces(root, skip_bad=True)
    assert collate_faces([lenient[i] for i in range(4)])["skipped"] == 2


def test_recordio_with_mask_tensor_file(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(3)]
    write_recordio(tmp_path / "rec", [(torch.from_numpy(a).permute(2, 0, 1), lab)
                                       for a, lab in zip(images, [0, 1, 1], strict=True)])
    masks = torch.randint(0, 25, (3, 112, 112), dtype=torch.uint8)
    torch.save(masks, tmp_path / "masks.pt")
    ds = open_dataset(tmp_path / "rec", masks=tmp_path / "masks.pt")
    assert torch.equal(ds[2]["mask"], masks[2]) and ds[2]["label"] == 1
    torch.save(masks[:2], tmp_path / "short.pt")
    with pytest.raises(DataError, match="2 masks for 3 images"):
        open_dataset(tmp_path / "rec", masks=tmp_path / "short.pt")


def test_synth_set_labels_and_own_masks(tmp_path):
    root = write_dataset(tmp_path / "s", 3, 2, seed=0, workers=1, progress=False)
    ds = open_dataset(root, masks="labels")
    assert isinstance(ds, SynthFaceSet)
    assert ds.identities == [0, 1, 2] and ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert np.array_equal(ds[5]["mask"].numpy(),
                          read_label_map(root / "labels_25" / "000005_seg.png"))
    assert np.array_equal(ds[5]["image"].permute(1, 2, 0).numpy(),
                          read_image(root / "images" / "000005.png"))
    assert "mask" not in open_dataset(root)[0]
    predicted = tmp_path / "masks"  # parsing.predict --images root/images: same names, .png
    predicted.mkdir()
    for seg in (root / "labels_25").glob("*_seg.png"):
        shutil.copy(seg, predicted / seg.name.replace("_seg", ""))
    with_predicted = open_dataset(root, masks=predicted)
    assert torch.equal(with_predicted[5]["mask"], ds[5]["mask"])
    (root / "identities.csv").write_text("frame,who\n1,2\n")
    with pytest.raises(DataError, match="identities.csv"):
        SynthFaceSet(root)


def test_verification_sets_from_synth_and_bin(tmp_path):
    root = write_dataset(tmp_path / "v", 4, 3, seed=1, workers=1, progress=False)
    val = VerificationSet.from_target(f"synth:{root}")
    # 12 faces of 4 identities make 12 distinct genuine pairs: 20 pairs in 10 folds
    assert len(val) == 20 and int(val.issame.sum()) == 10 and val.name == "v"
    labels = SynthFaceSet(root).labels
    assert torch.equal(labels[val.first] == labels[val.second], val.issame)
    assert (val.first != val.second).all()
    # images that spell out their identity, and a backbone that reads it: a perfect embedding
    val.images = torch.zeros_like(val.images)
    val.images[torch.arange(len(labels)), 0, 0, 50 + labels] = 255
    reader = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 112 * 112, 8))
    with torch.no_grad():
        reader[1].weight.zero_()
        reader[1].bias.zero_()
        reader[1].weight[torch.arange(4), 50 + torch.arange(4)] = 1.0
    assert val.evaluate(reader)["accuracy"] == 1.0
    reader[1].weight.data.zero_()
    reader[1].bias.data.fill_(1.0)  # every face alike: chance level
    assert val.evaluate(reader)["accuracy"] <= 0.6
    # the same pairs written as a .bin give the same accuracy
    blobs = []
    for i in torch.stack([val.first, val.second], 1).flatten().tolist():
        buf = io.BytesIO()
        Image.fromarray(val.images[i].permute(1, 2, 0).numpy()).save(buf, "PNG")
        blobs.append(buf.getvalue())
    write_bin(tmp_path / "pairs.bin", blobs, val.issame.numpy())
    from_bin = VerificationSet.from_target(str(tmp_path / "pairs.bin"))
    assert from_bin.name == "pairs" and torch.equal(from_bin.issame, val.issame)
    with torch.no_grad():
        reader[1].weight[torch.arange(4), 50 + torch.arange(4)] = 1.0
    assert from_bin.evaluate(reader) == val.evaluate(reader)
