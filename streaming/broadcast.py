"""One source, any number of viewers: the fan-out of a session's video and audio.

A source (the session's paced :class:`streaming.tracks.AvatarVideoTrack` or
:class:`streaming.tracks.PlayoutAudioTrack`) makes each frame once, as a :class:`SharedVideo` or
:class:`SharedAudio`: read-only numpy arrays (the picture already in yuv420p, the audio as s16) and
the frame's pts on the session clock. A :class:`Broadcast` reads the source at its own pace (the
playout clock) while it has viewers and puts every item into each viewer's bounded queue. Each viewer
is a :class:`ViewerTrack`, an aiortc track of its own; its :meth:`ViewerTrack.recv` makes a NEW
``av.VideoFrame`` / ``av.AudioFrame`` with its own buffers from the shared arrays, so the encoders of
different viewers, which run in threads, never touch a common mutable object (aiortc's encoders
reformat a frame, or set its picture type for a keyframe, on the frame they are given).

Guarantees:

- putting an item into a queue never waits: a viewer whose queue is full (its encoder or network is
  slower than the source, or stalled) loses its OWN oldest item, counted in
  :attr:`ViewerTrack.dropped`; the source and the other viewers go on at the source's pace;
- viewers join and leave at any time (:meth:`Broadcast.subscribe`, :meth:`ViewerTrack.stop`; aiortc
  stops a sender's track when its peer closes); a new viewer gets the items made after it joined, and
  aiortc gives every new sender a new encoder, whose first frame is a keyframe;
- the pts are the source's (the session's wall-clock positions), so every viewer's audio and video
  are on the same clock, whatever each one dropped;
- the source is read only while there are viewers; :meth:`Broadcast.aclose` ends every viewer and
  the reading task.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

__all__ = [
    "AUDIO_QUEUE",
    "VIDEO_QUEUE",
    "Broadcast",
    "SharedAudio",
    "SharedVideo",
    "ViewerTrack",
    "yuv420p_planes",
]

log = logging.getLogger(__name__)

# How far a viewer may fall behind before its oldest items are dropped. A paced source whose loop was
# held up catches up with a burst of up to MAX_BEHIND_S (0.5 s, streaming/tracks.py) of items at once;
# a queue holds such a burst, so a pause of the whole server costs no viewer a frame by itself.
VIDEO_QUEUE = 13  # video frames (520 ms at 25 fps)
AUDIO_QUEUE = 50  # 20 ms audio frames (1 s): an audio gap is heard, a late one is not


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def yuv420p_planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A BGR image (h, w, 3) uint8 as its yuv420p planes (Y: h x w, U and V: ceil(h/2) x ceil(w/2)),
    each a new read-only C-contiguous array (odd sizes too). Uses a frame and a converter of its
    own, so it may run in any thread."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
    yuv = frame.reformat(format="yuv420p")
    out = []
    for plane in yuv.planes:
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        out.append(_read_only(np.ascontiguousarray(rows[:, : plane.width])))
    return out[0], out[1], out[2]


@dataclass(frozen=True, eq=False)
class SharedVideo:
    """One video frame made once for every viewer: yuv420p planes (read-only), its pts."""

    pts: int
    time_base: fractions.Fraction
    width: int
    height: int
    planes: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def from_bgr(cls, image: np.ndarray, pts: int, time_base: fractions.Fraction) -> SharedVideo:
        return cls(pts, time_base, int(image.shape[1]), int(image.shape[0]), yuv420p_planes(image))

    def frame(self) -> av.VideoFrame:
        """A new ``av.VideoFrame`` (yuv420p) with buffers of its own, a copy of the planes."""
        f = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, src in zip(f.planes, self.planes, strict=True):
            dst = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            dst[:, : plane.width] = src
        f.pts = self.pts
        f.time_base = self.time_base
        return f


@dataclass(frozen=True, eq=False)
class SharedAudio:
    """One audio frame made once for every viewer: s16 samples (1, n) mono (read-only), its pts."""

    pts: int
    time_base: fractions.Fraction
    sample_rate: int
    samples: np.ndarray

    @classmethod
    def from_pcm(
        cls, pcm: np.ndarray, pts: int, sample_rate: int, time_base: fractions.Fraction
    ) -> SharedAudio:
        return cls(pts, time_base, int(sample_rate), _read_only(np.ascontiguousarray(pcm.reshape(1, -1))))

    def frame(self) -> av.AudioFrame:
        """A new ``av.AudioFrame`` (s16 mono) with a buffer of its own, a copy of the samples."""
        f = av.AudioFrame.from_ndarray(self.samples, format="s16", layout="mono")
        f.sample_rate = self.sample_rate
        f.pts = self.pts
        f.time_base = self.time_base
        return f


class ViewerTrack(MediaStreamTrack):
    """One viewer's track of a :class:`Broadcast`: a bounded queue of shared items; :meth:`recv`
    returns a new frame of the oldest. Counters: ``queued`` (items put in), ``delivered`` (frames
    returned by recv), ``dropped`` (items lost because the queue was full)."""

    def __init__(self, broadcast: Broadcast, kind: str, maxlen: int) -> None:
        super().__init__()
        self.kind = kind
        self._broadcast = broadcast
        self._queue: collections.deque = collections.deque()
        self.maxlen = int(maxlen)
        self._wake: asyncio.Future | None = None
        self.queued = self.delivered = self.dropped = 0

    def put(self, item) -> None:
        """Queue ``item`` (never waits): a full queue loses its oldest item."""
        if self.readyState != "live":
            return
        if len(self._queue) >= self.maxlen:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(item)
        self.queued += 1
        self._notify()

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    @property
    def pending(self) -> int:
        """Items waiting in the queue."""
        return len(self._queue)

    async def recv(self):
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        if self.readyState != "live":
            raise MediaStreamError
        item = self._queue.popleft()
        self.delivered += 1
        return item.frame()

    def stop(self) -> None:
        """Leave the broadcast: the queue is emptied and a waiting :meth:`recv` ends."""
        if self.readyState == "live":
            super().stop()
            self._queue.clear()
            self._broadcast._leave(self)
            self._notify()


class Broadcast:
    """Fan one source out to viewers (see the module docstring).

    ``source``: an object with ``kind`` and ``async produce()`` that returns the next item (a
    :class:`SharedVideo` / :class:`SharedAudio`, or anything with ``frame()``) when it is due and
    raises ``MediaStreamError`` when it has ended. ``queue``: each viewer's queue length.
    """

    def __init__(self, source, queue: int, name: str = "broadcast") -> None:
        if queue < 1:
            raise ValueError("a viewer's queue must hold at least one item")
        self.source = source
        self.kind = source.kind
        self.queue = int(queue)
        self.name = name
        self._viewers: dict[ViewerTrack, None] = {}  # insertion-ordered set
        self._task: asyncio.Task | None = None
        self._running = False
        self.closed = False
        self.produced = 0  # items read from the source
        self.joined = 0  # viewers ever subscribed
        self.dropped_gone = 0  # items dropped by viewers that have left

    @property
    def viewers(self) -> tuple[ViewerTrack, ...]:
        return tuple(self._viewers)

    @property
    def dropped(self) -> int:
        """Items dropped by all viewers, present and gone."""
        return self.dropped_gone + sum(v.dropped for v in self._viewers)

    def subscribe(self) -> ViewerTrack:
        """A new viewer (its track). RuntimeError once the broadcast is closed."""
        if self.closed:
            raise RuntimeError("the broadcast is closed")
        viewer = ViewerTrack(self, self.kind, self.queue)
        self._viewers[viewer] = None
        self.joined += 1
        if not self._running:
            self._running = True
            self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"mouthpiece-{self.name}")
        return viewer

    def _leave(self, viewer: ViewerTrack) -> None:
        if viewer in self._viewers:
            del self._viewers[viewer]
            self.dropped_gone += viewer.dropped

    async def _pump(self) -> None:
        """Read the source while there are viewers; hand each item to every viewer."""
        try:
            while self._viewers:
                item = await self.source.produce()
                self.produced += 1
                for viewer in tuple(self._viewers):
                    viewer.put(item)
        except MediaStreamError:  # the source ended: so do the viewers
            self._end_viewers()
        except Exception:  # noqa: BLE001 - a failing source ends its viewers, not the server
            log.exception("%s: the source failed", self.name)
            self._end_viewers()
        finally:
            self._running = False

    def _end_viewers(self) -> None:
        for viewer in tuple(self._viewers):
            viewer.stop()

    async def aclose(self) -> None:
        """End every viewer and stop reading the source (no new viewers after this)."""
        self.closed = True
        self._end_viewers()
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def stats(self) -> dict:
        """``viewers`` now, ``joined`` ever, ``produced`` items, ``dropped`` (all viewers) and each
        present viewer's ``pending`` / ``dropped``."""
        return {
            "viewers": len(self._viewers),
            "joined": self.joined,
            "produced": self.produced,
            "dropped": self.dropped,
            "each": [{"pending": v.pending, "dropped": v.dropped} for v in self._viewers],
        }
