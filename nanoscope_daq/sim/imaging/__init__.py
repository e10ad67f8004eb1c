"""The simulated camera's image formation: frames and ground truth from the shared physics.

``imager.Imager`` is what the camera IOC calls (frames and ground truth); ``exposure.Exposure``
is its input. The specimen, optics and projection physics live in ``nanoscope_daq.physics``;
what is here is the simulator's own: the sCMOS detector model (detector) and its compiled
per-pixel loops (kernels), the imager that drives the physics frame by frame, and
groundtruth (ground_truth.h5).
Nothing is imported here, so importing ``exposure`` stays cheap.
"""
