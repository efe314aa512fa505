"""ROC, TAR at FAR and AUC of verification scores, as insightface reports them (reference §5.5).

:func:`roc_curve` returns exactly ``sklearn.metrics.roc_curve`` (``drop_intermediate=True``)
with one sort of the scores instead of sklearn's argsort; :func:`tar_at_far` takes the TAR of
the ROC point whose FAR is nearest each target, the rule of insightface's ``eval_ijbc.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import auc as trapezoid_auc

from parsing.core.errors import InputError

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``sklearn.metrics.roc_curve(labels, scores)`` (``drop_intermediate=True``), one sort.

    sklearn argsorts all scores to accumulate the labels. Here the scores are sorted once and
    the genuine pairs (a few thousand in verification protocols) are located in the sorted
    scores by binary search; without ties the ROC corners follow from those positions alone.
    Same (fpr, tpr, thresholds) as sklearn, ties included.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if labels.shape != scores.shape:
        raise InputError(f"{len(scores)} scores but {len(labels)} labels")
    if not np.isfinite(scores).all():
        raise InputError("scores contain NaN or infinite values")
    labels = labels.astype(bool)
    n = len(scores)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == n:
        raise InputError(f"need both genuine and impostor pairs, got {n_pos} genuine of {n}")
    ascending = np.sort(scores)
    distinct = ascending[1:] != ascending[:-1]
    # descending order from here on: position d holds ascending[n - 1 - d]
    if distinct.all():
        points, tps = _corners_without_ties(n, n - 1 - np.searchsorted(ascending, scores[labels]))
    else:
        points, tps = _corners_with_ties(n, ascending, distinct, scores[labels])
    fps = np.concatenate(([0], points + 1 - tps)).astype(np.float64)
    tps = np.concatenate(([0], tps)).astype(np.float64)
    thresholds = np.concatenate(([np.inf], ascending[n - 1 - points]))
    return fps / fps[-1], tps / tps[-1], thresholds


def _corners_without_ties(n: int, positive_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All scores distinct: one ROC point per score, and sklearn keeps point k (besides the
    first and last) iff the labels at descending positions k and k + 1 differ."""
    pos = np.sort(positive_positions)
    adjacent = np.diff(pos) == 1
    last_impostor_before_run = pos[np.concatenate(([True], ~adjacent))] - 1
    last_genuine_of_run = pos[np.concatenate((~adjacent, [True]))]
    points = np.unique(np.concatenate(([0, n - 1], last_impostor_before_run,
                                       last_genuine_of_run)))
    points = points[(points >= 0) & (points <= n - 1)]
    return points, np.searchsorted(pos, points, side="right")


def _corners_with_ties(n: int, ascending: np.ndarray, distinct: np.ndarray,
                       positives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One ROC point per run of equal scores (at its last descending position), then
    sklearn's ``drop_intermediate`` (keep points where either count's slope changes)."""
    change = np.flatnonzero(distinct)
    run_end = np.empty(len(change) + 1, dtype=np.int64)
    np.subtract(n - 2, change[::-1], out=run_end[:-1])
    run_end[-1] = n - 1
    del change
    positive_run = np.searchsorted(run_end, n - 1 - np.searchsorted(ascending, positives))
    tps = np.bincount(positive_run, minlength=len(run_end))
    np.cumsum(tps, out=tps)
    fps = run_end + 1 - tps
    kept = _kept_points(fps, tps)
    return run_end[kept], tps[kept]


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, fars=FARS) -> np.ndarray:
    """TAR at the ROC point whose FAR is nearest each target (insightface's rule: among
    equally near points the one with the highest TAR, i.e. the last in sklearn's order)."""
    fpr_rev, tpr_rev = np.asarray(fpr)[::-1], np.asarray(tpr)[::-1]
    nearest = np.abs(fpr_rev[None, :] - np.asarray(fars, dtype=np.float64)[:, None]).argmin(1)
    return tpr_rev[nearest]


def far_key(far: float) -> str:
    """``1e-04`` style key for a FAR/FPIR value in the JSON tables."""
    return f"{far:.0e}"


def verification_report(scores: np.ndarray, labels: np.ndarray, fars=FARS
                        ) -> tuple[dict, np.ndarray, np.ndarray]:
    """TAR@FAR table and AUC of a 1:1 protocol -> (report, fpr, tpr)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    tars = tar_at_far(fpr, tpr, fars)
    report = {
        "tar_at_far": {far_key(f): float(t) for f, t in zip(fars, tars, strict=True)},
        "auc": trapezoid_auc(fpr, tpr),
        "pairs": int(len(labels)),
        "genuine": int(np.count_nonzero(labels)),
    }
    return report, fpr, tpr


def screened_verification_report(
    approx: np.ndarray,
    labels: np.ndarray,
    error: float,
    exact: Callable[[np.ndarray], np.ndarray],
    fars=FARS,
    max_exact: int | None = None,
) -> tuple[dict, np.ndarray, np.ndarray]:
    """:func:`verification_report` of exact scores, from float32 approximations of them.

    ``approx`` holds a float32 score per pair within ``error`` of its exact score, and
    ``exact(pairs)`` returns the exact (float64) scores of the pair indices ``pairs``. The
    genuine pairs are scored exactly; the impostors are located in a histogram of their
    approximations, and around each target FAR a band of scores is resolved exactly (every
    impostor that may lie in it is scored exactly), wide enough that the ROC point nearest the
    target is one whose neighbours are all known. The TARs are therefore those of
    ``verification_report(exact scores)``, ties included. The AUC and the returned curve (a
    corner at every genuine pair) place impostors by their approximations.
    If the bands would need more than ``max_exact`` exact impostor scores (default: 1/16 of
    the pairs), every pair is scored exactly instead.
    """
    approx = np.asarray(approx)
    labels = np.asarray(labels).ravel().astype(bool)
    if approx.dtype != np.float32:
        raise InputError(f"approximate scores must be float32, got {approx.dtype}")
    approx = approx.ravel()
    if labels.shape != approx.shape:
        raise InputError(f"{len(approx)} scores but {len(labels)} labels")
    genuine = np.flatnonzero(labels)
    n_pos, n_neg = len(genuine), len(approx) - len(genuine)
    if n_pos == 0 or n_neg == 0:
        raise InputError(f"need both genuine and impostor pairs, got {n_pos} genuine of "
                         f"{len(approx)}")
    genuine_desc = np.sort(np.asarray(exact(genuine), dtype=np.float64))[::-1]
    if not (np.isfinite(approx.min() + approx.max()) and np.isfinite(genuine_desc).all()):
        raise InputError("scores contain NaN or infinite values")
    max_exact = len(approx) // 16 if max_exact is None else max_exact

    n_bins = int(np.clip(len(approx) // 8, 1024, 1 << 21))
    hist = _ImpostorHistogram(approx, genuine, n_bins)
    bands = [_Band.around(far, 64, 2, hist, genuine_desc, error) for far in fars]
    flagged = np.zeros(hist.n_bins + 1, dtype=bool)  # bin n_bins holds the genuine pairs
    flagged[hist.bin_of(genuine_desc)] = True
    for band in bands:
        flagged[band.first_bin:band.last_bin + 1] = True
    candidates = np.flatnonzero(flagged[hist.bins])  # every impostor in a flagged bin
    candidate_bins = hist.bins[candidates]
    tars = []
    for band in bands:
        inside = candidates[(candidate_bins >= band.first_bin)
                            & (candidate_bins <= band.last_bin)]
        while len(inside) <= max_exact:
            if (tar := band.tar(hist, genuine_desc, inside, exact)) is not None:
                tars.append(tar)
                break
            band = band.widened(hist, genuine_desc, error)
            inside = np.flatnonzero((hist.bins >= band.first_bin)
                                    & (hist.bins <= band.last_bin))
        else:  # the band outgrew max_exact
            return verification_report(np.asarray(exact(np.arange(len(approx)))), labels, fars)

    above, tied = hist.impostors_above(genuine_desc, approx[candidates], candidate_bins)
    # the trapezoidal AUC in its Mann-Whitney form: impostors below count 1, tied ones 1/2
    auc = float((2 * (n_neg - above) - tied).sum()) / (2.0 * n_pos * n_neg)
    fps = np.zeros(2 * n_pos + 2, dtype=np.int64)
    tps = np.zeros(2 * n_pos + 2, dtype=np.int64)
    fps[1:-1:2], tps[1:-1:2] = above, np.arange(n_pos)  # last impostor before each genuine
    fps[2:-1:2], tps[2:-1:2] = above + tied, np.arange(1, n_pos + 1)
    fps[-1], tps[-1] = n_neg, n_pos
    report = {
        "tar_at_far": {far_key(f): float(t) for f, t in zip(fars, tars, strict=True)},
        "auc": auc,
        "pairs": int(len(labels)),
        "genuine": int(n_pos),
    }
    return report, fps / n_neg, tps / n_pos


class _ImpostorHistogram:
    """Impostor scores (float32) counted on a uniform grid of bins. Bins are computed in
    float32 from float32 values, so ``x <= y`` implies ``bin(x) <= bin(y)``: an impostor in a
    bin above (below) the bin of a score is above (below) that score."""

    def __init__(self, approx: np.ndarray, genuine: np.ndarray, n_bins: int):
        self.n_bins = n_bins
        self.low, self.high = approx.min(), approx.max()
        span = float(self.high) - float(self.low)
        self.scale = np.float32((n_bins - 1) / span if span > 0 else 0.0)
        self.bins = np.empty(len(approx), dtype=np.int32)
        for start in range(0, len(approx), 1 << 16):  # in cache-sized chunks, no temporaries
            self._bins(approx[start:start + (1 << 16)], out=self.bins[start:start + (1 << 16)])
        self.bins[genuine] = n_bins
        # torch's bincount reads int32 directly (numpy's copies to int64 first): 2x as fast
        counts = torch.bincount(torch.from_numpy(self.bins), minlength=n_bins + 1)[:n_bins]
        counts = counts.numpy()
        # at_or_above[b]: impostors in bins >= b (one extra zero for b = n_bins)
        self.at_or_above = np.concatenate((np.cumsum(counts[::-1])[::-1], [0]))
        self._descending = -self.at_or_above[:-1]  # ascending, for searchsorted

    def _bins(self, scores: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        b = np.subtract(scores, self.low, dtype=np.float32)
        b *= self.scale
        if out is None:
            return b.astype(np.int32)
        np.copyto(out, b, casting="unsafe")
        return out

    def bin_of(self, scores) -> np.ndarray:
        """Bins of (float64) scores, rounded to float32 first like the impostors were."""
        scores = np.clip(np.asarray(scores, dtype=np.float32), self.low, self.high)
        return np.minimum(self._bins(scores), self.n_bins - 1)

    def above_bin(self, b) -> np.ndarray:
        """Impostors in bins above ``b``."""
        return self.at_or_above[np.asarray(b) + 1]

    def score_below(self, rank: float) -> float:
        """An approximate score with about ``rank`` impostors above it (-inf past the last)."""
        b = np.searchsorted(self._descending, -rank, side="right") - 1
        if b < 0:
            return -np.inf
        return float(self.low) + (b / float(self.scale) if self.scale > 0 else 0.0)

    def impostors_above(self, scores_desc: np.ndarray, candidate_values: np.ndarray,
                        candidate_bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Impostors (by approximation) above each score, and tied with it; the candidates
        must be every impostor in the bins of the scores."""
        order = np.argsort(candidate_values, kind="stable")
        values = candidate_values[order].astype(np.float64)
        bins = candidate_bins[order]  # sorted too: bins grow with the value
        score_bins = self.bin_of(scores_desc)
        at_most = np.searchsorted(values, scores_desc, side="right")
        below = np.searchsorted(values, scores_desc, side="left")
        in_bin_above = np.searchsorted(bins, score_bins, side="right") - at_most
        return self.above_bin(score_bins) + in_bin_above, at_most - below


@dataclass(frozen=True)
class _Band:
    """Exact scores in [low, high], chosen around the target FAR ``far``: ``margin``
    impostors and ``genuine`` genuine pairs beyond the target count on each side; its
    impostors lie in bins ``first_bin..last_bin``."""

    far: float
    margin: int
    genuine: int
    low: float
    high: float
    first_bin: int
    last_bin: int

    @classmethod
    def around(cls, far: float, margin: int, genuine: int, hist: _ImpostorHistogram,
               genuine_desc: np.ndarray, error: float) -> _Band:
        n_neg = int(hist.at_or_above[0])
        target = far * n_neg
        high = np.inf if target - margin < 1 else hist.score_below(target - margin)
        low = hist.score_below(target + margin)
        # widen to `genuine` genuine pairs beyond on each side; below the lowest genuine pair
        # the ROC is flat at TPR 1, which tar() accounts for
        descending = -genuine_desc
        above = np.searchsorted(descending, -high, side="left")  # genuine scores > high
        high = float(genuine_desc[above - genuine]) if above >= genuine else np.inf
        at_or_above = np.searchsorted(descending, -low, side="right")
        low = float(genuine_desc[min(at_or_above + genuine, len(genuine_desc)) - 1])
        first = max(0, int(hist.bin_of(low - error)) - 1)
        last = (hist.n_bins - 1 if high == np.inf
                else min(hist.n_bins - 1, int(hist.bin_of(high + error)) + 1))
        return cls(far, margin, genuine, low, high, first, last)

    def widened(self, hist: _ImpostorHistogram, genuine_desc: np.ndarray, error: float
                ) -> _Band:
        return _Band.around(self.far, 4 * self.margin, 2 * self.genuine, hist, genuine_desc,
                            error)

    def tar(self, hist: _ImpostorHistogram, genuine_desc: np.ndarray, impostors: np.ndarray,
            exact: Callable[[np.ndarray], np.ndarray]) -> float | None:
        """The TAR at ``far`` from the exact scores of the band's impostors (pair indices),
        or None if the band is too narrow to tell."""
        n_neg, n_pos = int(hist.at_or_above[0]), len(genuine_desc)
        scores = np.asarray(exact(impostors), dtype=np.float64)
        impostors_above = int(hist.above_bin(self.last_bin)) + int(np.sum(scores > self.high))
        members = scores[(scores >= self.low) & (scores <= self.high)]
        genuine_above = int(np.sum(genuine_desc > self.high))
        genuine_members = genuine_desc[(genuine_desc >= self.low) & (genuine_desc <= self.high)]
        distinct, inverse = np.unique(np.concatenate((members, genuine_members)),
                                      return_inverse=True)
        fps = impostors_above + np.cumsum(
            np.bincount(inverse[:len(members)], minlength=len(distinct))[::-1])
        tps = genuine_above + np.cumsum(
            np.bincount(inverse[len(members):], minlength=len(distinct))[::-1])
        # the ROC points above and below the band: one point each (the last is (1, 1))
        above = impostors_above + genuine_above > 0
        below = fps[-1] < n_neg or tps[-1] < n_pos
        fps = np.concatenate(([impostors_above] if above else [], fps, [n_neg] if below else []))
        tps = np.concatenate(([genuine_above] if above else [], tps, [n_pos] if below else []))
        # sklearn keeps a point iff the steps to it and from it differ. Two are unsure: the
        # point above the band, unless only impostors lie above it and the band's highest
        # score has a genuine pair, and the band's lowest point, unless it is the ROC's first
        # or holds the lowest genuine pair (then only impostors follow, all at TPR 1)
        sure = np.ones(len(fps), dtype=bool)
        if above:
            sure[0] = genuine_above == 0 and tps[1] > tps[0]
        band_last = len(fps) - 2 if below else len(fps) - 1
        flat_below = not below or tps[band_last] == n_pos
        if band_last > 0:
            sure[band_last] = flat_below
        kept = _kept_points(fps, tps)
        fpr = np.concatenate(([0.0], fps[kept] / n_neg))
        tpr = np.concatenate(([0.0], tps[kept] / n_pos))
        sure_kept = np.concatenate(([True], sure[kept]))
        # the points not in the reduced ROC (above and below the band) and the unsure ones
        # must be farther from the target than a sure point on their side
        top = fps[0] / n_neg
        if above and not ((sure[0] and top <= self.far)
                          or np.any(sure_kept & (fpr <= self.far) & (fpr > top))):
            return None
        if not flat_below and not np.any(
                sure_kept & (fpr >= self.far) & (fpr < fps[band_last] / n_neg)):
            return None
        return float(tar_at_far(fpr, tpr, [self.far])[0])


def _kept_points(fps: np.ndarray, tps: np.ndarray) -> np.ndarray:
    """sklearn's ``drop_intermediate``: keep the first and last points and every point
    where either count's step changes."""
    if len(fps) <= 2:
        return np.ones(len(fps), dtype=bool)
    return np.concatenate(([True], (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0), [True]))
