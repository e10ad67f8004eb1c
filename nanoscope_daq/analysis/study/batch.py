"""A study batch: every selected tomogram, then every interval of each subject, skipping what is done.

The same plan runs on an ``Executor``: ``SerialExecutor`` (in this process, one task
after the other) or ``DaskExecutor`` (tasks per tomogram and per interval on a dask
cluster; an interval depends on its two tomograms' futures, so the scheduler runs it
as soon as both are done and recomputes a lost dependency itself). Before submitting,
each task's result file is checked: a done task is skipped (``redo`` forces it).
Reconstruction and segmentation ask for the GPU resource where the cluster declares one.
A tomogram whose volume does not fit one worker (chunks.py) is submitted as its slabs'
tasks (slab_tasks.py), whose last gives the same result as the whole-volume task.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from tqdm import tqdm

from ...recon.nxtomo_reader import NxTomoScan
from . import slab_tasks
from .chunks import plan_slabs, task_voxel_cap
from .cluster import GPU_RESOURCE, declares_gpu, smallest_worker_memory
from .results import done_result
from .sources import TomogramRecord
from .tasks import Layout, StudySettings, analyse_interval, analyse_tomogram, interval_fingerprint, tomogram_fingerprint


class Handle(Protocol):
    key: str

    def result(self) -> Any: ...

    def exception(self) -> BaseException | None: ...


class Executor(Protocol):
    gpu: bool
    memory_bytes: int | None
    """Memory of the smallest worker (None: unknown)."""

    def submit(self, function: Callable, *args: Any, key: str, resources: dict | None) -> Handle: ...

    def as_completed(self, handles: Sequence[Handle]) -> Iterable[Handle]: ...


@dataclass
class SerialHandle:
    """A task run at once in this process: its result or its exception."""

    key: str
    value: Any = None
    error: BaseException | None = None

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def exception(self) -> BaseException | None:
        return self.error


class SerialExecutor:
    """Runs each task when submitted (the reference the distributed run must equal)."""

    gpu = False

    def __init__(self) -> None:
        import psutil

        self.memory_bytes = psutil.virtual_memory().total

    def submit(self, function: Callable, *args: Any, key: str, resources: dict | None = None) -> SerialHandle:
        try:
            values = [_resolved(arg) for arg in args]
            return SerialHandle(key, function(*values))
        except Exception as exc:  # noqa: BLE001 -- reported in the batch summary, like a failed dask task
            return SerialHandle(key, error=exc)

    def as_completed(self, handles: Sequence[SerialHandle]) -> Iterable[SerialHandle]:
        return handles


def _resolved(arg: Any) -> Any:
    """A task's argument with its handles (also inside lists, as dask does) replaced by their results."""
    if isinstance(arg, SerialHandle):
        return arg.result()
    if isinstance(arg, list):
        return [_resolved(item) for item in arg]
    return arg


class DaskExecutor:
    """Tasks on a dask.distributed cluster (``client``); GPU resources asked for only where declared."""

    def __init__(self, client) -> None:
        self.client = client
        self.gpu = declares_gpu(client)
        self.memory_bytes = smallest_worker_memory(client)

    def submit(self, function: Callable, *args: Any, key: str, resources: dict | None = None):
        return self.client.submit(function, *args, key=key, resources=resources if self.gpu else None, pure=False)

    def as_completed(self, handles: Sequence) -> Iterator:
        from distributed import as_completed

        return iter(as_completed(handles))


@dataclass(frozen=True)
class Outcome:
    """What happened to one task: 'ran', 'skipped' (done before) or 'failed' (with why)."""

    name: str
    status: str
    why: str = ""


@dataclass
class BatchResult:
    """Every task's outcome and the results of those that ran or were done before."""

    outcomes: list[Outcome] = field(default_factory=list)
    tomograms: dict[str, dict] = field(default_factory=dict)
    intervals: dict[str, dict] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    def summary(self) -> str:
        lines = [f"ran {self.count('ran')}, skipped {self.count('skipped')} (done before), "
                 f"failed {self.count('failed')}"]
        lines += [f"  failed {o.name}: {o.why}" for o in self.outcomes if o.status == "failed"]
        return "\n".join(lines)


def consecutive_pairs(records: Sequence[TomogramRecord]) -> list[tuple[TomogramRecord, TomogramRecord]]:
    """Each subject's consecutive time points (baseline, follow-up)."""
    by_subject: dict[str, list[TomogramRecord]] = {}
    for record in records:
        by_subject.setdefault(record.subject_id, []).append(record)
    pairs = []
    for subject in sorted(by_subject):
        days = sorted(by_subject[subject], key=lambda r: r.day)
        pairs.extend(zip(days, days[1:]))
    return pairs


def interval_name(before: TomogramRecord, after: TomogramRecord) -> str:
    """The name of a subject's interval between two time points (in outcomes and results)."""
    return f"{after.subject_id}_day{before.day:g}-{after.day:g}"


def submit_slabs(executor: Executor, job: slab_tasks.ChunkJob, name: str, gpu: dict | None) -> Handle:
    """Submit one tomogram's slab tasks (slab_tasks.py, steps 1 to 7); returns the handle of its result."""
    def each(step: Callable, *args: Any, resources: dict | None = None) -> list[Handle]:
        return [executor.submit(step, job, index, *args, key=f"{step.__name__}-{name}-{index}", resources=resources)
                for index in range(len(job.slabs))]

    axis = executor.submit(slab_tasks.find_slab_axis, job, key=f"find_slab_axis-{name}", resources=gpu)
    volumes = each(slab_tasks.reconstruct_slab, axis, resources=gpu)
    histograms = each(slab_tasks.histogram_slab, volumes)
    bones = each(slab_tasks.bone_slab, histograms)
    labelled = each(slab_tasks.labels_slab, bones)
    measured = each(slab_tasks.measure_slab, labelled)
    return executor.submit(slab_tasks.assemble_tomogram, job, axis, volumes, histograms, bones, labelled, measured,
                           key=f"tomogram-{name}", resources=None)


def tomogram_shape(record: TomogramRecord) -> tuple[int, int, int]:
    """The reconstructed volume's shape (z, y, x): detector rows x columns x columns (geometry.default_volume)."""
    with NxTomoScan(record.path) as scan:
        rows, cols = scan.shape
    return rows, cols, cols


def run_batch(executor: Executor, records: Sequence[TomogramRecord], layout: Layout, settings: StudySettings,
              *, redo: bool = False, progress: bool = True, max_task_voxels: int = 0) -> BatchResult:
    """Analyse ``records`` (and their subjects' intervals) on ``executor``; returns outcomes and results.

    A tomogram above ``max_task_voxels`` (0: above what the smallest worker's memory holds, chunks.py) is
    analysed in slabs.
    """
    batch = BatchResult()
    cap = task_voxel_cap(max_task_voxels, executor.memory_bytes)
    token = uuid.uuid4().hex[:8]
    gpu = {GPU_RESOURCE: 1}
    pending: dict[str, tuple[str, Any]] = {}  # task key -> (kind, name)
    handles: dict[str, Any] = {}
    for record in records:
        stored = None if redo else done_result(layout.tomogram(record, "analysis.json"),
                                               tomogram_fingerprint(record, settings))
        if stored is not None:
            batch.tomograms[record.key] = stored
            batch.outcomes.append(Outcome(record.key, "skipped"))
            continue
        slabs = plan_slabs(tomogram_shape(record), cap)
        if len(slabs) == 1:
            handle = executor.submit(analyse_tomogram, record, layout, settings, redo,
                                     key=f"tomogram-{record.key}-{token}", resources=gpu)
        else:
            job = slab_tasks.ChunkJob(record, layout, settings, tuple(slabs))
            if redo:
                shutil.rmtree(job.folder, ignore_errors=True)
            handle = submit_slabs(executor, job, f"{record.key}-{token}", gpu)
        handles[record.key] = handle
        pending[handle.key] = ("tomogram", record.key)
    for before, after in consecutive_pairs(records):
        name = interval_name(before, after)
        stored = None if redo else done_result(layout.interval(before, after), interval_fingerprint(
            tomogram_fingerprint(before, settings), tomogram_fingerprint(after, settings), settings))
        if stored is not None:
            batch.intervals[name] = stored
            batch.outcomes.append(Outcome(name, "skipped"))
            continue
        inputs = [handles.get(r.key, batch.tomograms.get(r.key)) for r in (before, after)]
        handle = executor.submit(analyse_interval, *inputs, layout, settings, redo, key=f"interval-{name}-{token}",
                                 resources=None)
        pending[handle.key] = ("interval", name)
        handles[name] = handle
    submitted = [handles[name] for _, name in pending.values()]
    bar = tqdm(total=len(submitted), desc="nanoscope analyze", unit="task", disable=not progress)
    for handle in executor.as_completed(submitted):
        kind, name = pending[handle.key]
        error = handle.exception()
        if error is None:
            (batch.tomograms if kind == "tomogram" else batch.intervals)[name] = handle.result()
            batch.outcomes.append(Outcome(name, "ran"))
        else:
            batch.outcomes.append(Outcome(name, "failed", f"{type(error).__name__}: {error}"))
        bar.update()
    bar.close()
    return batch
