"""Segmentation of whole volumes: overlapping tiles, CPU or CUDA, then post-processing.

A slice that fits in one ``tile`` (after padding to the network's multiple) goes through
the network whole: no tiles, no blending, and the labels are the argmax of the logits.
A larger slice (with its neighbours for Sensor3D) is cut into ``tile`` x ``tile`` tiles
overlapping by ``overlap`` pixels; the class probabilities of the tiles are blended
with weights that fall towards the tile edges (where a network sees least context) and
the most probable class wins. The volume is normalised by its own 1st and 99th
percentiles first, as the training data were.

Speed (inference_model): batch normalisation is folded into the convolution before it
(one pass over the features instead of two; the outputs agree to float rounding), and
on the CPU the features are kept channels-last, the layout oneDNN's convolutions run
fastest in for few channels.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..errors import RefusedInput
from .labels import codes_of
from .model_files import ModelFile
from .training import normalise, sequence_of


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu' or 'cuda'; asking for CUDA without it is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RefusedInput("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise RefusedInput(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def _fold_batch_norm(module: nn.Module) -> None:
    """Replace every Conv2d followed by BatchNorm2d inside a Sequential by one equivalent Conv2d (eval mode)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            layers, folded = list(child), []
            while layers:
                layer = layers.pop(0)
                if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                    layer = fuse_conv_bn_eval(layer, layers.pop(0))
                folded.append(layer)
            setattr(module, name, nn.Sequential(*folded))
        else:
            _fold_batch_norm(child)


def inference_model(model: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """A copy of ``model`` for inference on ``device``: eval mode, batch norm folded, channels-last on the CPU."""
    device = torch.device(device)
    fast = copy.deepcopy(model).eval()
    _fold_batch_norm(fast)
    fast = fast.to(device)
    return fast.to(memory_format=torch.channels_last) if device.type == "cpu" else fast


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


def _run(model: nn.Module, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Logits of a (batch, T, H, W) input, in the layout the model was prepared for."""
    t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
    return model(t.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else t)


@torch.inference_mode()
def _slice_outputs(model: nn.Module, info: ModelFile, volume: np.ndarray, tile: int, overlap: int,
                   device: torch.device, batch: int, normalised: bool) -> Iterator[tuple[bool, torch.Tensor]]:
    """Per slice: (True, logits) when the slice went through whole, else (False, blended probabilities);
    both (classes, H, W)."""
    fast = inference_model(model, device)
    volume = np.asarray(volume, dtype=np.float32)
    if not normalised:
        volume = normalise(volume)
    multiple = 2**info.depth
    depth, h, w = volume.shape
    tile = max(multiple, tile - tile % multiple)
    hp, wp = h + (-h) % multiple, w + (-w) % multiple
    if hp <= tile and wp <= tile:
        # Whole slices; on the CPU one at a time (the features of one 512^2 slice stay in cache, a batch does not).
        per_call = batch if device.type == "cuda" else 1
        for z0 in range(0, depth, per_call):
            x = np.stack([_padded(sequence_of(volume, z, info.sequence), multiple)
                          for z in range(z0, min(z0 + per_call, depth))])
            for logits in _run(fast, x, device):
                yield True, logits[:, :h, :w]
        return
    th, tw = min(tile, hp), min(tile, wp)
    weights = torch.from_numpy(_blend_weights(th, tw, overlap)).to(device)
    for z in range(depth):
        seq = _padded(sequence_of(volume, z, info.sequence), multiple)
        total = torch.zeros((len(info.classes), hp, wp), device=device)
        norm = torch.zeros((hp, wp), device=device)
        corners = list(_tiles(hp, wp, tile, overlap))
        for k in range(0, len(corners), batch):
            chunk = corners[k:k + batch]
            x = np.stack([seq[:, y0:y0 + th, x0:x0 + tw] for y0, x0 in chunk])
            for (y0, x0), p in zip(chunk, torch.softmax(_run(fast, x, device), dim=1), strict=True):
                total[:, y0:y0 + th, x0:x0 + tw] += p * weights
                norm[y0:y0 + th, x0:x0 + tw] += weights
        yield False, (total / norm)[:, :h, :w]


def predict_probabilities(model: nn.Module, info: ModelFile, volume: np.ndarray, tile: int = 256,
                          overlap: int = 32, device: torch.device | str = "cpu", batch: int = 8,
                          normalised: bool = False) -> Iterator[np.ndarray]:
    """Class probabilities (classes, H, W) of each slice of a (Z, H, W) volume, slice by slice
    (``normalised``: the volume is already on the training scale, see training.normalise)."""
    for whole, out in _slice_outputs(model, info, volume, tile, overlap, torch.device(device), batch, normalised):
        yield (torch.softmax(out, dim=0) if whole else out).float().cpu().numpy()


def segment_volume(model: nn.Module, info: ModelFile, volume: np.ndarray, tile: int = 256, overlap: int = 32,
                   device: torch.device | str = "cpu", batch: int = 8) -> np.ndarray:
    """Label codes (uint8, Z-H-W) of the most probable class at every voxel (before post-processing)."""
    out = np.empty(np.shape(volume), np.uint8)
    for z, (_, scores) in enumerate(_slice_outputs(model, info, volume, tile, overlap, torch.device(device), batch,
                                                   normalised=False)):
        out[z] = codes_of(scores.argmax(0).cpu().numpy(), info.task)
    return out
