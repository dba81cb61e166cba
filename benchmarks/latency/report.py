"""The output of ``benchmarks/live_latency.py``: :func:`markdown` (the ``.md`` result file: a table of
the runs, then per run its settings, counters and per-stage latency table) and :func:`print_table`
(the console summary after each run). Latencies are the ms summaries of :mod:`.analysis`.
"""

from __future__ import annotations

import sys

from streaming.session import MODEL_STAGES, STAGES


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
            desc += f" (the CPU preview renderer), weights {st['weights']}, refs {st['refs']}"
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
