"""Options of a training run: :class:`TrainConfig` (both stages), :class:`LandmarkTrainConfig`,
:class:`RendererTrainConfig` (the spec's defaults), their shared command-line options
(:func:`add_common_arguments`, :func:`config_from_args`; with ``--resume`` the run's
``config.json`` is the base) and :class:`TrainingError`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

AMP_MODES = ("auto", "off", "bf16", "fp16")  # --amp

__all__ = [
    "LandmarkTrainConfig",
    "RendererTrainConfig",
    "TrainConfig",
    "TrainingError",
    "add_common_arguments",
    "config_from_args",
]


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# Configs


@dataclass
class TrainConfig:
    """Options shared by both stages (``None`` in :meth:`from_dict` inputs means "default")."""

    data: str = ""
    out: str = ""
    max_steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 where supported, else fp16 + GradScaler; off on CPU) | off | bf16 | fp16
    num_workers: int = 0
    save_every: int = 1000
    sample_every: int = 500
    val_every: int = 500
    val_batches: int = 4
    val_fraction: float = 0.05
    val_clips: list[str] = field(default_factory=list)
    steps_per_epoch: int | None = None  # default: training clips // batch size (the authors' epoch)
    log_every: int = 10
    keep_last: int = 0  # checkpoints kept (the newest); 0 keeps all
    seed: int = 0
    init: str | None = None  # fine-tune start: weights only, fresh optimizer, step 0
    resume: bool = False  # continue OUT's latest checkpoint

    stage = "base"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: TrainConfig | None = None):
        """A config from ``base`` (or the defaults) with the non-None entries of ``d`` applied."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainingError(f"unknown {cls.stage} option(s): {', '.join(unknown)}")
        values = dataclasses.asdict(base) if base is not None else {}
        values = {k: v for k, v in values.items() if k in names}
        values.update({k: v for k, v in d.items() if v is not None})
        if isinstance(values.get("val_clips"), str):
            values["val_clips"] = [s for s in values["val_clips"].split(",") if s]
        return cls(**values)


@dataclass
class LandmarkTrainConfig(TrainConfig):
    """Landmark transformer (spec section 9): Adam lr 1e-4, batch 128, T = 5, Nl = 15."""

    batch_size: int = 128
    T: int = 5
    n_ref: int = 15

    stage = "landmark"


@dataclass
class RendererTrainConfig(TrainConfig):
    """Renderer (spec section 9): Adam lr 1e-4, batch 96, N = 3, 25 warm-up epochs, discriminator
    Adam(1e-4, betas (0.5, 0.999)); loss weights of :class:`~.losses.RendererLossWeights`."""

    batch_size: int = 96
    n_ref: int = 3
    warmup_epochs: int = 25
    perceptual: str | None = (
        None  # VGG19 weights file, or "random" (testing only); default: the init checkpoint's
    )
    disc_lr: float = 1e-4
    disc_beta1: float = 0.5
    disc_beta2: float = 0.999
    disc_during_warmup: bool = False  # the authors also stepped the discriminator during warm-up
    disc_num_d: int = 2
    disc_layers: int = 3
    disc_filters: int = 64
    w_warp: float = 2.5
    w_perceptual: float = 4.0
    w_style: float = 250.0
    w_gan: float = 0.25
    w_feature_matching: float = 2.5

    stage = "renderer"


# ---------------------------------------------------------------------------------------------
# Command line (shared options)


def add_common_arguments(parser, defaults: TrainConfig) -> None:
    """Options of both stages; every default is None so that a resume keeps the run's values."""
    parser.add_argument("data", help="preprocessed dataset folder (manifest.json + clips/)")
    parser.add_argument("out", help="run folder (log.jsonl, config.json, checkpoints/, samples/, latest.pth)")
    a = parser.add_argument
    a("--max-steps", type=int, help=f"train until this global step (default {defaults.max_steps})")
    a("--batch-size", type=int, help=f"samples per step (default {defaults.batch_size})")
    a("--lr", type=float, help=f"Adam learning rate (default {defaults.lr})")
    a("--device", help="auto (default), cpu, cuda or cuda:N")
    a(
        "--amp",
        choices=AMP_MODES,
        help="mixed precision on CUDA (default auto; off on CPU)",
    )
    a("--num-workers", type=int, help="DataLoader worker processes (default 0)")
    a(
        "--save-every",
        type=int,
        help=f"checkpoint every N steps, and at the end (default {defaults.save_every})",
    )
    a(
        "--sample-every",
        type=int,
        help=f"sample image every N steps, 0 = never (default {defaults.sample_every})",
    )
    a("--val-every", type=int, help=f"validation every N steps, 0 = never (default {defaults.val_every})")
    a("--val-batches", type=int, help=f"batches per validation (default {defaults.val_batches})")
    a("--val-fraction", type=float, help=f"fraction of clips held out (default {defaults.val_fraction})")
    a("--val-clips", help="comma-separated clip ids held out for validation (instead of --val-fraction)")
    a("--steps-per-epoch", type=int, help="steps per epoch (default: training clips // batch size)")
    a("--keep-last", type=int, help="keep only the newest N checkpoints (default 0: keep all)")
    a("--log-every", type=int, help=f"training log record every N steps (default {defaults.log_every})")
    a("--seed", type=int, help="random seed (default 0)")
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--init", help="start from these weights (fine-tune: fresh optimizer, step 0)")
    g.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in OUT from latest.pth (weights, optimizers, step, epoch, RNG)",
    )


def config_from_args(cls: type[TrainConfig], args) -> TrainConfig:
    """The config of a command line; with ``--resume`` the run's ``config.json`` is the base."""
    d = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(cls)}
    base = None
    if getattr(args, "resume", None):
        saved = Path(args.out) / "config.json"
        if saved.is_file():
            raw = json.loads(saved.read_text(encoding="utf-8"))
            raw.pop("stage", None)
            base = cls.from_dict({k: v for k, v in raw.items() if k in d})
        d["resume"] = True
    else:
        d["resume"] = False
    return cls.from_dict(d, base)  # with resume, a recorded init is not used again
