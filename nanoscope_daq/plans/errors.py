"""The error every plan raises for unusable input, before anything moves."""

from __future__ import annotations

from ..errors import RefusedInput


class PlanParameterError(RefusedInput):
    """A plan parameter cannot be used: names the parameter, the problem and the fix."""

    def __init__(self, parameter: str, problem: str, fix: str) -> None:
        self.parameter = parameter
        self.problem = problem
        self.fix = fix
        super().__init__(f"{parameter}: {problem}; {fix}")


class InstrumentNotReady(PlanParameterError):
    """The instrument's present state refuses the plan (source off, another scan holding it).

    A plan queued behind one that changes that state (``source_on`` first) is checked again
    when it runs; ``nanoscope queue add`` reports it and queues the plan all the same.
    """
