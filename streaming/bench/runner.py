"""Running the benchmark: client sessions, loads, the local server and the whole run.

:func:`run_session`: one client session (:class:`streaming.client.RtcClient` with the test signal
as its microphone and FaceMesh on every received frame); every wait has a time limit.
:func:`run_load`: ``K`` concurrent sessions (``--load K``) with the server's process CPU (percent
of one core), resident memory and GPU memory sampled from ``/metrics`` every second while they run.
:func:`find_max` (``--find-max``) ramps the load K = 1, 2, ... and reports the largest K at which
every session receives at least ``min_fps`` and keeps its p95 mouth latency within the bound
(:func:`holds`). With ``--local`` the server is ``mouthpiece serve`` in a child process
(:func:`local_server`), so its figures are its own; on a small machine the clients still compete
with it for the cores. :func:`run_bench` runs a :class:`~streaming.bench.config.BenchConfig` and
returns a :class:`BenchReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streaming.bench.analysis import (
    FIGURES,
    STEADY_AFTER_S,
    SessionRecord,
    SessionResult,
    analyse,
    percentiles,
)
from streaming.bench.config import BenchConfig, LocalServer, SessionOptions
from streaming.bench.metrics import MetricsSampler, get_json
from streaming.bench.mouth import MouthMeter
from streaming.bench.signal import SignalTrack, TestSignal, make_signal
from streaming.config import TOKEN_ENV

__all__ = [
    "BenchReport",
    "LoadResult",
    "find_max",
    "holds",
    "local_server",
    "run_bench",
    "run_load",
    "run_session",
    "until",
]


async def until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll ``predicate`` (client state with no event of its own) within a time limit."""

    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(step)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}") from None


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
        token=opts.token,
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
    except (RuntimeError, OSError, TimeoutError) as e:
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
        with contextlib.suppress(ValueError):  # no frame of that stream came
            clock = client.stream_clock(kind)
            if clock:  # and its sender reports did
                record.clocks[kind] = clock
    if set(record.clocks) != {"video", "audio"}:
        record.error = "no RTCP sender reports were received"
    return record


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
    sampler = MetricsSampler(url, token=opts.token)
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
    n = (await get_json(f"{url}/healthz")).get("sessions")
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
    # a loopback server needs no token: the child does not take one from the environment either
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    proc = subprocess.Popen(local.command(port), stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"

    def tail() -> str:
        log.flush()
        return Path(log.name).read_bytes()[-3000:].decode("utf-8", "replace")

    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the local server exited with status {proc.returncode}:\n{tail()}")
            if (await get_json(f"{url}/healthz", timeout=2.0)).get("status") == "ok":
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
    token = None if local else cfg.token
    info = await get_json(f"{url}/api/info", token=token)
    signal = make_signal(cfg.signal)
    opts = SessionOptions(cfg.avatar, cfg.ice_servers, cfg.connect_timeout_s, token=token)
    report = BenchReport(
        url=url,
        local=local,
        info={
            k: info.get(k) for k in ("mode", "renderer", "device", "delay_ms", "max_sessions") if k in info
        },
        signal={**asdict(cfg.signal), "events": cfg.signal.events, "length_s": round(signal.seconds, 2)},
        runs=[],
        machine=_machine(),
        date=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if cfg.find_max:
        delay = info.get("delay_ms")
        fixed = float(delay) if isinstance(delay, (int, float)) and not isinstance(delay, bool) else 400.0
        report.bound_ms = cfg.bound_ms if cfg.bound_ms is not None else fixed + 200.0  # auto: as 400
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
