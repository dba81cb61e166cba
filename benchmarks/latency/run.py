"""One configuration of ``benchmarks/live_latency.py``: :func:`measure` waits for an idle machine,
starts the server (:func:`.server.build_app`, probes on its sessions), runs an unmeasured warm-up
client, then the measured clients (:func:`run_clients`: the child process of :mod:`.clients`), and
analyses each session (:mod:`.analysis`). :func:`settle` waits, per session, until its whole input
has arrived and the frames of it were sent; waits on server state poll with
:func:`tests.helpers.until`, each bounded by ``LIMIT_S`` beyond the audio's length.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

from benchmarks.latency.analysis import ClipMap, analyse, summarise
from benchmarks.latency.clients import Record, client_process, receive
from benchmarks.latency.server import (
    Probe,
    build_app,
    clock_offset,
    install_probes,
    wait_idle,
    worker_snapshot,
)
from benchmarks.latency.suites import LIMIT_S, SAMPLES_PER_FRAME, SR16
from tests.helpers import until


async def settle(hosted, probe: Probe, seconds: float) -> ClipMap:
    """Wait until a session has had its whole input and sent the frames of it; its segments."""
    stream = hosted.stream
    live = stream.live
    await until(lambda: live.first_audio_time is not None, "the first audio", LIMIT_S)
    await until(
        lambda: time.perf_counter() - live.first_audio_time > seconds, "the whole input", seconds + LIMIT_S
    )

    def all_in() -> bool:
        """The session closed its last segment (the watchdog: aiortc's jitter buffer keeps the last
        few packets of a stream that stops, so END never comes)."""
        pushed16 = sum(sink.samples for sink in hosted.sinks) // 3
        segs = live.segments
        return bool(segs) and sum(n for *_, n in segs) >= pushed16 - SAMPLES_PER_FRAME

    await until(all_in, "the last segment to close", LIMIT_S)
    await asyncio.sleep(0.4)  # a straggling packet would start a segment: wait for its close
    await until(all_in, "the last segment to close", LIMIT_S)
    clip = ClipMap(live.segments)
    last = clip.segments[-1][1]
    pl = stream.playout
    await until(
        lambda: pl.anchor is not None and probe.out and max(probe.out) >= pl.anchor + last + 2,
        "the frames of the input to be sent",
        LIMIT_S,
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


async def measure(opts, x16: np.ndarray, wav: Path, warm_wav: Path | None) -> dict:
    """One configuration (``opts``: the entry point's options with a suite's overrides) -> its run record."""
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
            await until(lambda: not server.sessions, "the sessions to close", LIMIT_S)
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
        await until(lambda: not server.sessions, "the sessions to close", LIMIT_S)
        mode, device = server.engine.mode, server.engine.device
        worker_stats = {"before_run": worker_before, "after_run": worker_snapshot(server)}
    sessions = [analyse(*d, x16, offset) for d in done]
    r = summarise(opts, sessions, wall, cpu, load, gpu_mb, setup_s, mode, device)
    r["machine"]["client_cpu_percent"] = round(100 * client_cpu, 1)
    r["model_worker"] = worker_stats if worker_stats["after_run"] else None
    return r
