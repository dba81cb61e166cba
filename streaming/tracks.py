"""aiortc media tracks over a :class:`engine.live.LiveSession`.

- :class:`AvatarVideoTrack` sends the session's frames as a 25 fps video track: output frame ``i``
  has ``pts = i`` (``time_base = 1/25``) and is due at ``start + i / 25`` on the track's clock (as
  aiortc's ``VideoStreamTrack.next_timestamp``, but driven by the frame index, so there is no drift).
  It shows session frame ``i - delay_frames`` (so ``pts = frame.index + delay_frames``; with
  ``delay_frames=0``, ``pts = frame.index``). At each due time it sends that session frame when it
  is ready; when it is not, it repeats the last image sent (the avatar's first template frame
  before any), so the video never stalls. Session frames that arrive after their due time are
  skipped (the newest ready one is shown), keeping video on the audio clock. The delay is a
  playout delay: a session frame exists only ``lookahead`` (212.5 ms) plus model time after its
  audio, and the model emits frames in batches, so with no delay most frames would be late and
  half of them skipped.
- :class:`MicrophoneSink` reads a remote audio track and pushes its samples into the session (any
  rate and channel count), then sends ``END`` when the track ends.

Both run on the event loop that owns the session (the session is not thread-safe).
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.live import LiveSession
from engine.messages import FPS, Control, ControlKind, RenderedFrame

__all__ = ["AvatarVideoTrack", "MicrophoneSink", "audio_frame_samples"]

TIME_BASE = fractions.Fraction(1, FPS)


class AvatarVideoTrack(MediaStreamTrack):
    """A video track of the frames of ``session`` (see the module docstring).

    ``delay_frames``: the playout delay in frames (10: 400 ms).
    Counters: ``sent`` (frames returned by :meth:`recv`), ``fresh`` (of those, new session frames),
    ``repeated`` (a previous image again), ``skipped`` (session frames that came too late to show).
    """

    kind = "video"

    def __init__(self, session: LiveSession, delay_frames: int = 10, clock=time.monotonic) -> None:
        super().__init__()
        if delay_frames < 0:
            raise ValueError("delay_frames must be >= 0")
        self.delay_frames = int(delay_frames)
        self._session = session
        self._clock = clock
        self._ready: collections.deque[RenderedFrame] = collections.deque()
        self._pump: asyncio.Task | None = None
        self._ended = False  # the session's frames() has ended
        self._error: BaseException | None = None
        self._image = np.asarray(session.avatar.frames[0])
        self._start: float | None = None
        self._next = 0
        self.sent = self.fresh = self.repeated = self.skipped = 0

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames sent."""
        return int(self._image.shape[0]), int(self._image.shape[1])

    async def _pull(self) -> None:
        try:
            async for frame in self._session.frames():
                self._ready.append(frame)
        except Exception as exc:  # noqa: BLE001 - reported by recv()
            self._error = exc
        finally:
            self._ended = True

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pump is None:
            self._pump = asyncio.get_running_loop().create_task(self._pull(), name="mouthpiece-video-pump")
        i = self._next
        if self._start is None:
            self._start = self._clock()
        else:
            wait = self._start + i / FPS - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)  # pacing: frame i is due at start + i / 25
        if self.readyState != "live":
            raise MediaStreamError
        if self._error is not None:
            self.stop()
            raise MediaStreamError("the live session failed") from self._error
        shown = None
        target = i - self.delay_frames
        while self._ready and self._ready[0].index <= target:
            if shown is not None:
                self.skipped += 1
            shown = self._ready.popleft()
        if shown is not None and shown.image is not None:
            self._image = shown.image
            self.fresh += 1
        else:
            self.repeated += 1
            if shown is not None:
                self.skipped += 1
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self._image), format="bgr24")
        frame.pts = i
        frame.time_base = TIME_BASE
        self._next = i + 1
        self.sent += 1
        return frame

    def stop(self) -> None:
        super().stop()
        if self._pump is not None and not self._pump.done():
            self._pump.cancel()

    async def aclose(self) -> None:
        """Stop the track and wait for its pump task to finish."""
        self.stop()
        if self._pump is not None:
            await _wait_cancelled(self._pump)


async def _wait_cancelled(task: asyncio.Task) -> None:
    """Wait for ``task`` (which may have been cancelled); a CancelledError is swallowed unless the
    caller itself is being cancelled."""
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


def audio_frame_samples(frame: av.AudioFrame) -> np.ndarray:
    """The samples of ``frame`` as (n, channels) (packed or planar formats alike)."""
    x = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return x.T  # (channels, n) -> (n, channels)
    return x.reshape(-1, channels)


class MicrophoneSink:
    """Push the audio of a remote track into a session until the track ends, then send END.

    :meth:`start` runs it as a task; :meth:`wait` waits for the end of the track; :meth:`aclose`
    stops it early (no END is sent then unless the track had ended).
    """

    def __init__(self, session: LiveSession, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            raise ValueError(f"MicrophoneSink needs an audio track, got {track.kind}")
        self._session = session
        self._track = track
        self._task: asyncio.Task | None = None
        self.frames = 0
        self.samples = 0  # per channel, at the incoming rate
        self.sample_rate: int | None = None
        self.channels: int | None = None

    def start(self) -> asyncio.Task:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="mouthpiece-mic-sink")
        return self._task

    async def run(self) -> None:
        while True:
            try:
                frame = await self._track.recv()
            except MediaStreamError:
                break
            x = audio_frame_samples(frame)
            self.sample_rate, self.channels = int(frame.sample_rate), int(x.shape[1])
            try:
                self._session.push_audio(x, frame.sample_rate)
            except RuntimeError:  # the session was closed (or ended) under us: stop reading
                return
            self.frames += 1
            self.samples += int(x.shape[0])
        try:
            self._session.control(Control(ControlKind.END))
        except RuntimeError:  # already closed
            pass

    async def wait(self) -> None:
        if self._task is not None:
            await self._task

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await _wait_cancelled(self._task)
