"""The steps of ``benchmarks/gpu_suite.py``: what each runs (on a GPU and in ``--dry-run``), its time
budget, the result files it writes, and how its figures are read back for the summary.

Each step is a :class:`Step`: ``command(ctx)`` gives the command line of one existing benchmark
script (or the reason the step cannot run here: :class:`Unavailable`); ``figures(payload)`` turns
the JSON it wrote into the summary's short figures (a dict) and Markdown lines. The GPU settings are
chosen to fit the suite's 8 minutes; the dry-run settings are the same scripts on tiny sizes on the
CPU (N=1, fp32, a few frames, 3 s of audio, 1-2 sessions).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


class Unavailable(Exception):
    """The step cannot run on this machine (its reason is recorded; the suite goes on)."""


@dataclass(frozen=True)
class Context:
    dry_run: bool
    device: str  # "cuda" on a GPU run, "cpu" in a dry run
    out: Path
    python: str = sys.executable
    delay_ms: str | None = None  # --delay-ms passed to the live steps (None: the benchmarks' default)

    def script(self, name: str, *args: str) -> list[str]:
        return [self.python, str(BENCH / name), *args, "--out", str(self.out)]

    def idle(self) -> list[str]:
        """The live benchmarks wait for an idle machine; in the suite the previous step's load is ours."""
        wait = "0" if self.dry_run else "5"  # a shared CI machine is rarely idle: the dry run never waits
        return ["--max-load", str(max(1.0, (os.cpu_count() or 1) * 0.75)), "--idle-wait", wait]


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    budget_s: float  # the step's timeout on a GPU run
    dry_budget_s: float  # ... and in a dry run
    stem: str  # its result files: <stem>.json / .md
    command: Callable[[Context], list[str]]
    figures: Callable[[dict], tuple[dict, list[str]]]
    partial_ok: bool = False  # its JSON is rewritten as it goes: read it even after a timeout
    needs: tuple[str, ...] = field(default=())  # onnxruntime execution providers it needs


def _ms(d: dict | None, key: str) -> float | None:
    return None if not d else d.get(key)


# -- 1. the CUDA tests ---------------------------------------------------------------------------------


def tests_command(ctx: Context) -> list[str]:
    return ctx.script("cuda_tests.py", "--stem", "cuda_tests_gpu")


def tests_figures(p: dict) -> tuple[dict, list[str]]:
    keys = ("selected", "passed", "failed", "error", "skipped")
    fig = {k: p[k] for k in keys}
    bad = [t["id"] for t in p["tests"] if t["outcome"] in ("failed", "error")]
    line = (
        f"{p['selected']} selected: {p['passed']} passed, {p['failed']} failed, {p['error']} errors, "
        f"{p['skipped']} skipped ({', '.join(p['files'])})"
    )
    return fig, [line] + ([f"failing: {', '.join(bad)}"] if bad else [])


# -- 2. the renderer backends -------------------------------------------------------------------------


def backends_command(ctx: Context) -> list[str]:
    if ctx.dry_run:  # cuda-graph is listed so that its "needs CUDA" skip is recorded
        sizes = ["--refs", "1", "--batch", "1", "--precisions", "fp32", "--repeat", "1"]
        return ctx.script(
            "renderer_backends.py", "--device", "cpu", *sizes, "--backends", "fast", "cuda-graph",
            "--no-baselines", "--no-fidelity", "--stem", "renderer_backends_gpu",
        )  # fmt: skip
    return ctx.script(
        "renderer_backends.py", "--device", "cuda", "--refs", "1", "5", "25", "--batch", "1", "8",
        "--backends", "fast", "cuda-graph", "--precisions", "fp32", "fp16", "bf16", "--repeat", "20",
        "--stem", "renderer_backends_gpu",
    )  # fmt: skip


def onnx_command(variant: str, stem: str) -> Callable[[Context], list[str]]:
    def command(ctx: Context) -> list[str]:
        if not ctx.device.startswith("cuda"):
            raise Unavailable(f"no CUDA device ({variant} runs ONNX Runtime's GPU execution providers)")
        # TensorRT builds an engine per input shape (minutes for N=25): N=5, batch 1 only
        sizes = ["--refs", "1", "5", "25", "--batch", "1", "8"] if variant == "onnx" else ["--refs", "5"]
        return ctx.script(
            "renderer_backends.py", "--device", "cuda", *sizes, "--backends", variant,
            "--precisions", "fp32", "--repeat", "20", "--no-baselines", "--no-fidelity", "--stem", stem,
        )  # fmt: skip

    return command


def backend_figures(p: dict) -> tuple[dict, list[str]]:
    """ms per frame by (variant, precision, batch) x N, and the skipped variants."""
    rows = p["speed"]
    ns = sorted({r["refs"] for r in rows})
    table: dict[tuple, dict[int, float]] = {}
    for r in rows:
        table.setdefault((r["variant"], r["precision"], r["batch"]), {})[r["refs"]] = r["ms_per_frame"]
    fig = {
        "ms_per_frame": [
            {"variant": v, "precision": pr, "batch": b, **{f"N{n}": t.get(n) for n in ns}}
            for (v, pr, b), t in table.items()
        ],
        "skipped": p.get("skipped", []),
        "complete": p.get("complete", True),
    }
    lines = []
    if rows:
        lines += [
            "| variant | precision | batch | " + " | ".join(f"N={n} ms/frame" for n in ns) + " |",
            "| --- | --- | ---: | " + " | ".join("---:" for _ in ns) + " |",
        ]
        for (v, pr, b), t in table.items():
            cells = " | ".join("-" if t.get(n) is None else f"{t[n]:g}" for n in ns)
            lines.append(f"| {v} | {pr} | {b} | {cells} |")
    worst: dict[str, float] = {}
    for f in p.get("fidelity", []):
        key = f"{f['variant']} {f['precision']}"
        worst[key] = min(worst.get(key, float("inf")), f["psnr_db"])
    if worst:
        fig["min_psnr_db"] = worst
        lines += ["", "Fidelity, lowest PSNR against the plain fp32 model: "]
        lines[-1] += "; ".join(f"{k} {v:g} dB" for k, v in worst.items())
    if p.get("skipped"):
        lines.append("")
    for s in p.get("skipped", []):
        lines.append(f"- not run: {s['variant']} {s['precision']}: {s['reason']}")
    if not p.get("complete", True):
        lines.append("(incomplete: the results written before the step stopped)")
    if not rows and p.get("skipped"):
        raise Unavailable("; ".join(f"{s['variant']} {s['precision']}: {s['reason']}" for s in p["skipped"]))
    return fig, lines


# -- 3. live latency, neural renderer, stand-in weights -----------------------------------------------


def latency_command(ctx: Context) -> list[str]:
    common = ["--weights", "standin", "--renderer", "neural", "--sessions", "1", *ctx.idle()]
    if ctx.delay_ms is not None:
        common += ["--delay-ms", ctx.delay_ms]
    if ctx.dry_run:  # the CPU is too slow for the model: every window is shed, the plumbing runs
        sizes = ["--device", "cpu", "--refs", "1", "--seconds", "3", "--warmup", "0", "--batch", "4"]
        if ctx.delay_ms is None:
            sizes += ["--delay-ms", "600"]
    else:
        sizes = ["--device", "cuda", "--refs", "5", "--backend", "cuda-graph", "--precision", "fp16"]
        sizes += ["--seconds", "10"]
    return ctx.script("live_latency.py", *common, *sizes, "--out-name", "live_latency_gpu")


def latency_figures(p: dict) -> tuple[dict, list[str]]:
    r = p["runs"][0]
    lat, st = r["latency_ms"], r["settings"]
    model = (r.get("model_ms") or [None])[0] or {}
    fig = {
        "server_total_p50_ms": _ms(lat["total"], "p50"),
        "server_total_p95_ms": _ms(lat["total"], "p95"),
        "client_e2e_p50_ms": _ms(lat["client_e2e_send"], "p50"),
        "client_e2e_p95_ms": _ms(lat["client_e2e_send"], "p95"),
        "renderer_p50_ms": _ms(lat.get("renderer"), "p50"),
        "model_call_p50_ms": model.get("p50"),
        "received_fps": r["received_fps"]["mean"],
        "shed_rate": r["drop_rate"],
        "av_offset_ms": r["av_offset_ms"],
        "gpu_max_mem_mb": r["machine"]["gpu_max_mem_mb"],
        "delay_ms": st["delay_ms"],
    }
    model_p50 = "-" if fig["model_call_p50_ms"] is None else f"{fig['model_call_p50_ms']:.0f}"
    lines = [
        f"{st['mode']} on {st['device']}, {st['backend']} {st['precision']}, N={st['refs']}, "
        f"delay {st['delay_ms']:g} ms, 1 session: server total p50 / p95 {fig['server_total_p50_ms']} / "
        f"{fig['server_total_p95_ms']} ms (issue 16's GPU target: p95 <= 260 ms); client e2e p50 / p95 "
        f"{fig['client_e2e_p50_ms']} / {fig['client_e2e_p95_ms']} ms; {fig['received_fps']} fps; "
        f"shed {fig['shed_rate']}; A/V {fig['av_offset_ms']} ms; model call p50 {model_p50} ms"
        + ("" if fig["gpu_max_mem_mb"] is None else f"; GPU memory {fig['gpu_max_mem_mb']} MB"),
    ]
    return fig, lines


# -- 4. sessions held at 25 fps, N=5, cross-session batching -------------------------------------------


def capacity_command(ctx: Context) -> list[str]:
    common = ["--weights", "standin", "--renderer", "neural", *ctx.idle()]
    if ctx.delay_ms is not None:
        common += ["--delay-ms", ctx.delay_ms]
    if ctx.dry_run:  # --max-shed/--max-late 1: on the CPU every window is shed; the load "holds"
        sizes = ["--device", "cpu", "--refs", "1", "--seconds", "3", "--warmup", "0", "--batch", "4"]
        sizes += ["--max-sessions", "1", "--max-shed", "1", "--max-late", "1", "--budget-s", "40"]
        if ctx.delay_ms is None:
            sizes += ["--delay-ms", "600"]
    else:
        sizes = ["--device", "cuda", "--refs", "5", "--backend", "cuda-graph", "--precision", "fp16"]
        sizes += ["--seconds", "6", "--start", "4", "--max-sessions", "32", "--budget-s", "80"]
    return ctx.script("sessions_capacity.py", *common, *sizes, "--out-name", "sessions_capacity_gpu")


def capacity_figures(p: dict) -> tuple[dict, list[str]]:
    steps = p["steps"]
    fig = {"max_sessions_held": p["max_sessions_held"], "loads_tried": [s["sessions"] for s in steps]}
    parts = []
    for s in steps:
        if "fps_min" in s:
            mw = s["mean_windows_per_call"]
            batch = "" if mw is None else f", {mw:.1f} windows/call"
            parts.append(
                f"{s['sessions']}: {'holds' if s['holds'] else 'no'} ({s['fps_min']} fps, shed "
                f"{s['shed_rate']}, total p95 {s['server_total_p95_ms']} ms{batch}, CPU % server "
                f"{s['server_cpu_percent']}, clients {s['client_cpu_percent']})"
                + ("" if s["holds"] else f": {s['reason']}")
            )
        else:
            parts.append(f"{s['sessions']}: no ({s['reason']})")
    fig["ramp_ended"] = p.get("ramp_ended")
    bound = {"budget": " (at least: the budget ended the ramp)", "max-sessions": " (at least: most tried)"}
    lines = [
        f"most sessions held at 25 fps: **{p['max_sessions_held']}**{bound.get(p.get('ramp_ended'), '')} "
        f"({p['meta']['settings']})"
    ]
    lines += [f"- {x}" for x in parts]
    return fig, lines


STEPS = (
    Step("cuda_tests", "CUDA tests (skip on a CPU)", 80, 60, "cuda_tests_gpu", tests_command, tests_figures),
    Step(
        "backends",
        "renderer backends: fast, cuda-graph x fp32/fp16/bf16, N 1/5/25",
        110,
        90,
        "renderer_backends_gpu",
        backends_command,
        backend_figures,
        partial_ok=True,
    ),
    Step(
        "onnx_cuda",
        "renderer backend onnx, CUDA execution provider",
        55,
        30,
        "renderer_backends_onnx_cuda_gpu",
        onnx_command("onnx", "renderer_backends_onnx_cuda_gpu"),
        backend_figures,
        partial_ok=True,
        needs=("CUDAExecutionProvider",),
    ),
    Step(
        "live_latency",
        "live latency, neural renderer, stand-in weights",
        60,
        90,
        "live_latency_gpu",
        latency_command,
        latency_figures,
    ),
    Step(
        "capacity",
        "most sessions held at 25 fps (N=5, cross-session batching)",
        100,
        90,
        "sessions_capacity_gpu",
        capacity_command,
        capacity_figures,
        partial_ok=True,
    ),
    Step(
        "onnx_trt",
        "renderer backend onnx, TensorRT execution provider",
        60,
        30,
        "renderer_backends_onnx_trt_gpu",
        onnx_command("onnx-trt", "renderer_backends_onnx_trt_gpu"),
        backend_figures,
        partial_ok=True,
        needs=("TensorrtExecutionProvider",),
    ),
)
