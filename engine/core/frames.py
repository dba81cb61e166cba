"""What the synthesizers make: one output video frame with its kind, box and timing as typed fields.

A :class:`Frame` is output frame ``index`` (its presentation time is ``index / 25`` s on the session's
output clock). ``image`` is the whole BGR frame (read-only; None when only reported); ``box`` the face
box it was drawn into, in the one box convention of the project (:class:`Box`: ``x0, y0, x1, y1``,
pixels, end-exclusive); ``timing`` the :class:`FrameTiming` record the latency accounting reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from engine.core.clock import FPS

__all__ = ["Box", "Frame", "FrameKind", "FrameTiming"]


class FrameKind(enum.Enum):
    """What a frame shows: a rendered face (full or fading in), the avatar at rest (possibly fading out,
    or the preview renderer's closed mouth in silence), or rest because its window was shed (too late)."""

    SPEECH = "speech"
    REST = "rest"
    DROPPED = "dropped"


class Box(NamedTuple):
    """A face box in frame pixels: columns ``x0..x1``, rows ``y0..y1`` (end-exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def from_yyxx(cls, box) -> Box:
        """From the authors' crop convention ``(y1, y2, x1, x2)`` (the avatar's ``boxes``)."""
        y1, y2, x1, x2 = (int(v) for v in box)
        return cls(x1, y1, x2, y2)

    @property
    def yyxx(self) -> tuple[int, int, int, int]:
        """The authors' convention ``(y1, y2, x1, x2)`` (for slicing ``frame[y1:y2, x1:x2]``)."""
        return (self.y0, self.y1, self.x0, self.x1)


@dataclass(slots=True)
class FrameTiming:
    """Latency accounting of one frame (``time.perf_counter()`` times and durations in seconds).

    ``ready``: its window's audio was complete (the push that completed it had made it); ``mel_s``: mel
    and window forming of that push; ``model_start`` / ``model_end``: the synthesizer call that made it
    (None for rest frames); ``transformer_s``, ``sketch_s``, ``renderer_s``: that call's stages (shared
    with the other windows of the call); ``composite_s``: model end -> this frame pasted; ``emitted``:
    handed to the session's consumer."""

    ready: float | None = None
    mel_s: float = 0.0
    model_start: float | None = None
    model_end: float | None = None
    transformer_s: float = 0.0
    sketch_s: float = 0.0
    renderer_s: float = 0.0
    composite_s: float = 0.0
    emitted: float | None = None

    def copy(self) -> FrameTiming:
        return FrameTiming(
            self.ready,
            self.mel_s,
            self.model_start,
            self.model_end,
            self.transformer_s,
            self.sketch_s,
            self.renderer_s,
            self.composite_s,
            self.emitted,
        )


@dataclass(slots=True)
class Frame:
    """One output video frame (see the module docstring). ``template``: the avatar frame it is drawn on;
    ``face``: the generated 128x128 face when a neural synthesizer made one; ``openness``: the mouth
    openness drawn (0 closed .. 1 widest) when the synthesizer knows it."""

    index: int
    kind: FrameKind
    image: np.ndarray | None = None
    box: Box | None = None
    timing: FrameTiming = field(default_factory=FrameTiming)
    template: int | None = None
    face: np.ndarray | None = None
    openness: float | None = None

    @property
    def is_speech(self) -> bool:
        return self.kind is FrameKind.SPEECH

    @property
    def time_s(self) -> float:
        """Presentation time on the output clock."""
        return self.index / float(FPS)
