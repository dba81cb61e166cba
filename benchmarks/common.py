"""Shared plumbing of the benchmark scripts: timing, device names, result files (percentiles and other
summaries of timings: :func:`engine.core.stats.summary`)."""

from __future__ import annotations

import datetime as dt
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeat`` calls of ``fn`` after ``warmup`` calls (device work included)."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {torch.get_num_threads()} threads"


def run_meta(script: str, device: str, **extra) -> dict:
    """Date, device, versions and the command line of this run."""
    versions = {"torch": torch.__version__, "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device_name(device),
        **versions,
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:]),
        **extra,
    }


def versions_text(meta: dict) -> str:
    return ", ".join(f"{k} {meta[k]}" for k in ("torch", "onnxruntime") if k in meta)


def write_results(out_dir: str | Path, stem: str, payload: dict, md_lines: list[str]) -> Path:
    """``<stem>.json`` (the payload) and ``<stem>.md`` (the lines) in ``out_dir``; prints the Markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(payload, indent=2))
    (out / f"{stem}.md").write_text("\n".join(md_lines) + "\n")
    print("\n".join(md_lines))
    return out / f"{stem}.md"


def standin_renderer(device: str = "cpu"):
    """The renderer with the deterministic stand-in weights (timings do not depend on the values)."""
    import models

    return models.standin_model(models.RENDERER).to(device)
