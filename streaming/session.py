"""A streaming session: a :class:`engine.live.session.LiveSession` with its playout clock, tracks and
watchdog. A transport pushes audio (:meth:`StreamSession.push_audio`) and controls; the lip-synced video and
the delayed audio are made once per frame by two paced tracks and fanned out to any number of viewers,
each with tracks and a bounded queue of its own (:meth:`StreamSession.subscribe`,
:mod:`streaming.broadcast`). Session frame ``p`` must be ready one frame before it is shown (the live
session's deadline: later windows are shed) and is made no earlier than ``delay_ms`` +
:data:`RENDER_MARGIN_S` (plus the expected model call) before that deadline, so audio pushed ahead of
real time (at most ``max_lead_s``: :meth:`StreamSession.room`) waits as windows, not as frames. A
housekeeping task runs the gap watchdog (an input more than ``gap_ms`` behind real time closes the
segment), measures the frame rate, trims frames nobody took and pushes stats. The turn-taking
events (``playback_started``, ``playback_finished``: :mod:`streaming.turns`) follow the audio the
audio track sends (the playout clock when nobody watches) and go to :attr:`StreamSession.turn_listeners`.
Details: docs/live.md.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
from dataclasses import dataclass, field, replace

import numpy as np

from engine.core.avatar import Avatar
from engine.core.clock import AUDIO_RATE as TARGET_RATE
from engine.core.clock import FPS, SAMPLES_PER_FRAME
from engine.core.frames import Frame, FrameKind
from engine.core.stats import summary
from engine.live.latency import MODEL_STAGES, LatencyRecord
from engine.live.messages import STAGES, Control, ControlKind
from engine.live.session import LiveConfig, LiveSession
from engine.synth.base import Synthesizer
from streaming.aiortc_compat import next_encoded_frame, set_next_encoded_frame
from streaming.broadcast import AUDIO_QUEUE, VIDEO_QUEUE, Broadcast
from streaming.delay import AUTO, MAX_DELAY_MS, SAFETY_MS, AutoDelay, PlayoutControl, parse_delay
from streaming.tracks import (
    AUDIO_FRAME,
    PLAYOUT_PER_FRAME,
    PLAYOUT_RATE,
    PLAYOUT_SCALE,
    AvatarVideoTrack,
    Playout,
    PlayoutAudio,
    PlayoutAudioTrack,
    wait_cancelled,
)
from streaming.turns import Turns

__all__ = ["MODEL_STAGES", "STAGES", "StreamConfig", "StreamSession"]


PENDING_FRAMES = 25  # frames not on the wire after this many frames are accounted without encode/send
DEADLINE_MARGIN_S = 1.0 / FPS  # a frame must be ready this long before it is shown
RENDER_MARGIN_S = 5.0 / FPS  # frames are made at most delay + this (+ a model call) before their deadline
MODES = {"none": "passthrough"}  # the stats' name of a synthesizer, where it differs
PERCENTILES = ("p50", "p95", "p99", "max", "n")


@dataclass(frozen=True)
class StreamConfig:
    """Settings of a streaming session.

    ``delay_ms``: audio in -> its frame (and its audio) out: ``"auto"`` (the default: chosen and kept
    by :class:`streaming.delay.AutoDelay` from the synthesizer's look-ahead and what the session
    measures) or a fixed number of ms, at least the synthesizer's look-ahead
    (``Synthesizer.lookahead_ms``: 212.5 ms for the neural renderer, 50 ms for the preview) plus
    model time. ``gap_ms``: an input stall longer than this ends the segment.
    ``max_lead_s``: how far ahead of real time a source may push audio (a TTS engine sending
    faster than real time) before :meth:`StreamSession.room` says to wait. ``latency_budget_ms``:
    None derives it from ``delay_ms`` and the synthesizer's look-ahead (:meth:`budget_ms`).
    """

    delay_ms: float | str = AUTO
    gap_ms: float = 400.0
    max_lead_s: float = 20.0
    tick_s: float = 0.1
    stats_interval_s: float = 0.5
    latency_budget_ms: float | None = None
    history: int = 2000
    playout_keep_s: float = 30.0  # playout audio kept ahead of the reader (older is dropped)
    live: LiveConfig = field(default_factory=LiveConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay_ms", parse_delay(self.delay_ms))
        if self.gap_ms <= 0 or self.max_lead_s <= 0 or self.tick_s <= 0:
            raise ValueError("delay_ms >= 0, gap_ms > 0, max_lead_s > 0 and tick_s > 0 are required")

    @property
    def auto_delay(self) -> bool:
        return self.delay_ms == AUTO

    def initial_delay_ms(self, lookahead_ms: float) -> float:
        """The delay a session starts with: the fixed one, or the automatic one's first guess."""
        if self.auto_delay:
            return AutoDelay(lookahead_ms, lambda: 0.0).initial_ms()
        return float(self.delay_ms)

    def deadline_margin_s(self) -> float:
        """How long before it is shown a frame must be ready: a frame with a fixed delay (as ever), the
        safety margin with the automatic one (whose parts already hold the measured times)."""
        return SAFETY_MS / 1e3 if self.auto_delay else DEADLINE_MARGIN_S

    def budget_ms(self, lookahead_ms: float) -> float:
        """Window ready -> frame ready, for a synthesizer that needs ``lookahead_ms`` of audio past a
        frame's time (the bound before the playout anchor exists): the delay less the look-ahead and
        the one-frame deadline margin, at least a frame."""
        if self.latency_budget_ms is not None:
            return self.latency_budget_ms
        return max(1000.0 / FPS, self.initial_delay_ms(lookahead_ms) - lookahead_ms - 1000.0 / FPS)


class StreamSession:
    """A live session with its playout clock, tracks and watchdog (see the module docstring)."""

    def __init__(
        self,
        avatar: Avatar,
        synth: Synthesizer,
        config: StreamConfig | None = None,
        session_id: str | None = None,
        avatar_name: str | None = None,
        clock=time.perf_counter,
    ) -> None:
        self.config = config or StreamConfig()
        self.id = session_id or secrets.token_urlsafe(16)  # 128 random bits: ids are unguessable
        self.avatar_name = avatar_name
        self.lookahead_ms = float(synth.lookahead_ms)  # the synthesizer's look-ahead: the one source
        ahead = self.config.live.render_ahead_s
        if ahead is None:  # real-time input never waits for it; audio pushed ahead is rendered just in time
            top = MAX_DELAY_MS if self.config.auto_delay else self.config.delay_ms
            ahead = top / 1e3 + RENDER_MARGIN_S
        self.budget_ms = self.config.budget_ms(self.lookahead_ms)
        live_cfg = replace(self.config.live, latency_budget_ms=self.budget_ms, render_ahead_s=ahead)
        self.clock = clock
        self.playout = Playout(self.config.initial_delay_ms(self.lookahead_ms) / 1e3, clock)
        self.playout_audio = PlayoutAudio(self.config.playout_keep_s)
        self._deadline_margin = self.config.deadline_margin_s()
        # the automatic delay (None with a fixed one) and what keeps the delay in use (either)
        self.auto_delay = AutoDelay(self.lookahead_ms, clock) if self.config.auto_delay else None
        self.delay_control = PlayoutControl(self.playout, self.playout_audio, self.auto_delay)
        self.live = LiveSession(
            avatar, synth, live_cfg, deadline=self._deadline, audio_tap=self.playout_audio
        )
        self.video = AvatarVideoTrack(self)
        self.audio = PlayoutAudioTrack(self)
        self.video_out = Broadcast(self.video, VIDEO_QUEUE, f"video-{self.id}")
        self.audio_out = Broadcast(self.audio, AUDIO_QUEUE, f"audio-{self.id}")
        self._ready: collections.deque[Frame] = collections.deque()
        # (session samples after the push, its arrival time, its ingest seconds)
        self._arrivals: collections.deque[tuple[int, float, float]] = collections.deque(maxlen=8192)
        self.latency: dict[str, collections.deque] = {
            s: collections.deque(maxlen=self.config.history) for s in STAGES
        }
        self._pending: dict[int, LatencyRecord] = {}  # output frame i -> its stages, until it is on the wire
        self._timed_senders = 0
        # callable(dict): each frame's record when complete: "index", "speech", the stages it has
        # (seconds) and "times" (clock times "arrived", "handed" (to the sender), "end" (of total))
        self.on_frame = None
        self.frame_observers: list = []  # more callables(dict) of each frame's record (the server's metrics)
        self._fps_marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)
        self.fps = 0.0
        self.on_stats = None  # callable(dict), called every stats_interval_s
        self.on_close = None  # callable(StreamSession), called once by aclose()
        # callables(dict): the turn-taking events (streaming.turns), called on the event loop thread
        self.turn_listeners: list = []
        self.turns = Turns(self._turn_event, self._media_time)
        self.ended = False  # END received (no more audio)
        self.nonfinite_samples = 0  # NaN / infinite input samples, replaced by silence (push_audio)
        self.closed = False
        self.created = clock()
        self._tasks: list[asyncio.Task] = []

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> StreamSession:
        """Start the session's tasks (on the running loop)."""
        if not self._tasks:
            self.live.start()
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._pump(), name=f"mouthpiece-pump-{self.id}"),
                loop.create_task(self._housekeeping(), name=f"mouthpiece-housekeeping-{self.id}"),
            ]
        return self

    async def __aenter__(self) -> StreamSession:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the tracks (every viewer's tracks end), the tasks and the live session."""
        if self.closed:
            return
        self.closed = True
        self.video.stop()
        self.audio.stop()
        await self.video_out.aclose()
        await self.audio_out.aclose()
        self.video.close()  # its converter thread
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            await wait_cancelled(t)
        await self.live.aclose()
        # what a closed session no longer needs goes now, not when the last reference to it does
        self._ready.clear()
        self._pending.clear()
        self.playout_audio.drop()
        self.turn_listeners.clear()
        on_close, self.on_close, self.on_stats, self.on_frame = self.on_close, None, None, None
        if on_close is not None:
            on_close(self)

    # ---- input ---------------------------------------------------------------------------------

    def push_audio(self, samples: np.ndarray, sample_rate: int, arrived: float | None = None) -> int:
        """Feed audio (any rate, (n,) or (n, channels)); returns the windows it made ready.
        ``arrived``: when the transport received it (``clock()`` time; default: now), for the
        ``ingest`` stage (decoding before this call counts too)."""
        if self.closed:
            raise RuntimeError("the session is closed")
        t_in = self.clock()
        arrived = t_in if arrived is None else min(float(arrived), t_in)
        x = self._finite(samples)
        n0 = self.live.samples_received
        self.turns.begin(PLAYOUT_SCALE * n0)
        made = self.live.push_audio(x, sample_rate)
        self.turns.pushed(self.playout_audio.end)
        now = self.clock()
        n = self.live.samples_received
        if self.playout.anchor is None and self.live.first_audio_time is not None:
            self.playout.set_anchor(self.live.first_audio_time)
        elif not self.live.segments and not self.live.stats.flushes and n:
            self.playout.refine_anchor(now - n / TARGET_RATE)  # first segment, nothing skipped yet
        self._arrivals.append((n, arrived, (t_in - arrived) + self.live.last_push[0]))
        if n > n0:  # the delay's measures: packets, arrival times, speech
            if self.auto_delay is not None:
                self.auto_delay.observe_packet(n - n0)
                self.auto_delay.observe_arrival(n, arrived)
            self.delay_control.observe_push(n, arrived, x, self.live.speaking)
        return made

    def _finite(self, samples: np.ndarray) -> np.ndarray:
        """The input edge: NaN and infinite samples become silence (counted in
        :attr:`nonfinite_samples`), float samples are clipped to [-1, 1] (a huge finite value
        would overflow the mel)."""
        x = np.asarray(samples)
        if x.dtype.kind != "f":
            return x
        bad = ~np.isfinite(x)
        n = int(np.count_nonzero(bad))
        if n:
            x = np.where(bad, np.float32(0), x)
            self.nonfinite_samples += n
        return np.clip(x, -1.0, 1.0)

    def control(self, msg: Control) -> None:
        if self.closed:
            raise RuntimeError("the session is closed")
        if msg.kind is ControlKind.END:
            self.ended = True
        self.live.control(msg)
        if msg.kind is ControlKind.FLUSH:
            self.turns.flush(self._sent_cursor())
        elif msg.kind in (ControlKind.END, ControlKind.SEGMENT_END):
            self.turns.close(msg.kind.value, self.playout_audio.end)
        if msg.kind in (ControlKind.FLUSH, ControlKind.SWITCH_AVATAR):
            self.delay_control.forget_arrivals()  # the session clock moved on
            self._ready.clear()
            self.video.forget_image()  # the next frames are rest frames, not the last image held

    def flush(self) -> None:
        self.control(Control(ControlKind.FLUSH))

    def end(self) -> None:
        self.control(Control(ControlKind.END))

    def segment_end(self) -> int | None:
        """The client's utterance is complete (its last frames are made now); the id of the
        utterance it ended, or None when none was taking audio."""
        open_ = self.turns.open
        self.control(Control(ControlKind.SEGMENT_END))
        return None if open_ is None else open_.id

    def switch_avatar(self, avatar: Avatar, name: str | None = None) -> None:
        self.control(Control(ControlKind.SWITCH_AVATAR, avatar))
        self.avatar_name = name

    def _deadline(self, p: int) -> float | None:
        """Session frame ``p`` must be ready one frame before it is shown (LiveSession's deadline)."""
        t = self.playout.time_of_session_frame(p)
        return None if t is None else t - self._deadline_margin

    def wall_sample(self, now: float | None = None) -> int | None:
        """The session sample whose audio would arrive now in a real-time stream (None before audio)."""
        pl = self.playout
        if pl.anchor is None:
            return None
        now = self.clock() if now is None else now
        return int(((now + pl.delay_s - pl.start) * FPS - pl.anchor) * SAMPLES_PER_FRAME - pl.offset / 3)

    def lead_s(self) -> float:
        """Seconds of audio received ahead of real time (negative: behind)."""
        w = self.wall_sample()
        return 0.0 if w is None else (self.live.samples_received - w) / TARGET_RATE

    def room(self) -> bool:
        """False while the source is more than ``max_lead_s`` ahead of real time (it should wait)."""
        return self.lead_s() <= self.config.max_lead_s

    # ---- output (used by the tracks) ----------------------------------------------------------

    @property
    def drained(self) -> bool:
        """After END: every frame of the session has been made (the live session's output ended)."""
        return bool(self._tasks) and self._tasks[0].done()

    @property
    def avatar(self) -> Avatar:
        return self.live.avatar

    @property
    def error(self) -> BaseException | None:
        return self.live.error

    def subscribe(self) -> tuple:
        """(video, audio) tracks for one more viewer (:class:`streaming.broadcast.ViewerTrack`: its own
        frames from a bounded queue; stop them, or close the peer that sends them, to leave).
        RuntimeError once the session is closed."""
        if self.closed:
            raise RuntimeError("the session is closed")
        return self.video_out.subscribe(), self.audio_out.subscribe()

    @property
    def viewers(self) -> int:
        """Viewers now (their video tracks)."""
        return len(self.video_out.viewers)

    def take_frame(self, p: int) -> tuple[Frame | None, int]:
        """Session frame ``p`` if it is ready (and the number of older frames skipped)."""
        skipped = 0
        while self._ready and self._ready[0].index < p:
            self._ready.popleft()
            skipped += 1
        if self._ready and self._ready[0].index == p:
            return self._ready.popleft(), skipped
        return None, skipped

    def covers(self, p: int) -> bool:
        """Whether audio for session frame ``p`` has arrived (its frame is due from the model)."""
        return p >= 0 and not self.ended and self.live.samples_received > p * SAMPLES_PER_FRAME

    def read_audio(self, start: int, n: int) -> np.ndarray:
        """The playout audio the audio track sends now (and the turn events it brings)."""
        x = self.playout_audio.read(start, n)
        self.turns.played(start + n)
        return x

    # ---- turn-taking events ------------------------------------------------------------------

    def _sent_cursor(self) -> int | None:
        """One past the last playout sample sent: the audio track's last read while it has viewers,
        else where the playout clock is (the frame due now counts as sent)."""
        if self.audio_out.viewers or self.playout.anchor is None:
            return self.turns.cursor
        pl = self.playout
        m = int((self.clock() - pl.start) * PLAYOUT_RATE / AUDIO_FRAME)
        return (m + 1) * AUDIO_FRAME - pl.anchor * PLAYOUT_PER_FRAME

    def _media_time(self, position: int) -> float | None:
        """Seconds on the output clock (the tracks' pts) of playout position ``position``."""
        anchor = self.playout.anchor
        return None if anchor is None else (position + anchor * PLAYOUT_PER_FRAME) / PLAYOUT_RATE

    def _turn_event(self, event: dict) -> None:
        for listener in list(self.turn_listeners):
            try:
                listener(event)
            except Exception:  # noqa: BLE001 - a failing transport must not stop the others
                pass

    def arrival(self, sample: int) -> tuple[float, float] | None:
        """(arrival time, ingest seconds) of the push that brought session sample ``sample``, if
        still known."""
        found = None
        for end, t, ingest in reversed(self._arrivals):  # recent audio is what frames ask about
            if end <= sample:
                break
            found = (t, ingest)
        return found

    def arrival_time(self, sample: int) -> float | None:
        """When session sample ``sample`` arrived (the push that brought it), if still known."""
        a = self.arrival(sample)
        return None if a is None else a[0]

    def frame_sent(self, frame: Frame, now: float, pts: int | None = None) -> None:
        """Latency accounting of a session frame the video track hands on now (as output frame
        ``pts``). Its stages up to ``hold`` are known now; ``encode``, ``send`` and ``total`` come when
        a watched sender (:meth:`watch_sender`) has put it on the wire; without one (or after
        :data:`PENDING_FRAMES` frames) ``total`` ends here."""
        rec = LatencyRecord.handed_on(frame, now, self.arrival(frame.index * SAMPLES_PER_FRAME))
        if pts is not None and self._timed_senders:
            self._pending[pts] = rec
            for old in [i for i in self._pending if i < pts - PENDING_FRAMES]:
                self._commit(self._pending.pop(old), None)
        else:
            self._commit(rec, None)

    def _commit(self, rec: LatencyRecord, on_wire: float | None) -> None:
        out = rec.finish(on_wire)
        if self.auto_delay is not None and "encode" in rec.stages and "send" in rec.stages:
            self.auto_delay.observe_encode(rec.stages["encode"] + rec.stages["send"])
        for stage, seconds in rec.stages.items():
            self.latency[stage].append(seconds)
        for observe in self.frame_observers:
            observe(out)
        if self.on_frame is not None:
            self.on_frame(out)

    def watch_sender(self, sender) -> bool:
        """Time ``encode`` and ``send`` of this session's video on an aiortc ``RTCRtpSender`` whose
        track is one of :meth:`subscribe`'s viewer tracks (wraps the sender's ``_next_encoded_frame`` and
        the proxy's ``recv``; aiortc has no public hook). The first viewer to put a frame on the
        wire is the one counted. False if the sender does not look as expected (then ``total`` is
        measured when frames are handed on)."""
        track = getattr(sender, "track", None)
        nxt = next_encoded_frame(sender)
        if track is None or track.kind != "video" or nxt is None:
            return False
        state: dict = {"pts": None, "encoded": None}
        recv = track.recv

        async def timed_recv():
            frame = await recv()
            state["pts"] = frame.pts
            return frame

        async def timed_next(codec):
            if state["encoded"] is not None:  # the previous frame's packets are all handed on now
                self._on_wire(state["encoded"], self.clock())
                state["encoded"] = None
            enc = await nxt(codec)
            if enc is not None and state["pts"] is not None:
                rec = self._pending.get(state["pts"])
                if rec is not None and rec.encoded_at is None:
                    rec.encoded(self.clock())
                    state["encoded"] = state["pts"]
            return enc

        track.recv = timed_recv
        set_next_encoded_frame(sender, timed_next)
        self._timed_senders += 1
        return True

    def _on_wire(self, pts: int, t: float) -> None:
        rec = self._pending.pop(pts, None)
        if rec is not None:
            self._commit(rec, t)

    # ---- tasks -------------------------------------------------------------------------------

    async def _pump(self) -> None:
        try:
            async for frame in self.live.frames():
                self._ready.append(frame)
                if self.auto_delay is not None:
                    self._measure(frame)
        except RuntimeError:  # the worker failed: self.error is set, the tracks report it
            pass

    def _measure(self, frame: Frame) -> None:
        """The automatic delay's view of a frame just made: its compute time, and whether it was late
        (shed, or made after its deadline)."""
        if frame.kind is FrameKind.DROPPED:
            self.auto_delay.late()
            return
        tm = frame.timing
        if tm.model_end is None or tm.ready is None:
            return
        done = tm.model_end + tm.composite_s
        self.auto_delay.observe_compute(done - tm.ready + tm.mel_s)
        deadline = self._deadline(frame.index)
        if deadline is not None and done > deadline:
            self.auto_delay.late()

    async def _housekeeping(self) -> None:
        cfg = self.config
        next_stats = self.clock() + cfg.stats_interval_s
        gap = cfg.gap_ms / 1e3 * TARGET_RATE
        while True:
            await asyncio.sleep(cfg.tick_s)
            now = self.clock()
            w = self.wall_sample(now)
            if w is not None and not self.ended and w - self.live.samples_received > gap:
                self.live.close_segment(to_sample=w)
                self.turns.close("gap", self.playout_audio.end)
                self.delay_control.forget_arrivals()  # the session clock jumped
            if not self.audio_out.viewers and self.playout.anchor is not None:
                cursor = self._sent_cursor()  # nobody watches: the playout clock says what is out
                if cursor is not None:
                    self.turns.played(cursor)
            if self.auto_delay is not None:  # a fixed delay's playout is left exactly as it is
                self.delay_control.tick(now, self.live.speaking)
            # frames nobody took (no viewer): keep only those not yet due
            due = self.playout.session_frame(self.playout.frame_now())
            if due is not None:
                while self._ready and self._ready[0].index < due - 1:
                    self._ready.popleft()
            self._fps_marks.append((now, self.video.sent))
            t0, n0 = next(((t, n) for t, n in self._fps_marks if now - t <= 2.0), (now, self.video.sent))
            self.fps = (self.video.sent - n0) / (now - t0) if now > t0 else 0.0
            if self.on_stats is not None and now >= next_stats:
                next_stats = now + cfg.stats_interval_s
                try:
                    self.on_stats(self.stats())
                except Exception:  # noqa: BLE001 - a failing stats consumer must not stop the session
                    pass

    # ---- stats -------------------------------------------------------------------------------

    @property
    def delay_ms(self) -> float:
        """The delay in use now (ms): the fixed one, or where the automatic one stands."""
        return round(self.playout.delay_s * 1e3, 3)

    def stats(self) -> dict:
        """A JSON-ready snapshot: counters, measured fps and per-stage latency percentiles (ms);
        ``input``: the session clock's sample count (16 kHz, :attr:`LiveSession.samples_received`)
        after the latest audio push and the Unix time it arrived, so a client can tell its uplink
        (its own send time of those samples vs their arrival) from the server's share."""
        v = self.video
        out = {
            "type": "stats",
            "session": self.id,
            "avatar": self.avatar_name,
            "mode": MODES.get(self.live.synth.name, self.live.synth.name),
            "delay_ms": self.delay_ms,
            "delay_mode": "auto" if self.auto_delay is not None else "fixed",
            "delay_parts": None if self.auto_delay is None else self.auto_delay.parts().as_dict(),
            "skew_ms": self.delay_control.skew_ms,  # the sender's clock drift absorbed (+: it runs fast)
            "budget_ms": self.budget_ms,
            "lookahead_ms": self.lookahead_ms,
            "uptime_s": self.clock() - self.created,
            "fps": self.fps,
            "speaking": self.live.speaking,
            "lead_s": self.lead_s(),
            "video": {"sent": v.sent, "fresh": v.fresh, "late": v.late, "idle": v.idle, "skipped": v.skipped},
            "audio": {"sent": self.audio.sent, "late_samples": self.playout_audio.late},
            "broadcast": {  # every viewer's tracks (the session's own peer, the page, WHEP players)
                "viewers": self.viewers,
                "joined": self.video_out.joined,
                "dropped_video": self.video_out.dropped,
                "dropped_audio": self.audio_out.dropped,
            },
            "session_frames": self.live.stats.snapshot(),
            "nonfinite_samples": self.nonfinite_samples,  # NaN / inf input samples replaced by silence
            "latency_ms": {s: summary(d, 1e3, PERCENTILES) for s, d in self.latency.items() if d},
        }
        out["dropped"] = out["session_frames"]["dropped"]
        if self._arrivals:  # the input clock: when the latest audio arrived (Unix time; latency tools)
            n, t, _ = self._arrivals[-1]
            out["input"] = {"samples": n, "rate": TARGET_RATE, "arrived": t + (time.time() - self.clock())}
        return out
