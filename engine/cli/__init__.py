"""The ``mouthpiece`` command line (also ``python -m engine``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


def tool_main(
    parser: argparse.ArgumentParser,
    run,
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, RuntimeError),
) -> int:
    """The ``main`` of a command module (``python -m engine.evaluation`` and the like): parse ``argv``,
    call ``run(args)`` for the exit status, and turn one of ``errors`` into a single
    ``PROG: error: ...`` line on stderr and status 2 (argparse's own convention), Ctrl+C into 130."""
    args = parser.parse_args(argv)
    try:
        return run(args)
    except errors as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


@dataclass
class VerifyReport:
    path: str
    usable: bool = False
    kind: str | None = None
    file_format: str | None = None
    dtype: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    parameters: int | None = None
    perceptual_tensors: int = 0
    forward_seconds: float | None = None
    problems: list[str] = field(default_factory=list)


def _dummy_inputs(kind: str, generator):
    import torch

    if kind == "landmark_generator":
        return (
            torch.rand(1, 5, 1, 80, 16, generator=generator) * 8 - 4,
            torch.rand(1, 5, 2, 74, generator=generator),
            torch.rand(1, 15, 2, 74, generator=generator),
            torch.rand(1, 15, 2, 57, generator=generator),
        )
    return (
        torch.rand(1, 1, 3, 128, 128, generator=generator),
        torch.rand(1, 5, 3, 128, 128, generator=generator),
        torch.rand(1, 2, 3, 128, 128, generator=generator),
        torch.rand(1, 2, 3, 128, 128, generator=generator),
        torch.rand(1, 1, 1, 80, 16, generator=generator) * 8 - 4,
    )


def verify_checkpoint(path: str | Path, run_forward: bool = True) -> VerifyReport:
    """Check one file: which network, names and shapes, one CPU forward pass, sha256."""
    import torch

    import models
    from models.checkpoint import checkpoint_problems

    report = VerifyReport(path=str(path))
    p = Path(path)
    if not p.is_file():
        report.problems.append("file not found" if not p.exists() else "not a regular file")
        return report
    report.size_bytes = p.stat().st_size
    report.sha256 = models.sha256(p)
    try:
        ckpt = models.read_checkpoint(p)
    except (models.CheckpointError, FileNotFoundError) as e:
        report.problems.append(str(e).removeprefix(f"{p}: "))
        return report
    report.kind, report.file_format = ckpt.kind, ckpt.file_format
    report.dtype = str(ckpt.dtype).removeprefix("torch.")
    report.perceptual_tensors = len(ckpt.perceptual)
    model, problems = checkpoint_problems(ckpt)
    report.parameters = sum(t.numel() for t in model.parameters())
    report.problems += problems
    if report.problems:
        return report
    if run_forward:
        model.load_state_dict(ckpt.state_dict)
        model.eval()
        inputs = _dummy_inputs(ckpt.kind, torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model(*inputs)
        report.forward_seconds = round(time.perf_counter() - t0, 4)
        outs = out if isinstance(out, tuple) else (out,)
        expected = [(5, 2, 57)] if ckpt.kind == "landmark_generator" else [(1, 3, 128, 128), (1, 3, 128, 128)]
        for o, shape in zip(outs, expected, strict=True):
            if tuple(o.shape) != shape:
                report.problems.append(f"forward pass gave shape {tuple(o.shape)}, expected {shape}")
            if not torch.isfinite(o).all():
                report.problems.append("forward pass produced NaN or infinite values")
    report.usable = not report.problems
    return report


def _print_report(r: VerifyReport) -> None:
    status = "OK  " if r.usable else "FAIL"
    print(f"{status} {r.path}")
    if r.kind:
        print(f"     network:    {r.kind}  ({r.file_format}, {r.dtype})")
        print(f"     parameters: {r.parameters:,}")
        if r.kind == "renderer":
            vgg = f"{r.perceptual_tensors} tensors (kept for training)" if r.perceptual_tensors else "absent"
            print(f"     VGG19:      {vgg}")
    if r.sha256:
        print(f"     sha256:     {r.sha256}  ({r.size_bytes:,} bytes)")
    if r.forward_seconds is not None:
        print(f"     forward:    {r.forward_seconds * 1000:.0f} ms on the CPU")
    for problem in r.problems:
        for i, line in enumerate(problem.splitlines()):
            print(f"     {'problem:   ' if i == 0 else '           '} {line.strip()}")


def cmd_checkpoints_verify(args) -> int:
    reports = [verify_checkpoint(p, run_forward=not args.no_forward) for p in args.paths]
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        for r in reports:
            _print_report(r)
    return 0 if all(r.usable for r in reports) else 1


def cmd_checkpoints_convert(args) -> int:
    import models

    out = models.convert(args.src, args.dst, half=args.half, keep_perceptual=not args.drop_perceptual)
    print(f"wrote {out} ({'float16' if args.half else 'float32'}), sha256 {models.sha256(out)}")
    return 0


def cmd_checkpoints_standin(args) -> int:
    import models

    out = Path(args.out)
    for kind, name in (("landmark_generator", "landmark"), ("renderer", "renderer")):
        path = models.write_standin(kind, out / f"standin_{name}_seed{args.seed}.pth", seed=args.seed)
        print(f"wrote {path}")
    print("These are stand-in weights (a deterministic recipe), NOT trained weights: faces look like noise.")
    return 0


def _avatar_config(args):
    from engine.core.avatar import AvatarConfig

    refs = args.refs if args.refs == "auto" else int(args.refs)
    return AvatarConfig(n_refs=refs, smooth_boxes=args.smooth_boxes)


def cmd_prepare(args) -> int:
    from engine.core.avatar import prepare_avatar

    avatar = prepare_avatar(args.avatar, _avatar_config(args), args.cache)
    print(avatar.report.summary())
    if avatar.report.filled:
        print(f"frames without a face (filled from neighbours): {avatar.report.filled}")
    return 0


def cmd_dub(args) -> int:
    from engine.offline.dub import dub_file
    from engine.synth.neural import DubConfig

    summary = dub_file(
        args.avatar,
        args.audio,
        args.out,
        config=DubConfig(batch=args.batch, device=args.device, backend=args.backend, dtype=args.precision),
        avatar_config=_avatar_config(args),
        landmark_checkpoint=args.landmark_checkpoint,
        renderer_checkpoint=args.renderer_checkpoint,
        random_weights=args.random_weights,
        save_faces=args.save_faces,
        cache_dir=args.cache,
        progress=not args.quiet,
        renderer=args.renderer,
    )
    print(summary.text())
    if summary.faces_path:
        print(f"generated faces saved to {summary.faces_path}")
    if summary.random_weights:
        print(
            "NOTE: made with RANDOM (stand-in) weights: the faces are not meant to look real.",
            file=sys.stderr,
        )
    return 0


def _refs(value: str):
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of references or 'auto'") from None
    if n < 1:
        raise argparse.ArgumentTypeError("at least one reference is needed")
    return n


def _avatar_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--refs", type=_refs, default=25, help="reference images N, or 'auto' for L/5 (default 25)"
    )
    p.add_argument(
        "--smooth-boxes",
        type=int,
        default=0,
        metavar="K",
        help="smooth crop boxes over K frames (default off)",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="avatar cache folder (default ~/.cache/mouthpiece/avatars or $MOUTHPIECE_CACHE)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mouthpiece", description="Real-time lip-sync avatar engine (IP_LAP)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ck = sub.add_parser("checkpoints", help="verify, convert and create checkpoints")
    cks = ck.add_subparsers(dest="action", required=True)

    v = cks.add_parser("verify", help="check that files are usable IP_LAP checkpoints")
    v.add_argument("paths", nargs="+", metavar="PATH")
    v.add_argument("--json", action="store_true", help="print a JSON report")
    v.add_argument("--no-forward", action="store_true", help="skip the test forward pass")
    v.set_defaults(func=cmd_checkpoints_verify)

    c = cks.add_parser("convert", help="convert a checkpoint to safetensors (fast loading)")
    c.add_argument("src", metavar="IN")
    c.add_argument("dst", metavar="OUT", help="output path ending in .safetensors")
    c.add_argument("--half", action="store_true", help="store float16 weights")
    c.add_argument("--drop-perceptual", action="store_true", help="leave out the renderer's VGG19 tensors")
    c.set_defaults(func=cmd_checkpoints_convert)

    s = cks.add_parser("standin", help="write deterministic stand-in weights (for tests and demos)")
    s.add_argument(
        "--out", default="checkpoints/standin", help="output folder (default: checkpoints/standin)"
    )
    s.add_argument("--seed", type=int, default=1)
    s.set_defaults(func=cmd_checkpoints_standin)

    pr = sub.add_parser("prepare", help="prepare (and cache) an avatar from a video or photo")
    pr.add_argument("avatar", metavar="AVATAR", help="video (any frame rate) or image")
    _avatar_options(pr)
    pr.set_defaults(func=cmd_prepare)

    d = sub.add_parser("dub", help="make an avatar speak an audio file: a lip-synced MP4")
    d.add_argument("--avatar", required=True, metavar="VIDEO|IMAGE")
    d.add_argument("--audio", required=True, metavar="AUDIO", help="wav, mp3, m4a, ... or a video's audio")
    d.add_argument("--out", required=True, metavar="OUT.mp4")
    _avatar_options(d)
    d.add_argument("--batch", type=int, default=4, metavar="B", help="windows per model call (default 4)")
    d.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    d.add_argument(
        "--backend",
        default="fast",
        choices=("fast", "plain", "cuda-graph", "onnx"),
        help="model backend (default fast; plain = the authors' mathematics as written; "
        "cuda-graph needs a GPU; onnx = ONNX Runtime, CUDA/TensorRT with mouthpiece[gpu])",
    )
    d.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16", "bf16"),
        help="renderer precision (default fp32)",
    )
    d.add_argument(
        "--landmark-checkpoint", metavar="P", help="default: checkpoints/landmarkgenerator_checkpoint.pth"
    )
    d.add_argument("--renderer-checkpoint", metavar="P", help="default: checkpoints/renderer_checkpoint.pth")
    d.add_argument("--save-faces", metavar="FACES.npz", help="also save the raw 128x128 generated faces")
    d.add_argument("--random-weights", action="store_true", help="run without trained weights (noise faces)")
    d.add_argument(
        "--renderer",
        default="neural",
        choices=("neural", "retrieval"),
        help="neural (IP_LAP, default) or retrieval (the CPU preview: mouths from the avatar, no weights)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_dub)

    from streaming.server import add_arguments

    sv = sub.add_parser("serve", help="the live server: browser page, WebRTC, WHIP/WHEP, websocket PCM")
    add_arguments(sv)
    sv.set_defaults(func=cmd_serve)

    t = sub.add_parser("train", help="preprocess videos, train or fine-tune IP_LAP, evaluate")
    ts = t.add_subparsers(dest="action", required=True)
    _add_train_commands(ts)

    b = sub.add_parser("bench", help="measure a running server as a user sees and hears it")
    bs = b.add_subparsers(dest="action", required=True)
    lat = bs.add_parser(
        "latency",
        help="audio in -> audio out, -> mouth open, A/V offset, fps, drops (real WebRTC client)",
        description="A WebRTC client sends a test signal (speech onsets and clicks) as its microphone and "
        "measures, per event, audio in -> returned click, audio in -> the first frame whose mouth opens "
        "(FaceMesh), the A/V offset, plus frame jitter and drops; with --load K sessions at once and the "
        "server's CPU and memory from /metrics; --find-max ramps K. Definitions: streaming/bench.py.",
    )
    target = lat.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8080")
    target.add_argument(
        "--local", action="store_true", help="start a server in this process (127.0.0.1, loopback ICE)"
    )
    lat.add_argument("--avatar", metavar="NAME", help="the sessions' avatar (default: the server's)")
    lat.add_argument(
        "--seconds", type=float, default=20.0, help="test signal per session, seconds (default 20)"
    )
    lat.add_argument(
        "--period", type=float, default=1.6, help="seconds from one event to the next (default 1.6)"
    )
    lat.add_argument("--load", type=int, default=1, metavar="K", help="K concurrent sessions (default 1)")
    lat.add_argument(
        "--find-max",
        action="store_true",
        help="ramp K = 1, 2, ...: the largest K that holds --min-fps and --bound-ms",
    )
    lat.add_argument(
        "--max-load", type=int, default=16, metavar="K", help="--find-max stops here (default 16)"
    )
    lat.add_argument(
        "--bound-ms", type=float, help="p95 mouth latency bound of --find-max (default: server delay + 200)"
    )
    lat.add_argument(
        "--min-fps", type=float, default=24.5, help="received fps --find-max needs (default 24.5)"
    )
    lat.add_argument("--json", metavar="OUT.json", help="write the full report")
    lat.add_argument("--plot", metavar="OUT.png", help="timeline and histograms (needs mouthpiece[bench])")
    lat.add_argument(
        "--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN URL (repeat)"
    )
    lat.add_argument(
        "--loopback",
        action="store_true",
        help="ICE on 127.0.0.1 only (a server here started with --loopback)",
    )
    lat.add_argument(
        "--timeout", type=float, default=30.0, help="connect time limit per session (default 30 s)"
    )
    loc = lat.add_argument_group("the --local server")
    loc.add_argument(
        "--delay-ms", type=float, default=400.0, help="audio in -> lips and audio out (default 400)"
    )
    loc.add_argument("--renderer", default="auto", choices=("auto", "neural", "retrieval", "none"))
    loc.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    loc.add_argument("--avatar-file", metavar="FILE", help="its avatar (default: the bundled portrait)")
    loc.add_argument(
        "--checkpoint-dir", default="checkpoints", metavar="DIR", help="its weights (default checkpoints)"
    )
    loc.add_argument("--cache", default=None, help="its avatar cache folder")
    lat.set_defaults(func=cmd_bench_latency)
    return parser


def bench_config_from_args(args):
    from streaming.bench import BenchConfig, LocalServer, SignalConfig

    local = None
    if args.local:
        local = LocalServer(
            delay_ms=args.delay_ms,
            renderer=args.renderer,
            device=args.device,
            avatar_file=args.avatar_file,
            checkpoint_dir=args.checkpoint_dir,
            cache_dir=args.cache,
        )
    return BenchConfig(
        url=args.url,
        local=local,
        avatar=args.avatar,
        signal=SignalConfig(seconds=args.seconds, period_s=args.period),
        load=args.load,
        find_max=args.find_max,
        max_load=args.max_load,
        bound_ms=args.bound_ms,
        min_fps=args.min_fps,
        ice_servers=tuple(args.ice_server),
        loopback=args.loopback,
        connect_timeout_s=args.timeout,
    )


def cmd_bench_latency(args) -> int:
    import asyncio

    from streaming import bench

    cfg = bench_config_from_args(args)
    if args.plot:
        bench.require_matplotlib()  # before the run, not after it
    report = asyncio.run(bench.run_bench(cfg, progress=lambda m: print(f"mouthpiece: {m}", flush=True)))
    print(bench.format_report(report))
    if args.json:
        print(f"wrote {bench.write_json(report, args.json)}")
    if args.plot:
        print(f"wrote {bench.write_plot(report, args.plot)}")
    return 0 if report.ok else 1


def _add_train_commands(ts) -> None:
    """``mouthpiece train preprocess|landmark|renderer|presenter|eval`` (each module owns its options)."""
    import engine.evaluation as evaluate
    from engine.training import finetune, preprocess

    p = ts.add_parser(
        "preprocess",
        help="a folder of talking-face videos (LRS2 layout too) -> a training dataset",
        description="25 fps, FaceMesh, training crops (5 px margin), sketches, landmarks and mel of every "
        "video; parallel, resumable, bad files skipped and reported (docs/training_data.md).",
    )
    preprocess.add_arguments(p)
    p.set_defaults(func=preprocess.run_from_args)
    for name, module, what in (
        ("landmark", "engine.training.landmark_stage", "the landmark transformer (L1 + velocity loss)"),
        (
            "renderer",
            "engine.training.renderer_stage",
            "the renderer (warp + perceptual + style, LSGAN + feature matching)",
        ),
    ):
        p = ts.add_parser(name, help=f"train {what} on a preprocessed dataset", description=f"Train {what}.")
        _stage(module).add_arguments(p)
        p.set_defaults(func=cmd_train_stage, stage_module=module)
    p = ts.add_parser(
        "presenter",
        help="fine-tune both networks on one presenter's video (one command)",
        description=finetune.__doc__.split("\n\n")[0] if finetune.__doc__ else None,
    )
    finetune.add_arguments(p)
    p.set_defaults(func=finetune.run_from_args)
    p = ts.add_parser(
        "eval",
        help="PSNR, SSIM, LipLMD (+ LPIPS, FID, CSIM, SyncNet with their networks) of a dub or of weights",
        description="Compare a generated video with its reference, or dub the held-out part of a video with "
        "its own audio using given checkpoints and compare (docs/evaluation.md).",
    )
    evaluate.add_arguments(p)
    p.set_defaults(func=evaluate.run_from_args)


def _stage(module: str):
    import importlib

    return importlib.import_module(module)


def cmd_train_stage(args) -> int:
    result = _stage(args.stage_module).run_from_args(args)
    last = ", ".join(f"{k} {v:.4g}" for k, v in (result.get("last") or {}).items())
    print(f"trained to step {result['step']} (epoch {result['epoch']}): {last}; run folder {result['out']}")
    return 0


def cmd_serve(args) -> int:
    from streaming.server import serve

    return serve(args)


def main(argv: list[str] | None = None) -> int:
    from models import CheckpointError

    errors = (FileNotFoundError, CheckpointError, ValueError, RuntimeError)
    return tool_main(build_parser(), lambda args: args.func(args), argv, errors)


if __name__ == "__main__":
    sys.exit(main())
