"""The live session engine: audio in, lip-synced frames out, with audio as the master clock.

A :class:`LiveSession` is transport-agnostic: a transport (WebRTC later) pushes audio with
:meth:`LiveSession.push_audio`, steers it with :meth:`LiveSession.control` and pulls frames from
:meth:`LiveSession.frames`::

    async with LiveSession(avatar, landmark_model, renderer_backend, LiveConfig()) as session:
        session.push_audio(pcm, 48000)            # any rate / channel count, any chunk size
        async for frame in session.frames():      # RenderedFrame, pts 0, 1, 2, ... in order
            ...
        session.control(Control(ControlKind.END))

**Clock.** Output frame ``p`` has ``pts = p`` (1/25 s) and covers samples ``[640 p, 640 (p + 1))``
of the session's 16 kHz clock (the resampled audio, counted from the first sample pushed). The
front end is that of :mod:`engine.live.audio` in its order: resample -> speech gate -> incremental
mel -> window scheduler; each :class:`engine.live.messages.MelWindow` is *ready* at the time the push
that completed it arrived (``timing["audio"]``), about ``lookahead_ms`` (212.5 ms) after its
nominal time in a real-time stream.

**Threading model.** Everything except model compute runs on the event loop thread, and none of it
is thread-safe: call :meth:`push_audio`, :meth:`control` and iterate :meth:`frames` from the loop
that owns the session. The front end costs well under a millisecond per 20 ms chunk, so it runs
inline in :meth:`push_audio`. One worker task (an ``asyncio.Task``) takes the ready windows in
order and hands each *group* (up to ``batch`` speech windows, plus the silence or dropped windows
before and between them) to a private single-thread executor, which runs transformer + sketches +
renderer (the offline :class:`engine.synth.neural.Dubber`'s ``faces``, so the faces are the offline
ones; with a :class:`engine.synth.batcher.SharedModelWorker` the model call is a request to the worker
that several sessions share, batched with theirs), pastes the faces
(:func:`engine.core.composite.composite`) and blends the cross-fades. The executor thread touches only
its arguments and the read-only avatar and models; all session state (queues, counters, fade
state) is changed on the loop thread only, after the job returns. A generation counter makes the
result of a job that was running during a FLUSH / INTERRUPT be
discarded. The loop therefore never blocks on a model call.

**Silence.** A window the speech gate calls silence makes no model call: its frames are the
template at rest, the avatar frame ``f(p)`` itself (a read-only view, no copy). Transitions cross-
fade over ``crossfade`` frames: entering speech, the rendered frame is blended over the rest frame
with weights ``1/(K+1) .. K/(K+1)``; leaving it, the last generated face is pasted into the rest
frames with falling weights (a paste, no model call).

**Latency bound.** A speech window whose frame would be ready later than its deadline (an
estimate of the model time made before the call, the real end time after it) is skipped: its frames
are rest frames, counted in :attr:`LiveStats.dropped`. Late windows are thus shed instead of
queued, and the delay cannot grow. The deadline is ``ready + latency_budget_ms``, or, when the
transport sets :attr:`LiveSession.deadline` (a function of the output frame index returning a
``perf_counter()`` time or None), the time the transport must have the frame by to show it.

The renderer backend holds the avatar's references (set in the constructor), so each session needs
a backend instance of its own. :meth:`frames` has one consumer at a time.

**Controls** (they act at once, on the loop thread): ``FLUSH`` and ``INTERRUPT`` drop the queued
audio, windows and not yet consumed frames, discard an in-flight model result, and emit rest frames
(hard cut) up to the audio clock, so the next frames out are rest frames without waiting for the
worker; the next audio starts a new segment on the next frame boundary of the session clock.
``END`` flushes the resampler, pads the mel end (:meth:`IncrementalMel.finish`), schedules the last
windows, and closes :meth:`frames` after their frames. ``STATS`` fills a dict payload (or calls a
callable payload) with :meth:`LiveStats.snapshot`. ``SWITCH_AVATAR`` (payload: a prepared
:class:`engine.core.avatar.Avatar`) drops the queued work like ``FLUSH`` but keeps the audio, swaps the
avatar (its references are loaded into the renderer on the worker thread, after any running call)
and goes on with the new one from the next frame.

**Playout audio.** The input audio is also resampled to 48 kHz mono (a second stateful
resampler) and kept on the same session clock (48 kHz sample ``3 s`` is 16 kHz sample ``s``), so
a transport can send it back, delayed like the video: :meth:`read_audio`. It is dropped with the
queued frames on ``FLUSH`` / ``INTERRUPT`` (the avatar stops talking at once).

**Gaps.** A live source that pauses (a TTS engine between sentences, a muted microphone) leaves
the session clock behind the wall clock. :meth:`close_segment` ends the current segment (the
audio so far is finished like ``END`` would, so its last windows are made) and moves the session
clock forward to a given sample, filling the gap with rest frames; the transport calls it when its
watchdog sees the input stall.

**No models.** With ``landmark_model`` or ``renderer_backend`` ``None`` the session never calls a
model: every frame is a rest frame and the audio passes through (what a server with no weights
streams).
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.core.avatar import Avatar
from engine.core.composite import composite
from engine.core.schedule import pingpong
from engine.live.audio import TARGET_RATE, IncrementalMel, LiveWindowScheduler, SpeechGate, StreamingResampler
from engine.live.messages import FPS, Control, ControlKind, MelWindow, RenderedFrame
from engine.synth.backends import RendererBackend, make_renderer_backend
from engine.synth.batcher import SharedModelWorker, window_content, window_faces
from engine.synth.neural import Dubber, DubConfig
from engine.synth.preview import OpennessTracker, RetrievalConfig, RetrievalRenderer

__all__ = ["LiveConfig", "LiveSession", "LiveStats"]

SAMPLES_PER_FRAME = TARGET_RATE // FPS  # 640 session samples per output frame
PLAYOUT_RATE = 48000  # the playout audio (read_audio) rate
PLAYOUT_SCALE = PLAYOUT_RATE // TARGET_RATE  # 48 kHz samples per session (16 kHz) sample
_NO_MEL = np.zeros((0, 80, 16), np.float32)
ESTIMATE_HALF_LIFE_S = 2.0  # without model calls, the model-time estimate halves this often

# Frame kinds (stats and tests): a rendered frame (full or fading in), a rest frame (possibly
# fading out), a frame whose window was skipped by the latency bound.
SPEECH, REST, DROPPED = "speech", "rest", "dropped"


@dataclass(frozen=True)
class LiveConfig:
    fps: int = FPS  # output frame rate (the schedule is defined at 25 fps)
    batch: int = 2  # max speech windows per model call
    latency_budget_ms: float | None = 600.0  # ready -> frame bound; None: never drop
    crossfade: int = 3  # frames of blend between rest and speech (0: hard cuts)
    backend: str = "fast"  # renderer backend used when a bare models.Renderer is passed
    speech_gate: bool = True  # False: every window is speech (no gate)
    stats_history: int = 10_000  # entries kept per latency list
    playout_keep_s: float = 30.0  # playout audio kept ahead of the reader (older is dropped)

    def __post_init__(self) -> None:
        if self.fps != FPS:
            raise ValueError(f"the live schedule runs at {FPS} fps, got {self.fps}")
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if self.crossfade < 0:
            raise ValueError("crossfade must be >= 0")
        if self.latency_budget_ms is not None and self.latency_budget_ms <= 0:
            raise ValueError("latency_budget_ms must be positive (or None)")


@dataclass
class LiveStats:
    """Counters of a session. ``frames`` = ``speech_frames + rest_frames + dropped`` (frames handed
    to the consumer); ``latency`` holds the latest values (seconds) of: ``wait`` (window ready ->
    model start), ``model`` (one model call), ``per_window`` (model call / windows in it),
    ``composite`` (paste and blends of one group), ``total`` (window ready -> frame emitted)."""

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
            v = np.asarray(values, dtype=np.float64)
            if v.size:
                out[f"{stage}_ms"] = {
                    "mean": float(v.mean() * 1e3),
                    "p50": float(np.percentile(v, 50) * 1e3),
                    "p95": float(np.percentile(v, 95) * 1e3),
                    "max": float(v.max() * 1e3),
                }
        return out


@dataclass(slots=True)
class _Item:
    """A ready window and what the worker decided for it."""

    window: MelWindow
    ready: float  # perf_counter() when the push that completed it had made it (after the mel)
    action: str = REST  # SPEECH (compute), REST (silence), DROPPED (skipped: too late)
    mel: float = 0.0  # seconds of mel + window forming in that push


@dataclass(slots=True)
class _Fade:
    """Cross-fade state, carried from group to group: ``level`` in 0..K+1 (K+1: fully speech)."""

    level: int = 0
    face: np.ndarray | None = None  # the last generated face (128, 128, 3) uint8


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class LiveSession:
    """One live lip-sync session over a prepared avatar (see the module docstring)."""

    def __init__(
        self,
        avatar: Avatar,
        landmark_model=None,
        renderer_backend: RendererBackend | torch.nn.Module | None = None,
        config: LiveConfig | None = None,
        worker: SharedModelWorker | None = None,
        preview: RetrievalConfig | bool | None = None,
    ) -> None:
        self.config = config or LiveConfig()
        self.preview: RetrievalConfig | None = (
            (RetrievalConfig() if preview is True else preview) if preview not in (None, False) else None
        )
        if isinstance(renderer_backend, torch.nn.Module):
            renderer_backend = make_renderer_backend(self.config.backend, renderer_backend)
        self._shared = worker
        self.can_render = (
            self.preview is not None
            or worker is not None
            or (landmark_model is not None and renderer_backend is not None)
        )
        self._backend = renderer_backend if self.can_render and worker is None and not self.preview else None
        self._dubber = None
        # preview (the retrieval renderer): per avatar, made and used on the worker thread only
        self._retrieval: dict[str, RetrievalRenderer] = {}
        self._tracker = OpennessTracker() if self.preview is not None else None
        self._preview_gen = 0
        self._preview_lm = None
        if self.preview is not None and landmark_model is not None:  # the transformer drives the mouth
            self._preview_lm = Dubber(landmark_model, None, DubConfig(batch=self.config.batch))
        if self._backend is not None:
            self._dubber = Dubber(landmark_model, renderer_backend, DubConfig(batch=self.config.batch))
        self.avatar = avatar
        self._lm_refs: tuple[torch.Tensor, ...] | None = None  # written on the worker thread only
        self._load_references(avatar)
        self.stats = LiveStats(history=self.config.stats_history)
        self.first_audio_time: float | None = None  # perf_counter() of the first push_audio
        self.last_push: tuple[float, float] = (0.0, 0.0)  # the latest push's (ingest, mel) seconds
        #: finished segments: (first output frame, end frame (exclusive), 16 kHz samples received)
        self.segments: list[tuple[int, int, int]] = []

        # audio front end (loop thread)
        self._resampler: StreamingResampler | None = None
        self._gate = SpeechGate() if self.config.speech_gate else None
        self._mel = IncrementalMel()
        self._sched = LiveWindowScheduler(avatar.n_frames, fps=self.config.fps, speech_gate=self._gate)
        self._samples = 0  # session-clock samples (16 kHz) received, plus the frame-boundary skips

        # playout audio: 48 kHz mono on the session clock (loop thread)
        self._resampler48: StreamingResampler | None = None
        self._pos48 = 0  # playout position of the next 48 kHz sample written
        self._playout: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._read48 = 0  # read_audio() has consumed everything before this position
        self.audio_late = 0  # 48 kHz samples written behind the reader (never played)

        # work and output (loop thread)
        self._windows: collections.deque[_Item] = collections.deque()
        self._out: collections.deque[tuple[RenderedFrame, str]] = collections.deque()
        self._next_out = 0  # pts of the next frame the worker will queue
        self._consumed = 0  # pts of the next frame the consumer will get
        self._fade = _Fade()
        self._gen = 0  # bumped by FLUSH / INTERRUPT: in-flight results of older generations are discarded
        self._ending = False  # END received: no more audio
        self._out_closed = False
        self._error: BaseException | None = None
        self._est_call = 0.0  # seconds per model call (moving average over recent calls)
        self._last_model_end = 0.0
        #: optional ``f(frame index) -> perf_counter() time or None``: when a frame must be ready
        self.deadline = None

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-live")
        self._inflight: Future | None = None
        self._task: asyncio.Task | None = None
        self._work_event: asyncio.Event | None = None
        self._out_event: asyncio.Event | None = None
        self._closed = False

    def _load_references(self, avatar: Avatar) -> None:
        """Give the renderer the avatar's references and keep its landmark references on the device
        (in the constructor, then only on the worker thread, between model calls). A shared model
        worker keeps its own per-avatar state: nothing to do then."""
        if self._preview_lm is not None:
            dev = self._preview_lm.device
            self._lm_refs = tuple(
                torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in avatar.landmark_refs()
            )
        if self._backend is None:
            return
        ref_imgs, ref_sketches = avatar.reference_tensors()
        self._backend.set_references(ref_imgs, ref_sketches)
        dev = self._dubber.device
        self._lm_refs = tuple(
            torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in avatar.landmark_refs()
        )

    # ---- lifecycle ---------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("the session is closed")
        if self._task is None:
            self._work_event, self._out_event = asyncio.Event(), asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._worker(), name="mouthpiece-live-worker")

    async def __aenter__(self) -> LiveSession:
        self._ensure_started()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the worker, wait for an in-flight model call to return, and stop the worker thread."""
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
        self._close_output()

    # ---- input ---------------------------------------------------------------------------------

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> int:
        """Feed audio of any rate; (n,) mono or (n, channels). Returns the windows it made ready."""
        if self._ending:
            raise RuntimeError("push_audio() after END")
        self._ensure_started()
        t = time.perf_counter()
        if self.first_audio_time is None:
            self.first_audio_time = t
        x = np.asarray(samples)
        if x.ndim not in (1, 2) or x.shape[0] == 0:
            if x.ndim in (1, 2):
                return 0
            raise ValueError(f"audio must be (n,) or (n, channels), got shape {x.shape}")
        channels = 1 if x.ndim == 1 else int(x.shape[1])
        self.stats.audio_seconds += x.shape[0] / float(sample_rate)
        r = self._resampler
        made = 0
        if r is None or r.sample_rate_in != int(sample_rate) or r.channels_in != channels:
            if r is not None:  # the format changed mid-stream: drain the old filters first
                made += self._feed(r.flush(), t)
                self._write_playout(self._resampler48.flush())
            r = self._resampler = StreamingResampler(int(sample_rate), channels)
            self._resampler48 = StreamingResampler(int(sample_rate), channels, target_rate=PLAYOUT_RATE)
            self._pos48 = PLAYOUT_SCALE * self._samples
        self._write_playout(self._resampler48.push(x))
        made += self._feed(r.push(x), t)
        return made

    # ---- playout audio -------------------------------------------------------------------------

    def _write_playout(self, y: np.ndarray) -> None:
        if not y.size:
            return
        start = self._pos48
        self._pos48 += int(y.size)
        if self._pos48 <= self._read48:
            self.audio_late += int(y.size)
            return
        if start < self._read48:
            self.audio_late += self._read48 - start
            y, start = y[self._read48 - start :], self._read48
        self._playout.append((start, y))
        keep = int(self.config.playout_keep_s * PLAYOUT_RATE)
        while self._playout and self._playout[-1][0] - self._playout[0][0] > keep:
            self._playout.popleft()

    def read_audio(self, start: int, n: int) -> np.ndarray:
        """Playout audio ``[start, start + n)`` (48 kHz samples of the session clock) as float32 (n,),
        zeros where there is none (before the first sample, in gaps, dropped by a flush, not yet
        arrived). Reading consumes: what lies before ``start + n`` is discarded, and audio that
        arrives later for those positions is counted in :attr:`audio_late`."""
        out = np.zeros(int(n), np.float32)
        end = int(start) + int(n)
        for s0, y in self._playout:
            if s0 >= end:
                break
            lo, hi = max(s0, start), min(s0 + y.size, end)
            if hi > lo:
                out[lo - start : hi - start] = y[lo - s0 : hi - s0]
        while self._playout and self._playout[0][0] + self._playout[0][1].size <= end:
            self._playout.popleft()
        self._read48 = max(self._read48, end)
        return out

    @property
    def samples_received(self) -> int:
        """The session clock: 16 kHz samples received, plus the skips of flushes and gaps."""
        return self._samples

    @property
    def playout_end(self) -> int:
        """One past the last 48 kHz playout sample written (on the session clock)."""
        return self._pos48

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
        self.last_push = (t_mel - t, ready - t_mel)
        self._windows.extend(_Item(w, ready, mel=ready - t_mel) for w in wins)
        self.stats.windows += len(wins)
        if wins:
            self._work_event.set()
        return len(wins)

    def control(self, msg: Control) -> None:
        """Act on a control message now (it overtakes queued data)."""
        self._ensure_started()
        if msg.kind in (ControlKind.FLUSH, ControlKind.INTERRUPT):
            self._reset_to_idle()
        elif msg.kind is ControlKind.END:
            if self._ending:
                return
            self._finish_segment(time.perf_counter())
            self._record_segment()
            self._ending = True
            self._work_event.set()
        elif msg.kind is ControlKind.STATS:
            snap = self.stats.snapshot()
            if callable(msg.payload):
                msg.payload(snap)
            elif isinstance(msg.payload, dict):
                msg.payload.update(snap)
        elif msg.kind is ControlKind.SWITCH_AVATAR:
            self._switch_avatar(msg.payload)
        else:  # pragma: no cover - exhaustive
            raise ValueError(f"unknown control {msg.kind}")

    def _finish_segment(self, t: float) -> None:
        """Drain the resamplers and pad the mel end, so the segment's last windows are made."""
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        if self._resampler48 is not None:
            self._write_playout(self._resampler48.flush())
        self._resampler = self._resampler48 = None
        self._feed(tail, t, finish=self._mel.samples_total + tail.size > 0)

    def _record_segment(self) -> None:
        start = self._sched.segment_start
        n = self._samples - start * SAMPLES_PER_FRAME
        if n > 0:
            self.segments.append((start, self._sched.next_index, n))

    def _start_segment(self, p0: int) -> None:
        """The next audio starts a new segment at output frame ``p0`` (its sample ``640 p0``)."""
        self._samples = p0 * SAMPLES_PER_FRAME
        self._pos48 = PLAYOUT_SCALE * self._samples
        self._resampler = self._resampler48 = None
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
            s0 = q0 * SAMPLES_PER_FRAME
            gap = MelWindow(
                index=q0,
                output_indices=tuple(range(q0, p0)),
                mel=_NO_MEL,
                render_mel=_NO_MEL[:, 0],
                templates=(),
                render_template=-1,
                span=(s0, p0 * SAMPLES_PER_FRAME),
                render_span=(s0, p0 * SAMPLES_PER_FRAME),
                is_speech=False,
            )
            self._windows.append(_Item(gap, t))
            self._work_event.set()
            self.stats.gaps += 1
        self._start_segment(p0)
        return p0

    def _reset_to_idle(self, drop_audio: bool = True) -> None:
        """FLUSH / INTERRUPT: drop audio, windows and queued frames; rest frames up to the audio clock."""
        self._gen += 1
        self._windows.clear()
        self._out.clear()
        self._fade = _Fade()
        if drop_audio:
            self.stats.flushes += 1
            self._playout.clear()
        p0 = max(-(-self._samples // SAMPLES_PER_FRAME), self._next_out, self._consumed)
        for q in range(self._consumed, p0):
            self._out.append((self._rest(self.avatar, q, time.perf_counter()), REST))
        self._next_out = p0
        if not self._ending:  # a new segment starts on the next frame boundary of the session clock
            if not drop_audio and self._resampler48 is not None:
                self._write_playout(self._resampler48.flush())
            self._start_segment(p0)
        if self._out:
            self._out_event.set()
        self._work_event.set()

    def _switch_avatar(self, avatar: Avatar) -> None:
        """SWITCH_AVATAR: queued work is dropped (hard cut), the audio kept; new avatar from now on."""
        if not isinstance(avatar, Avatar):
            raise TypeError(f"SWITCH_AVATAR needs a prepared Avatar, got {type(avatar).__name__}")
        self.avatar = avatar
        self._sched.n_template_frames = avatar.n_frames
        self._reset_to_idle(drop_audio=False)
        self.stats.avatar_switches += 1
        if self.can_render:  # after any running model call, before the next (one worker thread)
            job = self._pool.submit(self._load_references, avatar)
            job.add_done_callback(self._job_failed)

    def _job_failed(self, job: Future) -> None:
        if not job.cancelled() and job.exception() is not None and self._error is None:
            self._error = job.exception()
            loop = self._task.get_loop() if self._task is not None else None
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._close_output)

    # ---- output --------------------------------------------------------------------------------

    @property
    def queued_frames(self) -> int:
        """Frames made and not yet taken by :meth:`frames`."""
        return len(self._out)

    @property
    def pending_windows(self) -> int:
        return len(self._windows)

    async def frames(self):
        """The output frames in pts order; ends after END (or :meth:`aclose`)."""
        self._ensure_started()
        while True:
            while not self._out:
                if self._error is not None:
                    raise RuntimeError("the live model worker failed") from self._error
                if self._out_closed:
                    return
                self._out_event.clear()
                await self._out_event.wait()
            frame, kind = self._out.popleft()
            now = time.perf_counter()
            frame.timing["emitted"] = now
            self._consumed = frame.pts + 1
            s = self.stats
            s.frames += 1
            if kind == SPEECH:
                s.speech_frames += 1
            elif kind == REST:
                s.rest_frames += 1
            else:
                s.dropped += 1
            if "audio" in frame.timing:
                s.add("total", now - frame.timing["audio"])
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
                gen = self._gen
                group = self._take_group()
                job = self._process_preview if self.preview is not None else self._process
                self._inflight = self._pool.submit(job, group, self._fade, self.avatar, gen)
                frames, fade, info = await asyncio.wrap_future(self._inflight)
                self._inflight = None
                if gen != self._gen:
                    continue  # flushed while the job ran: its frames are obsolete
                self._fade = fade
                self._account(group, info)
                for frame, kind in frames:
                    if frame.pts >= self._next_out:
                        self._out.append((frame, kind))
                        self._next_out = frame.pts + 1
                self._out_event.set()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - surfaced by frames()
            self._error = e
            self._close_output()

    def _take_group(self) -> list[_Item]:
        """The next windows in order: up to ``batch`` to compute, with the silent / late ones around."""
        now, group, n_speech = time.perf_counter(), [], 0
        # An estimate from a slow call (a warm-up, a load spike) would shed every window and never be
        # measured again: while no call is made it decays, so the session tries again after a while.
        idle = max(0.0, now - self._last_model_end) if self._last_model_end else 0.0
        est = self._est_call * 0.5 ** (idle / ESTIMATE_HALF_LIFE_S)
        while self._windows:
            item = self._windows[0]
            if item.window.is_speech and self.can_render:
                limit = self._deadline_of(item)
                # one call carries the whole group: a window is late if that call would end after its
                # deadline (a call that turns out slower is checked again when it returns)
                late = limit is not None and now + est > limit
                if not late and n_speech == self.config.batch:
                    break
                item.action = DROPPED if late else SPEECH
                n_speech += not late
            else:
                item.action = REST
            group.append(self._windows.popleft())
        return group

    def _deadline_of(self, item: _Item) -> float | None:
        """When the window's (first) frame must be ready; None: no bound."""
        if self.deadline is not None:
            t = self.deadline(item.window.index)
            if t is not None:
                return t
        budget = self.config.latency_budget_ms
        return None if budget is None else item.ready + budget / 1e3

    def _account(self, group: list[_Item], info: dict) -> None:
        if "model_start" not in info:
            return
        s = self.stats
        s.model_calls += 1
        n = info["n_model"]
        dt = info["model_end"] - info["model_start"]
        s.add("model", dt)
        s.add("per_window", dt / n)
        s.add("composite", info["composite"])
        for item in group:
            if item.action == SPEECH:  # computed and shown
                s.add("wait", max(0.0, info["model_start"] - item.ready))
        self._last_model_end = info["model_end"]
        a = 0.5 if self._est_call else 1.0
        self._est_call += a * (dt - self._est_call)

    # ---- the executor job (worker thread: reads only its arguments, the avatar and the models) ----

    @staticmethod
    def _rest(av: Avatar, q: int, ready: float) -> RenderedFrame:
        ti = int(pingpong(q, av.n_frames))
        return RenderedFrame(
            index=q, pts=q, image=_readonly(av.frames[ti]), is_speech=False, timing={"audio": ready}
        )

    def _process_preview(
        self, group: list[_Item], fade: _Fade, av: Avatar, gen: int
    ) -> tuple[list, _Fade, dict]:
        """The preview path: every audio window through the retrieval renderer (cheap: a few ms), its
        mouth following the audio's openness (or the transformer's landmarks when it is loaded)."""
        if gen != self._preview_gen:  # a FLUSH / INTERRUPT / avatar switch happened: no carry-over
            self._preview_gen = gen
            self._tracker.reset()
            for r in self._retrieval.values():
                r.reset()
        key = str(av.folder)
        renderer = self._retrieval.get(key)
        if renderer is None:
            renderer = self._retrieval[key] = RetrievalRenderer(av, self.preview)
        info: dict = {}
        todo = [it for it in group if it.action != DROPPED and it.window.mel.size]
        todo_ids = {id(it) for it in todo}
        contents: dict[int, np.ndarray] = {}
        info["model_start"] = time.perf_counter()
        speech = [it for it in todo if it.action == SPEECH]
        transformer_s = 0.0
        if self._preview_lm is not None and speech:
            with torch.inference_mode():
                cont = window_content(self._preview_lm, av, [it.window for it in speech], self._lm_refs)
            contents = {id(it): c for it, c in zip(speech, cont, strict=True)}
            transformer_s = time.perf_counter() - info["model_start"]
        out: list[tuple[RenderedFrame, str]] = []
        for it in group:
            w = it.window
            timing = {"audio": it.ready, "mel_s": it.mel}
            if id(it) in todo_ids:
                o = self._tracker.push_window(w)
                content = contents.get(id(it))
                img = renderer.render(w.render_template, None if content is not None else o, content)
                img.flags.writeable = False
                y1, y2, x1, x2 = renderer.last.box
                end = time.perf_counter()
                timing.update(model_start=info["model_start"], model_end=end)
                # the renderer share: from the model start, all that is not the transformer (earlier
                # windows of the group were drawn first: this frame waited for them too)
                timing.update(transformer_s=transformer_s, sketch_s=0.0, composite_s=0.0)
                timing["renderer_s"] = end - info["model_start"] - transformer_s
                kind = SPEECH if w.is_speech else REST
                drawn = float(renderer.last.openness)
                for q in w.output_indices:
                    frame = RenderedFrame(q, q, img, (x1, y1, x2, y2), w.is_speech, dict(timing), drawn)
                    out.append((frame, kind))
            else:
                kind = DROPPED if it.action == DROPPED else REST
                out += [(self._rest(av, q, it.ready), kind) for q in w.output_indices]
        info["model_end"] = time.perf_counter()
        info["n_model"] = max(1, len(todo))
        info["composite"] = 0.0
        if not speech:
            del info["model_start"], info["model_end"]  # silence: no "model" work to account
        return out, fade, info

    def _process(self, group: list[_Item], fade: _Fade, av: Avatar, gen: int) -> tuple[list, _Fade, dict]:
        K = self.config.crossfade
        fade = _Fade(fade.level, fade.face)
        info: dict = {}
        speech = [it for it in group if it.action == SPEECH]
        faces: dict[int, np.ndarray] = {}
        computed = {id(it) for it in speech}
        split: dict[str, float] = {}
        if speech:
            info["model_start"] = time.perf_counter()
            with torch.inference_mode():
                batch_faces = self._faces([it.window for it in speech], av, split)
            info["model_end"] = end = time.perf_counter()
            info["n_model"] = len(speech)
            for it, face in zip(speech, batch_faces, strict=True):
                limit = self._deadline_of(it)
                if limit is not None and end > limit:
                    it.action = DROPPED  # computed, but too late to show
                else:
                    faces[id(it)] = face
        t0 = time.perf_counter()
        out: list[tuple[RenderedFrame, str]] = []
        for it in group:
            w = it.window
            timing = {"audio": it.ready, "mel_s": it.mel}
            if id(it) in computed:  # went through the model (possibly too late to show)
                timing.update(model_start=info["model_start"], model_end=info["model_end"])
                timing.update({f"{k}_s": v for k, v in split.items()})
            face = faces.get(id(it))
            if face is not None:
                ti = w.render_template
                y1, y2, x1, x2 = (int(v) for v in av.boxes[ti])
                rest = av.frames[ti]
                full = composite(rest, face, (y1, y2, x1, x2), av.mask(ti))
                full.flags.writeable = False
                timing["composite_s"] = time.perf_counter() - t0  # this frame and the group's before it
                fade.face = face
                for q in w.output_indices:
                    fade.level = min(fade.level + 1, K + 1)
                    img = full
                    if fade.level <= K:  # fading in: blend over the rest frame inside the box
                        img = self._blend(rest, full, (y1, y2, x1, x2), fade.level / (K + 1))
                    out.append(
                        (
                            RenderedFrame(q, q, img, (x1, y1, x2, y2), True, dict(timing)),
                            SPEECH,
                        )
                    )
                continue
            kind = DROPPED if it.action == DROPPED else REST
            for q in w.output_indices:
                fade.level = max(fade.level - 1, 0)
                if fade.level == 0 or fade.face is None:
                    frame = self._rest(av, q, it.ready)
                    frame.timing.update(timing)
                else:  # fading out: the last face pasted into the rest frame, falling weight
                    ti = int(pingpong(q, av.n_frames))
                    y1, y2, x1, x2 = (int(v) for v in av.boxes[ti])
                    rest = av.frames[ti]
                    pasted = composite(rest, fade.face, (y1, y2, x1, x2), av.mask(ti))
                    img = self._blend(rest, pasted, (y1, y2, x1, x2), fade.level / (K + 1), inplace=True)
                    frame = RenderedFrame(q, q, img, (x1, y1, x2, y2), False, dict(timing))
                out.append((frame, kind))
        info["composite"] = time.perf_counter() - t0
        return out, fade, info

    @staticmethod
    def _blend(rest: np.ndarray, full: np.ndarray, box, alpha: float, inplace: bool = False) -> np.ndarray:
        """``rest + alpha (full - rest)``; the two differ only inside ``box`` (y1, y2, x1, x2)."""
        y1, y2, x1, x2 = box
        img = full if inplace else full.copy()
        r = rest[y1:y2, x1:x2].astype(np.float32)
        img[y1:y2, x1:x2] = np.rint(r + alpha * (full[y1:y2, x1:x2].astype(np.float32) - r)).astype(np.uint8)
        img.flags.writeable = False
        return img

    def _faces(self, wins: list[MelWindow], avatar: Avatar, split: dict | None = None) -> np.ndarray:
        """Faces for ``wins``: through the shared model worker (batched with other sessions' windows)
        or this session's own backend. ``split``: filled with the call's seconds per model stage."""
        if self._shared is not None:
            return self._shared.faces(avatar, wins, owner=self, split=split)
        return window_faces(self._dubber, avatar, wins, self._lm_refs, split)
