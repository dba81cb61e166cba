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
front end is that of :mod:`engine.live_audio` in its order: resample -> speech gate -> incremental
mel -> window scheduler; each :class:`engine.messages.MelWindow` is *ready* at the time the push
that completed it arrived (``timing["audio"]``), about ``lookahead_ms`` (212.5 ms) after its
nominal time in a real-time stream.

**Threading model.** Everything except model compute runs on the event loop thread, and none of it
is thread-safe: call :meth:`push_audio`, :meth:`control` and iterate :meth:`frames` from the loop
that owns the session. The front end costs well under a millisecond per 20 ms chunk, so it runs
inline in :meth:`push_audio`. One worker task (an ``asyncio.Task``) takes the ready windows in
order and hands each *group* (up to ``batch`` speech windows, plus the silence or dropped windows
before and between them) to a private single-thread executor, which runs transformer + sketches +
renderer (the offline :class:`engine.pipeline.Dubber`'s ``faces``, so the faces are the offline
ones), pastes the faces (:func:`engine.composite.composite`) and blends the cross-fades. The
executor thread touches only its arguments and the read-only avatar and models; all session state
(queues, counters, fade state) is changed on the loop thread only, after the job returns. A
generation counter makes the result of a job that was running during a FLUSH / INTERRUPT be
discarded. The loop therefore never blocks on a model call.

**Silence.** A window the speech gate calls silence makes no model call: its frames are the
template at rest, the avatar frame ``f(p)`` itself (a read-only view, no copy). Transitions cross-
fade over ``crossfade`` frames: entering speech, the rendered frame is blended over the rest frame
with weights ``1/(K+1) .. K/(K+1)``; leaving it, the last generated face is pasted into the rest
frames with falling weights (a paste, no model call).

**Latency bound.** A speech window whose frame would be ready later than ``ready + budget`` (an
estimate of the model time made before the call, the real end time after it) is skipped: its frames
are rest frames, counted in :attr:`LiveStats.dropped`. Late windows are thus shed instead of
queued, and the delay cannot grow.

The renderer backend holds the avatar's references (set in the constructor), so each session needs
a backend instance of its own. :meth:`frames` has one consumer at a time.

**Controls** (they act at once, on the loop thread): ``FLUSH`` and ``INTERRUPT`` drop the queued
audio, windows and not yet consumed frames, discard an in-flight model result, and emit rest frames
(hard cut) up to the audio clock, so the next frames out are rest frames without waiting for the
worker; the next audio starts a new segment on the next frame boundary of the session clock.
``END`` flushes the resampler, pads the mel end (:meth:`IncrementalMel.finish`), schedules the last
windows, and closes :meth:`frames` after their frames. ``STATS`` fills a dict payload (or calls a
callable payload) with :meth:`LiveStats.snapshot`. ``SWITCH_AVATAR`` is not supported yet.
"""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.avatar import Avatar
from engine.composite import composite
from engine.live_audio import TARGET_RATE, IncrementalMel, LiveWindowScheduler, SpeechGate, StreamingResampler
from engine.messages import FPS, Control, ControlKind, MelWindow, RenderedFrame
from engine.pipeline import Dubber, DubConfig
from engine.renderers import RendererBackend, make_renderer_backend
from engine.schedule import CENTER, T, Window, pingpong

__all__ = ["LiveConfig", "LiveSession", "LiveStats"]

SAMPLES_PER_FRAME = TARGET_RATE // FPS  # 640 session samples per output frame

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
    latency: dict[str, collections.deque] = field(default_factory=dict)
    history: int = 10_000

    def add(self, stage: str, seconds: float) -> None:
        if stage not in self.latency:
            self.latency[stage] = collections.deque(maxlen=self.history)
        self.latency[stage].append(seconds)

    def snapshot(self) -> dict:
        out = {k: getattr(self, k) for k in ("frames", "speech_frames", "rest_frames", "dropped")}
        out.update(model_calls=self.model_calls, windows=self.windows, flushes=self.flushes)
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
    ready: float  # perf_counter() of the push that completed it
    action: str = REST  # SPEECH (compute), REST (silence), DROPPED (skipped: too late)


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
        landmark_model,
        renderer_backend: RendererBackend | torch.nn.Module,
        config: LiveConfig | None = None,
    ) -> None:
        self.config = config or LiveConfig()
        if isinstance(renderer_backend, torch.nn.Module):
            renderer_backend = make_renderer_backend(self.config.backend, renderer_backend)
        self.avatar = avatar
        self._dubber = Dubber(landmark_model, renderer_backend, DubConfig(batch=self.config.batch))
        ref_imgs, ref_sketches = avatar.reference_tensors()
        renderer_backend.set_references(ref_imgs, ref_sketches)
        dev = self._dubber.device
        refs = avatar.landmark_refs()
        self._lm_refs = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in refs)
        self.stats = LiveStats(history=self.config.stats_history)

        # audio front end (loop thread)
        self._resampler: StreamingResampler | None = None
        self._gate = SpeechGate() if self.config.speech_gate else None
        self._mel = IncrementalMel()
        self._sched = LiveWindowScheduler(avatar.n_frames, fps=self.config.fps, speech_gate=self._gate)
        self._samples = 0  # session-clock samples (16 kHz) received, plus the frame-boundary skips

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
        self._est_per_window = 0.0  # model seconds per window (moving average)

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-live")
        self._inflight: Future | None = None
        self._task: asyncio.Task | None = None
        self._work_event: asyncio.Event | None = None
        self._out_event: asyncio.Event | None = None
        self._closed = False

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
        x = np.asarray(samples)
        channels = 1 if x.ndim == 1 else int(x.shape[1])
        r = self._resampler
        made = 0
        if r is None or r.sample_rate_in != int(sample_rate) or r.channels_in != channels:
            if r is not None:  # the format changed mid-stream: drain the old filter first
                made += self._feed(r.flush(), t)
            r = self._resampler = StreamingResampler(int(sample_rate), channels)
        return made + self._feed(r.push(x), t)

    def _feed(self, x: np.ndarray, t: float, finish: bool = False) -> int:
        """16 kHz samples -> gate -> mel -> scheduler -> ready windows."""
        if x.size:
            if self._gate is not None:
                self._gate.push(x)
            mel = self._mel.push(x)
            self._samples += int(x.size)
        else:
            mel = np.zeros((self._mel.cfg.n_mels, 0), np.float32)
        if finish:
            mel = np.concatenate([mel, self._mel.finish()], axis=1)
        wins = self._sched.push(mel)
        self._windows.extend(_Item(w, t) for w in wins)
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
            t = time.perf_counter()
            tail = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
            self._feed(tail, t, finish=self._mel.samples_total + tail.size > 0)
            self._ending = True
            self._work_event.set()
        elif msg.kind is ControlKind.STATS:
            snap = self.stats.snapshot()
            if callable(msg.payload):
                msg.payload(snap)
            elif isinstance(msg.payload, dict):
                msg.payload.update(snap)
        elif msg.kind is ControlKind.SWITCH_AVATAR:
            raise NotImplementedError("SWITCH_AVATAR is not supported by LiveSession yet")
        else:  # pragma: no cover - exhaustive
            raise ValueError(f"unknown control {msg.kind}")

    def _reset_to_idle(self) -> None:
        """FLUSH / INTERRUPT: drop audio, windows and queued frames; rest frames up to the audio clock."""
        self._gen += 1
        self.stats.flushes += 1
        self._windows.clear()
        self._out.clear()
        self._fade = _Fade()
        p0 = max(-(-self._samples // SAMPLES_PER_FRAME), self._next_out, self._consumed)
        for q in range(self._consumed, p0):
            self._out.append((self._rest(q, time.perf_counter()), REST))
        self._next_out = p0
        if not self._ending:  # a new segment starts on the next frame boundary of the session clock
            self._samples = p0 * SAMPLES_PER_FRAME
            self._resampler = None
            self._mel.reset()
            if self._gate is not None:
                self._gate.reset(self._samples)
            self._sched.reset(p0, self._samples)
        if self._out:
            self._out_event.set()
        self._work_event.set()

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
                self._inflight = self._pool.submit(self._process, group, self._fade)
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
        budget = self.config.latency_budget_ms
        now, group, n_speech = time.perf_counter(), [], 0
        while self._windows:
            item = self._windows[0]
            if item.window.is_speech:
                late = (
                    budget is not None
                    and now + self._est_per_window * (n_speech + 1) > item.ready + budget / 1e3
                )
                if not late and n_speech == self.config.batch:
                    break
                item.action = DROPPED if late else SPEECH
                n_speech += not late
            else:
                item.action = REST
            group.append(self._windows.popleft())
        return group

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
        a = 0.5 if self._est_per_window else 1.0
        self._est_per_window += a * (dt / n - self._est_per_window)

    # ---- the executor job (worker thread: reads only its arguments, the avatar and the models) ----

    def _rest(self, q: int, ready: float, template: int | None = None) -> RenderedFrame:
        ti = int(pingpong(q, self.avatar.n_frames)) if template is None else template
        return RenderedFrame(
            index=q, pts=q, image=_readonly(self.avatar.frames[ti]), is_speech=False, timing={"audio": ready}
        )

    def _process(self, group: list[_Item], fade: _Fade) -> tuple[list, _Fade, dict]:
        av, K = self.avatar, self.config.crossfade
        fade = _Fade(fade.level, fade.face)
        info: dict = {}
        speech = [it for it in group if it.action == SPEECH]
        faces: dict[int, np.ndarray] = {}
        computed = {id(it) for it in speech}
        if speech:
            info["model_start"] = time.perf_counter()
            with torch.inference_mode():
                batch_faces = self._faces([it.window for it in speech])
            info["model_end"] = end = time.perf_counter()
            info["n_model"] = len(speech)
            budget = self.config.latency_budget_ms
            for it, face in zip(speech, batch_faces, strict=True):
                if budget is not None and end > it.ready + budget / 1e3:
                    it.action = DROPPED  # computed, but too late to show
                else:
                    faces[id(it)] = face
        t0 = time.perf_counter()
        out: list[tuple[RenderedFrame, str]] = []
        for it in group:
            w = it.window
            timing = {"audio": it.ready}
            if id(it) in computed:  # went through the model (possibly too late to show)
                timing.update(model_start=info["model_start"], model_end=info["model_end"])
            face = faces.get(id(it))
            if face is not None:
                ti = w.render_template
                y1, y2, x1, x2 = (int(v) for v in av.boxes[ti])
                rest = av.frames[ti]
                full = composite(rest, face, (y1, y2, x1, x2), av.mask(ti))
                full.flags.writeable = False
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
                    frame = self._rest(q, it.ready)
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

    def _faces(self, wins: list[MelWindow]) -> np.ndarray:
        """The offline Dubber's transformer + sketches + renderer on live windows: (B, 128, 128, 3) uint8.

        Each window carries its own 5 mel chunks; they are stacked into one (5B, 80, 16) tensor and
        the windows are re-indexed into it (chunk ``5 j + i`` is window j's i-th chunk, its renderer
        chunk is ``5 j + CENTER``), so that Dubber.faces runs unchanged."""
        mel = np.stack([w.mel for w in wins])  # (B, 5, 80, 16), the one copy the batch needs
        chunks = torch.from_numpy(mel.reshape(-1, *mel.shape[2:])).to(self._dubber.device)
        plan = [
            Window(
                start=w.start,
                templates=w.templates,
                mel_indices=tuple(range(T * j, T * j + T)),
                render_template=w.render_template,
                render_mel=T * j + CENTER,
                output_indices=w.output_indices,
            )
            for j, w in enumerate(wins)
        ]
        return self._dubber.faces(self.avatar, plan, chunks, *self._lm_refs)
