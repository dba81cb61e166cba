"""``/metrics``: the server's state in the Prometheus text exposition format (0.0.4)
(:func:`prometheus_text`): sessions (active, limit, started, refused), WHEP viewers, frames by
kind and model calls (ended sessions' counts plus the running ones'), the shared model worker's
batching, video frames sent, per-session fps / shed windows / late frames, process CPU time and
resident memory, GPU memory (when PyTorch is loaded with CUDA; never imported here) and per-stage
latency quantiles over the active sessions' recent frames. Read-only: it changes nothing."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from streaming.registry import Server
from streaming.session import STAGES

__all__ = ["prometheus_text"]


def _resident_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def prometheus_text(srv: Server) -> str:
    """The server's metrics in the Prometheus text exposition format (0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value:.6g}" if lab else f"{name} {value:.6g}")

    hosted = list(srv.sessions.values())
    metric("mouthpiece_sessions_active", "gauge", "Sessions running now.", [({}, len(hosted))])
    metric("mouthpiece_sessions_max", "gauge", "Session limit.", [({}, srv.cfg.max_sessions)])
    metric("mouthpiece_sessions_started_total", "counter", "Sessions started.", [({}, srv.started_total)])
    metric(
        "mouthpiece_sessions_rejected_total",
        "counter",
        "Sessions refused (busy).",
        [({}, srv.rejected_total)],
    )
    metric(
        "mouthpiece_viewers_active", "gauge", "WHEP viewers now.", [({}, sum(len(h.viewers) for h in hosted))]
    )
    totals = dict(srv.closed_counts)
    for h in hosted:
        st = h.stream.live.stats
        totals["speech"] += st.speech_frames
        totals["rest"] += st.rest_frames
        totals["dropped"] += st.dropped
        totals["model_calls"] += st.model_calls
        totals["video_sent"] += h.stream.video.sent
    metric(
        "mouthpiece_frames_total",
        "counter",
        "Session frames made, by kind (dropped: windows shed by the latency budget).",
        [({"kind": k}, totals[k]) for k in ("speech", "rest", "dropped")],
    )
    metric(
        "mouthpiece_model_calls_total", "counter", "Session model requests.", [({}, totals["model_calls"])]
    )
    w = srv.engine.worker
    if w is not None:
        ws = w.stats.snapshot()
        metric("mouthpiece_model_batches_total", "counter", "Batched model calls.", [({}, ws["calls"])])
        metric(
            "mouthpiece_model_shared_batches_total",
            "counter",
            "Model calls that served several sessions at once.",
            [({}, ws["shared_calls"])],
        )
        metric(
            "mouthpiece_model_batch_windows",
            "gauge",
            "Mean windows per model call (recent calls).",
            [({}, ws["mean_windows_per_call"])],
        )
    metric(
        "mouthpiece_video_frames_sent_total", "counter", "Video frames sent.", [({}, totals["video_sent"])]
    )
    metric(
        "mouthpiece_session_fps",
        "gauge",
        "Video frames per second sent (last 2 s).",
        [({"session": h.stream.id}, h.stream.fps) for h in hosted],
    )
    metric(
        "mouthpiece_session_dropped",
        "gauge",
        "Windows shed by the latency budget in this session.",
        [({"session": h.stream.id}, h.stream.live.stats.dropped) for h in hosted],
    )
    metric(
        "mouthpiece_session_late_frames",
        "gauge",
        "Video frames that repeated the last image because the model was late.",
        [({"session": h.stream.id}, h.stream.video.late) for h in hosted],
    )
    metric(
        "mouthpiece_process_cpu_seconds_total",
        "counter",
        "CPU time of the server process (user + system, all threads).",
        [({}, time.process_time())],
    )
    rss = _resident_bytes()
    if rss is not None:
        metric("mouthpiece_process_resident_memory_bytes", "gauge", "Resident memory.", [({}, rss)])
    torch = sys.modules.get("torch")  # the models' library, when loaded (never imported here)
    if torch is not None and torch.cuda.is_available():
        used = torch.cuda.is_initialized()
        metric(
            "mouthpiece_gpu_memory_bytes",
            "gauge",
            "GPU memory of this process (PyTorch's allocator: allocated tensors, reserved by the cache).",
            [
                ({"device": str(d), "kind": kind}, fn(d) if used else 0)
                for d in range(torch.cuda.device_count())
                for kind, fn in (
                    ("allocated", torch.cuda.memory_allocated),
                    ("reserved", torch.cuda.memory_reserved),
                )
            ],
        )
    name = "mouthpiece_stage_latency_seconds"
    lines.append(f"# HELP {name} Per-stage latency over the active sessions' recent frames.")
    lines.append(f"# TYPE {name} summary")
    for stage in STAGES:
        vals = [v for h in hosted for v in h.stream.latency[stage]]
        if not vals:
            continue
        arr = np.asarray(vals)
        for q in (0.5, 0.95, 0.99):
            lines.append(f'{name}{{stage="{stage}",quantile="{q}"}} {np.quantile(arr, q):.6g}')
        lines.append(f'{name}_sum{{stage="{stage}"}} {arr.sum():.6g}')
        lines.append(f'{name}_count{{stage="{stage}"}} {arr.size}')
    return "\n".join(lines) + "\n"
