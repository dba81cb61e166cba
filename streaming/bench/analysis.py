"""The figures of one client session of the latency tool (:func:`analyse`), from its raw
:class:`SessionRecord`: per event audio in -> out, audio in -> mouth open, the A/V offset and the server's
share; per session fps, drops, frame interval and jitter and the server's stage split, summarised by
:func:`percentiles`. Every figure and clock is defined in docs/latency.md, "The bench tool's figures".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.core.stats import summary
from engine.live.messages import STAGES
from streaming.bench.mouth import mouth_levels, mouth_onsets
from streaming.bench.signal import PACKET, RATE, TestSignal
from streaming.rtp_clock import RtpClock

__all__ = [
    "FIGURES",
    "SERVER_STAGES",
    "EventResult",
    "SessionRecord",
    "SessionResult",
    "analyse",
    "find_clicks",
    "percentiles",
]

FPS = 25
VIDEO_TICKS = 90000 // FPS  # RTP ticks per video frame
CLICK_NCC = 0.5  # normalised cross-correlation that counts as the click
STEADY_AFTER_S = 1.0  # fps and jitter leave out the first second of received video


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


def percentiles(values_ms) -> dict | None:
    """p50 / p95 / p99 / max (ms, 0.1 ms) and n of values in ms (None values left out; None when empty)."""
    return summary(values_ms, keys=("p50", "p95", "p99", "max", "n"), digits=1)


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
            "delay_parts": last.get("delay_parts"),  # the automatic delay's parts (None when fixed)
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
    res.mouth_levels = mouth_levels(send, openness, [o for o in outs if o is not None], cfg.speech_s)
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
