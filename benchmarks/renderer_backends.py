"""Renderer backends: latency, throughput and fidelity, with the authors' procedure as baseline.

CPU (this is what benchmarks/results/renderer_backends_cpu.* was made with):

    .venv/bin/python benchmarks/renderer_backends.py --device cpu --refs 1 5 25 --batch 1 4 \\
        --backends fast onnx --precisions fp32

GPU (one command; needs mouthpiece[gpu] for the onnx rows):

    .venv/bin/python benchmarks/renderer_backends.py --device cuda --refs 1 5 25 --batch 1 8 32 \\
        --backends fast cuda-graph onnx --precisions fp32 fp16 bf16 --repeat 50

``--backends`` also takes ``onnx-trt`` (ONNX Runtime with the TensorRT execution provider, CUDA
only). On CUDA the ``onnx`` rows use the CUDA execution provider; a row whose provider is missing
from this onnxruntime build, or was not taken by the session (ONNX Runtime falls back quietly), is
skipped, and every skipped variant (or one whose run raised) is recorded with its reason (``skipped``
in the JSON). The ONNX
graphs are dynamic in N and the batch, so each is exported once per run. ``--no-baselines`` leaves
out the authors' procedure and the plain model, ``--no-fidelity`` the fidelity table, ``--stem``
names the result files (``benchmarks/gpu_suite.py`` uses all three).

For every N: two baselines, (a) the authors' procedure re-enacted (a Python loop over the N
references, float32, one frame per call) and (b) the plain model (all references batched, float32,
``batch`` frames per call); then every backend x precision x batch through the common backend
interface (``engine.synth.backends``), with the reference bank built once beforehand. Per call: p50, p95
and p99 latency; per frame: p50 latency; throughput in frames per second.

Fidelity: each fast path against the plain float32 model (eager), max abs difference and PSNR
(images in [0, 1]), on the golden inputs (N = 1 and 3) and on real frames of
``../shared/media/talk_b_25fps.mp4`` with ``speech_a_44k.wav`` (real crops, real landmark sketches,
real mel; skipped when absent). Stand-in weights are used throughout: timings do not depend on the
values; fidelity figures are for these weights (trained weights are smoother, not rougher).

Writes benchmarks/results/renderer_backends_<device>.json and .md (device, versions, command, date).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import models  # noqa: E402
from benchmarks.common import (  # noqa: E402
    RESULTS,
    run_meta,
    standin_renderer,
    timed,
    versions_text,
    write_results,
)
from benchmarks.renderer_speed import authors_loop  # noqa: E402
from engine.core.stats import summary  # noqa: E402
from engine.synth.backends import DTYPES, make_renderer_backend  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"


ONNX_VARIANTS = {"onnx": "CUDAExecutionProvider", "onnx-trt": "TensorrtExecutionProvider"}
_onnx_built: dict[tuple[str, str], object] = {}  # (variant, device) -> backend, or the exception


def onnx_backend(name: str, renderer: models.Renderer, device: str):
    """The ONNX Runtime backend of ``name`` (built once per run); raises RuntimeError when the execution
    provider it needs is not in this onnxruntime build or the session did not take it."""
    key = (name, device)
    if key not in _onnx_built:
        try:
            import onnxruntime as ort

            from engine.synth.backends.onnx import OnnxRenderer

            want = ONNX_VARIANTS[name] if device.startswith("cuda") else "CPUExecutionProvider"
            if name == "onnx-trt" and not device.startswith("cuda"):
                raise RuntimeError("the TensorRT execution provider needs --device cuda")
            available = ort.get_available_providers()
            if want not in available:
                raise RuntimeError(
                    f"{want} is not in this onnxruntime build (available: {', '.join(available)})"
                )
            backend = OnnxRenderer.from_torch(renderer, device=device, tensorrt=name == "onnx-trt")
            used = backend._render.sess.get_providers()
            if used[0] != want:
                raise RuntimeError(f"the session fell back to {used[0]} ({want} could not be initialised)")
            backend.providers = used
            _onnx_built[key] = backend
        except Exception as e:  # noqa: BLE001 - onnxruntime's own errors are not RuntimeErrors
            _onnx_built[key] = e
    got = _onnx_built[key]
    if isinstance(got, Exception):
        raise got
    return got


def make_backend(name: str, renderer: models.Renderer, dtype: torch.dtype, device: str):
    if name in ONNX_VARIANTS:
        if dtype != torch.float32:
            raise ValueError("the onnx rows are float32")
        return onnx_backend(name, renderer, device)
    return make_renderer_backend(name, renderer, dtype)


def skip(skipped: list[dict], name: str, prec: str, err: Exception) -> None:
    reason = f"{type(err).__name__}: {err}"
    if not any(s["variant"] == name and s["precision"] == prec for s in skipped):
        skipped.append({"variant": name, "precision": prec, "reason": reason})
    print(f"skip {name} {prec}: {reason}", flush=True)


def row(label: str, n: int, batch: int, precision: str, times: list[float]) -> dict:
    per_frame = statistics.median(times) / batch
    ms = summary(times, 1000, keys=("p50", "p95", "p99"), digits=2)
    return {
        "variant": label,
        "refs": n,
        "batch": batch,
        "precision": precision,
        "p50_ms": ms["p50"],
        "p95_ms": ms["p95"],
        "p99_ms": ms["p99"],
        "ms_per_frame": round(1000 * per_frame, 2),
        "frames_per_s": round(1 / per_frame, 2),
        "times_s": [round(t, 5) for t in times],
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def inputs(n: int, batch: int, device: str, gen: torch.Generator):
    refs = tuple(torch.rand(n, 3, 128, 128, generator=gen).to(device) for _ in range(2))
    args = (
        torch.rand(batch, 3, 128, 128, generator=gen).to(device),
        torch.rand(batch, 5, 3, 128, 128, generator=gen).to(device),
        (torch.rand(batch, 1, 80, 16, generator=gen) * 8 - 4).to(device),
    )
    return refs, args


def speed(renderer, args, skipped: list[dict], progress=None) -> list[dict]:
    """The speed rows; ``progress(rows)`` is called after each N (the results so far are written)."""
    dev = args.device
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in args.refs:
        repeat = args.repeat if n <= 5 else max(2, args.repeat // 3)
        refs, a1 = inputs(n, 1, dev, gen)
        plain_args = lambda x, r=refs: (  # noqa: E731
            x[0][:, None],
            x[1],
            r[0].expand(x[0].shape[0], *r[0].shape),
            r[1].expand(x[0].shape[0], *r[1].shape),
            x[2][:, None],
        )
        with torch.inference_mode():
            base = None
            if args.baselines:
                t = timed(lambda pa=plain_args, a1=a1: authors_loop(renderer, *pa(a1)), dev, repeat, 1)
                rows.append(row("authors' procedure (loop over refs)", n, 1, "fp32", t))
                base = rows[-1]["ms_per_frame"]
                print(rows[-1]["variant"], n, rows[-1]["ms_per_frame"], flush=True)
            for batch in args.batch:
                _, ab = inputs(n, batch, dev, gen)
                if args.baselines:
                    t = timed(lambda pa=plain_args, ab=ab: renderer(*pa(ab)), dev, repeat, 1)
                    rows.append(row("plain model", n, batch, "fp32", t))
                    print(rows[-1]["variant"], n, batch, rows[-1]["ms_per_frame"], flush=True)
                for name in args.backends:
                    for prec in args.precisions:
                        try:
                            backend = make_backend(name, renderer, DTYPES[prec], dev)
                            backend.set_references(*refs)
                            t = timed(lambda b=backend, ab=ab: b.render(*ab), dev, repeat, 2)
                        except Exception as e:  # noqa: BLE001 - recorded with its reason; the others go on
                            skip(skipped, name, prec, e)
                            continue
                        rows.append(row(name, n, batch, prec, t))
                        if name in ONNX_VARIANTS:
                            rows[-1]["providers"] = backend.providers
                        print(name, prec, n, batch, rows[-1]["ms_per_frame"], flush=True)
            for r in rows:
                if r["refs"] == n:
                    r["speedup_vs_authors"] = round(base / r["ms_per_frame"], 2) if base else None
        if progress is not None:
            progress(rows)
    return rows


def real_cases(n: int):
    """Real frames: talk_b crops and landmark sketches, speech_a mel; None when media is absent."""
    if not (MEDIA / "talk_b_25fps.mp4").is_file():
        return None
    from engine.core.audio import load_audio, mel_chunks, melspectrogram
    from engine.core.avatar import AvatarConfig, prepare_avatar
    from engine.core.sketch import sketches_to_tensor

    with tempfile.TemporaryDirectory() as cache:
        av = prepare_avatar(MEDIA / "talk_b_25fps.mp4", AvatarConfig(n_refs=n), cache)
        chunks = mel_chunks(melspectrogram(load_audio(MEDIA / "speech_a_44k.wav")))
        frames = [10, 40, 70, 100]
        idx = np.array([[f + k for k in range(5)] for f in frames])
        sk = sketches_to_tensor(av.full[idx.ravel()], av.crop_hw[idx.ravel()]).reshape(
            len(frames), 5, 3, 128, 128
        )
        faces = torch.from_numpy((av.crops[[f + 2 for f in frames]] / 255.0).astype(np.float32)).permute(
            0, 3, 1, 2
        )
        mel = torch.from_numpy(chunks[frames])[:, None]
        return av.reference_tensors(), (faces, sk, mel)


def golden_case(n: int):
    with np.load(ROOT / "tests" / "golden" / f"golden_renderer_N{n}_seed1.npz") as g:
        t = {k: torch.from_numpy(g[k]) for k in g.files}
    return (t["ref_imgs"][0], t["ref_sketches"][0]), (t["face"][:, 0], t["target_sketches"], t["mel"][:, 0])


def fidelity(renderer, args) -> list[dict]:
    dev = args.device
    cases = [("golden N=1", golden_case(1)), ("golden N=3", golden_case(3))]
    real = real_cases(5)
    if real is not None:
        cases.append(("talk_b frames, N=5", real))
    rows = []
    with torch.inference_mode():
        for label, (refs, ins) in cases:
            refs = tuple(r.to(dev) for r in refs)
            ins = tuple(x.to(dev) for x in ins)
            reference = make_renderer_backend("plain", renderer, torch.float32)
            reference.set_references(*refs)
            ref_out = reference.render(*ins).cpu().numpy()
            for name in args.backends:
                for prec in args.precisions:
                    try:
                        backend = make_backend(name, renderer, DTYPES[prec], dev)
                        backend.set_references(*refs)
                        out = backend.render(*ins).float().cpu().numpy()
                    except Exception:  # noqa: BLE001 - recorded by speed()
                        continue
                    rows.append(
                        {
                            "case": label,
                            "variant": name,
                            "precision": prec,
                            "max_abs_diff": float(np.abs(out - ref_out).max()),
                            "psnr_db": round(psnr(out, ref_out), 1),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--refs", type=int, nargs="+", default=[1, 5, 25])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--backends", nargs="+", default=["fast", "onnx"])
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=list(DTYPES))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-baselines", dest="baselines", action="store_false", help="backends only")
    ap.add_argument("--no-fidelity", dest="fidelity", action="store_false", help="speed only")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--stem", help="result file stem (default renderer_backends_<device>)")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("CUDA is not available on this machine")

    renderer = standin_renderer(args.device)

    skipped: list[dict] = []
    meta = run_meta("renderer_backends.py", args.device)
    stem = args.stem or f"renderer_backends_{args.device.split(':')[0]}"

    def write(rows: list[dict], fid: list[dict], complete: bool) -> None:
        # written after each N and at the end: a run stopped from outside keeps what it measured
        payload = {"meta": meta, "speed": rows, "fidelity": fid, "skipped": skipped, "complete": complete}
        write_results(args.out, stem, payload, report(meta, rows, fid, skipped))

    rows = speed(renderer, args, skipped, progress=lambda r: write(r, [], False))
    fid = fidelity(renderer, args) if args.fidelity else []
    write(rows, fid, True)


def report(meta: dict, rows: list[dict], fid: list[dict], skipped: list[dict]) -> list[str]:
    lines = [
        f"Renderer backends — {meta['device']}, {versions_text(meta)}, {meta['date']}",
        f"Command: `{meta['command']}`",
        "",
        "| N | variant | precision | batch | p50 ms/call | p95 | p99 | ms/frame | frames/s | x authors |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['refs']} | {r['variant']} | {r['precision']} | {r['batch']} | {r['p50_ms']} "
            f"| {r['p95_ms']} | {r['p99_ms']} | {r['ms_per_frame']} | {r['frames_per_s']} "
            f"| {r['speedup_vs_authors'] or '-'} |"
        )
    if skipped:
        lines += ["", "Skipped (not run on this machine):", ""]
        lines += [f"- {sk['variant']} {sk['precision']}: {sk['reason']}" for sk in skipped]
    lines += (
        []
        if not fid
        else [
            "",
            "Fidelity against the plain float32 model:",
            "",
            "| inputs | variant | precision | max abs diff | PSNR dB |",
            "| --- | --- | --- | ---: | ---: |",
        ]
    )
    for f in fid:
        lines.append(
            f"| {f['case']} | {f['variant']} | {f['precision']} | {f['max_abs_diff']:.1e} | {f['psnr_db']} |"
        )
    return lines


if __name__ == "__main__":
    main()
