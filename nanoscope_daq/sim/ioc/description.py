"""What the instrument is (``<P>INST:``): read-only PVs describing its imaging geometry and contrast."""

from __future__ import annotations

from caproto.server import PVGroup

from ...config import CONTRASTS, GEOMETRY_KINDS, GeometryConfig
from .pvs import enum_pv


class DescriptionIOC(PVGroup):
    """The instrument's imaging geometry and contrast, read-only: a real installation must provide these.

    Clients reconstruct and plan with the geometry these name (a cone-beam scan needs
    180 deg + the fan angle); a client whose configuration says otherwise refuses to
    scan. On a real instrument they follow its optics: a constant in the IOC's database,
    or a readback of which objective and phase ring are in the beam.
    """

    geometry = enum_pv("GEOMETRY_RBV", "Imaging geometry: cone (lab source, projection) or parallel (TXM)",
                       GEOMETRY_KINDS, read_only=True)
    contrast = enum_pv("CONTRAST_RBV", "Contrast mechanism: absorption, or zernike (the TXM's phase ring)",
                       CONTRASTS, read_only=True)

    def __init__(self, prefix: str, geometry: GeometryConfig, **kwargs) -> None:
        super().__init__(prefix, **kwargs)
        self._described = geometry

    async def initialize(self) -> None:
        await self.geometry.write(self._described.kind, verify_value=False)
        await self.contrast.write(self._described.contrast, verify_value=False)
