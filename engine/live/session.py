"""The live session engine: audio in, lip-synced frames out, with audio as the master clock. A transport
pushes audio (:meth:`LiveSession.push_audio`: any rate, channels and chunk size), steers it
(:meth:`LiveSession.control`: FLUSH, SWITCH_AVATAR, SEGMENT_END, END, acting at once) and iterates
:meth:`LiveSession.frames` (index 0, 1, 2, ... in order); a :class:`engine.synth.base.Synthesizer` makes
the frames, and the session never knows which one. Frame ``p`` covers session samples
``[640 p, 640 (p + 1))``. A speech window that could not be ready by its deadline is shed (rest frames,
counted as dropped), so the delay cannot grow. Everything but synthesis runs on the event loop thread
(none of it is thread-safe); synthesis runs on one worker thread per session. The rules in full:
docs/live.md, "The live session"::

    async with LiveSession(avatar, synth, LiveConfig()) as session:
        session.push_audio(pcm, 48000)
        async for frame in session.frames():
            ...
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from engine.core.avatar import Avatar
from engine.core.clock import FPS, SAMPLES_PER_FRAME
from engine.core.frames import Frame, FrameKind, FrameTiming
from engine.core.schedule import NO_MEL, Window
from engine.core.stats import summary
from engine.core.voice import SpeechGate
from engine.live.audio import IncrementalMel, LiveFrameScheduler, LiveWindowScheduler, StreamingResampler
from engine.live.messages import Control, ControlKind
from engine.synth.base import Planned, Synthesizer, rest_frame

__all__ = ["AudioTap", "LiveConfig", "LiveSession", "LiveStats"]

ESTIMATE_HALF_LIFE_S = 2.0  # without model calls, the model-time estimate halves this often


@dataclass(frozen=True)
class LiveConfig:
    fps: int = FPS  # output frame rate (the schedule is defined at 25 fps)
    batch: int = 2  # max speech windows per synthesizer call
    latency_budget_ms: float | None = 600.0  # ready -> frame bound without a deadline; None: never drop
    crossfade: int = 3  # frames of blend between rest and speech (0: hard cuts)
    speech_gate: bool = True  # False: every window is speech (no gate)
    stats_history: int = 10_000  # entries kept per latency list
    # a window is taken for synthesis only once its frame's deadline is at most this far ahead (plus
    # the expected call time); None: as soon as it is ready. Bounds the frames made ahead of playout
    # when audio comes in faster than real time (needs a deadline: without one, no bound)
    render_ahead_s: float | None = None

    def __post_init__(self) -> None:
        if self.fps != FPS:
            raise ValueError(f"the live schedule runs at {FPS} fps, got {self.fps}")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.crossfade < 0:
            raise ValueError("crossfade must be >= 0")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise ValueError("latency_budget_ms must be positive (or None)")
        if self.render_ahead_s is not None and self.render_ahead_s < 0:
            raise ValueError("render_ahead_s must be >= 0 (or None)")


class AudioTap(Protocol):
    """Sees the session's input audio in session-clock order (a transport's playout copy)."""

    def start(self, sample_rate: int, channels: int, position: int) -> None:
        """New input (a first push, a format change, a new segment) starts at session sample ``position``."""

    def push(self, samples: np.ndarray) -> None:
        """Input samples as pushed (after :meth:`start`)."""

    def finish(self) -> None:
        """The input so far is complete (flush any filter state)."""

    def drop(self) -> None:
        """Discard the audio buffered and not yet played (a flush)."""


@dataclass
class LiveStats:
    """Counters of a session. ``frames`` = ``speech_frames + rest_frames + dropped`` (frames handed
    to the consumer); ``latency`` holds the latest values (seconds) of: ``wait`` (window ready ->
    model start), ``model`` (one model call), ``per_window`` (model call / windows in it),
    ``composite`` (paste and blends of one group), ``emit`` (window ready -> frame emitted: not the
    transport's ``total``, which runs from the audio's arrival to the wire)."""

    frames: int = 0
    speech_frames: int = 0
    rest_frames: int = 0
    dropped: int = 0
    model_calls: int = 0
    windows: int = 0
    flushes: int = 0
    gaps: int = 0
    avatar_switches: int = 0
    audio_seconds: float = 0.0
    latency: dict[str, collections.deque] = field(default_factory=dict)
    history: int = 10_000

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.latency:
            self.latency[stage] = collections.deque(maxlen=self.history)
        self.latency[stage].append(seconds)

    def snapshot(self) -> dict:
        out = {k: getattr(self, k) for k in ("frames", "speech_frames", "rest_frames", "dropped")}
        out.update(model_calls=self.model_calls, windows=self.windows, flushes=self.flushes)
        out.update(gaps=self.gaps, avatar_switches=self.avatar_switches, audio_seconds=self.audio_seconds)
        for stage, values in self.latency.items():
            s = summary(values, 1e3, ("mean", "p50", "p95", "max"))
            if s is not None:
                out[f"{stage}_ms"] = s
        return out


class LiveSession:
    """One live lip-sync session over a prepared avatar (see the module docstring)."""

    def __init__(
        self,
        avatar: Avatar,
        synth: Synthesizer,
        config: LiveConfig | None = None,
        deadline: Callable[[int], float | None] | None = None,
        audio_tap: AudioTap | None = None,
    ) -> None:
        self.config = config or LiveConfig()
        self.synth = synth
        self._deadline = deadline  # f(frame index) -> perf_counter() time the frame must be ready by, or None
        self._tap = audio_tap
        self._avatar = avatar
        self._stream = synth.open(avatar, crossfade=self.config.crossfade)
        self._stats = LiveStats(history=self.config.stats_history)
        self._first_audio: float | None = None  # perf_counter() of the first push_audio
        self._last_push: tuple[float, float] = (0.0, 0.0)  # the latest push's (ingest, mel) seconds
        self._segments: list[tuple[int, int, int]] = []

        # audio front end (loop thread)
        self._resampler: StreamingResampler | None = None
        # the synthesizer's look-ahead: one window per frame around its own time where it needs no more
        # (the preview: its gate warms webrtcvad up on the first quiet frames too), else the transformer's
        analysis = getattr(synth, "frame_analysis", None)
        gate_kw = {} if analysis is None else {"warm_up_on_quiet": True}
        self._gate = SpeechGate(**gate_kw) if self.config.speech_gate else None
        self._mel = IncrementalMel()
        self._sched: LiveWindowScheduler | LiveFrameScheduler = (
            LiveWindowScheduler(avatar.n_frames, fps=self.config.fps, speech_gate=self._gate)
            if analysis is None
            else LiveFrameScheduler(avatar.n_frames, analysis, speech_gate=self._gate)
        )
        self._samples = 0  # session-clock samples (16 kHz) received, plus the frame-boundary skips

        # work and output (loop thread)
        self._windows: collections.deque[Planned] = collections.deque()
        self._out: collections.deque[Frame] = collections.deque()
        self._next_out = 0  # index of the next frame the worker will queue
        self._consumed = 0  # index of the next frame the consumer will get
        self._gen = 0  # bumped by FLUSH / SWITCH_AVATAR: in-flight results of older generations are discarded
        self._ending = False  # END received: no more audio
        self._out_closed = False
        self._error: BaseException | None = None
        self._est_call = 0.0  # seconds per synthesizer call (moving average over recent calls)
        self._last_model_end = 0.0

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-live")
        self._inflight: Future | None = None
        self._task: asyncio.Task | None = None
        self._work_event: asyncio.Event | None = None
        self._out_event: asyncio.Event | None = None
        self._closed = False

    # ---- what a transport reads ------------------------------------------------------------------

    @property
    def avatar(self) -> Avatar:
        return self._avatar

    @property
    def stats(self) -> LiveStats:
        return self._stats

    def stats_snapshot(self) -> dict:
        """A JSON-ready snapshot of :attr:`stats`."""
        return self._stats.snapshot()

    @property
    def error(self) -> BaseException | None:
        """Why the synthesizer failed (then :meth:`frames` raises), or None."""
        return self._error

    @property
    def first_audio_time(self) -> float | None:
        """``perf_counter()`` of the first :meth:`push_audio`."""
        return self._first_audio

    @property
    def last_push(self) -> tuple[float, float]:
        """The latest push's ``(ingest, mel)`` seconds."""
        return self._last_push

    @property
    def lookahead_ms(self) -> float:
        """Audio past a frame's own time that must be in before the frame can be made (the scheduler's,
        from the synthesizer's needs: 212.5 ms for the transformer's windows, 50 ms for the preview)."""
        return self._sched.lookahead_ms

    @property
    def segments(self) -> tuple[tuple[int, int, int], ...]:
        """Finished segments: (first output frame, end frame (exclusive), 16 kHz samples received)."""
        return tuple(self._segments)

    @property
    def speaking(self) -> bool | None:
        """The speech gate's state now (None without a gate)."""
        return None if self._gate is None else bool(self._gate.speaking)

    @property
    def samples_received(self) -> int:
        """The session clock: 16 kHz samples received, plus the skips of flushes and gaps."""
        return self._samples

    @property
    def queued_frames(self) -> int:
        """Frames made and not yet taken by :meth:`frames`."""
        return len(self._out)

    @property
    def pending_windows(self) -> int:
        return len(self._windows)

    # ---- lifecycle ---------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")
        if self._task is None:
            self._work_event, self._out_event = asyncio.Event(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="mouthpiece-live-worker")

    def start(self) -> LiveSession:
        """Start the worker task on the running loop (the first push or control does it too)."""
        self._ensure_started()
        return self

    async def __aenter__(self) -> LiveSession:
        return self.start()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker, wait for an in-flight call to return, and stop the worker thread."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                if asyncio.current_task() is not None and asyncio.current_task().cancelling():
                    raise
            except Exception:  # noqa: BLE001 - already stored in self._error
                pass
        if self._inflight is not None and not self._inflight.done():
            try:
                await asyncio.wrap_future(self._inflight)
            except Exception:  # noqa: BLE001 - the session is closing; the result is unused
                pass
        self._pool.shutdown(wait=True)  # idle now: returns at once
        self._windows.clear()  # never computed now: their mel goes at once
        self._close_output()

    # ---- input ---------------------------------------------------------------------------------

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> int:
        """Feed audio of any rate; (n,) mono or (n, channels). Returns the windows it made ready."""
        if self._ending:
            raise RuntimeError("push_audio() after END")
        self._ensure_started()
        t = time.perf_counter()
        if self._first_audio is None:
            self._first_audio = t
        x = np.asarray(samples)
        if x.ndim not in (1, 2) or x.shape[0] == 0:
            if x.ndim in (1, 2):
                return 0
            raise ValueError(f"audio must be (n,) or (n, channels), got shape {x.shape}")
        channels = 1 if x.ndim == 1 else int(x.shape[1])
        self._stats.audio_seconds += x.shape[0] / float(sample_rate)
        r = self._resampler
        made = 0
        if r is None or r.sample_rate_in != int(sample_rate) or r.channels_in != channels:
            if r is not None:  # the format changed mid-stream: drain the old filters first
                made += self._feed(r.flush(), t)
                if self._tap is not None:
                    self._tap.finish()
            r = self._resampler = StreamingResampler(int(sample_rate), channels)
            if self._tap is not None:
                self._tap.start(int(sample_rate), channels, self._samples)
        if self._tap is not None:
            self._tap.push(x)
        made += self._feed(r.push(x), t)
        return made

    def _feed(self, x: np.ndarray, t: float, finish: bool = False) -> int:
        """16 kHz samples -> gate -> mel -> scheduler -> ready windows. ``t``: when the push began;
        :attr:`last_push` gets its ``ingest`` (resampling, voice gate) and ``mel`` seconds."""
        if x.size and self._gate is not None:
            self._gate.push(x)
        t_mel = time.perf_counter()
        if x.size:
            mel = self._mel.push(x)
            self._samples += int(x.size)
        else:
            mel = np.zeros((self._mel.cfg.n_mels, 0), np.float32)
        if finish:
            mel = np.concatenate([mel, self._mel.finish()], axis=1)
        wins = self._sched.push(mel)
        ready = time.perf_counter()
        self._last_push = (t_mel - t, ready - t_mel)
        self._windows.extend(Planned(w, ready, mel_s=ready - t_mel) for w in wins)
        self._stats.windows += len(wins)
        if wins:
            self._work_event.set()
        return len(wins)

    def control(self, msg: Control) -> None:
        """Act on a control message now (it overtakes queued audio and windows)."""
        self._ensure_started()
        if msg.kind is ControlKind.FLUSH:
            self._reset_to_idle()
        elif msg.kind is ControlKind.END:
            if self._ending:
                return
            self._finish_segment(time.perf_counter())
            self._record_segment()
            self._ending = True
            self._work_event.set()
        elif msg.kind is ControlKind.SWITCH_AVATAR:
            self._switch_avatar(msg.payload)
        elif msg.kind is ControlKind.SEGMENT_END:
            self.close_segment()
        else:  # pragma: no cover - exhaustive
            raise ValueError(f"unknown control {msg.kind}")

    def _finish_segment(self, t: float) -> None:
        """Drain the resampler and pad the mel end, so the segment's last windows are made."""
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        if self._tap is not None:
            self._tap.finish()
        self._resampler = None
        self._feed(tail, t, finish=self._mel.samples_total + tail.size > 0)

    def _record_segment(self) -> None:
        start = self._sched.segment_start
        n = self._samples - start * SAMPLES_PER_FRAME
        if n > 0:
            self._segments.append((start, self._sched.next_index, n))

    def _start_segment(self, p0: int) -> None:
        """The next audio starts a new segment at output frame ``p0`` (its sample ``640 p0``)."""
        self._samples = p0 * SAMPLES_PER_FRAME
        self._resampler = None
        self._mel.reset()
        if self._gate is not None:
            self._gate.reset(self._samples)
        self._sched.reset(p0, self._samples)

    def close_segment(self, to_sample: int | None = None) -> int:
        """End the current segment (its audio is finished as by END, so its last windows are made)
        and move the session clock to the first frame boundary at or after ``to_sample`` (default:
        the clock as it is), the frames in between being rest frames. Returns the first frame of
        the next segment. For a source that paused; a no-op after END."""
        self._ensure_started()
        if self._ending:
            return self._sched.next_index
        t = time.perf_counter()
        if self._resampler is not None or self._mel.samples_total > 0:
            self._finish_segment(t)
            self._record_segment()
        q0 = self._sched.next_index
        target = self._samples if to_sample is None else max(self._samples, int(to_sample))
        p0 = max(-(-target // SAMPLES_PER_FRAME), q0)
        if p0 > q0:  # the gap: rest frames, in order after the segment's last windows
            s0, s1 = q0 * SAMPLES_PER_FRAME, p0 * SAMPLES_PER_FRAME
            gap = Window(
                q0, tuple(range(q0, p0)), (), -1, NO_MEL, span=(s0, s1), render_span=(s0, s1), is_speech=False
            )
            self._windows.append(Planned(gap, t))
            self._work_event.set()
            self._stats.gaps += 1
        self._start_segment(p0)
        return p0

    def _reset_to_idle(self, drop_audio: bool = True) -> None:
        """FLUSH: drop audio, windows and queued frames; rest frames up to the audio clock."""
        self._gen += 1
        self._windows.clear()
        self._out.clear()
        if drop_audio:
            self._stats.flushes += 1
            if self._tap is not None:
                self._tap.drop()
        p0 = max(-(-self._samples // SAMPLES_PER_FRAME), self._next_out, self._consumed)
        now = time.perf_counter()
        for q in range(self._consumed, p0):
            self._out.append(self._rest(q, now))
        self._next_out = p0
        if not self._ending:  # a new segment starts on the next frame boundary of the session clock
            if not drop_audio and self._tap is not None:
                self._tap.finish()
            self._start_segment(p0)
        if self._out:
            self._out_event.set()
        self._work_event.set()

    def _rest(self, q: int, ready: float) -> Frame:
        return rest_frame(self._avatar, q, FrameTiming(ready=ready))

    def _switch_avatar(self, avatar: Avatar) -> None:
        """SWITCH_AVATAR: queued work is dropped (hard cut), the audio kept; new avatar from now on."""
        if not isinstance(avatar, Avatar):
            raise TypeError(f"SWITCH_AVATAR needs a prepared Avatar, got {type(avatar).__name__}")
        self._avatar = avatar
        self._sched.n_template_frames = avatar.n_frames
        self._reset_to_idle(drop_audio=False)
        self._stats.avatar_switches += 1
        # after any running call, before the next (one worker thread)
        job = self._pool.submit(self._stream.set_avatar, avatar)
        job.add_done_callback(self._job_failed)

    def _job_failed(self, job: Future) -> None:
        if not job.cancelled() and job.exception() is not None and self._error is None:
            self._error = job.exception()
            loop = self._task.get_loop() if self._task is not None else None
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._close_output)

    # ---- output --------------------------------------------------------------------------------

    async def frames(self):
        """The output frames in index order; ends after END (or :meth:`aclose`)."""
        self._ensure_started()
        while True:
            while not self._out:
                if self._error is not None:
                    raise RuntimeError("the live synthesizer failed") from self._error
                if self._out_closed:
                    return
                self._out_event.clear()
                await self._out_event.wait()
            frame = self._out.popleft()
            now = time.perf_counter()
            frame.timing.emitted = now
            self._consumed = frame.index + 1
            s = self._stats
            s.frames += 1
            if frame.kind is FrameKind.SPEECH:
                s.speech_frames += 1
            elif frame.kind is FrameKind.REST:
                s.rest_frames += 1
            else:
                s.dropped += 1
            if frame.timing.ready is not None:
                s.add("emit", now - frame.timing.ready)
            yield frame

    def _close_output(self) -> None:
        self._out_closed = True
        if self._out_event is not None:
            self._out_event.set()

    # ---- worker ----------------------------------------------------------------------------------

    async def _worker(self) -> None:
        try:
            while True:
                while not self._windows and not self._ending:
                    self._work_event.clear()
                    await self._work_event.wait()
                if not self._windows:  # END and everything done
                    self._close_output()
                    return
                early = self._early_s()
                if early > 0:  # not due yet: wait (new work and controls wake the worker to look again)
                    self._work_event.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._work_event.wait(), early)
                    continue
                gen = self._gen
                group = self._take_group()
                self._inflight = self._pool.submit(self._synthesize, group, self._avatar, gen)
                frames, info = await asyncio.wrap_future(self._inflight)
                self._inflight = None
                if gen != self._gen:
                    continue  # flushed while the job ran: its frames are obsolete
                self._account(group, info)
                for frame in frames:
                    if frame.index >= self._next_out:
                        self._out.append(frame)
                        self._next_out = frame.index + 1
                self._out_event.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - surfaced by frames()
            self._error = e
            self._close_output()

    def _synthesize(self, group: list[Planned], avatar: Avatar, gen: int):
        """(Worker thread: reads only its arguments, the avatar and the synthesizer's stream.)"""
        computed = self._stream.compute(avatar, group)
        frames = self._stream.compose(avatar, computed, gen)
        return frames, computed.info

    def _estimate(self, now: float) -> float:
        """Seconds the next synthesizer call is expected to take. An estimate from a slow call (a
        warm-up, a load spike) would shed every window and never be measured again: while no call
        is made it decays, so the session tries again after a while."""
        idle = max(0.0, now - self._last_model_end) if self._last_model_end else 0.0
        return self._est_call * 0.5 ** (idle / ESTIMATE_HALF_LIFE_S)

    def _early_s(
        self, item: Planned | None = None, now: float | None = None, est: float | None = None
    ) -> float:
        """How long a window (default: the next) must wait before it is taken (``render_ahead_s``):
        > 0 while its frame's deadline is further ahead than the horizon plus the expected call time."""
        horizon = self.config.render_ahead_s
        if horizon is None or self._deadline is None:
            return 0.0
        limit = self._deadline((item or self._windows[0]).window.index)
        if limit is None:
            return 0.0
        now = time.perf_counter() if now is None else now
        return limit - horizon - (self._estimate(now) if est is None else est) - now

    def _take_group(self) -> list[Planned]:
        """The next windows in order: up to ``batch`` to compute, with the silent / late ones around."""
        now, group, n_speech = time.perf_counter(), [], 0
        est = self._estimate(now)
        while self._windows:
            item = self._windows[0]
            if group and self._early_s(item, now, est) > 0:
                break  # the rest is not due yet (silence is taken no further ahead than speech)
            if item.window.is_speech and self.synth.computes:
                item.deadline = limit = self._deadline_of(item)
                # one call carries the whole group: a window is late if that call would end after its
                # deadline (a call that turns out slower is checked again when it returns)
                late = limit is not None and now + est > limit
                if not late and n_speech == self.config.batch:
                    break
                item.action = FrameKind.DROPPED if late else FrameKind.SPEECH
                n_speech += not late
            else:
                item.action = FrameKind.REST
            group.append(self._windows.popleft())
        return group

    def _deadline_of(self, item: Planned) -> float | None:
        """When the window's (first) frame must be ready; None: no bound."""
        if self._deadline is not None:
            t = self._deadline(item.window.index)
            if t is not None:
                return t
        budget = self.config.latency_budget_ms
        return None if budget is None else item.ready + budget / 1e3

    def _account(self, group: list[Planned], info) -> None:
        if info is None:
            return
        s = self._stats
        s.model_calls += 1
        dt = info.model_end - info.model_start
        s.add("model", dt)
        s.add("per_window", dt / max(1, info.windows))
        s.add("composite", info.composite_s)
        for item in group:
            if item.action is FrameKind.SPEECH:  # computed and shown
                s.add("wait", max(0.0, info.model_start - item.ready))
        self._last_model_end = info.model_end
        a = 0.5 if self._est_call else 1.0
        self._est_call += a * (dt - self._est_call)
