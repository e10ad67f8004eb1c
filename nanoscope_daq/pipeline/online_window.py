"""Which frame stands for each planned angle of the online volume: the sliding window of tomostream.

Every valid projection takes the *slot* of its planned angle (grid index modulo the
grid's count). A later frame in the same slot (the next turn of a continuous rotation,
the way back of a back-and-forth series, an angle re-taken after a beam loss) replaces
the earlier one: the volume is updated as new = old + new frames - replaced frames.
The frames a slot held before are remembered (as camera-file indices, never pixels)
until their tomogram has been published, so that each tomogram's volume can be made
exactly from its own frames even when frames of the next one were already added.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FrameRef:
    """A projection in the volume: its camera-file index, measured angle, slot, and the first frame of the flats that
    normalised it."""

    index: int
    angle_deg: float
    slot: int
    field: int


class SlotWindow:
    """The frame in each slot now, and the frames each slot held before, for tomogram snapshots."""

    def __init__(self) -> None:
        self._history: dict[int, list[FrameRef]] = {}

    def __len__(self) -> int:
        return len(self._history)

    def place(self, ref: FrameRef) -> FrameRef | None:
        """Put ``ref`` in its slot; returns the frame it replaces (None if the slot was empty)."""
        history = self._history.setdefault(ref.slot, [])
        replaced = history[-1] if history else None
        history.append(ref)
        return replaced

    def current(self) -> dict[int, FrameRef]:
        return {slot: history[-1] for slot, history in self._history.items()}

    def latest_within(self, start: int, stop: int) -> dict[int, FrameRef]:
        """Per slot, the last frame with a camera-file index in ``[start, stop)``."""
        found = {}
        for slot, history in self._history.items():
            inside = [ref for ref in history if start <= ref.index < stop]
            if inside:
                found[slot] = inside[-1]
        return found

    def forget_before(self, index: int) -> None:
        """Drop the remembered (no longer current) frames taken before camera-file ``index``."""
        for history in self._history.values():
            history[:-1] = [ref for ref in history[:-1] if ref.index >= index]
