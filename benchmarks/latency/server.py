"""The server side of a ``benchmarks/live_latency.py`` run, in the benchmark's own process.

:func:`build_app` makes the aiohttp app for one run's options (``streaming.server.create_app`` with
the models asked for; ``--renderer none`` loads no model at all). :func:`install_probes` wraps the
server's ``new_session`` so that every session gets a :class:`Probe` before its tracks start: the
probe records, for each output frame index, when the video track made it and whether it showed a
fresh session frame (which one), repeated the last image (late) or was an idle rest frame, and the
server's own per-stage record of each session frame (``StreamSession.on_frame``). Also: the idle
check before a run (:func:`wait_idle`), the shared model worker's counters, the perf -> Unix clock
offset.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.latency.suites import DEFAULT_AVATAR, LIMIT_S


def worker_snapshot(server) -> dict | None:
    """Counters of the model worker the sessions share, where the server has one."""
    synth = getattr(server.engine, "_synth", None)  # read without making one (ModelEngine.worker would)
    worker = getattr(synth, "_worker", None)
    return worker.stats.snapshot() if worker is not None and hasattr(worker, "stats") else None


def torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    return sys.modules["torch"].get_num_threads()


def clock_offset() -> float:
    """time.time() - time.perf_counter() (median of a few readings)."""
    return float(np.median([time.time() - time.perf_counter() for _ in range(9)]))


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
        want = {"neural": "neural", "preview": "preview"}.get(opts.renderer, engine.mode)
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
        produce = video.produce  # what the session's broadcast reads (and recv) each output frame

        async def timed_produce():
            fresh, late = video.fresh, video.late
            frame = await produce()
            kind = "fresh" if video.fresh > fresh else "late" if video.late > late else "idle"
            i = int(frame.pts)
            p = video.last_shown if kind == "fresh" else stream.playout.session_frame(i)
            self.out[i] = (stream.playout.clock(), p, kind)
            return frame

        def on_frame(rec: dict) -> None:  # each frame's stages, once it is on the wire
            self.frames[rec["index"]] = {k: v for k, v in rec.items() if k != "index"}

        video.produce = timed_produce
        stream.on_frame = on_frame


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
