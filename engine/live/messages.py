"""The vocabulary of a live session: what flows in and out, and the controls that steer it.

Audio goes in as arrays (``LiveSession.push_audio``); the scheduler turns it into
:class:`engine.core.schedule.Window` objects; a :class:`engine.synth.base.Synthesizer` turns windows into
:class:`engine.core.frames.Frame` objects (a :class:`FrameKind`, a :class:`Box`, a :class:`FrameTiming`).
A :class:`Control` acts synchronously, at once, when the transport hands it to the session: ``FLUSH``
(also sent as ``interrupt`` on the wire) drops the queued audio, windows and frames and returns to the
avatar at rest; ``SWITCH_AVATAR`` swaps the avatar from the next frame on; ``SEGMENT_END`` ends the
current segment (an utterance: its last windows are made now, the next audio starts a new segment);
``END`` finishes the audio received and closes the frame stream after its last frame.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from engine.core.clock import FPS
from engine.core.frames import Box, Frame, FrameKind, FrameTiming
from engine.core.schedule import Window

__all__ = ["FPS", "STAGES", "Box", "Control", "ControlKind", "Frame", "FrameKind", "FrameTiming", "Window"]


#: The stages of one frame, in order; they add up to ``total`` (audio arrival -> frame on the wire):
#: ``ingest`` (the audio of the frame's first sample: arrival -> resampled and through the voice
#: gate), ``mel`` (mel + window forming of the push that completed the window), ``window_wait`` (-> the
#: rest of its window's audio is in: the synthesizer's look-ahead), ``queue`` (window ready -> the
#: model's stages run: waiting for the worker, batching with other sessions, hand-offs),
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


class ControlKind(enum.Enum):
    """What a :class:`Control` asks for."""

    FLUSH = "flush"  # drop queued audio, windows and frames; the avatar at rest from the next frame
    SWITCH_AVATAR = "switch_avatar"  # payload: the prepared avatar to use from the next frame on
    SEGMENT_END = "segment_end"  # the utterance is complete: finish its audio; the next audio is a new one
    END = "end"  # no more audio: finish what was received, then close the frame stream

    @classmethod
    def from_wire(cls, name: str) -> ControlKind:
        """The kind a wire message names; ``interrupt`` is the wire alias of ``flush``."""
        return cls.FLUSH if name == "interrupt" else cls(name)


@dataclass(frozen=True, slots=True)
class Control:
    """A control message (see the module docstring)."""

    kind: ControlKind
    payload: Any = None
