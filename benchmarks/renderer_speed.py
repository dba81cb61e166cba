"""Per-frame renderer latency: the authors' per-reference loop vs the plain batched model vs FastRenderer.

    .venv/bin/python benchmarks/renderer_speed.py [--device cpu|cuda] [--refs 1 5 25] [--batch 1]
        [--repeat 5] [--repeat-large 2] [--variants authors plain shared fast fast_tr]

Variants (float32, eager, stand-in weights; timings do not depend on the weight values):

* ``authors``: a re-enactment of the authors' ``DenseFlowNetwork`` procedure: a Python loop over the
  N references, each one encoded and modulated, one frame per call (``authors_loop`` below).
* ``plain``: ``models.Renderer`` (all references as one batch), ``--batch`` frames per call.
* ``shared``: ``FastRenderer(fold_alignment=False)``: bank precomputed, modulations once per frame.
* ``fast``: ``FastRenderer()`` (the default: also folded alignment modulations).
* ``fast_tr``: ``FastRenderer(fold_translation=True)``: also folded translation modulations.

The variants are timed round-robin (one call of each in turn) so that load from other processes
hits them alike. The reference bank is built once before timing (its cost is reported apart).
``--repeat-large`` caps the repeats for N > 5. Writes ``benchmarks/results/renderer_speed_<device>.json``
and ``.md`` with the device, versions, command and UTC date.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from benchmarks.common import RESULTS, run_meta, standin_renderer, sync, write_results  # noqa: E402
from engine.core.stats import summary  # noqa: E402
from models.fast_renderer import FastRenderer  # noqa: E402
from models.renderer import WEIGHT_EPS, flow_to_deformation, warp  # noqa: E402

VARIANTS = ("authors", "plain", "shared", "fast", "fast_tr")
LABELS = {
    "authors": "authors' loop over references",
    "plain": "plain batched model",
    "shared": "FastRenderer, sharing only",
    "fast": "FastRenderer (default)",
    "fast_tr": "FastRenderer + folded translation",
}


def authors_loop(model: models.Renderer, face, target_sketches, ref_imgs, ref_sketches, mel) -> torch.Tensor:
    """The authors' procedure (``DenseFlowNetwork.forward`` + translation), one reference at a time.

    face (B, 1, 3, H, W), target_sketches (B, 5, 3, H, W), ref_imgs/ref_sketches (B, N, 3, H, W),
    mel (B, 1, 1, 80, 16) -> generated (B, 3, H, W).
    """
    fm = model.flow_module
    B, N, _, H, W = ref_imgs.shape
    half = (H // 2, W // 2)
    driving = torch.cat([target_sketches[:, i] for i in range(target_sketches.size(1))], dim=1)
    h1_sum, h2_sum, ref_sum, denom = 0.0, 0.0, 0.0, 0.0
    for i in range(N):
        ref_img, ref_sketch = ref_imgs[:, i], ref_sketches[:, i]
        h1 = F.relu(fm.conv1_bn(fm.conv1(torch.cat([ref_img, ref_sketch], dim=1))))
        h2 = F.relu(fm.conv2_bn(fm.conv2(h1)))
        driving_half = F.interpolate(driving, size=half, mode="nearest")
        s = fm.spade_layer_1(h2, driving_half)
        s = fm.spade_layer_2(s, driving_half)
        s = fm.pixel_shuffle_1(s)
        s = fm.spade_layer_4(s, driving)
        deformation = flow_to_deformation(fm.conv_4(s))
        weight = fm.conv_5(s)
        denom = denom + weight
        h1_sum = h1_sum + warp(h1, deformation) * weight
        h2_sum = h2_sum + warp(h2, deformation) * F.interpolate(weight, size=half, mode="nearest")
        ref_sum = ref_sum + warp(ref_img, deformation) * weight
    denom = denom + WEIGHT_EPS
    h1 = h1_sum / denom
    h2 = h2_sum / F.interpolate(denom, size=half, mode="nearest")
    ref = ref_sum / denom
    return model.translation(face[:, 0], driving, ref, h1, h2, mel.reshape(B, 1, *mel.shape[-2:]))


def bench_refs(r, fasts, n: int, args, gen: torch.Generator) -> list[dict]:
    dev, B = args.device, args.batch
    ref_imgs, ref_sketches = (torch.rand(n, 3, 128, 128, generator=gen).to(dev) for _ in range(2))
    face = torch.rand(B, 3, 128, 128, generator=gen).to(dev)
    sketches = torch.rand(B, 5, 3, 128, 128, generator=gen).to(dev)
    mel = torch.rand(B, 1, 80, 16, generator=gen).to(dev)
    plain_args = (
        face[:, None],
        sketches,
        ref_imgs.expand(B, *ref_imgs.shape),
        ref_sketches.expand(B, *ref_sketches.shape),
        mel[:, None],
    )

    calls, per_call_frames, bank_ms, outputs = {}, {}, {}, {}
    for name in args.variants:
        if name == "authors":  # one frame per call
            a1 = tuple(x[:1] for x in plain_args)
            calls[name] = lambda a1=a1: authors_loop(r, *a1)
            per_call_frames[name] = 1
        elif name == "plain":
            calls[name] = lambda: r(*plain_args)[0]
            per_call_frames[name] = B
        else:
            fast = fasts[name]
            t0 = time.perf_counter()
            bank = fast.encode_references(ref_imgs, ref_sketches)
            sync(dev)
            bank_ms[name] = 1000 * (time.perf_counter() - t0)
            calls[name] = lambda fast=fast, bank=bank: fast(bank, face, sketches, mel)
            per_call_frames[name] = B
    repeat = args.repeat if n <= 5 else min(args.repeat, args.repeat_large)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for name, fn in calls.items():  # warm-up, and the outputs for the differences
        outputs[name] = fn()
    sync(dev)
    for _ in range(repeat):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            sync(dev)
            times[name].append(time.perf_counter() - t0)

    rows = []
    for name in calls:
        per_frame = [t / per_call_frames[name] for t in times[name]]
        row = {
            "refs": n,
            "batch": per_call_frames[name],
            "variant": name,
            "label": LABELS[name],
            "times_s": times[name],
            "median_ms": round(1000 * statistics.median(per_frame), 1),
            "p95_ms": summary(per_frame, 1000, keys=("p95",), digits=1)["p95"],
        }
        if name in bank_ms:
            row["bank_ms"] = round(bank_ms[name], 1)
        if "plain" in outputs and name != "plain":
            k = outputs[name].shape[0]
            row["max_abs_diff_vs_plain"] = float(
                (outputs[name].float() - outputs["plain"][:k].float()).abs().max()
            )
        rows.append(row)
    for row in rows:
        for base in ("authors", "plain"):
            ref = next((x for x in rows if x["variant"] == base), None)
            if ref is not None:
                row[f"speedup_vs_{base}"] = round(ref["median_ms"] / row["median_ms"], 2)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--batch", type=int, default=1, help="frames per call for all but the authors' loop")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--repeat-large", type=int, default=2, help="repeats for N > 5")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("CUDA is not available")
    gen = torch.Generator().manual_seed(0)
    r = standin_renderer(args.device)
    fasts = {
        "shared": FastRenderer(r, fold_alignment=False).eval(),
        "fast": FastRenderer(r).eval(),
        "fast_tr": FastRenderer(r, fold_translation=True).eval(),
    }
    rows = []
    with torch.inference_mode():
        for n in args.refs:
            rows += bench_refs(r, fasts, n, args, gen)
            for row in rows[-len(args.variants) :]:
                print(
                    f"N={n:>3} {row['variant']:>8}: {row['median_ms']:9.1f} ms/frame"
                    f" (p95 {row['p95_ms']:.1f})"
                    f"  x{row.get('speedup_vs_authors', float('nan')):.2f} vs authors"
                    f"  x{row.get('speedup_vs_plain', float('nan')):.2f} vs plain"
                    f"  max|diff| {row.get('max_abs_diff_vs_plain', 0.0):.1e}",
                    flush=True,
                )

    dev = args.device.split(":")[0]
    meta = run_meta("renderer_speed.py", args.device, batch=args.batch)
    lines = [
        f"Renderer latency per frame, float32 eager — {meta['device']}, torch {meta['torch']},"
        f" {meta['date']}",
        f"Command: `{meta['command']}`",
        "",
        "Variants timed round-robin; `authors` renders one frame per call, the others "
        f"{args.batch} per call; FastRenderer's reference bank is built once beforehand (bank ms).",
        "",
        "| N | variant | median ms/frame | p95 ms | x vs authors | x vs plain | max abs diff vs plain"
        " | bank ms |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        diff = row.get("max_abs_diff_vs_plain")
        lines.append(
            f"| {row['refs']} | {row['label']} | {row['median_ms']} | {row['p95_ms']} "
            f"| {row.get('speedup_vs_authors', '')} | {row.get('speedup_vs_plain', '')} "
            f"| {'' if diff is None else f'{diff:.1e}'} | {row.get('bank_ms', '')} |"
        )
    write_results(args.out, f"renderer_speed_{dev}", {"meta": meta, "rows": rows}, lines)


if __name__ == "__main__":
    main()
