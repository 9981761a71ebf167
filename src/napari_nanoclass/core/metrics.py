"""Scores: confusion matrices, per-class IoU and mIoU (segmentation), per-class TPR/TNR/PPV/NPV/F1
(object classification), TPR at a matched specificity (comparing classifiers) and instance
matching at an IoU threshold (detection)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_curve


def confusion_matrix(pred: np.ndarray, target: np.ndarray, n_classes: int, ignore: int | None = None) -> np.ndarray:
    """Counts[i, j] = pixels of true class i predicted as j (``ignore`` pixels skipped)."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    keep = (target >= 0) & (target < n_classes)
    if ignore is not None:
        keep &= target != ignore
    idx = target[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


@dataclass
class SegmentationScores:
    """IoU per class and their mean, from an accumulated confusion matrix."""

    class_names: list[str]
    confusion: np.ndarray
    iou: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        self.iou = np.divide(tp, union, out=np.full_like(tp, np.nan), where=union > 0)

    @property
    def miou(self) -> float:
        return float(np.nanmean(self.iou))

    def as_dict(self) -> dict[str, float]:
        out = {f"iou_{name}": float(v) for name, v in zip(self.class_names, self.iou)}
        out["miou"] = self.miou
        return out

    def table(self) -> str:
        """A Markdown table of per-class IoU, mIoU and the row-normalised confusion matrix."""
        head = "| class | IoU | " + " | ".join(f"→{n}" for n in self.class_names) + " |"
        rows = [head, "|" + "---|" * (len(self.class_names) + 2)]
        norm = self.confusion / np.maximum(self.confusion.sum(1, keepdims=True), 1)
        for name, iou, row in zip(self.class_names, self.iou, norm):
            rows.append(f"| {name} | {iou:.2%} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
        rows.append(f"| **mIoU** | **{self.miou:.2%}** |" + " |" * len(self.class_names))
        return "\n".join(rows)


def class_metrics(confusion: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Per class (one-vs-rest): TPR (recall), TNR, PPV (precision), NPV and F1, from counts
    ``confusion[true, predicted]``. Under heavy imbalance accuracy hides a useless minority-class
    model; these do not. Undefined ratios (no such objects) are NaN."""
    confusion = np.asarray(confusion, np.float64)
    total = confusion.sum()
    out = {}
    for i, name in enumerate(class_names):
        tp = confusion[i, i]
        fn = confusion[i].sum() - tp
        fp = confusion[:, i].sum() - tp
        tn = total - tp - fn - fp
        tpr, tnr, ppv, npv = (_ratio(tp, tp + fn), _ratio(tn, tn + fp), _ratio(tp, tp + fp), _ratio(tn, tn + fn))
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        out[name] = {"TPR": tpr, "TNR": tnr, "PPV": ppv, "NPV": npv, "F1": f1, "support": int(tp + fn)}
    return out


def tpr_at_tnr(scores: np.ndarray, positive: np.ndarray, tnr: float) -> tuple[float, float]:
    """(TPR, TNR) of thresholding a one-vs-rest score at the most sensitive threshold whose
    true-negative rate is at least ``tnr``.

    Why: two classifiers' TPRs at their own decision points are not comparable when one point is
    far more specific than the other; at the same TNR they are (one point of the ROC curve).
    """
    fpr, tpr, _ = roc_curve(np.asarray(positive, bool), np.asarray(scores, np.float64), drop_intermediate=False)
    best = np.flatnonzero(fpr <= 1.0 - tnr + 1e-12)[-1]  # fpr and tpr never decrease along the curve
    return float(tpr[best]), float(1.0 - fpr[best])


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def normalised(confusion: np.ndarray) -> np.ndarray:
    """Rows divided by their totals: each row shows where the objects of one true class went."""
    confusion = np.asarray(confusion, np.float64)
    return confusion / np.maximum(confusion.sum(1, keepdims=True), 1)


def match_instances(pred: np.ndarray, target: np.ndarray, iou: float = 0.5) -> dict[str, float]:
    """Detection scores: a predicted object is a true positive when its IoU with a true object is
    at least ``iou`` (≥ 0.5 makes matches one-to-one). Returns tp, fp, fn, precision, recall, F1."""
    pred, target = np.asarray(pred).ravel(), np.asarray(target).ravel()
    n_pred, n_true = int(pred.max(initial=0)), int(target.max(initial=0))
    overlap = np.bincount(target.astype(np.int64) * (n_pred + 1) + pred, minlength=(n_true + 1) * (n_pred + 1))
    overlap = overlap.reshape(n_true + 1, n_pred + 1)[1:, 1:].astype(np.float64)
    area_true = np.bincount(target, minlength=n_true + 1)[1:, None]
    area_pred = np.bincount(pred, minlength=n_pred + 1)[None, 1:]
    union = area_true + area_pred - overlap
    ious = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    present_true, present_pred = area_true[:, 0] > 0, area_pred[0] > 0
    tp = int(((ious >= iou) & present_true[:, None] & present_pred[None]).any(axis=0).sum())
    fp, fn = int(present_pred.sum()) - tp, int(present_true.sum()) - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn)}
