"""Keeping the animal and the data safe: the shutter closes whenever a scan stops moving forward.

:class:`BeamGuard` is staged by every scan. The RunEngine calls its ``pause()`` on a
pause (Ctrl-C) or a suspension: it ends a running fly segment (so the next kickoff
resumes at the first angle not imaged) and closes the shutter; ``resume()`` re-opens
it if the source still emits. Its ``unstage()`` (the run's end, or the RunEngine's own
clean-up after an abort, a stop or an error) ends the fly segment and closes the
shutter too. Suspenders watch the source interlock and the physiology alarm; after
either clears, the beam is restored and flats are re-taken before the scan goes on.
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
        """The run ends, however: no fly segment running, the shutter closed (logged, not raised, if it cannot)."""
        self._beam_off()
        return [self]

    def pause(self) -> None:
        """End a fly segment (it closes the shutter itself), then close the shutter a step scan left open.

        Only a shutter still open after the segment ended is re-opened on resume: a fly
        segment opens it again itself once the stage waits at its run-up.
        """
        if self.flyer is not None:
            self.flyer.interrupt()
        self._reopen = self.xrm.source.shutter.status.get() == "Open"
        self._close_shutter()

    def _beam_off(self) -> None:
        if self.flyer is not None:
            self.flyer.interrupt()
        self._close_shutter()

    def _close_shutter(self) -> None:
        try:
            self.xrm.source.shutter.set("close").wait(SHUTTER_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 -- the scan's own error is the one to report
            log.error("could not close the shutter: %s", exc)

    def resume(self) -> None:
        if self._reopen and self.xrm.source.xrays.get() == "On":
            self.xrm.source.shutter.set("open").wait(SHUTTER_TIMEOUT_S)
        self._reopen = False


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
