"""Renderer training (``mouthpiece train renderer DATA OUT [--init renderer.pth | --perceptual FILE |
--perceptual random] [--resume] ...``): :class:`RendererTrainer` trains the renderer on
:class:`~engine.training.data.RendererSamples` with the warp, perceptual, style, LSGAN and
feature-matching losses against a pix2pixHD discriminator, as the authors' ``train_video_renderer.py``
(what matches it and where we depart from it on purpose: docs/training_data.md, "Training").
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import cv2
import numpy as np
import torch

from models.checkpoint import (
    CheckpointError,
    load_perceptual_loss,
    load_renderer,
    load_weights_file,
    unreadable,
)
from models.discriminator import DiscriminatorConfig, MultiscaleDiscriminator
from models.perceptual import PERCEPTUAL_PREFIX, PerceptualLoss
from models.renderer import Renderer

from .config import RendererTrainConfig, TrainingError, add_common_arguments, config_from_args
from .data import RendererSamples
from .losses import (
    RendererLossWeights,
    discriminator_loss,
    feature_matching_loss,
    lsgan_loss,
    perceptual_terms,
    renderer_generator_loss,
)
from .trainer import Trainer, step_name

RANDOM = "random"
NO_VGG_MESSAGE = (
    "renderer training needs ImageNet VGG19 weights for its perceptual loss: pass --init with a renderer "
    "checkpoint that holds them (the official renderer_checkpoint.pth does: perceptual.model.network.*), "
    "or --perceptual FILE (a torchvision vgg19 state dict with features.<i>.* keys, a bare features "
    "state dict with <i>.* keys, or a renderer checkpoint); --perceptual random runs with random VGG19 "
    "weights, for testing only"
)


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _file_extra(path: str) -> dict:
    """The ``mouthpiece`` entry of a training checkpoint we wrote ({} for other files)."""
    if str(path).endswith(".safetensors"):
        return {}
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the real loader reports unreadable files
        return {}
    if not isinstance(obj, dict):
        return {}
    return obj.get("mouthpiece") or {}


def vgg_state_dict(obj, where: str) -> dict[str, torch.Tensor]:
    """The bare VGG19 ``features`` tensors (``<i>.weight``, ``<i>.bias``) of a loaded weights file: a
    torchvision ``vgg19`` state dict (``features.<i>.*``; the classifier is ignored), a bare
    ``features`` state dict, or a renderer checkpoint (``perceptual.model.network.*``), optionally
    under ``"state_dict"`` and with a ``module.`` prefix."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise TrainingError(f"--perceptual {where}: not a state dict")
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    for prefix in (PERCEPTUAL_PREFIX, "features."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
            break
    sd = {k: v for k, v in sd.items() if re.fullmatch(r"\d+\.(weight|bias)", k)}
    if not sd:
        raise TrainingError(
            f"--perceptual {where}: holds no VGG19 features tensors (features.<i>.weight, ...)"
        )
    return sd


def load_vgg_file(path: str | Path) -> PerceptualLoss:
    """The perceptual loss with the VGG19 weights of a ``.pth`` or ``.safetensors`` file
    (see :func:`vgg_state_dict`), checked strictly."""
    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"--perceptual {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                obj = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...
                raise CheckpointError(f"{path}: {unreadable(path, e, 'safetensors file')}") from None
        else:
            obj = load_weights_file(path)
    except CheckpointError as e:
        raise TrainingError(f"--perceptual {e}") from None
    try:
        return load_perceptual_loss(vgg_state_dict(obj, str(path)))
    except CheckpointError as e:
        raise TrainingError(f"--perceptual {path}: {e}") from e


class RendererTrainer(Trainer):
    config_cls = RendererTrainConfig
    prefix = "renderer"

    def build(self) -> None:
        cfg: RendererTrainConfig = self.cfg
        self.train_set = RendererSamples(cfg.data, self.train_ids, n_ref=cfg.n_ref, seed=cfg.seed)
        self.val_set = self.make_val_set(
            lambda ids: RendererSamples(cfg.data, ids, n_ref=cfg.n_ref, seed=cfg.seed + 1000)
        )
        init_vgg = {}
        if cfg.init and not cfg.resume:
            try:
                model = load_renderer(cfg.init)
            except (CheckpointError, FileNotFoundError) as e:
                raise TrainingError(f"--init: {e}") from e
            init_vgg = model.perceptual_state_dict
        else:
            model = Renderer()
        self.model = model.to(self.device).train()

        if cfg.resume:
            perceptual, source = PerceptualLoss(), "resume"  # the tensors come from the checkpoint
        elif cfg.perceptual == RANDOM:
            perceptual, source = PerceptualLoss(), RANDOM
        elif cfg.perceptual:
            perceptual, source = load_vgg_file(cfg.perceptual), str(cfg.perceptual)
        elif init_vgg:
            if _file_extra(cfg.init).get("perceptual_source") == RANDOM:
                raise TrainingError(
                    f"--init {cfg.init}: its VGG19 tensors are random (that run used --perceptual random); "
                    "pass --perceptual FILE, or --perceptual random to test"
                )
            perceptual, source = load_perceptual_loss(init_vgg), f"{cfg.init} (perceptual.model.network.*)"
        else:
            raise TrainingError(NO_VGG_MESSAGE)
        self.perceptual = perceptual.to(self.device)
        self.perceptual_source = source
        if source == RANDOM:
            self.warnings.append(
                "the perceptual loss uses RANDOM VGG19 weights (--perceptual random): for testing only"
            )
        # The authors' Adam holds the renderer's parameters followed by the (frozen) VGG19's.
        params = list(self.model.parameters()) + list(self.perceptual.network.parameters())
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)

        self.disc_cfg = DiscriminatorConfig(
            ndf=cfg.disc_filters, n_layers=cfg.disc_layers, num_D=cfg.disc_num_d
        )
        self.disc = MultiscaleDiscriminator(self.disc_cfg).to(self.device).train()
        self.disc_optimizer = torch.optim.Adam(
            self.disc.parameters(), lr=cfg.disc_lr, betas=(cfg.disc_beta1, cfg.disc_beta2)
        )
        self.weights = RendererLossWeights(
            cfg.w_warp, cfg.w_perceptual, cfg.w_style, cfg.w_gan, cfg.w_feature_matching
        )
        self._phase: str | None = None

    def start_info(self) -> dict:
        return {
            "perceptual": self.perceptual_source,
            "warmup_epochs": self.cfg.warmup_epochs,
            "warmup_steps": self.cfg.warmup_epochs * self.steps_per_epoch,
        }

    @property
    def in_warmup(self) -> bool:
        return self.epoch < self.cfg.warmup_epochs

    def train_record(self) -> dict:
        return {"warmup": self.in_warmup}

    def forward(self, batch):
        with self.amp.autocast():
            generated, warped = self.model(
                batch["face"], batch["sketches"], batch["ref_imgs"], batch["ref_sketches"], batch["mel"]
            )  # (B, 3, H, W) each
        return generated, warped

    def train_step(self, batch):
        cfg = self.cfg
        warm = self.in_warmup
        phase = "warmup" if warm else "full"
        if phase != self._phase:
            self.log.write("phase", step=self.step, epoch=self.epoch, phase=phase)
            self._phase = phase
        self.model.train()
        self.disc.train()
        self.optimizer.zero_grad(set_to_none=True)
        self.disc_optimizer.zero_grad(set_to_none=True)
        gt = batch["face"][:, 0]  # (B, 3, H, W)
        generated, warped = self.forward(batch)
        with self.amp.autocast():
            gen_in = generated.detach() if warm else generated  # warm-up: the generated face is only logged
            (warp, _), (perc, style) = perceptual_terms(self.perceptual, [warped, gen_in], gt, [False, True])
        terms = {"warp": warp, "perceptual": perc, "style": style}

        disc_on = not warm or cfg.disc_during_warmup
        loss_d = None
        if disc_on:
            self.disc.requires_grad_(True)
            with self.amp.autocast():
                pred_real = self.disc(gt)
                loss_d = discriminator_loss(self.disc(generated.detach()), pred_real)
        if not warm:
            self.disc.requires_grad_(False)  # the generator's loss does not train the discriminator
            with self.amp.autocast():
                pred_fake = self.disc(generated)
                terms["gan"] = lsgan_loss(pred_fake, True)
                terms["feature_matching"] = feature_matching_loss(
                    pred_fake, pred_real, self.disc_cfg.n_layers
                )
            self.disc.requires_grad_(True)
        loss = renderer_generator_loss(terms, self.weights, warm)
        self.amp.backward(loss)
        self.amp.step(self.optimizer)
        if loss_d is not None:
            self.amp.backward(loss_d)
            self.amp.step(self.disc_optimizer)
        self.amp.update()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["gen"] = out["perceptual"] + self.weights.style * out["style"]
        out["loss"] = float(loss.detach())
        if loss_d is not None:
            out["disc"] = float(loss_d.detach())
        return out

    @torch.no_grad()
    def val_step(self, batch):
        self.model.eval()
        try:
            generated, warped = self.forward(batch)
        finally:
            self.model.train()
        gt = batch["face"][:, 0]
        with self.amp.autocast():
            (warp, _), (perc, style) = perceptual_terms(
                self.perceptual, [warped, generated], gt, [False, True]
            )
        return {
            "warp": float(warp),
            "perceptual": float(perc),
            "style": float(style),
            "gen": float(perc) + self.weights.style * float(style),
            "l1": float((generated.float() - gt).abs().mean()),
        }

    @torch.no_grad()
    def save_samples(self, batch, path: Path) -> None:
        """One row per sample (up to 4): middle target sketch | N references | warped | generated | truth."""
        self.model.eval()
        try:
            generated, warped = self.forward(batch)
        finally:
            self.model.train()
        R = min(4, generated.shape[0])
        cols = [batch["sketches"][:R, 2]] + [
            batch["ref_imgs"][:R, i] for i in range(batch["ref_imgs"].shape[1])
        ]
        cols += [warped[:R], generated[:R], batch["face"][:R, 0]]
        grid = torch.cat([torch.cat(list(c.float()), dim=1) for c in cols], dim=2)  # (3, R*H, n*W)
        img = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.ascontiguousarray(img))  # BGR already

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The authors' layout: ``module.`` + renderer tensors, then ``module.perceptual.model.network.*``."""
        sd = {"module." + k: v for k, v in self.model.state_dict().items()}
        sd.update(
            {"module." + PERCEPTUAL_PREFIX + k: v for k, v in self.perceptual.network.state_dict().items()}
        )
        return _cpu(sd)

    def checkpoint_files(self, extra):
        disc_name = step_name("disc", self.step)
        extra = {**extra, "disc": disc_name, "perceptual_source": self.perceptual_source}
        main = {
            "state_dict": self.official_state_dict(),
            "optimizer": _cpu(self.optimizer.state_dict()),
            "global_step": self.step,
            "global_epoch": self.epoch,
            "mouthpiece": extra,
        }
        disc = {
            "state_dict": _cpu(self.disc.state_dict()),
            "optimizer": _cpu(self.disc_optimizer.state_dict()),
            "global_step": self.step,
            "global_epoch": self.epoch,
            "mouthpiece": {
                "format": "mouthpiece-train-1",
                "stage": "discriminator",
                "config": repr(self.disc_cfg),
            },
        }
        return {step_name(self.prefix, self.step): main, disc_name: disc}

    def restore(self, ckpt):
        sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
        vgg = {k: v for k, v in sd.items() if k.startswith(PERCEPTUAL_PREFIX)}
        sd = {k: v for k, v in sd.items() if not k.startswith(PERCEPTUAL_PREFIX)}
        self.model.load_state_dict(sd, strict=True)
        if not vgg:
            raise TrainingError("the checkpoint to resume holds no VGG19 perceptual tensors")
        self.perceptual.load_checkpoint_tensors({k: v.float() for k, v in vgg.items()})
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        extra = ckpt.get("mouthpiece") or {}
        self.perceptual_source = extra.get("perceptual_source", "resume")
        if self.perceptual_source == RANDOM:
            self.warnings.append(
                "the resumed run uses RANDOM VGG19 weights (--perceptual random): testing only"
            )
        disc_path = self.ckpt_dir / extra.get("disc", step_name("disc", int(ckpt.get("global_step", 0))))
        if disc_path.is_file():
            d = load_weights_file(disc_path)
            self.disc.load_state_dict(d["state_dict"], strict=True)
            if d.get("optimizer") is not None:
                self.disc_optimizer.load_state_dict(d["optimizer"])
        else:
            self.warnings.append(f"{disc_path} not found: the discriminator starts afresh")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = RendererTrainConfig()
    add_common_arguments(parser, d)
    a = parser.add_argument
    a(
        "--perceptual",
        help="VGG19 weights for the perceptual loss: a torchvision vgg19 state dict (features.<i>.*), "
        "a bare features state dict (<i>.*) or a renderer checkpoint; 'random' for tests only "
        "(default: the --init checkpoint's perceptual.model.network.* tensors)",
    )
    a("--warmup-epochs", type=int, help=f"epochs with only the warp loss (default {d.warmup_epochs})")
    a("--n-ref", type=int, help=f"reference images N (default {d.n_ref})")
    a("--disc-lr", type=float, help=f"discriminator Adam learning rate (default {d.disc_lr})")
    a(
        "--disc-during-warmup",
        action="store_true",
        default=None,
        help="also train the discriminator during warm-up (as the authors' code did)",
    )


def run_from_args(args: argparse.Namespace, echo: bool = True) -> dict:
    cfg = config_from_args(RendererTrainConfig, args)
    return RendererTrainer(cfg, echo=echo).run()
