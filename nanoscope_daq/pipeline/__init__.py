"""Bluesky callbacks that consume a scan's documents: the NXtomo writer (more to come)."""

from __future__ import annotations

from ..documents import DocumentContractError, ImageKey
from .nxtomo_writer import NXtomoWriter, nxtomo_path

__all__ = ["DocumentContractError", "ImageKey", "NXtomoWriter", "nxtomo_path"]
