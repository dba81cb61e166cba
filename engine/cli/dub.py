"""``mouthpiece prepare`` (an avatar from a video or photo, cached) and ``mouthpiece dub`` (an avatar
speaks an audio file: a lip-synced MP4). Option defaults come from the configs they fill
(:class:`engine.core.avatar.AvatarConfig`, :class:`engine.synth.neural.DubConfig`) and the choices of
backend and precision from :mod:`engine.synth.backends`.
"""

from __future__ import annotations

import argparse
import re
import sys

from engine.core.avatar import AvatarConfig
from engine.core.options import whole_number
from engine.synth import canonical_renderer
from engine.synth.backends import BACKENDS, DTYPES
from engine.synth.neural import DubConfig

__all__ = ["add_avatar_options", "add_commands", "avatar_config"]


def avatar_config(args) -> AvatarConfig:
    """The avatar options (:func:`add_avatar_options`) as an :class:`AvatarConfig`."""
    refs = args.refs if args.refs == "auto" else int(args.refs)
    return AvatarConfig(n_refs=refs, smooth_boxes=args.smooth_boxes)


def cmd_prepare(args) -> int:
    from engine.core.avatar import prepare_avatar

    avatar = prepare_avatar(args.avatar, avatar_config(args), args.cache)
    print(avatar.report.summary())
    if avatar.report.filled:
        print(f"frames without a face (filled from neighbours): {avatar.report.filled}")
    return 0


def cmd_dub(args) -> int:
    from engine.offline.dub import dub_file

    if args.renderer == "neural":
        check_device(args.device)
    try:
        summary = _dub(args, dub_file)
    except KeyboardInterrupt as e:  # Ctrl+C, SIGTERM, SIGHUP: dub_file removed its partial file
        e.outcome = "nothing written"
        raise
    print(summary.text())
    if summary.faces_path:
        print(f"generated faces saved to {summary.faces_path}")
    if summary.random_weights:
        print(
            "NOTE: made with RANDOM (stand-in) weights: the faces are not meant to look real.",
            file=sys.stderr,
        )
    return 0


def _dub(args, dub_file):
    """``dub_file`` with the command's options."""
    return dub_file(
        args.avatar,
        args.audio,
        args.out,
        config=DubConfig(batch=args.batch, device=args.device, backend=args.backend, dtype=args.precision),
        avatar_config=avatar_config(args),
        landmark_checkpoint=args.landmark_checkpoint,
        renderer_checkpoint=args.renderer_checkpoint,
        random_weights=args.random_weights,
        save_faces=args.save_faces,
        cache_dir=args.cache,
        progress=not args.quiet,
        renderer=args.renderer,
    )


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


def _device(value: str) -> str:
    """``--device``: cpu, cuda or cuda:N (what torch accepts for the models here)."""
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not a device: use cpu, cuda or cuda:N")


def check_device(device: str) -> None:
    """A CUDA ``device`` that this machine lacks: one clear error before any model is loaded."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is available here (use --device cpu)")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")


def add_avatar_options(p: argparse.ArgumentParser) -> None:
    """``--refs``, ``--smooth-boxes``, ``--cache``: how an avatar is prepared (prepare, dub)."""
    refs = AvatarConfig.n_refs
    p.add_argument(
        "--refs", type=_refs, default=refs, help=f"reference images N, or 'auto' for L/5 (default {refs})"
    )
    p.add_argument(
        "--smooth-boxes",
        type=whole_number(0),
        default=AvatarConfig.smooth_boxes,
        metavar="K",
        help="smooth crop boxes over K frames (default off)",
    )
    p.add_argument(
        "--cache",
        default=None,
        help="avatar cache folder (default ~/.cache/mouthpiece/avatars or $MOUTHPIECE_CACHE)",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``prepare`` and ``dub`` on the ``mouthpiece`` subcommands ``sub``."""
    pr = sub.add_parser("prepare", help="prepare (and cache) an avatar from a video or photo")
    pr.add_argument("avatar", metavar="AVATAR", help="video (any frame rate) or image")
    add_avatar_options(pr)
    pr.set_defaults(func=cmd_prepare)

    d = sub.add_parser("dub", help="make an avatar speak an audio file: a lip-synced MP4")
    d.add_argument("--avatar", required=True, metavar="VIDEO|IMAGE")
    d.add_argument("--audio", required=True, metavar="AUDIO", help="wav, mp3, m4a, ... or a video's audio")
    d.add_argument(
        "--out", required=True, metavar="OUT.mp4", help="the MP4 to write (never --avatar or --audio)"
    )
    add_avatar_options(d)
    dc = DubConfig
    d.add_argument(
        "--batch",
        type=whole_number(1),
        default=dc.batch,
        metavar="B",
        help=f"windows per model call (default {dc.batch})",
    )
    d.add_argument(
        "--device", default=dc.device, type=_device, help=f"cpu, cuda or cuda:N (default {dc.device})"
    )
    d.add_argument(
        "--backend",
        default=dc.backend,
        choices=BACKENDS,
        help=f"model backend (default {dc.backend}; plain = the authors' mathematics as written; "
        "cuda-graph needs a GPU; onnx = ONNX Runtime, CUDA/TensorRT with mouthpiece[gpu])",
    )
    d.add_argument(
        "--precision",
        default=dc.dtype,
        choices=tuple(DTYPES),
        help=f"renderer precision (default {dc.dtype})",
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
        type=canonical_renderer,
        choices=("neural", "preview"),
        help="neural (IP_LAP, default) or preview (the CPU preview renderer: no weights)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_dub)
