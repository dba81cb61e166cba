"""Landmark transformer training (``mouthpiece train landmark DATA OUT [--max-steps N] [--init ckpt |
--resume] ...``): :class:`LandmarkTrainer` trains ``LandmarkGenerator`` on
:class:`~engine.training.data.LandmarkWindows` with ``L1 + velocity`` and Adam, the authors'
``train_landmarks_generator.py`` (what matches it: docs/training_data.md, "Training").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from models.checkpoint import CheckpointError, load_landmark_generator
from models.landmark_generator import LandmarkGenerator, LandmarkGeneratorConfig

from .config import LandmarkTrainConfig, TrainingError, add_common_arguments, config_from_args
from .data import LandmarkWindows
from .losses import landmark_losses
from .trainer import Trainer, step_name


class LandmarkTrainer(Trainer):
    config_cls = LandmarkTrainConfig
    prefix = "landmark"

    def build(self) -> None:
        cfg: LandmarkTrainConfig = self.cfg
        self.train_set = LandmarkWindows(cfg.data, self.train_ids, T=cfg.T, n_ref=cfg.n_ref, seed=cfg.seed)
        self.val_set = self.make_val_set(
            lambda ids: LandmarkWindows(cfg.data, ids, T=cfg.T, n_ref=cfg.n_ref, seed=cfg.seed + 1000)
        )
        if cfg.init and not cfg.resume:
            try:
                model = load_landmark_generator(cfg.init)
            except (CheckpointError, FileNotFoundError) as e:
                raise TrainingError(f"--init: {e}") from e
        else:
            model = LandmarkGenerator(LandmarkGeneratorConfig(T=cfg.T, n_ref=cfg.n_ref))
        self.model = model.to(self.device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)

    def losses(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        T = self.cfg.T
        with self.amp.autocast():
            pred = self.model(
                batch["mels"], batch["pose"], batch["ref_pose"], batch["ref_content"]
            )  # (B*T,2,57)
        gt = batch["content"].reshape(-1, *batch["content"].shape[2:])  # (B*T, 2, 57)
        return landmark_losses(pred.float(), gt, T)

    def train_step(self, batch):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.losses(batch)
        self.amp.backward(terms["loss"])
        self.amp.step(self.optimizer)
        self.amp.update()
        return {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def val_step(self, batch):
        self.model.eval()
        try:
            return {k: float(v) for k, v in self.losses(batch).items()}
        finally:
            self.model.train()

    @torch.no_grad()
    def save_samples(self, batch, path: Path) -> None:
        """One row per window (up to 4), one column per frame: the true content landmarks in
        green, the prediction in red, the pose landmarks in grey."""
        self.model.eval()
        try:
            pred = self.model(batch["mels"], batch["pose"], batch["ref_pose"], batch["ref_content"])
        finally:
            self.model.train()
        T = self.cfg.T
        pred = pred.float().reshape(-1, T, 2, pred.shape[-1]).cpu().numpy()
        gt = batch["content"].float().cpu().numpy()
        pose = batch["pose"].float().cpu().numpy()
        write_landmark_grid(path, pose[:4], gt[:4], pred[:4])

    def checkpoint_files(self, extra):
        obj = {
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "global_step": self.step,
            "global_epoch": self.epoch,
            "mouthpiece": extra,
        }
        return {step_name(self.prefix, self.step): obj}

    def restore(self, ckpt):
        sd = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
        self.model.load_state_dict(sd, strict=True)
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])


def write_landmark_grid(
    path: Path, pose: np.ndarray, gt: np.ndarray, pred: np.ndarray, size: int = 128
) -> None:
    """pose (R, T, 2, 74), gt/pred (R, T, 2, 57) normalised to the crop -> a PNG grid."""
    R, T = gt.shape[:2]
    grid = np.zeros((R * size, T * size, 3), np.uint8)
    for r in range(R):
        for t in range(T):
            tile = grid[r * size : (r + 1) * size, t * size : (t + 1) * size]
            for pts, colour in (
                (pose[r, t], (128, 128, 128)),
                (gt[r, t], (0, 200, 0)),
                (pred[r, t], (0, 0, 255)),
            ):
                xy = np.clip(pts.T * (size - 1), -1, size).astype(np.int32)
                for x, y in xy:
                    cv2.circle(tile, (int(x), int(y)), 1, colour, -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), grid)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = LandmarkTrainConfig()
    add_common_arguments(parser, d)
    parser.add_argument("--T", type=int, help=argparse.SUPPRESS)  # the checkpoints are T = 5
    parser.add_argument("--n-ref", type=int, help=f"reference landmark sets Nl (default {d.n_ref})")


def run_from_args(args: argparse.Namespace, echo: bool = True) -> dict:
    cfg = config_from_args(LandmarkTrainConfig, args)
    return LandmarkTrainer(cfg, echo=echo).run()
