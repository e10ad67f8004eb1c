"""Segmentation of whole volumes: overlapping tiles, CPU or CUDA, then post-processing.

Each slice (with its neighbours for Sensor3D) is cut into ``tile`` x ``tile`` tiles
overlapping by ``overlap`` pixels; the class probabilities of the tiles are blended
with weights that fall towards the tile edges (where a network sees least context) and
the most probable class wins. The volume is normalised by its own 1st and 99th
percentiles first, as the training data were.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from .labels import codes_of
from .model_files import ModelFile
from .training import normalise, sequence_of


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu' or 'cuda'; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    return sorted(set(list(range(0, size - tile + 1, step)) + [size - tile]))


def _blend_weights(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    def ramp(n: int) -> np.ndarray:
        edge = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float32)
        return np.minimum(edge / max(overlap, 1), 1.0)

    return np.outer(ramp(tile_h), ramp(tile_w)) + 1e-3


def _padded(seq: np.ndarray, multiple: int) -> np.ndarray:
    h, w = seq.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return np.pad(seq, ((0, 0), (0, ph), (0, pw)), mode="reflect") if ph or pw else seq


def _tiles(h: int, w: int, tile: int, overlap: int) -> Iterator[tuple[int, int]]:
    for y0 in _starts(h, tile, overlap):
        for x0 in _starts(w, tile, overlap):
            yield y0, x0


@torch.inference_mode()
def predict_probabilities(model: nn.Module, info: ModelFile, volume: np.ndarray, tile: int = 256,
                          overlap: int = 32, device: torch.device | str = "cpu", batch: int = 8,
                          normalised: bool = False) -> Iterator[np.ndarray]:
    """Class probabilities (classes, H, W) of each slice of a (Z, H, W) volume, slice by slice
    (``normalised``: the volume is already on the training scale, see training.normalise)."""
    device = torch.device(device)
    model = model.to(device).eval()
    volume = np.asarray(volume, dtype=np.float32)
    if not normalised:
        volume = normalise(volume)
    multiple = 2**info.depth
    h, w = volume.shape[1:]
    tile = max(multiple, tile - tile % multiple)
    th, tw = min(tile, h + (-h) % multiple), min(tile, w + (-w) % multiple)
    weights = _blend_weights(th, tw, overlap)
    for z in range(volume.shape[0]):
        seq = _padded(sequence_of(volume, z, info.sequence), multiple)
        hp, wp = seq.shape[-2:]
        total = np.zeros((len(info.classes), hp, wp), np.float32)
        norm = np.zeros((hp, wp), np.float32)
        corners = list(_tiles(hp, wp, tile, overlap))
        for k in range(0, len(corners), batch):
            chunk = corners[k:k + batch]
            x = torch.from_numpy(np.stack([seq[:, y0:y0 + th, x0:x0 + tw] for y0, x0 in chunk])).to(device)
            probs = torch.softmax(model(x), dim=1).cpu().numpy()
            for (y0, x0), p in zip(chunk, probs, strict=True):
                total[:, y0:y0 + th, x0:x0 + tw] += p * weights
                norm[y0:y0 + th, x0:x0 + tw] += weights
        yield (total / norm)[:, :h, :w]


def segment_volume(model: nn.Module, info: ModelFile, volume: np.ndarray, tile: int = 256, overlap: int = 32,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Label codes (uint8, Z-H-W) of the most probable class at every voxel (before post-processing)."""
    out = np.empty(np.shape(volume), np.uint8)
    for z, probs in enumerate(predict_probabilities(model, info, volume, tile, overlap, device)):
        out[z] = codes_of(probs.argmax(0), info.task)
    return out
