"""Which synthesizer the server runs: weight discovery and the neural / preview / none choice."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from engine.synth import canonical_renderer, make_synthesizer
from engine.synth.backends import DEFAULT_BACKEND, DEFAULT_PRECISION

PREVIEW_HINT = (
    "For the neural IP_LAP renderer put landmarkgenerator_checkpoint.pth and renderer_checkpoint.pth "
    "into checkpoints/ (check them with 'mouthpiece checkpoints verify checkpoints/*.pth') and restart "
    "with --renderer neural (on a GPU for real time); to see the neural pipeline run without trained "
    "weights, restart with --renderer neural --random-weights (noise faces)."
)

NO_WEIGHTS_MESSAGE = (
    "No renderer is used (--renderer none), so the avatar stays at rest and your audio passes through. "
    "To make it speak, put the official landmarkgenerator_checkpoint.pth and renderer_checkpoint.pth "
    "into checkpoints/ (or pass --landmark-checkpoint and --renderer-checkpoint), check them with "
    "'mouthpiece checkpoints verify checkpoints/*.pth', and restart the server."
)


class ModelEngine:
    """The networks every session shares (or none: passthrough), and a renderer backend per session."""

    def __init__(
        self,
        landmark_model=None,
        renderer=None,
        backend: str = DEFAULT_BACKEND,
        precision: str = DEFAULT_PRECISION,
        device: str = "cpu",
        weights: dict | None = None,
        backend_factory: Callable[[], object] | None = None,
        max_batch: int = 16,
        preview: bool = False,
        reason: str | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.preview = preview  # the preview renderer (landmark_model, when given, drives the mouth)
        self.reason = reason  # why the preview renderer was chosen (shown on the page)
        self.landmark_model = landmark_model
        self.renderer = renderer
        self.backend = backend
        self.precision = precision
        self.device = device
        self.weights = weights or {"landmark": None, "renderer": None, "standin": False}
        self._backend_factory = backend_factory
        self._synth = None

    @property
    def mode(self) -> str:
        if self.preview:
            return "preview"
        return "neural" if self.landmark_model is not None and self.renderer is not None else "passthrough"

    @property
    def renderer_name(self) -> str | None:
        return {"preview": "preview", "neural": self.backend, "passthrough": None}[self.mode]

    @property
    def message(self) -> str | None:
        if self.mode == "passthrough":
            return NO_WEIGHTS_MESSAGE
        if self.mode == "preview":
            drive = (
                "the IP_LAP transformer's predicted lips"
                if self.landmark_model is not None
                else "the loudness of the voice"
            )
            return (
                f"Preview renderer ({self.reason or 'chosen with --renderer preview'}): the mouth is taken "
                f"from the avatar's own frames (or drawn open on a photo), following {drive}. " + PREVIEW_HINT
            )
        if self.weights.get("standin"):
            return (
                "Stand-in (random) weights: the pipeline runs but the faces are noise. For tests and demos."
            )
        return None

    def make_backend(self):
        if self._backend_factory is not None:
            return self._backend_factory()
        from engine.synth.backends import DTYPES, make_renderer_backend

        return make_renderer_backend(self.backend, self.renderer, DTYPES[self.precision])

    @property
    def synthesizer(self):
        """The synthesizer every session of the server uses (made on first use)."""
        if self._synth is None:
            self._synth = make_synthesizer(
                {"passthrough": "none"}.get(self.mode, self.mode),
                landmark_model=self.landmark_model,
                backend_factory=self.make_backend,
                max_batch=self.max_batch,
            )
        return self._synth

    @property
    def worker(self):
        """The model worker every session shares (batches windows across sessions); None without one."""
        return getattr(self.synthesizer, "worker", None)

    def close(self) -> None:
        if self._synth is not None:
            self._synth.close()
            self._synth = None

    @classmethod
    def from_config(cls, cfg) -> ModelEngine:
        """Load the configured weights (explicit paths must load; ones found in checkpoints/ are used) and
        choose the renderer: ``neural`` (both weights), ``preview`` (the CPU preview renderer; the
        transformer drives its mouth when its weights are there), ``none`` (passthrough), or ``auto``:
        neural on a GPU with both weights, else the preview renderer following the audio."""
        import torch

        import models
        from engine.synth.weights import RANDOM_WEIGHTS_WARNING, DubError, find_checkpoint

        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # leave a core to the event loop that paces the streams
            torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
        kw = dict(backend=cfg.backend, precision=cfg.precision, device=device, max_batch=cfg.max_batch)
        lm = r = None
        weights = {"landmark": None, "renderer": None, "standin": False}
        if cfg.random_weights:
            print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
            lm = models.standin_model(models.LANDMARK, 1).to(device).eval()
            r = models.standin_model(models.RENDERER, 1).to(device).eval()
            weights = {"landmark": "stand-in", "renderer": "stand-in", "standin": True}
        elif cfg.renderer != "none":
            paths = {}
            for kind, given in (
                (models.LANDMARK, cfg.landmark_checkpoint),
                (models.RENDERER, cfg.renderer_checkpoint),
            ):
                if given:
                    if not Path(given).is_file():
                        raise FileNotFoundError(f"checkpoint not found: {given}")
                    paths[kind] = Path(given)
                else:
                    with contextlib.suppress(DubError):
                        paths[kind] = find_checkpoint(kind, cfg.checkpoint_dir)
            if models.LANDMARK in paths:
                lm = models.load_landmark_generator(paths[models.LANDMARK], device)
                weights["landmark"] = str(paths[models.LANDMARK])
            if models.RENDERER in paths:
                r = models.load_renderer(paths[models.RENDERER], device)
                weights["renderer"] = str(paths[models.RENDERER])
        kw["weights"] = weights
        choice = canonical_renderer(cfg.renderer)
        if choice == "none":
            return cls(**kw)
        if choice == "neural":
            if lm is None or r is None:
                raise ValueError(
                    "--renderer neural needs both IP_LAP checkpoints (landmark transformer and renderer) in "
                    f"{cfg.checkpoint_dir}/ or given with --landmark-checkpoint and --renderer-checkpoint "
                    "(README, 'Weights'); add --random-weights to try it without trained weights (noise "
                    "faces), or use --renderer preview"
                )
            return cls(lm, r, **kw)
        if choice == "preview":
            return cls(lm, None, preview=True, reason="chosen with --renderer preview", **kw)
        # auto: the neural renderer on a GPU with both weights, else the real-time preview renderer
        if lm is not None and r is not None and device.startswith("cuda"):
            return cls(lm, r, **kw)
        reason = "no GPU" if lm is not None and r is not None else "no IP_LAP renderer weights"
        # on a CPU the preview follows the audio's loudness: the transformer (30-50 ms per frame on two
        # cores) would not keep up; --renderer preview uses it when its weights are there
        return cls(lm if device.startswith("cuda") else None, None, preview=True, reason=reason, **kw)
