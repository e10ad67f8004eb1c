"""The one error every command turns into a refusal: input it cannot use, named with its fix.

``nanoscope`` exits with code 2 and one line for a :class:`RefusedInput` (a bad plan
parameter, configuration key, file or option), 1 with one line for any other failure,
and 130 when interrupted; ``--debug`` adds the traceback.
"""

from __future__ import annotations


class RefusedInput(ValueError):
    """Input that cannot be used; the message names the problem and the fix. Raised before anything changes."""


class Interrupted(RuntimeError):
    """The operator interrupted the command (Ctrl-C, then abort): exit code 130."""
