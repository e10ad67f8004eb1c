"""ophyd devices speaking Channel Access to the instrument's IOCs (real or simulated)."""

from .instrument import Instrument

__all__ = ["Instrument"]
