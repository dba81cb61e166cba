"""aiortc media tracks of a :class:`streaming.session.StreamSession`, paced by one clock: the session's
:class:`Playout` fixes ``start``; video frame ``i`` is due at ``start + i / 25``, audio frame ``m`` (960
samples at 48 kHz) at ``start + m / 50``; a track that starts late starts at the present. The first audio
fixes ``anchor``, the output frame that shows session frame 0, and the grid's phase, so session frame
``p`` and its sound leave exactly ``delay`` after the sound came in. :class:`AvatarVideoTrack` shows the
session's frame when it is ready, the last image for at most ``MAX_HOLD_FRAMES`` when the model is late,
else the avatar at rest. :class:`PlayoutAudio` keeps the input audio at 48 kHz on the session clock for
:class:`PlayoutAudioTrack`. The rules in full: docs/live.md, "The playout clock".

Both tracks make each frame once (:meth:`AvatarVideoTrack.produce`, :meth:`PlayoutAudioTrack.produce`)
as a read-only :class:`streaming.broadcast.SharedVideo` / :class:`streaming.broadcast.SharedAudio`
(the picture converted to yuv420p once, off the event loop) for a :class:`streaming.broadcast.Broadcast`
to fan out; their ``recv`` gives one frame of their own to a single direct consumer.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import fractions
import math
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.core.clock import AUDIO_RATE, FPS, SAMPLES_PER_FRAME
from engine.core.schedule import pingpong
from engine.live.audio import StreamingResampler
from engine.live.messages import Control, ControlKind
from streaming.broadcast import SharedAudio, SharedVideo

__all__ = [
    "AUDIO_FRAME",
    "AvatarVideoTrack",
    "MicrophoneSink",
    "Playout",
    "PlayoutAudio",
    "PlayoutAudioTrack",
    "audio_frame_samples",
    "wait_cancelled",
]

PLAYOUT_RATE = 48000  # the playout audio rate
PLAYOUT_SCALE = PLAYOUT_RATE // AUDIO_RATE  # 48 kHz samples per session (16 kHz) sample
VIDEO_TIME_BASE = fractions.Fraction(1, FPS)
AUDIO_TIME_BASE = fractions.Fraction(1, PLAYOUT_RATE)
AUDIO_FRAME = PLAYOUT_RATE // 50  # 960 samples: 20 ms, one Opus frame
PLAYOUT_PER_FRAME = SAMPLES_PER_FRAME * PLAYOUT_SCALE  # 1920 48 kHz samples per video frame
MAX_BEHIND_S = 0.5  # a track this far behind its clock (a stalled loop) jumps to the present
REFINE_MIN_S = 0.002  # the anchor follows an earlier arrival of sample 0 by at least this much
MAX_HOLD_FRAMES = 3  # a late frame repeats the last image this many times, then shows the avatar at rest


class Playout:
    """The shared clock of a session's outgoing tracks (see the module docstring)."""

    def __init__(self, delay_s: float, clock=time.perf_counter) -> None:
        if delay_s < 0:
            raise ValueError("the playout delay must be >= 0")
        self.delay_s = float(delay_s)
        self.clock = clock
        self.start = clock()
        self.offset = 0  # 48 kHz samples the session's timeline was moved later since the anchor (shift)
        self.anchor: int | None = None
        self.first_audio: float | None = None  # the arrival time of session sample 0 the anchor is for

    def set_anchor(self, first_audio_time: float) -> int:
        """Fix the anchor from the arrival time of the session's first audio (once)."""
        if self.anchor is None:
            self.anchor, shift = self._place(first_audio_time)
            self.start += shift
            self.first_audio = first_audio_time
        return self.anchor

    def _place(self, t0: float) -> tuple[int, float]:
        """The anchor for session sample 0 arriving at ``t0``, and the shift of ``start`` (at most half
        a frame, either way) that makes that output frame due at exactly ``t0 + delay``. No shift
        when the frame would be due too soon for the tracks to follow (a delay under two frames):
        then the anchor is the next frame on the present grid (``ceil``), up to a frame late."""
        x = (t0 - self.start + self.delay_s) * FPS
        k = round(x)
        shift = (x - k) / FPS
        if abs(shift) < 1e-6:
            return k, 0.0
        if k >= self.frame_now(shift) + 2:
            return k, shift
        return math.ceil(x - 1e-6), 0.0

    def refine_anchor(self, t0: float) -> bool:
        """Move the anchor earlier when audio shows that sample 0 would have arrived at ``t0``
        (before the first audio's arrival: the first packets came late, as out of a jitter buffer),
        while nothing of the session has been shown yet. Returns whether it moved."""
        if self.anchor is None or t0 > self.first_audio - REFINE_MIN_S:
            return False
        new, shift = self._place(t0)
        due_new, due_old = self.start + shift + new / FPS, self.start + self.anchor / FPS
        if due_new < due_old - 1e-6 and self.frame_now(shift) < new - 1:
            self.anchor = new
            self.start += shift
            self.first_audio = t0
            return True
        return False

    def shift(self, samples: int, keep_delay: bool = False) -> None:
        """Play what comes next ``samples`` (48 kHz) later (+) or earlier (-): the delay grows or shrinks
        by as much, or, with ``keep_delay``, stays (a correction for the sender's clock). Only in silence
        (:class:`streaming.delay.PlayoutControl`): the audio track reads the positions it moved over
        again as silence (growing) or skips them (shrinking); the video holds its image or skips frames."""
        self.offset += int(samples)
        if not keep_delay:
            self.delay_s = max(0.0, self.delay_s + int(samples) / PLAYOUT_RATE)

    @property
    def frame_offset(self) -> int:
        """:attr:`offset` in whole video frames (the video moves by frames, the audio by samples)."""
        return round(self.offset / PLAYOUT_PER_FRAME)

    def frame_now(self, shift: float = 0.0) -> int:
        """The output frame index due now (were ``start`` ``shift`` seconds later)."""
        return int((self.clock() - self.start - shift) * FPS)

    def due(self, index: int, rate: float) -> float:
        """Clock time at which item ``index`` of a stream of ``rate`` items per second is due."""
        return self.start + index / rate

    def session_frame(self, index: int) -> int | None:
        """The session frame output frame ``index`` shows (None before the anchor exists)."""
        return None if self.anchor is None else index - self.anchor - self.frame_offset

    def time_of_session_frame(self, p: int) -> float | None:
        """Clock time at which session frame ``p`` is shown (None before the anchor exists)."""
        return None if self.anchor is None else self.start + (p + self.anchor + self.frame_offset) / FPS

    def audio_position(self, m: int) -> int | None:
        """The 48 kHz session position output audio frame ``m`` starts at (None before the anchor)."""
        if self.anchor is None:
            return None
        return m * AUDIO_FRAME - self.anchor * PLAYOUT_PER_FRAME - self.offset


class PlayoutAudio:
    """The session's input audio at 48 kHz mono on the session clock (48 kHz sample ``3 s`` is 16 kHz
    sample ``s``), for the audio track to send back delayed like the video: the live session's
    :class:`engine.live.session.AudioTap`. Dropped on a flush (the avatar stops talking at once); at most
    ``keep_s`` seconds are kept ahead of the reader."""

    def __init__(self, keep_s: float = 30.0) -> None:
        self.keep = int(keep_s * PLAYOUT_RATE)
        self._resampler: StreamingResampler | None = None
        self._pos = 0  # playout position of the next 48 kHz sample written
        self._chunks: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._read = 0  # read() has consumed everything before this position
        self.late = 0  # 48 kHz samples written behind the reader (never played)

    # ---- AudioTap ------------------------------------------------------------------------------

    def start(self, sample_rate: int, channels: int, position: int) -> None:
        self._resampler = StreamingResampler(sample_rate, channels, target_rate=PLAYOUT_RATE)
        self._pos = PLAYOUT_SCALE * position

    def push(self, samples: np.ndarray) -> None:
        self._write(self._resampler.push(samples))

    def finish(self) -> None:
        if self._resampler is not None:
            self._write(self._resampler.flush())
        self._resampler = None

    def drop(self) -> None:
        self._chunks.clear()
        self._resampler = None

    # ---- reading -------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        """One past the last 48 kHz sample written (on the session clock)."""
        return self._pos

    def _write(self, y: np.ndarray) -> None:
        if not y.size:
            return
        start = self._pos
        self._pos += int(y.size)
        if self._pos <= self._read:
            self.late += int(y.size)
            return
        if start < self._read:
            self.late += self._read - start
            y, start = y[self._read - start :], self._read
        self._chunks.append((start, y))
        while self._chunks and self._chunks[-1][0] - self._chunks[0][0] > self.keep:
            self._chunks.popleft()

    def peak(self, start: int, end: int) -> float:
        """The largest magnitude of the samples kept in ``[start, end)`` (0.0 where there are none)."""
        out = 0.0
        for s0, y in self._chunks:
            if s0 >= end:
                break
            lo, hi = max(s0, start), min(s0 + y.size, end)
            if hi > lo:
                out = max(out, float(np.max(np.abs(y[lo - s0 : hi - s0]))))
        return out

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples ``[start, start + n)`` (48 kHz, session clock) as float32 (n,), zeros where there is
        none (before the first sample, in gaps, dropped by a flush, not yet arrived). Reading consumes:
        what lies before ``start + n`` is discarded, and audio that arrives later for those positions is
        counted in :attr:`late`; positions read before are silence (a grown delay plays them again)."""
        out = np.zeros(int(n), np.float32)
        end = int(start) + int(n)
        for s0, y in self._chunks:
            if s0 >= end:
                break
            lo, hi = max(s0, start, self._read), min(s0 + y.size, end)  # what was read is not played again
            if hi > lo:
                out[lo - start : hi - start] = y[lo - s0 : hi - s0]
        while self._chunks and self._chunks[0][0] + self._chunks[0][1].size <= end:
            self._chunks.popleft()
        self._read = max(self._read, end)
        return out


class _PacedTrack(MediaStreamTrack):
    """A track whose item ``i`` is due at ``playout.start + i / rate``; starts at the present."""

    rate: float = FPS

    def __init__(self, session) -> None:
        super().__init__()
        self._session = session
        self._playout: Playout = session.playout
        self._next: int | None = None
        self.sent = 0

    async def _tick(self) -> int:
        """Wait until the next item is due and return its index."""
        if self.readyState != "live":
            raise MediaStreamError
        pl = self._playout
        now_index = int((pl.clock() - pl.start) * self.rate)
        if self._next is None or now_index - self._next > MAX_BEHIND_S * self.rate:
            self._next = now_index
        i = self._next
        wait = pl.due(i, self.rate) - pl.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if self.readyState != "live":
            raise MediaStreamError
        self._next = i + 1
        self.sent += 1
        return i


class AvatarVideoTrack(_PacedTrack):
    """The session's frames as a 25 fps video track (see the module docstring).

    Counters: ``sent``, ``fresh`` (session frames shown), ``late`` (last image repeated because the
    due frame was not ready), ``idle`` (rest frames made here: no audio covered the frame),
    ``skipped`` (session frames that came after their time and were never shown).
    """

    kind = "video"
    rate = FPS

    def __init__(self, session) -> None:
        super().__init__(session)
        self._image: np.ndarray | None = None
        self.fresh = self.late = self.idle = self.skipped = 0
        self._late_run = 0  # consecutive frames not ready in time
        self.last_shown: int | None = None  # session frame index of the last fresh frame
        self._converted: tuple[np.ndarray | None, tuple] = (None, ())  # the last image and its planes
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def forget_image(self) -> None:
        """After a flush: frames not ready show the avatar at rest instead of the last image."""
        self._image = None

    async def recv(self) -> av.VideoFrame:
        return (await self.produce()).frame()

    async def produce(self) -> SharedVideo:
        """The next output frame, when it is due, made once for every viewer: its image converted
        to yuv420p in this track's converter thread (a held image is not converted again)."""
        i, image = self._next_image(await self._tick())
        if image is not self._converted[0]:
            planes = await self._convert(image)
            if self.readyState != "live":
                raise MediaStreamError
            self._converted = (image, planes)
        h, w = image.shape[:2]
        return SharedVideo(i, VIDEO_TIME_BASE, int(w), int(h), self._converted[1])

    async def _convert(self, image: np.ndarray):
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mouthpiece-yuv")
        loop = asyncio.get_running_loop()
        shared = await loop.run_in_executor(self._executor, SharedVideo.from_bgr, image, 0, VIDEO_TIME_BASE)
        return shared.planes

    def close(self) -> None:
        """Stop the track and its converter thread (waits for a conversion in progress, a few ms)."""
        self.stop()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _next_image(self, i: int) -> tuple[int, np.ndarray]:
        session = self._session
        if session.error is not None:
            self.stop()
            raise MediaStreamError("the live session failed") from session.error
        p = self._playout.session_frame(i)
        image = None
        if p is not None:
            frame, skipped = session.take_frame(p)
            self.skipped += skipped
            shown = self.last_shown
            if frame is None and self._image is not None and shown is not None and p <= shown:
                image = self._image  # the delay grew (in silence): the frames shown again are held
            elif frame is not None and frame.image is not None:
                image = frame.image
                self.fresh += 1
                self._late_run = 0
                self.last_shown = p
                session.frame_sent(frame, self._playout.clock(), i)
            elif self._image is not None and session.covers(p) and self._late_run < MAX_HOLD_FRAMES:
                image = self._image  # the model is late: hold the last image (briefly)
                self.late += 1
                self._late_run += 1
            elif session.covers(p):
                self.late += 1  # late for longer: the avatar at rest rather than a frozen face
                self._late_run += 1
        if image is None:
            avatar = session.avatar
            image = avatar.frames[int(pingpong(max(0, i if p is None else p), avatar.n_frames))]
            self.idle += 1
        self._image = image
        return i, image


class PlayoutAudioTrack(_PacedTrack):
    """The session's input audio, delayed to match the video: 48 kHz mono s16 in 20 ms frames."""

    kind = "audio"
    rate = PLAYOUT_RATE / AUDIO_FRAME  # 50 frames per second

    async def recv(self) -> av.AudioFrame:
        return (await self.produce()).frame()

    async def produce(self) -> SharedAudio:
        """The next 20 ms of audio, when it is due, made once for every viewer."""
        m = await self._tick()
        anchor = self._playout.anchor
        if anchor is None:
            x = np.zeros(AUDIO_FRAME, np.float32)
        else:
            x = self._session.read_audio(self._playout.audio_position(m), AUDIO_FRAME)
        pcm = np.clip(np.rint(x * 32767.0), -32768, 32767).astype(np.int16)
        return SharedAudio.from_pcm(pcm, m * AUDIO_FRAME, PLAYOUT_RATE, AUDIO_TIME_BASE)


async def wait_cancelled(task: asyncio.Task) -> None:
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

    ``session``: anything with ``push_audio(samples, rate)`` and ``control(Control)`` (a
    :class:`streaming.session.StreamSession` or an :class:`engine.live.session.LiveSession`).
    :meth:`start` runs it as a task; :meth:`wait` waits for the end of the track; :meth:`aclose`
    stops it early (no END is sent then unless the track had ended).
    """

    def __init__(self, session, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            raise ValueError(f"MicrophoneSink needs an audio track, got {track.kind}")
        self._session = session
        self._track = track
        # a StreamSession takes the arrival time (its clock) for its ingest stage
        self._clock = getattr(session, "clock", None) if hasattr(session, "arrival") else None
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
            arrived = self._clock() if self._clock is not None else None
            x = audio_frame_samples(frame)
            self.sample_rate, self.channels = int(frame.sample_rate), int(x.shape[1])
            try:
                if arrived is None:
                    self._session.push_audio(x, frame.sample_rate)
                else:  # decoding to samples counts as ingest
                    self._session.push_audio(x, frame.sample_rate, arrived=arrived)
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
            await wait_cancelled(self._task)
