"""``mouthpiece train presenter``: fine-tune IP_LAP on one presenter's video, in one command.

From one video of a person speaking (a few minutes is the intended size; anything with a face and
its own audio works), the command

1. holds out the last ``held_out_s`` seconds for evaluation and preprocesses the rest into a
   training dataset (:mod:`engine.training.preprocess`: 25 fps, FaceMesh, training crops, sketches,
   landmarks, mel) under ``OUT/data``;
2. trains the landmark transformer (:mod:`engine.training.landmark_stage`) and then the renderer
   (:mod:`engine.training.renderer_stage`) on it, each starting from the published checkpoints
   (``--landmark-init`` / ``--renderer-init``, default: the files in ``--checkpoint-dir``) or from
   scratch (``--scratch``). Fine-tuning skips the renderer's warp-only warm-up unless
   ``--warmup-epochs`` says otherwise; from scratch the spec's 25 epochs apply. The runs live in
   ``OUT/landmark`` and ``OUT/renderer`` (logs, samples, checkpoints; ``--resume`` continues them);
3. writes the result as ``OUT/landmarkgenerator_checkpoint.pth`` and ``OUT/renderer_checkpoint.pth``
   in the official layout (weights only: ``{"state_dict", "optimizer": None, "global_step",
   "global_epoch"}``), usable with ``mouthpiece serve --checkpoint-dir OUT`` and ``mouthpiece dub``;
4. evaluates the starting weights and the fine-tuned ones on the held-out frames (reconstruction:
   the held-out part is dubbed with its own audio, :func:`engine.evaluation.evaluate_checkpoints`):
   PSNR, SSIM, LipLMD (and LPIPS / FID / CSIM / SyncNet when their networks are given), before and
   after, in ``OUT/metrics.json``; and the loss curves of both stages in ``OUT/loss_curves.png``
   (with matplotlib installed) and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import models
from engine.synth.neural import CHECKPOINT_DIR, find_checkpoint
from engine.synth.weights import DubError, missing_checkpoint
from engine.training.config import AMP_MODES
from models.checkpoint import load_weights_file

__all__ = ["PresenterConfig", "add_arguments", "fine_tune_presenter", "run_from_args"]

FPS = 25
MIN_TRAIN_FRAMES = 30  # the landmark stage needs windows with 15 reference frames outside them
OUTPUT_NAMES = {
    models.LANDMARK: "landmarkgenerator_checkpoint.pth",
    models.RENDERER: "renderer_checkpoint.pth",
}


class PresenterError(ValueError):
    """A presenter fine-tuning run that cannot start (the message says why and what to do)."""


@dataclass
class PresenterConfig:
    """Settings of ``mouthpiece train presenter`` (see the module docstring)."""

    video: str = ""
    out: str = ""
    landmark_init: str | None = None  # default: the landmark checkpoint in checkpoint_dir
    renderer_init: str | None = None  # default: the renderer checkpoint in checkpoint_dir
    checkpoint_dir: str = str(CHECKPOINT_DIR)
    scratch: bool = False  # train both networks from random initialisation
    perceptual: str | None = None  # VGG19 weights (default: the renderer init's perceptual tensors)
    held_out_s: float = 2.0  # the last seconds of the video, kept out of training for evaluation
    landmark_steps: int = 2000
    renderer_steps: int = 3000
    landmark_batch: int = 32
    renderer_batch: int = 8
    lr: float = 1e-4
    warmup_epochs: int | None = None  # default: 0 when fine-tuning, 25 from scratch
    steps_per_epoch: int | None = None  # default: 100 steps (one clip: the authors' epoch is 1 step)
    save_every: int = 500
    sample_every: int = 250
    device: str = "auto"
    amp: str = "auto"
    seed: int = 0
    resume: bool = False
    evaluate: bool = True
    eval_refs: int = 25  # renderer references during evaluation (the official script's N)
    eval_frames: int | None = None  # evaluate at most this many held-out frames
    networks: dict[str, str | None] = field(default_factory=dict)  # lpips/fid/arcface/syncnet files
    workers: int = 1


def _frames_at_25(video: Path) -> int:
    from engine.core.video import probe_video

    info = probe_video(video)
    return int(math.floor(info.duration_s * FPS + 1e-6)) if info.duration_s else int(info.n_frames)


def _init_paths(cfg: PresenterConfig) -> tuple[Path | None, Path | None]:
    if cfg.scratch:
        return None, None
    out = []
    for kind, given in ((models.LANDMARK, cfg.landmark_init), (models.RENDERER, cfg.renderer_init)):
        if given:
            p = Path(given)
            if not p.is_file():
                raise FileNotFoundError(f"checkpoint not found: {p}")
            out.append(p)
            continue
        try:
            out.append(find_checkpoint(kind, cfg.checkpoint_dir))
        except DubError:  # no file there
            raise PresenterError(
                f"{missing_checkpoint(kind, cfg.checkpoint_dir)}. To fine-tune, give the published "
                f"checkpoints (--landmark-init, --renderer-init or --checkpoint-dir); to train from random "
                f"weights, pass --scratch."
            ) from None
    return out[0], out[1]


def _export(run_dir: Path, kind: str, dest: Path) -> Path:
    """The run's latest checkpoint as an official weights-only file."""
    latest = run_dir / "latest.pth"
    if not latest.exists():
        raise PresenterError(f"{run_dir} has no checkpoint (latest.pth)")
    ck = load_weights_file(latest)
    out = {
        "state_dict": ck["state_dict"],
        "optimizer": None,
        "global_step": int(ck.get("global_step", 0)),
        "global_epoch": int(ck.get("global_epoch", 0)),
    }
    tmp = dest.with_suffix(".tmp")
    torch.save(out, str(tmp))
    tmp.replace(dest)
    if kind == models.LANDMARK:  # the engine reads it back strictly: prove it now
        models.load_landmark_generator(dest)
    else:
        models.load_renderer(dest)
    return dest


def _curves(run_dir: Path) -> dict[str, list]:
    from engine.training import read_log

    log = run_dir / "log.jsonl"
    if not log.exists():
        return {}
    out: dict[str, list] = {}
    for rec in read_log(log):
        if rec.get("event") not in ("train", "val"):
            continue
        for k, v in rec.items():
            if k in ("event", "step", "epoch", "time", "lr") or not isinstance(v, (int, float)):
                continue
            if k.endswith("sec_per_step") or isinstance(v, bool):
                continue
            out.setdefault(f"{rec['event']}/{k}", []).append((int(rec["step"]), float(v)))
    return out


def _plot(curves: dict[str, dict[str, list]], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in ("landmark", "renderer") if curves.get(s)]
    if not stages:
        return None
    fig, axes = plt.subplots(
        1, len(stages), figsize=(6 * len(stages), 4), layout="constrained", squeeze=False
    )
    for ax, stage in zip(axes[0], stages, strict=True):
        for name, pts in sorted(curves[stage].items()):
            steps, values = zip(*pts, strict=True)
            ax.plot(steps, values, ".-" if len(pts) < 30 else "-", lw=1, ms=3, label=name)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{stage} stage", fontsize=10)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _evaluate(cfg: PresenterConfig, lm: Path | None, r: Path | None, frames: tuple[int, int], say) -> dict:
    from engine.evaluation import evaluate_checkpoints, load_networks

    nets = load_networks(device="cuda" if torch.cuda.is_available() else "cpu", **cfg.networks)
    return evaluate_checkpoints(
        cfg.video,
        lm,
        r,
        held_out_frames=frames,
        random_weights=lm is None or r is None,
        n_refs=cfg.eval_refs,
        networks=nets,
        cache_dir=str(Path(cfg.out) / "eval_cache"),
    )


def fine_tune_presenter(cfg: PresenterConfig, say=print) -> dict[str, Any]:
    """Run the whole presenter fine-tuning (module docstring); returns the summary it writes."""
    from engine.training.dataset import is_complete, read_meta, rebuild_manifest
    from engine.training.landmark_stage import LandmarkTrainer
    from engine.training.preprocess_clip import preprocess_video
    from engine.training.preprocess_config import PreprocessConfig
    from engine.training.preprocess_discover import clip_id
    from engine.training.renderer_stage import RendererTrainer
    from engine.training.trainer import LandmarkTrainConfig, RendererTrainConfig

    t_start = time.perf_counter()
    video = Path(cfg.video)
    if not video.is_file():
        raise FileNotFoundError(f"video file not found: {video}")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    lm_init, r_init = _init_paths(cfg)

    total = _frames_at_25(video)
    held = int(round(cfg.held_out_s * FPS))
    train_frames = total - held
    if held < 8 and cfg.evaluate:
        raise PresenterError(
            f"--held-out-s {cfg.held_out_s} keeps {held} frames; evaluation needs at least 8"
        )
    if train_frames < MIN_TRAIN_FRAMES:
        raise PresenterError(
            f"{video} has {total} frames at 25 fps; holding out {held} leaves {train_frames} for training, "
            f"fewer than {MIN_TRAIN_FRAMES} (use a longer video or a shorter --held-out-s)"
        )
    eval_end = total if cfg.eval_frames is None else min(total, train_frames + int(cfg.eval_frames))
    frames = (train_frames, eval_end)

    # ---- 1. the dataset: the video without its held-out tail
    data = out / "data"
    pcfg = PreprocessConfig(workers=1, max_frames=train_frames, show_progress=False)
    clip_dir = data / "clips" / clip_id(video.name)
    if not is_complete(clip_dir, pcfg.settings()):
        say(f"preprocessing {video.name}: the first {train_frames} of {total} frames (25 fps) ...")
        meta = preprocess_video(video, clip_dir, pcfg, source=video.name)
    else:
        meta = read_meta(clip_dir)
        say(f"dataset already prepared: {clip_dir}")
    rebuild_manifest(data, pcfg)
    say(f"  {meta['frames']} frames, {meta['valid_frames']} with a face")

    # ---- 2. the two stages
    spe = cfg.steps_per_epoch or 100
    common = dict(
        data=str(data),
        lr=cfg.lr,
        device=cfg.device,
        amp=cfg.amp,
        seed=cfg.seed,
        save_every=cfg.save_every,
        sample_every=cfg.sample_every,
        val_every=0,
        val_fraction=0.0,
        steps_per_epoch=spe,
        keep_last=2,
        resume=cfg.resume and (out / "landmark" / "config.json").exists(),
    )
    results: dict[str, Any] = {}
    if cfg.landmark_steps > 0:
        say(f"landmark stage: {cfg.landmark_steps} steps, batch {cfg.landmark_batch}")
        lcfg = LandmarkTrainConfig(
            out=str(out / "landmark"),
            max_steps=cfg.landmark_steps,
            batch_size=cfg.landmark_batch,
            init=None if common["resume"] else (str(lm_init) if lm_init else None),
            **common,
        )
        results["landmark"] = LandmarkTrainer(lcfg, echo=False).run()
        lm_final = _export(out / "landmark", models.LANDMARK, out / OUTPUT_NAMES[models.LANDMARK])
    elif lm_init is not None:
        lm_final = Path(shutil.copyfile(lm_init, out / OUTPUT_NAMES[models.LANDMARK]))
    else:
        raise PresenterError("--landmark-steps 0 with --scratch leaves no landmark weights")
    if cfg.renderer_steps > 0:
        warmup = cfg.warmup_epochs if cfg.warmup_epochs is not None else (0 if r_init else 25)
        say(
            f"renderer stage: {cfg.renderer_steps} steps, batch {cfg.renderer_batch}, warm-up {warmup} epochs"
        )
        rcommon = dict(common, resume=cfg.resume and (out / "renderer" / "config.json").exists())
        rcfg = RendererTrainConfig(
            out=str(out / "renderer"),
            max_steps=cfg.renderer_steps,
            batch_size=cfg.renderer_batch,
            init=None if rcommon["resume"] else (str(r_init) if r_init else None),
            perceptual=cfg.perceptual,
            warmup_epochs=warmup,
            **rcommon,
        )
        results["renderer"] = RendererTrainer(rcfg, echo=False).run()
        r_final = _export(out / "renderer", models.RENDERER, out / OUTPUT_NAMES[models.RENDERER])
    elif r_init is not None:
        r_final = Path(shutil.copyfile(r_init, out / OUTPUT_NAMES[models.RENDERER]))
    else:
        raise PresenterError("--renderer-steps 0 with --scratch leaves no renderer weights")

    curves = {s: _curves(out / s) for s in ("landmark", "renderer")}
    plot = _plot(curves, out / "loss_curves.png")

    # ---- 3. evaluation on the held-out frames, before and after
    metrics: dict[str, Any] = {}
    if cfg.evaluate:
        say(f"evaluating on held-out frames {frames[0]}..{frames[1] - 1} (before and after) ...")
        metrics["before"] = _evaluate(cfg, lm_init, r_init, frames, say)
        metrics["after"] = _evaluate(cfg, lm_final, r_final, frames, say)
        (out / "metrics.json").write_text(_to_json(metrics))

    summary = {
        "video": str(video),
        "frames": {"total": total, "train": train_frames, "held_out": list(frames)},
        "init": {"landmark": str(lm_init) if lm_init else None, "renderer": str(r_init) if r_init else None},
        "weights": {"landmark": str(lm_final), "renderer": str(r_final)},
        "runs": {k: {"step": v["step"], "epoch": v["epoch"], "last": v["last"]} for k, v in results.items()},
        "curves": curves,
        "loss_curves_png": str(plot) if plot else None,
        "metrics": {k: v.get("metrics") for k, v in metrics.items()},
        "seconds": round(time.perf_counter() - t_start, 1),
        "config": asdict(cfg),
    }
    (out / "summary.json").write_text(_to_json(summary))
    return summary


def _to_json(obj: Any) -> str:
    from engine.evaluation import to_json

    return to_json(obj)


def format_summary(summary: dict) -> str:
    lines = [f"fine-tuned weights in {Path(summary['weights']['landmark']).parent}/ ({summary['seconds']} s)"]
    for stage, curves in summary["curves"].items():
        for name, pts in sorted(curves.items()):
            if name.startswith("train/") and pts:
                lines.append(
                    f"  {stage} {name[6:]}: {pts[0][1]:.4g} (step {pts[0][0]}) -> {pts[-1][1]:.4g} "
                    f"(step {pts[-1][0]})"
                )
    m = summary.get("metrics") or {}
    if m.get("before") and m.get("after"):
        lines.append(f"  held-out frames {summary['frames']['held_out']}: metric  before -> after")
        for key in m["after"]:
            a, b = m["before"].get(key), m["after"].get(key)
            if a is not None and b is not None:
                lines.append(f"    {key}: {a['value']:.4g} -> {b['value']:.4g}")
    lines.append(
        f"use them: mouthpiece serve --checkpoint-dir {Path(summary['weights']['landmark']).parent} "
        f"(or mouthpiece dub ... --landmark-checkpoint/--renderer-checkpoint)"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    d = PresenterConfig()
    a = parser.add_argument
    a("video", help="a video of the presenter speaking, with its own audio (a few minutes)")
    a("--out", required=True, help="output folder: dataset, runs, fine-tuned weights, metrics")
    a("--landmark-init", help="landmark checkpoint to start from (default: the one in --checkpoint-dir)")
    a("--renderer-init", help="renderer checkpoint to start from (default: the one in --checkpoint-dir)")
    a("--checkpoint-dir", default=d.checkpoint_dir, help="where the published checkpoints are")
    a("--scratch", action="store_true", help="train both networks from random initialisation")
    a("--perceptual", help="VGG19 weights (default: the renderer checkpoint's perceptual tensors)")
    a("--held-out-s", type=float, default=d.held_out_s, help="seconds at the end kept for evaluation")
    a("--landmark-steps", type=int, default=d.landmark_steps)
    a("--renderer-steps", type=int, default=d.renderer_steps)
    a("--landmark-batch", type=int, default=d.landmark_batch)
    a("--renderer-batch", type=int, default=d.renderer_batch)
    a("--lr", type=float, default=d.lr)
    a("--warmup-epochs", type=int, help="renderer warp-only epochs (default: 0 fine-tuning, 25 scratch)")
    a("--steps-per-epoch", type=int, help="steps per epoch (default 100)")
    a("--save-every", type=int, default=d.save_every)
    a("--sample-every", type=int, default=d.sample_every)
    a("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    a("--amp", default=d.amp, choices=AMP_MODES)
    a("--seed", type=int, default=d.seed)
    a("--resume", action="store_true", help="continue the runs in --out")
    a("--no-eval", dest="evaluate", action="store_false", help="skip the before/after evaluation")
    a("--eval-refs", type=int, default=d.eval_refs, help="renderer references in evaluation")
    a("--eval-frames", type=int, help="evaluate at most this many held-out frames")
    for name in ("lpips", "fid", "arcface", "syncnet"):
        a(f"--{name}-model", help=f"{name} network file for the evaluation (docs/evaluation.md)")
    return parser


def config_from_args(args: argparse.Namespace) -> PresenterConfig:
    return PresenterConfig(
        video=args.video,
        out=args.out,
        landmark_init=args.landmark_init,
        renderer_init=args.renderer_init,
        checkpoint_dir=args.checkpoint_dir,
        scratch=args.scratch,
        perceptual=args.perceptual,
        held_out_s=args.held_out_s,
        landmark_steps=args.landmark_steps,
        renderer_steps=args.renderer_steps,
        landmark_batch=args.landmark_batch,
        renderer_batch=args.renderer_batch,
        lr=args.lr,
        warmup_epochs=args.warmup_epochs,
        steps_per_epoch=args.steps_per_epoch,
        save_every=args.save_every,
        sample_every=args.sample_every,
        device=args.device,
        amp=args.amp,
        seed=args.seed,
        resume=args.resume,
        evaluate=args.evaluate,
        eval_refs=args.eval_refs,
        eval_frames=args.eval_frames,
        networks={n: getattr(args, f"{n}_model") for n in ("lpips", "fid", "arcface", "syncnet")},
    )


def run_from_args(args: argparse.Namespace) -> int:
    summary = fine_tune_presenter(config_from_args(args))
    print(format_summary(summary))
    return 0
