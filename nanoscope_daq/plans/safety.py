"""Keeping the animal and the data safe: the shutter closes whenever a scan stops moving forward.

:class:`BeamGuard` is staged by every scan. The RunEngine calls its ``pause()`` on a
pause (Ctrl-C) or a suspension: it ends a running fly segment (so the next kickoff
resumes at the first angle not imaged) and closes the shutter; ``resume()`` re-opens
it if the source still emits. Abort, stop and errors close the shutter through the
plans' ``finalize`` step (:func:`close_shutter_quietly`). Suspenders watch the source
interlock and the physiology alarm; after either clears, the beam is restored and
flats are re-taken before the scan goes on.
"""

from __future__ import annotations

import logging

from bluesky.suspenders import SuspendBoolHigh, SuspendWhenChanged

from ..devices import Instrument
from ..devices.flyer import TomoFlyer

log = logging.getLogger(__name__)
SHUTTER_TIMEOUT_S = 5.0
SUSPENSION_ATTEMPTS = 50
"""bluesky gives the RunEngine's event loop 0.1 s to make a suspender's event, and a loop held
longer (a plan's Channel Access reads on a loaded machine) loses the trip: the suspender raises
in the monitor callback and the scan runs on without beam (seen once in CI). 50 tries: 5 s."""


class PatientSuspension:
    """Mixin for bluesky suspenders: try again to make the suspension event rather than lose a trip."""

    def __call__(self, value, **kwargs):
        for _ in range(SUSPENSION_ATTEMPTS - 1):
            try:
                return super().__call__(value, **kwargs)
            except RuntimeError as exc:
                if "suspender event" not in str(exc):
                    raise
        return super().__call__(value, **kwargs)


class InterlockSuspender(PatientSuspension, SuspendWhenChanged):
    """Suspends while the source interlock is not OK."""


class AlarmSuspender(PatientSuspension, SuspendBoolHigh):
    """Suspends while the physiology alarm is raised."""


class BeamGuard:
    """Closes the shutter on pause/suspend (after ending a fly segment) and re-opens it on resume."""

    def __init__(self, xrm: Instrument, flyer: TomoFlyer | None = None) -> None:
        self.xrm = xrm
        self.flyer = flyer
        self.name = f"{xrm.name}_beam_guard"
        self.parent = None
        self._reopen = False

    def stage(self) -> list:
        return [self]

    def unstage(self) -> list:
        return [self]

    def pause(self) -> None:
        if self.flyer is not None:
            self.flyer.interrupt()
        shutter = self.xrm.source.shutter
        self._reopen = shutter.status.get() == "Open"
        shutter.set("close").wait(SHUTTER_TIMEOUT_S)

    def resume(self) -> None:
        if self._reopen and self.xrm.source.xrays.get() == "On":
            self.xrm.source.shutter.set("open").wait(SHUTTER_TIMEOUT_S)
        self._reopen = False


def close_shutter_quietly(xrm: Instrument) -> None:
    """Close the shutter at the end of a scan, whatever happened; log (not raise) if it cannot."""
    try:
        xrm.source.shutter.set("close").wait(SHUTTER_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 -- the scan's own error is the one to report
        log.error("could not close the shutter at the end of the scan: %s", exc)


def safety_suspenders(xrm: Instrument, *, in_vivo: bool, recover, sleep_s: float = 1.0) -> list:
    """Suspend on an interlock trip and (in vivo) on a physiology alarm; ``recover()`` is the post-plan."""
    suspenders = [
        InterlockSuspender(
            xrm.source.interlock, expected_value="OK", allow_resume=True, sleep=sleep_s, post_plan=recover,
            tripped_message="the source interlock tripped: waiting for it to be reset",
        )
    ]
    if in_vivo:
        suspenders.append(
            AlarmSuspender(
                xrm.physio.alarm, sleep=sleep_s, post_plan=recover,
                tripped_message="physiology alarm: waiting for the animal's vitals to recover",
            )
        )
    return suspenders
