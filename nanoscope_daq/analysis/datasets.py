"""Labelled training data from the simulator: slices that look reconstructed, with exact ground truth.

The phantom (physics/) is rasterised at the instrument's voxel size in windows of
``size`` x ``size`` pixels around the cortex (sub-voxel supersampling for partial
volume; labels at voxel centres), ``depth`` consecutive slices per window, and turned
into a reconstructed-looking image by an image-formation model in the slice domain
(the tomographic reconstruction itself is not simulated here):

* Zernike phase contrast: a reconstructed Zernike tomogram shows the object's phase
  (delta) minus a low-passed copy of it, because the phase ring also shifts the object's
  lowest spatial frequencies (those falling inside the ring): large uniform features
  fade towards the background (shade-off) and edges gain a bright inner and a dark outer
  fringe (halo) [Vartiainen et al., Opt. Lett. 39:1601 (2014); Otaki, Opt. Rev. 7:119
  (2000)]. Model: s = g - a (G_sigma * g), g the normalised phase (bone 1, pores and
  background 0: an excised, dried specimen), a the shade-off strength and sigma the
  ring's low-pass length, G a 3-D Gaussian. Bone whose noise-free image falls below
  SHADE_OFF_LEVEL, half-way between the void (0) and bone (1) levels, is the shade-off
  class (code 5): bone that looks nearer void than bone, where a global threshold can no
  longer tell bone from void (Silveira et al., J. Synchrotron Rad. 31:136 (2024)).
* absorption micro-CT: s = attenuation normalised to bone = 1 (no shade-off class).

Then both: Gaussian blur of ``blur_fwhm_um`` (optics and reconstruction), gain and offset
(``contrast``, ``offset``), and Gaussian noise of ``noise`` (in units of the bone
signal). Limits: the noise is white, not the ramp-filtered noise of FBP; there are no
ring, streak or motion artefacts; the halo is the Gaussian-ring approximation, not the
exact ring aperture's Airy-like kernel; the specimen is one mouse-tibia phantom.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..config import PhantomConfig
from ..physics.materials import LABEL_OF_MATERIAL
from ..physics.phantom import Phantom
from ..physics.raster import MaterialGrid
from ..physics.remodeling import specimen_anatomy
from .labels import Code
from .simulated_instruments import SimulatedInstrument

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
SHADE_OFF_LEVEL = 0.5
"""Bone whose noise-free signal falls below this (bone = 1, voids = 0) is shade-off: nearer void than bone.

Half-way, not lower: the signal falls from the edge towards the plateau 1 - a (0.30-0.34)
and is flattest there; a level just above the plateau (0.35 was used first) runs where
the signal changes by 0.02 over 10 pixels, a quarter of the noise, so the label's edge
was not in the image (half the bone pixels within 0.02 above that level were missed by
every network). At 0.5 the edge lies on the steep part of the shade-off ramp (2.5x the
slope, for a thick wall at 0.6 ring lengths inside the surface instead of 1.5)."""


@dataclass(frozen=True)
class SliceStack:
    """Windows of consecutive slices: images (windows, depth, size, size) float32 and their labels (uint8)."""

    images: np.ndarray
    labels: np.ndarray
    instrument: SimulatedInstrument
    seed: int

    @property
    def slices(self) -> list[tuple[int, int]]:
        """Every (window, z) pair, window by window."""
        return [(w, z) for w in range(self.images.shape[0]) for z in range(self.images.shape[1])]


def simulate_stack(inst: SimulatedInstrument, phantom: PhantomConfig, seed: int, windows: int = 8, depth: int = 12,
                   size: int = 128, supersampling: int = 2) -> SliceStack:
    """``windows`` windows of ``depth`` slices of ``size``^2 pixels around the cortex of a phantom.

    ``phantom`` describes the specimen (a configuration's ``sim.phantom``, e.g. the tiny leg
    of :func:`nanoscope_daq.physics.presets.tiny_leg_config`); ``seed`` draws its lacunae,
    canals and the windows.
    """
    if windows < 1 or depth < 1 or size < 16:
        raise ValueError(f"need windows >= 1, depth >= 1 and size >= 16 pixels, got {windows}, {depth}, {size}")
    # Zernike nanoCT fields of view lie in compact bone without canals (like the zebrafish bone of Silveira et
    # al.): a canal's cross-section looks like a lacuna's in a few slices, and the ground truth calls it a vessel.
    if inst.modality == "zernike":
        phantom = dataclasses.replace(phantom, haversian_canal_count=0, transcortical_canal_count=0)
    state = specimen_anatomy(Phantom(phantom, seed), 0.0)
    rng = np.random.default_rng([seed, 61])
    v = inst.voxel_size_um * 1e-3
    images = np.empty((windows, depth, size, size), np.float32)
    labels = np.empty((windows, depth, size, size), np.uint8)
    outer, inner = state.periosteum, state.endosteum
    for w in range(windows):
        angle = 2 * np.pi * (w + rng.uniform(0, 1)) / windows
        # Window centres from just inside the marrow to just outside the periosteum.
        rim = rng.uniform(-0.15, 1.15)
        ax = inner.a + rim * (outer.a - inner.a)
        by = inner.b + rim * (outer.b - inner.b)
        cx, cy = outer.cx + ax * np.cos(angle), outer.cy + by * np.sin(angle)
        cz = rng.uniform(-0.5, 0.5) * (2 * state.bone_half_length - 2 * depth * v)
        xs = cx + (np.arange(size * supersampling) + 0.5 - size * supersampling / 2) * v / supersampling
        ys = cy + (np.arange(size * supersampling) + 0.5 - size * supersampling / 2) * v / supersampling
        zs = cz + (np.arange(depth) + 0.5 - depth / 2) * v
        fine = LABEL_OF_MATERIAL[MaterialGrid(state, xs, ys).slab(zs)]
        centre = supersampling // 2
        labels[w] = fine[:, centre::supersampling, centre::supersampling]
        signal = np.asarray(inst.levels, np.float32)[fine]
        signal = signal.reshape(depth, size, supersampling, size, supersampling).mean(axis=(2, 4))
        images[w], shade = _form_image(signal, inst, rng)
        if inst.modality == "zernike":
            labels[w][(labels[w] == Code.BONE) & shade] = Code.SHADE_OFF
    return SliceStack(images, labels, inst, seed)


def _form_image(signal: np.ndarray, inst: SimulatedInstrument,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The image of a noise-free signal stack, and where it is below SHADE_OFF_LEVEL (shade-off where bone)."""
    px = inst.voxel_size_um
    if inst.shade_off > 0:
        low = ndimage.gaussian_filter(signal, inst.ring_lowpass_um / px, mode="reflect")
        signal = signal - inst.shade_off * low
    sigma = inst.blur_fwhm_um / px / FWHM_PER_SIGMA
    clean = ndimage.gaussian_filter(signal, (0, sigma, sigma), mode="reflect")
    noisy = clean + rng.normal(0.0, inst.noise, clean.shape)
    return (inst.offset + inst.contrast * noisy).astype(np.float32), clean < SHADE_OFF_LEVEL

