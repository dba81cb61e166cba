"""Evaluation of lip-synced output: image quality, lip shape, identity and audio-visual sync.

PSNR, SSIM (:mod:`.pixels`) and LipLMD (:mod:`.lips`) need no weights; LPIPS, FID, CSIM
(:mod:`.networks`) and SyncNet (:mod:`.syncnet`) run only with a network file the user supplies
(TorchScript or ONNX, never downloaded). A metric whose network is not given is ``None`` with a
reason, never an error; a given file that cannot be loaded or returns the wrong shapes is an
:class:`EvaluationError` naming it. Entry points: :func:`evaluate_frames` and :func:`evaluate_video`
(:mod:`.compare`), :func:`evaluate_checkpoints` (:mod:`.reconstruction`, the paper's reconstruction
setting) and ``mouthpiece train eval`` (:func:`add_arguments` / :func:`run_from_args`,
:mod:`.command`); results print with :func:`format_table` / :func:`to_json` (:mod:`.report`).
Definitions and each network's contract: ``docs/evaluation.md``.
"""

from __future__ import annotations

from engine.evaluation.command import add_arguments, run_from_args
from engine.evaluation.common import CROP_SIZE, FPS, MARGIN_PX, SAMPLES_PER_FRAME, EvaluationError
from engine.evaluation.compare import evaluate_frames, evaluate_video
from engine.evaluation.lips import lip_lmd
from engine.evaluation.networks import (
    ARCFACE_TEMPLATE,
    Network,
    Networks,
    arcface_align,
    arcface_embeddings,
    cosine_similarity,
    feature_statistics,
    fid_features,
    frechet_distance,
    load_network,
    load_networks,
    lpips_distances,
    similarity_transform,
)
from engine.evaluation.pixels import psnr, ssim
from engine.evaluation.reconstruction import evaluate_checkpoints
from engine.evaluation.report import METRICS, format_table, to_json
from engine.evaluation.syncnet import SYNCNET_VSHIFT, mfcc, syncnet_crop, syncnet_offsets, syncnet_score

__all__ = [
    "ARCFACE_TEMPLATE",
    "CROP_SIZE",
    "FPS",
    "MARGIN_PX",
    "METRICS",
    "SAMPLES_PER_FRAME",
    "SYNCNET_VSHIFT",
    "EvaluationError",
    "Network",
    "Networks",
    "add_arguments",
    "arcface_align",
    "arcface_embeddings",
    "cosine_similarity",
    "evaluate_checkpoints",
    "evaluate_frames",
    "evaluate_video",
    "feature_statistics",
    "fid_features",
    "format_table",
    "frechet_distance",
    "lip_lmd",
    "load_network",
    "load_networks",
    "lpips_distances",
    "mfcc",
    "psnr",
    "run_from_args",
    "similarity_transform",
    "ssim",
    "syncnet_crop",
    "syncnet_offsets",
    "syncnet_score",
    "to_json",
]
