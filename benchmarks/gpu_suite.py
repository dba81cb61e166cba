"""The GPU suite: every GPU measurement of mouthpiece in one command, in under 8 minutes.

    bash benchmarks/gpu_suite.sh                          # on a CUDA machine -> benchmarks/results/*_gpu.*
    bash benchmarks/gpu_suite.sh --dry-run --out /tmp/gs  # the same plumbing, CPU, tiny sizes (~1-2 min)

Steps (``benchmarks/gpu_suite_steps.py``; each one is an existing benchmark script run in a child
process with its own time budget as its timeout):

1. ``cuda_tests``: the tests that skip without CUDA (``benchmarks/cuda_tests.py``), with counts;
2. ``backends``: the renderer-backend benchmark, N 1/5/25, batch 1 and 8, ``fast`` and ``cuda-graph``
   in fp32/fp16/bf16, with the authors' procedure and the plain model as baselines and the fidelity
   table; ``onnx_cuda`` and ``onnx_trt``: the ``onnx`` backend on ONNX Runtime's CUDA and TensorRT
   execution providers (run last; an execution provider missing from ``onnxruntime.
   get_available_providers()``, or one the session does not take, is recorded as unavailable with
   the reason);
3. ``live_latency``: the live latency benchmark with the neural renderer on stand-in weights (N=5,
   ``cuda-graph`` fp16, one session, real aiortc clients over loopback);
4. ``capacity``: the most sessions held at 25 fps at N=5 with cross-session batching
   (``benchmarks/sessions_capacity.py``: a ramp of live latency runs within its budget).

A step that fails or passes its budget is recorded as ``failed`` / ``timeout`` (with the end of its
log) and the suite goes on; the suite as a whole stops starting steps at ``--total-s`` (default 460
s). Each step writes its own ``<name>_gpu.json`` / ``.md`` into ``--out``; the suite writes
``gpu_suite_gpu.json`` (every step's status, time, files and figures) and the one-page
``gpu_suite_summary.md`` (device, versions, command, date, figures or failure reasons, total time).
``--dry-run`` runs the same steps on the CPU on tiny sizes (N=1, fp32, a few frames, 3 s of audio,
1-2 sessions; the GPU-only execution providers are recorded as unavailable). ``--force-fail STEP``
and ``--force-timeout STEP`` replace a step's command by one that fails / hangs (to test that the
suite records it and goes on; also ``MOUTHPIECE_GPU_SUITE_FAIL=STEP[,STEP]``). Exit status: 0 when
every step that ran is ``ok`` or ``unavailable``, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu_suite_steps import ROOT, STEPS, Context, Step, Unavailable  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TOTAL_S = 460.0  # under 8 minutes, with room for the start, a last step's stop and the summary
SUITE_STEM = "gpu_suite_gpu"
SUMMARY = "gpu_suite_summary.md"
FORCED_TIMEOUT_S = 2.0


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="the same plumbing on the CPU, tiny sizes")
    ap.add_argument("--out", default=str(RESULTS), help="result folder (default benchmarks/results)")
    names = [s.name for s in STEPS]
    ap.add_argument("--steps", nargs="+", choices=names, help="run only these steps (default: all)")
    ap.add_argument("--total-s", type=float, default=None, help=f"suite time limit (default {TOTAL_S:g})")
    ap.add_argument("--delay-ms", help="--delay-ms of the live steps (default: the benchmarks' own)")
    ap.add_argument("--logs", help="folder for the steps' logs (default: a temporary folder)")
    ap.add_argument("--force-fail", nargs="+", default=[], choices=names, metavar="STEP")
    ap.add_argument("--force-timeout", nargs="+", default=[], choices=names, metavar="STEP")
    args = ap.parse_args(argv)
    env = os.environ.get("MOUTHPIECE_GPU_SUITE_FAIL", "")
    args.force_fail += [s for s in env.split(",") if s.strip()]
    unknown = set(args.force_fail) - set(names)
    if unknown:
        ap.error(f"MOUTHPIECE_GPU_SUITE_FAIL: unknown step(s) {', '.join(sorted(unknown))}")
    return args


def environment(dry_run: bool) -> dict:
    """Device, versions and machine of this run."""
    import torch

    env = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                env["cpu"] = line.split(":", 1)[1].strip()
                break
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
        env["gpu_count"] = torch.cuda.device_count()
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            q = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = (
                subprocess.run(q, capture_output=True, text=True, timeout=10).stdout.strip() or None
            )
    else:
        env["device"] = f"{env.get('cpu', platform.machine())} (CPU{', dry run' if dry_run else ''})"
    try:
        import onnxruntime as ort

        env["onnxruntime"] = ort.__version__
        env["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as e:
        env["onnxruntime"] = None
        env["onnxruntime_providers"] = []
        env["onnxruntime_error"] = str(e)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        env["git_commit"] = git.stdout.strip() or None
    return env


def environment_of_child(dry_run: bool) -> dict:
    """:func:`environment` read in a child process, so that this one never holds a CUDA context (the
    steps have the GPU to themselves); in this process if the child fails."""
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.gpu_suite import environment; "
        f"print(json.dumps(environment({dry_run!r})))"
    )
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(r.stdout.strip().splitlines()[-1])
    return environment(dry_run)


def check_providers(step: Step, env: dict) -> None:
    """Unavailable unless onnxruntime lists every execution provider the step needs."""
    if not step.needs:
        return
    if env.get("onnxruntime") is None:
        raise Unavailable(f"onnxruntime is not installed ({env.get('onnxruntime_error')})")
    missing = [p for p in step.needs if p not in env["onnxruntime_providers"]]
    if missing:
        raise Unavailable(
            f"{', '.join(missing)} not in onnxruntime.get_available_providers() "
            f"({', '.join(env['onnxruntime_providers'])}; onnxruntime {env['onnxruntime']})"
        )


def tail(path: Path, lines: int = 12) -> str:
    """The end of a log, without the noise of TensorFlow Lite / absl lines."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keep = [
        t for t in text if t.strip() and not t.startswith(("W0000", "I0000", "INFO:", "WARNING: All log"))
    ]
    return "\n".join(keep[-lines:])


def run_process(cmd: list[str], log: Path, timeout_s: float) -> tuple[int | None, bool]:
    """Run ``cmd`` in its own process group, output to ``log``; (exit status, timed out). On timeout
    the whole group (the step and its children: servers, clients) is stopped."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout_s), False
        except subprocess.TimeoutExpired:
            for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            return proc.returncode, True


def run_step(step: Step, ctx: Context, env: dict, args, logs: Path, left_s: float) -> dict:
    budget = step.dry_budget_s if ctx.dry_run else step.budget_s
    rec = {"name": step.name, "title": step.title, "budget_s": budget, "status": None, "reason": None}
    rec.update({"seconds": 0.0, "command": None, "files": [], "figures": None, "lines": []})
    if left_s < 15:
        rec.update(status="skipped", reason=f"the suite's time limit was reached ({left_s:.0f} s left)")
        return rec
    timeout_s = min(budget, left_s - 5)
    if step.name in args.force_timeout:  # forced: even where the step would be unavailable
        cmd, timeout_s = [ctx.python, "-c", "import time; time.sleep(3600)"], FORCED_TIMEOUT_S
    elif step.name in args.force_fail:
        cmd = [ctx.python, "-c", f"import sys; sys.exit('{step.name}: forced failure (--force-fail)')"]
    else:
        try:
            check_providers(step, env)
            cmd = step.command(ctx)
        except Unavailable as e:
            rec.update(status="unavailable", reason=str(e))
            return rec
    rec["command"] = shlex.join(os.path.relpath(c, ROOT) if c.startswith(str(ROOT)) else c for c in cmd)
    rec["timeout_s"] = round(timeout_s, 1)
    log = logs / f"{step.name}.log"
    print(f"[{step.name}] {step.title} (timeout {timeout_s:.0f} s)\n  {rec['command']}", flush=True)
    result = ctx.out / f"{step.stem}.json"
    t0 = time.time()
    code, timed_out = run_process(cmd, log, timeout_s)
    rec["seconds"] = round(time.time() - t0, 1)
    rec["returncode"] = code
    rec["log"] = str(log)
    fresh = result.is_file() and result.stat().st_mtime >= t0 - 1
    if fresh:
        rec["files"] = [p.name for p in (result, result.with_suffix(".md")) if p.is_file()]
    if timed_out:
        rec.update(status="timeout", reason=f"passed its budget of {timeout_s:.0f} s (stopped)")
    elif code != 0:
        rec.update(status="failed", reason=f"exit status {code}")
    elif not fresh:
        rec.update(status="failed", reason=f"exit status 0 but {result.name} was not written")
    else:
        rec["status"] = "ok"
    if rec["status"] != "ok":
        rec["log_tail"] = tail(log)
    if fresh and (rec["status"] == "ok" or step.partial_ok):
        try:
            rec["figures"], rec["lines"] = step.figures(json.loads(result.read_text()))
        except Unavailable as e:
            rec.update(status="unavailable", reason=str(e))
        except (KeyError, IndexError, TypeError, ValueError) as e:
            rec.update(status="failed", reason=f"its results could not be read: {type(e).__name__}: {e}")
    print(f"  -> {rec['status']} in {rec['seconds']:.0f} s{': ' + rec['reason'] if rec['reason'] else ''}")
    if rec.get("log_tail"):
        print("  " + rec["log_tail"].replace("\n", "\n  "), flush=True)
    return rec


def summary_lines(env: dict, command: str, dry_run: bool, steps: list[dict], total_s: float) -> list[str]:
    versions = f"torch {env['torch']}"
    versions += f" (CUDA {env['torch_cuda']}, cuDNN {env['cudnn']})" if env["torch_cuda"] else " (CPU build)"
    versions += f", onnxruntime {env['onnxruntime']} ({', '.join(env['onnxruntime_providers'])})"
    if env.get("driver"):
        versions += f", driver {env['driver']}"
    title = "GPU suite" + (" — DRY RUN on the CPU (tiny sizes; not GPU figures)" if dry_run else "")
    lines = [
        f"# {title}",
        "",
        f"- device: {env['device']}" + (f", {env['gpu_memory_gb']} GB" if env.get("gpu_memory_gb") else ""),
        f"- versions: Python {env['python']}, {versions}",
        f"- command: `{command}` (commit {env.get('git_commit')})",
        f"- date: {env['date']}; total time {total_s:.0f} s",
        "",
        "| step | status | time s (budget) | results |",
        "| --- | --- | ---: | --- |",
    ]
    for s in steps:
        files = ", ".join(s["files"]) or "-"
        lines.append(f"| {s['title']} | {s['status']} | {s['seconds']:.0f} ({s['budget_s']:g}) | {files} |")
    for s in steps:
        lines += ["", f"## {s['title']}", ""]
        if s["status"] != "ok":
            lines.append(f"**{s['status']}**: {s['reason']}")
            if s.get("log_tail"):
                lines += ["", "```", *s["log_tail"].splitlines()[-6:], "```"]
            if s["lines"]:
                lines += ["", "What it measured before it stopped:", ""]
        lines += s["lines"]
    return lines


def main(argv=None) -> int:
    args = parse(argv)
    t_start = time.time()
    total = args.total_s if args.total_s is not None else TOTAL_S
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    logs = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="mouthpiece-gpu-suite-"))
    logs.mkdir(parents=True, exist_ok=True)
    env = environment_of_child(args.dry_run)
    if not args.dry_run and not env["cuda_available"]:
        print(
            "no CUDA device on this machine: run with --dry-run (the CPU plumbing) or on a GPU",
            file=sys.stderr,
        )
        return 2
    ctx = Context(args.dry_run, "cpu" if args.dry_run else "cuda", out, delay_ms=args.delay_ms)
    command = "bash benchmarks/gpu_suite.sh " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(
        f"GPU suite{' (dry run)' if args.dry_run else ''}: {env['device']}; results in {out}; logs in {logs}"
    )
    steps = []
    for step in STEPS:
        if args.steps and step.name not in args.steps:
            continue
        steps.append(run_step(step, ctx, env, args, logs, total - (time.time() - t_start)))
    total_s = time.time() - t_start
    payload = {
        "meta": {**env, "command": command, "dry_run": args.dry_run, "total_s": round(total_s, 1)},
        "limit_s": total,
        "steps": steps,
    }
    (out / f"{SUITE_STEM}.json").write_text(json.dumps(payload, indent=2))
    order = {s.name: i for i, s in enumerate(STEPS)}
    shown = sorted(
        steps, key=lambda s: order[s["name"]] if s["name"] != "onnx_trt" else order["onnx_cuda"] + 0.5
    )
    (out / SUMMARY).write_text("\n".join(summary_lines(env, command, args.dry_run, shown, total_s)) + "\n")
    print(f"\nsummary: {out / SUMMARY} ({total_s:.0f} s)")
    for s in steps:
        print(f"  {s['name']:<13} {s['status']:<12} {s['seconds']:>5.0f} s  {s['reason'] or ''}")
    return 0 if all(s["status"] in ("ok", "unavailable") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
