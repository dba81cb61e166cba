"""The neural synthesizer: the IP_LAP transformer, sketches and a renderer backend, pasted into the frame.

:class:`FaceGenerator` is the authors' inference (IPLAP_FACTS.md section 8) on a batch of windows, each
carrying its own 5 mel chunks (batching changes no output: each row is independent in eval mode).
:class:`NeuralSynthesizer` is the :class:`engine.synth.base.Synthesizer` around it: with ``shared=True``
every stream's model call goes through one :class:`engine.synth.batcher.SharedModelWorker` (windows of
all sessions batched per avatar), else each stream has a backend of its own. Its streams paste the faces
into the avatar's frames and cross-fade between rest and speech over ``crossfade`` frames.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import models
from engine.core.avatar import Avatar
from engine.core.composite import composite
from engine.core.frames import Box, Frame, FrameKind
from engine.core.schedule import CENTER, LOOKAHEAD_MS, T, Window, silent_windows
from engine.core.sketch import sketches_to_tensor
from engine.synth.backends import (
    DEFAULT_BACKEND,
    DEFAULT_PRECISION,
    DTYPES,
    RendererBackend,
    make_renderer_backend,
)
from engine.synth.base import CallInfo, Computed, Planned, planned_timing, rest_frame
from engine.synth.weights import (  # noqa: F401  (re-exported: the names the offline tools use)
    CHECKPOINT_DIR,
    RANDOM_WEIGHTS_WARNING,
    DubError,
    find_checkpoint,
    load_models,
)

__all__ = ["DubConfig", "FaceGenerator", "NeuralSynthesizer", "NeuralStream", "StageTimes"]


@dataclass(frozen=True)
class DubConfig:
    batch: int = 4  # windows per model call
    device: str = "cpu"
    backend: str = DEFAULT_BACKEND
    dtype: str = DEFAULT_PRECISION  # fp32 | fp16 | bf16 (renderer precision)


@dataclass
class StageTimes:
    """Seconds per stage, summed over calls (thread-safe)."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, t0: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.seconds[stage] += now - t0
        return now


class FaceGenerator:
    """The transformer, sketches and a renderer backend on batches of windows of one avatar at a time."""

    def __init__(self, landmark_model, renderer: RendererBackend | None, times: StageTimes | None = None):
        self.renderer = renderer
        if isinstance(landmark_model, torch.nn.Module):  # else an ONNX Runtime session (CPU tensors)
            self.lm = landmark_model.eval()
            self.device = next(landmark_model.parameters()).device
        else:
            self.lm, self.device = landmark_model, torch.device("cpu")
        self.times = times or StageTimes()

    def references(self, avatar: Avatar) -> tuple[torch.Tensor, torch.Tensor]:
        """The avatar's landmark references on the device; also loads the renderer's references."""
        if self.renderer is not None:
            self.renderer.set_references(*avatar.reference_tensors())
        return tuple(
            torch.from_numpy(np.ascontiguousarray(a)).to(self.device) for a in avatar.landmark_refs()
        )

    def _mels(self, wins: list[Window]) -> torch.Tensor:
        mel = np.stack([w.mel for w in wins])  # (B, 5, 80, 16), the one copy the batch needs
        return torch.from_numpy(mel).to(self.device)

    @torch.inference_mode()
    def landmarks(
        self, avatar: Avatar, wins: list[Window], lm_refs, split: dict | None = None, mels=None
    ) -> np.ndarray:
        """Full landmarks (B*T, 2, 131): each window's poses and the transformer's predicted content.
        ``split``: gets ``transformer`` = this call's seconds; ``mels``: the windows' mel on the device."""
        B, t0 = len(wins), time.perf_counter()
        mels = self._mels(wins) if mels is None else mels  # (B, T, 80, 16)
        lm_pose, lm_content = lm_refs
        templates = np.array([w.templates for w in wins])  # (B, T)
        pose = torch.from_numpy(avatar.pose[templates.ravel()]).to(self.device).reshape(B, T, 2, -1)
        content = self.lm(
            mels[:, :, None], pose, lm_pose.expand(B, *lm_pose.shape), lm_content.expand(B, *lm_content.shape)
        )  # (B*T, 2, 57)
        full = torch.cat([pose.reshape(B * T, 2, -1), content], dim=2).cpu().numpy()  # (B*T, 2, 131)
        t1 = self.times.add("transformer", t0)
        if split is not None:
            split["transformer"] = t1 - t0
        return full

    def content(self, avatar: Avatar, wins: list[Window], lm_refs) -> np.ndarray:
        """The predicted content landmarks (B, 2, 57) of each window's rendered (centre) frame."""
        full = self.landmarks(avatar, wins, lm_refs)
        return full.reshape(len(wins), T, 2, -1)[:, CENTER, :, -57:]

    @torch.inference_mode()
    def faces(self, avatar: Avatar, wins: list[Window], lm_refs, split: dict | None = None) -> np.ndarray:
        """Transformer, sketches and renderer: (B, 128, 128, 3) uint8 BGR faces. ``split``: gets this
        call's seconds per stage (each ends with the host copy of its result: honest on a GPU)."""
        B = len(wins)
        templates = np.array([w.templates for w in wins])  # (B, T)
        mels = self._mels(wins)  # (B, T, 80, 16)
        full = self.landmarks(avatar, wins, lm_refs, split, mels)  # (B*T, 2, 131)
        t_sketch = time.perf_counter()
        sketches = sketches_to_tensor(full, avatar.crop_hw[templates.ravel()]).reshape(B, T, 3, 128, 128)
        render_t = np.array([w.render_template for w in wins])
        faces_in = torch.from_numpy((avatar.crops[render_t] / 255.0).astype(np.float32)).permute(0, 3, 1, 2)
        t0 = self.times.add("sketch", t_sketch)
        if split is not None:
            split["sketch"] = t0 - t_sketch
        render_mel = mels[:, CENTER][:, None]  # (B, 1, 80, 16)
        generated = self.renderer.render(faces_in, sketches, render_mel)  # (B, 3, 128, 128)
        faces = (generated.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(
            np.uint8
        )  # truncation, as the authors
        t1 = self.times.add("renderer", t0)
        if split is not None:
            split["renderer"] = t1 - t0
        return faces


@dataclass
class _AvatarState:
    generator: FaceGenerator
    lm_refs: tuple


class NeuralSynthesizer:
    """The IP_LAP synthesizer (see the module docstring). ``backend_factory()`` makes one renderer backend
    (per avatar with ``shared``, per stream without)."""

    name = "neural"
    lookahead_ms = LOOKAHEAD_MS
    frame_analysis = None  # the transformer's windows
    computes = True

    def __init__(
        self,
        landmark_model,
        backend_factory: Callable[[], RendererBackend],
        shared: bool = True,
        max_batch: int = 16,
        max_avatars: int = 8,
    ) -> None:
        self.landmark_model = landmark_model
        self.backend_factory = backend_factory
        self.shared = shared
        self.max_batch = max_batch
        self.max_avatars = max_avatars
        self.times = StageTimes()
        self._worker = None

    @classmethod
    def from_models(cls, landmark_model, renderer: models.Renderer, config: DubConfig | None = None, **kw):
        """For ``config``'s backend and precision; with the ``onnx`` backend the transformer runs through
        ONNX Runtime as well."""
        config = config or DubConfig()
        if config.dtype not in DTYPES:
            raise ValueError(f"unknown precision {config.dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = DTYPES[config.dtype]
        first = [make_renderer_backend(config.backend, renderer, dtype)]  # bad choices fail here, at once
        if config.backend == "onnx":
            from engine.synth.backends.onnx import OnnxLandmarkGenerator

            landmark_model = OnnxLandmarkGenerator.from_torch(landmark_model, device=config.device)

        def factory():
            return first.pop() if first else make_renderer_backend(config.backend, renderer, dtype)

        kw.setdefault("shared", False)
        kw.setdefault("max_batch", config.batch)
        return cls(landmark_model, factory, **kw)

    # ---- model work (any thread; the shared worker's thread with ``shared``) --------------------

    def prepare(self, avatar: Avatar) -> _AvatarState:
        """A backend with the avatar's references and its landmark references on the device."""
        gen = FaceGenerator(self.landmark_model, self.backend_factory(), self.times)
        return _AvatarState(gen, gen.references(avatar))

    def infer(self, state: _AvatarState, avatar: Avatar, wins: list[Window], split: dict | None = None):
        return state.generator.faces(avatar, wins, state.lm_refs, split)

    @property
    def worker(self):
        """The model worker every stream shares (``shared``), made on first use."""
        if self.shared and self._worker is None:
            from engine.synth.batcher import SharedModelWorker

            self._worker = SharedModelWorker(self, max_batch=self.max_batch, max_avatars=self.max_avatars)
        return self._worker

    def open(self, avatar: Avatar, crossfade: int = 0, audio: np.ndarray | None = None) -> NeuralStream:
        return NeuralStream(self, avatar, crossfade)

    def warm_up(self, avatar: Avatar) -> float:
        """One call on silent windows of ``avatar`` (the first, slow, call); returns its seconds."""
        if self.shared:
            return self.worker.warm_up(avatar)
        t0 = time.perf_counter()
        self.infer(self.prepare(avatar), avatar, silent_windows(avatar))
        return time.perf_counter() - t0

    def release(self, avatar: Avatar) -> None:
        if self._worker is not None:
            self._worker.release(avatar)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


@dataclass(slots=True)
class _Fade:
    """Cross-fade state, carried from group to group: ``level`` in 0..K+1 (K+1: fully speech)."""

    level: int = 0
    face: np.ndarray | None = None  # the last generated face (128, 128, 3) uint8


class NeuralStream:
    """One session's (or one dub's) use of a :class:`NeuralSynthesizer` (see engine.synth.base)."""

    def __init__(self, synth: NeuralSynthesizer, avatar: Avatar, crossfade: int = 0) -> None:
        self.synth = synth
        self.crossfade = int(crossfade)
        self._state: _AvatarState | None = None
        self._fade = _Fade()
        self._gen = 0
        self.set_avatar(avatar)

    def audio_ahead(self) -> None:
        """The neural synthesizer does not analyse audio ahead of its windows."""
        return None

    def set_avatar(self, avatar: Avatar) -> None:
        """(Worker thread, between calls.) A private backend loads the avatar's references."""
        if not self.synth.shared:
            if self._state is None:
                self._state = self.synth.prepare(avatar)
            else:
                self._state.lm_refs = self._state.generator.references(avatar)

    def compute(self, avatar: Avatar, group: list[Planned]) -> Computed:
        speech = [(i, it) for i, it in enumerate(group) if it.action is FrameKind.SPEECH]
        out = Computed(group, {})
        if not speech:
            return out
        split: dict[str, float] = {}
        wins = [it.window for _, it in speech]
        start = time.perf_counter()
        if self.synth.shared:
            faces = self.synth.worker.faces(avatar, wins, owner=self, split=split)
        else:
            faces = self.synth.infer(self._state, avatar, wins, split)
        end = time.perf_counter()
        out.info, out.split = CallInfo(start, end, len(speech)), split
        for (i, it), face in zip(speech, faces, strict=True):
            out.results[i] = face
            if it.deadline is not None and end > it.deadline:
                it.action = FrameKind.DROPPED  # computed, but too late to show
        return out

    def compose(self, avatar: Avatar, computed: Computed, gen: int = 0) -> list[Frame]:
        """Paste the faces, blend the cross-fades, rest frames for the rest."""
        if gen != self._gen:  # flushed since the last group: no fade carries over
            self._gen, self._fade = gen, _Fade()
        K, fade, info = self.crossfade, self._fade, computed.info
        t0 = time.perf_counter()
        out: list[Frame] = []
        for i, it in enumerate(computed.group):
            w = it.window
            timing = planned_timing(it)
            face = computed.results.get(i)
            if face is not None:  # went through the model (possibly too late to show)
                timing.model_start, timing.model_end = info.model_start, info.model_end
                for k, v in computed.split.items():
                    setattr(timing, f"{k}_s", v)
            if face is not None and it.action is FrameKind.SPEECH:
                ti = w.render_template
                yyxx = tuple(int(v) for v in avatar.boxes[ti])
                rest = avatar.frames[ti]
                full = composite(rest, face, yyxx, avatar.mask(ti))
                full.flags.writeable = False
                timing.composite_s = time.perf_counter() - t0  # this frame and the group's before it
                fade.face = face
                for q in w.output_indices:
                    fade.level = min(fade.level + 1, K + 1)
                    img = full
                    if fade.level <= K:  # fading in: blend over the rest frame inside the box
                        img = _blend(rest, full, yyxx, fade.level / (K + 1))
                    out.append(Frame(q, FrameKind.SPEECH, img, Box.from_yyxx(yyxx), timing.copy(), ti, face))
                continue
            kind = FrameKind.DROPPED if it.action is FrameKind.DROPPED else FrameKind.REST
            for q in w.output_indices:
                fade.level = max(fade.level - 1, 0)
                frame = rest_frame(avatar, q, timing.copy(), kind)
                if fade.level > 0 and fade.face is not None:  # fading out: the last face, falling weight
                    ti = frame.template
                    yyxx = tuple(int(v) for v in avatar.boxes[ti])
                    pasted = composite(avatar.frames[ti], fade.face, yyxx, avatar.mask(ti))
                    frame.image = _blend(avatar.frames[ti], pasted, yyxx, fade.level / (K + 1), inplace=True)
                    frame.box = Box.from_yyxx(yyxx)
                out.append(frame)
        if info is not None:
            info.composite_s = time.perf_counter() - t0
        return out


def _blend(rest: np.ndarray, full: np.ndarray, box, alpha: float, inplace: bool = False) -> np.ndarray:
    """``rest + alpha (full - rest)``; the two differ only inside ``box`` (y1, y2, x1, x2)."""
    y1, y2, x1, x2 = box
    img = full if inplace else full.copy()
    r = rest[y1:y2, x1:x2].astype(np.float32)
    img[y1:y2, x1:x2] = np.rint(r + alpha * (full[y1:y2, x1:x2].astype(np.float32) - r)).astype(np.uint8)
    img.flags.writeable = False
    return img
