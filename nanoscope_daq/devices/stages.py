"""Stage devices: the air-bearing rotation stage (an EPICS motor record that can spin).

Sample stages are stock ``ophyd.EpicsMotor``. The rotation stage adds what a
tomography operator needs: the record's max velocity, encoder and status fields,
and :class:`ContinuousRotation` (``rot.spin``), which turns the stage continuously
(slip ring, no cable wrap) with the record's jog fields, usable from a plan as
``yield from bps.mv(xrm.rot.spin, 30)`` ... ``yield from bps.mv(xrm.rot.spin, 0)``.
"""

from __future__ import annotations

import threading

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO
from ophyd.status import DeviceStatus, StatusBase, SubscriptionStatus

from .pso import PositionSyncOutput

# Margin added to the longest ramp (2 x ACCL, a reversal) before a spin status times out.
SPIN_TIMEOUT_MARGIN_S = 10.0
# A measured speed within this fraction of the request (plus encoder quantisation) is "at speed".
AT_SPEED_TOLERANCE = 0.01


class RotationStopped(RuntimeError):
    """The stage came to rest before it reached the requested rotation speed."""


class ContinuousRotation(Device):
    """Continuous rotation through the record's jog fields: ``set(v)`` turns at ``v`` egu/s.

    The sign of ``v`` is the direction. ``set(v)`` completes once the encoder readback
    shows the stage turning at ``v``; ``set(0)`` stops it and completes at rest.
    Only usable as a component of a :class:`RotationStage`.
    """

    velocity = Cpt(EpicsSignal, ".JVEL", kind="config", limits=True)
    forward = Cpt(EpicsSignal, ".JOGF", kind="omitted")
    reverse = Cpt(EpicsSignal, ".JOGR", kind="omitted")

    def set(self, velocity: float, *, timeout: float | None = None) -> StatusBase:
        stage: RotationStage = self.parent
        if velocity == 0:
            self.forward.put(0, wait=False)
            self.reverse.put(0, wait=False)
            return SubscriptionStatus(stage.motor_done_move, lambda value, **_: value == 1, timeout=timeout)
        speed, vmax = abs(velocity), stage.max_velocity.get()
        if speed > vmax:
            raise ValueError(
                f"{self.name}: rotation speed {speed} {stage.egu}/s exceeds the stage's max velocity "
                f"{vmax} {stage.egu}/s (VMAX); choose at most {vmax}"
            )
        if timeout is None:
            timeout = 2 * stage.acceleration.get() + SPIN_TIMEOUT_MARGIN_S
        status = self._at_speed_status(velocity, timeout)
        self.velocity.put(speed, wait=True)
        (self.forward if velocity > 0 else self.reverse).put(1, wait=False)
        return status

    def _at_speed_status(self, velocity: float, timeout: float) -> DeviceStatus:
        """Done when two consecutive readback intervals show ``velocity``; failed if the stage stops."""
        stage: RotationStage = self.parent
        status = DeviceStatus(self, timeout=timeout)
        quantum = stage.motor_resolution.get()
        last: dict[str, float] = {}
        hits = [0]
        settle = threading.Lock()  # readback and DMOV callbacks come from different CA threads
        settled = [False]  # Status.done turns True only after set_finished's own thread runs

        def on_readback(value, timestamp, **_):
            if "t" in last and timestamp > last["t"]:
                dt = timestamp - last["t"]
                measured = (value - last["position"]) / dt
                close = abs(measured - velocity) <= AT_SPEED_TOLERANCE * abs(velocity) + 2 * quantum / dt
                hits[0] = hits[0] + 1 if close else 0
                if hits[0] >= 2:
                    with settle:
                        if not settled[0]:
                            settled[0] = True
                            status.set_finished()
            last.update(t=timestamp, position=value)

        def on_done_moving(value, old_value, **_):
            if old_value == 0 and value == 1:
                with settle:
                    if settled[0]:
                        return
                    settled[0] = True
                    status.set_exception(RotationStopped(
                        f"{self.name}: the stage stopped before turning at {velocity} {stage.egu}/s "
                        f"(stopped, or a soft limit reached: LLM/HLM)"
                    ))

        readback_cid = stage.user_readback.subscribe(on_readback, run=False)
        done_cid = stage.motor_done_move.subscribe(on_done_moving, run=False)

        def unsubscribe(_status) -> None:
            stage.user_readback.unsubscribe(readback_cid)
            stage.motor_done_move.unsubscribe(done_cid)

        status.add_callback(unsubscribe)
        return status


class RotationStage(EpicsMotor):
    """The sample rotation stage: a motor record with max velocity, encoder and continuous rotation.

    VELO and JVEL are checked against VMAX before they are written (their control limits).
    """

    velocity = Cpt(EpicsSignal, ".VELO", kind="config", limits=True, auto_monitor=True)
    max_velocity = Cpt(EpicsSignal, ".VMAX", kind="config")
    motor_resolution = Cpt(EpicsSignal, ".MRES", kind="config")
    dial_readback = Cpt(EpicsSignalRO, ".DRBV", kind="omitted")
    encoder_position = Cpt(EpicsSignalRO, ".REP", kind="omitted")
    limit_violation = Cpt(EpicsSignalRO, ".LVIO", kind="omitted")
    motor_status = Cpt(EpicsSignalRO, ".MSTA", kind="omitted")
    stop_pause_move_go = Cpt(EpicsSignal, ".SPMG", kind="omitted", string=True)
    spin = Cpt(ContinuousRotation, "", kind="config")
    pso = Cpt(PositionSyncOutput, ":PSO:", kind="config")
    """Position-synchronized output: one camera trigger per angle step during a fly scan."""

    def __init__(self, prefix: str = "", *, name: str, **kwargs) -> None:
        super().__init__(prefix, name=name, **kwargs)
        self.max_velocity.subscribe(self._on_max_velocity_changed, run=False)

    def _on_max_velocity_changed(self, value, old_value, **_) -> None:
        """VMAX bounds VELO and JVEL: refresh their control limits, as EpicsMotor does for HLM/LLM.

        The first event after connecting (no old value) refreshes too: when VMAX is written
        before the subscription's initial update arrives, that first event is the change."""
        if not self.connected or value == old_value:
            return
        for signal in (self.velocity, self.spin.velocity):
            ctrl = signal._read_pv.get_ctrlvars()
            if ctrl is not None:
                signal._metadata_changed(signal.pvname, ctrl, from_monitor=True, update=True)
