"""The one error the reconstruction raises for input it cannot use."""

from __future__ import annotations

from ..errors import RefusedInput


class ReconInputError(RefusedInput):
    """Data or parameters unfit for reconstruction; the message names the problem and the fix."""
