import numpy as np
import pytest
import torch

from parsing.core.labels import (
    CELEBAMASK_BISENET,
    CELEBAMASK_FARL,
    CELEBAMASK_OFFICIAL,
    FACESYNTHETICS,
    FSE10,
    FSE25,
    LABEL_SETS,
    LabelError,
    convert,
    get_label_set,
)


def test_fse25_ids_match_spec_table():
    assert FSE25.num_classes == 25
    assert FSE25.names[11] == "right_eye"
    assert FSE25.id("right_eye") == 11
    assert FSE25.id("mouth") == 17 and FSE25.id("headwear") == 24


@pytest.mark.parametrize("alias,canonical", [("Right_blow", 13), ("Left_blow", 14),
                                             ("Headware", 24), ("RIGHT EYE", 11)])
def test_published_misspellings_are_aliases(alias, canonical):
    assert FSE25.id(alias) == canonical


def test_unknown_name_lists_classes():
    with pytest.raises(LabelError, match="no class 'beard'.*right_cheek"):
        FSE25.id("beard")


@pytest.mark.parametrize("ls", list(LABEL_SETS.values()), ids=list(LABEL_SETS))
def test_flip_permutation_is_an_involution(ls):
    perm = ls.flip_permutation
    assert torch.equal(perm[perm], torch.arange(ls.num_classes))
    assert sorted(perm.tolist()) == list(range(ls.num_classes))
    assert ls.palette.shape == (256, 3)


def test_fse25_flip_swaps_every_right_left_pair():
    perm = FSE25.flip_permutation
    for i, name in enumerate(FSE25.names):
        mirrored = name.replace("right", "@").replace("left", "right").replace("@", "left")
        assert FSE25.names[perm[i]] == mirrored


def test_ids_resolves_groups_names_and_ints():
    assert FSE25.ids(["eyes", "nose", 1]) == [1, 10, 11, 12]
    assert FSE25.ids("face") == list(range(1, 20))
    with pytest.raises(LabelError, match="outside fse25"):
        FSE25.ids([25])


def test_check_rejects_out_of_range_ids_and_float_maps():
    with pytest.raises(LabelError, match=r"ids \{25, 200\} are outside fse25"):
        FSE25.check(torch.tensor([[0, 25], [200, 3]]), "mask")
    with pytest.raises(LabelError, match="integer"):
        FSE25.check(torch.zeros(2, 2))
    FACESYNTHETICS.check(torch.tensor([0, 18, 255]))  # 255 is FaceSynthetics' ignore id


def test_celebamask_orders_round_trip_by_name():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 19, size=(2, 8, 8)).astype(np.uint8)
    for a in (CELEBAMASK_OFFICIAL, CELEBAMASK_BISENET, CELEBAMASK_FARL):
        for b in (CELEBAMASK_OFFICIAL, CELEBAMASK_BISENET, CELEBAMASK_FARL):
            out = convert(m, a, b)
            assert isinstance(out, np.ndarray) and out.dtype == np.uint8
            assert np.array_equal(convert(out, b, a), m)
            names_a = np.array(a.names)[m]
            assert (names_a == np.array(b.names)[out]).all()


def test_celebamask_known_ids():
    assert convert(torch.tensor([3]), "celebamask_official", "celebamask_bisenet").item() == 6
    assert convert(torch.tensor([17]), "celebamask_bisenet", "celebamask_farl").item() == 14


def test_facesynthetics_to_fse25_shared_classes():
    fs = torch.tensor([0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17])
    expected = [0] + list(range(10, 25))
    assert convert(fs, FACESYNTHETICS, FSE25).tolist() == expected
    with pytest.raises(LabelError, match="skin"):
        convert(torch.tensor([1]), FACESYNTHETICS, FSE25)
    assert convert(torch.tensor([1, 14, 18, 255]), FACESYNTHETICS, FSE25, unmapped=255).tolist() \
        == [255] * 4


def test_fse25_to_fse10_absorbs_parts_by_side():
    m = torch.zeros(1, 4, 8, dtype=torch.uint8)
    m[0, 0, 2:6] = 10  # nose: columns 2..5, centre 3.5
    m[0, 1, 2:6] = 18  # upper lip
    m[0, 2, 0] = 11
    m[0, 2, 7] = 12
    m[0, 3, :] = 21
    out = convert(m, FSE25, FSE10)
    assert out[0, 0].tolist() == [0, 0, 1, 1, 2, 2, 0, 0]  # subject's right = image left
    assert out[0, 1].tolist() == [0, 0, 3, 3, 4, 4, 0, 0]
    assert out[0, 2, 0] == 8 and out[0, 2, 7] == 9
    assert (out[0, 3] == 0).all()
    FSE10.check(out)


def test_undefined_conversion_is_a_clear_error():
    with pytest.raises(LabelError, match="no mapping is defined from fse10 to facesynthetics"):
        convert(torch.zeros(2, 2, dtype=torch.uint8), "fse10", "facesynthetics")
    with pytest.raises(LabelError, match="unknown label set"):
        get_label_set("lapa")


def test_colorize_shape_and_colours():
    m = torch.tensor([[0, 11], [12, 24]])
    rgb = FSE25.colorize(m)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and not (rgb[0, 1] == rgb[1, 0]).all()
    assert len({tuple(c) for c in FSE25.palette[:25]}) == 25
