"""The simulated instruments whose images the training data imitate (datasets.py forms the images).

A module of its own, free of the phantom's physics, so that ``nanoscope train`` refuses
an unknown instrument before anything heavy loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RefusedInput


@dataclass(frozen=True)
class SimulatedInstrument:
    """One simulated instrument: how labels become a reconstructed-looking image."""

    name: str
    modality: str
    """'zernike' (nanoCT, task 'lcn') or 'absorption' (micro-CT, task 'bone')."""
    voxel_size_um: float
    levels: tuple[float, float, float, float, float]
    """Noise-free signal of labels 0..4 (background, soft tissue, bone, LCN, vessel), bone = 1."""
    shade_off: float
    """Fraction of the signal's low frequencies the phase ring removes (0: none)."""
    ring_lowpass_um: float
    """Gaussian sigma of the low frequencies removed (sets the halo's width)."""
    blur_fwhm_um: float
    noise: float
    """Gaussian noise sigma in units of the bone signal."""
    contrast: float
    offset: float

    @property
    def task(self) -> str:
        return "lcn" if self.modality == "zernike" else "bone"


SIMULATED_INSTRUMENTS: dict[str, SimulatedInstrument] = {
    # Two Zernike TXMs differing in noise, contrast and artefact strength (Silveira et al. used ANATOMIX and P05).
    "zernike-a": SimulatedInstrument("zernike-a", "zernike", 0.5, (0.0, 0.0, 1.0, 0.0, 0.0), shade_off=0.7,
                                      ring_lowpass_um=8.0, blur_fwhm_um=0.6, noise=0.08, contrast=1.0, offset=0.0),
    "zernike-b": SimulatedInstrument("zernike-b", "zernike", 0.5, (0.0, 0.0, 1.0, 0.0, 0.0), shade_off=0.66,
                                      ring_lowpass_um=6.0, blur_fwhm_um=0.8, noise=0.15, contrast=0.6, offset=0.3),
    # The in-vivo absorption micro-CT: bone against marrow and muscle.
    "microct": SimulatedInstrument("microct", "absorption", 2.0, (0.0, 0.25, 1.0, 0.25, 0.27), shade_off=0.0,
                                    ring_lowpass_um=1.0, blur_fwhm_um=2.5, noise=0.05, contrast=1.0, offset=0.0),
}


def simulated_instrument(name: str) -> SimulatedInstrument:
    """The named simulated instrument."""
    if name not in SIMULATED_INSTRUMENTS:
        raise RefusedInput(f"unknown simulated instrument {name!r}; choose one of {', '.join(SIMULATED_INSTRUMENTS)}")
    return SIMULATED_INSTRUMENTS[name]
