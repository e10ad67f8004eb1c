"""Training of the segmentation networks with the protocol of Silveira et al. (J. Synchrotron Rad. 2024).

Labelled slices are cut into ``patch`` x ``patch`` patches at ``stride`` (Dragonfly's
patch training; Sensor3D patches carry the ``sequence`` slices around the labelled one),
split 80/20 into training and validation at random (seeded), and the network is trained
with Adadelta on categorical cross-entropy (``loss`` = 'cross_entropy', the paper's) or,
by default, cross-entropy plus the soft Dice loss averaged over classes
('cross_entropy+dice': LCN fills well under 1 % of the pixels, and with cross-entropy
alone the small networks here learn to never predict it), in batches of ``batch_size`` (32 or 64),
with random flips and quarter turns of every batch. Validation loss, accuracy and Dice
per class are recorded each epoch; training stops when the validation loss has improved
by less than ``min_improvement`` (0.01 %) for ``patience`` (10) epochs, or after
``max_epochs`` (100); the best epoch's weights are kept. Everything is seeded: the same
data, settings and seed give the same weights on the same machine.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .labels import TASK_CLASSES, class_index
from .metrics import segmentation_metrics
from .model_files import ModelFile, save_model
from .models import build_model

LOSSES = ("cross_entropy", "cross_entropy+dice")


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of the soft Dice of the softmax against one-hot targets (whole batch)."""
    probs = torch.softmax(logits, dim=1)
    one_hot = nn.functional.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    overlap = (probs * one_hot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * overlap + smooth) / (total + smooth)).mean()


@dataclass(frozen=True)
class TrainSettings:
    """The protocol's knobs (defaults: the paper's; the [analysis] configuration section may override)."""

    architecture: str = "sensor3d"
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 10
    min_improvement: float = 1e-4
    validation_fraction: float = 0.2
    patch: int = 64
    stride: int = 32
    learning_rate: float = 1.0
    loss: str = "cross_entropy+dice"
    base_channels: int = 6
    depth: int = 3
    sequence: int = 3
    augment: bool = True
    seed: int = 0
    min_patches_per_epoch: int = 0
    """An epoch is one shuffled pass over the training patches, repeated (reshuffled, augmented anew) until it
    holds at least this many: with few small labelled slices an epoch would otherwise be one or two steps."""

    def __post_init__(self) -> None:
        if self.architecture not in ("unet", "sensor3d"):
            raise ValueError(f"architecture must be 'unet' or 'sensor3d', got {self.architecture!r}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be >= 1")
        if self.min_patches_per_epoch < 0:
            raise ValueError(f"min_patches_per_epoch must be >= 0, got {self.min_patches_per_epoch}")
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must lie between 0 and 1, got {self.validation_fraction}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.patch % 2**self.depth:
            raise ValueError(f"patch ({self.patch}) must be divisible by 2**depth ({2**self.depth})")

    @property
    def slices_per_sample(self) -> int:
        return self.sequence if self.architecture == "sensor3d" else 1


@dataclass
class TrainResult:
    """The trained network (best epoch) and its history."""

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    seconds: float = 0.0


def normalise(images: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of a volume to 0 and 1 (removes an instrument's gain and offset)."""
    sample = images.ravel()[:: max(1, images.size // 2_000_000)]
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        raise ValueError("the volume is uniform (1st and 99th percentiles equal): nothing to segment")
    return ((np.asarray(images, np.float32) - lo) * (1.0 / (hi - lo))).astype(np.float32, copy=False)


def sequence_of(volume: np.ndarray, z: int, length: int) -> np.ndarray:
    """Slices z - length // 2 .. z + length // 2 of a (depth, H, W) volume, repeating the end slices."""
    index = np.clip(np.arange(z - length // 2, z + length // 2 + 1), 0, volume.shape[0] - 1)
    return volume[index]


def make_patches(images: np.ndarray, labels: np.ndarray, slices: list[tuple[int, int]], task: str,
                 settings: TrainSettings) -> tuple[np.ndarray, np.ndarray]:
    """(N, sequence, patch, patch) inputs and (N, patch, patch) class indices of the given (window, z) slices."""
    p, s, t = settings.patch, settings.stride, settings.slices_per_sample
    h, w = images.shape[-2:]
    if h < p or w < p:
        raise ValueError(f"slices of {h} x {w} pixels are smaller than the {p}-pixel patches")
    starts_y = sorted(set(list(range(0, h - p + 1, s)) + [h - p]))
    starts_x = sorted(set(list(range(0, w - p + 1, s)) + [w - p]))
    xs, ys = [], []
    for window, z in slices:
        seq = sequence_of(images[window], z, t)
        target = class_index(labels[window, z], task)
        for y0 in starts_y:
            for x0 in starts_x:
                xs.append(seq[:, y0:y0 + p, x0:x0 + p])
                ys.append(target[y0:y0 + p, x0:x0 + p])
    return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    x, y = torch.rot90(x, turns, (-2, -1)), torch.rot90(y, turns, (-2, -1))
    if flip:
        x, y = torch.flip(x, (-1,)), torch.flip(y, (-1,))
    return x, y


def _epoch_order(train_indices: np.ndarray, at_least: int, generator: torch.Generator) -> np.ndarray:
    """The training patches of one epoch: shuffled passes until ``at_least`` (one pass if there are that many)."""
    passes, count = [], 0
    while not passes or count < at_least:
        passes.append(train_indices[torch.randperm(len(train_indices), generator=generator).numpy()])
        count += len(train_indices)
    return np.concatenate(passes)[:max(len(train_indices), at_least)]


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and make its kernels deterministic; the generator drives shuffling and augmentation."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def train(x: np.ndarray, y: np.ndarray, task: str, settings: TrainSettings, model: nn.Module | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or fine-tune ``model``) on patches ``x`` (N, T, p, p) with class indices ``y`` (N, p, p)."""
    generator = seed_everything(settings.seed)
    classes = len(TASK_CLASSES[task])
    if model is None:
        model = build_model(settings.architecture, classes, settings.base_channels, settings.depth,
                            settings.sequence)
    # Channels-last features: oneDNN's convolutions with few channels run about 1.4x faster so on the CPU.
    model = model.to(memory_format=torch.channels_last)
    order = torch.randperm(len(x), generator=generator).numpy()
    n_val = max(1, int(round(settings.validation_fraction * len(x))))
    if len(x) - n_val < 1:
        raise ValueError(f"{len(x)} patches are too few to split {settings.validation_fraction:.0%} off for "
                         "validation; label more slices")
    val, trn = order[:n_val], order[n_val:]
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.Adadelta(model.parameters(), lr=settings.learning_rate)
    use_dice = settings.loss == "cross_entropy+dice"

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(logits, target)
        return loss + soft_dice_loss(logits, target) if use_dice else loss

    result = TrainResult(model)
    best_loss, best_state, stale = float("inf"), None, 0
    start = time.perf_counter()
    bar = tqdm(range(settings.max_epochs), desc=f"train {settings.architecture}", unit="epoch",
               disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        perm = _epoch_order(trn, settings.min_patches_per_epoch, generator)
        total, seen = 0.0, 0
        for k in range(0, len(perm), settings.batch_size):
            idx = torch.from_numpy(perm[k:k + settings.batch_size])
            xb, yb = x_t[idx], y_t[idx]
            if settings.augment:
                xb, yb = _augment(xb, yb, generator)
            optimiser.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        val_metrics = evaluate_patches(model, x_t[val], y_t[val], classes, use_dice)
        record = {"epoch": epoch + 1, "loss": total / seen, **{f"val_{k}": v for k, v in val_metrics.items()}}
        result.history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val=f"{record['val_loss']:.4f}")
        if record["val_loss"] < best_loss * (1 - settings.min_improvement):
            best_loss, stale = record["val_loss"], 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            result.best_epoch = epoch + 1
        else:
            stale += 1
            if stale >= settings.patience:
                result.stopped_early = True
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


@torch.no_grad()
def evaluate_patches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int, dice: bool = False,
                     batch: int = 64) -> dict[str, Any]:
    """Loss (cross-entropy, plus the soft Dice loss over all patches if ``dice``), accuracy and Dice per class."""
    model.eval()
    cross_entropy, logits_all = 0.0, []
    for k in range(0, len(x), batch):
        logits = model(x[k:k + batch])
        cross_entropy += float(nn.functional.cross_entropy(logits, y[k:k + batch], reduction="sum"))
        logits_all.append(logits)
    logits = torch.cat(logits_all)
    metrics = segmentation_metrics(logits.argmax(1).numpy(), y.numpy(), classes)
    cross_entropy /= y.numel()
    loss = cross_entropy + float(soft_dice_loss(logits, y)) if dice else cross_entropy
    return {"loss": loss, "cross_entropy": cross_entropy, **metrics}


def settings_dict(settings: TrainSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def save_trained(path: str | Path, result: TrainResult, task: str, settings: TrainSettings,
                 voxel_size_um: float, provenance: dict[str, Any]) -> ModelFile:
    """Write the trained network with everything needed to use and reproduce it."""
    info = ModelFile(architecture=settings.architecture, task=task, base_channels=settings.base_channels,
                     depth=settings.depth, sequence=settings.slices_per_sample, voxel_size_um=voxel_size_um,
                     provenance={**provenance, "settings": settings_dict(settings), "best_epoch": result.best_epoch,
                                 "epochs_run": len(result.history), "stopped_early": result.stopped_early})
    save_model(path, result.model, info)
    return info
