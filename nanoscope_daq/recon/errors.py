"""The one error the reconstruction raises for input it cannot use."""

from __future__ import annotations


class ReconInputError(ValueError):
    """Data or parameters unfit for reconstruction; the message names the problem and the fix."""
