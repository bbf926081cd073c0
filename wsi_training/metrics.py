"""Instance segmentation scores against expert labels, pure numpy: F1 of
objects matched one to one at IoU >= 0.5, and the Aggregated Jaccard Index
(Kumar et al., IEEE TMI 2017) that the MoNuSeg challenge ranks by."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Labels = npt.NDArray[np.integer]


@dataclass(frozen=True)
class Scores:
    f1: float
    aji: float
    true: int  # objects in the truth
    predicted: int
    matched: int  # pairs at IoU >= 0.5


def _overlaps(truth: Labels, predicted: Labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts: of each (truth, predicted) pair, of each truth and each
    predicted object (index 0 is background in all three)."""
    t = np.unique(truth.ravel(), return_inverse=True)[1].reshape(truth.shape)
    p = np.unique(predicted.ravel(), return_inverse=True)[1].reshape(predicted.shape)
    # Relabelled 0..n in order, so 0 stays background when present.
    n_t, n_p = int(t.max()) + 1, int(p.max()) + 1
    pairs = np.bincount((t.astype(np.int64) * n_p + p).ravel(), minlength=n_t * n_p)
    pairs = pairs.reshape(n_t, n_p)
    if truth.min() > 0:  # no background pixel: add an empty background row
        pairs = np.vstack([np.zeros((1, n_p), np.int64), pairs])
    if predicted.min() > 0:
        pairs = np.hstack([np.zeros((pairs.shape[0], 1), np.int64), pairs])
    return pairs, pairs.sum(axis=1), pairs.sum(axis=0)


def score(truth: Labels, predicted: Labels) -> Scores:
    pairs, truth_area, predicted_area = _overlaps(truth, predicted)
    inter = pairs[1:, 1:].astype(np.float64)
    n_true, n_pred = inter.shape
    union = truth_area[1:, None] + predicted_area[None, 1:] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    # IoU > 0.5 pairs are unique on both sides: no assignment problem.
    matched = int((iou > 0.5).sum())
    f1 = 2 * matched / (n_true + n_pred) if n_true + n_pred else 1.0
    # AJI: each true object with the predicted one of highest IoU; predicted
    # objects never chosen add their whole area to the union.
    total_inter = total_union = 0.0
    used = np.zeros(n_pred, bool)
    for i in range(n_true):
        if n_pred and iou[i].max() > 0:
            j = int(iou[i].argmax())
            total_inter += inter[i, j]
            total_union += union[i, j]
            used[j] = True
        else:
            total_union += truth_area[i + 1]
    total_union += predicted_area[1:][~used].sum()
    aji = total_inter / total_union if total_union else 1.0
    return Scores(round(f1, 4), round(float(aji), 4), n_true, n_pred, matched)
