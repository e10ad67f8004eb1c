"""``nanoscope demo``: start the simulated instrument and run the main job on it.

Today the main job brings the instrument up the way an operator does before an
in-vivo session: source warm-up and ramp, shutter, a turn of the rotation stage,
the specimen loaded in steps, with every device's readings printed as they happen.
It grows into the full 4D in-vivo study as the scan plans land.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterable
from pathlib import Path

from .config import Config
from .epics_env import configure_client, free_port

DEMO_TIME_SCALE = 20.0
"""Source warm-up (2 min) and load relaxation run 20x faster in the demo."""

DEMO_KV, DEMO_WATTS = 60.0, 10.0
DEMO_LOADS_N = (2.0, 5.0, 10.0)
DEMO_EXPOSURE_S = 0.05


def watch_while(status, readables: Iterable, period: float, md: dict) -> Generator:
    """A run that reads ``readables`` every ``period`` s until ``status`` finishes."""
    from bluesky import plan_stubs as bps
    from bluesky import preprocessors as bpp

    @bpp.run_decorator(md=md)
    def inner():
        while True:
            yield from bps.trigger_and_read(list(readables))
            if status.done:
                break
            yield from bps.sleep(period)
        if not status.success:
            raise status.exception()

    return (yield from inner())


def _print_files_written(name: str, resource: dict) -> None:
    """Every file the IOC writes for a run is announced by a Resource document."""
    print(f"  data file: {Path(resource['root']) / resource['resource_path']}", flush=True)


def _demo_plan(xrm) -> Generator:
    """The operator's start-up sequence, each step its own run with a live table."""
    from bluesky import plan_stubs as bps
    from bluesky import plans as bp

    watched = [xrm.source, xrm.physio]
    print("\n== 1. X-ray source: jet start-up and conditioning", flush=True)
    yield from watch_while(xrm.source.warm_up(), watched, 0.5, {"plan_name": "demo_warm_up"})

    print(f"\n== 2. High voltage to {DEMO_KV:g} kV, {DEMO_WATTS:g} W; shutter open", flush=True)
    yield from watch_while(xrm.source.set_output(DEMO_KV, DEMO_WATTS), watched, 0.25, {"plan_name": "demo_ramp"})
    yield from bps.mv(xrm.source.shutter, "open")

    print("\n== 3. Rotation stage: one turn, read every 30 degrees", flush=True)
    yield from bp.scan(watched, xrm.rot, 0.0, 360.0, 13, md={"plan_name": "demo_turn"})

    print(f"\n== 4. In-situ loading: {', '.join(f'{f:g}' for f in DEMO_LOADS_N)} N, each held until stable", flush=True)
    yield from bp.list_scan([xrm.physio], xrm.load, list(DEMO_LOADS_N), md={"plan_name": "demo_loading"})

    print("\n== 5. Camera: 3 projections at 10 N (4x4 binning, 50 ms), written to HDF5 by the IOC", flush=True)
    yield from bps.mv(xrm.det.cam.a3_binning, "4x4", xrm.det.cam.acquire_time, DEMO_EXPOSURE_S, xrm.det.cam.num_images, 1)
    yield from bp.count([xrm.det, xrm.rot, xrm.load], num=3, md={"plan_name": "demo_frames"})

    print("\n== 6. Specimen unloaded (crosshead back to zero extension)", flush=True)
    yield from watch_while(xrm.load.set_extension(0.0), [xrm.load], 0.25, {"plan_name": "demo_unload"})

    print("\n== 7. Shutter closed, high voltage off, stage home", flush=True)
    yield from bps.mv(xrm.source.shutter, "close")
    yield from bps.mv(xrm.source.hv, "Off")
    yield from bps.mv(xrm.rot, 0.0)


def run_demo(
    config: Config, *, port: int | None = None, out: str | None = None, time_scale: float | None = None
) -> int:
    """Start ``nanoscope sim`` (on a free port unless ``port``), run the demo plan, stop it."""
    port = port or free_port()
    configure_client([port])
    from bluesky import RunEngine
    from bluesky.callbacks import LiveTable

    from .devices import Instrument
    from .devices.detector import path_template
    from .sim.process import SimProcess

    data_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="nanoscope-demo-"))
    print(f"nanoscope demo: simulated instrument {config.epics.prefix} on 127.0.0.1:{port}, data in {data_dir}")
    with SimProcess(
        config.epics.prefix, port, data_dir=data_dir, time_scale=time_scale or DEMO_TIME_SCALE, seed=config.sim.seed
    ) as sim:
        print(sim.output[-1], flush=True)
        xrm = Instrument(config.epics.prefix, name="xrm")
        xrm.wait_for_connection(timeout=30)
        xrm.det.hdf1.write_path_template = path_template(data_dir)
        engine = RunEngine({"operator": "demo"})
        engine.subscribe(_print_files_written, "resource")
        engine.subscribe(
            LiveTable(
                [
                    "xrm_source_kv",
                    "xrm_source_power",
                    "xrm_source_current",
                    "xrm_rot",
                    "xrm_load_force",
                    "xrm_load_extension",
                    "xrm_physio_rate",
                    "xrm_physio_gate",
                    "xrm_physio_heart_rate",
                ],
                default_prec=2,
            )
        )
        try:
            engine(_demo_plan(xrm))
        finally:
            xrm.destroy()  # disconnect before the IOC goes away
    print("\nnanoscope demo: done; the simulated instrument is stopped.")
    return 0

