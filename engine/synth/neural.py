"""Offline dubbing: a prepared avatar plus mel chunks become lip-synced frames.

This is the authors' inference (IPLAP_FACTS.md section 8) with windows batched: ``batch``
windows go through the transformer and the renderer per call, which changes no output (each
row of a batch is independent in eval mode).

    dubber = Dubber(landmark_model, make_renderer_backend("fast", renderer), DubConfig(batch=4))
    for result in dubber.run(avatar, chunks):  # FrameResult per output frame, in order
        ...
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import models
from engine.core.avatar import Avatar
from engine.core.composite import composite
from engine.core.schedule import T, Window, windows
from engine.core.sketch import sketches_to_tensor
from engine.synth.backends import DTYPES, RendererBackend, make_renderer_backend

CHECKPOINT_DIR = Path("checkpoints")
#: File names looked for in the checkpoint folder, in order.
CHECKPOINT_NAMES = {
    models.LANDMARK: (
        "landmarkgenerator_checkpoint.pth",
        "landmarkgenerator.safetensors",
        "landmark_generator.safetensors",
    ),
    models.RENDERER: ("renderer_checkpoint.pth", "renderer.safetensors"),
}
MIN_CHUNKS = 3


class DubError(ValueError):
    """Inputs that cannot be dubbed (too-short audio, missing weights, ...), clearly explained."""


@dataclass(frozen=True)
class DubConfig:
    batch: int = 4  # windows per model call
    device: str = "cpu"
    backend: str = "fast"
    dtype: str = "fp32"  # fp32 | fp16 | bf16 (renderer precision)


@dataclass
class FrameResult:
    output_index: int  # position in the output video
    template_index: int  # template frame shown (and pasted into)
    window: int  # the transformer window that produced the face
    face: np.ndarray  # (128, 128, 3) uint8 BGR, the generated face before pasting
    box: tuple[int, int, int, int]  # (y1, y2, x1, x2) where it was pasted
    frame: np.ndarray  # (H, W, 3) uint8 BGR, the composited frame


@dataclass
class StageTimes:
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] += now - t0
        return now


class Dubber:
    """Runs the transformer and a renderer backend over an avatar, window batch by window batch."""

    def __init__(
        self,
        landmark_model: models.LandmarkGenerator,
        renderer: RendererBackend,
        config: DubConfig | None = None,
    ):
        self.config = config or DubConfig()
        if self.config.batch < 1:
            raise ValueError("batch must be >= 1")
        self.renderer = renderer
        if isinstance(
            landmark_model, torch.nn.Module
        ):  # else an ONNX Runtime session (CPU tensors in and out)
            self.lm = landmark_model.eval()
            self.device = next(landmark_model.parameters()).device
        else:
            self.lm, self.device = landmark_model, torch.device("cpu")
        self.times = StageTimes()

    @torch.inference_mode()
    def run(self, avatar: Avatar, chunks: np.ndarray) -> Iterator[FrameResult]:
        """Frames for ``chunks`` (n, 80, 16): ``n`` results, output indices 0..n-1 in order.

        The models run on the calling thread; pasting a batch's faces into their frames runs on a
        worker thread while the next batch goes through the models (one batch of look-ahead).
        """
        n = len(chunks)
        if n < MIN_CHUNKS:
            raise DubError(
                f"the audio is too short: {n} mel chunk(s), at least {MIN_CHUNKS} are needed (about 0.27 s)"
            )
        dev = self.device
        ref_imgs, ref_sketches = avatar.reference_tensors()
        self.renderer.set_references(ref_imgs, ref_sketches)
        lm_pose, lm_content = (torch.from_numpy(a).to(dev) for a in avatar.landmark_refs())
        chunks_t = torch.from_numpy(np.ascontiguousarray(chunks, dtype=np.float32)).to(dev)  # (n, 80, 16)
        plan = windows(n, avatar.n_frames)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mouthpiece-composite") as pool:
            pending = None
            for s in range(0, len(plan), self.config.batch):
                batch = plan[s : s + self.config.batch]
                faces = self.faces(avatar, batch, chunks_t, lm_pose, lm_content)
                job = pool.submit(self._composite, avatar, batch, faces)
                if pending is not None:
                    yield from pending.result()
                pending = job
            if pending is not None:
                yield from pending.result()

    def landmarks(
        self, avatar: Avatar, batch: list[Window], chunks_t, lm_pose, lm_content, split: dict | None = None
    ) -> np.ndarray:
        """The transformer for a batch of windows: full landmarks (B*T, 2, 131), pose + predicted content.
        ``split``: if given, gets ``transformer`` = this call's seconds."""
        B, dev, t0 = len(batch), self.device, time.perf_counter()
        templates = np.array([w.templates for w in batch])  # (B, T)
        mel_idx = torch.tensor([w.mel_indices for w in batch], device=dev)  # (B, T)
        pose = torch.from_numpy(avatar.pose[templates.ravel()]).to(dev).reshape(B, T, 2, -1)  # (B, T, 2, 74)
        mels = chunks_t[mel_idx][:, :, None]  # (B, T, 1, 80, 16)
        content = self.lm(
            mels, pose, lm_pose.expand(B, *lm_pose.shape), lm_content.expand(B, *lm_content.shape)
        )  # (B*T, 2, 57)
        full = torch.cat([pose.reshape(B * T, 2, -1), content], dim=2).cpu().numpy()  # (B*T, 2, 131)
        t1 = self.times.add("transformer", t0)
        if split is not None:
            split["transformer"] = t1 - t0
        return full

    def faces(
        self, avatar: Avatar, batch: list[Window], chunks_t, lm_pose, lm_content, split: dict | None = None
    ) -> np.ndarray:
        """Transformer, sketches and renderer for a batch of windows: (B, 128, 128, 3) uint8 faces.
        ``split``: if given, gets this call's seconds per stage (``transformer``, ``sketch``,
        ``renderer``; each ends with the host copy of its result, so on a GPU they are honest)."""
        B, dev = len(batch), self.device
        templates = np.array([w.templates for w in batch])  # (B, T)
        full = self.landmarks(avatar, batch, chunks_t, lm_pose, lm_content, split)  # (B*T, 2, 131)
        t0 = time.perf_counter()
        t_sketch = t0

        sketches = sketches_to_tensor(full, avatar.crop_hw[templates.ravel()]).reshape(B, T, 3, 128, 128)
        render_t = np.array([w.render_template for w in batch])
        faces_in = torch.from_numpy((avatar.crops[render_t] / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
        t0 = self.times.add("sketch", t0)
        if split is not None:
            split["sketch"] = t0 - t_sketch

        render_mel = chunks_t[torch.tensor([w.render_mel for w in batch], device=dev)][
            :, None
        ]  # (B, 1, 80, 16)
        generated = self.renderer.render(faces_in, sketches, render_mel)  # (B, 3, 128, 128)
        faces = (generated.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(
            np.uint8
        )  # truncation, as the authors
        t1 = self.times.add("renderer", t0)
        if split is not None:
            split["renderer"] = t1 - t0
        return faces

    def _composite(self, avatar: Avatar, batch: list[Window], faces: np.ndarray) -> list[FrameResult]:
        t0, out = time.perf_counter(), []
        for w, face in zip(batch, faces, strict=True):
            ti = w.render_template
            box = tuple(int(v) for v in avatar.boxes[ti])
            frame = composite(avatar.frames[ti], face, box, avatar.mask(ti))
            out += [FrameResult(p, ti, w.start, face, box, frame) for p in w.output_indices]
        self.times.add("composite (overlapped)", t0)
        return out


# ---------------------------------------------------------------------------------------------


def find_checkpoint(kind: str, directory: str | Path = CHECKPOINT_DIR) -> Path:
    directory = Path(directory)
    for name in CHECKPOINT_NAMES[kind]:
        if (directory / name).is_file():
            return directory / name
    pretty = "landmark transformer" if kind == models.LANDMARK else "renderer"
    raise DubError(
        f"no {pretty} checkpoint found in {directory}/ (looked for {', '.join(CHECKPOINT_NAMES[kind])}). "
        f"Put the official file there (see README, 'Weights'), pass its path explicitly, "
        f"or use --random-weights to try the pipeline without trained weights."
    )


RANDOM_WEIGHTS_WARNING = """
**********************************************************************
*  RANDOM WEIGHTS: no trained checkpoints are used. The stand-in      *
*  weights make the whole pipeline run, but the faces are noise and   *
*  the lips do not follow the audio. For tests and demos only.        *
**********************************************************************
"""


def load_models(
    landmark_checkpoint: str | Path | None = None,
    renderer_checkpoint: str | Path | None = None,
    device: str = "cpu",
    random_weights: bool = False,
    seed: int = 1,
) -> tuple[models.LandmarkGenerator, models.Renderer]:
    """The two networks from checkpoints (found in ``checkpoints/`` unless given), or stand-in weights."""
    if random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return models.standin_model(models.LANDMARK, seed).to(device), models.standin_model(
            models.RENDERER, seed
        ).to(device)
    lm_path = Path(landmark_checkpoint) if landmark_checkpoint else find_checkpoint(models.LANDMARK)
    r_path = Path(renderer_checkpoint) if renderer_checkpoint else find_checkpoint(models.RENDERER)
    return models.load_landmark_generator(lm_path, device), models.load_renderer(r_path, device)


def make_dubber(lm: models.LandmarkGenerator, renderer: models.Renderer, config: DubConfig) -> Dubber:
    """The dubber for ``config``: the renderer backend it names, and with the ``onnx`` backend the
    landmark transformer through ONNX Runtime as well."""
    if config.dtype not in DTYPES:
        raise ValueError(f"unknown precision {config.dtype!r}; choose one of {', '.join(DTYPES)}")
    backend = make_renderer_backend(config.backend, renderer, DTYPES[config.dtype])
    if config.backend == "onnx":
        from engine.synth.backends.onnx import OnnxLandmarkGenerator

        lm = OnnxLandmarkGenerator.from_torch(lm, device=config.device)
    return Dubber(lm, backend, config)
