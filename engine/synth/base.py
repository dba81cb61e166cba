"""The seam between scheduling and synthesis: the :class:`Synthesizer` protocol.

A synthesizer turns :class:`engine.core.schedule.Window` objects of a prepared avatar into
:class:`engine.core.frames.Frame` objects. The offline dubber, the live session and the cross-session
batcher use it without knowing which one runs (neural, preview or none):

- ``Synthesizer.open(avatar, crossfade=..., audio=...)`` -> a :class:`SynthStream`, the per-session
  (or per-dub) state: references loaded for one avatar, cross-fades, openness trackers.
- ``SynthStream.compute(avatar, group)``: the model work for the windows planned ``SPEECH`` (the part
  batched across sessions); ``SynthStream.compose(avatar, computed, gen)``: the frames of the whole group
  (speech, rest and shed windows), in order, with their stage timings, and the call's :class:`CallInfo`.
  The live session runs both on its worker thread; the offline dubber overlaps ``compose`` of one batch
  with ``compute`` of the next.
- ``lookahead_ms``: how much audio after a frame's own time the synthesizer needs to make it (the one
  source of the look-ahead: the live session and the stream's delay budget read it); ``frame_analysis``
  (optional, default None): an :class:`engine.core.lookahead.FrameAnalysis` when each frame needs only
  the mel around its own time (the preview: 50 ms), so the live session makes one window per frame as
  soon as that exists; None: the transformer's 5-chunk windows (212.5 ms);
  ``computes``: whether a speech window costs a model call (the session sheds late ones); ``name``:
  ``"neural"``, ``"preview"`` or ``"none"``.

``gen`` is the live session's flush generation: a stream drops its carried state (fades, trackers) when
it changes. Streams are used from one thread at a time (the session's worker); synthesizers are shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.core.avatar import Avatar
from engine.core.frames import Frame, FrameKind, FrameTiming
from engine.core.lookahead import FrameAnalysis
from engine.core.schedule import Window, pingpong

__all__ = ["CallInfo", "Computed", "Planned", "SynthStream", "Synthesizer", "readonly", "rest_frame"]


@dataclass(slots=True)
class Planned:
    """A window and what the session decided for it: ``SPEECH`` (compute), ``REST`` (silence) or
    ``DROPPED`` (shed: it could not be ready by its ``deadline``, a ``perf_counter()`` time or None).
    ``ready``: when its audio was complete; ``mel_s``: mel and window forming of that push."""

    window: Window
    ready: float
    action: FrameKind = FrameKind.REST
    mel_s: float = 0.0
    deadline: float | None = None


@dataclass(slots=True)
class CallInfo:
    """What one synthesizer call cost: its model span, the windows it computed and the compose time."""

    model_start: float
    model_end: float
    windows: int
    composite_s: float = 0.0


@dataclass(slots=True)
class Computed:
    """The result of :meth:`SynthStream.compute`: the group, per-window results keyed by position in the
    group (a face, content landmarks, ...), and the call's timings (None: no model call)."""

    group: list[Planned]
    results: dict[int, Any]
    info: CallInfo | None = None
    split: dict[str, float] | None = None


class SynthStream(Protocol):
    def set_avatar(self, avatar: Avatar) -> None: ...

    def audio_ahead(self) -> Any:
        """A sink for the audio of a dub that streams ahead of its windows (``add_samples(x16k)``,
        ``end()``, ``window(w)``) when the synthesizer analyses it (the preview renderer's openness),
        else None."""

    def compute(self, avatar: Avatar, group: list[Planned]) -> Computed: ...

    def compose(self, avatar: Avatar, computed: Computed, gen: int = 0) -> list[Frame]: ...


class Synthesizer(Protocol):
    name: str
    lookahead_ms: float
    computes: bool
    frame_analysis: FrameAnalysis | None

    def open(self, avatar: Avatar, crossfade: int = 0, audio: np.ndarray | None = None) -> SynthStream: ...

    def warm_up(self, avatar: Avatar) -> float: ...

    def release(self, avatar: Avatar) -> None: ...

    def close(self) -> None: ...


def readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def rest_frame(avatar: Avatar, q: int, timing: FrameTiming, kind: FrameKind = FrameKind.REST) -> Frame:
    """Output frame ``q`` as the avatar at rest: template frame ``pingpong(q)`` itself (a read-only view)."""
    ti = int(pingpong(q, avatar.n_frames))
    return Frame(index=q, kind=kind, image=readonly(avatar.frames[ti]), timing=timing, template=ti)


def planned_timing(item: Planned) -> FrameTiming:
    return FrameTiming(ready=item.ready, mel_s=item.mel_s)
