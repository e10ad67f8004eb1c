"""The documents of an analysis run derived from a raw run (event-model), linked to it by uid.

The start document carries ``raw_run_uid`` (and the raw run's scan id, plan and
subject) so that a catalog finds the analysis of a scan and the scan of an analysis;
each stream's descriptor is made from its first event's data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from event_model import compose_run

Publish = Callable[[str, dict], None]


def data_key(value: Any, source: str) -> dict[str, Any]:
    """The event-model data key describing ``value``."""
    if isinstance(value, np.ndarray):
        return {"source": source, "dtype": "array", "shape": list(value.shape), "dtype_numpy": value.dtype.str}
    if isinstance(value, (bool, np.bool_)):
        return {"source": source, "dtype": "boolean", "shape": []}
    if isinstance(value, (int, np.integer)):
        return {"source": source, "dtype": "integer", "shape": []}
    if isinstance(value, (float, np.floating)):
        return {"source": source, "dtype": "number", "shape": []}
    return {"source": source, "dtype": "string", "shape": []}


class AnalysisRun:
    """Composes and publishes one analysis run: ``event(stream, data)`` for each result, ``stop`` at the end."""

    def __init__(self, publish: Publish, raw_start: Mapping[str, Any], analysis: str,
                 metadata: Mapping[str, Any]) -> None:
        self.publish = publish
        self.source = analysis
        linked = {
            "analysis": analysis,
            "raw_run_uid": raw_start["uid"],
            "raw_scan_id": raw_start.get("scan_id"),
            "raw_plan_name": raw_start.get("plan_name"),
            "subject": raw_start.get("subject"),
            "plan_name": analysis,
        }
        self._bundle = compose_run(metadata={**linked, **metadata})
        self.uid: str = self._bundle.start_doc["uid"]
        self._streams: dict[str, Any] = {}
        self.stopped = False
        publish("start", self._bundle.start_doc)

    def event(self, stream: str, data: Mapping[str, Any]) -> None:
        """Publish one event in ``stream`` (its descriptor first, made from this event's data)."""
        if stream not in self._streams:
            keys = {name: data_key(value, self.source) for name, value in data.items()}
            self._streams[stream] = self._bundle.compose_descriptor(name=stream, data_keys=keys)
            self.publish("descriptor", self._streams[stream].descriptor_doc)
        now = time.time()
        self.publish("event", self._streams[stream].compose_event(data=dict(data), timestamps={k: now for k in data}))

    def stop(self, exit_status: str = "success", reason: str = "") -> None:
        if not self.stopped:
            self.stopped = True
            self.publish("stop", self._bundle.compose_stop(exit_status=exit_status, reason=reason))
