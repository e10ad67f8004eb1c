"""Label codes of labels files (DESIGN.md) and the class sets the segmentation models predict."""

from __future__ import annotations

import enum

import numpy as np

from ..errors import RefusedInput


class Code(enum.IntEnum):
    """Label codes of a labels file; SHADE_OFF is model output only (merged into bone by post-processing)."""

    BACKGROUND = 0
    SOFT_TISSUE = 1
    BONE = 2
    LCN = 3
    VESSEL = 4
    SHADE_OFF = 5


TASK_CLASSES: dict[str, tuple[int, ...]] = {
    "lcn": (Code.BACKGROUND, Code.BONE, Code.LCN, Code.SHADE_OFF),
    "bone": (Code.BACKGROUND, Code.SOFT_TISSUE, Code.BONE, Code.LCN),
}
"""Label code of each output channel: 'lcn' = Zernike nanoCT (Silveira et al. 2024's four classes),
'bone' = absorption micro-CT (background, soft tissue incl. marrow and vessels, bone, pores)."""


def bone_tissue(labels: np.ndarray) -> np.ndarray:
    """Bone tissue: matrix plus the LCN inside it (and shade-off, were it not yet merged)."""
    return (labels == Code.BONE) | (labels == Code.LCN) | (labels == Code.SHADE_OFF)


def class_index(labels: np.ndarray, task: str) -> np.ndarray:
    """Channel index (int64) of each voxel for ``task``; codes a task lacks map as documented in TASK_CLASSES."""
    if task not in TASK_CLASSES:
        raise RefusedInput(f"unknown segmentation task {task!r}; choose one of {', '.join(TASK_CLASSES)}")
    lut = np.zeros(256, dtype=np.int64)
    classes = TASK_CLASSES[task]
    for index, code in enumerate(classes):
        lut[code] = index
    if task == "bone":
        lut[Code.VESSEL] = classes.index(Code.SOFT_TISSUE)
        lut[Code.SHADE_OFF] = classes.index(Code.BONE)
    return lut[labels]


def codes_of(index: np.ndarray, task: str) -> np.ndarray:
    """Label codes (uint8) of channel indices predicted for ``task``."""
    return np.asarray(TASK_CLASSES[task], dtype=np.uint8)[index]
