"""CPU and memory per viewer of one live session (issue 14, "Broadcast").

A server (``mouthpiece serve``, loopback ICE, the bundled portrait) runs in a child process so its CPU
time and memory are its own. One presenter session (:class:`streaming.client.RtcClient` on ``/offer``,
a speech-like WAV as its microphone; its peer is a viewer too) is joined by WHEP viewers
(:class:`WhepViewer`: aiortc peers that ``POST /whep/{session}``) one step at a time: 0, 1, 2, ...
``--viewers``. At each step, after ``--settle`` seconds, the server's CPU (% of one core, from
``/proc/PID/stat``), its RSS and every viewer's frame rate (decoded frames' arrivals) are measured over
``--seconds``. A second part times what one more viewer costs the server in isolation, on one thread:
copying the shared yuv420p frame into a frame of its own, aiortc's VP8 encoder on it, and aiortc's Opus
encoder on 20 ms of audio, at 25 and 50 frames per second of wall time. A third part (``--sessions K
...``) measures sessions x viewers: 1, 2, ... sessions (each a presenter on ``/offer``), the server's RSS
with K sessions and no WHEP viewers (memory per session), then WHEP viewers added to every session one
round at a time until a peer's frame rate drops below 24.5 fps (the most viewers per session this CPU
holds at 25 fps, for each session count).

Run: ``python benchmarks/viewers.py --viewers 6 --seconds 10`` and ``python benchmarks/viewers.py
--viewers 4 --seconds 6 --settle 2 --sessions 1 2 3 --sessions-only`` (the grid alone, the rest kept;
results:
benchmarks/results/viewers_cpu.md and .json; the decision they support: docs/live.md, "Viewers").
The pieces (:class:`ServerProcess`, :class:`WhepViewer`: benchmarks/viewers_pieces.py) are used by
tests/test_broadcast.py too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.viewers_pieces import ServerProcess, WhepViewer, free_port, speech_wav  # noqa: E402,F401

RESULTS = ROOT / "benchmarks" / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def encoder_costs(size: tuple[int, int] = (512, 512), seconds: float = 4.0) -> dict:
    """CPU ms per frame (thread time, one thread) of what one more viewer costs the server:
    the frame copy (:meth:`SharedVideo.frame`), aiortc's VP8 encoder, the audio frame copy and Opus."""
    import cv2
    from aiortc.codecs import get_encoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from streaming.broadcast import SharedAudio, SharedVideo
    from streaming.tracks import AUDIO_TIME_BASE, VIDEO_TIME_BASE

    h, w = size
    portrait = cv2.imread(str(ROOT / "assets" / "portrait.png"), cv2.IMREAD_COLOR)
    base = cv2.resize(portrait, (w, h))
    n_video = int(25 * seconds)
    rng = np.random.default_rng(0)
    images = []
    for _ in range(25):  # a moving mouth region: the encoder sees change every frame, as in speech
        img = base.copy()
        y0, x0 = int(h * 0.62), int(w * 0.38)
        img[y0 : y0 + h // 8, x0 : x0 + w // 4] = rng.integers(0, 255, (h // 8, w // 4, 3), np.uint8)
        images.append(img)
    shared = [SharedVideo.from_bgr(images[i % 25], i, VIDEO_TIME_BASE) for i in range(n_video)]
    vp8 = get_encoder(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    opus = get_encoder(
        RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111, channels=2)
    )
    t = np.arange(960 * 50 * int(seconds)) / 48000
    pcm = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    audio = [
        SharedAudio.from_pcm(pcm[k * 960 : (k + 1) * 960], k * 960, 48000, AUDIO_TIME_BASE)
        for k in range(50 * int(seconds))
    ]

    def clock(fn, items) -> float:
        t0 = time.thread_time()
        for it in items:
            fn(it)
        return (time.thread_time() - t0) / len(items) * 1e3

    copy_ms = clock(lambda s: s.frame(), shared)
    vp8_ms = clock(lambda s: vp8.encode(s.frame()), shared) - copy_ms
    audio_copy_ms = clock(lambda a: a.frame(), audio)
    opus_ms = clock(lambda a: opus.encode(a.frame()), audio) - audio_copy_ms
    convert_ms = clock(lambda img: SharedVideo.from_bgr(img, 0, VIDEO_TIME_BASE), images * 4)
    per_s = 25 * (copy_ms + vp8_ms) + 50 * (audio_copy_ms + opus_ms)
    return {
        "size": f"{w}x{h}",
        "video_copy_ms": round(copy_ms, 3),
        "vp8_encode_ms": round(vp8_ms, 3),
        "audio_copy_ms": round(audio_copy_ms, 4),
        "opus_encode_ms": round(opus_ms, 3),
        "bgr_to_yuv_once_ms": round(convert_ms, 3),
        "viewer_cpu_percent": round(per_s / 10.0, 1),  # ms per second -> % of one core
        "vp8_share": round(25 * vp8_ms / per_s, 3),
    }


# ---- part 1: a session with 0..N WHEP viewers --------------------------------------------------


async def measure(args) -> dict:
    from streaming.client import RtcClient
    from streaming.ice import loopback_ice

    work = Path(tempfile.mkdtemp(prefix="mouthpiece-viewers-"))
    wav = speech_wav(
        work / "speech.wav", args.settle * (args.viewers + 1) + args.seconds * (args.viewers + 1) + 30
    )
    steps = []
    with loopback_ice():
        async with ServerProcess(work, args.renderer, max(16, args.viewers)) as srv:
            rss_idle = srv.rss_mb()
            presenter = await RtcClient(srv.url, audio_path=str(wav), keep_video=False).start()
            await presenter.wait_video(25, 60.0)
            viewers: list[WhepViewer] = []
            try:
                for n in range(args.viewers + 1):
                    if n:
                        v = await WhepViewer(srv.url, presenter.session).start()
                        viewers.append(v)
                        await asyncio.wait_for(v.first_frame.wait(), 30.0)
                    await asyncio.sleep(args.settle)  # a benchmark's measuring window, not a synchronisation
                    c0, t0, m0 = srv.cpu_seconds(), time.monotonic(), len(presenter.video)
                    await asyncio.sleep(args.seconds)
                    c1, t1, m1 = srv.cpu_seconds(), time.monotonic(), len(presenter.video)
                    step = {
                        "whep_viewers": n,
                        "server_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
                        "server_rss_mb": round(srv.rss_mb(), 1),
                        "server_threads": srv.threads(),
                        "presenter_fps": round((m1 - m0) / (t1 - t0), 2),
                        "viewer_fps": [round(v.fps(t0, t1), 2) for v in viewers],
                    }
                    steps.append(step)
                    print(json.dumps(step), flush=True)
            finally:
                for v in viewers:
                    await v.close()
                await presenter.close()
    return summarize(steps, rss_idle)


def summarize(steps: list[dict], rss_idle: float) -> dict:
    """Per-viewer CPU and RSS: least squares over the steps that held 25 fps (>= 24 everywhere);
    where the cores (shared with the clients and other work) ran out, the server got less CPU than it
    needed, so those steps say nothing about its cost."""
    held = [s for s in steps if min([s["presenter_fps"], *s["viewer_fps"]]) >= 24.0] or steps[:1]
    for s in steps:
        s["held"] = s in held
    n = np.array([s["whep_viewers"] for s in held], float)
    cpu = np.array([s["server_cpu_percent"] for s in held], float)
    rss = np.array([s["server_rss_mb"] for s in held], float)
    fit = np.polyfit(n, cpu, 1) if n.size > 1 else (float("nan"), cpu[0])
    fit_rss = np.polyfit(n, rss, 1) if n.size > 1 else (float("nan"), rss[0])
    return {
        "steps": steps,
        "server_rss_idle_mb": round(rss_idle, 1),
        "cpu_per_viewer_percent": round(float(fit[0]), 1),
        "cpu_session_percent": round(float(fit[1]), 1),
        "rss_per_viewer_mb": round(float(fit_rss[0]), 1),
    }


# ---- part 3: sessions x viewers ----------------------------------------------------------------

HOLD_FPS = 24.5  # a step holds 25 fps when every peer's frame rate is at least this


async def measure_grid(args) -> dict:
    """Sessions x viewers: sessions are added one at a time (each a presenter on ``/offer``); with K
    sessions and no WHEP viewers the server's RSS and CPU are measured (memory per session), then
    viewers are added to every session one round at a time until a peer's frame rate drops below
    ``HOLD_FPS`` or ``--viewers`` per session is reached; the viewers then leave and the next session
    is added. Each step: ``--settle`` seconds, then a ``--seconds`` window; a step that falls short is
    measured once more (other work on shared cores comes in bursts) and stops the ramp only if that
    window falls short too."""
    from streaming.client import RtcClient
    from streaming.ice import loopback_ice

    counts = sorted(set(args.sessions))
    steps_total = sum(args.viewers + 1 for _ in counts)
    work = Path(tempfile.mkdtemp(prefix="mouthpiece-viewers-grid-"))
    wav = speech_wav(work / "speech.wav", 2 * (args.settle + args.seconds) * steps_total + 120.0)  # retries
    rows: list[dict] = []
    with loopback_ice():
        async with ServerProcess(work, args.renderer, max(16, args.viewers)) as srv:
            await asyncio.sleep(args.settle)  # a benchmark's measuring window, not a synchronisation
            rss_idle = srv.rss_mb()
            presenters: list = []
            try:
                for k in counts:
                    while len(presenters) < k:
                        p = await RtcClient(srv.url, audio_path=str(wav), keep_video=False).start()
                        presenters.append(p)
                        await p.wait_video(25, 60.0)
                    viewers: list[list[WhepViewer]] = [[] for _ in presenters]
                    try:
                        for v in range(args.viewers + 1):
                            if v:
                                for p, mine in zip(presenters, viewers, strict=True):
                                    mine.append(await WhepViewer(srv.url, p.session).start())
                                for mine in viewers:
                                    await asyncio.wait_for(mine[-1].first_frame.wait(), 30.0)
                            for attempt in range(2):  # a shortfall is measured once more (see above)
                                await asyncio.sleep(args.settle)
                                row = await window(srv, presenters, viewers, args.seconds)
                                row = {
                                    "sessions": k,
                                    "whep_viewers_per_session": v,
                                    **row,
                                    "attempt": attempt,
                                }
                                if row["held"]:
                                    break
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                            if not row["held"]:
                                break
                    finally:
                        for mine in viewers:
                            for w in mine:
                                await w.close()
            finally:
                for p in presenters:
                    await p.close()
    return summarize_grid(rows, rss_idle)


async def window(
    srv: ServerProcess, presenters: list, viewers: list[list[WhepViewer]], seconds: float
) -> dict:
    """The server's CPU and RSS and every peer's frame rate over one measuring window."""
    c0, t0 = srv.cpu_seconds(), time.monotonic()
    m0 = [len(p.video) for p in presenters]
    await asyncio.sleep(seconds)
    c1, t1 = srv.cpu_seconds(), time.monotonic()
    own = [(len(p.video) - m) / (t1 - t0) for p, m in zip(presenters, m0, strict=True)]
    fps = own + [w.fps(t0, t1) for mine in viewers for w in mine]
    return {
        "server_cpu_percent": round(100 * (c1 - c0) / (t1 - t0), 1),
        "server_rss_mb": round(srv.rss_mb(), 1),
        "server_threads": srv.threads(),
        "min_fps": round(min(fps), 2),
        "mean_fps": round(float(np.mean(fps)), 2),
        "held": min(fps) >= HOLD_FPS,
    }


def summarize_grid(rows: list[dict], rss_idle: float) -> dict:
    """Memory per session (least squares over K sessions without viewers, the idle server included),
    and per session count the most WHEP viewers per session at which every peer held 25 fps."""
    bare = [(0, rss_idle)] + [
        (r["sessions"], r["server_rss_mb"]) for r in rows if not r["whep_viewers_per_session"]
    ]
    k = np.array([b[0] for b in bare], float)
    rss = np.array([b[1] for b in bare], float)
    per_session = float(np.polyfit(k, rss, 1)[0]) if np.unique(k).size > 1 else float("nan")
    held: dict[int, int | None] = {}
    for r in rows:
        held.setdefault(r["sessions"], None)
        if r["held"]:
            held[r["sessions"]] = max(held[r["sessions"]] or 0, r["whep_viewers_per_session"])
    one = [r for r in rows if r["sessions"] == rows[0]["sessions"] and r["held"]]  # the first count's ramp
    n = np.array([r["whep_viewers_per_session"] for r in one], float)
    cpu_fit = np.polyfit(n, [r["server_cpu_percent"] for r in one], 1) if np.unique(n).size > 1 else [np.nan]
    rss_fit = np.polyfit(n, [r["server_rss_mb"] for r in one], 1) if np.unique(n).size > 1 else [np.nan]
    return {
        "rows": rows,
        "cpu_per_viewer_percent": round(float(cpu_fit[0]), 1),
        "rss_per_viewer_mb": round(float(rss_fit[0]), 1),
        "hold_fps": HOLD_FPS,
        "server_rss_idle_mb": round(rss_idle, 1),
        "rss_per_session_mb": round(per_session, 1),
        "held_viewers_per_session": {str(s): v for s, v in held.items()},
    }


def grid_md(meta: dict, grid: dict) -> list[str]:
    lines = [
        "## Sessions x viewers",
        "",
        f"- date: {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- load average at the end (1, 5, 15 min; other work on the cores): {meta['load_average_1_5_15']}",
        "",
        "Each session is a presenter on `/offer` (its own peer is a viewer too) plus N WHEP viewers; a "
        f"step holds 25 fps when every peer's frame rate is >= {grid['hold_fps']}. Viewers are added "
        "to every session one round at a time until a step does not hold (a step that falls short is "
        "measured once more, as other work on shared cores comes in bursts: it fails only if both windows "
        "do).",
        "",
        "| sessions | WHEP viewers per session | server CPU % (one core) | server RSS MB | threads "
        "| lowest fps | mean fps | held 25 fps |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in grid["rows"]:
        lines.append(
            f"| {r['sessions']} | {r['whep_viewers_per_session']} | {r['server_cpu_percent']} "
            f"| {r['server_rss_mb']} | {r['server_threads']} | {r['min_fps']} | {r['mean_fps']} "
            f"| {'yes' if r['held'] else 'no'} |"
        )
    last = {str(r["sessions"]): r for r in grid["rows"]}  # each session count's last step

    def most(s: str, v: int | None) -> str:
        if v is None:
            return "none"
        return f"at least {v} (the most tried)" if last[s]["held"] else str(v)

    held = ", ".join(
        f"{s} session{'s' * (s != '1')}: {most(s, v)}" for s, v in grid["held_viewers_per_session"].items()
    )
    lines += [
        "",
        f"**Memory per session: {grid['rss_per_session_mb']} MB RSS** (least squares over 0..K sessions "
        f"without WHEP viewers; idle server {grid['server_rss_idle_mb']} MB). Most WHEP viewers per "
        f'session held at 25 fps on this CPU: {held} ("none": not even the sessions alone held). '
        f"From the first session count's ramp (steps that held): {grid['cpu_per_viewer_percent']} % of one "
        f"core and {grid['rss_per_viewer_mb']} MB RSS per WHEP viewer. The clients (aiortc peers decoding "
        "every stream) run on the same cores, so what this CPU holds includes their decoding.",
        "",
    ]
    return lines


def report_md(meta: dict, loaded: dict, costs: dict, n20: dict, grid: dict | None = None) -> str:
    lines = [
        "# Viewers: CPU and memory per viewer of one session",
        "",
        f"- date: {meta['date']}",
        f"- device: {meta['device']}",
        f"- command: `{meta['command']}`",
        *([f"- summary recomputed: `{meta['summary']}`"] if meta.get("summary") else []),
        f"- load average at the end (1, 5, 15 min; other work on the cores): {meta['load_average_1_5_15']}",
        f"- renderer: {meta['renderer']}; avatar: the bundled portrait (512x512); loopback ICE; server in a "
        "child process (its own CPU and RSS), clients in the benchmark's process on the same cores",
        "",
        "## One session, 0..N WHEP viewers (the presenter's own /offer peer is a viewer too)",
        "",
        "| WHEP viewers | server CPU % (one core) | server RSS MB | threads | presenter fps | viewers' fps "
        "| held 25 fps |",
        "| ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for s in loaded["steps"]:
        fps = ", ".join(f"{x:.1f}" for x in s["viewer_fps"]) or "-"
        lines.append(
            f"| {s['whep_viewers']} | {s['server_cpu_percent']} | {s['server_rss_mb']} "
            f"| {s['server_threads']} | {s['presenter_fps']} | {fps} | {'yes' if s['held'] else 'no'} |"
        )
    lines += [
        "",
        "Least squares over the steps that held 25 fps: "
        f"**{loaded['cpu_per_viewer_percent']} % of one core per viewer**, "
        f"{loaded['cpu_session_percent']} % for the session with its own peer; "
        f"**{loaded['rss_per_viewer_mb']} MB RSS per viewer** "
        f"(idle server: {loaded['server_rss_idle_mb']} MB).",
        "",
        "## What one more viewer costs, in isolation (one thread)",
        "",
        "| per frame | ms |",
        "| --- | ---: |",
        f"| yuv420p frame copy (its own av.VideoFrame) | {costs['video_copy_ms']} |",
        f"| VP8 encode ({costs['size']}, aiortc's settings) | {costs['vp8_encode_ms']} |",
        f"| audio frame copy (20 ms) | {costs['audio_copy_ms']} |",
        f"| Opus encode (20 ms) | {costs['opus_encode_ms']} |",
        f"| BGR -> yuv420p, once per session frame (not per viewer) | {costs['bgr_to_yuv_once_ms']} |",
        "",
        f"One viewer: {costs['viewer_cpu_percent']} % of one core at 25 fps + 50 audio frames/s; the VP8 "
        f"encoder is {100 * costs['vp8_share']:.0f} % of it.",
        "",
        "## 20 viewers on one CPU",
        "",
        f"- a viewer costs {n20['per_viewer_percent']} % of one core end to end, of which "
        f"{n20['per_viewer_encoding_percent']} % is encoding (VP8 + Opus, isolated figure) and "
        f"{n20['per_viewer_rest_percent']} % the rest (RTP packets, SRTP, RTCP, the event loop)",
        f"- an encoder per viewer (this design): session + 20 x {n20['per_viewer_percent']} % = "
        f"**{n20['now_percent']} % of one core**",
        f"- one encoder per codec per session, packets shared: session + one viewer's encoding + "
        f"20 x {n20['per_viewer_rest_percent']} % = **{n20['shared_percent']} % of one core**",
        "",
    ]
    if grid:
        lines += grid_md(grid["meta"], grid)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", type=int, default=6, help="WHEP viewers at the last step (default 6)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring window per step (default 10)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds after a viewer joins before measuring")
    ap.add_argument("--renderer", default="preview", choices=("preview", "none"))
    ap.add_argument("--out", default=str(RESULTS / "viewers_cpu"), help="results path without suffix")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="recompute the summary and the .md from the measured steps in --out's .json (no new run)",
    )
    ap.add_argument(
        "--sessions",
        type=int,
        nargs="+",
        metavar="K",
        help="also measure sessions x viewers: K sessions (each count given), 0..--viewers WHEP viewers "
        "each, "
        "until a peer drops below 24.5 fps",
    )
    ap.add_argument(
        "--sessions-only",
        action="store_true",
        help="with --sessions: measure only sessions x viewers; the one-session part and the encoders are "
        "kept from --out's .json",
    )
    args = ap.parse_args(argv)
    if args.sessions_only and not args.sessions:
        ap.error("--sessions-only needs --sessions")
    if args.sessions and min(args.sessions) < 1:
        ap.error("--sessions: each count must be at least 1")
    out = Path(args.out)
    old = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else None
    grid = (old or {}).get("grid")
    if args.sessions_only and old is None:
        ap.error(f"--sessions-only: no earlier results at {out.with_suffix('.json')}")
    if args.sessions:
        grid = asyncio.run(measure_grid(args))
        grid["meta"] = machine_meta(args, argv)
    if args.sessions_only:
        meta, costs, loaded = old["meta"], old["encoders"], old["session"]
        n20 = old["twenty_viewers"]
        return write_results(out, meta, loaded, costs, n20, grid)
    if args.report_only:
        old = json.loads(out.with_suffix(".json").read_text())
        meta, costs = old["meta"], old["encoders"]
        meta["summary"] = "python benchmarks/viewers.py --report-only (the summary of the steps above, again)"
        loaded = summarize(old["session"]["steps"], old["session"]["server_rss_idle_mb"])
    else:
        costs = encoder_costs()
        print(json.dumps(costs), flush=True)
        loaded = asyncio.run(measure(args))
    session_only = loaded["cpu_session_percent"]
    per = loaded["cpu_per_viewer_percent"]
    enc = costs["viewer_cpu_percent"]  # encoding one viewer's streams (isolated, one thread)
    rest = round(max(0.0, per - enc), 1)  # the rest of a viewer's cost: RTP, SRTP, RTCP, the loop
    n20 = {
        "per_viewer_percent": per,
        "per_viewer_encoding_percent": enc,
        "per_viewer_rest_percent": rest,
        "now_percent": round(session_only + 20 * per, 0),  # an encoder per viewer (this design)
        "shared_percent": round(session_only + enc + 20 * rest, 0),  # one encoder per codec per session
    }
    if not args.report_only:
        meta = machine_meta(args, argv)
    return write_results(out, meta, loaded, costs, n20, grid)


def write_results(out: Path, meta: dict, loaded: dict, costs: dict, n20: dict, grid: dict | None) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "session": loaded, "encoders": costs, "twenty_viewers": n20}
    if grid:
        data["grid"] = grid
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    out.with_suffix(".md").write_text(report_md(meta, loaded, costs, n20, grid))
    print(out.with_suffix(".md").read_text())
    return 0


def machine_meta(args, argv) -> dict:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": f"{cpu}, {os.cpu_count()} cores ({platform.platform()})",
        "command": " ".join(
            ["python", "benchmarks/viewers.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "renderer": args.renderer,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the same cores
    }
    return meta


if __name__ == "__main__":
    raise SystemExit(main())
