"""``mouthpiece train preprocess|landmark|renderer|presenter|eval``: each command's module owns its
options (``add_arguments``) and its run (``run_from_args``): :mod:`engine.training.preprocess`, the
landmark and renderer stages (:mod:`engine.training.landmark_stage`,
:mod:`engine.training.renderer_stage`, imported by name), :mod:`engine.training.finetune` and
:mod:`engine.evaluation`. This module only hangs them under ``train`` and prints a stage's result.
"""

from __future__ import annotations

import argparse

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``train preprocess|landmark|renderer|presenter|eval`` on the ``mouthpiece`` subcommands ``sub``
    (each module owns its options)."""
    import engine.evaluation as evaluate
    from engine.training import finetune, preprocess

    t = sub.add_parser("train", help="preprocess videos, train or fine-tune IP_LAP, evaluate")
    ts = t.add_subparsers(dest="action", required=True)
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
