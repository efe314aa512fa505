"""Region-level explanation scores (cam.metrics) and the studies' paired statistics on
hand-made inputs with known answers."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import roc_auc_score

from benchmarks.stats import mean_std, paired_difference
from cam import metrics
from parsing.core.errors import InputError

nan = float("nan")


def test_top_k_hit_rate_known_answers():
    truth = torch.tensor([False, True, True, False, False])
    scores = torch.tensor([
        [0.1, 0.9, 0.8, 0.2, 0.3],   # both true regions on top: 1
        [0.9, 0.8, 0.1, 0.2, 0.3],   # one of the top two is true: 1/2
        [0.9, 0.1, 0.2, 0.8, 0.7],   # none: 0
        [0.5, 0.5, 0.5, 0.5, 0.5],   # all tied: chance, 2/5
        [0.9, 0.5, 0.1, 0.5, 0.0],   # 0.9 false, then one slot for {1 (true), 3 (false)}: 1/4
    ])
    hit = metrics.top_k_hit_rate(scores, truth)
    assert torch.allclose(hit, torch.tensor([1.0, 0.5, 0.0, 0.4, 0.25], dtype=torch.float64))
    # explicit k; top-1
    assert metrics.top_k_hit_rate(scores, truth, k=1).tolist() == [1.0, 0.0, 0.0, 0.4, 0.0]


def test_top_k_hit_rate_skips_absent_regions_and_has_no_truth_nan():
    truth = torch.tensor([True, True, False, False])
    # region 1 absent (NaN): k = 1 true region present
    scores = torch.tensor([[0.2, nan, 0.9, 0.1], [0.3, nan, 0.1, 0.2]])
    assert metrics.top_k_hit_rate(scores, truth).tolist() == [0.0, 1.0]
    valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    hit = metrics.top_k_hit_rate(torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 2), truth, valid=valid)
    assert math.isnan(hit[0]) and hit[1] == 0.0


def test_region_auc_equals_sklearn_with_ties_on_random_rows():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (20, 12), generator=g).float()  # many ties
    truth = torch.rand(20, 12, generator=g) < 0.3
    truth[:, 0], truth[:, 1] = True, False
    auc = metrics.region_auc(scores, truth)
    expected = [roc_auc_score(t.numpy(), s.numpy()) for s, t in zip(scores, truth, strict=True)]
    np.testing.assert_allclose(auc.numpy(), expected, rtol=0, atol=1e-12)


def test_region_auc_known_answers():
    truth = torch.tensor([True, False, False])
    scores = torch.tensor([[3.0, 1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 2.0, 1.0], [1.0, 1.0, nan]])
    auc = metrics.region_auc(scores, truth)
    assert auc.tolist() == [1.0, 0.0, 0.75, 0.5]
    assert math.isnan(metrics.region_auc(torch.ones(1, 3), torch.zeros(3, dtype=bool))[0])


def test_spearman_equals_scipy_with_ties_and_missing():
    g = torch.Generator().manual_seed(1)
    a = torch.randint(0, 5, (10, 15), generator=g).double()
    b = a + torch.randint(-3, 4, (10, 15), generator=g).double()
    a[0, 3], b[1, 4] = nan, nan
    rho = metrics.spearman(a, b)
    for i in range(10):
        keep = ~(a[i].isnan() | b[i].isnan())
        assert rho[i].item() == pytest.approx(stats.spearmanr(a[i][keep], b[i][keep])[0],
                                              abs=1e-12)
    assert metrics.spearman(torch.tensor([[1.0, 2.0, 3.0]]),
                            torch.tensor([[30.0, 20.0, 10.0]])).item() == pytest.approx(-1.0)
    assert math.isnan(metrics.spearman(torch.tensor([[1.0, 2.0]]), torch.ones(1, 2))[0])


def test_region_scores_refuse_bad_shapes():
    with pytest.raises(InputError, match="num_regions"):
        metrics.region_auc(torch.ones(3), torch.ones(3, dtype=bool))
    with pytest.raises(InputError, match="broadcast"):
        metrics.top_k_hit_rate(torch.ones(2, 3), torch.ones(4, dtype=bool))


def test_paired_difference_equals_scipy_t_interval():
    treated, baseline = [0.91, 0.88, 0.95, 0.90], [0.85, 0.84, 0.90, 0.86]
    d = np.subtract(treated, baseline)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    result = paired_difference(treated, baseline)
    assert result["mean"] == pytest.approx(d.mean())
    assert (result["low"], result["high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["exceeds_noise"] is bool(low > 0) is True
    # the interval agrees with the paired t-test's p-value at 5 %
    assert result["exceeds_noise"] is bool(stats.ttest_rel(treated, baseline).pvalue < 0.05)
    noisy = paired_difference([0.9, 0.7, 0.95], [0.8, 0.85, 0.9])
    assert noisy["low"] < 0 < noisy["high"] and not noisy["exceeds_noise"]


def test_paired_difference_and_mean_std_edge_cases():
    one = paired_difference([1.0], [0.5])
    assert one["mean"] == 0.5 and math.isnan(one["low"]) and not one["exceeds_noise"]
    assert paired_difference([1.0, nan, 2.0], [0.0, 1.0, 1.0])["n"] == 2
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
    assert mean_std([1.0, 2.0, 3.0, nan]) == {"mean": 2.0, "std": 1.0, "n": 3}
