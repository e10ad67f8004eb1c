"""Segmentation models, training, inference, morphometry and 4D remodelling (docs/segmentation.md).

Analysis reads volume and labels files and never reaches back into devices; the
dataset generator borrows the simulator's phantom for ground truth.
"""
