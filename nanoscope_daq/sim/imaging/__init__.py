"""Imaging physics of the simulated microscope: the mouse-bone phantom, X-ray optics, the camera.

``imager.Imager`` is what the camera IOC calls (frames and ground truth); ``exposure.Exposure``
is its input. The modules each do one job: materials and spectrum (xraydb), shapes,
phantom and remodeling (the specimen over the study), geometry and projector (line
integrals), contrast (absorption, Zernike), detector (sCMOS noise), raster, volumes and
groundtruth (ground_truth.h5), presets (a tiny specimen for quick runs).
Nothing is imported here, so importing ``exposure`` stays cheap.
"""
