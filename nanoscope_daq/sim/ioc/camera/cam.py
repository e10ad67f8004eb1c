"""ADAndor3 driver (``<P>CAM:cam1:``): sensor timing, trigger modes and the frame pipeline.

Exposures are timed on the simulator clock: frame ``k`` of an Internal sequence
starts at ``t0 + k * period`` exactly, an External frame at the PSO pulse's time.
At the end of each exposure the world's state at mid-exposure is captured and the
frame goes to the :class:`~.pipeline.FramePipeline` (render threads, in-order
delivery to the plugins once read out and rendered).

Frames are never lost: each holds its bytes of the camera's frame memory
(``sim.camera.buffer_mb``) from exposure start until the plugins have it. With the memory
full the next exposure waits (Internal: counted in BufferStalls_RBV) or the trigger
is ignored (External: counted in MissedTriggers_RBV), as a real camera's full buffer does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...world import World
from ..pso import TriggerLine, TriggerPulse
from ..pvs import cancel_and_wait
from .frames import FrameTiming, FrameWindow, observe
from .ground_truth import GroundTruthRecorder
from .params import DISABLE_ENABLE, NO_YES, OFF_ON, Param, on_put, param_group_class, plain, rbv, ro
from .pipeline import FramePipeline, PendingFrame
from .plugin import COLOR_MODES, DATA_TYPES, NDArray, NDPluginIOC
from .timing import ENCODING_BITS, PIXEL_ENCODINGS, SHUTTER_MODES, SensorTiming

DETECTOR_STATES = (
    "Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error", "Waiting", "Initializing",
    "Disconnected", "Aborted",
)
IMAGE_MODES = ("Single", "Multiple", "Continuous")
TRIGGER_MODES = ("Internal", "Software", "External", "External Start", "External Exposure")
BINNINGS = {"1x1": 1, "2x2": 2, "3x3": 3, "4x4": 4, "8x8": 8}
PRE_AMP_GAINS = ("12-bit (high well cap.)", "16-bit (dual amplifier)")
"""Gain modes: 12-bit digitises the same electrons as 16-bit with 16 times fewer levels."""
TEMP_STATUS = ("Stabilised", "Cooling", "Drift", "Not Stabilised", "Fault", "Cooler Off")
COOLER_RANGE_C = (-25.0, 25.0)
HOUSEKEEPING_PERIOD_S = 1.0

CAM_PARAMS: tuple[Param, ...] = (
    rbv("ArrayCounter", 0, "Arrays produced (also each array's UniqueId)"),
    ro("ArrayRate_RBV", 0.0, "Arrays produced per second", units="Hz"),
    plain("AsynIO", 0, "asyn record (not used by the simulator)"),
    plain("NDAttributesFile", "", "NDAttributes XML file (the simulator's attributes are built in)", long=True,
          fixed=True),
    ro("PoolAllocBuffers", 0, "Frames in the frame memory (exposed, not yet with the plugins)"),
    ro("PoolFreeBuffers", 0, "Full frames the free frame memory could still hold"),
    ro("PoolMaxBuffers", 0, "Full frames the frame memory holds"),
    ro("PoolMaxMem", 0.0, "Frame memory (sim.camera.buffer_mb)", units="MB"),
    ro("PoolUsedBuffers", 0, "Frames in the frame memory (exposed, not yet with the plugins)"),
    ro("PoolUsedMem", 0.0, "Frame memory in use", units="MB"),
    ro("PortName_RBV", "", "asyn port of the driver (the plugins' NDArrayPort)"),
    rbv("Acquire", "Done", "Start (Acquire) or stop (Done); returns to Done when the sequence ends",
        enum=("Done", "Acquire")),
    rbv("AcquireTime", 0.0, "Exposure time; clamped to the sensor's range", units="s"),
    rbv("AcquirePeriod", 0.0, "Frame period; the readback is clamped to exposure + readout", units="s"),
    rbv("ArrayCallbacks", "Enable", "Pass arrays to the plugins", enum=DISABLE_ENABLE),
    ro("ArraySizeX_RBV", 0, "Width of the arrays produced"),
    ro("ArraySizeY_RBV", 0, "Height of the arrays produced"),
    ro("ArraySizeZ_RBV", 0, "Depth of the arrays produced (0: 2-D)"),
    ro("ArraySize_RBV", 0, "Bytes per array", units="B"),
    rbv("BinX", 1, "Horizontal binning (follows A3Binning)"),
    rbv("BinY", 1, "Vertical binning (follows A3Binning)"),
    rbv("ColorMode", "Mono", "Colour mode", enum=COLOR_MODES, fixed=True),
    rbv("DataType", "UInt16", "Data type (UInt16 for Mono12 and Mono16)", enum=DATA_TYPES, fixed=True, record="mbbi"),
    ro("DetectorState_RBV", "Idle", "Idle, Acquire (sequence running), Waiting (for a trigger), Error",
       enum=DETECTOR_STATES),
    rbv("FrameType", "Normal", "Frame type label (metadata)", enum=("Normal", "Background", "FlatField")),
    rbv("Gain", 1.0, "Gain", fixed=True),
    rbv("ImageMode", "Multiple", "Single: one frame; Multiple: NumImages; Continuous: until stopped",
        enum=IMAGE_MODES),
    ro("Manufacturer_RBV", "", "Camera manufacturer"),
    ro("Model_RBV", "", "Camera model"),
    ro("MaxSizeX_RBV", 0, "Sensor width", units="px"),
    ro("MaxSizeY_RBV", 0, "Sensor height", units="px"),
    rbv("MinX", 0, "ROI start column (sensor pixels)", units="px"),
    rbv("MinY", 0, "ROI start row (sensor pixels)", units="px"),
    rbv("SizeX", 0, "ROI width (sensor pixels)", units="px"),
    rbv("SizeY", 0, "ROI height (sensor pixels)", units="px"),
    rbv("NumExposures", 1, "Exposures per image", fixed=True),
    ro("NumExposuresCounter_RBV", 0, "Exposures of the present image"),
    rbv("NumImages", 1, "Frames in Multiple mode"),
    ro("NumImagesCounter_RBV", 0, "Frames produced in the present sequence"),
    plain("ReadStatus", "Done", "Write Read to refresh the readbacks", enum=("Done", "Read")),
    rbv("ReverseX", "No", "Mirror the frames horizontally", enum=NO_YES),
    rbv("ReverseY", "No", "Mirror the frames vertically", enum=NO_YES),
    rbv("ShutterMode", "None", "Shutter control (the source's shutter is separate)",
        enum=("None", "EPICS PV", "Detector output"), fixed=True),
    rbv("ShutterControl", "Close", "Shutter command (ShutterMode None: no effect)", enum=("Close", "Open")),
    plain("ShutterControlEPICS", "Close", "EPICS shutter command", enum=("Close", "Open")),
    plain("ShutterOpenEPICS", 1.0, "Value written to open an EPICS shutter"),
    plain("ShutterCloseEPICS", 0.0, "Value written to close an EPICS shutter"),
    plain("ShutterFanout", 0, "Shutter fan-out record"),
    rbv("ShutterOpenDelay", 0.0, "Shutter opening delay", units="s"),
    rbv("ShutterCloseDelay", 0.0, "Shutter closing delay", units="s"),
    ro("ShutterStatus_RBV", "Closed", "Detector shutter status", enum=("Closed", "Open")),
    ro("ShutterStatusEPICS_RBV", "Closed", "EPICS shutter status", enum=("Closed", "Open")),
    ro("StatusMessage_RBV", "", "Driver status or the last error", long=True),
    ro("StringFromServer_RBV", "", "Last reply of the camera's server", long=True),
    ro("StringToServer_RBV", "", "Last command to the camera's server", long=True),
    rbv("Temperature", 0.0, "Sensor temperature set point", units="C"),
    ro("TemperatureActual", 25.0, "Sensor temperature", units="C"),
    ro("TimeRemaining_RBV", 0.0, "Time left in the present sequence", units="s"),
    rbv("TriggerMode", "Internal", "Internal, Software, External (one frame per pulse), External Start, "
        "External Exposure (exposure = pulse width)", enum=TRIGGER_MODES),
    rbv("A3Binning", "1x1", "Binning", enum=tuple(BINNINGS)),
    rbv("A3ShutterMode", "Rolling", "Rolling or Global shutter (Global reads out twice as long)",
        enum=SHUTTER_MODES),
    ro("ControllerID", "", "Camera link controller"),
    rbv("FanSpeed", "On", "Fan speed", enum=("Off", "Low", "On")),
    ro("FirmwareVersion", "", "Camera firmware"),
    rbv("FrameRate", 0.0, "Frame rate (1 / AcquirePeriod)", units="Hz"),
    ro("FullAOIControl", "Yes", "Any ROI allowed", enum=NO_YES),
    rbv("NoiseFilter", "No", "Spurious noise filter", enum=NO_YES, fixed=True),
    rbv("Overlap", "No", "Expose the next frame during readout: period >= max(exposure, readout)", enum=NO_YES),
    rbv("PixelEncoding", "Mono12", "Mono12 (fast readout) or Mono16", enum=PIXEL_ENCODINGS),
    rbv("PreAmpGain", PRE_AMP_GAINS[0], "Gain mode: 12-bit (high well capacity) goes with Mono12, 16-bit with Mono16",
        enum=PRE_AMP_GAINS),
    rbv("ReadoutRate", "540 MHz", "Pixel readout rate", enum=("540 MHz",)),
    ro("ReadoutTime", 0.0, "Readout time of one frame with the present ROI, binning and encoding", units="s"),
    rbv("SensorCooling", "On", "Sensor cooler", enum=OFF_ON),
    ro("SerialNumber", "", "Camera serial number"),
    plain("SoftwareTrigger", 0, "Write 1 to start one frame (TriggerMode Software)"),
    ro("SoftwareVersion", "", "Driver software version"),
    rbv("TempControl", "Auto", "Cooler set point source (the Temperature set point)", enum=("Auto",)),
    ro("TempStatus_RBV", "Cooler Off", "Cooler status", enum=TEMP_STATUS),
    ro("TransferRate", 0.0, "Data rate to the host", units="MB/s"),
    ro("BufferStalls_RBV", 0, "Exposures delayed because the frame memory was full (never lost)"),
    ro("MissedTriggers_RBV", 0, "External or software triggers ignored: sensor busy or frame memory full"),
    ro("FramesLost_RBV", 0, "Frames exposed but not produced because rendering failed (see StatusMessage)"),
)

TIMING_INPUTS = frozenset(
    {"AcquireTime", "AcquirePeriod", "FrameRate", "A3Binning", "BinX", "BinY", "MinX", "MinY", "SizeX", "SizeY",
     "PixelEncoding", "PreAmpGain", "A3ShutterMode", "Overlap"}
)

_Andor3CamParams = param_group_class("_Andor3CamParams", "ADAndor3 record set", CAM_PARAMS)


@dataclass(frozen=True)
class SequenceSettings:
    """The settings one acquisition runs with (taken when Acquire goes to 1)."""

    image_mode: str
    num_images: int
    trigger_mode: str
    exposure_s: float
    period_s: float
    readout_s: float
    min_period_s: float
    binning: int
    overlap: bool
    window: FrameWindow
    frame_bytes: int

    @property
    def frames(self) -> int | None:
        """Frames to take; None: until stopped."""
        return {"Single": 1, "Multiple": self.num_images, "Continuous": None}[self.image_mode]


class Andor3CamIOC(_Andor3CamParams):
    """ADAndor3-compatible sCMOS camera driver (stock ophyd ``Andor3DetectorCam``)."""

    standard_interface = (
        "areaDetector ADAndor3 driver (stock `ophyd Andor3DetectorCam`); also BufferStalls_RBV, "
        "MissedTriggers_RBV and FramesLost_RBV, counters that prove no frame is lost silently"
    )

    def __init__(
        self, prefix: str, world: World, *, trigger_input: TriggerLine, ground_truth: GroundTruthRecorder, **kwargs
    ) -> None:
        super().__init__(prefix, **kwargs)
        self.world = world
        self.ground_truth = ground_truth
        self.config = world.config.sim.camera
        self.exposure_limits = world.config.camera
        self.timing = SensorTiming.from_config(self.config)
        self.plugins: list[NDPluginIOC] = []
        self._rng = np.random.default_rng(np.random.SeedSequence([world.config.sim.seed, 0x43414D]))
        self.pipeline = FramePipeline(
            world,
            render_workers=self.config.render_workers,
            buffer_bytes=int(self.config.buffer_mb * 1e6),
            deliver=self._produce,
            lost=self._frame_lost,
        )
        self._triggers: asyncio.Queue[TriggerPulse] | None = None
        self._sequence: asyncio.Task | None = None
        self._sensor_free_at = -math.inf
        self._requested_period = self.config.acquire_period_s
        """AcquirePeriod as last requested; the sensor runs at it or at its shortest period."""
        self._wall_offset = time.time() - world.clock.now()
        self._counts = {"BufferStalls_RBV": 0, "MissedTriggers_RBV": 0, "FramesLost_RBV": 0}
        self._produced = 0
        self._sequence_count = 0
        self._rate_mark = (0, time.monotonic())
        trigger_input.connect(self._on_pulse)

    # -- start-up ------------------------------------------------------------------

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return self.world.imager.frame_shape(1)

    @property
    def _imager_bits(self) -> int:
        """Bit depth of the counts the imaging physics digitises to."""
        return int(self.world.imager.detector.max_count).bit_length()

    async def initialize(self) -> None:
        cfg = self.config
        rows, cols = self.sensor_shape
        full_frames = int(self.pipeline.buffer.capacity_bytes // (rows * cols * 2))
        for suffix, value in (
            ("PortName_RBV", cfg.port_name), ("Manufacturer_RBV", cfg.manufacturer), ("Model_RBV", cfg.model),
            ("SerialNumber", cfg.serial_number), ("FirmwareVersion", cfg.firmware_version),
            ("SoftwareVersion", "ADAndor3 R2-5 (nanoscope-daq simulator)"), ("ControllerID", "CL 10-tap (simulated)"),
            ("MaxSizeX_RBV", cols), ("MaxSizeY_RBV", rows), ("PoolMaxBuffers", full_frames),
            ("PoolFreeBuffers", full_frames), ("PoolMaxMem", cfg.buffer_mb),
            ("TemperatureActual", cfg.ambient_temperature_c),
        ):
            await self.post(suffix, value)
        for suffix, value in (
            ("SizeX", cols), ("SizeY", rows), ("AcquireTime", cfg.acquire_time_s),
            ("AcquirePeriod", cfg.acquire_period_s), ("Temperature", cfg.temperature_setpoint_c),
        ):
            await self.post(suffix, value, setpoint=True)
        await self._update_timing()
        await self.prime_plugins()
        self.pipeline.start()
        asyncio.create_task(self._housekeeping())

    def attach(self, plugin: NDPluginIOC) -> None:
        """Connect a plugin to this driver's array callbacks."""
        self.plugins.append(plugin)

    async def prime_plugins(self) -> None:
        """Show the plugins the array shape before any frame (ophyd refuses unprimed HDF5 plugins)."""
        shape = (self.value("ArraySizeY_RBV"), self.value("ArraySizeX_RBV"))
        for plugin in self.plugins:
            await plugin.prime(shape)

    # -- settings ------------------------------------------------------------------

    @on_put("AcquireTime")
    async def _set_exposure(self, value: float) -> float:
        return min(max(value, self.exposure_limits.exposure_min_s), self.exposure_limits.exposure_max_s)

    @on_put("AcquirePeriod")
    async def _set_period(self, value: float) -> float:
        if value < 0:
            raise ValueError(f"AcquirePeriod {value} s is negative")
        self._requested_period = value
        return self._clamped_period(value)

    @on_put("FrameRate")
    async def _set_frame_rate(self, value: float) -> float:
        if not value > 0:
            raise ValueError(f"FrameRate {value} Hz must be > 0")
        self._requested_period = 1.0 / value
        await self.pv("AcquirePeriod").write(self._requested_period, verify_value=False)
        return 1.0 / self._clamped_period(self._requested_period)

    @on_put("A3Binning")
    async def _set_binning(self, value: str) -> str:
        factor = BINNINGS[value]
        for suffix in ("BinX", "BinY"):
            await self.post(suffix, factor, setpoint=True)
        return value

    @on_put("BinX")
    @on_put("BinY")
    async def _set_bin_xy(self, value: int) -> int:
        label = f"{value}x{value}"
        if label not in BINNINGS:
            raise ValueError(f"binning {value} is not available; choose one of {sorted(BINNINGS.values())}")
        await self.post("A3Binning", label, setpoint=True)
        await self._set_binning(label)
        return value

    @on_put("MinX")
    async def _set_min_x(self, value: int) -> int:
        return min(max(value, 0), self.sensor_shape[1] - 1)

    @on_put("MinY")
    async def _set_min_y(self, value: int) -> int:
        return min(max(value, 0), self.sensor_shape[0] - 1)

    @on_put("SizeX")
    async def _set_size_x(self, value: int) -> int:
        return min(max(value, 1), self.sensor_shape[1] - self.value("MinX"))

    @on_put("SizeY")
    async def _set_size_y(self, value: int) -> int:
        return min(max(value, 1), self.sensor_shape[0] - self.value("MinY"))

    @on_put("PixelEncoding")
    async def _set_encoding(self, value: str) -> str:
        sixteen = value == "Mono16"
        if sixteen != self.value("PreAmpGain").startswith("16"):
            await self.post("PreAmpGain", PRE_AMP_GAINS[1] if sixteen else PRE_AMP_GAINS[0], setpoint=True)
        return value

    @on_put("PreAmpGain")
    async def _set_gain(self, value: str) -> str:
        await self.post("PixelEncoding", "Mono16" if value.startswith("16") else "Mono12", setpoint=True)
        return value

    @on_put("NumImages")
    async def _set_num_images(self, value: int) -> int:
        if value < 1:
            raise ValueError(f"NumImages {value} must be at least 1")
        return value

    @on_put("Temperature")
    async def _set_temperature(self, value: float) -> float:
        low, high = COOLER_RANGE_C
        if not low <= value <= high:
            raise ValueError(f"Temperature set point {value} C is outside the cooler's range {low} .. {high} C")
        return value

    @on_put("ArrayCounter")
    async def _set_counter(self, value: int) -> int:
        self._produced = value
        self._rate_mark = (value, time.monotonic())
        return value

    @on_put("ReadStatus")
    async def _read_status(self, value: str) -> str:
        await self._update_timing()
        return "Done"

    async def refused(self, message: str) -> None:
        await self.post("StatusMessage_RBV", message[:1000])

    async def param_changed(self, suffix: str, readback) -> None:
        if suffix in TIMING_INPUTS:
            await self._update_timing()

    def _readout_s(self) -> float:
        return self.timing.readout_s(
            self.value("SizeY"), self.value("BinY"), self.value("PixelEncoding"), self.value("A3ShutterMode")
        )

    def _min_period_s(self) -> float:
        return self.timing.min_period_s(self.value("AcquireTime"), self._readout_s(), self.value("Overlap") == "Yes")

    def _clamped_period(self, requested: float) -> float:
        return max(requested, self._min_period_s())

    def _output_shape(self) -> tuple[int, int]:
        binning = self.value("BinX")
        return self.value("SizeY") // binning, self.value("SizeX") // binning

    async def _update_timing(self) -> None:
        """Post what follows from exposure, ROI, binning and encoding: period, readout, array size."""
        period = self._clamped_period(self._requested_period)
        rows, cols = self._output_shape()
        await self.post("AcquirePeriod", period)
        await self.post("FrameRate", round(1.0 / period, 6))
        await self.post("ReadoutTime", self._readout_s())
        await self.post("ArraySizeX_RBV", cols)
        await self.post("ArraySizeY_RBV", rows)
        await self.post("ArraySize_RBV", rows * cols * 2)

    def _window(self, binning: int) -> FrameWindow:
        rows, cols = self._output_shape()
        top, left = self.value("MinY") // binning, self.value("MinX") // binning
        return FrameWindow(
            rows=slice(top, top + rows),
            cols=slice(left, left + cols),
            reverse_x=self.value("ReverseX") == "Yes",
            reverse_y=self.value("ReverseY") == "Yes",
            drop_bits=max(0, self._imager_bits - ENCODING_BITS[self.value("PixelEncoding")]),
        )

    def _settings(self) -> SequenceSettings:
        binning = self.value("BinX")
        readout = self._readout_s()
        return SequenceSettings(
            image_mode=self.value("ImageMode"),
            num_images=self.value("NumImages"),
            trigger_mode=self.value("TriggerMode"),
            exposure_s=self.value("AcquireTime"),
            period_s=self.value("AcquirePeriod"),
            readout_s=readout,
            min_period_s=self._min_period_s(),
            binning=binning,
            overlap=self.value("Overlap") == "Yes",
            window=self._window(binning),
            frame_bytes=self.value("ArraySize_RBV"),
        )

    # -- views prepared ahead (simulator only: <P>SIM:PREPARE_VIEWS) -----------------

    @property
    def views_rendered(self) -> int:
        """Views the render workers have rendered exactly so far (the rest came from their caches)."""
        return self.pipeline.workers.views_rendered

    async def prepare_views(self, angles_deg: Sequence[float], binning: int,
                            progress: Callable[[int], Awaitable[None]]) -> None:
        """Render the views at ``angles_deg`` and ``binning`` in the present state into the render workers' caches.

        The state is the world's now (study day, load, sample position) and the source's
        present kV and power, without breathing displacement: a scan started in that state
        at that binning, whose projections are imaged at these (mid-exposure) angles, then
        finds every view rendered.

        Raises
        ------
        ValueError
            When the binning is not the camera's, the source emits no X-rays (the views depend on
            its spectrum), the sample is out of the beam, or the views do not fit the workers'
            view caches, naming the fix.
        """
        if binning not in BINNINGS.values():
            raise ValueError(f"binning {binning} is not the camera's; choose one of {sorted(BINNINGS.values())}")
        timing = FrameTiming(self.world.clock.now(), self.value("AcquireTime"), 0.0)
        present = observe(self.world, timing, binning).exposure
        if not present.kv > 0:
            raise ValueError("the source is off: switch it on at the scan's kV and power first (the views depend on "
                             "its spectrum)")
        if not self.world.imager.sample_in_field(present.sample_offset_mm):
            raise ValueError("the sample is out of the beam: move it to its scan position first")
        workers = self.config.render_workers
        per_worker = math.ceil(len(angles_deg) / workers) * self.world.imager.view_nbytes(binning)
        capacity = self.world.config.sim.detector.render_cache_mb * 2**20
        if per_worker > capacity:
            raise ValueError(f"{len(angles_deg)} views at {binning}x{binning} binning need {per_worker / 2**20:.0f} MB "
                             f"in each of {workers} render workers; raise sim.detector.render_cache_mb to at least "
                             f"{math.ceil(per_worker / 2**20)} or prepare fewer views")
        exposures = [dataclasses.replace(present, angle_deg=float(angle), respiration_mm=0.0, xrays_on=True)
                     for angle in angles_deg]
        views = [(exposure, self.world.imager.snap(exposure).angle_deg) for exposure in exposures]
        await self.pipeline.workers.prepare(views, progress)

    # -- acquisition ----------------------------------------------------------------

    @on_put("Acquire")
    async def _set_acquire(self, value: str) -> str:
        if value == "Done":
            await self._stop()
            return "Done"
        if self._sequence is None or self._sequence.done():
            settings = self._settings()
            if settings.frame_bytes > self.pipeline.buffer.capacity_bytes:
                raise ValueError(
                    f"a frame of {settings.frame_bytes / 1e6:.1f} MB does not fit the frame memory "
                    f"({self.config.buffer_mb} MB, sim.camera.buffer_mb)"
                )
            external = settings.trigger_mode != "Internal"
            self._triggers = asyncio.Queue() if external else None
            await self.post("StatusMessage_RBV", "Acquiring")
            await self.post("DetectorState_RBV", "Waiting" if external else "Acquire")
            self._sequence = asyncio.create_task(self._run(settings))
        return "Acquire"

    @on_put("SoftwareTrigger")
    async def _software_trigger(self, value: int) -> int:
        if value:
            if self._triggers is None or self.value("TriggerMode") != "Software":
                raise ValueError("SoftwareTrigger needs TriggerMode=Software and an acquisition running (Acquire=1)")
            start = self.world.clock.now() + self.config.start_latency_s
            self._triggers.put_nowait(TriggerPulse(start, 0.0, math.nan))
        return 0

    def _on_pulse(self, pulse: TriggerPulse) -> None:
        """A pulse on the external trigger input (from the PSO)."""
        if self._triggers is not None and self.value("TriggerMode") in TRIGGER_MODES[2:]:
            self._triggers.put_nowait(pulse)

    async def _stop(self) -> None:
        """Abort: the frame being exposed is discarded; frames already exposed are still delivered."""
        task, self._sequence = self._sequence, None
        await cancel_and_wait(task)

    async def _run(self, settings: SequenceSettings) -> None:
        """One acquisition: expose the frames, then wait until the plugins have the last one."""
        last: PendingFrame | None = None
        self.ground_truth.pause()  # its CPU goes to the frames while acquiring
        try:
            indices = range(settings.frames) if settings.frames is not None else itertools.count()
            self._sensor_free_at = -math.inf
            self._sequence_count = 0
            await self.post("NumImagesCounter_RBV", 0)
            for index in indices:
                timing = await self._next_exposure(settings, index)
                last = await self._expose(settings, timing)
                if settings.frames is not None:
                    remaining = settings.frames - index - 1
                    await self.post("TimeRemaining_RBV", round(remaining * settings.period_s, 3))
            if last is not None and not await asyncio.shield(last.delivered):
                raise RuntimeError(self.value("StatusMessage_RBV"))
            await self.post("StatusMessage_RBV", "Acquisition finished")
        except asyncio.CancelledError:
            await self.post("StatusMessage_RBV", "Acquisition stopped")
            raise
        except Exception as exc:  # noqa: BLE001 -- the imaging physics failed: say so, stop, keep serving
            await self.post("StatusMessage_RBV", f"Acquisition failed: {exc}"[:1000])
            await self.post("DetectorState_RBV", "Error")
        finally:
            self.ground_truth.resume()
            self._triggers = None
            await self.post("TimeRemaining_RBV", 0.0)
            if self.value("DetectorState_RBV") != "Error":
                await self.post("DetectorState_RBV", "Idle")
            await self.post("Acquire", "Done", setpoint=True)

    async def _next_exposure(self, settings: SequenceSettings, index: int) -> FrameTiming:
        """When the next exposure starts and how long it lasts; reserves its frame memory.

        Nothing awaits between the reservation and the return, so a stop cannot leak it.
        """
        clock, buffer, nbytes = self.world.clock, self.pipeline.buffer, settings.frame_bytes
        internal = settings.trigger_mode == "Internal" or (settings.trigger_mode == "External Start" and index > 0)
        if internal:
            first = self._sensor_free_at == -math.inf
            start = clock.now() + self.config.start_latency_s if first else self._sensor_free_at
            if not buffer.fits(nbytes):
                await self._count("BufferStalls_RBV")
                await buffer.wait_for_room(nbytes)
                start = max(start, clock.now())
            buffer.take(nbytes)
            self._sensor_free_at = start + settings.period_s
            return FrameTiming(start, settings.exposure_s, settings.readout_s)
        assert self._triggers is not None
        while True:
            pulse = await self._triggers.get()
            if pulse.time_s < self._sensor_free_at or not buffer.fits(nbytes):
                await self._count("MissedTriggers_RBV")
                continue
            if settings.trigger_mode == "External Start":
                await self.post("DetectorState_RBV", "Acquire")  # only this task reserves memory
            exposure = pulse.width_s if settings.trigger_mode == "External Exposure" else settings.exposure_s
            exposure = min(max(exposure, self.exposure_limits.exposure_min_s), self.exposure_limits.exposure_max_s)
            busy = self.timing.min_period_s(exposure, settings.readout_s, settings.overlap)
            self._sensor_free_at = pulse.time_s + busy
            if settings.trigger_mode == "External Start":
                self._sensor_free_at = max(self._sensor_free_at, pulse.time_s + settings.period_s)
            buffer.take(nbytes)
            return FrameTiming(pulse.time_s, exposure, settings.readout_s, pulse.encoder_deg)

    async def _expose(self, settings: SequenceSettings, timing: FrameTiming) -> PendingFrame:
        """Wait out the exposure, capture the world at mid-exposure, queue the frame for rendering."""
        try:
            await self._sleep_until(timing.exposure_end_s)
        except asyncio.CancelledError:
            self.pipeline.buffer.release(settings.frame_bytes)
            raise
        frame = PendingFrame(
            timing=timing,
            state=observe(self.world, timing, settings.binning),
            window=settings.window,
            rng=self._rng.spawn(1)[0],
            nbytes=settings.frame_bytes,
            delivered=asyncio.get_running_loop().create_future(),
        )
        self.pipeline.submit(frame)
        return frame

    async def _sleep_until(self, t: float) -> None:
        delay = t - self.world.clock.now()
        if delay > 0:
            await asyncio.sleep(delay)

    async def _produce(self, frame: PendingFrame, data: np.ndarray) -> None:
        """A frame read out and rendered: count it and pass it to the plugins (in order)."""
        self._produced += 1
        self._sequence_count += 1
        await self.post("ArrayCounter", self._produced)
        await self.post("NumImagesCounter_RBV", self._sequence_count)
        await self.post("NumExposuresCounter_RBV", 1)
        array = NDArray(
            unique_id=self._produced,
            timestamp=self._wall_offset + frame.timing.start_s,
            data=data,
            attributes=frame.state.attributes,
            day=frame.state.exposure.day,
            binning=frame.state.exposure.binning,
        )
        if self.value("ArrayCallbacks") != "Enable":
            return
        for plugin in self.plugins:
            if plugin.accepts(self.config.port_name):
                await plugin.on_array(array)

    async def _frame_lost(self, frame: PendingFrame, error: Exception) -> None:
        await self._count("FramesLost_RBV")
        await self.post("StatusMessage_RBV", f"Rendering failed: {error!r}"[:1000])

    async def _count(self, suffix: str) -> None:
        self._counts[suffix] += 1
        await self.post(suffix, self._counts[suffix])

    async def _housekeeping(self) -> None:
        """Once a second: array rates, buffer use, transfer rate and the sensor temperature."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_PERIOD_S)
            count, since = self._rate_mark
            now = time.monotonic()
            rate = max(self._produced - count, 0) / (now - since)
            self._rate_mark = (self._produced, now)
            await self.post("ArrayRate_RBV", round(rate, 2))
            await self.post("TransferRate", round(rate * self.value("ArraySize_RBV") / 1e6, 1))
            buffer = self.pipeline.buffer
            rows, cols = self.sensor_shape
            free_frames = (buffer.capacity_bytes - buffer.used_bytes) // (rows * cols * 2)
            await self.post("PoolUsedBuffers", buffer.frames)
            await self.post("PoolAllocBuffers", buffer.frames)
            await self.post("PoolFreeBuffers", int(free_frames))
            await self.post("PoolUsedMem", round(buffer.used_bytes / 1e6, 1))
            for plugin in self.plugins:
                await plugin.housekeeping()
            await self._cool(HOUSEKEEPING_PERIOD_S)

    async def _cool(self, dt: float) -> None:
        cooling = self.value("SensorCooling") == "On"
        target = self.value("Temperature") if cooling else self.config.ambient_temperature_c
        actual = self.value("TemperatureActual")
        actual = target + (actual - target) * math.exp(-dt / self.config.cooling_time_constant_s)
        await self.post("TemperatureActual", round(actual, 2))
        if not cooling:
            status = "Cooler Off"
        else:
            status = "Stabilised" if abs(actual - target) < 0.5 else "Cooling"
        await self.post("TempStatus_RBV", status)
