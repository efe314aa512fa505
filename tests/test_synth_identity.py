"""Synthetic faces: identity marks of --identity-regions, and occluders with known pixels."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from parsing.synth import SynthFaces, generate, write_dataset
from parsing.synth.__main__ import main
from parsing.synth.dataset import render_index
from parsing.synth.genes import MARK_GENES, MARKS, OCCLUDER_KINDS, bound_groups, face_genes
from parsing.synth.render import render_face


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _nearest_identity(images, labels, ids, classes, bins: int = 4) -> float:
    """Leave-one-out 1-NN identification from the colour histogram of the ``classes`` pixels."""
    feats = []
    for image, sel in zip(images, torch.isin(labels, torch.tensor(classes)), strict=True):
        px = image.permute(1, 2, 0)[sel].numpy() // (256 // bins)
        h = np.bincount((px[:, 0] * bins + px[:, 1]) * bins + px[:, 2], minlength=bins**3)
        feats.append(np.sqrt(h / max(h.sum(), 1)))
    f = np.stack(feats)
    d = ((f[:, None] - f[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((ids[d.argmin(1)] == ids).mean())


def test_marks_only_for_bound_groups_and_only_with_identity_regions():
    genes, _ = face_genes(1, 0, 0)
    assert MARKS not in genes
    genes, _ = face_genes(1, 0, 0, bound_groups(["nose", "mouth"]), marks=True)
    assert set(genes[MARKS]) == {"nose", "mouth"}
    other, _ = face_genes(1, 0, 5, bound_groups(["nose", "mouth"]), marks=True)
    assert other[MARKS] == genes[MARKS]  # the identity's, whatever the image
    assert set(MARK_GENES) <= set(bound_groups(["face", "hair"])) | {"brows"}
    # no marks: byte-identical to a face whose genes never had the key
    plain, n = face_genes(2, 3, 7)
    empty = dict(plain) | {MARKS: {}}
    assert np.array_equal(render_face(plain, n).image, render_face(empty, n).image)


@pytest.mark.parametrize("regions, classes", [
    (["eyes"], [11, 12]), (["nose", "mouth"], [10, 17, 18, 19]), (["hair"], [21]),
    (["brows"], [13, 14]), (["around_eyes"], [8, 9])])
def test_marked_regions_carry_identity_and_the_rest_does_not(regions, classes):
    """Even a colour histogram of the region tells most people apart (10 identities x 4
    images: chance 0.08); without marks it does far worse, and other regions tell nothing."""
    images, labels, _, ids = generate(10, 4, seed=5, identity_regions=regions)
    ids = ids.numpy()
    marked = _nearest_identity(images, labels, ids, classes)
    assert marked >= 0.65, marked
    plain = generate(10, 4, seed=5, identity_regions=regions, identity_marks=False)
    assert marked > _nearest_identity(plain[0], plain[1], ids, classes) + 0.2
    for other in ([1, 2, 3, 4, 5, 6, 7, 8, 9], [21], [18, 19], [22]):
        if not set(other) & set(classes):
            assert _nearest_identity(images, labels, ids, other) < 0.3, other


def test_accessories_never_hide_marked_regions():
    """Glasses stay off marked eyes and hats off marked hair; unmarked, both are common."""
    for regions, hidden in ((["eyes"], 23), (["eyes", "around_eyes"], 23), (["hair"], 24)):
        marked = generate(12, 2, seed=7, identity_regions=regions)[1]
        plain = generate(12, 2, seed=7, identity_regions=regions, identity_marks=False)[1]
        assert not (marked == hidden).any(), regions
        assert (plain == hidden).flatten(1).any(1).sum() >= 3, regions


def test_marked_hair_is_worn_the_same_way_in_every_photo():
    """The hair-of-the-day nuisance (tied back, fringe, hairline, volume) spares marked hair."""
    day = {"hair_change": 0.95, "hairline_delta": 0.0, "volume_delta": 1.0}
    changed = 0
    for identity in range(6):
        genes, n = face_genes(4, identity, 0, bound_groups(["hair"]), marks=True)
        other = n._replace(**day)
        assert np.array_equal(render_face(genes, n).image, render_face(genes, other).image)
        plain = dict(genes)
        del plain[MARKS]
        changed += not np.array_equal(render_face(plain, n).image, render_face(plain, other).image)
    assert changed >= 4  # without marks the day's hair shows (bald heads excepted)


def test_eye_shadow_and_paint_stay_in_the_around_eye_regions():
    """Marks around the eyes recolour regions 8 and 9 only: the label map is that of the
    unmarked face, and the image changes only there (and where the camera blurs them)."""
    bound = bound_groups(["around_eyes"])
    checked = 0
    for index in range(12):
        genes, n = face_genes(3, index // 2, index, bound, marks=True)
        if genes["glasses"].present < 0.3:  # glasses are left off marked eyes only
            continue
        marked, plain = render_face(genes, n), render_face(genes | {MARKS: {}}, n)
        assert np.array_equal(marked.label_map, plain.label_map)
        around = np.isin(marked.label_map, [8, 9])
        near = ndimage.distance_transform_edt(~around) <= (4.5 if n.blur < 0.35 else 2.5)
        changed = _changed(marked.image, plain.image)
        assert changed[around].mean() > 0.2 and not (changed & ~near).any(), index
        checked += 1
    assert checked >= 6


def test_marks_change_the_region_of_an_identity_set_only_through_identity():
    plain = generate(4, 2, seed=6, identity_regions=["eyes"], identity_marks=False)
    marked = generate(4, 2, seed=6, identity_regions=["eyes"])
    # same nuisance and unbound genes: the background (same everywhere but the face) agrees
    assert torch.equal(plain[3], marked[3])
    same = (plain[1] == marked[1]).float().mean()
    assert same > 0.9  # the eyes change shape, the rest of the label map stays


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(-1) > 0


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_occluder_pixels_are_known(kind):
    k = OCCLUDER_KINDS.index(kind) + 1
    checked = 0
    for index in range(6):
        bare = render_index(4, index, 3)
        face = render_index(4, index, 3, occluders=[kind], occluder_p=1.0)
        occ = face.occluders
        assert set(np.unique(occ)) == {0, k}
        assert np.array_equal(face.landmarks, bare.landmarks)
        changed = _changed(face.image, bare.image)
        # pixels change only at the occluder, or next to it where the camera blurs (up to 4
        # pixels at the strongest blur, 1 without)
        _, nuisance = face_genes(4, index // 3, index)
        reach = 4.0 if nuisance.blur < 0.35 else 1.5
        far = ndimage.distance_transform_edt(occ == 0) > reach
        assert not (changed & far).any(), (index, int((changed & far).sum()))
        assert changed[occ > 0].mean() > 0.9
        # labels: unchanged outside; sunglasses are glasses, a scarf is clothing, a mask or a
        # hand keeps the label underneath (so does the rim of thin straps and frames)
        outside = occ == 0
        assert np.array_equal(face.label_map[outside], bare.label_map[outside])
        covered, underneath = face.label_map[occ > 0], bare.label_map[occ > 0]
        if kind in ("sunglasses", "scarf"):
            cls = 23 if kind == "sunglasses" else 22
            assert ((covered == cls) | (covered == underneath)).all()
            assert (covered == cls).mean() > 0.8
        else:
            assert np.array_equal(covered, underneath)
        checked += 1
    assert checked == 6


def test_occluders_sit_where_they_should():
    _, labels, _, _, occ = generate(3, 4, seed=2, occluders=list(OCCLUDER_KINDS),
                                    occluder_p=1.0)
    under = {"sunglasses": [11, 12, 23], "mask": [10, 17, 18, 19], "scarf": [17, 18, 19],
             "hand": list(range(1, 22))}
    kinds = set()
    bare = generate(3, 4, seed=2)[1]
    for m, b in zip(occ, bare, strict=True):
        k = int(m.max())
        assert k > 0 and set(m.unique().tolist()) == {0, k}
        kind = OCCLUDER_KINDS[k - 1]
        kinds.add(kind)
        assert torch.isin(b[m > 0], torch.tensor(under[kind])).any(), kind
        if kind in ("sunglasses", "mask"):  # most of what they should cover is covered
            part = torch.isin(b, torch.tensor(under[kind][:2]))
            assert not part.any() or (m[part] > 0).float().mean() > 0.7, kind
    assert len(kinds) >= 3


def test_occluder_probability_and_no_occluders():
    images, labels, _, _, occ = generate(4, 5, seed=9, occluders=["mask"], occluder_p=0.0)
    assert not occ.any()
    bare = generate(4, 5, seed=9)
    assert torch.equal(images, bare[0]) and torch.equal(labels, bare[1])
    occ = generate(10, 10, seed=9, occluders=["mask", "hand"], occluder_p=0.3)[4]
    share = (occ.flatten(1).amax(1) > 0).float().mean()
    assert 0.15 < share < 0.45


def test_identity_and_occluder_sets_are_deterministic_for_any_workers(tmp_path):
    kw = dict(identity_regions=["eyes", "hair"], occluders=["sunglasses", "scarf"],
              occluder_p=0.6, progress=False)
    one = write_dataset(tmp_path / "one", 3, 4, seed=5, workers=1, **kw)
    two = write_dataset(tmp_path / "two", 3, 4, seed=5, workers=2, **kw)
    files = _files(one)
    assert len(files) == 3 * 12 + 3 + 3 and files == _files(two)
    ds = SynthFaces(one)
    _, _, _, _, occ = generate(3, 4, seed=5, identity_regions=["eyes", "hair"],
                               occluders=["sunglasses", "scarf"], occluder_p=0.6)
    for i in range(len(ds)):
        assert torch.equal(ds.occluder_mask(i), occ[i])
    plain = write_dataset(tmp_path / "plain", 1, 2, seed=5, workers=1, progress=False)
    assert not SynthFaces(plain).occluder_mask(0).any()


@pytest.mark.parametrize("args", [
    ["--occluders", "sunglasses,helmet"],
    ["--occluders", "mask", "--occluder-p", "1.5"],
])
def test_bad_occluder_arguments_exit_2(tmp_path, capsys, args):
    assert main(["--out", str(tmp_path / "out"), "--identities", "2",
                 "--images-per-identity", "2", *args]) == 2
    assert capsys.readouterr().err.startswith("error:")


def test_cli_writes_occluder_masks(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "ds"), "--identities", "2", "--images-per-identity",
                 "3", "--workers", "1", "--identity-regions", "nose,mouth",
                 "--occluders", "mask,hand", "--occluder-p", "1"]) == 0
    masks = sorted((tmp_path / "ds" / "occluders").glob("*.png"))
    assert len(masks) == 6
    assert all(SynthFaces(tmp_path / "ds").occluder_mask(i).any() for i in range(6))
