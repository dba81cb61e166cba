"""Time one forward pass of each IP_LAP network (plain models, float32, eager).

    .venv/bin/python benchmarks/models_forward.py [--device cpu|cuda] [--refs 1 5 25] [--repeat 5]

Writes ``benchmarks/results/models_forward_<device>.json`` and ``.md`` with the device, versions,
command and date. Stand-in weights are used: timings do not depend on the weight values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from benchmarks.common import RESULTS, run_meta, timed, write_results  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    dev = args.device
    g = torch.Generator().manual_seed(0)

    lm = models.standin_model(models.LANDMARK).to(dev)
    r = models.standin_model(models.RENDERER).to(dev)

    rows = []
    with torch.inference_mode():
        x = [
            torch.rand(1, 5, 1, 80, 16, generator=g),
            torch.rand(1, 5, 2, 74, generator=g),
            torch.rand(1, 15, 2, 74, generator=g),
            torch.rand(1, 15, 2, 57, generator=g),
        ]
        x = [t.to(dev) for t in x]
        ts = timed(lambda: lm(*x), dev, args.repeat)
        rows.append({"network": "landmark transformer", "batch": "1 window (T=5, Nl=15)", "times_s": ts})
        for n in args.refs:
            y = [
                torch.rand(1, 1, 3, 128, 128, generator=g),
                torch.rand(1, 5, 3, 128, 128, generator=g),
                torch.rand(1, n, 3, 128, 128, generator=g),
                torch.rand(1, n, 3, 128, 128, generator=g),
                torch.rand(1, 1, 1, 80, 16, generator=g),
            ]
            y = [t.to(dev) for t in y]
            ts = timed(lambda y=y: r(*y), dev, max(1, args.repeat if n < 25 else args.repeat // 2))
            rows.append({"network": "renderer", "batch": f"1 frame, N={n}", "times_s": ts})

    for row in rows:
        row["median_ms"] = round(1000 * statistics.median(row["times_s"]), 1)
        row["min_ms"] = round(1000 * min(row["times_s"]), 1)
    meta = run_meta("models_forward.py", dev)
    lines = [
        f"Plain-model forward pass, float32 eager — {meta['device']}, torch {meta['torch']}, {meta['date']}",
        f"Command: `{meta['command']}`",
        "",
        "| network | input | median ms | min ms |",
        "| --- | --- | ---: | ---: |",
    ]
    lines += [f"| {r['network']} | {r['batch']} | {r['median_ms']} | {r['min_ms']} |" for r in rows]
    write_results(args.out, f"models_forward_{dev.split(':')[0]}", {"meta": meta, "rows": rows}, lines)


if __name__ == "__main__":
    main()
