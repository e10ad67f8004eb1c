"""Model files: weights plus what is needed to use them (architecture, task, voxel size) and how they were made.

A model file is one ``torch.save`` dictionary of tensors and plain values, loaded with
``weights_only=True`` (no code is unpickled) from a local path: models never come from a hub.
The default model ships inside the package (``analysis/default_model/``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RefusedInput
from .labels import TASK_CLASSES

if TYPE_CHECKING:
    from torch import nn

FORMAT = "nanoscope-segmentation-model/1"
DEFAULT_MODEL = "default_model/unet_lcn_zernike.pt"


@dataclass(frozen=True)
class ModelFile:
    """Everything in a model file but the weights."""

    architecture: str
    task: str
    base_channels: int
    depth: int
    sequence: int
    voxel_size_um: float
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> tuple[int, ...]:
        return TASK_CLASSES[self.task]


def save_model(path: str | Path, model: nn.Module, info: ModelFile) -> None:
    """Write ``model``'s weights and ``info`` to ``path``."""
    import torch  # loaded already by whoever made the model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dataclasses.asdict(info)
    meta["provenance"] = json.dumps(info.provenance, default=str)
    torch.save({"format": FORMAT, **meta, "state_dict": model.state_dict()}, path)


def default_model_path() -> Path:
    """The model shipped with the package."""
    return Path(str(resources.files("nanoscope_daq.analysis").joinpath(DEFAULT_MODEL)))


def load_model(path: str | Path | None = None) -> tuple[nn.Module, ModelFile]:
    """The network (eval mode) and its description, from ``path`` or the shipped default."""
    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        raise RefusedInput(f"model file {path} does not exist; train one with `nanoscope train` or omit "
                                "--model to use the shipped default")
    import torch  # 2-3 s to load: not before a missing file is refused

    from .models import build_model

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises several types for foreign or damaged files
        raise RefusedInput(f"{path} is not a readable model file ({exc}); pass a file written by `nanoscope train`") \
            from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise RefusedInput(f"{path} is not a nanoscope segmentation model (format {FORMAT}); "
                         "pass a file written by `nanoscope train`")
    info = ModelFile(architecture=saved["architecture"], task=saved["task"], base_channels=saved["base_channels"],
                     depth=saved["depth"], sequence=saved["sequence"], voxel_size_um=saved["voxel_size_um"],
                     provenance=json.loads(saved["provenance"]))
    model = build_model(info.architecture, len(info.classes), info.base_channels, info.depth, info.sequence)
    model.load_state_dict(saved["state_dict"])
    return model.eval(), info
