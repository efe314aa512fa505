import numpy as np
import pytest
import torch
from parsing_fixtures import write_synth_layout
from PIL import Image
from torchvision import tv_tensors

from parsing.core.align import ARCFACE_TEMPLATE, align_face
from parsing.core.errors import DataError, InputError
from parsing.core.io import write_label_map
from parsing.core.labels import CELEBAMASK_BISENET, CELEBAMASK_FARL, CELEBAMASK_OFFICIAL, FSE25
from parsing.core.samples import BadSample
from parsing.parser.data import (
    CELEBAMASK_PARTS,
    CelebAMaskHQ,
    FaceSynthetics,
    FolderDataset,
    build_dataset,
    collate,
    count_labels,
    parse_data_spec,
    split_indices,
    train_transform,
)


def _landmarks70(scale: float, shift: tuple[float, float]) -> np.ndarray:
    """70 points whose ArcFace five points are the template scaled and shifted."""
    pts = np.zeros((70, 2))
    t = ARCFACE_TEMPLATE.numpy() * scale + np.asarray(shift)
    pts[[36, 39]] = t[0]
    pts[[42, 45]] = t[1]
    pts[30], pts[48], pts[54] = t[2], t[3], t[4]
    return pts


@pytest.fixture
def facesynthetics(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "fs"
    (root / "labels_25").mkdir(parents=True)
    written = {}
    for i in range(4):
        img = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        seg19 = rng.integers(0, 19, (64, 64)).astype(np.uint8)
        seg19[:2] = 255  # FaceSynthetics' ignore value
        seg25 = rng.integers(0, 25, (64, 64)).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i:06d}.png")
        write_label_map(root / f"{i:06d}_seg.png", seg19)
        np.savetxt(root / f"{i:06d}_ldmks.txt", _landmarks70(0.5, (4.0, 6.0)), fmt="%.4f")
        if i != 2:
            write_label_map(root / "labels_25" / f"{i:06d}_seg.png", seg25)
        written[i] = (img, seg19, seg25)
    (root / "anno_list.csv").write_text("frame_id,with_25\n0,1\n1,True\n2,0\n3,1\n")
    return root, written


def test_facesynthetics_fse25_reads_labelled_frames_only(facesynthetics):
    root, written = facesynthetics
    ds = FaceSynthetics(root, labels="fse25")
    assert ds.samples == [0, 1, 3] and len(ds) == 3
    image, label_map = ds[2]["image"], ds[2]["mask"]
    assert set(ds[2]) == {"image", "mask"}
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert np.array_equal(image.permute(1, 2, 0).numpy(), written[3][0])
    assert np.array_equal(label_map.numpy(), written[3][2])


def test_facesynthetics_own_classes(facesynthetics):
    root, written = facesynthetics
    ds = FaceSynthetics(root, labels="facesynthetics")
    assert len(ds) == 4
    assert np.array_equal(ds[2]["mask"].numpy(), written[2][1])  # 255 kept as ignore


def test_facesynthetics_align_matches_align_face(facesynthetics):
    root, written = facesynthetics
    ds = FaceSynthetics(root, labels="fse25", align=True, size=112)
    image, label_map = ds[0]["image"], ds[0]["mask"]
    pts = torch.tensor(ARCFACE_TEMPLATE.numpy() * 0.5 + np.array([4.0, 6.0]))
    src = torch.from_numpy(written[0][0]).permute(2, 0, 1)
    ref = align_face(src, pts)  # the file holds the points to 4 decimals: off by <= 1 level
    assert (image.int() - ref.int()).abs().max() <= 1
    assert image.shape == (3, 112, 112) and label_map.shape == (112, 112)
    # scale 0.5 -> the aligned face is the source magnified 2x: nearest-neighbour labels
    seg = torch.from_numpy(written[0][2])
    assert set(label_map.unique().tolist()) <= set(seg.unique().tolist())
    # even output pixels map onto source pixel centres (x = x'/2 + 4): no rounding ties there
    ys, xs = torch.meshgrid(torch.arange(0, 112, 2), torch.arange(0, 112, 2), indexing="ij")
    assert torch.equal(label_map[ys, xs], seg[ys // 2 + 6, xs // 2 + 4])


def test_facesynthetics_missing_label_names_file(facesynthetics):
    root, _ = facesynthetics
    (root / "labels_25" / "000001_seg.png").unlink()
    ds = FaceSynthetics(root, labels="fse25")
    with pytest.raises(DataError, match="000001_seg.png"):
        ds[1]
    ds.skip_bad = True
    assert isinstance(ds[1], BadSample) and "000001_seg.png" in ds[1].error
    with pytest.raises(DataError, match="anno_list.csv"):
        FaceSynthetics(root / "labels_25", labels="fse25")


def _write_celebamask(root, parts_by_idx, mask_size=16, image_size=32):
    (root / "CelebA-HQ-img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for idx, parts in parts_by_idx.items():
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)).save(
            root / "CelebA-HQ-img" / f"{idx}.jpg")
        folder = root / "CelebAMask-HQ-mask-anno" / str(idx // 2000)
        folder.mkdir(parents=True, exist_ok=True)
        for n, (part, box) in enumerate(parts.items()):
            m = np.zeros((mask_size, mask_size), dtype=np.uint8)
            y0, y1, x0, x1 = box
            m[y0:y1, x0:x1] = 255
            # the published masks are 3-channel 0/255 PNGs; some tools save them grey
            im = Image.fromarray(np.stack([m] * 3, -1)) if n % 2 else Image.fromarray(m)
            im.save(folder / f"{idx:05d}_{part}.png")


def test_celebamask_paints_parts_in_official_order(tmp_path):
    parts = {  # written in a scrambled order: painting order must not depend on it
        "hair": (0, 4, 0, 16), "skin": (2, 14, 2, 14), "nose": (6, 9, 6, 9),
        "hat": (0, 2, 0, 16), "neck_l": (12, 14, 4, 12), "neck": (12, 16, 6, 10),
        "cloth": (15, 16, 0, 16), "l_eye": (4, 6, 3, 5), "eye_g": (4, 7, 2, 14),
    }
    _write_celebamask(tmp_path, {2001: parts})
    ds = CelebAMaskHQ(tmp_path, split="all")
    image, label_map = ds[0]["image"], ds[0]["mask"]
    assert image.shape == (3, 16, 16)  # resized to the masks' size
    expected = np.zeros((16, 16), dtype=np.uint8)
    for part_id, part in enumerate(CELEBAMASK_PARTS, start=1):
        if part in parts:
            y0, y1, x0, x1 = parts[part]
            expected[y0:y1, x0:x1] = part_id
    assert np.array_equal(label_map.numpy(), expected)
    off = CELEBAMASK_OFFICIAL
    assert label_map[0, 0] == off.id("hat") and label_map[3, 0] == off.id("hair")
    assert label_map[3, 5] == off.id("hair")  # hair (13) over skin (1)
    assert label_map[4, 3] == off.id("l_eye")  # l_eye (4) over eye_g (3)
    assert label_map[6, 3] == off.id("eye_g")
    assert label_map[13, 7] == off.id("neck")  # neck (17) painted after necklace (16)
    assert label_map[13, 5] == off.id("neck_l")
    for order in (CELEBAMASK_BISENET, CELEBAMASK_FARL):
        other = CelebAMaskHQ(tmp_path, split="all", labels=order.key)[0]["mask"]
        names = np.array(order.names)[other.numpy()]
        assert (names == np.array(off.names)[expected]).all()


def test_celebamask_official_split(tmp_path):
    parts = {"skin": (0, 16, 0, 16)}
    _write_celebamask(tmp_path, dict.fromkeys(range(6), parts))
    origs = [5, 162771, 162772, 182637, 182638, 202599]  # 1-based CelebA file numbers
    (tmp_path / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx         orig_idx  orig_file\n" + "".join(
            f"{i:<12d}{o - 1:<10d}{o:06d}.jpg\n" for i, o in enumerate(origs)))
    partition = {5: 0, 162771: 0, 162772: 1, 182637: 1, 182638: 2, 202599: 2}
    (tmp_path / "list_eval_partition.txt").write_text(
        "".join(f"{o:06d}.jpg {p}\n" for o, p in sorted(partition.items())) + "000001.jpg 0\n")
    splits = {s: CelebAMaskHQ(tmp_path, split=s).samples for s in ("train", "val", "test")}
    assert splits == {"train": [0, 1], "val": [2, 3], "test": [4, 5]}
    # Kaggle's CSV version of the partition list works too
    (tmp_path / "list_eval_partition.txt").unlink()
    (tmp_path / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{o:06d}.jpg,{p}\n" for o, p in partition.items()))
    assert CelebAMaskHQ(tmp_path, split="val").samples == [2, 3]
    assert build_dataset(f"celebamask:{tmp_path}", "test", "celebamask_official").samples == [4, 5]
    (tmp_path / "list_eval_partition.csv").unlink()
    with pytest.raises(DataError, match="list_eval_partition"):
        CelebAMaskHQ(tmp_path, split="train")


def test_folder_layout_with_lists(tmp_path):
    rng = np.random.default_rng(0)
    for rel in ("a/x", "a/y", "b"):
        (tmp_path / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"{rel}.png")
        write_label_map(tmp_path / "labels" / f"{rel}.png", np.full((8, 8), len(rel), np.uint8))
    (tmp_path / "train.txt").write_text("a/x\na/y.png\n")
    (tmp_path / "val.txt").write_text("b\n")
    train = FolderDataset(tmp_path, split="train")
    assert len(train) == 2 and int(train[1]["mask"][0, 0]) == 3
    assert len(FolderDataset(tmp_path, split="all")) == 3
    assert int(build_dataset(f"folder:{tmp_path}", "val")[0]["mask"][0, 0]) == 1
    write_label_map(tmp_path / "labels" / "b.png", np.full((8, 8), 40, np.uint8))
    with pytest.raises(DataError, match=r"labels/b.png.*outside fse25"):
        FolderDataset(tmp_path, split="val")[0]


def test_synth_layout_split_and_corrupt_file(tmp_path):
    root = write_synth_layout(tmp_path / "synth", 10, failed=(4,))
    ds = build_dataset(f"synth:{root}", "all")
    assert len(ds) == 9
    train = build_dataset(f"synth:{root}", "train", val_fraction=0.3, seed=1)
    val = build_dataset(f"synth:{root}", "val", val_fraction=0.3, seed=1)
    assert len(train) == 6 and len(val) == 3
    assert not set(train.indices) & set(val.indices)
    assert split_indices(9, 0.3, 1) == (train.indices, val.indices)
    (root / "images" / "000003.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="000003.png"):
        ds[3]
    skipping = build_dataset(f"synth:{root}", "all", skip_bad=True)
    batch = collate([skipping[i] for i in range(5)])
    assert batch["image"].shape[0] == 4 and batch["mask"].shape == (4, 32, 32)
    assert batch["skipped"] == 1 and "000003.png" in batch["errors"][0]
    counts = count_labels(skipping, 25)
    assert counts.sum() == 8 * 32 * 32


def test_data_spec_errors(tmp_path):
    assert parse_data_spec(f"synth:{tmp_path}").kind == "synth"
    for bad, msg in [("synth", "KIND:PATH"), (f"imagenet:{tmp_path}", "unknown kind"),
                     (f"synth:{tmp_path}/nope", "not a directory")]:
        with pytest.raises(InputError, match=msg):
            parse_data_spec(bad)
    root = write_synth_layout(tmp_path / "s", 3)
    with pytest.raises(InputError, match="no test split"):
        build_dataset(f"synth:{root}", "test")


def test_train_transform_keeps_label_ids_and_swaps_sides():
    torch.manual_seed(0)
    label_map = torch.zeros(32, 32, dtype=torch.uint8)
    label_map[8:24, 2:10] = FSE25.id("right_cheek")
    label_map[8:24, 22:30] = FSE25.id("left_eye")
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tf = train_transform("fse25")
    seen_flip = False
    for _ in range(12):
        x, y = tf(tv_tensors.Image(image), tv_tensors.Mask(label_map))
        assert x.dtype == torch.float32 and x.min() >= -1.0 and x.max() <= 1.0
        assert y.dtype == torch.int64
        assert set(y.unique().tolist()) <= {0, 1, 2, 11, 12}  # nearest: no blended ids
        left_half = y[:, :16]
        if (left_half == FSE25.id("left_eye")).any() or (left_half == FSE25.id("right_eye")).any():
            # after a flip the eye on the image-left must be called the subject's right eye
            assert not (left_half == FSE25.id("left_eye")).any()
            seen_flip = True
    assert seen_flip
