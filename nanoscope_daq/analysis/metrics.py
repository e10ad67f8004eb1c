"""Segmentation quality (accuracy, Dice per class) and the Otsu-threshold baseline."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .labels import TASK_CLASSES, Code


def segmentation_metrics(predicted: np.ndarray, target: np.ndarray, classes: int) -> dict[str, object]:
    """Pixel accuracy and Dice of each class index 0..classes-1 (NaN for a class absent from both)."""
    predicted, target = np.asarray(predicted).ravel(), np.asarray(target).ravel()
    confusion = np.bincount(target * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(confusion).astype(float)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denominator > 0, 2 * tp / denominator, np.nan)
    return {"accuracy": float(tp.sum() / max(confusion.sum(), 1)), "dice": [float(d) for d in dice]}


def precision(found: np.ndarray, true: np.ndarray) -> float:
    """Share of the voxels ``found`` that are ``true`` (0 when nothing was found)."""
    count = np.count_nonzero(found)
    return float(np.count_nonzero(found & true) / count) if count else 0.0


def merged_codes(codes: np.ndarray) -> np.ndarray:
    """Shade-off merged into bone (what post-processing does), so thresholding can be compared."""
    return np.where(codes == Code.SHADE_OFF, np.uint8(Code.BONE), codes).astype(np.uint8)


def merged_metrics(predicted_codes: np.ndarray, target_codes: np.ndarray, task: str) -> dict[str, object]:
    """Accuracy and Dice of the task's classes after merging shade-off into bone, keyed by label name."""
    names = [Code(c).name.lower() for c in TASK_CLASSES[task] if c != Code.SHADE_OFF]
    codes = [c for c in TASK_CLASSES[task] if c != Code.SHADE_OFF]
    lut = np.zeros(256, np.int64)
    for i, c in enumerate(codes):
        lut[c] = i
    lut[Code.SHADE_OFF] = codes.index(Code.BONE)
    result = segmentation_metrics(lut[merged_codes(predicted_codes)], lut[merged_codes(target_codes)], len(codes))
    return {"accuracy": result["accuracy"], "dice": dict(zip(names, result["dice"], strict=True))}


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the split that maximises the between-class variance of the histogram
    (the middle of the best splits when empty bins make several equally good)."""
    return otsu_of_histogram(*np.histogram(np.asarray(values).ravel(), bins=bins))


def otsu_of_histogram(hist: np.ndarray, edges: np.ndarray) -> float:
    """Otsu's threshold of a histogram (counts and bin edges): what ``otsu_threshold`` gives for the values it
    counts, so that histograms of slabs of a volume, on the volume's range, summed, give the volume's."""
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        between = w0 * w1 * (m0 / w0 - (m0[-1] - m0) / w1) ** 2
    between = np.nan_to_num(between[:-1], nan=-1.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))
    return float(edges[1:][best].mean())


def otsu_segmentation(image: np.ndarray) -> np.ndarray:
    """The thresholding baseline on one slice: bright = bone, dark voxels enclosed by bone = LCN, rest background."""
    bone = image > otsu_threshold(image)
    enclosed = ndimage.binary_fill_holes(bone) & ~bone
    out = np.full(image.shape, Code.BACKGROUND, np.uint8)
    out[bone] = Code.BONE
    out[enclosed] = Code.LCN
    return out
