"""The benchmark's output: the JSON report (:func:`report_dict`, :func:`write_json`: every figure of
every session, the plot's timelines left out), the terminal table (:func:`format_report`:
percentiles per figure and load, per-session stream figures, the server's stages and process
figures, the ``--find-max`` verdict) and the PNG plot (:func:`write_plot`: a timeline of the first
session and histograms over all sessions; needs matplotlib, :func:`require_matplotlib`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from streaming.bench.analysis import FIGURES, SERVER_STAGES, SessionResult
from streaming.bench.runner import BenchReport

__all__ = ["LABELS", "format_report", "report_dict", "require_matplotlib", "write_json", "write_plot"]

MATPLOTLIB_MISSING = "--plot needs matplotlib: pip install 'mouthpiece[bench]' (or pip install matplotlib)"

LABELS = {
    "audio_ms": "audio in -> out (send)",
    "audio_arrival_ms": "audio in -> out (arrival)",
    "mouth_ms": "audio in -> mouth (send)",
    "mouth_arrival_ms": "audio in -> mouth (arrival)",
    "av_offset_ms": "A/V offset (lips - sound)",
    "server_mouth_ms": "server share of mouth",
}


def report_dict(report: BenchReport) -> dict:
    """JSON-ready (the plot's timelines left out)."""

    def session(s: SessionResult) -> dict:
        d = asdict(s)
        d.pop("timeline", None)
        return d

    return {
        "tool": "mouthpiece bench latency",
        "date": report.date,
        "url": report.url,
        "local": report.local,
        "server": report.info,
        "machine": report.machine,
        "signal": report.signal,
        "find_max": None
        if report.max_load is None
        else {"max_load": report.max_load, "bound_ms": report.bound_ms, "min_fps": report.min_fps},
        "runs": [
            {
                "load": r.load,
                "holds": r.holds,
                "reason": r.reason,
                "min_fps": round(r.min_fps, 2),
                "summary": r.summary,
                "server": r.server,
                "sessions": [session(s) for s in r.sessions],
            }
            for r in report.runs
        ],
    }


def write_json(report: BenchReport, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report_dict(report), indent=2) + "\n")
    return p


def _row(label: str, d: dict | None) -> str:
    if not d:
        return f"  {label:<28} {'-':>7}"
    return (
        f"  {label:<28} " + " ".join(f"{d[k]:7.0f}" for k in ("p50", "p95", "p99", "max")) + f" {d['n']:5d}"
    )


def _delay_text(server: dict) -> str:
    """``; delay D ms (= look-ahead .. + margin ..)`` from a session's last stats, or ''."""
    d, parts = server.get("delay_ms"), server.get("delay_parts")
    if not isinstance(d, (int, float)):
        return ""
    text = f"; delay {d:.0f} ms"
    if isinstance(parts, dict):
        text += " (= " + " + ".join(f"{k.removesuffix('_ms')} {v:.0f}" for k, v in parts.items()) + ")"
    return text


def format_report(report: BenchReport) -> str:
    i = report.info
    server = (
        f"mode {i.get('mode', '?')} ({i.get('renderer') or 'no renderer'}) on {i.get('device', '?')}, "
        f"delay {i.get('delay_ms', '?')}{'' if i.get('delay_ms') == 'auto' else ' ms'}"
        if i
        else "no /api/info"
    )
    lines = [
        f"mouthpiece bench latency: {report.url}{' (local)' if report.local else ''}; {server}",
        f"signal: {report.signal['events']} events in {report.signal['length_s']} s per session",
    ]
    for r in report.runs:
        verdict = "" if r.holds is None else (" holds" if r.holds else f" does not hold: {r.reason}")
        lines.append(f"load {r.load} ({r.load} session{'s' if r.load > 1 else ''}){verdict}")
        lines.append(f"  {'ms':<28} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7} {'n':>5}")
        lines += [_row(LABELS[f], r.summary.get(f)) for f in FIGURES]
        for n, s in enumerate(r.sessions, 1):
            if s.error:
                lines.append(f"  session {n}: error: {s.error}")
                continue
            v, sv = s.video, s.server
            jit = (v.get("jitter_ms") or {}).get("p95")
            lines.append(
                f"  session {n}: {v['frames']} frames, {v['fps']:.2f} fps, "
                f"{v['dropped']} dropped (RTP gaps), "
                f"jitter p95 {jit if jit is not None else '-'} ms; uplink "
                f"{s.uplink_ms if s.uplink_ms is not None else '-'} ms; missed {s.missed}; server: "
                f"{sv.get('dropped_windows', '-')} windows shed, {sv.get('late_frames', '-')} late frames"
                + _delay_text(sv)
            )
        first = next((s for s in r.sessions if not s.error and s.server.get("stages_ms")), None)
        if first is not None:
            lines.append("  server stages of session 1 (its own clock: audio arrival -> frame on the wire)")
            stages = first.server["stages_ms"]
            lines += [_row(f"  {k}", stages[k]) for k in SERVER_STAGES if k in stages]
        srv = r.server
        if srv.get("cpu_percent") is not None or srv.get("rss_max_mb") is not None:
            gpu = f", GPU {srv['gpu_max_mb']} MB" if srv.get("gpu_max_mb") is not None else ""
            lines.append(
                f"  server process: CPU {srv.get('cpu_percent', '-')} % of one core, "
                f"RSS {srv.get('rss_max_mb', '-')} MB{gpu}"
            )
    if report.max_load is not None:
        lines.append(
            f"largest load that holds {report.min_fps} fps and p95 mouth <= {report.bound_ms:.0f} ms: "
            f"{report.max_load} session{'s' if report.max_load != 1 else ''}"
        )
    return "\n".join(lines)


def require_matplotlib():
    """matplotlib.pyplot (Agg), or a RuntimeError that says how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError(MATPLOTLIB_MISSING) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plot(report: BenchReport, path: str | Path) -> Path:
    """A timeline of the first session (signal, returned audio envelope, mouth openness, with the
    event markers) and histograms of the latencies over every session."""
    plt = require_matplotlib()
    sessions = [s for r in report.runs for s in r.sessions if not s.error]
    fig = plt.figure(figsize=(13, 11), layout="constrained")
    gs = fig.add_gridspec(5, 3, height_ratios=[1, 1, 1.2, 1.3, 1.1])
    if sessions and sessions[0].timeline:
        tl = sessions[0].timeline
        ax1 = fig.add_subplot(gs[0, :])
        ax1.plot(*tl["input"], lw=0.8, color="0.3")
        for x in tl["onsets"]:
            ax1.axvline(x, color="tab:green", lw=1)
        for x in tl["clicks"]:
            ax1.axvline(x, color="tab:purple", lw=0.8, ls=":")
        ax1.set_ylabel("input RMS")
        ax1.set_title("signal (input time): speech onsets (green), clicks (purple)", fontsize=9, loc="left")
        ax2 = fig.add_subplot(gs[1, :], sharex=ax1)
        ax2.plot(*tl["returned"], lw=0.8, color="tab:blue")
        for x in tl["returned_clicks"]:
            ax2.axvline(x, color="tab:purple", lw=0.8, ls=":")
        ax2.set_ylabel("returned RMS")
        ax2.set_title("returned audio (server send time): clicks found (purple)", fontsize=9, loc="left")
        ax3 = fig.add_subplot(gs[2, :], sharex=ax1)
        t, o = tl["mouth"]
        ax3.plot(t, o, ".-", ms=2, lw=0.8, color="tab:orange")
        for level in (tl["levels"]["rest"], tl["levels"]["peak"]):
            ax3.axhline(level, color="0.5", ls="--", lw=0.8)
        for x in tl["onsets"]:
            ax3.axvline(x, color="tab:green", lw=0.6, alpha=0.5)
        for x in tl["mouth_open"]:
            ax3.axvline(x, color="tab:red", lw=1)
        ax3.set_ylabel("mouth openness")
        ax3.set_xlabel("seconds from the start of the signal")
        ax3.set_title(
            "mouth openness of received frames (FaceMesh; server send time): rest and peak (dashed), "
            "mouth opens (red), onsets (green)",
            fontsize=9,
            loc="left",
        )
    for col, (f, title) in enumerate(
        (
            ("audio_ms", "audio in -> out (ms)"),
            ("mouth_ms", "audio in -> mouth (ms)"),
            ("av_offset_ms", "A/V offset (ms)"),
        )
    ):
        ax = fig.add_subplot(gs[3, col])
        vals = [getattr(e, f) for s in sessions for e in s.events if getattr(e, f) is not None]
        if vals:
            ax.hist(vals, bins=min(30, max(5, len(vals) // 2)), color="tab:gray")
        ax.set_title(f"{title}, n={len(vals)}", fontsize=9)
    stages = [(n, s.server["stages_ms"]) for n, s in enumerate(sessions, 1) if s.server.get("stages_ms")]
    if stages:  # the server's total split into its stages (p50), one bar per session
        ax = fig.add_subplot(gs[4, :])
        names = [k for k in SERVER_STAGES if k != "total"]
        left = np.zeros(len(stages))
        cmap = plt.get_cmap("tab20")
        for j, k in enumerate(names):
            w = np.array([(st.get(k) or {}).get("p50", 0.0) for _, st in stages])
            ax.barh([f"session {n}" for n, _ in stages], w, left=left, color=cmap(j), label=k)
            left += w
        ax.set_xlabel("ms (p50 of each stage)")
        ax.legend(ncol=6, fontsize=7, loc="upper right")
        ax.set_title("server stages: audio arrival -> frame on the wire", fontsize=9, loc="left")
    fig.suptitle(format_report(report).splitlines()[0], fontsize=9)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p
