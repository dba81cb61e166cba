"""Mouth-to-frame latency of the live server, per stage, with real WebRTC clients over loopback.

    .venv/bin/python benchmarks/live_latency.py --suite cpu          # the three CPU runs, one file pair
    .venv/bin/python benchmarks/live_latency.py --weights none --sessions 2
    .venv/bin/python benchmarks/live_latency.py --weights standin --refs 1 --delay-ms 600 --batch 4
    .venv/bin/python benchmarks/live_latency.py --renderer retrieval        # the CPU preview renderer
    .venv/bin/python benchmarks/live_latency.py --device cuda --weights standin --refs 5 --sessions 8 \\
        --backend cuda-graph --precision fp16                          # the GPU target setting

The server runs in this process (aiohttp ``AppRunner`` on 127.0.0.1, port 0, loopback ICE); each
session is a :class:`streaming.client.RtcClient` (aiortc) that POSTs /offer, plays a speech file as
its microphone in real time and receives the avatar's video and the delayed audio. The clients run
in a child process (as a browser would be another process), so that this process's CPU time and
its event loop are the server's alone; their records (received frames with RTP timestamps and
arrival times, RTCP sender reports, their own microphone frames) come back when they close. Both
processes time with ``time.time()`` (one machine). ``--weights none`` is passthrough (no model:
transport and playout only); ``standin`` is the real landmark transformer and neural renderer with
stand-in weights (timings do not depend on the values); ``paths`` loads ``--landmark-checkpoint``
/ ``--renderer-checkpoint``. ``--renderer`` picks the server's renderer (``ServerConfig.renderer``):
by default ``neural`` with weights and ``none`` (passthrough) without; ``retrieval`` is the CPU
preview renderer (the avatar's own mouths, following the voice's loudness, or the transformer when
weights are given).

What is measured, and on which clock:

- **client e2e (send)**: for every received video frame that shows a fresh session frame ``p`` of
  the speech clip: the time the server sent it (its RTP timestamp mapped to the server's send
  clock by the RTCP sender reports the client received, as ``RtcClient.send_time``) minus the time
  the client sent the audio frame that contains the first sample of ``p`` (its own record of its
  microphone frames). **client e2e (arrival)**: the same, to the time the decoded frame came out of
  the client's aiortc receiver (adds the client's jitter buffer and decoding).
- Which session frame a received frame shows is taken from the server object in-process: a
  wrapper around the session's video track records, for each output frame ``i`` it makes,
  whether it showed a fresh session frame (and which ``p``), repeated the last image (late) or was
  an idle rest frame. The output index of a received frame is ``i = pts / 3600 + i0``; ``i0`` (the
  first received frame's index) is the largest value for which no RTCP sender report claims a send
  time before the server made the frame (sender reports are sent after the frame's packets).
- **server stages** (``streaming.session.STAGES``: ingest, mel, window_wait, queue, transformer,
  sketch, renderer, composite, hold, encode, send; total = audio arrival -> frame on the wire):
  the server's own per-frame records (``StreamSession.on_frame``), for the same frames as the
  client figure. Around them, **uplink** (the client sent the frame's first sample -> it reached
  the server's session: Opus, loopback, aiortc's receive jitter buffer) and **wire** (the server's
  end of ``total`` -> the RTCP-mapped send time; about 0); uplink + total + wire = client e2e.
  The server's ``stats()`` snapshot of each session is stored in the JSON as well.
- Session frames map to input samples through the session's segments (a gap closed by the watchdog
  moves the session clock on; the next segment goes on with the next input sample); frames of gaps
  are not measured.
- **A/V offset**: one loud second of the input is found in the returned audio by cross-correlation,
  which places session sample 0 on the returned audio's send clock; offset = median over frames of
  (send time of video frame ``p``) - (send time of the returned audio of session sample ``640 p``);
  positive = video later. **audio e2e**: send time of the returned copy of that input second minus
  the time the client sent it (mouth to ear, on the server's send clock).
- received fps (client arrival times), frames shed by the latency budget (``dropped``; drop rate =
  dropped / (dropped + rendered speech frames)), late frames (the previous image repeated because
  the frame was not ready: the server's counter, and those of the clip's frames), CPU% of this
  process (the server alone) and of the clients' process, and, on CUDA, peak GPU memory. Before
  each run the machine is checked idle (1-min load < ``--max-load``; it waits up to
  ``--idle-wait`` s, else the run is marked busy).

Writes ``benchmarks/results/<out-name>.json`` and ``.md`` with device, versions, command and date.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, ROOT, run_meta, write_results  # noqa: E402
from streaming.session import MODEL_STAGES, STAGES  # noqa: E402

SHARED_MEDIA = ROOT.parent / "shared" / "media"
DEFAULT_AUDIO = SHARED_MEDIA / "speech_c_16k_60s.wav"
DEFAULT_AUDIO_START = 2.5  # s: the clip is silent for its first 3 s; keep 0.5 s of that silence
DEFAULT_AVATAR = ROOT / "assets" / "portrait.png"
SR16 = 16000
SAMPLES_PER_FRAME = 640  # 16 kHz samples per 25 fps frame
VIDEO_RTP_STEP = 3600  # 90 kHz RTP ticks per 25 fps frame
LIMIT_S = 60.0  # bound on every wait beyond the audio length

# named sequences of runs: (name, overrides of the command-line options)
SUITES = {
    "cpu": [
        ("passthrough, 1 session", dict(weights="none", sessions=1)),
        ("stand-in models, 1 session", dict(weights="standin", refs=1, delay_ms=600.0, batch=4, sessions=1)),
        ("passthrough, 2 sessions", dict(weights="none", sessions=2)),
        ("retrieval preview, 1 session", dict(weights="none", renderer="retrieval", sessions=1)),
    ],
    "gpu": [
        ("passthrough, 8 sessions", dict(weights="none", sessions=8)),
        (
            "stand-in models, 1 session",
            dict(weights="standin", refs=5, sessions=1, backend="cuda-graph", precision="fp16"),
        ),
        (
            "stand-in models, 8 sessions",
            dict(weights="standin", refs=5, sessions=8, backend="cuda-graph", precision="fp16"),
        ),
    ],
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def pct(values_s) -> dict | None:
    """p50/p95/p99/max (ms) and n of values in seconds (None when there are none)."""
    v = np.asarray([x for x in values_s if x is not None], dtype=np.float64) * 1e3
    if not v.size:
        return None
    return {
        "p50": round(float(np.percentile(v, 50)), 1),
        "p95": round(float(np.percentile(v, 95)), 1),
        "p99": round(float(np.percentile(v, 99)), 1),
        "max": round(float(v.max()), 1),
        "n": int(v.size),
    }


def write_wav16(path: Path, x16: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR16)
        w.writeframes((np.clip(x16, -1, 1) * 32767).astype("<i2").tobytes())


def input_audio(args) -> tuple[np.ndarray, str]:
    """The microphone signal (16 kHz mono, ``--seconds`` long) and a description of it."""
    path = Path(args.audio) if args.audio else (DEFAULT_AUDIO if DEFAULT_AUDIO.is_file() else None)
    if path is None:
        from tests.helpers import speechlike

        x = np.concatenate([np.zeros(SR16 // 2, np.float32), speechlike(args.seconds - 0.5, seed=3)])
        return x[: int(args.seconds * SR16)], "synthetic speech (tests.helpers.speechlike)"
    from engine.core.audio import load_audio

    start = (
        args.audio_start if args.audio_start is not None else (DEFAULT_AUDIO_START if not args.audio else 0)
    )
    x = load_audio(path)[int(start * SR16) :][: int(args.seconds * SR16)]
    if x.size < args.seconds * SR16 - 1:
        print(f"note: {path.name} gives only {x.size / SR16:.2f} s from {start} s", file=sys.stderr)
    return x.astype(np.float32), f"{path.name} from {start:g} s"


def git_state() -> dict:
    """The commit measured, and the tracked files that differ from it (the working tree is measured)."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=False)
        return r.stdout.strip()

    changed = git("diff", "--name-only", "HEAD").splitlines()
    return {"git_commit": git("rev-parse", "--short", "HEAD") or None, "git_modified": changed}


def worker_snapshot(server) -> dict | None:
    """Counters of the model worker the sessions share, where the server has one."""
    worker = getattr(server.engine, "_worker", None)
    return worker.stats.snapshot() if worker is not None and hasattr(worker, "stats") else None


def torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def clock_offset() -> float:
    """time.time() - time.perf_counter() (median of a few readings)."""
    return float(np.median([time.time() - time.perf_counter() for _ in range(9)]))


async def until(predicate, timeout: float, step: float = 0.02) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(step)

    await asyncio.wait_for(loop(), timeout)


async def wait_idle(max_load: float, max_wait: float) -> dict:
    """Wait (up to ``max_wait`` s) until the 1-minute load average is below ``max_load``."""
    t0 = time.perf_counter()
    first = os.getloadavg()[0]
    while os.getloadavg()[0] >= max_load and time.perf_counter() - t0 < max_wait:
        await asyncio.sleep(2.0)
    load = os.getloadavg()[0]
    return {
        "load_at_check": round(first, 2),
        "load_after_wait": round(load, 2),
        "idle": load < max_load,
        "waited_s": round(time.perf_counter() - t0, 1),
    }


# ---------------------------------------------------------------------------------------------
# the server and its instrumentation
# ---------------------------------------------------------------------------------------------


def build_app(opts):
    """The aiohttp app for these options (models loaded, default avatar not yet prepared)."""
    from engine.live.session import LiveConfig
    from streaming.server import AvatarLibrary, ModelEngine, ServerConfig, create_app
    from streaming.session import StreamConfig

    avatar = Path(opts.avatar)
    cfg = ServerConfig(
        avatars=() if avatar.resolve() == DEFAULT_AVATAR.resolve() else (str(avatar),),
        refs=opts.refs,
        cache_dir=opts.cache,
        landmark_checkpoint=opts.landmark_checkpoint,
        renderer_checkpoint=opts.renderer_checkpoint,
        random_weights=opts.weights == "standin",
        # only the weights asked for: an empty folder instead of checkpoints/ unless paths are given
        checkpoint_dir=str(Path(opts.cache) / "no-checkpoints"),
        renderer=opts.renderer,
        device=opts.device,
        backend=opts.backend,
        precision=opts.precision,
        max_sessions=max(4, opts.sessions),
        loopback=True,
        connect_timeout_s=LIMIT_S,
        stream=StreamConfig(delay_ms=opts.delay_ms, live=LiveConfig(batch=opts.batch)),
    )
    if opts.renderer == "none":  # passthrough: no model loaded at all
        engine = ModelEngine(device=opts.device)
    else:
        engine = ModelEngine.from_config(cfg)
        want = {"neural": "neural", "retrieval": "preview"}.get(opts.renderer, engine.mode)
        if engine.mode != want:
            raise SystemExit(f"the server chose mode {engine.mode}, not {want} (see the log)")
    return create_app(cfg, engine=engine, library=AvatarLibrary.from_config(cfg))


class Probe:
    """Records what a session's video track shows at each output frame, and the per-stage
    latencies the server itself computes for each session frame it sends (wrappers installed on the
    session object before its tracks start)."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.out: dict[int, tuple[float, int | None, str]] = {}  # i -> (perf time, p, kind)
        self.frames: dict[int, dict] = {}  # p -> {"speech": bool, stage: seconds, ...}
        video = stream.video
        recv = video.recv

        async def timed_recv():
            fresh, late = video.fresh, video.late
            frame = await recv()
            kind = "fresh" if video.fresh > fresh else "late" if video.late > late else "idle"
            i = int(frame.pts)
            p = video.last_shown if kind == "fresh" else stream.playout.session_frame(i)
            self.out[i] = (stream.playout.clock(), p, kind)
            return frame

        def on_frame(rec: dict) -> None:  # each frame's stages, once it is on the wire
            self.frames[rec["index"]] = {k: v for k, v in rec.items() if k != "index"}

        video.recv = timed_recv
        stream.on_frame = on_frame


# ---------------------------------------------------------------------------------------------
# the clients (a child process)
# ---------------------------------------------------------------------------------------------


def client_record(client) -> dict:
    """What a closed :class:`streaming.client.RtcClient` recorded, as plain data."""
    return {
        "session": client.session,
        "video": [(int(f.pts), f.arrival) for f in client.video],
        "audio": [(int(a.pts), a.arrival, a.data) for a in client.audio],
        "sent_audio": list(client.sent_audio),
        "reports": {k: list(c.reports) for k, c in client.clocks.items()},
        # aiortc's receivers give pts = RTP timestamp - the first one received (the "origin")
        "origin": {k: r._RTCRtpReceiver__timestamp_mapper._origin for k, r in client._receivers.items()},
    }


def client_process(conn, url: str, wav: str, n: int) -> None:
    """Child process: ``n`` clients play ``wav``; they close on "stop" and send their records."""
    from streaming.ice import loopback_ice

    with loopback_ice():  # 127.0.0.1 candidates only, as the server (ServerConfig.loopback)
        asyncio.run(_clients(conn, url, wav, n))


async def _clients(conn, url: str, wav: str, n: int) -> None:
    from streaming.client import RtcClient

    clients = []
    try:
        cpu0, t0 = time.process_time(), time.perf_counter()
        starts = [RtcClient(url, audio_path=wav, keep_video=False).start() for _ in range(n)]
        clients = list(await asyncio.gather(*starts))
        conn.send(("started", [c.session for c in clients]))
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        for c in clients:
            await c.close()
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - t0)
        conn.send(("records", [client_record(c) for c in clients], cpu))
    except BaseException:  # noqa: BLE001 - reported to the parent, which would otherwise wait
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        conn.send(("error", traceback.format_exc()))


async def receive(conn, timeout: float):
    """The next message from the clients' process (its error raised here)."""
    ready = await asyncio.get_running_loop().run_in_executor(None, conn.poll, timeout)
    if not ready:
        raise TimeoutError(f"no message from the clients' process in {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"the clients failed:\n{msg[1]}")
    return msg


class Record:
    """A client's record (:func:`client_record`) with :class:`RtcClient`'s timing methods."""

    def __init__(self, d: dict) -> None:
        from streaming.client import SenderClock

        self.session = d["session"]
        self.video = [argparse.Namespace(pts=p, arrival=t) for p, t in d["video"]]
        self.audio = [argparse.Namespace(pts=p, arrival=t, data=x) for p, t, x in d["audio"]]
        self.sent_audio = d["sent_audio"]
        self.origin = d["origin"]
        self.reports = d["reports"]
        self.clocks = {}
        for kind, rate in (("video", 90000), ("audio", 48000)):
            self.clocks[kind] = SenderClock(rate)
            self.clocks[kind].reports = [tuple(r) for r in d["reports"][kind]]

    def send_time(self, kind: str, pts: int) -> float:
        """When the server sent the received frame with ``pts`` (as ``RtcClient.send_time``)."""
        return self.clocks[kind].time_of((int(pts) + self.origin[kind]) % (1 << 32))

    def received_audio(self) -> tuple[np.ndarray, float]:
        """The received audio (48 kHz, placed by RTP timestamps) and the send time of its first sample."""
        if not self.audio:
            return np.zeros(0, np.float32), float("nan")
        base = self.audio[0].pts
        out = np.zeros(max((a.pts - base) % (1 << 32) + a.data.size for a in self.audio), np.float32)
        for a in self.audio:
            s = (a.pts - base) % (1 << 32)
            out[s : s + a.data.size] = a.data
        return out, self.send_time("audio", base)


# ---------------------------------------------------------------------------------------------
# one run of clients
# ---------------------------------------------------------------------------------------------


def install_probes(server) -> dict:
    """A :class:`Probe` on every session the server makes from now on (before its tracks start)."""
    probes: dict[str, Probe] = {}
    new_session = server.new_session

    async def probed(*args, **kwargs):
        hosted = await new_session(*args, **kwargs)
        probes[hosted.stream.id] = Probe(hosted.stream)
        return hosted

    server.new_session = probed
    return probes


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


async def settle(hosted, probe: Probe, seconds: float) -> ClipMap:
    """Wait until a session has had its whole input and sent the frames of it; its segments."""
    stream = hosted.stream
    live = stream.live
    await until(lambda: live.first_audio_time is not None, LIMIT_S)
    await until(lambda: time.perf_counter() - live.first_audio_time > seconds, seconds + LIMIT_S)

    def all_in() -> bool:
        """The session closed its last segment (the watchdog: aiortc's jitter buffer keeps the last
        few packets of a stream that stops, so END never comes)."""
        pushed16 = sum(sink.samples for sink in hosted.sinks) // 3
        segs = live.segments
        return bool(segs) and sum(n for *_, n in segs) >= pushed16 - SAMPLES_PER_FRAME

    await until(all_in, LIMIT_S)
    await asyncio.sleep(0.4)  # a straggling packet would start a segment: wait for its close
    await until(all_in, LIMIT_S)
    clip = ClipMap(live.segments)
    last = clip.segments[-1][1]
    pl = stream.playout
    await until(
        lambda: pl.anchor is not None and probe.out and max(probe.out) >= pl.anchor + last + 2, LIMIT_S
    )
    return clip


async def run_clients(url, server, probes, wav: Path, x16: np.ndarray, n: int, offset: float):
    """``n`` clients (a child process) play ``wav``; per session (record, probe, stats, anchor, clip)."""
    ctx = mp.get_context("spawn")
    conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=client_process, args=(child_conn, url, str(wav), n), daemon=True)
    proc.start()
    try:
        _, ids = await receive(conn, LIMIT_S)
        hosted = [server.sessions[sid] for sid in ids]
        seconds = x16.size / SR16
        clips = await asyncio.gather(*(settle(h, probes[h.stream.id], seconds) for h in hosted))
        await asyncio.sleep(0.3)  # the last frames' delivery over loopback
        snaps = [(h.stream.stats(), h.stream.playout.anchor) for h in hosted]
        conn.send("stop")
        _, records, client_cpu = await receive(conn, LIMIT_S)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, proc.join, 10.0)
        if proc.is_alive():
            proc.kill()
    by_id = {r["session"]: Record(r) for r in records}
    out = [(by_id[sid], probes[sid], st, a, c) for sid, (st, a), c in zip(ids, snaps, clips, strict=True)]
    return out, client_cpu


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
        "client_e2e_send_ms": pct(e2e_send),
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


# ---------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------


async def measure(opts, x16: np.ndarray, wav: Path, warm_wav: Path | None) -> dict:
    from streaming.server import SERVER, serve_app

    load = await wait_idle(opts.max_load, opts.idle_wait)  # before this run's own work
    t_load = time.perf_counter()
    app = build_app(opts)
    server = app[SERVER]
    probes = install_probes(server)
    cuda = opts.device.startswith("cuda")
    async with serve_app(app) as url:
        setup_s = time.perf_counter() - t_load  # models loaded (and warmed up), default avatar prepared
        if warm_wav is not None:  # first connection, codecs, first model calls (not measured)
            x_warm = x16[: int(opts.warmup * SR16)]
            await run_clients(url, server, probes, warm_wav, x_warm, 1, clock_offset())
            await until(lambda: not server.sessions, LIMIT_S)
        load["load_at_start"] = round(os.getloadavg()[0], 2)  # after setup and warm-up
        if cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        worker_before = worker_snapshot(server)
        offset = clock_offset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        done, client_cpu = await run_clients(url, server, probes, wav, x16, opts.sessions, offset)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        load["load_after"] = round(os.getloadavg()[0], 2)
        gpu_mb = None
        if cuda:
            import torch

            gpu_mb = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        await until(lambda: not server.sessions, LIMIT_S)
        mode, device = server.engine.mode, server.engine.device
        worker_stats = {"before_run": worker_before, "after_run": worker_snapshot(server)}
    sessions = [analyse(*d, x16, offset) for d in done]
    r = summarise(opts, sessions, wall, cpu, load, gpu_mb, setup_s, mode, device)
    r["machine"]["client_cpu_percent"] = round(100 * client_cpu, 1)
    r["model_worker"] = worker_stats if worker_stats["after_run"] else None
    return r


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
        "client_e2e_send": pct(pooled("client_e2e_send")),
        "client_e2e_arrival": pct(pooled("client_e2e_arrival")),
        "uplink": pct(pooled("uplink")),
        **{s: pct(pooled("stages", s)) for s in STAGES},
        "wire": pct(pooled("wire")),
    }
    speech = {"client_e2e_send": pct(pooled("client_e2e_send_speech"))}
    speech.update({s: pct(pooled("stages_speech", s)) for s in STAGES})
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


# ---------------------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------------------


def _p(d: dict | None, keys=("p50", "p95", "p99", "max")) -> str:
    return " / ".join(f"{d[k]:.0f}" for k in keys) if d else "-"


def markdown(meta: dict, runs: list[dict]) -> list[str]:
    lines = [
        f"Live mouth-to-frame latency over WebRTC (loopback) — {meta['device']}, torch {meta['torch']}, "
        f"aiortc {meta['aiortc']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        f"(microphone: {meta['audio']}, {meta['seconds']:g} s per session; avatar {meta['avatar']}; "
        "server in this process, the clients in a child process)",
        f"Working tree of commit {meta['git_commit']}"
        + (f" with changes to {', '.join(meta['git_modified'])}" if meta["git_modified"] else "")
        + ".",
        "",
        "Latencies in ms as p50 / p95 / p99 / max. *client e2e*: server send time of the video frame "
        "(RTCP sender reports) minus the client's send time of the audio frame holding the first "
        "sample of that session frame, over frames showing a fresh session frame of the speech clip "
        "(every frame is placed through the latest sender report, so its spread is the microphone's "
        "pacing); *arrival*: to the decoded frame at the client instead. "
        "*server total*: the server's own audio arrival -> frame on the wire (the sum of its stages: "
        "ingest, mel, window_wait, queue, transformer, sketch, renderer, composite, hold, encode, "
        "send), same frames. A/V: video minus "
        "returned audio of the same input sample (cross-correlation), + = video late. *audio e2e*: "
        "returned audio's send time minus the client's send time of the same input sample. *late*: "
        "frames of the clip that repeated the previous image (not ready in time). Load: the 1-minute "
        "load average when the run started (busy: it stayed above the idle threshold).",
        "",
        "| run | delay / budget | client e2e | client e2e (arrival) | server total | fps | "
        "shed (rate) | late | A/V ms | audio e2e ms | CPU % server / clients | load |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        st, lat, m = r["settings"], r["latency_ms"], r["machine"]
        rate = f"{r['session_frames']['dropped']} ({100 * r['drop_rate']:.0f} %)" if r["drop_rate"] else "0"
        lines.append(
            f"| {r['name']} | {st['delay_ms']:.0f} / {st['budget_ms']:.0f} | {_p(lat['client_e2e_send'])} | "
            f"{_p(lat['client_e2e_arrival'])} | {_p(lat['total'])} | {r['received_fps']['mean']:.2f} | "
            f"{rate} | {r['shown']['late_in_clip']} | {r['av_offset_ms']} | {r['audio_e2e_ms']} | "
            f"{m['cpu_percent']:.0f} / {m['client_cpu_percent']:.0f} | "
            f"{m['load_after_wait']:.2f}{'' if m['idle'] else ' (busy)'} |"
        )
    for r in runs:
        st = r["settings"]
        desc = f"mode {st['mode']} on {st['device']}"
        if st["mode"] == "neural":
            desc += f", weights {st['weights']}, backend {st['backend']} {st['precision']}, refs {st['refs']}"
        elif st["mode"] == "preview":
            desc += f" (the retrieval renderer), weights {st['weights']}, refs {st['refs']}"
        desc += f", batch {st['batch']}, {st['sessions']} session(s)"
        sf, v, m, sh = r["session_frames"], r["video"], r["machine"], r["shown"]
        gpu = f", peak GPU memory {m['gpu_max_mem_mb']} MiB" if m["gpu_max_mem_mb"] else ""
        model = [d for d in r["model_ms"] if d]
        calls = ""
        if model:
            mean = sum(d["mean"] for d in model) / len(model)
            calls = f" Model calls took {mean:.0f} ms on average (max {max(d['max'] for d in model):.0f} ms)."
        w = r.get("model_worker")
        if w and w["before_run"] and all(k in w["after_run"] for k in ("calls", "windows")):
            n_calls = w["after_run"]["calls"] - w["before_run"]["calls"]
            n_win = w["after_run"]["windows"] - w["before_run"]["windows"]
            calls += f" The shared model worker made {n_calls} calls ({n_win} windows) in the run."
        lines += [
            "",
            f"### {r['name']}",
            "",
            f"{desc}. Session frames: {sf['frames']} ({sf['speech_frames']} rendered, "
            f"{sf['rest_frames']} rest, {sf['dropped']} shed by the latency budget), "
            f"{sf['model_calls']} model calls. Video sent {v['sent']}: {v['fresh']} fresh, "
            f"{v['late']} late (repeated), {v['idle']} idle, {v['skipped']} skipped; of the "
            f"{sh['clip_frames']} frames of the clip {sh['fresh_in_clip']} were shown fresh, "
            f"{sh['late_in_clip']} late ({sh['late_before_frame_0']} more late frames came before session "
            f"frame 0, {sh['late_other']} in gaps or after the clip); {sh['segments']} segment(s). Received "
            f"{r['received_fps']['mean']:.2f} fps (min {r['received_fps']['min']:.2f}). CPU "
            f"{m['cpu_percent']:.0f} % of one core (the server process; the clients' process "
            f"{m['client_cpu_percent']:.0f} %) over {r['wall_s']} s{gpu}.{calls}",
            "",
            "| stage | p50 | p95 | p99 | max | n |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        rows = [("client e2e (send)", r["latency_ms"]["client_e2e_send"])]
        rows.append(("client e2e (arrival)", r["latency_ms"]["client_e2e_arrival"]))
        rows.append(("uplink: client mic -> server push", r["latency_ms"]["uplink"]))
        rows += [(f"server {s}", r["latency_ms"][s]) for s in STAGES]
        rows.append(("wire: server total end -> RTCP send time", r["latency_ms"]["wire"]))
        rf = r["latency_ms_rendered_frames"]
        if rf and rf["client_e2e_send"]:  # frames with a rendered face were shown
            rows += [("rendered frames: client e2e", rf["client_e2e_send"])]
            rows += [(f"rendered frames: {s}", rf[s]) for s in ("queue", *MODEL_STAGES, "total")]
        for name, d in rows:
            cells = (
                [f"{d[k]:.1f}" for k in ("p50", "p95", "p99", "max")] + [str(d["n"])]
                if d
                else ["-"] * 4 + ["0"]
            )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if meta["device_arg"].startswith("cuda"):
        return lines
    lines += [
        "",
        "GPU runs (not measured here: no GPU on this machine), e.g.:",
        "",
        "    .venv/bin/python benchmarks/live_latency.py --device cuda --weights standin --refs 5 \\",
        "        --sessions 8 --backend cuda-graph --precision fp16",
        "    .venv/bin/python benchmarks/live_latency.py --suite gpu   # passthrough x8, stand-in x1 and x8",
    ]
    return lines


def print_table(name: str, r: dict) -> None:
    lat = r["latency_ms"]
    print(
        f"\n== {name}: fps {r['received_fps']['mean']}, shed {r['session_frames']['dropped']} "
        f"(rate {r['drop_rate']}), late {r['shown']['late_in_clip']} in clip, A/V {r['av_offset_ms']} ms, "
        f"CPU {r['machine']['cpu_percent']} %, load {r['machine']['load_after_wait']}"
    )
    print(f"{'stage':<22}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'n':>6}")
    for k in ("client_e2e_send", "client_e2e_arrival", "uplink", *STAGES, "wire"):
        d = lat[k]
        if d:
            print(f"{k:<22}{d['p50']:>8.1f}{d['p95']:>8.1f}{d['p99']:>8.1f}{d['max']:>8.1f}{d['n']:>6}")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=sorted(SUITES), help="run a named sequence of configurations")
    ap.add_argument(
        "--weights",
        choices=("none", "standin", "paths"),
        default=None,
        help="none: passthrough (default); standin: stand-in weights; paths: the checkpoints below",
    )
    ap.add_argument(
        "--renderer",
        choices=("auto", "neural", "retrieval", "none"),
        help="the server's renderer (default: neural with weights, none without: passthrough)",
    )
    ap.add_argument("--landmark-checkpoint", metavar="P")
    ap.add_argument("--renderer-checkpoint", metavar="P")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default cpu; cuda for --suite gpu)")
    ap.add_argument("--backend", default="fast", choices=("fast", "plain", "cuda-graph", "onnx"))
    ap.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    ap.add_argument(
        "--refs", type=int, default=None, help="renderer references (default 1 on CPU, 5 on CUDA)"
    )
    ap.add_argument("--batch", type=int, default=2, help="max windows per model call (default 2)")
    ap.add_argument("--delay-ms", type=float, default=400.0)
    ap.add_argument("--sessions", type=int, default=1, help="concurrent clients")
    ap.add_argument("--seconds", type=float, default=10.0, help="microphone audio per session")
    ap.add_argument(
        "--audio", help=f"speech file (default {DEFAULT_AUDIO.name} from ../shared/media, else synthetic)"
    )
    ap.add_argument(
        "--audio-start",
        type=float,
        default=None,
        help=f"seconds skipped from the file's start (default {DEFAULT_AUDIO_START} for the default clip)",
    )
    ap.add_argument("--avatar", default=str(DEFAULT_AVATAR))
    ap.add_argument("--cache", default=None, help="avatar cache folder (default: a temporary one)")
    ap.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of an unmeasured first session (0: none)"
    )
    ap.add_argument("--max-load", type=float, default=0.8, help="idle: 1-minute load average below this")
    ap.add_argument("--idle-wait", type=float, default=180.0, help="wait at most this long for idle (s)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--out-name", help="result file stem (default live_latency_<device or suite>)")
    args = ap.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if args.suite == "gpu" else "cpu"
    if args.weights is None:
        args.weights = "paths" if args.landmark_checkpoint or args.renderer_checkpoint else "none"
    if args.renderer == "neural" and args.weights == "none":
        ap.error("--renderer neural needs weights: --weights standin or the checkpoints")
    if args.weights == "paths" and not (args.landmark_checkpoint and args.renderer_checkpoint):
        ap.error("--weights paths needs --landmark-checkpoint and --renderer-checkpoint")
    if args.seconds < 3:
        ap.error("--seconds must be at least 3")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    device_kind = args.device.split(":")[0]
    if device_kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    plan = [(n, o) for n, o in SUITES[args.suite]] if args.suite else [("run", {})]
    x16, audio_desc = input_audio(args)
    import aiortc

    meta = run_meta(  # before the server sets torch's thread count (each run records its own)
        "live_latency.py",
        args.device,
        aiortc=aiortc.__version__,
        audio=audio_desc,
        seconds=args.seconds,
        avatar=Path(args.avatar).name,
        cpu_count=os.cpu_count(),
        device_arg=args.device,
        **git_state(),
    )
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cache is None:
            args.cache = str(tmp / "avatars")
        wav = tmp / "mic.wav"
        write_wav16(wav, x16)
        warm = None
        if args.warmup > 0:
            warm = tmp / "warm.wav"
            write_wav16(warm, x16[: int(args.warmup * SR16)])
        for name, over in plan:
            opts = argparse.Namespace(**{**vars(args), **over})
            if opts.refs is None:
                opts.refs = 5 if device_kind == "cuda" else 1
            if opts.renderer is None:
                opts.renderer = "none" if opts.weights == "none" else "neural"
            if name == "run":
                name = f"{opts.weights} weights, renderer {opts.renderer}, {opts.sessions} session(s)"
            print(f"[{name}] {', '.join(f'{k}={v}' for k, v in over.items())}", flush=True)
            r = asyncio.run(measure(opts, x16, wav, warm))
            r["name"] = name
            runs.append(r)
            print_table(name, r)
    stem = args.out_name or f"live_latency_{args.suite if args.suite else device_kind}"
    write_results(args.out, stem, {"meta": meta, "runs": runs}, markdown(meta, runs))


if __name__ == "__main__":
    main()
