"""Segmentation metrics: confusion matrix, per-class IoU and mIoU, on whole images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
