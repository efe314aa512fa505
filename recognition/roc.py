"""ROC, TAR at FAR and AUC of verification scores, as insightface reports them (SPEC §5.5).

:func:`roc_curve` returns exactly ``sklearn.metrics.roc_curve`` (``drop_intermediate=True``)
with one sort of the scores instead of sklearn's argsort; :func:`tar_at_far` takes the TAR of
the ROC point whose FAR is nearest each target, the rule of insightface's ``eval_ijbc.py``.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc as trapezoid_auc

from parsing.errors import InputError

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
    if len(fps) > 2:
        corner = np.diff(fps, 2) != 0
        corner |= np.diff(tps, 2) != 0
        keep = np.flatnonzero(np.concatenate(([True], corner, [True])))
        return run_end[keep], tps[keep]
    return run_end, tps


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
