"""The analysis of a ``benchmarks/live_latency.py`` run: a client's :class:`~.clients.Record` and the
server's :class:`~.server.Probe` of the same session -> per-frame latencies, and the runs' summary.

:func:`first_index` places the first received video frame among the server's output frames (the
largest index for which no RTCP sender report claims a send time before the frame was made);
:class:`ClipMap` maps session frames to input samples through the session's segments;
:func:`av_alignment` finds one loud input second in the returned audio (cross-correlation);
:func:`analyse` gives one session's figures (client e2e on the send and arrival clocks, uplink,
wire, the server's stages for the same frames, A/V offset, audio e2e, what was shown);
:func:`summarise` pools the sessions of a run. Latencies are in ms as
:func:`engine.core.stats.summary` (p50 / p95 / p99 / max, n; numpy's linear interpolation).
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks.latency.clients import Record
from benchmarks.latency.server import Probe, torch_threads
from benchmarks.latency.suites import SAMPLES_PER_FRAME, SR16, VIDEO_RTP_STEP
from engine.core.stats import summary
from streaming.session import STAGES

MS_KEYS = ("p50", "p95", "p99", "max", "n")


def ms_summary(values_s) -> dict | None:
    """p50/p95/p99/max (ms, rounded to 0.1 ms) and n of values in seconds (None when there are none)."""
    return summary(values_s, 1e3, keys=MS_KEYS, digits=1)


def first_index(record: Record, probe: Probe, offset: float) -> tuple[int | None, dict]:
    """The server's output index of the first received video frame (see the module docstring)."""
    reports = []
    for t_unix, rtp in record.reports["video"]:
        d = (int(rtp) - int(record.origin["video"])) % (1 << 32)
        d = d - (1 << 32) if d >= 1 << 31 else d
        reports.append((t_unix - offset, d // VIDEO_RTP_STEP))
    made = {i: t for i, (t, _, _) in probe.out.items()}
    if not reports or not made:
        return None, {"sender_reports": len(reports)}
    best = None
    for c in range(min(made), max(made) + 1):
        lags = [t - made[k + c] for t, k in reports if k + c in made]
        if lags and min(lags) >= -0.002:
            best = (c, lags)
        elif best is not None and lags:
            break  # larger offsets only put frames later: the causal bound is passed
    if best is None:
        return None, {"sender_reports": len(reports)}
    c, lags = best
    info = {
        "sender_reports": len(reports),
        "sr_lag_ms": {  # sender report time - when the server's track made that frame
            "min": round(1e3 * min(lags), 1),
            "median": round(1e3 * float(np.median(lags)), 1),
            "max": round(1e3 * max(lags), 1),
        },
        # the index is unambiguous when some report came less than a frame after its frame
        "index_certain": min(lags) < 0.040,
    }
    return c, info


class ClipMap:
    """Session frames <-> input samples, from the session's segments: the first segment starts at
    session frame 0 with input sample 0; a gap (the watchdog saw the input stall) ends a segment and
    moves the session clock on, and the next segment goes on with the next input sample."""

    def __init__(self, segments) -> None:
        self.segments, cum = [], 0
        for start, end, n in segments:
            self.segments.append((start, end, n, cum))
            cum += n
        self.samples = cum

    def input_sample(self, p: int | None) -> int | None:
        """The 16 kHz input sample that is the first sample of session frame ``p`` (None: no audio)."""
        for start, end, n, cum in self.segments if p is not None else ():
            if start <= p < end:
                off = (p - start) * SAMPLES_PER_FRAME
                return cum + off if off < n else None
        return None

    def session_sample(self, x: int) -> int | None:
        for start, _, n, cum in self.segments:
            if cum <= x < cum + n:
                return start * SAMPLES_PER_FRAME + x - cum
        return None


def av_alignment(record: Record, x16: np.ndarray, clip: ClipMap) -> dict | None:
    """Where the input plays in the returned audio (cross-correlation of 1 s of loud input)."""
    from scipy.signal import correlate, resample_poly

    audio, t_audio0 = record.received_audio()
    n = SR16
    if audio.size < 3 * n or not math.isfinite(t_audio0) or not clip.segments:
        return None
    a16 = resample_poly(audio.astype(np.float64), 1, 3)
    _, _, seg_n, cum = max(clip.segments, key=lambda s: s[2])  # the longest segment
    if seg_n < n:
        return None
    lo = max(range(cum, cum + seg_n - n, SR16 // 4), key=lambda x: float(np.sum(x16[x : x + n] ** 2)))
    ref = x16[lo : lo + n].astype(np.float64)
    corr = correlate(a16, ref, mode="valid", method="fft")
    energy = np.convolve(a16**2, np.ones(n), mode="valid")
    norm = corr / (np.linalg.norm(ref) * np.sqrt(np.maximum(energy, 1e-12)))
    j = int(np.argmax(norm))  # returned-audio 16 kHz index of input sample lo
    return {
        "input_sample": lo,
        "t_input": t_audio0 + j / SR16,  # server send time of the returned input sample lo
        "t_session0": t_audio0 + (j - clip.session_sample(lo)) / SR16,  # ... of session sample 0
        "peak": float(norm[j]),
    }


def analyse(record: Record, probe: Probe, stats: dict, anchor: int, clip: ClipMap, x16, offset: float):
    sent = np.asarray([(pts * 48000 // rate, t) for pts, rate, t, *_ in record.sent_audio], dtype=np.float64)

    def input_time(sample16: int) -> float | None:
        """When the client sent the audio frame that contains its input sample ``sample16``."""
        k = int(np.searchsorted(sent[:, 0], 3 * sample16, side="right")) - 1
        return None if k < 0 else float(sent[k, 1])

    i0, index_info = first_index(record, probe, offset)
    e2e_send, e2e_arrival, speech_send, av, uplink, send = [], [], [], [], [], []
    align = av_alignment(record, x16, clip)
    av_ok = align is not None and align["peak"] >= 0.5
    counted = set()
    for f in record.video if i0 is not None else ():
        made = probe.out.get(f.pts // VIDEO_RTP_STEP + i0)
        if made is None or made[2] != "fresh":
            continue
        p = made[1]
        x = clip.input_sample(p)
        t_in = input_time(x) if x is not None else None
        if t_in is None:
            continue
        t_send = record.send_time("video", f.pts)
        counted.add(p)
        fr = probe.frames.get(p, {})
        times = fr.get("times") or {}
        if times.get("arrived") is not None:
            uplink.append(times["arrived"] + offset - t_in)
            send.append(t_send - (times["end"] + offset))
        e2e_send.append(t_send - t_in)
        e2e_arrival.append(f.arrival - t_in)
        if fr.get("speech"):
            speech_send.append(t_send - t_in)
        if av_ok:
            av.append(t_send - (align["t_session0"] + p / 25))
    frames = [probe.frames[p] for p in sorted(counted) if p in probe.frames]
    kinds = [(p, k, clip.input_sample(p) is not None) for _, p, k in probe.out.values()]
    shown = {
        "clip_frames": sum(
            clip.input_sample(p) is not None for s in clip.segments for p in range(s[0], s[1])
        ),
        "segments": len(clip.segments),
        "fresh_in_clip": sum(k == "fresh" and c for _, k, c in kinds),
        "late_in_clip": sum(k == "late" and c for _, k, c in kinds),
        "late_before_frame_0": sum(k == "late" and p is not None and p < 0 for p, k, _ in kinds),
        "late_other": sum(k == "late" and not c and p is not None and p >= 0 for p, k, c in kinds),
        "measured": len(e2e_send),
    }
    arrivals = [f.arrival for f in record.video]
    fps = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 2 else 0.0
    t_lo = input_time(align["input_sample"]) if av_ok else None
    return {
        "session": stats["session"],
        "anchor": anchor,
        "first_index": i0,
        "index_check": index_info,
        "segments": [list(s[:3]) for s in clip.segments],
        "shown": shown,
        "client_e2e_send_ms": ms_summary(e2e_send),
        "av_offset_ms": round(1e3 * float(np.median(av)), 1) if av else None,
        "xcorr_peak": round(align["peak"], 3) if align else None,
        "audio_e2e_ms": round(1e3 * (align["t_input"] - t_lo), 1) if t_lo is not None else None,
        "received": {
            "video_frames": len(record.video),
            "audio_frames": len(record.audio),
            "fps": round(fps, 2),
            "max_gap_ms": round(1e3 * float(np.max(np.diff(arrivals))), 1) if len(arrivals) > 2 else None,
        },
        "server_stats": stats,
        "raw": {  # seconds
            "client_e2e_send": e2e_send,
            "client_e2e_arrival": e2e_arrival,
            "client_e2e_send_speech": speech_send,
            "uplink": uplink,
            "wire": send,
            "stages": {s: [fr[s] for fr in frames if s in fr] for s in STAGES},
            "stages_speech": {s: [fr[s] for fr in frames if s in fr and fr["speech"]] for s in STAGES},
        },
    }


def summarise(opts, sessions, wall, cpu, load, gpu_mb, setup_s, mode, device) -> dict:
    def pooled(key: str, stage: str | None = None) -> list:
        return [v for s in sessions for v in (s["raw"][key][stage] if stage else s["raw"][key])]

    counters = ("frames", "speech_frames", "rest_frames", "dropped", "model_calls", "windows")
    sf = {k: sum(s["server_stats"]["session_frames"][k] for s in sessions) for k in counters}
    video = {
        k: sum(s["server_stats"]["video"][k] for s in sessions)
        for k in ("sent", "fresh", "late", "idle", "skipped")
    }
    shown = {k: sum(s["shown"][k] for s in sessions) for k in sessions[0]["shown"]}
    shed = sf["dropped"] + sf["speech_frames"]
    model_ms = [s["server_stats"]["session_frames"].get("model_ms") for s in sessions]
    latency = {
        "client_e2e_send": ms_summary(pooled("client_e2e_send")),
        "client_e2e_arrival": ms_summary(pooled("client_e2e_arrival")),
        "uplink": ms_summary(pooled("uplink")),
        **{s: ms_summary(pooled("stages", s)) for s in STAGES},
        "wire": ms_summary(pooled("wire")),
    }
    speech = {"client_e2e_send": ms_summary(pooled("client_e2e_send_speech"))}
    speech.update({s: ms_summary(pooled("stages_speech", s)) for s in STAGES})
    fps = [s["received"]["fps"] for s in sessions]
    avs = [s["av_offset_ms"] for s in sessions if s["av_offset_ms"] is not None]
    audio_e2e = [s["audio_e2e_ms"] for s in sessions if s["audio_e2e_ms"] is not None]
    return {
        "settings": {
            "weights": opts.weights,
            "renderer": opts.renderer,
            "mode": mode,
            "device": device,
            "backend": opts.backend if mode == "neural" else None,
            "precision": opts.precision if mode == "neural" else None,
            "refs": opts.refs,
            "batch": opts.batch,
            "delay_ms": opts.delay_ms,
            "budget_ms": sessions[0]["server_stats"]["budget_ms"],
            "sessions": opts.sessions,
            "seconds": opts.seconds,
            "warmup_s": opts.warmup,
            "torch_threads": torch_threads(),
        },
        "machine": {**load, "cpu_percent": round(100 * cpu / wall, 1), "gpu_max_mem_mb": gpu_mb},
        "wall_s": round(wall, 1),
        "setup_s": round(setup_s, 1),
        "latency_ms": latency,
        "latency_ms_rendered_frames": speech if mode != "passthrough" else None,
        "av_offset_ms": round(float(np.median(avs)), 1) if avs else None,
        "audio_e2e_ms": round(float(np.median(audio_e2e)), 1) if audio_e2e else None,
        "received_fps": {"mean": round(float(np.mean(fps)), 2), "min": round(float(min(fps)), 2)},
        "session_frames": sf,
        "drop_rate": round(sf["dropped"] / shed, 3) if shed else None,
        "video": video,  # the server's counters (whole sessions)
        "shown": shown,  # from the probe: what the output frames of the speech clip showed
        "model_ms": model_ms,
        "sessions": [{k: v for k, v in s.items() if k != "raw"} for s in sessions],
    }
