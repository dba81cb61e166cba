"""Latency of a running server as a user sees and hears it (``mouthpiece bench latency``).

A real WebRTC client (:class:`streaming.client.RtcClient`, aiortc) sends a test signal as its
microphone and receives the avatar's video and the delayed audio, like a browser. The server is a
black box reached by its URL (or started in a child process with ``--local``); nothing is read from
it but what any client gets: the media, RTCP sender reports, the stats messages on the data
channel, ``/api/info``, ``/healthz`` and ``/metrics``. Per event of the signal it measures audio
in -> audio out, audio in -> the first frame whose mouth opens, and the A/V offset; per session the
received fps, drops and frame jitter; per run the server's CPU and memory; ``--find-max`` finds the
largest load that holds. The modules (each says what its figures mean):

- :mod:`~streaming.bench.config`: :class:`SignalConfig`, :class:`SessionOptions`,
  :class:`LocalServer`, :class:`BenchConfig` (what a run is given);
- :mod:`~streaming.bench.signal`: the click + speech-onset test signal and the microphone track;
- :mod:`~streaming.bench.mouth`: mouth openness of received frames (FaceMesh) and its onsets;
- :mod:`~streaming.bench.analysis`: the clocks and the per-event / per-session figures (:func:`analyse`);
- :mod:`~streaming.bench.metrics`: the server's ``/metrics`` sampled during a run;
- :mod:`~streaming.bench.runner`: sessions, loads, ``--find-max``, the ``--local`` child server,
  :func:`run_bench`;
- :mod:`~streaming.bench.report`: JSON, the terminal table and the PNG plot.

The RTP timestamp -> send time mapping is :class:`streaming.rtp_clock.RtpClock`, shared with the client.
"""

from __future__ import annotations

from streaming.bench.analysis import (
    FIGURES,
    SERVER_STAGES,
    EventResult,
    SessionRecord,
    SessionResult,
    analyse,
    find_clicks,
    percentiles,
)
from streaming.bench.config import BenchConfig, LocalServer, SessionOptions, SignalConfig
from streaming.bench.metrics import MetricsSampler, parse_metrics
from streaming.bench.mouth import MouthMeter, mouth_levels, mouth_onsets, mouth_openness, opening_frames
from streaming.bench.report import (
    LABELS,
    format_report,
    report_dict,
    require_matplotlib,
    write_json,
    write_plot,
)
from streaming.bench.runner import (
    BenchReport,
    LoadResult,
    find_max,
    holds,
    local_server,
    run_bench,
    run_load,
    run_session,
    until,
)
from streaming.bench.signal import PACKET, RATE, SignalTrack, TestSignal, make_signal
from streaming.rtp_clock import CLOCK_RATE, RtpClock

__all__ = [
    "CLOCK_RATE",
    "FIGURES",
    "LABELS",
    "PACKET",
    "RATE",
    "SERVER_STAGES",
    "BenchConfig",
    "BenchReport",
    "EventResult",
    "LoadResult",
    "LocalServer",
    "MetricsSampler",
    "MouthMeter",
    "RtpClock",
    "SessionOptions",
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
    "local_server",
    "make_signal",
    "mouth_levels",
    "mouth_onsets",
    "mouth_openness",
    "opening_frames",
    "parse_metrics",
    "percentiles",
    "report_dict",
    "require_matplotlib",
    "run_bench",
    "run_load",
    "run_session",
    "until",
    "write_json",
    "write_plot",
]
