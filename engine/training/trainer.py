"""Shared training machinery (options in :mod:`.config`): run folder, seeding, AMP, checkpoints in
the authors' format plus what a resume needs, the JSON-lines log and the loop of :class:`Trainer`
(run folder and checkpoint layout: docs/training_data.md, "Training").
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .config import (
    AMP_MODES,
    LandmarkTrainConfig,
    RendererTrainConfig,
    TrainConfig,
    TrainingError,
    add_common_arguments,
    config_from_args,
)
from .data import RangeSampler
from .dataset import DataError, read_manifest, split_clips

__all__ = [
    "Amp",
    "LandmarkTrainConfig",
    "RendererTrainConfig",
    "RunLog",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "add_common_arguments",
    "atomic_save",
    "config_from_args",
    "load_training_checkpoint",
    "make_amp",
    "point_latest",
    "read_log",
    "resolve_device",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "step_name",
]


# ---------------------------------------------------------------------------------------------
# Device, AMP, seeding


def resolve_device(name: str) -> torch.device:
    if name in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available on this machine")
    return dev


@dataclass
class Amp:
    """Mixed precision: autocast with ``dtype`` (bf16, or fp16 with a GradScaler) on CUDA; off on CPU."""

    enabled: bool
    dtype: torch.dtype | None
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @property
    def name(self) -> str:
        return "off" if not self.enabled else str(self.dtype).removeprefix("torch.")

    def autocast(self):
        if not self.enabled:
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        if self.scaler is not None:
            self.scaler.update()


def make_amp(device: torch.device, mode: str) -> tuple[Amp, str | None]:
    """The AMP setting for ``device`` and ``mode`` and a warning to log (or None)."""
    mode = (mode or "auto").lower()
    if mode not in AMP_MODES:
        raise TrainingError(f"--amp {mode}: expected auto, off, bf16 or fp16")
    if device.type != "cuda":
        warn = (
            f"--amp {mode} ignored: mixed precision is only used on CUDA"
            if mode in ("bf16", "fp16")
            else None
        )
        return Amp(False, None, device.type), warn
    if mode == "off":
        return Amp(False, None, "cuda"), None
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if mode == "bf16":
        return Amp(True, torch.bfloat16, "cuda"), None
    return Amp(True, torch.float16, "cuda", torch.amp.GradScaler("cuda")), None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    keys = torch.from_numpy(keys.astype(np.int64))
    return {"name": name, "keys": keys, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(x):
    return tuple(_tuples(v) for v in x) if isinstance(x, list | tuple) else x


# ---------------------------------------------------------------------------------------------
# Run folder, log, checkpoint files


class RunLog:
    """``OUT/log.jsonl``: one JSON object a line, each with ``event`` and ``time``.

    Events: ``start`` (stage, device, amp, clips, steps per epoch, init/resume), ``warning``
    (``message``), ``train`` (step, epoch, lr, the loss terms averaged since the last record,
    ``sec_per_step``; renderer: ``warmup``), ``phase`` (renderer: warm-up over), ``val`` (step, the
    loss terms averaged over the validation batches), ``sample`` (path), ``checkpoint`` (path,
    ``disc`` path) and ``end``.
    """

    def __init__(self, path: Path, echo: bool = True):
        self.path = path
        self.echo = echo

    def write(self, event: str, **fields) -> dict:
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=_json_default) + "\n")
        if self.echo:
            print(_human(rec), file=sys.stderr, flush=True)
        return rec


def _json_default(o):
    if isinstance(o, torch.Tensor | np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _human(rec: dict) -> str:
    skip = {"event", "time"}
    parts = []
    for k, v in rec.items():
        if k in skip:
            continue
        parts.append(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}")
    return f"[{rec['event']}] " + " ".join(parts)


def read_log(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, str(tmp))
    os.replace(tmp, path)


def point_latest(link: Path, target: Path) -> None:
    """``link`` -> ``target`` as a relative symlink (replaced atomically), or a copy."""
    tmp = link.with_name(link.name + ".tmp")
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    try:
        os.symlink(os.path.relpath(target, link.parent), tmp)
    except (OSError, NotImplementedError):
        shutil.copyfile(target, tmp)
    os.replace(tmp, link)


def step_name(prefix: str, step: int) -> str:
    return f"{prefix}_step{step:06d}.pth"


def load_training_checkpoint(path: Path) -> dict:
    from models.checkpoint import CheckpointError, load_weights_file

    try:
        obj = load_weights_file(path)
    except CheckpointError as e:  # one line: the file and what is wrong with it
        raise TrainingError(f"{e} (the checkpoint to resume from)") from None
    if not isinstance(obj, dict) or "state_dict" not in obj:
        raise TrainingError(f"{path}: not a training checkpoint (no state_dict)")
    return obj


# ---------------------------------------------------------------------------------------------
# The loop


class Trainer:
    """Base of both stages. Subclasses build the model, datasets and optimizers and define
    :meth:`train_step`, :meth:`val_step`, :meth:`save_samples` and the checkpoint contents."""

    config_cls: type[TrainConfig] = TrainConfig
    prefix = "model"

    def __init__(self, cfg: TrainConfig, echo: bool = True):
        self.cfg = cfg
        if not cfg.data or not cfg.out:
            raise TrainingError("both the data folder and the output folder must be given")
        if cfg.batch_size < 2:
            raise TrainingError(
                "--batch-size must be at least 2 (the networks' BatchNorm layers train on batch statistics)"
            )
        if cfg.max_steps < 0:
            raise TrainingError("--max-steps must not be negative")
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self.sample_dir = self.out / "samples"
        latest = self.out / "latest.pth"
        if cfg.resume:
            if not latest.exists():
                raise TrainingError(f"--resume: {latest} does not exist (nothing to resume in {self.out})")
        elif (self.out / "log.jsonl").exists() or latest.exists():
            raise TrainingError(
                f"{self.out} already holds a run: pass --resume to continue it, or choose another folder"
            )
        # the data first: a missing or empty dataset makes no run folder
        manifest = read_manifest(cfg.data)
        self.train_ids, self.val_ids = split_clips(manifest, cfg.val_fraction, cfg.val_clips, cfg.seed)
        for d in (self.out, self.ckpt_dir, self.sample_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.log = RunLog(self.out / "log.jsonl", echo=echo)
        self.device = resolve_device(cfg.device)
        self.amp, amp_warning = make_amp(self.device, cfg.amp)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes
        seed_everything(cfg.seed)
        self.step = 0
        self.epoch = 0
        self.warnings: list[str] = [amp_warning] if amp_warning else []

        self.build()  # model, optimizers, datasets (subclass)
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, len(self.train_set.clips) // cfg.batch_size)
        self.train_set.samples_per_epoch = self.steps_per_epoch * cfg.batch_size
        if self.val_set is not None:
            self.val_set.samples_per_epoch = max(1, cfg.val_batches) * cfg.batch_size
        resumed_from = None
        if cfg.resume:
            resumed_from = self.resume(latest)
        (self.out / "config.json").write_text(
            json.dumps({"stage": cfg.stage, **cfg.to_dict()}, indent=1) + "\n", encoding="utf-8"
        )
        self.log.write(
            "start",
            stage=cfg.stage,
            step=self.step,
            device=str(self.device),
            amp=self.amp.name,
            train_clips=len(self.train_set.clips),
            val_clips=0 if self.val_set is None else len(self.val_set.clips),
            steps_per_epoch=self.steps_per_epoch,
            batch_size=cfg.batch_size,
            init=cfg.init,
            resumed_from=resumed_from,
            **self.start_info(),
        )
        for w in self.warnings:
            self.log.write("warning", message=w)
        for cid, why in getattr(self.train_set, "skipped", []):
            self.log.write("warning", message=f"clip {cid} not used: {why}")

    # -- subclass hooks ---------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def start_info(self) -> dict:
        return {}

    def make_val_set(self, factory):
        """``factory(val_ids)``, or None (with a warning) when no validation clip is usable."""
        if not self.val_ids:
            return None
        try:
            return factory(self.val_ids)
        except DataError as e:
            self.warnings.append(f"no validation: {e}")
            return None

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def val_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def save_samples(self, batch: dict[str, torch.Tensor], path: Path) -> None:
        raise NotImplementedError

    def checkpoint_files(self, extra: dict) -> dict[str, dict]:
        """``{file name: object}`` to write at the current step; the first is the main checkpoint."""
        raise NotImplementedError

    def restore(self, ckpt: dict) -> None:
        raise NotImplementedError

    def train_record(self) -> dict:
        return {}

    # -- data --------------------------------------------------------------------------------
    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) for k, v in batch.items()}

    def loader(self, dataset, start: int, stop: int, epoch_seed: int) -> DataLoader:
        g = torch.Generator().manual_seed(epoch_seed)  # keeps the global RNG untouched (exact resume)
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=RangeSampler(start, stop),
            num_workers=self.cfg.num_workers,
            drop_last=True,
            pin_memory=self.device.type == "cuda",
            generator=g,
        )

    def first_batch(self) -> dict[str, torch.Tensor]:
        """One training batch on the device (the first of the current epoch)."""
        self.train_set.set_epoch(self.epoch)
        return self.to_device(next(iter(self.loader(self.train_set, 0, self.cfg.batch_size, self.cfg.seed))))

    # -- checkpoints ---------------------------------------------------------------------------
    def extra(self) -> dict:
        return {
            "format": "mouthpiece-train-1",
            "stage": self.cfg.stage,
            "config": json.dumps(self.cfg.to_dict()),
            "steps_per_epoch": self.steps_per_epoch,
            "rng": rng_state(),
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
        }

    def save(self) -> Path:
        files = self.checkpoint_files(self.extra())
        paths = []
        for name, obj in reversed(list(files.items())):  # the main file last: it names the others
            path = self.ckpt_dir / name
            atomic_save(obj, path)
            paths.append(path)
        main = paths[-1]
        point_latest(self.out / "latest.pth", main)
        others = [str(p) for p in paths[:-1]]
        self.log.write("checkpoint", step=self.step, epoch=self.epoch, path=str(main), others=others)
        if self.cfg.keep_last > 0:
            self.prune(self.cfg.keep_last)
        return main

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` checkpoints (with their companion files)."""
        found = (re.search(r"_step(\d+)\.pth$", p.name) for p in self.ckpt_dir.glob("*_step*.pth"))
        steps = sorted({int(m.group(1)) for m in found if m})
        for step in steps[:-keep]:
            for p in self.ckpt_dir.glob(f"*_step{step:06d}.pth"):
                p.unlink()

    def resume(self, latest: Path) -> str:
        path = latest.resolve()
        ckpt = load_training_checkpoint(path)
        extra = ckpt.get("mouthpiece") or {}
        if extra.get("stage") not in (None, self.cfg.stage):
            raise TrainingError(f"{path}: a {extra.get('stage')} checkpoint, not a {self.cfg.stage} one")
        self.restore(ckpt)
        self.step = int(ckpt.get("global_step", 0))
        if extra.get("steps_per_epoch") and extra["steps_per_epoch"] != self.steps_per_epoch:
            self.warnings.append(
                f"steps per epoch changed from {extra['steps_per_epoch']} to {self.steps_per_epoch}: "
                "epochs (and the renderer's warm-up) are counted with the new value"
            )
        self.epoch = self.step // self.steps_per_epoch
        if extra.get("scaler") and self.amp.scaler is not None:
            self.amp.scaler.load_state_dict(extra["scaler"])
        if extra.get("rng"):
            set_rng_state(extra["rng"])
        return str(path)

    # -- loop ----------------------------------------------------------------------------------
    def validate(self) -> dict[str, float] | None:
        if self.val_set is None:
            return None
        self.val_set.set_epoch(-1)  # the same validation samples every time
        totals: dict[str, float] = {}
        n = 0
        for batch in self.loader(self.val_set, 0, len(self.val_set), self.cfg.seed + 1):
            for k, v in self.val_step(self.to_device(batch)).items():
                totals[k] = totals.get(k, 0.0) + v
            n += 1
        if n == 0:
            return None
        means = {k: v / n for k, v in totals.items()}
        self.log.write("val", step=self.step, epoch=self.epoch, batches=n, **means)
        return means

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        B = cfg.batch_size
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        count, t_step, t_data = 0, 0.0, 0.0
        last: dict[str, float] = {}
        while self.step < cfg.max_steps:
            self.epoch = self.step // self.steps_per_epoch
            first = self.step % self.steps_per_epoch
            self.train_set.set_epoch(self.epoch)
            loader = self.loader(self.train_set, first * B, self.steps_per_epoch * B, cfg.seed + self.epoch)
            t0 = time.perf_counter()
            for batch in loader:
                t1 = time.perf_counter()
                batch = self.to_device(batch)
                last = self.train_step(batch)
                t2 = time.perf_counter()
                t_data, t_step = t_data + (t1 - t0), t_step + (t2 - t1)
                if not all(math.isfinite(v) for v in last.values()):
                    self.log.write("error", step=self.step, message="non-finite loss", **last)
                    raise TrainingError(f"step {self.step}: non-finite loss {last}")
                self.step += 1
                for k, v in last.items():
                    sums[k] = sums.get(k, 0.0) + v
                    counts[k] = counts.get(k, 0) + 1
                count += 1
                done = self.step >= cfg.max_steps
                if self.step % max(1, cfg.log_every) == 0 or self.step == 1 or done:
                    self.log.write(
                        "train",
                        step=self.step,
                        epoch=self.epoch,
                        lr=self.optimizer.param_groups[0]["lr"],
                        **{k: v / counts[k] for k, v in sums.items()},
                        **self.train_record(),
                        sec_per_step=t_step / count,
                        data_sec_per_step=t_data / count,
                    )
                    sums, counts, count, t_step, t_data = {}, {}, 0, 0.0, 0.0
                if cfg.val_every and self.step % cfg.val_every == 0:
                    self.validate()
                if cfg.sample_every and (self.step % cfg.sample_every == 0):
                    path = self.sample_dir / f"step{self.step:06d}.png"
                    self.save_samples(batch, path)
                    self.log.write("sample", step=self.step, path=str(path))
                if (cfg.save_every and self.step % cfg.save_every == 0) or done:
                    self.save()
                if done:
                    break
                t0 = time.perf_counter()
        self.log.write("end", step=self.step, epoch=self.epoch)
        return {"step": self.step, "epoch": self.epoch, "last": last, "out": str(self.out)}
