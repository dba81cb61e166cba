#!/usr/bin/env bash
# The GPU suite (benchmarks/gpu_suite.py; --help for its options): the CUDA tests, the renderer
# backends, live latency and sessions held, in under 8 minutes on a CUDA machine; --dry-run runs the
# same plumbing on the CPU on tiny sizes (--out DIR keeps its files out of benchmarks/results).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_suite.py "$@"
