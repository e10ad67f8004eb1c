"""The plans as message sequences, on fake devices: no IOC, no simulator, seconds.

bluesky's own plan tests are the model: step the plan as the RunEngine would, answer
its reads from ophyd's fake signals, and assert which device actions it asks for, in
which order. Every device action must be a message here; none may hide in a thread.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import pytest
from bluesky.utils import Msg, RequestAbort
from ophyd.sim import FakeEpicsSignal, fake_device_cache, make_fake_device

from nanoscope_daq.config import load_config
from nanoscope_daq.devices import Instrument
from nanoscope_daq.devices.camera_control import FrameTrigger, ReadoutSettings
from nanoscope_daq.devices.scan_camera import CameraFile, ScanCamera
from nanoscope_daq.devices.signals import ConfirmedSignal
from nanoscope_daq.plans import PLANS, PlanParameterError, fly_tomo, insitu_loading, source_off, source_on, step_tomo
from nanoscope_daq.plans.registry import parameter_help
from nanoscope_daq.plans.safety import BeamGuard

fake_device_cache[ConfirmedSignal] = FakeEpicsSignal
FakeInstrument = make_fake_device(Instrument)
UID = "0123456789abcdef0123456789abcdef"
DEVICE_ACTIONS = ("set", "prepare", "kickoff", "complete", "trigger", "stop", "collect")


@pytest.fixture
def config(tmp_path):
    return load_config().replace(paths={"data_dir": str(tmp_path)})


@pytest.fixture
def xrm():
    """A warm source with the interlock OK, a stage at 0 deg, a 512x512 camera that can run at 200 fps."""
    xrm = FakeInstrument("NS:", name="xrm")
    values = {
        xrm.source.state: "Ready", xrm.source.interlock: "OK", xrm.source.power_limit: 125.0,
        xrm.source.spot: 5.0, xrm.source.anode: "W", xrm.source.xrays: "Off", xrm.source.hv: "Off",
        xrm.source.shutter.status: "Closed", xrm.rot.max_velocity: 360.0, xrm.rot.acceleration: 0.2,
        xrm.rot.velocity: 30.0, xrm.det.cam.acquire_period: 0.005, xrm.det.cam.model: "Zyla",
        xrm.det.cam.pixel_encoding: "Mono12", xrm.det.cam.array_size.array_size_x: 512,
        xrm.det.cam.array_size.array_size_y: 512,
        xrm.load.force_limit: 100.0, xrm.load.specimen_state: "Intact", xrm.load.alarm: "No alarm",
        xrm.physio.rate: 90.0, xrm.inst.geometry: "cone", xrm.inst.contrast: "absorption",
    }
    for motor in (xrm.rot, xrm.sx, xrm.sy, xrm.sz):
        values[motor.user_readback] = 0.0
        motor.user_setpoint.sim_set_limits((-1e4, 1e4))
    for signal, value in values.items():
        signal.sim_put(value)
    xrm.source.kv.sim_set_limits((20.0, 90.0))
    return xrm


def answer(msg: Msg):
    """What the RunEngine would hand back to the plan for ``msg`` when every device does as asked."""
    if msg.command == "open_run":
        return UID
    if msg.command == "read":
        return msg.obj.read()
    if msg.command == "wait":
        return True
    if msg.command in ("stage", "unstage"):
        return [msg.obj]
    return None


def until(plan, command: str) -> list[Msg]:
    """Step ``plan`` up to and including its first ``command`` message."""
    sent = [next(plan)]
    while sent[-1].command != command:
        sent.append(plan.send(answer(sent[-1])))
    return sent


def messages(plan, *, throw_at: Callable[[Msg], bool] | None = None) -> list[Msg]:
    """Step ``plan`` to its end; with ``throw_at``, abort it (RequestAbort) after its first message that matches."""
    sent: list[Msg] = []
    response = None
    thrown = False
    while True:
        try:
            if throw_at is not None and not thrown and sent and throw_at(sent[-1]):
                thrown = True
                msg = plan.throw(RequestAbort())
            else:
                msg = plan.send(response)
        except StopIteration:
            return sent
        except RequestAbort:
            return sent
        sent.append(msg)
        response = answer(msg)


def actions(sent: list[Msg]) -> list[tuple]:
    """The device actions of a message list, as (command, object name, first argument)."""
    return [(m.command, getattr(m.obj, "name", None), m.args[0] if m.args else None)
            for m in sent if m.command in DEVICE_ACTIONS]


def index(sent: list[Msg], command: str, obj_type: type | None = None, arg=None) -> int:
    for i, m in enumerate(sent):
        if m.command == command and (obj_type is None or isinstance(m.obj, obj_type)) \
                and (arg is None or (m.args and m.args[0] == arg)):
            return i
    raise AssertionError(f"no {command} {obj_type} {arg} in {actions(sent)}")


def test_a_fly_scan_is_a_sequence_of_bluesky_messages(xrm, config):
    sent = messages(fly_tomo(xrm, projections=90, exposure_s=0.004, flats_when="before", darks=2, flats=3,
                             config=config))
    commands = [m.command for m in sent]
    assert "wait_for" not in commands  # nothing waits on a hidden thread
    assert sent[0].command == "stage" and sent[0].obj is xrm.wd  # the instrument is taken before anything changes
    readout = index(sent, "prepare", ScanCamera, ReadoutSettings(4, 0.004))
    open_run = commands.index("open_run")
    assert readout < open_run  # the frame period is known before the run's checks finish
    start = sent[open_run].kwargs
    assert start["plan_name"] == "fly_tomo"
    assert start["plan_args"]["projections"] == 90 and start["plan_args"]["range_deg"] is None  # as called
    fan_deg = 2 * math.degrees(math.atan(config.detector.pixels_x * config.detector.pixel_um / 2000
                                         / config.geometry.source_detector_mm))
    assert start["scan"]["range_deg"] == pytest.approx(math.ceil(180 + fan_deg))  # a cone-beam short scan
    assert start["plan_args"]["flats_when"] == "before" and "config" not in start["plan_args"]
    assert [m.kwargs["name"] for m in sent if m.command == "declare_stream"] == ["darks", "flats", "projections"]
    camera_file = index(sent, "prepare", ScanCamera, CameraFile(f"fly_tomo_{UID[:8]}"))
    camera_open = index(sent, "kickoff", ScanCamera)
    guard = index(sent, "stage", BeamGuard)
    source = index(sent, "set", None, (60.0, 10.0))
    darks = index(sent, "prepare", ScanCamera, FrameTrigger(2, 0.004))
    flats = index(sent, "prepare", ScanCamera, FrameTrigger(3, 0.004))
    flyer = index(sent, "kickoff", None)
    fly_kickoff = next(i for i, m in enumerate(sent) if m.command == "kickoff" and m.obj.name == "xrm_flyer")
    fly_wait = next(i for i, m in enumerate(sent) if m.command == "wait" and m.kwargs.get("timeout"))
    camera_done = index(sent, "complete", ScanCamera)
    close_run = commands.index("close_run")
    assert open_run < camera_file < camera_open < guard < source < darks < flats < fly_kickoff < fly_wait
    assert flyer == camera_open  # the camera file opens before the flyer starts
    released = next(i for i, m in enumerate(sent) if m.command == "unstage" and m.obj is xrm.wd)
    assert fly_wait < camera_done < released < close_run
    # darks with the shutter closed; flats: the specimen out, the shutter open, frames, the shutter
    # closed, the specimen back
    assert actions(sent[source + 1:darks]) == [("set", "xrm_source_shutter", "close")]
    flat_moves = [a[1:] for a in actions(sent[darks:fly_kickoff]) if a[0] == "set"]
    assert flat_moves == [("xrm_sx", config.scan.flats_offset_mm), ("xrm_source_shutter", "open"),
                          ("xrm_source_shutter", "close"), ("xrm_sx", 0.0)]
    # the beam guard is unstaged before the file is completed, and again by the finalize step
    unstages = [i for i, m in enumerate(sent) if m.command == "unstage" and isinstance(m.obj, BeamGuard)]
    assert unstages[0] < camera_done and len(unstages) == 2


def test_an_abort_mid_fly_turns_the_beam_off_before_keeping_the_frames(xrm, config):
    def flyer_started(msg: Msg) -> bool:
        return msg.command == "kickoff" and msg.obj.name == "xrm_flyer"

    sent = messages(fly_tomo(xrm, projections=90, exposure_s=0.004, config=config), throw_at=flyer_started)
    thrown = next(i for i, m in enumerate(sent) if flyer_started(m))
    after = [m for m in sent[thrown + 1:] if m.command != "remove_suspender"]
    assert after[0].command == "unstage" and isinstance(after[0].obj, BeamGuard)
    assert [m.command for m in after[1:3]] == ["complete", "wait"] and isinstance(after[1].obj, ScanCamera)
    assert "close_run" not in [m.command for m in after]  # the RunEngine closes an aborted run itself


def test_an_abort_among_the_flats_moves_the_specimen_back_into_the_field(xrm, config):
    """Else the next scan would read the specimen's place out of the field as its home, and image no specimen."""
    def shutter_opened_for_flats(msg: Msg) -> bool:
        return msg.command == "set" and msg.obj.name == "xrm_source_shutter" and msg.args == ("open",)

    sent = messages(fly_tomo(xrm, projections=90, exposure_s=0.004, flats_when="before", config=config),
                    throw_at=shutter_opened_for_flats)
    thrown = next(i for i, m in enumerate(sent) if shutter_opened_for_flats(m))
    moves = [a[1:] for a in actions(sent) if a[0] == "set" and a[1] == "xrm_sx"]
    assert moves == [("xrm_sx", config.scan.flats_offset_mm), ("xrm_sx", 0.0)]
    assert [a for a in actions(sent[thrown + 1:]) if a[0] == "set"][0][1:] == ("xrm_sx", 0.0)


@pytest.mark.parametrize("kwargs, parameter", [
    (dict(projections=0), "projections"),
    (dict(projections=90, exposure_s=-1.0), "exposure_s"),
    (dict(projections=90, binning=3), "binning"),
    (dict(projections=90, kv=500.0), "kv"),
    (dict(projections=90, gating="prospective"), "gating"),
    (dict(projections=90, subject={"subject_id": "M1"}), "subject"),
])
def test_bad_parameters_are_refused_before_any_message(xrm, config, kwargs, parameter):
    plan = fly_tomo(xrm, config=config, **kwargs)
    with pytest.raises(PlanParameterError, match=parameter):
        next(plan)


def test_a_velocity_the_camera_cannot_follow_is_refused_before_anything_moves(xrm, config):
    plan = fly_tomo(xrm, projections=3600, velocity=300.0, exposure_s=0.004, config=config)
    seen: list[Msg] = []
    with pytest.raises(PlanParameterError, match="frame period"):
        msg = next(plan)
        while True:
            seen.append(msg)
            msg = plan.send(answer(msg))
    # the instrument taken, then only the readout settings applied, to learn the frame period they allow
    assert [m.command for m in seen] == ["stage", "prepare", "wait", "read"]
    assert seen[0].obj is xrm.wd
    assert isinstance(seen[1].args[0], ReadoutSettings) and seen[3].obj is xrm.det.cam.acquire_period


def test_a_step_scan_moves_arms_and_triggers_at_each_angle(xrm, config):
    sent = messages(step_tomo(xrm, projections=4, range_deg=360.0, flats_when="none", darks=0, config=config))
    steps = [a for a in actions(sent) if a[1] in ("xrm_rot", "xrm_det_scan")]
    per_angle = [(a[0], a[2]) for a in steps if a[0] in ("set", "trigger")]
    assert per_angle == [("set", 0.0), ("trigger", None), ("set", 90.0), ("trigger", None),
                         ("set", 180.0), ("trigger", None), ("set", 270.0), ("trigger", None)]
    assert sum(1 for m in sent if m.command == "checkpoint") >= 4


def test_a_prospectively_gated_step_scan_waits_for_the_gate_as_a_message(xrm, config):
    mouse = dict(subject_id="M1", cohort="sham", treatment="none", day=0, anaesthesia="isoflurane 2%")
    sent = until(step_tomo(xrm, projections=2, gating="prospective", subject=mouse, darks=0, flats=0,
                           config=config), "wait_for")
    # at the first angle, armed for one frame, before the trigger
    assert actions(sent)[-2:] == [("set", "xrm_rot", 0.0), ("prepare", "xrm_det_scan", FrameTrigger(1, 0.01))]


def test_source_on_and_off(xrm):
    assert actions(messages(source_on(xrm, kv=50.0, power_w=8.0))) == [("set", "xrm_source", (50.0, 8.0))]
    with pytest.raises(PlanParameterError, match="kv"):
        next(source_on(xrm, kv=150.0))
    assert actions(messages(source_off(xrm))) == [("set", "xrm_source_shutter", "close"),
                                                   ("set", "xrm_source_hv", "Off")]


def test_insitu_loading_loads_each_step_and_ends_the_hold(xrm, config):
    sent = messages(insitu_loading(xrm, loads_n=[2.0, 5.0], projections=60, exposure_s=0.004, config=config))
    loads = [a for a in actions(sent) if a[1] == "xrm_load"]
    assert [a[:3] for a in loads if a[0] == "set"] == [("set", "xrm_load", 2.0), ("set", "xrm_load", 5.0),
                                                       ("set", "xrm_load", 0.0)]
    assert loads[-1][0] == "stop"


def test_every_plan_documents_every_parameter_in_numpydoc():
    for name, plan in PLANS.items():
        documented = parameter_help(plan)
        for parameter in inspect.signature(plan).parameters:
            assert documented.get(parameter), f"{name}: parameter {parameter} is not documented"
        assert inspect.signature(plan).return_annotation.startswith("MsgGenerator"), name
