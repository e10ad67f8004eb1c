"""nanoscope-daq."""
