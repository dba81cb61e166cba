"""Torch datasets over a preprocessed training dataset (:mod:`.dataset`), memory-mapped:
:class:`LandmarkWindows` and :class:`RendererSamples` draw the authors' samples (windows of 5
frames with their mel chunks and references; docs/training_data.md, "Samples") from the valid
frames only, each sample a pure function of ``(seed, epoch, index)``; and
:func:`write_synthetic_dataset` writes a small dataset for tests and smoke runs.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from engine.core.audio import MEL_CHUNK_LEN, MEL_FPS, mel_chunk_starts

from .dataset import (
    DEFAULT_FPS,
    N_POSE,
    DataError,
    manifest_entry,
    read_manifest,
    split_clips,
    write_clip,
    write_json,
    write_manifest,
)

__all__ = [
    "DataError",
    "LandmarkWindows",
    "RangeSampler",
    "RendererSamples",
    "read_manifest",
    "split_clips",
    "write_synthetic_dataset",
]

MEL_PER_FRAME = MEL_FPS / DEFAULT_FPS  # mel frames per video frame at 25 fps
TARGET_WINDOW = 5  # sketches per renderer sample


@dataclass
class _Clip:
    id: str
    path: Path
    frames: int
    valid: np.ndarray  # (L,) bool
    n_chunks: int
    mel_starts: np.ndarray  # (n_chunks,) first mel frame of each frame's chunk
    starts: np.ndarray  # window starts that may be drawn
    candidates: np.ndarray  # valid frames (reference pool)


class _ClipDataset(Dataset):
    """Shared machinery: clip table, lazily opened memory maps (reopened in each worker), RNG."""

    arrays: tuple[str, ...] = ()

    def __init__(
        self,
        root: str | os.PathLike,
        clip_ids: list[str] | None = None,
        samples_per_epoch: int | None = None,
        seed: int = 0,
    ):
        self.root = Path(root)
        manifest = read_manifest(self.root)
        self.fps = float(manifest.get("fps", 25))
        wanted = set(clip_ids) if clip_ids is not None else None
        self.clips: list[_Clip] = []
        self.skipped: list[tuple[str, str]] = []
        for entry in manifest["clips"]:
            cid = entry["id"]
            if wanted is not None and cid not in wanted:
                continue
            path = self.root / "clips" / cid
            if not path.is_dir():
                self.skipped.append((cid, "clip folder missing"))
                continue
            valid = np.load(path / "valid.npy").astype(bool)
            mel = np.load(path / "mel.npy", mmap_mode="r")
            if mel.ndim != 2 or mel.shape[0] != 80:
                raise DataError(f"{path / 'mel.npy'}: shape {mel.shape}, expected (80, M)")
            mel_starts = mel_chunk_starts(mel.shape[1], self.fps)
            n_chunks = len(mel_starts)
            starts, candidates = self._usable(valid, n_chunks)
            if len(starts) == 0:
                self.skipped.append((cid, "no usable window (too short, invalid frames or no audio)"))
                continue
            self.clips.append(_Clip(cid, path, len(valid), valid, n_chunks, mel_starts, starts, candidates))
        if not self.clips:
            why = "; ".join(f"{c}: {r}" for c, r in self.skipped[:5]) or "no clips selected"
            raise DataError(f"{self.root}: no usable clip for {type(self).__name__} ({why})")
        self.samples_per_epoch = samples_per_epoch or len(self.clips)
        self.seed = seed
        self.epoch = 0
        self._maps: dict[tuple[int, str], np.ndarray] = {}

    def _usable(self, valid: np.ndarray, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __getstate__(self):  # memory maps are reopened in each DataLoader worker
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def array(self, clip: int, name: str) -> np.ndarray:
        key = (clip, name)
        if key not in self._maps:
            self._maps[key] = np.load(self.clips[clip].path / f"{name}.npy", mmap_mode="r")
        return self._maps[key]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples_per_epoch

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch + 1, index])

    def mel_chunks(self, clip: int, frames: list[int]) -> np.ndarray:
        mel, starts = self.array(clip, "mel"), self.clips[clip].mel_starts
        out = np.stack([mel[:, starts[f] : starts[f] + MEL_CHUNK_LEN] for f in frames])
        return np.ascontiguousarray(out, dtype=np.float32)  # (n, 80, 16)

    def images(self, clip: int, frames: list[int]) -> np.ndarray:
        faces = np.asarray(self.array(clip, "faces")[np.asarray(frames)])  # (n, H, W, 3) uint8 BGR
        return faces.transpose(0, 3, 1, 2).astype(np.float32) / 255.0  # (n, 3, H, W)

    def sketches(self, clip: int, frames: list[int]) -> np.ndarray:
        sk = np.asarray(self.array(clip, "sketches")[np.asarray(frames)]).astype(np.float32) / 255.0
        return np.repeat(sk[:, None], 3, axis=1)  # (n, 3, H, W)


class LandmarkWindows(_ClipDataset):
    """Samples of the landmark transformer: ``{"mels" (T,1,80,16), "pose" (T,2,74),
    "content" (T,2,57), "ref_pose" (Nl,2,74), "ref_content" (Nl,2,57)}`` float32 tensors."""

    def __init__(self, root, clip_ids=None, T: int = 5, n_ref: int = 15, samples_per_epoch=None, seed=0):
        self.T, self.n_ref = T, n_ref
        super().__init__(root, clip_ids, samples_per_epoch, seed)

    def _usable(self, valid, n_chunks):
        L, T = len(valid), self.T
        starts = []
        if int(valid.sum()) - T >= self.n_ref:  # the references come from outside the window
            for s in range(2, L - T - 2 + 1):  # frame i uses the mel chunk of frame i - 2
                if valid[s : s + T].all() and s + T - 1 - 2 < n_chunks:
                    starts.append(s)
        return np.asarray(starts, dtype=np.int64), np.flatnonzero(valid)

    def draw(self, index: int) -> tuple[int, list[int], list[int]]:
        """(clip, window frames, reference frames) of sample ``index`` in the current epoch."""
        rng = self.rng(index)
        c = int(rng.integers(len(self.clips)))
        clip = self.clips[c]
        s = int(clip.starts[rng.integers(len(clip.starts))])
        window = list(range(s, s + self.T))
        pool = clip.candidates[(clip.candidates < s) | (clip.candidates >= s + self.T)]
        refs = sorted(int(i) for i in rng.choice(pool, self.n_ref, replace=False))
        return c, window, refs

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c, window, refs = self.draw(index)
        lms = self.array(c, "landmarks")
        win = np.asarray(lms[np.asarray(window)], dtype=np.float32)  # (T, 2, 131) [pose | content]
        ref = np.asarray(lms[np.asarray(refs)], dtype=np.float32)  # (Nl, 2, 131)
        mels = self.mel_chunks(c, [i - 2 for i in window])[:, None]  # (T, 1, 80, 16)
        return {
            "mels": torch.from_numpy(mels),
            "pose": torch.from_numpy(np.ascontiguousarray(win[:, :, :N_POSE])),
            "content": torch.from_numpy(np.ascontiguousarray(win[:, :, N_POSE:])),
            "ref_pose": torch.from_numpy(np.ascontiguousarray(ref[:, :, :N_POSE])),
            "ref_content": torch.from_numpy(np.ascontiguousarray(ref[:, :, N_POSE:])),
        }


class RendererSamples(_ClipDataset):
    """Samples of the renderer: ``{"face" (1,3,H,W), "sketches" (5,3,H,W), "ref_imgs" (N,3,H,W),
    "ref_sketches" (N,3,H,W), "mel" (1,1,80,16)}`` float32 tensors (images BGR in [0, 1])."""

    def __init__(self, root, clip_ids=None, n_ref: int = 3, samples_per_epoch=None, seed=0):
        self.n_ref = n_ref
        super().__init__(root, clip_ids, samples_per_epoch, seed)

    def _usable(self, valid, n_chunks):
        L, W = len(valid), TARGET_WINDOW
        if int(valid.sum()) < self.n_ref:
            return np.zeros(0, dtype=np.int64), np.flatnonzero(valid)
        starts = [s for s in range(0, L - W + 1) if valid[s : s + W].all() and s < n_chunks]
        return np.asarray(starts, dtype=np.int64), np.flatnonzero(valid)

    def draw(self, index: int) -> tuple[int, list[int], list[int]]:
        rng = self.rng(index)
        c = int(rng.integers(len(self.clips)))
        clip = self.clips[c]
        s = int(clip.starts[rng.integers(len(clip.starts))])
        refs = [int(i) for i in rng.choice(clip.candidates, self.n_ref, replace=False)]
        return c, list(range(s, s + TARGET_WINDOW)), refs

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c, window, refs = self.draw(index)
        middle = window[TARGET_WINDOW // 2]
        return {
            "face": torch.from_numpy(self.images(c, [middle])),  # (1, 3, H, W)
            "sketches": torch.from_numpy(self.sketches(c, window)),  # (5, 3, H, W)
            "ref_imgs": torch.from_numpy(self.images(c, refs)),  # (N, 3, H, W)
            "ref_sketches": torch.from_numpy(self.sketches(c, refs)),  # (N, 3, H, W)
            "mel": torch.from_numpy(self.mel_chunks(c, [middle - 2])[:, None]),  # (1, 1, 80, 16)
        }


class RangeSampler(Sampler[int]):
    """Indices ``start .. stop-1`` in order (samples are random by themselves; see ``rng``)."""

    def __init__(self, start: int, stop: int):
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


# ---------------------------------------------------------------------------------------------
# Synthetic data (tests and smoke runs)


def _template(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rest positions of the 74 pose points and the 57 content points (17 jaw, 20+20 lip)."""
    pose = np.stack([rng.uniform(0.15, 0.85, N_POSE), rng.uniform(0.12, 0.5, N_POSE)])
    th = np.linspace(0.15 * math.pi, 0.85 * math.pi, 17)
    jaw = np.stack([0.5 - 0.38 * np.cos(th), 0.55 + 0.33 * np.sin(th)])
    return pose, jaw


def _content(jaw: np.ndarray, o: float) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 20, endpoint=False)
    outer = np.stack([0.5 + 0.16 * np.cos(t), 0.74 + (0.035 + 0.06 * o) * np.sin(t)])
    inner = np.stack([0.5 + 0.11 * np.cos(t), 0.74 + (0.01 + 0.05 * o) * np.sin(t)])
    jaw = jaw.copy()
    jaw[1] += 0.04 * o * np.sin(np.linspace(0, math.pi, 17))
    return np.concatenate([jaw, outer, inner], axis=1)  # (2, 57)


def _raster_points(canvas: np.ndarray, pts: np.ndarray, value, groups: list[tuple[int, int, bool]]):
    """Draw polylines through consecutive points of each ``(start, stop, closed)`` group (numpy)."""
    n = canvas.shape[0]
    for a, b, closed in groups:
        p = pts[:, a:b]
        q = np.roll(p, -1, axis=1) if closed else p[:, 1:]
        p = p if closed else p[:, :-1]
        s = np.linspace(0, 1, 12)[:, None, None]
        seg = p[None] * (1 - s) + q[None] * s  # (12, 2, m)
        x = np.clip((seg[:, 0] * n).astype(int), 0, n - 1).ravel()
        y = np.clip((seg[:, 1] * n).astype(int), 0, n - 1).ravel()
        canvas[y, x] = value


def write_synthetic_dataset(
    root: str | os.PathLike, clips: int = 2, frames: int = 40, seed: int = 0, size: int = 128
) -> Path:
    """Write a small dataset in the contract format from numpy only (tests and smoke runs).

    Each clip shows a drawn face whose mouth opens and closes with a per-clip rhythm; the mel's
    energy follows the same rhythm, so audio and mouth are related. The second clip has one
    invalid frame (``valid`` False, zeros elsewhere) in its middle. ``size`` is the crop size
    (128 in real data; smaller values make the renderer tests cheap).
    """
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pose0, jaw0 = _template(rng)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for c in range(clips):
        cid = f"synthetic__clip{c:02d}"
        L = frames
        period = 8.0 + 3.0 * c
        t = np.arange(L)
        opening = (0.5 + 0.5 * np.sin(2 * math.pi * t / period + c)).astype(np.float32)
        shift = 0.02 * np.stack([np.sin(t / 7.0 + c), np.cos(t / 9.0)])  # (2, L) head motion
        landmarks = np.zeros((L, 2, 131), np.float32)
        faces = np.zeros((L, size, size, 3), np.uint8)
        sketches = np.zeros((L, size, size), np.uint8)
        bg = rng.uniform(40, 200, 3)
        skin = rng.uniform(120, 230, 3)
        for i in range(L):
            full = np.concatenate([pose0, _content(jaw0, float(opening[i]))], axis=1) + shift[:, i : i + 1]
            landmarks[i] = np.clip(full, 0.0, 1.0)
            img = np.empty((size, size, 3), np.float32)
            img[:] = bg
            dx, dy = shift[:, i]
            face = ((xx - 0.5 - dx) / 0.42) ** 2 + ((yy - 0.52 - dy) / 0.48) ** 2 <= 1
            img[face] = skin
            for ex in (0.33, 0.67):
                eye = ((xx - ex - dx) / 0.06) ** 2 + ((yy - 0.4 - dy) / 0.03) ** 2 <= 1
                img[eye] = (40, 30, 30)
            mouth = ((xx - 0.5 - dx) / 0.15) ** 2 + ((yy - 0.74 - dy) / (0.02 + 0.06 * opening[i])) ** 2 <= 1
            img[mouth] = (50, 40, 150)
            img += rng.normal(0, 3, img.shape)
            faces[i] = np.clip(img, 0, 255).astype(np.uint8)
            _raster_points(
                sketches[i],
                landmarks[i],
                224,
                [(0, 74, False), (74, 91, False), (91, 111, True), (111, 131, True)],
            )
        valid = np.ones(L, bool)
        if c == 1:
            bad = L // 2
            valid[bad] = False
            faces[bad] = 0
            sketches[bad] = 0
            landmarks[bad] = 0
            opening[bad] = 0
        hw = np.tile(np.array([[200, 180]], np.int32), (L, 1))
        M = int(L * MEL_PER_FRAME) + 1
        m_open = np.interp(np.arange(M) / MEL_PER_FRAME, t, opening)
        profile = np.exp(-((np.arange(80)[:, None] - 20 - 10 * c) ** 2) / 200.0)
        mel = -3.0 + 5.0 * profile * m_open[None] + rng.normal(0, 0.3, (80, M))
        mel = np.clip(mel, -4, 4).astype(np.float32)
        arrays = {
            "faces": faces,
            "sketches": sketches,
            "landmarks": landmarks,
            "hw": hw,
            "valid": valid,
            "openness": opening.astype(np.float32),
            "mel": mel,
        }
        meta = {
            "source": f"synthetic/clip{c:02d}.mp4",
            "frames": L,
            "fps": 25.0,
            "mel_frames": M,
            "margin_px": 5,
            "valid_frames": int(valid.sum()),
            "width": 320,
            "height": 240,
            "source_fps": 25.0,
        }
        write_clip(root / "clips" / cid, arrays, meta)
        entries.append(manifest_entry(cid, meta))
    write_manifest(root, entries, fps=25, margin_px=5, image_size=size)
    report = {"processed": [e["id"] for e in entries], "skipped_existing": [], "failed": [], "seconds": 0.0}
    write_json(root / "report.json", report)
    return root
