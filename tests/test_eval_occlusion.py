"""Per-region occlusion robustness: pair sampling and the erased-probe verification table."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fserasing import erase_batch
from parsing.core.labels import FSE25
from recognition.eval_occlusion import occlusion_table
from recognition.evaluation.embedding import embed
from recognition.evaluation.occlusion import elsewhere_mask
from recognition.evaluation.verification import verification_accuracy


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 4, stride=8)
        self.fc = torch.nn.Linear(4 * 14 * 14, 8)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _random_pairs(seed: int, n: int = 20):
    """``n`` random gallery/probe uint8 faces, random FSE-25 masks, every other pair genuine."""
    g = torch.Generator().manual_seed(seed)
    gallery = torch.randint(0, 256, (n, 3, 112, 112), generator=g, dtype=torch.uint8)
    probes = torch.randint(0, 256, (n, 3, 112, 112), generator=g, dtype=torch.uint8)
    masks = torch.randint(0, 25, (n, 112, 112), generator=g, dtype=torch.uint8)
    return gallery, probes, masks, np.arange(n) % 2 == 0


def test_occlusion_table_erases_only_the_probe_group():
    gallery, probes, masks, issame = _random_pairs(0)
    model = _Tiny().eval()
    table = occlusion_table(model, gallery, probes, masks, issame, groups=("eyes", "nose"),
                            batch_size=6, seed=5)
    assert list(table) == ["none", "eyes", "nose"]

    def expected(probe_images):
        pairs = torch.stack([F.normalize(embed(model, gallery).double(), dim=1),
                             F.normalize(embed(model, probe_images).double(), dim=1)], 1)
        return verification_accuracy(pairs.flatten(0, 1), issame)

    assert table["none"]["accuracy"] == expected(probes)["accuracy"]
    assert table["none"]["erased_area"] == 0.0
    generator = torch.Generator().manual_seed(5)
    eyes = torch.cat([erase_batch(probes[s:s + 6], masks[s:s + 6], p=1.0, n_erase=["eyes"],
                                  generator=generator) for s in range(0, len(probes), 6)])
    changed = (eyes != probes).any(1)
    in_eyes = torch.isin(masks, torch.tensor(FSE25.ids("eyes")))
    assert changed.any() and not (changed & ~in_eyes).any()
    assert table["eyes"]["accuracy"] == pytest.approx(expected(eyes)["accuracy"], abs=0)
    assert table["eyes"]["erased_area"] == pytest.approx(float(in_eyes.float().mean()))
    for row in table.values():
        assert set(row["tar_at_far"]) == {"1e-02", "1e-01"} and 0 <= row["auc"] <= 1


def test_elsewhere_mask_matches_the_area_outside_the_protected_regions():
    masks = torch.zeros(2, 4, 6, dtype=torch.uint8)
    masks[0, 0, :2] = 11                       # 2 eye pixels
    masks[0, 1, :] = 1                         # 6 cheek pixels
    masks[0, 2, :3] = 21                       # 3 hair pixels
    masks[1, :, :3] = 12                       # 12 eye pixels, only 6 + 3 elsewhere
    masks[1, 0, 3:] = 17
    masks[1, 1, 3:] = 10
    masks[1, 2, 3:] = 22
    eyes = FSE25.ids("eyes")
    for seed in range(5):
        chosen = elsewhere_mask(masks, eyes, torch.Generator().manual_seed(seed))
        assert not (chosen & torch.isin(masks, torch.tensor(eyes))).any()
        assert not (chosen & (masks == 0)).any()            # background is never taken
        assert chosen[0].sum() == 2 and chosen[1].sum() == 9  # matched; or all there is
        # whole regions in a random order, the last cut in raster order
        regions = masks[0][chosen[0]].unique()
        assert len(regions) == 1
    orders = {tuple(masks[0][elsewhere_mask(masks, eyes, torch.Generator().manual_seed(s))[0]]
                    .tolist()) for s in range(20)}
    assert orders == {(1, 1), (21, 21)}


def test_elsewhere_mask_never_takes_excluded_classes():
    masks = torch.zeros(2, 4, 6, dtype=torch.uint8)
    masks[0, 0, :2] = 11                       # 2 eye pixels
    masks[0, 1, :] = 1                         # 6 cheek pixels (excluded)
    masks[0, 2, :3] = 21                       # 3 hair pixels
    masks[1, :, :3] = 12                       # 12 eye pixels; 3 + 3 allowed elsewhere
    masks[1, 0, 3:] = 17
    masks[1, 1, 3:] = 10                       # nose: excluded
    masks[1, 2, 3:] = 22
    eyes, exclude = FSE25.ids("eyes"), [1, 10]
    for seed in range(10):
        chosen = elsewhere_mask(masks, eyes, torch.Generator().manual_seed(seed), exclude)
        assert masks[0][chosen[0]].tolist() == [21, 21]
        assert sorted(masks[1][chosen[1]].tolist()) == [17] * 3 + [22] * 3
    g = torch.Generator().manual_seed(3)
    masks = torch.randint(0, 25, (6, 32, 32), generator=g, dtype=torch.uint8)
    chosen = elsewhere_mask(masks, eyes, g, exclude=FSE25.ids(["nose", "mouth"]))
    taken = torch.isin(masks, torch.tensor(FSE25.ids(["eyes", "nose", "mouth"])))
    assert not (chosen & taken).any() and not (chosen & (masks == 0)).any()
    assert torch.equal(chosen.flatten(1).sum(1),
                       torch.isin(masks, torch.tensor(eyes)).flatten(1).sum(1))


class _Corner(torch.nn.Module):
    """Embeds only the top-left 16 x 16 pixels of a face (top-right ones when flipped)."""

    def forward(self, x):
        return F.avg_pool2d(x[:, :, :16, :16], 4).flatten(1)


def test_occlusion_table_control_spares_the_protected_regions():
    """The control of another group (hair) must never erase the identity region (nose, the
    only pixels the model sees): with ``protect`` its row equals the unoccluded one."""
    g = torch.Generator().manual_seed(2)
    n = 40
    gallery = torch.randint(0, 256, (n, 3, 112, 112), generator=g, dtype=torch.uint8)
    probes = gallery.clone()
    probes[n // 2:] = torch.randint(0, 256, (n // 2, 3, 112, 112), generator=g,
                                    dtype=torch.uint8)
    issame = np.arange(n) < n // 2
    masks = torch.ones(n, 112, 112, dtype=torch.uint8)       # cheek
    masks[:, :16, :16] = masks[:, :16, -16:] = 10            # nose, where the model looks
    masks[:, 16:40] = 21                                     # hair, larger than the nose
    nose = FSE25.ids("nose")
    spared = occlusion_table(_Corner(), gallery, probes, masks, issame, groups=("hair",),
                             batch_size=8, elsewhere=True, protect=nose)
    assert spared["hair elsewhere"]["erased_area"] == spared["hair"]["erased_area"]
    assert spared["hair elsewhere"]["auc"] == spared["none"]["auc"]
    assert spared["hair"]["auc"] == spared["none"]["auc"]
    unprotected = occlusion_table(_Corner(), gallery, probes, masks, issame, groups=("hair",),
                                  batch_size=8, elsewhere=True)
    assert unprotected["hair elsewhere"]["auc"] < spared["none"]["auc"]  # the nose was erased


def test_cli_protect_needs_elsewhere(tmp_path):
    from recognition import eval_occlusion

    assert eval_occlusion.main(["--checkpoint", "c.pt", "--data", str(tmp_path), "--out",
                                str(tmp_path / "o"), "--protect", "nose,mouth"]) == 2


def test_occlusion_table_elsewhere_rows_erase_the_same_area_elsewhere():
    gallery, probes, masks, issame = _random_pairs(1)
    table = occlusion_table(_Tiny().eval(), gallery, probes, masks, issame,
                            groups=("eyes+nose",), batch_size=8, elsewhere=True)
    assert list(table) == ["none", "eyes+nose", "eyes+nose elsewhere"]
    inside = torch.isin(masks, torch.tensor(FSE25.ids(["eyes", "nose"])))
    assert table["eyes+nose"]["erased_area"] == pytest.approx(float(inside.float().mean()))
    assert table["eyes+nose elsewhere"]["erased_area"] == table["eyes+nose"]["erased_area"]


@pytest.mark.slow
def test_cli_on_parsing_synth_faces(tmp_path, monkeypatch, capsys):
    import json

    from parsing.synth import write_dataset
    from recognition import eval_occlusion

    write_dataset(tmp_path / "faces", 5, 4, seed=2, workers=1)
    monkeypatch.setattr(eval_occlusion, "load_backbone", lambda *a: _Tiny().eval())
    out = tmp_path / "out"
    assert eval_occlusion.main(["--checkpoint", "c.pt", "--network", "tiny", "--data",
                                str(tmp_path / "faces"), "--out", str(out), "--pairs", "20",
                                "--groups", "eyes,mouth", "--device", "cpu", "--elsewhere"]) == 0
    table = json.loads((out / "occlusion.json").read_text())["table"]
    assert list(table) == ["none", "eyes", "eyes elsewhere", "mouth", "mouth elsewhere"]
    assert 0 < table["eyes"]["erased_area"] < table["mouth"]["erased_area"] + 1
    assert (out / "occlusion.png").stat().st_size > 0
    assert (out / "occlusion.csv").read_text().count("\n") == 6
    assert "mouth" in capsys.readouterr().out
    assert eval_occlusion.main(["--checkpoint", "c.pt", "--network", "tiny", "--data",
                                str(tmp_path / "faces"), "--out", str(out),
                                "--groups", "eyes,elbows"]) == 2
