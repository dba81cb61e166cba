"""``/metrics``: the server's state for Prometheus, through ``prometheus_client`` on a registry of
the server's own (:class:`ServerMetrics`; several servers in one process do not collide, and the
library's global registry is left alone). The Prometheus text format (0.0.4) by default, OpenMetrics
when the scraper asks for it (``Accept``), gzip when it accepts it, ``?name[]=`` to select series.

- **Counters** (``_total``; they never go backwards while the process lives, and are exact
  integers up to 2**53): sessions started, refused and ended; frames by kind, model calls, video
  frames sent and those late, each the ended sessions' totals (kept by the registry,
  :meth:`~streaming.registry.Server.close_session`) plus the running sessions' own counts; the
  shared model worker's batches, windows and busy seconds.
- **Histogram** ``mouthpiece_stage_latency_seconds{stage}``: every frame's stages (docs/latency.md),
  observed once per frame record (:meth:`ServerMetrics.observe_frame`, the sessions'
  ``frame_observers``), buckets from 5 ms to 2 s (:data:`BUCKETS_S`).
- **Gauges**: sessions running and the limit, viewers, the worker's recent windows per call, GPU
  memory (when PyTorch is loaded with CUDA; never imported here) and, per running session
  (label ``session``), its fps, viewers, shed windows, late frames and the delay in use;
  ``mouthpiece_delay_seconds{part}``: the automatic delay's parts (``lookahead``, ``compute``,
  ``encode``, ``jitter``, ``margin``) and ``total`` (the delay in use), each the largest over the
  sessions running with ``--delay-ms auto`` (none without one).
- The standard process and Python metrics (``process_*``: CPU seconds, resident and virtual memory,
  open files, start time; ``python_info``; ``python_gc_*``).

Collecting reads the server's state and changes nothing; it runs on the event loop, as the state
it reads does."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.aiohttp import make_aiohttp_handler
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from engine.live.messages import STAGES

if TYPE_CHECKING:
    from streaming.registry import Server

__all__ = ["BUCKETS_S", "COUNTS", "ServerMetrics", "session_counts"]

#: The stage-latency histogram's upper bounds (seconds): 5 ms to 2 s, finer where the stages are
#: (a few ms for ingest, mel, encode; 200 ms of look-ahead; the delay in total), then +Inf.
BUCKETS_S = (
    0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0,
)  # fmt: skip

FRAME_KINDS = ("speech", "rest", "dropped")
DELAY_PARTS = ("lookahead", "compute", "encode", "jitter", "margin", "total")  # mouthpiece_delay_seconds
#: A session's counts that add up across sessions into counters (:func:`session_counts`)
COUNTS = (*FRAME_KINDS, "model_calls", "video_sent", "video_late")


def session_counts(stream) -> dict[str, int]:
    """A :class:`~streaming.session.StreamSession`'s counts (:data:`COUNTS`), each of which only
    grows while the session lives."""
    live, video = stream.live.stats, stream.video
    return {
        "speech": live.speech_frames,
        "rest": live.rest_frames,
        "dropped": live.dropped,
        "model_calls": live.model_calls,
        "video_sent": video.sent,
        "video_late": video.late,
    }


def delay_parts(streams: Iterable) -> dict[tuple[str], float]:
    """The automatic delay's parts (seconds, labelled by :data:`DELAY_PARTS`), each the largest over
    ``streams`` that have one (the worst session is the one to watch); empty without any."""
    out: dict[tuple[str], float] = {}
    for s in streams:
        auto = getattr(s, "auto_delay", None)
        if auto is None:
            continue
        values = {k.removesuffix("_ms"): v / 1e3 for k, v in auto.parts().as_dict().items()}
        values["total"] = s.delay_ms / 1e3
        for part in DELAY_PARTS:
            out[(part,)] = max(out.get((part,), 0.0), values[part])
    return out


class ServerMetrics:
    """The metrics of one :class:`~streaming.registry.Server`: its own ``CollectorRegistry`` with
    the process, platform and GC collectors, the stage-latency histogram and the server's state
    (:class:`_ServerState`, read at each scrape). ``handler`` answers ``GET /metrics``."""

    def __init__(self, server: Server) -> None:
        # auto_describe: every collector's names are known at registration (a clash raises, and
        # ?name[]= finds them); the server's own state describes itself without being read
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ServerState(server))
        self.stage_latency = Histogram(
            "mouthpiece_stage_latency_seconds",
            "Per-stage latency of every frame sent (docs/latency.md), from all sessions since start.",
            ["stage"],
            buckets=BUCKETS_S,
            registry=self.registry,
        )
        # every stage's series exists from the start (at zero), so rate() has a first sample
        self._stages = [(s, self.stage_latency.labels(stage=s)) for s in STAGES]
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.handler = make_aiohttp_handler(self.registry)

    def observe_frame(self, record: Mapping) -> None:
        """One frame's record, the stages it has in seconds (one of :attr:`StreamSession.frame_observers`)."""
        for stage, hist in self._stages:
            seconds = record.get(stage)
            if seconds is not None:
                hist.observe(max(0.0, seconds))  # a negative one would take _sum back

    def text(self) -> str:
        """The Prometheus text format (0.0.4) of every metric now."""
        return generate_latest(self.registry).decode()


#: The server's own families: name -> (type, help, labels). Counters are named with ``_total``.
FAMILIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "mouthpiece_sessions_active": ("gauge", "Sessions running now.", ()),
    "mouthpiece_sessions_max": ("gauge", "Session limit (--max-sessions).", ()),
    "mouthpiece_sessions_started_total": ("counter", "Sessions started.", ()),
    "mouthpiece_sessions_rejected_total": ("counter", "Sessions refused (busy).", ()),
    "mouthpiece_sessions_ended_total": ("counter", "Sessions ended.", ()),
    "mouthpiece_viewers_active": ("gauge", "WHEP viewers now.", ()),
    "mouthpiece_frames_total": (
        "counter",
        "Session frames made, by kind (dropped: windows shed by the latency budget).",
        ("kind",),
    ),
    "mouthpiece_model_calls_total": ("counter", "Session model requests.", ()),
    "mouthpiece_video_frames_sent_total": ("counter", "Video frames sent.", ()),
    "mouthpiece_video_late_frames_total": (
        "counter",
        "Video frames not ready in time (the last image repeated, or the avatar at rest).",
        (),
    ),
    "mouthpiece_model_batches_total": ("counter", "Batched model calls.", ()),
    "mouthpiece_model_shared_batches_total": (
        "counter",
        "Model calls that served several sessions at once.",
        (),
    ),
    "mouthpiece_model_windows_total": ("counter", "Windows the model worker computed.", ()),
    "mouthpiece_model_busy_seconds_total": ("counter", "Seconds the model worker spent computing.", ()),
    "mouthpiece_model_batch_windows": ("gauge", "Mean windows per model call (recent calls).", ()),
    "mouthpiece_session_fps": ("gauge", "Video frames per second sent (last 2 s).", ("session",)),
    "mouthpiece_session_viewers": ("gauge", "WHEP viewers of this session.", ("session",)),
    "mouthpiece_session_dropped": (
        "gauge",
        "Windows shed by the latency budget in this session.",
        ("session",),
    ),
    "mouthpiece_session_late_frames": (
        "gauge",
        "Video frames of this session not ready in time.",
        ("session",),
    ),
    "mouthpiece_session_delay_seconds": (
        "gauge",
        "The playout delay in use in this session (audio in -> lips and audio out).",
        ("session",),
    ),
    "mouthpiece_delay_seconds": (
        "gauge",
        "The automatic delay's parts (lookahead, compute, encode, jitter, margin) and the delay in use"
        " (total): the largest over the sessions running with --delay-ms auto.",
        ("part",),
    ),
    "mouthpiece_gpu_memory_bytes": (
        "gauge",
        "GPU memory of this process (PyTorch's allocator: allocated tensors, reserved by the cache).",
        ("device", "kind"),
    ),
}


def _family(name: str, samples: Iterable[tuple[tuple[str, ...], float]] = ()) -> Metric:
    kind, help_, labels = FAMILIES[name]
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_, labels=labels)
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


class _ServerState(Collector):
    """The server's sessions, counters and model worker (:data:`FAMILIES`), read at each scrape."""

    def __init__(self, server: Server) -> None:
        self._server = server

    def describe(self) -> Iterable[Metric]:
        """The families, without reading anything (the registry's name check, ``?name[]=``)."""
        return [_family(name) for name in FAMILIES]

    def collect(self) -> Iterable[Metric]:
        srv = self._server
        hosted = list(srv.sessions.values())
        totals = dict(srv.closed_counts)
        for h in hosted:
            for k, v in session_counts(h.stream).items():
                totals[k] += v
        one = {
            "mouthpiece_sessions_active": len(hosted),
            "mouthpiece_sessions_max": srv.cfg.max_sessions,
            "mouthpiece_sessions_started_total": srv.started_total,
            "mouthpiece_sessions_rejected_total": srv.rejected_total,
            "mouthpiece_sessions_ended_total": srv.ended_total,
            "mouthpiece_viewers_active": sum(len(h.viewers) for h in hosted),
            "mouthpiece_model_calls_total": totals["model_calls"],
            "mouthpiece_video_frames_sent_total": totals["video_sent"],
            "mouthpiece_video_late_frames_total": totals["video_late"],
        }
        w = srv.engine.worker  # made at start-up, with the synthesizer
        if w is not None:
            ws = w.stats.snapshot()
            one["mouthpiece_model_batches_total"] = ws["calls"]
            one["mouthpiece_model_shared_batches_total"] = ws["shared_calls"]
            one["mouthpiece_model_windows_total"] = ws["windows"]
            one["mouthpiece_model_busy_seconds_total"] = ws["busy_s"]
            one["mouthpiece_model_batch_windows"] = ws["mean_windows_per_call"]
        for name, value in one.items():
            yield _family(name, [((), value)])
        yield _family("mouthpiece_frames_total", [((k,), totals[k]) for k in FRAME_KINDS])
        per_session = {
            "mouthpiece_session_fps": lambda h: h.stream.fps,
            "mouthpiece_session_viewers": lambda h: len(h.viewers),
            "mouthpiece_session_dropped": lambda h: h.stream.live.stats.dropped,
            "mouthpiece_session_late_frames": lambda h: h.stream.video.late,
            "mouthpiece_session_delay_seconds": lambda h: h.stream.delay_ms / 1e3,
        }
        for name, value in per_session.items():
            yield _family(name, [((h.stream.id,), value(h)) for h in hosted])
        yield _family("mouthpiece_delay_seconds", delay_parts(h.stream for h in hosted).items())
        torch = sys.modules.get("torch")  # the models' library, when loaded (never imported here)
        if torch is not None and torch.cuda.is_available():
            used = torch.cuda.is_initialized()
            yield _family(
                "mouthpiece_gpu_memory_bytes",
                [
                    ((str(d), kind), fn(d) if used else 0)
                    for d in range(torch.cuda.device_count())
                    for kind, fn in (
                        ("allocated", torch.cuda.memory_allocated),
                        ("reserved", torch.cuda.memory_reserved),
                    )
                ],
            )
