"""Voice to lips and the A/V offset at the far end of a call (issue 17): runs the far-end test of
tests/test_call.py (two headless Chromium pages in a call through ``/call``, the caller's camera
switched to the avatar, the preview renderer) and records its figures, with device, command and
date, in benchmarks/results/call_latency.json.

    .venv/bin/python benchmarks/call_latency.py [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "call_latency.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT.relative_to(ROOT)}")
    args = p.parse_args(argv)
    env = dict(os.environ, MOUTHPIECE_CALL_RESULTS=str(args.out.resolve()))
    test = "tests/test_call.py::test_far_end_avatar_speaks_with_the_callers_voice"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", test], cwd=ROOT, env=env)
    if not args.out.is_file():
        print("call_latency: the far-end test wrote no figures (see its output above)", file=sys.stderr)
        return 1
    figures = json.loads(args.out.read_text())
    print(
        f"voice to lips at the callee {figures['voice_to_lips_ms']:.0f} ms, A/V offset "
        f"{figures['av_offset_ms']:+.0f} ms; wrote {args.out}"
    )
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
