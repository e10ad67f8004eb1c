"""nanoscope-daq: control and acquisition for a laboratory X-ray microscope."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nanoscope-daq")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
