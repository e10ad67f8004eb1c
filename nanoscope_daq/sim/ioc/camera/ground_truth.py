"""The imager's ground truth, written next to the data once per (directory, day, binning).

Each (study day, binning) goes to its own ``ground_truth_day<D>_bin<B>.h5`` (several
study days are imaged into one directory in simulation), and ``ground_truth.h5``
(DESIGN.md's name) indexes them with one external link each: ``h5["day3_bin8/labels"]``.

Writing it rasterises the whole reconstruction volume (minutes; hours at binning 1),
so it runs in a separate process at the lowest CPU priority, one file at a time, and
never delays a frame: while the camera acquires, the writer is suspended (SIGSTOP) and
it resumes when the acquisition ends. It is written under a temporary name and renamed when complete:
a file named :func:`ground_truth_name` is always whole. Stopping the simulator stops
an unfinished write and removes its temporary file; the next frame of that day in
that directory starts it again. A write that fails (a full disk) removes its temporary
file and logs one line with the free space; the next frame of that day tries again.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

from ....config import Config
from ...orphans import exit_with_parent

log = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"


def ground_truth_name(day: float, binning: int) -> str:
    """File name of the ground truth of one study day at one binning (several can share a directory)."""
    return f"ground_truth_day{day:g}_bin{binning}.h5"


INDEX_NAME = "ground_truth.h5"
"""DESIGN.md's name: the index of every ground truth in a directory."""


def write_index(directory: Path) -> Path:
    """``ground_truth.h5``: one external link per (study day, binning) written in ``directory``.

    Links are relative, so the directory can be moved whole; the index is rewritten
    under a temporary name and renamed, so readers never see it half written.
    """
    import h5py

    index, partial = directory / INDEX_NAME, directory / (INDEX_NAME + PARTIAL_SUFFIX)
    with h5py.File(partial, "w") as h5:
        h5.attrs["description"] = "ground truth of each study day and binning imaged here; each group links to its file"
        for part in sorted(directory.glob("ground_truth_day*_bin*.h5")):
            h5[part.stem.removeprefix("ground_truth_")] = h5py.ExternalLink(part.name, "/")
    os.replace(partial, index)
    return index


def _write_in_child(config: Config, path: str, day: float, binning: int, kv: float) -> None:
    """Entry point of the worker process: lowest priority, build the imager, write, rename."""
    exit_with_parent()
    from ...imaging.imager import Imager

    os.nice(19)
    imager = Imager(config)
    imager.last_kv = kv  # attenuation at the energy the frames were taken with
    partial = path + PARTIAL_SUFFIX
    try:
        imager.write_ground_truth(partial, day, binning)
    except OSError as exc:  # a full disk, a size limit: HDF5 could not write or close the file
        Path(partial).unlink(missing_ok=True)
        print(f"ground truth {path} not written: {_os_reason(exc)}", file=sys.stderr, flush=True)
        os._exit(1)  # not sys.exit: HDF5's exit-time close of the file it failed to write would crash
    os.replace(partial, path)


def _os_reason(exc: OSError) -> str:
    """The system's reason in an OSError, also when HDF5 wraps it in a long message ("No space left on device")."""
    found = re.search(r"error message = '([^']+)'", str(exc))
    return found.group(1) if found else (exc.strerror or str(exc).splitlines()[0])


def _free_mb(directory: Path) -> float:
    try:
        return shutil.disk_usage(directory).free / 1e6
    except OSError:
        return float("nan")


class GroundTruthRecorder:
    """Writes each (directory, study day, binning)'s ground truth once, in a worker process.

    :meth:`request` is called for every frame written and returns at once. Attenuation
    is given at the high voltage of the last frame taken with X-rays, as the imager does.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._last_kv = config.source.kv_max
        self._requested: set[tuple[Path, float, int]] = set()
        self._todo: queue.Queue[tuple[Path, float, int, float]] = queue.Queue()
        self._context = multiprocessing.get_context("spawn")
        self._current: tuple[multiprocessing.process.BaseProcess, Path] | None = None
        self._thread: threading.Thread | None = None
        self._idle = threading.Event()
        self._idle.set()
        self._lock = threading.Lock()
        atexit.register(self.stop)

    def volume_voxels(self, binning: int) -> int:
        """Voxels of the ground-truth volume at ``binning``: rows x cols x cols of the detector."""
        detector = self.config.detector
        rows, cols = detector.pixels_y // binning, detector.pixels_x // binning
        return rows * cols * cols

    def pause(self) -> None:
        """The camera starts acquiring: suspend the writer, start no new one."""
        with self._lock:
            self._idle.clear()
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """The camera is idle again: let the writer run."""
        with self._lock:
            self._idle.set()
            self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._current is not None and self._current[0].pid is not None:
            try:
                os.kill(self._current[0].pid, signum)
            except ProcessLookupError:
                pass  # it has just finished

    def request(self, directory: Path, day: float, binning: int, xray_kv: float | None) -> None:
        """A frame of ``day`` at ``binning`` was written into ``directory`` (``xray_kv``: None if dark)."""
        if xray_kv is not None:
            self._last_kv = xray_kv
        key = (directory, day, binning)
        if key in self._requested:
            return
        self._requested.add(key)
        path = directory / ground_truth_name(day, binning)
        if path.exists():
            return
        voxels = self.volume_voxels(binning)
        if voxels > self.config.sim.camera.ground_truth_max_voxels:
            log.warning(
                "ground truth %s not written: at binning %d it is %.3g voxels, above "
                "sim.camera.ground_truth_max_voxels (%.3g); raise that key (disk and hours) or scan binned",
                path, binning, voxels, self.config.sim.camera.ground_truth_max_voxels,
            )
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ground-truth", daemon=True)
            self._thread.start()
        self._todo.put((path, day, binning, self._last_kv))

    def _run(self) -> None:
        while True:
            path, day, binning, kv = self._todo.get()
            self._idle.wait()
            process = self._context.Process(
                target=_write_in_child, args=(self.config, str(path), day, binning, kv), daemon=True,
                name=f"ground-truth {path.name}",
            )
            with self._lock:
                process.start()
                self._current = (process, path)
                if not self._idle.is_set():
                    os.kill(process.pid, signal.SIGSTOP)
            process.join()
            self._current = None
            if process.exitcode != 0:
                Path(str(path) + PARTIAL_SUFFIX).unlink(missing_ok=True)  # also after a crash
                log.error("ground truth %s not written (worker exit code %s; %.1f MB free in %s); free space "
                          "there, and the next frame of that day tries again", path, process.exitcode,
                          _free_mb(path.parent), path.parent)
                self._requested.discard((path.parent, day, binning))
            else:
                write_index(path.parent)

    def stop(self) -> None:
        """End an unfinished write and remove its temporary file."""
        current = self._current
        if current is not None:
            process, path = current
            process.terminate()
            os.kill(process.pid, signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
            process.join(10)
            Path(str(path) + PARTIAL_SUFFIX).unlink(missing_ok=True)
