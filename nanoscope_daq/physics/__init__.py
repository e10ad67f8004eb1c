"""The imaging physics of a mouse-bone specimen, free of any instrument or EPICS knowledge.

Used by the simulator (``sim.imaging`` renders camera frames and ground truth on it) and by
the segmentation's training-data generator (``analysis.datasets``), so neither reaches
into the other. The modules each do one job: materials and spectrum (xraydb), shapes and
volumes (closed-form geometry), phantom and remodeling (the specimen over the study),
geometry and projector (rays and line integrals), raster (material labels on a grid),
contrast (absorption, Zernike optics) and presets (a tiny specimen for quick runs).
Nothing is imported here, so importing one module stays cheap.
"""
