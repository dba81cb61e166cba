"""The most live sessions one server holds at 25 fps: a ramp of ``benchmarks/live_latency.py`` runs.

    .venv/bin/python benchmarks/sessions_capacity.py --device cuda --weights standin --refs 5 \\
        --backend cuda-graph --precision fp16 --seconds 6 --budget-s 120      # the GPU suite's setting

Each step of the ramp is one run of the live latency benchmark (:func:`benchmarks.latency.run.measure`:
the server in this process with its shared model worker, so the sessions' windows are batched across
sessions into one model call of up to ``--max-batch`` windows; K aiortc clients in a child process
playing speech as their microphone). A load of K sessions **holds** when every session received at
least ``--min-fps`` frames per second, at most ``--max-shed`` of the speech windows were shed (not
ready in time: the lips did not move), at most ``--max-late`` of the clip's frames repeated the
previous image, and the run finished without error. The ramp doubles K from ``--start`` until a load
does not hold (or ``--max-sessions``), then bisects between the largest K that held and the
smallest that did not, while ``--budget-s`` allows another run (estimated from the last one's
length). Every other option is ``benchmarks/live_latency.py``'s (``--help`` there). The result file
is rewritten after every run, so a ramp stopped from outside keeps what it measured.

Writes ``benchmarks/results/<out-name>.json`` and ``.md`` (default ``sessions_capacity_<device>``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import live_latency  # noqa: E402
from benchmarks.common import run_meta, write_results  # noqa: E402
from benchmarks.latency.suites import SR16, input_audio, write_wav16  # noqa: E402


def parse(argv=None) -> tuple[argparse.Namespace, argparse.Namespace]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False
    )
    ap.add_argument("-h", "--help", action="store_true")
    ap.add_argument("--start", type=int, default=1, help="first load K (default 1)")
    ap.add_argument("--max-sessions", type=int, default=16, help="largest load tried (default 16)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="no run starts past this (default 300)")
    ap.add_argument("--min-fps", type=float, default=24.5, help="every session receives this (default 24.5)")
    ap.add_argument("--max-shed", type=float, default=0.05, help="speech windows shed at most (default 0.05)")
    ap.add_argument("--max-late", type=float, default=0.05, help="late clip frames at most (default 0.05)")
    ramp, rest = ap.parse_known_args(argv)
    if ramp.help:
        ap.print_help()
        print("\nthe live latency benchmark's options:\n")
        live_latency.parse(["--help"])
    if ramp.start < 1 or ramp.max_sessions < ramp.start:
        ap.error("1 <= --start <= --max-sessions")
    return ramp, live_latency.parse(rest)


def verdict(r: dict, ramp: argparse.Namespace) -> tuple[bool, str | None]:
    """Whether a run (a live latency run record) held, and if not, why."""
    if r.get("error"):
        return False, r["error"]
    fps = r["received_fps"]["min"]
    if fps < ramp.min_fps:
        return False, f"a session received {fps} fps (< {ramp.min_fps:g})"
    shed = r["drop_rate"] or 0.0
    if shed > ramp.max_shed:
        return False, f"{100 * shed:.0f} % of the speech windows shed (> {100 * ramp.max_shed:.0f} %)"
    shown = r["shown"]
    late = shown["late_in_clip"] / max(1, shown["clip_frames"])
    if late > ramp.max_late:
        return False, f"{100 * late:.0f} % of the clip's frames late (> {100 * ramp.max_late:.0f} %)"
    return True, None


def next_load(tried: dict[int, bool], ramp: argparse.Namespace) -> int | None:
    """Double while every load held; then bisect between the best that held and the least that failed."""
    held = [k for k, ok in tried.items() if ok]
    failed = [k for k, ok in tried.items() if not ok]
    best = max(held, default=0)
    if not failed:
        k = ramp.start if not tried else min(2 * best, ramp.max_sessions)
        return None if k in tried else k
    low = min(failed)
    if low - best <= 1:
        return None
    return (best + low) // 2


def ended(tried: dict[int, bool], ramp: argparse.Namespace) -> str:
    """Why the ramp ended: "found" (the next load up failed), "max-sessions" (the largest load held)
    or "budget" (no time for another run: the most held is a lower bound)."""
    if next_load(tried, ramp) is None:
        return "found" if any(not ok for ok in tried.values()) else "max-sessions"
    return "budget"


def free_device(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_summary(r: dict, k: int, ok: bool, why: str | None) -> dict:
    """The figures of one ramp step kept next to the full run record."""
    if r.get("error"):
        return {"sessions": k, "holds": False, "reason": why}
    lat = r["latency_ms"]
    worker = (r.get("model_worker") or {}).get("after_run") or {}
    return {
        "sessions": k,
        "holds": ok,
        "reason": why,
        "fps_min": r["received_fps"]["min"],
        "shed_rate": r["drop_rate"],
        "late_in_clip": r["shown"]["late_in_clip"],
        "server_total_p50_ms": (lat.get("total") or {}).get("p50"),
        "server_total_p95_ms": (lat.get("total") or {}).get("p95"),
        "renderer_p50_ms": (lat.get("renderer") or {}).get("p50"),
        "mean_windows_per_call": worker.get("mean_windows_per_call"),
        "max_sessions_per_call": worker.get("max_sessions_per_call"),
        "server_cpu_percent": r["machine"]["cpu_percent"],
        "client_cpu_percent": r["machine"].get("client_cpu_percent"),
        "gpu_max_mem_mb": r["machine"]["gpu_max_mem_mb"],
        "wall_s": r["wall_s"],
    }


ENDED = {
    "found": "",
    "max-sessions": " (the most tried: at least this many)",
    "budget": " (the time budget ended the ramp first: at least this many)",
}


def markdown(meta: dict, steps: list[dict], best: int, ramp: argparse.Namespace, ended_by: str) -> list[str]:
    lines = [
        f"Live sessions held at 25 fps — {meta['device']}, torch {meta['torch']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        f"(settings: {meta['settings']}; holds: every session >= {ramp.min_fps:g} fps received, "
        f"<= {100 * ramp.max_shed:g} % of speech windows shed, <= {100 * ramp.max_late:g} % late frames)",
        "",
        f"**Most sessions held: {best}**" + ("" if steps else " (no run finished)") + ENDED[ended_by],
        "",
        "| sessions | holds | fps (min) | shed | late | server total p50 / p95 ms | windows per call "
        "(mean / sessions max) | CPU % server / clients | why not |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in steps:
        if "fps_min" not in s:
            lines.append(f"| {s['sessions']} | no | - | - | - | - | - | - | {s['reason']} |")
            continue
        mw = s["mean_windows_per_call"]
        lines.append(
            f"| {s['sessions']} | {'yes' if s['holds'] else 'no'} | {s['fps_min']} | {s['shed_rate']} "
            f"| {s['late_in_clip']} | {s['server_total_p50_ms']} / {s['server_total_p95_ms']} "
            f"| {'-' if mw is None else f'{mw:.2f}'} / {s['max_sessions_per_call'] or '-'} "
            f"| {s['server_cpu_percent']} / {s['client_cpu_percent']} | {s['reason'] or ''} |"
        )
    return lines


def main(argv=None) -> None:
    ramp, args = parse(argv)
    t_start = time.perf_counter()
    device_kind = args.device.split(":")[0]
    if device_kind == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    if args.refs is None:
        args.refs = 5 if device_kind == "cuda" else 1
    if args.renderer is None:
        args.renderer = "none" if args.weights == "none" else "neural"
    x16, audio_desc = input_audio(args)
    settings = (
        f"renderer {args.renderer}, weights {args.weights}, N={args.refs}, backend {args.backend} "
        f"{args.precision}, batch {args.batch}, delay {args.delay_ms:g} ms, "
        f"{args.seconds:g} s of {audio_desc}"
    )
    meta = run_meta("sessions_capacity.py", args.device, settings=settings, cpu_count=os.cpu_count())
    stem = args.out_name or f"sessions_capacity_{device_kind}"
    tried: dict[int, bool] = {}
    steps: list[dict] = []
    runs: list[dict] = []

    def write() -> None:
        best = max((k for k, ok in tried.items() if ok), default=0)
        meta["wall_s"] = round(time.perf_counter() - t_start, 1)
        payload = {"meta": meta, "max_sessions_held": best, "ramp_ended": ended(tried, ramp)}
        payload |= {"ramp": vars(ramp), "steps": steps, "runs": runs}
        write_results(args.out, stem, payload, markdown(meta, steps, best, ramp, payload["ramp_ended"]))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.cache is None:
            args.cache = str(tmp / "avatars")
        wav, warm = tmp / "mic.wav", None
        write_wav16(wav, x16)
        if args.warmup > 0:
            warm = tmp / "warm.wav"
            write_wav16(warm, x16[: int(args.warmup * SR16)])
        last_s = 0.0
        while (k := next_load(tried, ramp)) is not None:
            if steps and time.perf_counter() - t_start + last_s > ramp.budget_s:
                print(f"budget: {ramp.budget_s:g} s would be passed by another run; stopping", flush=True)
                break
            print(f"[{k} session(s)]", flush=True)
            t0 = time.perf_counter()
            opts = argparse.Namespace(**{**vars(args), "sessions": k})
            try:
                r = asyncio.run(live_latency.measure(opts, x16, wav, warm))
            except Exception as e:  # a run that breaks is a load that does not hold
                r = {"error": f"{type(e).__name__}: {e}"}
            last_s = time.perf_counter() - t0
            ok, why = verdict(r, ramp)
            tried[k] = ok
            r["name"] = f"{k} session(s)"
            runs.append(r)
            steps.append(run_summary(r, k, ok, why))
            print(f"  -> {'holds' if ok else 'does not hold'}{': ' + why if why else ''} ({last_s:.0f} s)")
            free_device(args.device)
            write()
    if not steps:
        write()


if __name__ == "__main__":
    main()
