#!/usr/bin/env bash
# One-step set-up: a virtual environment in .venv with mouthpiece and its dev tools.
# torch is installed first and pinned so that pip picks the CPU build on machines without CUDA;
# set TORCH_SPEC (e.g. TORCH_SPEC="torch" on a CUDA machine) to choose another build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import torch, mediapipe, cv2, av, numpy; print('mouthpiece environment ready: torch', torch.__version__, '| numpy', numpy.__version__, '| mediapipe', mediapipe.__version__)"
