"""The ``mouthpiece train eval`` command: :func:`add_arguments` adds its options to a parser and
:func:`run_from_args` compares two videos or reconstructs a held-out part with checkpoints, prints
the table and optionally writes the JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.evaluation.common import DOCS, FPS, EvaluationError
from engine.evaluation.compare import evaluate_video
from engine.evaluation.networks import load_networks
from engine.evaluation.reconstruction import evaluate_checkpoints
from engine.evaluation.report import format_table, to_json
from engine.evaluation.syncnet import SYNCNET_VSHIFT
from engine.synth.backends import BACKENDS, DTYPES
from engine.synth.neural import DubConfig


def _range(text: str, kind: type) -> tuple:
    try:
        a, b = text.split(":")
        return kind(a), kind(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the evaluation options to ``parser`` (``mouthpiece train eval``)."""
    g = parser.add_argument_group(
        "compare two videos",
        "a generated video and the reference it should reproduce, aligned by frame index",
    )
    g.add_argument("--generated", metavar="MP4", help="the generated (dubbed) video")
    g.add_argument("--reference", metavar="MP4", help="the reference video (the ground truth frames)")
    g.add_argument("--audio", metavar="FILE", help="audio for SyncNet (default: the generated video's track)")
    g.add_argument(
        "--skip-start",
        type=int,
        default=2,
        metavar="N",
        help="leave the first N frame pairs out (default 2: an IP_LAP dub repeats frame 2's face there)",
    )
    g.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames of each video")
    c = parser.add_argument_group(
        "reconstruction of a held-out part of a video",
        "dub the held-out frames with their own audio using the checkpoints and compare with the original",
    )
    c.add_argument("--video", metavar="MP4", help="the talking-head video with its own audio")
    c.add_argument(
        "--landmark-checkpoint", metavar="PATH", help="landmark transformer (default: found in checkpoints/)"
    )
    c.add_argument("--renderer-checkpoint", metavar="PATH", help="renderer (default: found in checkpoints/)")
    c.add_argument("--random-weights", action="store_true", help="stand-in weights (machinery only)")
    c.add_argument(
        "--held-out", type=lambda s: _range(s, float), metavar="START:END", help="held-out part in seconds"
    )
    c.add_argument(
        "--held-out-frames",
        type=lambda s: _range(s, int),
        metavar="FIRST:END",
        help="held-out part as 25 fps frame indices (END exclusive)",
    )
    c.add_argument("--refs", default="25", help="renderer reference images N, or 'auto' for L/5 (default 25)")
    dc = DubConfig()
    c.add_argument("--batch", type=int, default=dc.batch, help=f"windows per model call (default {dc.batch})")
    c.add_argument(
        "--backend", default=dc.backend, choices=BACKENDS, help=f"renderer backend (default {dc.backend})"
    )
    c.add_argument(
        "--dtype", default=dc.dtype, choices=tuple(DTYPES), help=f"renderer precision (default {dc.dtype})"
    )
    c.add_argument("--cache-dir", metavar="DIR", help="avatar cache folder (default: the user cache)")
    c.add_argument("--save-video", metavar="MP4", help="also write the dubbed held-out part here")
    n = parser.add_argument_group("optional metric networks", f"files you supply; see {DOCS}")
    n.add_argument("--lpips-model", metavar="FILE", help="LPIPS network (.pt TorchScript or .onnx)")
    n.add_argument("--fid-model", metavar="FILE", help="Inception-v3 pool3 feature network for FID")
    n.add_argument("--arcface-model", metavar="FILE", help="ArcFace embedding network for CSIM")
    n.add_argument("--syncnet-model", metavar="FILE", help="SyncNet TorchScript with forward_lip/forward_aud")
    n.add_argument("--syncnet-lip", metavar="FILE", help="SyncNet lip (video) network (with --syncnet-audio)")
    n.add_argument("--syncnet-audio", metavar="FILE", help="SyncNet audio network (with --syncnet-lip)")
    n.add_argument("--vshift", type=int, default=SYNCNET_VSHIFT, help="SyncNet offsets searched: +-N frames")
    o = parser.add_argument_group("output")
    o.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    o.add_argument("--json", metavar="PATH", help="also write the result as JSON ('-' for stdout)")
    o.add_argument("--per-frame", action="store_true", help="include per-frame values in the JSON")
    return parser


def run_from_args(args: argparse.Namespace) -> int:
    """Run the evaluation the parsed options ask for, print the table; returns the exit status."""
    compare = args.generated is not None or args.reference is not None
    recon = args.video is not None
    if compare == recon:
        raise EvaluationError(
            "give either --generated and --reference (compare two videos) or --video (reconstruction "
            "of a held-out part with checkpoints)"
        )
    if compare and (args.generated is None or args.reference is None):
        raise EvaluationError("--generated and --reference go together")
    nets = load_networks(
        lpips=args.lpips_model,
        fid=args.fid_model,
        arcface=args.arcface_model,
        syncnet=args.syncnet_model,
        syncnet_lip=args.syncnet_lip,
        syncnet_audio=args.syncnet_audio,
        device=args.device,
    )
    if compare:
        result = evaluate_video(
            args.generated,
            args.reference,
            audio=args.audio,
            skip_start=args.skip_start,
            max_frames=args.max_frames,
            networks=nets,
            vshift=args.vshift,
            per_frame=args.per_frame,
        )
        title = f"{args.generated} against {args.reference}"
    else:
        from engine.synth.neural import DubConfig

        refs = args.refs if args.refs == "auto" else int(args.refs)
        result = evaluate_checkpoints(
            args.video,
            args.landmark_checkpoint,
            args.renderer_checkpoint,
            held_out=args.held_out,
            held_out_frames=args.held_out_frames,
            random_weights=args.random_weights,
            n_refs=refs,
            dub_config=DubConfig(
                batch=args.batch, device=args.device, backend=args.backend, dtype=args.dtype
            ),
            networks=nets,
            cache_dir=args.cache_dir,
            save_video=args.save_video,
            vshift=args.vshift,
            per_frame=args.per_frame,
        )
        a, b = result["held_out"]["frames"]
        title = f"reconstruction of {args.video}, frames {a}..{b} ({a / FPS:.2f}-{b / FPS:.2f} s)"
    text = to_json(result)
    if args.json == "-":
        print(text)
    else:
        print(title)
        print(format_table(result))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n")
            print(f"wrote {args.json}")
    return 0
