"""The GPU suite's plumbing (benchmarks/gpu_suite.py --dry-run on the CPU): every step runs on tiny
sizes, writes its results and real figures into the summary; a step forced to fail or to hang is
recorded as such and the steps after it still run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"


def run_suite(out: Path, *args: str, timeout: float = 400) -> tuple[subprocess.CompletedProcess, dict]:
    proc = subprocess.run(
        [sys.executable, str(SUITE), "--dry-run", "--out", str(out), "--logs", str(out / "logs"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    suite = out / "gpu_suite_gpu.json"
    assert suite.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(suite.read_text())


def by_name(suite: dict) -> dict[str, dict]:
    return {s["name"]: s for s in suite["steps"]}


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    # onnx_cuda is forced to fail: the steps after it (live latency, sessions, onnx_trt) must still run
    proc, suite = run_suite(out, "--force-fail", "onnx_cuda")
    return out, proc, suite


def test_dry_run_writes_every_steps_results_and_the_summary(dry_run):
    out, proc, suite = dry_run
    steps = by_name(suite)
    assert list(steps) == ["cuda_tests", "backends", "onnx_cuda", "live_latency", "capacity", "onnx_trt"]
    for name in ("cuda_tests", "backends", "live_latency", "capacity"):
        assert steps[name]["status"] == "ok", (name, steps[name], proc.stdout[-3000:])
    assert suite["meta"]["dry_run"] and suite["meta"]["torch"] and suite["meta"]["device"]
    assert 0 < suite["meta"]["total_s"] < suite["limit_s"]

    tests = json.loads((out / "cuda_tests_gpu.json").read_text())
    assert tests["selected"] >= 1 and tests["selected"] == len(tests["tests"])
    assert tests["passed"] + tests["failed"] + tests["error"] + tests["skipped"] == tests["selected"]
    assert steps["cuda_tests"]["figures"]["selected"] == tests["selected"]

    backends = json.loads((out / "renderer_backends_gpu.json").read_text())
    fast = [r for r in backends["speed"] if r["variant"] == "fast" and r["precision"] == "fp32"]
    assert fast and fast[0]["refs"] == 1 and fast[0]["ms_per_frame"] > 0 and backends["complete"]
    assert backends["meta"]["device"]
    assert any(s["variant"] == "cuda-graph" for s in backends["skipped"])  # needs CUDA: recorded, not fatal

    latency = json.loads((out / "live_latency_gpu.json").read_text())
    run = latency["runs"][0]
    assert run["settings"]["mode"] == "neural" and run["settings"]["weights"] == "standin"
    assert run["latency_ms"]["total"]["p50"] > 0 and run["latency_ms"]["client_e2e_send"]["p50"] > 0
    assert steps["live_latency"]["figures"]["server_total_p50_ms"] > 0

    capacity = json.loads((out / "sessions_capacity_gpu.json").read_text())
    assert capacity["steps"] and capacity["steps"][0]["sessions"] == 1
    assert capacity["steps"][0]["fps_min"] > 0
    assert isinstance(capacity["max_sessions_held"], int) and capacity["ramp_ended"] == "max-sessions"

    for name in ("cuda_tests", "backends", "live_latency", "capacity"):
        stem = {"backends": "renderer_backends_gpu", "capacity": "sessions_capacity_gpu"}.get(
            name, f"{name}_gpu"
        )
        assert steps[name]["files"] == [f"{stem}.json", f"{stem}.md"]

    summary = (out / "gpu_suite_summary.md").read_text()
    assert "DRY RUN" in summary and "torch" in summary and "total time" in summary
    assert "server total p50 / p95" in summary and "selected:" in summary and "N=1 ms/frame" in summary
    assert "most sessions held at 25 fps" in summary


def test_a_forced_failure_is_recorded_and_the_suite_goes_on(dry_run):
    out, proc, suite = dry_run
    steps = by_name(suite)
    failed = steps["onnx_cuda"]
    assert failed["status"] == "failed" and failed["reason"] == "exit status 1"
    assert "forced failure" in failed["log_tail"] and not failed["files"]
    assert steps["live_latency"]["status"] == "ok" and steps["capacity"]["status"] == "ok"
    # no GPU execution providers on a CPU: unavailable with the reason, not a failure
    assert steps["onnx_trt"]["status"] == "unavailable" and steps["onnx_trt"]["reason"]
    assert proc.returncode == 1  # a step failed
    summary = (out / "gpu_suite_summary.md").read_text()
    assert "**failed**: exit status 1" in summary and "**unavailable**" in summary


def test_a_step_past_its_budget_is_stopped_and_recorded(tmp_path):
    proc, suite = run_suite(tmp_path, "--steps", "cuda_tests", "onnx_trt", "--force-timeout", "cuda_tests")
    steps = by_name(suite)
    assert steps["cuda_tests"]["status"] == "timeout" and steps["cuda_tests"]["seconds"] < 30
    assert steps["onnx_trt"]["status"] == "unavailable"
    assert proc.returncode == 1
    assert "**timeout**" in (tmp_path / "gpu_suite_summary.md").read_text()


def test_the_sessions_ramp_doubles_then_bisects():
    sys.path.insert(0, str(ROOT))
    from benchmarks.sessions_capacity import ended, next_load

    ramp = argparse.Namespace(start=2, max_sessions=32)
    tried: dict[int, bool] = {}
    truth = 11  # the most sessions that hold
    while (k := next_load(tried, ramp)) is not None:
        tried[k] = k <= truth
    assert max(k for k, ok in tried.items() if ok) == truth
    assert list(tried)[:4] == [2, 4, 8, 16] and ended(tried, ramp) == "found"
    small = argparse.Namespace(start=1, max_sessions=4)
    assert next_load({1: False}, small) is None and ended({1: False}, small) == "found"
    assert next_load({1: True, 2: True, 4: True}, small) is None
    assert ended({1: True, 2: True, 4: True}, small) == "max-sessions"
    assert ended({1: True, 2: True}, small) == "budget"  # 4 was not tried: 2 is a lower bound
