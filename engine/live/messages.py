"""The message vocabulary of the live engine (in the style of pipecat frames / livekit VideoGenerator).

Data flows through the live path as immutable messages::

    AudioChunk  ->  (resample, mel, speech gate, scheduler)  ->  MelWindow  ->  (transformer, renderer)
                                                                            ->  RenderedFrame

and the stages are steered by :class:`Control` messages (flush, interrupt, avatar switch, stats
request, end of stream).

**Control messages overtake data.** Every stage owns two inputs, a control queue and a data queue,
and checks the control queue first, before taking the next data message. An ``INTERRUPT`` therefore
takes effect at once, even when many audio chunks or windows are already queued; on ``FLUSH`` and
``INTERRUPT`` the stage drops its queued audio, windows and frames and returns to idle. ``END`` is the one
control message that is also ordered with data: a stage forwards it after the data it has accepted.

Arrays are float32; indices are on the session clocks: audio samples at 16 kHz (``start_sample``,
spans) and output video frames at 25 fps (``index``, ``pts`` in 1/25 s units).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AudioChunk",
    "Control",
    "ControlKind",
    "MelWindow",
    "Message",
    "RenderedFrame",
    "is_control",
]

FPS = 25  # output video frames per second; a RenderedFrame's pts is counted in 1/FPS s


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A piece of mono audio on the session's audio clock.

    ``samples``: float32 (n,), nominally in [-1, 1]; ``start_sample``: index of ``samples[0]`` on the
    session clock (counted at ``sample_rate``); ``sample_rate``: 16000 once resampled.
    """

    samples: np.ndarray
    start_sample: int
    sample_rate: int = 16000

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_sample(self) -> int:
        """One past the last sample, on the session clock."""
        return self.start_sample + self.num_samples

    @property
    def duration_s(self) -> float:
        return self.num_samples / float(self.sample_rate)


@dataclass(frozen=True, slots=True)
class MelWindow:
    """Everything the models need to make one output frame (one offline schedule window).

    - ``index``: the output frame p it makes; ``output_indices``: the frames that show it,
      ``(p, p+1, p+2)`` for the first window of a segment (the first face is shown 3 times, as
      offline), else ``(p,)``.
    - ``mel``: the 5 transformer mel chunks, (5, 80, 16) float32, ``chunks[max(0, i-2)]`` for
      ``i = b..b+4``; ``render_mel``: the renderer's chunk ``chunks[b]``, (80, 16) float32.
    - ``templates``: the 5 template frame indices of the window (poses); ``render_template``: the
      template frame the face is drawn into.
    - ``span``: ``[start, end)`` audio samples (16 kHz session clock) the window depends on (all 5
      chunks); ``render_span``: those of ``render_mel`` (the audio that drives the mouth).
    - ``is_speech``: the speech gate's verdict on ``render_span`` (True when no gate is used).
    - ``start`` and ``mel_indices``: the window number b and chunk numbers inside its segment (as
      :class:`engine.core.schedule.Window`), for checking against the offline plan.
    """

    index: int
    output_indices: tuple[int, ...]
    mel: np.ndarray
    render_mel: np.ndarray
    templates: tuple[int, ...]
    render_template: int
    span: tuple[int, int]
    render_span: tuple[int, int]
    is_speech: bool = True
    start: int = 0
    mel_indices: tuple[int, ...] = ()


#: The stages of one frame, in order; they add up to ``total`` (audio arrival -> frame on the wire):
#: ``ingest`` (the audio of the frame's first sample: arrival -> resampled and through the voice
#: gate), ``window_wait`` (-> the rest of its window's audio is in: the model's look-ahead),
#: ``mel`` (mel + window forming of the push that completed the window), ``queue`` (window ready
#: -> the model's stages run: waiting for the worker, batching with other sessions, hand-offs),
#: ``transformer``, ``sketch``, ``renderer`` (the model call that computed it), ``composite``
#: (pasting into the avatar frame), ``hold`` (ready -> its due time: the playout buffer that keeps
#: the delay constant), ``encode`` (handed to the sender -> encoded), ``send`` (encoded -> its last
#: packet handed to the transport). Rest frames (silence, shed windows) have no model stages.
STAGES = (
    "ingest",
    "mel",
    "window_wait",
    "queue",
    "transformer",
    "sketch",
    "renderer",
    "composite",
    "hold",
    "encode",
    "send",
    "total",
)


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    """One output video frame.

    ``index``: output frame p; ``pts``: presentation time in 1/25 s units (equal to p);
    ``image``: the composited frame (H, W, 3) uint8 BGR, or None when the stage only reports (e.g.
    a dropped frame, or a still idle frame the sink already holds); ``box``: the face box
    ``(x0, y0, x1, y1)`` pasted into, or None; ``timing``, for latency accounting: timestamps
    (``time.perf_counter()``) ``audio`` (its window was ready), ``model_start``, ``model_end``,
    ``emitted``, and durations in seconds (keys ending in ``_s``): ``mel_s`` (mel + window forming
    of the push that completed the window), ``transformer_s``, ``sketch_s``, ``renderer_s`` (the
    model call that computed it, shared with the other windows of that call) and ``composite_s``
    (model end -> this frame pasted); ``openness``: the mouth openness drawn (0 closed .. 1 widest)
    when the renderer knows it (the preview renderer), else None.
    """

    index: int
    pts: int
    image: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    is_speech: bool = True
    timing: dict[str, float] = field(default_factory=dict)
    openness: float | None = None

    @property
    def time_s(self) -> float:
        return self.pts / float(FPS)


class ControlKind(enum.Enum):
    """What a :class:`Control` message asks for."""

    FLUSH = "flush"  # drop queued audio, windows and frames; back to idle within one frame time
    INTERRUPT = "interrupt"  # barge-in: drop pending audio and windows now, go back to idle
    SWITCH_AVATAR = "switch_avatar"  # payload: the avatar to use from the next window on
    STATS = "stats"  # payload: optional callback or dict to fill with stage statistics
    END = "end"  # end of the session: finish, then stop


@dataclass(frozen=True, slots=True)
class Control:
    """A control message; it overtakes queued data (see the module docstring)."""

    kind: ControlKind
    payload: Any = None


Message = AudioChunk | MelWindow | RenderedFrame | Control


def is_control(msg: object) -> bool:
    """True for a :class:`Control` message (which consumers handle before any queued data)."""
    return isinstance(msg, Control)
