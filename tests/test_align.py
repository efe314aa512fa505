import numpy as np
import torch
from PIL import Image
from skimage import transform as sktf

from parsing.align import main
from parsing.core.align import ARCFACE_TEMPLATE, align_face, align_label_map
from parsing.core.io import read_image, read_label_map, write_label_map


def _landmarks(rng, scale, shift):
    return ARCFACE_TEMPLATE.numpy() * scale + shift + rng.normal(0, 1.0, (5, 2))


def test_align_label_map_matches_skimage_nearest():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 25, (10, 12)).astype(np.uint8)
    label_map = np.kron(blocks, np.ones((16, 16), dtype=np.uint8))  # 160 x 192
    pts = _landmarks(rng, 1.3, (20, 15))
    ours = align_label_map(torch.from_numpy(label_map), torch.from_numpy(pts)).numpy()
    tform = sktf.SimilarityTransform.from_estimate(pts, ARCFACE_TEMPLATE.numpy())
    ref = sktf.warp(label_map, tform.inverse, output_shape=(112, 112), order=0, mode="constant",
                    cval=0, preserve_range=True).astype(np.uint8)
    assert ours.dtype == np.uint8 and ours.shape == (112, 112)
    assert (ours != ref).mean() < 0.01  # only ties on block borders may round differently
    batch = align_label_map(torch.from_numpy(np.stack([label_map] * 2)),
                            torch.from_numpy(np.stack([pts] * 2)))
    assert torch.equal(batch[1], torch.from_numpy(ours))


def test_align_cli(tmp_path, capsys):
    rng = np.random.default_rng(1)
    (tmp_path / "img" / "sub").mkdir(parents=True)
    (tmp_path / "maps").mkdir()
    rows = ["frame_id,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"]
    expected = {}
    for n, (h, w) in enumerate([(150, 140), (150, 140), (200, 180)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        name = f"{n:06d}" if n < 2 else "sub/face"
        Image.fromarray(img).save(tmp_path / "img" / f"{name}.png")
        if n < 2:  # parsing.synth naming
            write_label_map(tmp_path / "maps" / f"{name}_seg.png",
                            rng.integers(0, 25, (h, w)).astype(np.uint8))
        pts = _landmarks(rng, 1.2, (10, 12))
        rows.append(",".join([str(n) if n < 2 else "sub/face.png", *map(str, pts.ravel())]))
        expected[name] = (img, pts)
    (tmp_path / "maps" / "sub").mkdir()
    write_label_map(tmp_path / "maps" / "sub" / "face.png", np.ones((200, 180), np.uint8))
    (tmp_path / "lm.csv").write_text("\n".join(rows) + "\n")
    args = ["--images", str(tmp_path / "img"), "--out", str(tmp_path / "out"),
            "--landmarks", str(tmp_path / "lm.csv"), "--label-maps", str(tmp_path / "maps")]
    assert main(args) == 0
    assert '"aligned": 3' in capsys.readouterr().out
    for name, (img, pts) in expected.items():
        got = read_image(tmp_path / "out" / "images" / f"{name}.png")
        assert np.array_equal(got, align_face(img, pts))
        label_map = read_label_map(tmp_path / "out" / "labels" / f"{name}.png")
        assert label_map.shape == (112, 112)
    assert set(np.unique(label_map)) <= {0, 1}
    (tmp_path / "lm.csv").write_text("\n".join(rows[:2]) + "\n")
    assert main(args) == 2
    assert "no landmarks for 2 image(s)" in capsys.readouterr().err
