"""Latency of a running server as a user sees and hears it (``mouthpiece bench latency``).

A real WebRTC client (:class:`streaming.client.RtcClient`, aiortc) sends a test signal as its
microphone and receives the avatar's video and the delayed audio, like a browser. The server is a
black box reached by its URL (or started in this process with ``--local``); nothing is read from
it but what any client gets: the media, RTCP sender reports, the stats messages on the data
channel, ``/api/info``, ``/healthz`` and ``/metrics``.

**The signal** (:func:`make_signal`, 48 kHz mono): silence, then ``events`` events, one every
``period_s`` (half of them one 20 ms packet later, so that onsets fall at both phases of a 40 ms
video frame). Event ``k`` is a *click* (a 4 ms chirp, 1.5-6 kHz, in silence) followed
``click_lead_s`` later by a *speech onset*: a voiced, formant-shaped burst of ``speech_s`` with a
5 ms attack (so the onset is one sample position, not a fade). Onsets and clicks lie on 20 ms
packet boundaries. A click is too short for the server's speech gate (it needs 60 ms of voice), so
it never opens the mouth; it is what is found again in the returned audio.

**Clocks.** Everything is on the Unix clock of this machine. *Input time* of signal sample ``s``:
the instant it was "spoken", ``t0 + s / 48000``, where the client's microphone
(:class:`SignalTrack`) hands over each 20 ms packet when its last sample has been spoken, as a
real microphone does (so every input figure includes one packet of capture). *Send time* of a
received frame: when the server sent it, from its RTP timestamp and the RTCP sender reports of
its stream (:class:`RtpClock`: the median of the nearest reports' predictions), so a figure on the
send clock leaves out the downlink network and this client's jitter buffer and decoder. *Arrival*:
when the decoded frame came out of this client's aiortc receiver.

**Per event** (:func:`analyse`):

- ``audio_ms``: input time of the click -> send time of the returned click (found by normalised
  cross-correlation with the chirp, threshold 0.5). ``audio_arrival_ms``: to its arrival instead.
- ``mouth_ms``: input time of the onset -> send time of the first received frame whose mouth
  opens for it. Mouth openness of each received frame: FaceMesh (:class:`engine.core.face.FaceLandmarker`,
  one independent detection per frame, no temporal smoothing) lip opening (points 0-17) over the
  eye-corner distance (33-263), in pixels. Levels: *rest*, the median openness of the frames sent
  while the returned audio is quiet (more than 0.5 s before and 0.6 s after each returned burst);
  *peak*, the 95th percentile of the frames sent during the returned bursts; span = peak - rest.
  An opening is found at the first frame that reaches rest + 0.3 span after at least 5 frames
  (200 ms) under rest + 0.2 span; it *starts* at the earliest of that frame and the 2 before it
  that lies 0.1 span above the median of the 5 frames before it (and every frame from there on at
  least half that far): the first frame whose mouth visibly moves, judged against its own
  neighbourhood. (FaceMesh on a compressed still wanders by up to about 0.15 span over a session,
  in the encoder's quality steps; the preview renderer's first open frame, a third of the way
  open, rises 0.1-0.3 span over the frames before it, so now and then the next frame, clearly
  open, is the one found: one frame late.) The frame that counts for event ``k`` is the first
  opening that starts within half a
  period of the onset's returned audio (the returned click + ``click_lead_s``), and never before
  the onset was spoken. ``mouth_arrival_ms``: to the frame's arrival.
- ``av_offset_ms``: the mouth-open frame's send time minus the send time of the returned audio of
  the onset (returned click + ``click_lead_s``): how long after the sound starts leaving the server
  the lips start moving (positive: lips later). It includes the renderer's own timing: the speech
  gate needs 60 ms of voice before it opens the mouth, but a renderer that looks ahead (this
  server's windows hold 212 ms of later audio) can start the lips before the sound (negative).
- ``server_mouth_ms``: ``mouth_ms`` minus capture (one 20 ms packet) and uplink, i.e. the server's
  share: its arrival of the onset's packet -> its send time of the mouth-open frame. ``uplink_ms``
  (per session): the server's stats messages carry ``input`` (its session sample count after the
  latest audio push and the Unix time that push arrived); uplink = that arrival time minus this
  client's send time of the packet that ends at that sample (median over the messages). It holds
  while the server's session clock counts this client's samples one to one (no lost packets, no
  gaps), which a continuous test signal over a sound network gives.

**Per session**: received video frames, received fps (arrivals after the first second), dropped
frames (gaps in the received video's RTP timestamps: frames the server skipped or the network or
decoder lost), frame interval (arrival to arrival) and its jitter ``|interval - 40 ms|``, and from
the server's last stats message the windows it shed to hold its latency budget (``dropped``) and
its late frames. **Per run** (:func:`run_load`): the server's process CPU (percent of one core),
resident memory and GPU memory, sampled from ``/metrics`` every second while the sessions run.
With ``--local`` the server is ``mouthpiece serve`` in a child process (:func:`local_server`), so
its figures are its own; on a small machine the clients still compete with it for the cores.

:func:`find_max` ramps the load K = 1, 2, ... and reports the largest K at which every session
receives at least ``min_fps`` and keeps its p95 mouth latency within the bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import math
import os
import platform
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.live.messages import STAGES

__all__ = [
    "BenchConfig",
    "BenchReport",
    "EventResult",
    "LoadResult",
    "LocalServer",
    "RtpClock",
    "SessionRecord",
    "SessionResult",
    "SignalConfig",
    "SignalTrack",
    "TestSignal",
    "analyse",
    "find_clicks",
    "find_max",
    "format_report",
    "holds",
    "make_signal",
    "mouth_openness",
    "mouth_onsets",
    "opening_frames",
    "percentiles",
    "require_matplotlib",
    "run_bench",
    "run_load",
    "run_session",
    "write_json",
    "write_plot",
]

RATE = 48000  # the signal's and the returned audio's sample rate
PACKET = 960  # 20 ms: one microphone packet
FPS = 25
VIDEO_TICKS = 90000 // FPS  # RTP ticks per video frame
CLOCK_RATE = {"audio": 48000, "video": 90000}
SURE_FRACTION = 0.3  # an opening is found where openness reaches rest + this fraction of (peak - rest) ...
CLOSED_FRACTION = 0.2  # ... after CLOSED_FRAMES frames under rest + this fraction (closed) ...
CLOSED_FRAMES = 5
RISE_FRACTION = 0.1  # ... and starts where a frame lies this fraction above the median of ...
BASELINE = 5  # ... the frames before it ...
RISE_FRAMES = 2  # ... at most this many frames before the frame it was found at
MIN_RISE = 0.005  # (the rise is at least this, in eye-corner distances)
CLICK_NCC = 0.5  # normalised cross-correlation that counts as the click
STEADY_AFTER_S = 1.0  # fps and jitter leave out the first second of received video
AUDIO_TIME_BASE = fractions.Fraction(1, RATE)
MATPLOTLIB_MISSING = "--plot needs matplotlib: pip install 'mouthpiece[bench]' (or pip install matplotlib)"


# ---------------------------------------------------------------------------------------------
# The test signal
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalConfig:
    """The test signal (module docstring). ``seconds`` is the length; the events that fit in it
    after ``lead_s`` of silence, each ``period_s`` apart, with ``tail_s`` of silence after the last
    speech burst, are made (at least one)."""

    seconds: float = 20.0
    period_s: float = 1.6
    speech_s: float = 0.6
    lead_s: float = 2.0  # the stream settles first (the video encoder's quality ramps up)
    tail_s: float = 1.2
    click_lead_s: float = 0.3
    level: float = 0.3  # speech peak amplitude
    click_level: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.period_s < self.speech_s + 0.6:
            raise ValueError("period_s must leave at least 0.6 s of silence after each speech burst")
        if self.click_lead_s < 0.1 or self.lead_s < 0.2 or self.speech_s < 0.2:
            raise ValueError("click_lead_s >= 0.1, lead_s >= 0.2 and speech_s >= 0.2 are required")

    @property
    def events(self) -> int:
        room = self.seconds - self.lead_s - self.click_lead_s - self.speech_s - self.tail_s
        return max(1, int(math.floor(room / self.period_s + 1e-9)) + 1)


@dataclass
class TestSignal:
    """The microphone signal and where its events are (48 kHz sample positions)."""

    __test__ = False  # not a pytest class

    audio: np.ndarray  # float32 (n,)
    onsets: np.ndarray  # int64 (events,): first sample of each speech burst
    clicks: np.ndarray  # int64 (events,): first sample of each click
    click: np.ndarray  # float32: the click waveform (what is searched for in the returned audio)
    config: SignalConfig

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE


def _chirp(level: float) -> np.ndarray:
    n = int(0.004 * RATE)
    t = np.arange(n) / RATE
    f0, f1 = 1500.0, 6000.0
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
    return (level * np.hanning(n) * np.sin(phase)).astype(np.float32)


def _speech(seconds: float, f0: float, level: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced, formant-shaped harmonic burst with 4 Hz syllables, at full level from its start."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    x = np.zeros(n)
    for h in range(1, 40):
        fh = h * f
        amp = (
            np.exp(-(((fh - 600) / 300) ** 2))
            + 0.6 * np.exp(-(((fh - 1400) / 400) ** 2))
            + 0.3 * np.exp(-(((fh - 2500) / 500) ** 2))
        )
        x += amp * np.sin(h * phase) * (fh < 7000)
    x /= np.abs(x).max()
    env = 0.35 + 0.65 * 0.5 * (1 + np.cos(2 * np.pi * 4.0 * t))  # 1 at the onset, syllables after
    attack, release = int(0.005 * RATE), int(0.03 * RATE)
    env[:attack] *= np.linspace(0.0, 1.0, attack)
    env[-release:] *= np.linspace(1.0, 0.0, release)
    return level * x * env


def make_signal(config: SignalConfig | None = None) -> TestSignal:
    """The test signal of ``config`` (module docstring): clicks and speech onsets on 20 ms packet
    boundaries, at known sample positions."""
    c = config or SignalConfig()
    rng = np.random.default_rng(c.seed)

    def packet(seconds: float) -> int:
        return int(round(seconds * RATE / PACKET)) * PACKET

    k = np.arange(c.events)
    # each event half the time one packet later: onsets fall at both phases of the 40 ms video frame
    shift = rng.integers(0, 2, c.events) * PACKET
    clicks = np.array([packet(c.lead_s + i * c.period_s) for i in k], np.int64) + shift
    onsets = clicks + packet(c.click_lead_s)
    n = max(packet(c.seconds), int(onsets[-1]) + packet(c.speech_s + c.tail_s))
    x = rng.standard_normal(n) * 1e-4  # a quiet room (-80 dBFS)
    click = _chirp(c.click_level)
    for cs, os_ in zip(clicks, onsets, strict=True):
        x[cs : cs + click.size] += click
        burst = _speech(c.speech_s, rng.uniform(110.0, 180.0), c.level, rng)
        x[os_ : os_ + burst.size] += burst
    return TestSignal(np.clip(x, -1, 1).astype(np.float32), onsets, clicks, click, c)


class SignalTrack(MediaStreamTrack):
    """A microphone that speaks ``signal`` in real time, then silence: the 20 ms packet ``j`` is
    handed over at ``t0 + (j + 1) * 0.02`` (when its last sample has been spoken); a packet that
    comes late (a busy loop) is handed over at once, as a real microphone's buffered audio would.
    ``t0`` is set by the first :meth:`recv`."""

    kind = "audio"

    def __init__(self, signal: np.ndarray) -> None:
        super().__init__()
        self._pcm = np.clip(np.rint(np.asarray(signal, np.float32) * 32767), -32768, 32767).astype(np.int16)
        self.t0: float | None = None
        self.sent = 0  # samples handed over

    def spoken_time(self, sample) -> float | np.ndarray:
        """The Unix time at which signal sample ``sample`` was spoken."""
        if self.t0 is None:
            raise RuntimeError("the microphone has not started")
        return self.t0 + np.asarray(sample, np.float64) / RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.time() - PACKET / RATE
        j = self.sent // PACKET
        wait = self.t0 + (j + 1) * PACKET / RATE - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(PACKET, np.int16)
        part = self._pcm[j * PACKET : (j + 1) * PACKET]
        chunk[: part.size] = part
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = j * PACKET
        frame.time_base = AUDIO_TIME_BASE
        self.sent += PACKET
        return frame


# ---------------------------------------------------------------------------------------------
# Mouth openness of received frames
# ---------------------------------------------------------------------------------------------


def mouth_openness(points: np.ndarray, height: int, width: int) -> float:
    """Lip opening (FaceMesh points 0-17) over the eye-corner distance (33-263), in pixels, from a
    raw normalised mesh (478, 2|3); NaN for a degenerate face."""
    from engine.core.face import lip_openness

    p = np.asarray(points, np.float64)[:, :2] * (width, height)
    eye = float(np.linalg.norm(p[33] - p[263]))
    return lip_openness(p) / eye if eye > 1e-6 else float("nan")


class MouthMeter:
    """FaceMesh on received frames in a worker thread while the session runs (the images are not
    kept): ``results`` gets (pts, openness or NaN when no face is found) per frame."""

    MAX_SIDE = 720  # larger frames are scaled down first (the ratio does not depend on scale)

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self.results: list[tuple[int, float]] = []
        self.cpu_s = 0.0
        self.error: BaseException | None = None
        self._ready = threading.Event()
        from engine.core.face import _face_mesh_module

        _face_mesh_module()  # import MediaPipe here, once, not in the thread while a session runs
        self._thread = threading.Thread(target=self._run, name="mouthpiece-bench-facemesh", daemon=True)
        self._thread.start()

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until FaceMesh is loaded (before the session starts, so loading it does not stall it)."""
        await asyncio.to_thread(self._ready.wait, timeout)
        if self.error is not None:
            raise RuntimeError(f"FaceMesh failed: {self.error}") from self.error
        if not self._ready.is_set():
            raise TimeoutError(f"FaceMesh did not load within {timeout:.0f} s")

    def submit(self, pts: int, arrival: float, image: np.ndarray) -> None:
        self._queue.put((pts, image))

    def _run(self) -> None:
        import cv2

        from engine.core.face import FaceLandmarker

        try:
            with FaceLandmarker() as mesh:
                self._ready.set()
                while True:
                    item = self._queue.get()
                    if item is None:
                        break
                    pts, img = item
                    h, w = img.shape[:2]
                    if max(h, w) > self.MAX_SIDE:
                        s = self.MAX_SIDE / max(h, w)
                        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                        h, w = img.shape[:2]
                    rec = mesh.detect(img)
                    o = mouth_openness(rec.points, h, w) if rec.found else float("nan")
                    self.results.append((pts, o))
        except BaseException as e:  # noqa: BLE001 - reported by ready() / close()
            self.error = e
        finally:
            self.cpu_s = time.thread_time()
            self._ready.set()

    async def close(self, timeout: float) -> list[tuple[int, float]]:
        """Finish the frames still queued (within ``timeout`` seconds) and stop."""
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"FaceMesh did not finish the received frames within {timeout:.0f} s")
        if self.error is not None:
            raise RuntimeError(f"FaceMesh failed: {self.error}") from self.error
        return self.results


# ---------------------------------------------------------------------------------------------
# One session
# ---------------------------------------------------------------------------------------------


@dataclass
class RtpClock:
    """A stream's RTP timestamps -> the sender's send time (Unix), from its RTCP sender reports."""

    rate: int
    origin: int  # RTP timestamp of pts 0 (aiortc's pts = RTP timestamp - origin)
    reports: list[tuple[float, int]]  # (Unix time, RTP timestamp)

    def time_of(self, pts) -> np.ndarray:
        """Send times of ``pts`` (array-like): the median of the predictions of the (up to) 5 reports
        nearest in RTP time, each ``t_report + (rtp - rtp_report) / rate``."""
        if not self.reports:
            raise ValueError("no RTCP sender report was received")
        rtp = (np.asarray(pts, np.int64) + self.origin) % (1 << 32)
        t = np.array([r[0] for r in self.reports])
        r = np.array([r[1] for r in self.reports], np.int64)
        d = (rtp[..., None] - r) % (1 << 32)
        d = np.where(d >= 1 << 31, d - (1 << 32), d)
        pred = t + d / self.rate
        k = min(5, len(self.reports))
        near = np.argsort(np.abs(d), axis=-1, kind="stable")[..., :k]
        return np.median(np.take_along_axis(pred, near, axis=-1), axis=-1)


@dataclass
class SessionRecord:
    """What one client session collected (raw; :func:`analyse` turns it into figures)."""

    session: str | None = None
    error: str | None = None
    t0: float = float("nan")  # input time of signal sample 0
    video_pts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    video_arrival: np.ndarray = field(default_factory=lambda: np.zeros(0))
    openness: dict[int, float] = field(default_factory=dict)  # video pts -> mouth openness
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # returned, by RTP position
    audio_base: int = 0  # pts of audio[0]
    audio_frames: list[tuple[int, float, int]] = field(default_factory=list)  # (pts, arrival, samples)
    clocks: dict[str, RtpClock] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    facemesh_cpu_s: float = 0.0


@dataclass(frozen=True)
class SessionOptions:
    avatar: str | None = None
    ice_servers: tuple[str, ...] = ()
    connect_timeout_s: float = 30.0
    settle_s: float = 0.3  # the returned streams must cover the signal's end plus this


async def until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` (client state with no event of its own) within a time limit."""

    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(step)

    try:
        await asyncio.wait_for(loop(), timeout)
    except asyncio.TimeoutError:
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}") from None


def _rtp_clock(client, kind: str) -> RtpClock | None:
    rec = getattr(client, "_receivers", {}).get(kind)
    mapper = getattr(rec, "_RTCRtpReceiver__timestamp_mapper", None)
    origin = getattr(mapper, "_origin", None)
    reports = list(client.clocks[kind].reports)
    if origin is None or not reports:
        return None
    return RtpClock(CLOCK_RATE[kind], int(origin) % (1 << 32), reports)


async def run_session(url: str, signal: TestSignal, options: SessionOptions | None = None) -> SessionRecord:
    """One client session: connect, speak ``signal``, receive until the returned video and audio
    cover its end (every wait has a time limit), ask for the server's stats, hang up."""
    from streaming.client import RtcClient

    opts = options or SessionOptions()
    track = SignalTrack(signal.audio)
    meter = MouthMeter()
    client = RtcClient(
        url,
        audio_track=track,
        avatar=opts.avatar,
        keep_video=False,
        on_video=meter.submit,
        ice_servers=opts.ice_servers,
    )
    record = SessionRecord()
    try:
        await meter.ready()
        await asyncio.wait_for(client.start(), opts.connect_timeout_s)
        record.session = client.session
        end = signal.audio.size
        await until(
            lambda: track.sent >= end, signal.seconds + opts.connect_timeout_s, "the signal to be sent"
        )
        t_end = float(track.spoken_time(end)) + opts.settle_s

        def covered() -> bool:
            try:
                return (
                    bool(client.video and client.audio)
                    and client.send_time("video", client.video[-1].pts) >= t_end
                    and client.send_time("audio", client.audio[-1].pts) >= t_end
                )
            except ValueError:  # no sender report yet
                return False

        await until(covered, opts.connect_timeout_s, "the returned streams to cover the signal")
        before = {id(m) for m in client.messages}
        await client.send({"type": "stats"})  # the server's counters at the end
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):  # a server without stats: none
            await client.wait_message(lambda m: m.get("type") == "stats" and id(m) not in before, 5.0)
    except (RuntimeError, OSError, TimeoutError, asyncio.TimeoutError) as e:
        record.error = str(e) or type(e).__name__
    finally:
        await client.close()
        try:
            results = await meter.close(timeout=60.0 + 0.05 * len(client.video))
        except (TimeoutError, RuntimeError) as e:
            results = []
            record.error = record.error or str(e)
    record.facemesh_cpu_s = meter.cpu_s
    if record.error is not None:
        return record
    record.t0 = float(track.spoken_time(0))
    record.video_pts = np.array([f.pts for f in client.video], np.int64)
    record.video_arrival = np.array([f.arrival for f in client.video])
    record.openness = dict(results)
    try:
        record.audio, _ = client.received_audio()
    except ValueError:  # no sender report for the audio: reported below
        record.audio = np.zeros(0, np.float32)
    record.audio_base = client.audio[0].pts if client.audio else 0
    record.audio_frames = [(a.pts, a.arrival, int(a.data.size)) for a in client.audio]
    record.messages = [m for m in client.messages if m.get("type") == "stats"]
    for kind in ("video", "audio"):
        clock = _rtp_clock(client, kind)
        if clock is not None:
            record.clocks[kind] = clock
    if set(record.clocks) != {"video", "audio"}:
        record.error = "no RTCP sender reports were received"
    return record


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


def percentiles(values_ms) -> dict | None:
    """p50 / p95 / p99 / max and n of values in ms (None values left out; None when empty)."""
    v = np.asarray([x for x in values_ms if x is not None and math.isfinite(x)], np.float64)
    if not v.size:
        return None
    out = {f"p{q}": round(float(np.percentile(v, q)), 1) for q in (50, 95, 99)}
    out.update(max=round(float(v.max()), 1), n=int(v.size))
    return out


def find_clicks(audio: np.ndarray, click: np.ndarray, min_distance: int, threshold: float = CLICK_NCC):
    """Start positions of ``click`` in ``audio`` (normalised cross-correlation >= ``threshold``,
    peaks at least ``min_distance`` samples apart), in order, with their scores."""
    n, m = audio.size, click.size
    if n < m:
        return np.zeros(0, np.int64), np.zeros(0)
    size = 1 << int(math.ceil(math.log2(n + m)))
    x = audio.astype(np.float64)
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(click.astype(np.float64), size)), size)
    corr = corr[: n - m + 1]
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    local = np.sqrt(np.maximum(energy[m:] - energy[:-m], 0.0))
    ncc = corr / (np.linalg.norm(click) * local + 1e-9)
    ncc[local < 1e-3 * math.sqrt(m)] = 0.0  # silence: no match
    cand = np.flatnonzero(ncc >= threshold)
    peaks: list[int] = []
    for j in cand[np.argsort(-ncc[cand], kind="stable")]:
        if all(abs(int(j) - p) >= min_distance for p in peaks):
            peaks.append(int(j))
    peaks.sort()
    return np.array(peaks, np.int64), ncc[peaks] if peaks else np.zeros(0)


def opening_frames(
    openness: np.ndarray, threshold: float, closed: int = CLOSED_FRAMES, low: float | None = None
) -> np.ndarray:
    """Positions in ``openness`` (frames in order; NaN: no face, skipped) where the mouth opens: it
    reaches ``threshold`` after at least ``closed`` consecutive frames under ``low`` (default:
    ``threshold``) since the last opening."""
    low = threshold if low is None else low
    out, run, armed = [], closed, True  # the start counts as closed
    for j, o in enumerate(openness):
        if not math.isfinite(o):
            continue
        if o < low:
            run += 1
            armed = armed or run >= closed
        else:
            run = 0
        if o >= threshold and armed:
            out.append(j)
            armed = False
    return np.array(out, np.int64)


def mouth_onsets(openness: np.ndarray, rest: float, peak: float) -> np.ndarray:
    """The frames where the mouth starts to open (module docstring). With ``span = peak - rest``: an
    opening is found at the first frame that reaches ``rest + 0.3 span`` after at least 5 frames
    under ``rest + 0.2 span`` (:func:`opening_frames`); it starts at the earliest of that frame and
    the 2 before it that lies ``0.1 span`` above the median of the 5 frames before it, with every
    frame from there on at least half that far above the same median."""
    span = peak - rest
    if not (math.isfinite(span) and span > 0):
        return np.zeros(0, np.int64)
    fin = np.flatnonzero(np.isfinite(openness))
    o = openness[fin]
    sure = opening_frames(o, rest + SURE_FRACTION * span, low=rest + CLOSED_FRACTION * span)
    rise = max(RISE_FRACTION * span, MIN_RISE)
    out = []
    for n in sure:
        start = int(n)
        for j in range(max(BASELINE, n - RISE_FRAMES), n + 1):
            base = float(np.median(o[j - BASELINE : j]))
            if o[j] - base >= rise and o[j : n + 1].min() >= base + rise / 2:
                start = j
                break
        out.append(int(fin[start]))
    return np.array(out, np.int64)


@dataclass
class EventResult:
    index: int
    onset_s: float  # position of the onset in the signal
    audio_ms: float | None = None
    audio_arrival_ms: float | None = None
    mouth_ms: float | None = None
    mouth_arrival_ms: float | None = None
    av_offset_ms: float | None = None
    server_mouth_ms: float | None = None
    mouth_frame: int | None = None  # received video frame index (RTP time / 40 ms, from the first)


SERVER_STAGES = STAGES  # the server's stages (engine.live.messages: no engine or torch import)
FIGURES = ("audio_ms", "audio_arrival_ms", "mouth_ms", "mouth_arrival_ms", "av_offset_ms", "server_mouth_ms")


@dataclass
class SessionResult:
    session: str | None
    error: str | None = None
    events: list[EventResult] = field(default_factory=list)
    summary: dict[str, dict | None] = field(default_factory=dict)  # figure -> percentiles
    missed: dict[str, int] = field(default_factory=dict)  # events without a returned click / mouth
    video: dict = field(default_factory=dict)
    server: dict = field(default_factory=dict)
    uplink_ms: float | None = None
    mouth_levels: dict = field(default_factory=dict)  # rest and peak openness
    timeline: dict = field(default_factory=dict, repr=False)  # for the plot (not in the JSON)

    @property
    def fps(self) -> float:
        return float(self.video.get("fps") or 0.0)


def _uplink(record: SessionRecord) -> float | None:
    est = []
    for m in record.messages:
        inp = m.get("input")
        if not isinstance(inp, dict) or not inp.get("samples"):
            continue
        sample48 = int(inp["samples"]) * RATE // int(inp.get("rate", 16000))
        est.append(float(inp["arrived"]) - (record.t0 + sample48 / RATE))
    return float(np.median(est)) if est else None


def _envelope(x: np.ndarray, hop: int = RATE // 100) -> np.ndarray:
    n = x.size // hop
    return np.sqrt((x[: n * hop].astype(np.float64).reshape(n, hop) ** 2).mean(axis=1)) if n else np.zeros(0)


def _mouth_levels(send: np.ndarray, openness: np.ndarray, outs: list[float], speech_s: float) -> dict:
    """Rest and open levels of the received mouth: the median of the frames sent while the returned
    audio is quiet (more than 0.5 s before and 0.6 s after each burst's returned onset) and the 95th
    percentile of those sent during the returned bursts; without returned clicks, the 10th and 95th
    percentiles of all frames."""
    ok = np.isfinite(openness)
    quiet, speaking = ok.copy(), np.zeros_like(ok)
    for out in outs:
        quiet &= ~((send >= out - 0.5) & (send < out + speech_s + 0.6))
        speaking |= (send >= out) & (send < out + speech_s)
    speaking &= ok
    if quiet.sum() >= 10 and speaking.sum() >= 5:
        rest, peak = float(np.median(openness[quiet])), float(np.percentile(openness[speaking], 95))
    elif ok.any():
        rest, peak = float(np.percentile(openness[ok], 10)), float(np.percentile(openness[ok], 95))
    else:
        rest = peak = float("nan")
    return {"rest": round(rest, 4), "peak": round(peak, 4)}


def analyse(record: SessionRecord, signal: TestSignal, max_latency_s: float = 3.0) -> SessionResult:
    """The figures of one session (module docstring)."""
    res = SessionResult(record.session, record.error)
    if record.error is not None:
        return res
    if not record.video_pts.size or not record.audio.size:
        res.error = "no video or no audio came back"
        return res
    cfg = signal.config

    def t_in(sample) -> float:
        return record.t0 + float(sample) / RATE

    def ms(seconds) -> float | None:
        return None if seconds is None else round(1e3 * float(seconds), 1)

    # ---- video: order, send times, fps, gaps, jitter
    order = np.argsort(record.video_pts, kind="stable")
    pts = record.video_pts[order]
    arrival = record.video_arrival[order]
    send = record.clocks["video"].time_of(pts)
    index = np.rint((pts - pts[0]) / VIDEO_TICKS).astype(np.int64) if pts.size else pts
    openness = np.array([record.openness.get(int(p), np.nan) for p in pts])
    steady = np.sort(arrival[arrival >= arrival.min() + STEADY_AFTER_S]) if arrival.size else arrival
    fps = (steady.size - 1) / (steady[-1] - steady[0]) if steady.size > 2 else 0.0
    intervals = np.diff(steady) * 1e3
    res.video = {
        "frames": int(pts.size),
        "fps": round(float(fps), 2),
        "dropped": int(index[-1] - index[0] + 1 - np.unique(index).size) if index.size else 0,
        "interval_ms": percentiles(intervals),
        "jitter_ms": percentiles(np.abs(intervals - 1e3 / FPS)),
        "no_face": int(np.isnan(openness).sum()),
    }
    last = record.messages[-1] if record.messages else {}
    res.server = {
        k: v
        for k, v in {
            "mode": last.get("mode"),
            "delay_ms": last.get("delay_ms"),
            "fps": last.get("fps"),
            "dropped_windows": last.get("dropped"),
            "late_frames": (last.get("video") or {}).get("late"),
            "total_ms": (last.get("latency_ms") or {}).get("total"),
            # the server's per-stage split of its total (ingest .. send), from its last stats message
            "stages_ms": last.get("latency_ms"),
        }.items()
        if v is not None
    }
    uplink = _uplink(record)
    res.uplink_ms = ms(uplink)

    # ---- the returned audio: clicks, hence when each onset's sound left the server
    a_clock = record.clocks["audio"]
    clicks_at, _ = find_clicks(record.audio, signal.click, int(cfg.period_s * RATE / 2))
    click_send = a_clock.time_of(record.audio_base + clicks_at) if clicks_at.size else np.zeros(0)
    frames = sorted(record.audio_frames)
    f_pts = np.array([f[0] for f in frames], np.int64)

    def click_arrival(j: int) -> float | None:
        p = record.audio_base + j
        i = int(np.searchsorted(f_pts, p, side="right")) - 1
        if i < 0 or p >= f_pts[i] + frames[i][2]:
            return None
        return frames[i][1] + (p - f_pts[i]) / RATE

    used_clicks: set[int] = set()
    lead = (signal.onsets - signal.clicks) / RATE
    outs: list[float | None] = []  # send time of each onset's returned audio
    for k in range(signal.onsets.size):
        ev = EventResult(k, round(float(signal.onsets[k]) / RATE, 3))
        tc = t_in(signal.clicks[k])
        outs.append(None)
        for i in range(click_send.size):
            if i not in used_clicks and tc <= click_send[i] < tc + max_latency_s:
                used_clicks.add(i)
                outs[k] = float(click_send[i]) + float(lead[k])
                ev.audio_ms = ms(click_send[i] - tc)
                arr = click_arrival(int(clicks_at[i]))
                ev.audio_arrival_ms = ms(None if arr is None else arr - tc)
                break
        res.events.append(ev)

    # ---- the mouth: its rest and open levels, the threshold, the openings
    res.mouth_levels = _mouth_levels(send, openness, [o for o in outs if o is not None], cfg.speech_s)
    openings = mouth_onsets(openness, res.mouth_levels["rest"], res.mouth_levels["peak"])
    used_open: set[int] = set()
    for ev, out in zip(res.events, outs, strict=True):
        to = t_in(signal.onsets[ev.index])
        lo, hi = (
            (to, to + max_latency_s)
            if out is None
            else (max(to, out - cfg.period_s / 2), out + cfg.period_s / 2)
        )
        for j in openings:
            if int(j) not in used_open and lo <= send[j] < hi:
                used_open.add(int(j))
                ev.mouth_frame = int(index[j])
                ev.mouth_ms = ms(send[j] - to)
                ev.mouth_arrival_ms = ms(arrival[j] - to)
                ev.av_offset_ms = ms(None if out is None else send[j] - out)
                if uplink is not None:
                    ev.server_mouth_ms = ms(send[j] - to - PACKET / RATE - uplink)
                break
    res.summary = {f: percentiles([getattr(e, f) for e in res.events]) for f in FIGURES}
    res.missed = {
        "audio": sum(e.audio_ms is None for e in res.events),
        "mouth": sum(e.mouth_ms is None for e in res.events),
    }
    env_in = _envelope(signal.audio)
    env_out = _envelope(record.audio)
    t_out0 = float(a_clock.time_of(np.array([record.audio_base]))[0])
    res.timeline = {
        "input": (np.arange(env_in.size) / 100.0, env_in),
        "returned": (t_out0 - record.t0 + np.arange(env_out.size) / 100.0, env_out),
        "mouth": (send - record.t0, openness),
        "levels": res.mouth_levels,
        "onsets": signal.onsets / RATE,
        "clicks": signal.clicks / RATE,
        "returned_clicks": click_send - record.t0,
        "mouth_open": np.array(
            [
                send[np.flatnonzero(index == e.mouth_frame)[0]] - record.t0
                for e in res.events
                if e.mouth_frame is not None
            ]
        ),
    }
    return res


# ---------------------------------------------------------------------------------------------
# Load, server metrics, the largest load that holds
# ---------------------------------------------------------------------------------------------


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    """Prometheus text -> {name: [(labels, value)]}."""
    out: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in rest.rstrip("}").split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                labels[k.strip()] = v.strip().strip('"')
        with contextlib.suppress(ValueError):
            out.setdefault(name, []).append((labels, float(value)))
    return out


def _metric(m: dict, name: str, **labels) -> float | None:
    vals = [v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    return float(sum(vals)) if vals else None


async def _get_json(url: str, timeout: float = 10.0) -> dict:
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(url) as r:
                return await r.json() if r.status == 200 else {}
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError, ValueError):
        return {}


class MetricsSampler:
    """``/metrics`` every ``interval_s`` while a run goes on: (time, cpu s, rss bytes, gpu bytes)."""

    def __init__(self, url: str, interval_s: float = 1.0) -> None:
        self.url = url
        self.interval_s = interval_s
        self.samples: list[tuple[float, float | None, float | None, float | None]] = []
        self._task: asyncio.Task | None = None

    async def sample(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as http:
                async with http.get(f"{self.url}/metrics") as r:
                    text = await r.text() if r.status == 200 else ""
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return
        m = parse_metrics(text)
        self.samples.append(
            (
                time.time(),
                _metric(m, "mouthpiece_process_cpu_seconds_total"),
                _metric(m, "mouthpiece_process_resident_memory_bytes"),
                _metric(m, "mouthpiece_gpu_memory_bytes", kind="reserved"),
            )
        )

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)  # the sampling period (nothing waits on it)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()

    def summary(self, t_from: float, t_to: float) -> dict:
        """CPU (percent of one core) between the samples nearest ``t_from`` .. ``t_to``; peak memory."""
        s = [x for x in self.samples if x[1] is not None]
        inside = [x for x in s if t_from <= x[0] <= t_to] or s
        out: dict = {
            "cpu_percent": None,
            "rss_max_mb": None,
            "gpu_max_mb": None,
            "samples": len(self.samples),
        }
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            out["cpu_percent"] = round(
                100.0 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 1
            )
        rss = [x[2] for x in self.samples if x[2] is not None]
        gpu = [x[3] for x in self.samples if x[3] is not None]
        if rss:
            out["rss_max_mb"] = round(max(rss) / 2**20, 1)
        if gpu:
            out["gpu_max_mb"] = round(max(gpu) / 2**20, 1)
        return out


@dataclass
class LoadResult:
    load: int
    sessions: list[SessionResult]
    summary: dict[str, dict | None] = field(default_factory=dict)  # pooled over the sessions
    server: dict = field(default_factory=dict)  # cpu_percent, rss_max_mb, gpu_max_mb
    min_fps: float = 0.0
    holds: bool | None = None  # find_max: whether this load held
    reason: str | None = None  # ... and if not, why


async def run_load(url: str, signal: TestSignal, k: int, options: SessionOptions | None = None) -> LoadResult:
    """``k`` concurrent sessions of ``signal``, with the server's /metrics sampled meanwhile."""
    opts = options or SessionOptions()
    sampler = MetricsSampler(url)
    sampler.start()
    t_start = time.time()
    try:
        records = await asyncio.gather(*(run_session(url, signal, opts) for _ in range(k)))
    finally:
        await sampler.stop()
    results = [analyse(r, signal) for r in records]
    t0s = [r.t0 for r in records if math.isfinite(r.t0)]
    t_from = (max(t0s) if t0s else t_start) + STEADY_AFTER_S
    out = LoadResult(k, results)
    out.summary = {f: percentiles([getattr(e, f) for s in results for e in s.events]) for f in FIGURES}
    out.server = sampler.summary(t_from, t_from + signal.seconds - STEADY_AFTER_S)
    out.min_fps = min((s.fps for s in results), default=0.0)
    return out


def holds(run: LoadResult, min_fps: float, bound_ms: float) -> tuple[bool, str | None]:
    """Whether every session of ``run`` received ``min_fps`` and kept its p95 mouth latency within
    ``bound_ms`` (with the mouth seen in at least 80 % of the events)."""
    for i, s in enumerate(run.sessions):
        if s.error:
            return False, f"session {i + 1}: {s.error}"
        if s.fps < min_fps:
            return False, f"session {i + 1}: {s.fps:.2f} fps received (< {min_fps})"
        n = len(s.events)
        if s.missed.get("mouth", n) > 0.2 * n:
            return False, f"session {i + 1}: the mouth opened for {n - s.missed['mouth']} of {n} events"
        p95 = (s.summary.get("mouth_ms") or {}).get("p95")
        if p95 is None or p95 > bound_ms:
            return False, f"session {i + 1}: p95 mouth latency {p95} ms (> {bound_ms:.0f})"
    return True, None


async def _sessions_now(url: str) -> int | None:
    n = (await _get_json(f"{url}/healthz")).get("sessions")
    return None if n is None else int(n)


async def find_max(
    url: str,
    signal: TestSignal,
    bound_ms: float,
    min_fps: float = 24.5,
    max_load: int = 16,
    options: SessionOptions | None = None,
    run: Callable[..., Awaitable[LoadResult]] = run_load,
) -> tuple[int, list[LoadResult]]:
    """Ramp K = 1, 2, ... ``max_load`` until a load does not hold (:func:`holds`); the largest K
    that held (0: not even one session) and every run."""
    runs: list[LoadResult] = []
    best = 0
    baseline = await _sessions_now(url)
    for k in range(1, max_load + 1):
        if baseline is not None:  # the previous run's sessions are gone (the server saw the hang-ups)
            with contextlib.suppress(TimeoutError):
                await _wait_sessions(url, baseline, 15.0)
        r = await run(url, signal, k, options)
        r.holds, r.reason = holds(r, min_fps, bound_ms)
        runs.append(r)
        if not r.holds:
            break
        best = k
    return best, runs


async def _wait_sessions(url: str, at_most: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        n = await _sessions_now(url)
        if n is None or n <= at_most:
            return
        if time.time() > deadline:
            raise TimeoutError(f"the server still has {n} sessions")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalServer:
    """The server ``--local`` starts: ``mouthpiece serve`` in a child process (127.0.0.1, a free
    port, loopback ICE), so that the tool's clients and the server do not share one interpreter
    (and its lock) and the server's CPU and memory figures are its own."""

    delay_ms: float = 400.0
    renderer: str = "auto"
    device: str = "auto"
    avatar_file: str | None = None
    checkpoint_dir: str = "checkpoints"
    cache_dir: str | None = None
    max_sessions: int = 4

    def command(self, port: int) -> list[str]:
        """The child's command line (``python -m engine serve ...``)."""
        import sys

        cmd = [sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--loopback", "--renderer", self.renderer, "--device", self.device]
        cmd += ["--delay-ms", f"{self.delay_ms:g}", "--max-sessions", str(self.max_sessions)]
        cmd += ["--checkpoint-dir", self.checkpoint_dir]
        if self.avatar_file:
            cmd += ["--avatar", self.avatar_file]
        if self.cache_dir:
            cmd += ["--cache", self.cache_dir]
        return cmd


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def local_server(local: LocalServer, start_timeout_s: float = 180.0):
    """Run ``local`` in a child process; yields its URL once /healthz answers; stops it after."""
    import subprocess
    import tempfile

    port = _free_port()
    log = tempfile.NamedTemporaryFile("w+b", prefix="mouthpiece-bench-server-", suffix=".log", delete=False)
    proc = subprocess.Popen(local.command(port), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        log.flush()
        return Path(log.name).read_bytes()[-3000:].decode("utf-8", "replace")

    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the local server exited with status {proc.returncode}:\n{tail()}")
            if (await _get_json(f"{url}/healthz", timeout=2.0)).get("status") == "ok":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the local server did not answer in {start_timeout_s:.0f} s:\n{tail()}")
            await asyncio.sleep(0.25)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the server closes its sessions and exits
            try:
                await asyncio.get_running_loop().run_in_executor(None, proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


@dataclass(frozen=True)
class BenchConfig:
    url: str | None = None  # a running server; or
    local: LocalServer | None = None  # start one here
    avatar: str | None = None
    signal: SignalConfig = field(default_factory=SignalConfig)
    load: int = 1
    find_max: bool = False
    max_load: int = 16
    bound_ms: float | None = None  # default: the server's delay + 200
    min_fps: float = 24.5
    ice_servers: tuple[str, ...] = ()
    loopback: bool = False  # ICE on 127.0.0.1 only (a server on this machine started with --loopback)
    connect_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if (self.url is None) == (self.local is None):
            raise ValueError("give a server URL or a local server, not both")
        if self.load < 1 or self.max_load < 1:
            raise ValueError("the load is at least one session")


@dataclass
class BenchReport:
    url: str
    local: bool
    info: dict
    signal: dict
    runs: list[LoadResult]
    max_load: int | None = None  # find_max: the largest load that held
    bound_ms: float | None = None
    min_fps: float | None = None
    machine: dict = field(default_factory=dict)
    date: str = ""

    @property
    def ok(self) -> bool:
        return all(s.error is None for r in self.runs for s in r.sessions)


def _machine() -> dict:
    out = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                out["cpu"] = line.split(":", 1)[1].strip()
                break
    return out


async def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> BenchReport:
    """The benchmark of ``cfg``: one load (``cfg.load`` sessions) or the ramp of :func:`find_max`."""
    say = progress or (lambda _m: None)
    if cfg.local is not None:
        local = cfg.local
        need = max(cfg.load, cfg.max_load if cfg.find_max else 1)
        if local.max_sessions < need:
            local = LocalServer(**{**asdict(local), "max_sessions": need})
        say("starting the local server (mouthpiece serve in a child process: models, avatar) ...")
        from streaming.ice import loopback_ice

        async with local_server(local) as url:
            with loopback_ice():
                return await _bench(url, cfg, True, say)
    if cfg.loopback:
        from streaming.ice import loopback_ice

        with loopback_ice():
            return await _bench(cfg.url.rstrip("/"), cfg, False, say)
    return await _bench(cfg.url.rstrip("/"), cfg, False, say)


async def _bench(url: str, cfg: BenchConfig, local: bool, say) -> BenchReport:
    info = await _get_json(f"{url}/api/info")
    signal = make_signal(cfg.signal)
    opts = SessionOptions(cfg.avatar, cfg.ice_servers, cfg.connect_timeout_s)
    report = BenchReport(
        url=url,
        local=local,
        info={
            k: info.get(k) for k in ("mode", "renderer", "device", "delay_ms", "max_sessions") if k in info
        },
        signal={**asdict(cfg.signal), "events": cfg.signal.events, "length_s": round(signal.seconds, 2)},
        runs=[],
        machine=_machine(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    if cfg.find_max:
        delay = info.get("delay_ms")
        report.bound_ms = cfg.bound_ms if cfg.bound_ms is not None else float(delay or 400.0) + 200.0
        report.min_fps = cfg.min_fps

        async def step(u, s, k, o) -> LoadResult:
            say(f"load {k}: {k} session(s), {s.seconds:.1f} s ...")
            return await run_load(u, s, k, o)

        report.max_load, report.runs = await find_max(
            url, signal, report.bound_ms, cfg.min_fps, cfg.max_load, opts, run=step
        )
    else:
        say(f"{cfg.load} session(s), {signal.seconds:.1f} s of signal, {cfg.signal.events} events ...")
        report.runs = [await run_load(url, signal, cfg.load, opts)]
    return report


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

LABELS = {
    "audio_ms": "audio in -> out (send)",
    "audio_arrival_ms": "audio in -> out (arrival)",
    "mouth_ms": "audio in -> mouth (send)",
    "mouth_arrival_ms": "audio in -> mouth (arrival)",
    "av_offset_ms": "A/V offset (lips - sound)",
    "server_mouth_ms": "server share of mouth",
}


def report_dict(report: BenchReport) -> dict:
    """JSON-ready (the plot's timelines left out)."""

    def session(s: SessionResult) -> dict:
        d = asdict(s)
        d.pop("timeline", None)
        return d

    return {
        "tool": "mouthpiece bench latency",
        "date": report.date,
        "url": report.url,
        "local": report.local,
        "server": report.info,
        "machine": report.machine,
        "signal": report.signal,
        "find_max": None
        if report.max_load is None
        else {"max_load": report.max_load, "bound_ms": report.bound_ms, "min_fps": report.min_fps},
        "runs": [
            {
                "load": r.load,
                "holds": r.holds,
                "reason": r.reason,
                "min_fps": round(r.min_fps, 2),
                "summary": r.summary,
                "server": r.server,
                "sessions": [session(s) for s in r.sessions],
            }
            for r in report.runs
        ],
    }


def write_json(report: BenchReport, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report_dict(report), indent=2) + "\n")
    return p


def _row(label: str, d: dict | None) -> str:
    if not d:
        return f"  {label:<28} {'-':>7}"
    return (
        f"  {label:<28} " + " ".join(f"{d[k]:7.0f}" for k in ("p50", "p95", "p99", "max")) + f" {d['n']:5d}"
    )


def format_report(report: BenchReport) -> str:
    i = report.info
    server = (
        f"mode {i.get('mode', '?')} ({i.get('renderer') or 'no renderer'}) on {i.get('device', '?')}, "
        f"delay {i.get('delay_ms', '?')} ms"
        if i
        else "no /api/info"
    )
    lines = [
        f"mouthpiece bench latency: {report.url}{' (local)' if report.local else ''}; {server}",
        f"signal: {report.signal['events']} events in {report.signal['length_s']} s per session",
    ]
    for r in report.runs:
        verdict = "" if r.holds is None else (" holds" if r.holds else f" does not hold: {r.reason}")
        lines.append(f"load {r.load} ({r.load} session{'s' if r.load > 1 else ''}){verdict}")
        lines.append(f"  {'ms':<28} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'n':>5}")
        lines += [_row(LABELS[f], r.summary.get(f)) for f in FIGURES]
        for n, s in enumerate(r.sessions, 1):
            if s.error:
                lines.append(f"  session {n}: error: {s.error}")
                continue
            v, sv = s.video, s.server
            jit = (v.get("jitter_ms") or {}).get("p95")
            lines.append(
                f"  session {n}: {v['frames']} frames, {v['fps']:.2f} fps, "
                f"{v['dropped']} dropped (RTP gaps), "
                f"jitter p95 {jit if jit is not None else '-'} ms; uplink "
                f"{s.uplink_ms if s.uplink_ms is not None else '-'} ms; missed {s.missed}; server: "
                f"{sv.get('dropped_windows', '-')} windows shed, {sv.get('late_frames', '-')} late frames"
            )
        first = next((s for s in r.sessions if not s.error and s.server.get("stages_ms")), None)
        if first is not None:
            lines.append("  server stages of session 1 (its own clock: audio arrival -> frame on the wire)")
            stages = first.server["stages_ms"]
            lines += [_row(f"  {k}", stages[k]) for k in SERVER_STAGES if k in stages]
        srv = r.server
        if srv.get("cpu_percent") is not None or srv.get("rss_max_mb") is not None:
            gpu = f", GPU {srv['gpu_max_mb']} MB" if srv.get("gpu_max_mb") is not None else ""
            lines.append(
                f"  server process: CPU {srv.get('cpu_percent', '-')} % of one core, "
                f"RSS {srv.get('rss_max_mb', '-')} MB{gpu}"
            )
    if report.max_load is not None:
        lines.append(
            f"largest load that holds {report.min_fps} fps and p95 mouth <= {report.bound_ms:.0f} ms: "
            f"{report.max_load} session{'s' if report.max_load != 1 else ''}"
        )
    return "\n".join(lines)


def require_matplotlib():
    """matplotlib.pyplot (Agg), or a RuntimeError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """A timeline of the first session (signal, returned audio envelope, mouth openness, with the
    event markers) and histograms of the latencies over every session."""
    plt = require_matplotlib()
    sessions = [s for r in report.runs for s in r.sessions if not s.error]
    fig = plt.figure(figsize=(13, 11), layout="constrained")
    gs = fig.add_gridspec(5, 3, height_ratios=[1, 1, 1.2, 1.3, 1.1])
    if sessions and sessions[0].timeline:
        tl = sessions[0].timeline
        ax1 = fig.add_subplot(gs[0, :])
        ax1.plot(*tl["input"], lw=0.8, color="0.3")
        for x in tl["onsets"]:
            ax1.axvline(x, color="tab:green", lw=1)
        for x in tl["clicks"]:
            ax1.axvline(x, color="tab:purple", lw=0.8, ls=":")
        ax1.set_ylabel("input RMS")
        ax1.set_title("signal (input time): speech onsets (green), clicks (purple)", fontsize=9, loc="left")
        ax2 = fig.add_subplot(gs[1, :], sharex=ax1)
        ax2.plot(*tl["returned"], lw=0.8, color="tab:blue")
        for x in tl["returned_clicks"]:
            ax2.axvline(x, color="tab:purple", lw=0.8, ls=":")
        ax2.set_ylabel("returned RMS")
        ax2.set_title("returned audio (server send time): clicks found (purple)", fontsize=9, loc="left")
        ax3 = fig.add_subplot(gs[2, :], sharex=ax1)
        t, o = tl["mouth"]
        ax3.plot(t, o, ".-", ms=2, lw=0.8, color="tab:orange")
        for level in (tl["levels"]["rest"], tl["levels"]["peak"]):
            ax3.axhline(level, color="0.5", ls="--", lw=0.8)
        for x in tl["onsets"]:
            ax3.axvline(x, color="tab:green", lw=0.6, alpha=0.5)
        for x in tl["mouth_open"]:
            ax3.axvline(x, color="tab:red", lw=1)
        ax3.set_ylabel("mouth openness")
        ax3.set_xlabel("seconds from the start of the signal")
        ax3.set_title(
            "mouth openness of received frames (FaceMesh; server send time): rest and peak (dashed), "
            "mouth opens (red), onsets (green)",
            fontsize=9,
            loc="left",
        )
    for col, (f, title) in enumerate(
        (
            ("audio_ms", "audio in -> out (ms)"),
            ("mouth_ms", "audio in -> mouth (ms)"),
            ("av_offset_ms", "A/V offset (ms)"),
        )
    ):
        ax = fig.add_subplot(gs[3, col])
        vals = [getattr(e, f) for s in sessions for e in s.events if getattr(e, f) is not None]
        if vals:
            ax.hist(vals, bins=min(30, max(5, len(vals) // 2)), color="tab:gray")
        ax.set_title(f"{title}, n={len(vals)}", fontsize=9)
    stages = [(n, s.server["stages_ms"]) for n, s in enumerate(sessions, 1) if s.server.get("stages_ms")]
    if stages:  # the server's total split into its stages (p50), one bar per session
        ax = fig.add_subplot(gs[4, :])
        names = [k for k in SERVER_STAGES if k != "total"]
        left = np.zeros(len(stages))
        cmap = plt.get_cmap("tab20")
        for j, k in enumerate(names):
            w = np.array([(st.get(k) or {}).get("p50", 0.0) for _, st in stages])
            ax.barh([f"session {n}" for n, _ in stages], w, left=left, color=cmap(j), label=k)
            left += w
        ax.set_xlabel("ms (p50 of each stage)")
        ax.legend(ncol=6, fontsize=7, loc="upper right")
        ax.set_title("server stages: audio arrival -> frame on the wire", fontsize=9, loc="left")
    fig.suptitle(format_report(report).splitlines()[0], fontsize=9)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
