"""Training and held-out evaluation on simulated slice stacks, incremental ground truth and transfer learning."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from .datasets import SliceStack
from .inference import predict_probabilities
from .labels import class_index, codes_of
from .metrics import merged_metrics, otsu_segmentation, segmentation_metrics
from .model_files import ModelFile
from .training import TrainResult, TrainSettings, make_patches, normalise, train


@dataclass(frozen=True)
class Prepared:
    """A stack on the networks' intensity scale."""

    images: np.ndarray
    labels: np.ndarray
    task: str
    voxel_size_um: float


def prepare(stack: SliceStack) -> Prepared:
    return Prepared(normalise(stack.images), stack.labels, stack.instrument.task, stack.instrument.voxel_size_um)


def spread_slices(data: Prepared, count: int, offset: int = 0) -> list[tuple[int, int]]:
    """``count`` (window, z) slices spread evenly over the stack (``offset`` shifts the pick)."""
    windows, depth = data.images.shape[:2]
    total = windows * depth
    if not 1 <= count <= total:
        raise ValueError(f"asked for {count} labelled slices but the stack holds {total}; simulate more windows")
    picks = (np.floor((np.arange(count) + 0.5) * total / count).astype(int) + offset) % total
    return [(int(p % windows), int(p // windows)) for p in picks]


def model_info(data: Prepared, settings: TrainSettings, provenance: dict[str, Any]) -> ModelFile:
    return ModelFile(settings.architecture, data.task, settings.base_channels, settings.depth,
                     settings.slices_per_sample, data.voxel_size_um, provenance)


def train_on(data: Prepared, slices: list[tuple[int, int]], settings: TrainSettings,
             model: nn.Module | None = None, progress: bool = True) -> TrainResult:
    x, y = make_patches(data.images, data.labels, slices, data.task, settings)
    return train(x, y, data.task, settings, model=model, progress=progress)


def predict_stack(model: nn.Module, info: ModelFile, data: Prepared, device: str = "cpu") -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Label codes and the probability of the true class at every pixel of every window."""
    codes = np.empty(data.labels.shape, np.uint8)
    true_prob = np.empty(data.labels.shape, np.float32)
    for w in range(data.images.shape[0]):
        target = class_index(data.labels[w], data.task)
        for z, probs in enumerate(predict_probabilities(model, info, data.images[w], tile=data.images.shape[-1],
                                                        device=device, normalised=True)):
            codes[w, z] = codes_of(probs.argmax(0), data.task)
            true_prob[w, z] = np.take_along_axis(probs, target[z][None], 0)[0]
    return codes, true_prob


def evaluate_stack(model: nn.Module, info: ModelFile, data: Prepared, device: str = "cpu") -> dict[str, Any]:
    """Held-out accuracy, Dice per class and cross-entropy loss on whole slices, plus the merged metrics."""
    codes, true_prob = predict_stack(model, info, data, device)
    classes = len(info.classes)
    four = segmentation_metrics(class_index(codes, data.task), class_index(data.labels, data.task), classes)
    return {"accuracy": four["accuracy"], "dice": four["dice"],
            "loss": float(-np.mean(np.log(np.clip(true_prob, 1e-7, 1.0)))),
            "merged": merged_metrics(codes, data.labels, data.task)}


def evaluate_otsu(data: Prepared) -> dict[str, Any]:
    """The Otsu baseline on every slice of the stack (merged classes: it has no shade-off class)."""
    codes = np.stack([[otsu_segmentation(s) for s in window] for window in data.images])
    return {"merged": merged_metrics(codes, data.labels, data.task)}


def incremental_training(data: Prepared, steps: list[int], settings: TrainSettings,
                         progress: bool = True) -> tuple[TrainResult, list[dict[str, Any]]]:
    """Incremental ground truth: train on ``steps[0]`` slices; at each next step the model labels the new slices,
    the expert corrects them (here: the ground truth, counting the pixels changed) and training resumes."""
    if sorted(steps) != list(steps) or steps[0] < 1:
        raise ValueError(f"incremental steps must be increasing slice counts >= 1, got {steps}")
    order = spread_slices(data, steps[-1])
    result = train_on(data, order[:steps[0]], settings, progress=progress)
    log = [{"slices": steps[0], "corrected_fraction": None, "epochs": len(result.history)}]
    info = model_info(data, settings, {})
    for previous, count in zip(steps, steps[1:]):
        new = order[previous:count]
        proposed = _label_slices(result.model, info, data, new)
        truth = np.stack([data.labels[w, z] for w, z in new])
        corrected = float(np.mean(class_index(proposed, data.task) != class_index(truth, data.task)))
        result = train_on(data, order[:count], settings, model=result.model, progress=progress)
        log.append({"slices": count, "corrected_fraction": corrected, "epochs": len(result.history)})
    return result, log


def _label_slices(model: nn.Module, info: ModelFile, data: Prepared, slices: list[tuple[int, int]]) -> np.ndarray:
    out = []
    for w, z in slices:
        lo = max(0, z - info.sequence // 2)
        window = data.images[w, lo:z + info.sequence // 2 + 1]
        probs = list(predict_probabilities(model, info, window, tile=window.shape[-1], normalised=True))[z - lo]
        out.append(codes_of(probs.argmax(0), data.task))
    return np.stack(out)
