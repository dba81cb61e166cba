"""Avatar preparation: everything about a template video or photo that does not depend on audio.

``prepare_avatar(path)`` reads the frames (converted to 25 fps), runs FaceMesh on every frame,
fills frames without a face from their detected neighbours, computes crop boxes, normalised
landmarks and lip openness, chooses the Nl landmark references and the N reference crops and
sketches (IPLAP_FACTS.md section 8) and the paste masks, and caches all of it on disk in a
versioned folder keyed by the file's content hash and the settings. A second call with the same
file and settings reads the cache back (frames memory-mapped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.core import face as facemod
from engine.core.composite import MaskConfig, paste_mask
from engine.core.schedule import reference_indices
from engine.core.sketch import draw_sketches

CACHE_VERSION = 1
FILES = ("meta.json", "frames.npy", "avatar.npz", "detections.npz")
#: An image avatar whose longer side is larger is scaled down to it on load (docs/dubbing.md): the
#: face crops are 128x128, and every output frame is a copy of the image, so a 10000x10000 photo
#: would only cost memory (300 MB a frame) and time.
MAX_IMAGE_SIDE = 2048


class AvatarError(ValueError):
    """An avatar that cannot be prepared (the message names the file and the reason)."""


@dataclass(frozen=True)
class AvatarConfig:
    fps: float = 25.0
    #: Reference images for the renderer: a number (the authors' script uses 25) or "auto" for
    #: the paper's L/5 (at least 1).
    n_refs: int | str = 25
    n_landmark_refs: int = 15
    #: Moving-average window (frames) for crop boxes; 0 or 1 = off (the authors' behaviour).
    smooth_boxes: int = 0
    margin_px: int = 25
    max_frames: int | None = None
    mask: MaskConfig = field(default_factory=MaskConfig)

    def resolved_refs(self, n_frames: int) -> int:
        if self.n_refs == "auto":
            return max(1, n_frames // 5)
        n = int(self.n_refs)
        if n < 1:
            raise ValueError(f"n_refs must be >= 1 or 'auto', got {self.n_refs!r}")
        return n


@dataclass
class PrepareReport:
    source: str
    n_frames: int
    source_fps: float | None
    n_detected: int
    filled: list[int]
    n_refs: int
    cache_dir: str
    reused_cache: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    #: An image larger than MAX_IMAGE_SIDE: its original [height, width] (it was scaled down).
    scaled_from: list[int] | None = None

    def summary(self) -> str:
        filled = f", {len(self.filled)} without a face filled from neighbours" if self.filled else ""
        how = "reused cache" if self.reused_cache else f"prepared in {sum(self.seconds.values()):.1f} s"
        scaled = ""
        if self.scaled_from:
            h, w = self.scaled_from
            scaled = f"; the {w}x{h} image was scaled down to at most {MAX_IMAGE_SIDE} px on its longer side"
        return (
            f"{self.source}: {self.n_frames} frames, face found in {self.n_detected}{filled}; "
            f"{self.n_refs} references{scaled}; {how} ({self.cache_dir})"
        )


@dataclass
class Avatar:
    """A prepared avatar. Arrays are indexed by template frame (L frames) or reference (N)."""

    folder: Path
    config: AvatarConfig
    report: PrepareReport
    frames: np.ndarray  # (L, H, W, 3) uint8 BGR (memory-mapped when read from the cache)
    points: np.ndarray  # (L, 478, 3) float32 FaceMesh points (filled where no face was found)
    detected: np.ndarray  # (L,) bool: FaceMesh found the face in this frame
    boxes: np.ndarray  # (L, 4) int64 (y1, y2, x1, x2)
    pose: np.ndarray  # (L, 2, 74) float32
    content: np.ndarray  # (L, 2, 57) float32
    lip: np.ndarray  # (L,) float64 lip openness
    crops: np.ndarray  # (L, 128, 128, 3) uint8 face crops
    landmark_ref_idx: np.ndarray  # (Nl,) frame indices
    ref_idx: np.ndarray  # (N,) frame indices
    ref_imgs: np.ndarray  # (N, 128, 128, 3) uint8
    ref_sketches: np.ndarray  # (N, 128, 128, 3) float32 in [0, 1]
    mask_flat: np.ndarray  # all paste masks (uint8) concatenated; frame i's is (h_i, w_i) of its box
    mask_offsets: np.ndarray  # (L + 1,) int64

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def crop_hw(self) -> np.ndarray:  # (L, 2)
        return np.stack([self.boxes[:, 1] - self.boxes[:, 0], self.boxes[:, 3] - self.boxes[:, 2]], axis=1)

    @property
    def full(self) -> np.ndarray:  # (L, 2, 131)
        return np.concatenate([self.pose, self.content], axis=2)

    def mask(self, i: int) -> np.ndarray:
        h, w = (int(v) for v in self.crop_hw[i])
        return self.mask_flat[self.mask_offsets[i] : self.mask_offsets[i + 1]].reshape(h, w)

    def landmark_refs(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference landmarks for the transformer: pose (Nl, 2, 74), content (Nl, 2, 57)."""
        return self.pose[self.landmark_ref_idx], self.content[self.landmark_ref_idx]

    def reference_tensors(self):
        """Renderer references as float tensors: images and sketches (N, 3, 128, 128) in [0, 1]."""
        import torch

        imgs = torch.from_numpy(self.ref_imgs.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
        sketches = torch.from_numpy(np.ascontiguousarray(self.ref_sketches)).permute(0, 3, 1, 2).contiguous()
        return imgs, sketches


# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    env = os.environ.get("MOUTHPIECE_CACHE")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mouthpiece"
    return base / "avatars"


def cache_key(content_hash: str, cfg: AvatarConfig) -> str:
    settings = json.dumps({"version": CACHE_VERSION, **asdict(cfg)}, sort_keys=True)
    return f"v{CACHE_VERSION}-{content_hash[:16]}-{hashlib.sha256(settings.encode()).hexdigest()[:10]}"


def fit_image(img: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """``img`` scaled down (area interpolation, aspect kept) so that its longer side is at most
    ``max_side`` pixels; unchanged (the same array) when it already fits."""
    import cv2

    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    scale = max_side / max(h, w)
    size = (max(1, min(max_side, round(w * scale))), max(1, min(max_side, round(h * scale))))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def _read_source(path: Path, cfg: AvatarConfig) -> tuple[list[np.ndarray], float | None, tuple | None]:
    """The frames, the source's frame rate (None for an image) and, for an image scaled down to
    :data:`MAX_IMAGE_SIDE`, its original (height, width)."""
    from engine.core import video

    if video.is_image(path):
        img = video.read_image(path)
        small = fit_image(img)
        return [small], None, (None if small is img else tuple(img.shape[:2]))
    frames, info = video.read_frames(path, fps=cfg.fps, max_frames=cfg.max_frames)
    return frames, info.fps, None


def _fill_missing(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Linear interpolation of the meshes of frames without a face from the nearest detected
    frames before and after (copies of the nearest one at either end)."""
    idx = np.flatnonzero(found)
    out = points.copy()
    for i in np.flatnonzero(~found):
        k = np.searchsorted(idx, i)
        before, after = (idx[k - 1] if k > 0 else None), (idx[k] if k < idx.size else None)
        if before is None or after is None:
            out[i] = points[before if after is None else after]
        else:
            t = (i - before) / (after - before)
            out[i] = ((1 - t) * points[before].astype(np.float64) + t * points[after]).astype(np.float32)
    return out


def _smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(boxes) < 2:
        return boxes
    half = window // 2
    padded = np.pad(boxes.astype(np.float64), ((half, window - 1 - half), (0, 0)), mode="edge")
    kernel = np.ones(window) / window
    smooth = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(4)], axis=1)
    return np.rint(smooth).astype(np.int64)


def _compute(path: Path, cfg: AvatarConfig, landmarker=None) -> tuple[dict, list[np.ndarray], PrepareReport]:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    frames, src_fps, scaled_from = _read_source(path, cfg)
    if not frames:
        raise AvatarError(f"{path}: no frames could be read")
    h, w = frames[0].shape[:2]
    seconds["read"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    own = landmarker is None
    fm = facemod.FaceLandmarker(facemod.FaceMeshConfig(margin_px=cfg.margin_px)) if own else landmarker
    try:
        records = _detect_all(fm, frames)
    finally:
        if own:
            fm.close()
    seconds["facemesh"] = time.perf_counter() - t0

    found = np.array([r.found for r in records], dtype=bool)
    if not found.any():
        reasons = sorted({r.reason for r in records})
        raise AvatarError(
            f"{path}: no face found in any of its {len(frames)} frame(s) ({'; '.join(reasons)})"
        )
    n_pts = next(r.points.shape[0] for r in records if r.found)
    points = np.full((len(frames), n_pts, 3), np.nan, dtype=np.float32)
    for i, r in enumerate(records):
        if r.found:
            points[i] = r.points
    points = _fill_missing(points, found)

    t0 = time.perf_counter()
    filled = [facemod.record_from_points(p, h, w, i, cfg.margin_px) for i, p in enumerate(points)]
    bad = [r for r in filled if not r.found]
    if bad:
        raise AvatarError(f"{path}: frame {bad[0].index}: {bad[0].reason}")
    boxes = _smooth_boxes(np.array([r.box for r in filled], dtype=np.int64), cfg.smooth_boxes)
    pose_content = [facemod.split_pose_content(p, b, h, w) for p, b in zip(points, boxes, strict=True)]
    pose = np.stack([pc[0] for pc in pose_content])
    content = np.stack([pc[1] for pc in pose_content])
    lip = np.array([r.lip_openness for r in filled], dtype=np.float64)
    crops = np.stack([facemod.crop_face(f, b) for f, b in zip(frames, boxes, strict=True)])

    n_refs = cfg.resolved_refs(len(frames))
    lm_idx = reference_indices(lip, cfg.n_landmark_refs)
    ref_idx = reference_indices(lip, n_refs)
    hw = np.stack([boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]], axis=1)
    full = np.concatenate([pose, content], axis=2)
    ref_sketches = draw_sketches(full[ref_idx], hw[ref_idx])
    masks = [paste_mask(p, b, h, w, cfg.mask) for p, b in zip(points, boxes, strict=True)]
    offsets = np.concatenate([[0], np.cumsum([m.size for m in masks])]).astype(np.int64)
    seconds["landmarks"] = time.perf_counter() - t0

    arrays = {
        "points": points,
        "detected": found,
        "boxes": boxes,
        "pose": pose,
        "content": content,
        "lip": lip,
        "crops": crops,
        "landmark_ref_idx": lm_idx,
        "ref_idx": ref_idx,
        "ref_imgs": crops[ref_idx],
        "ref_sketches": ref_sketches,
        "mask_flat": np.concatenate([m.ravel() for m in masks]),
        "mask_offsets": offsets,
    }
    report = PrepareReport(
        source=str(path),
        n_frames=len(frames),
        source_fps=src_fps,
        n_detected=int(found.sum()),
        filled=[int(i) for i in np.flatnonzero(~found)],
        n_refs=n_refs,
        cache_dir="",
        seconds={k: round(v, 3) for k, v in seconds.items()},
        scaled_from=None if scaled_from is None else [int(v) for v in scaled_from],
    )
    arrays["detections"] = facemod.records_to_arrays(records)
    return arrays, frames, report


def _detect_all(fm, frames: list[np.ndarray]):
    try:
        from tqdm import tqdm

        it = tqdm(frames, desc="FaceMesh", unit="frame", disable=len(frames) < 50, leave=False)
    except ImportError:  # pragma: no cover
        it = frames
    return [fm.detect(f, i) for i, f in enumerate(it)]


def prepare_avatar(
    path: str | os.PathLike,
    config: AvatarConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    landmarker=None,
) -> Avatar:
    """Prepare (or read back from the cache) the avatar of a video or image file."""
    cfg = config or AvatarConfig()
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"avatar file not found: {path}")
    if not path.is_file():
        raise AvatarError(f"{path}: not a file")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    from models import sha256

    folder = root / f"{path.stem[:40]}-{cache_key(sha256(path), cfg)}"
    if all((folder / f).is_file() for f in FILES):
        try:
            return load_avatar(folder, reused=True)
        except (OSError, ValueError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)  # a damaged cache entry is rebuilt

    arrays, frames, report = _compute(path, cfg, landmarker)
    report.cache_dir = str(folder)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "frames.npy", np.stack(frames))
    np.savez(tmp / "detections.npz", **arrays.pop("detections"))
    np.savez(tmp / "avatar.npz", **arrays)
    meta = {"version": CACHE_VERSION, "config": asdict(cfg), "report": asdict(report)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # atomic: a cache entry is complete or absent
    return load_avatar(folder)


def load_avatar(folder: str | os.PathLike, reused: bool = False) -> Avatar:
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"{folder}: cache version {meta.get('version')} != {CACHE_VERSION}")
    c = dict(meta["config"])
    c["mask"] = MaskConfig(**c["mask"])
    cfg = AvatarConfig(**c)
    report = PrepareReport(**meta["report"])
    report.reused_cache = reused
    with np.load(folder / "avatar.npz") as z:
        arrays = {k: z[k] for k in z.files}
    frames = np.load(folder / "frames.npy", mmap_mode="r")
    if frames.shape[0] != arrays["boxes"].shape[0]:
        raise ValueError(f"{folder}: frames and landmarks disagree")
    return Avatar(folder=folder, config=cfg, report=report, frames=frames, **arrays)
