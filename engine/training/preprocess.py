"""Training-data preprocessing: a folder of talking-face videos -> the dataset of docs/training_data.md.

Every video becomes one clip folder ``OUT/clips/<id>/`` with, per 25 fps frame, the 128x128 face
crop, the grey landmark sketch, the 131 landmarks normalised to the crop box, the crop size, a
validity flag and the lip openness, plus the clip's mel spectrogram; ``OUT/manifest.json`` lists
the complete clips and ``OUT/report.json`` says what the last run did. Command line::

    python -m engine.training.preprocess INPUT OUT [--workers N] [--filelist F] [--limit N] [--max-frames N]
                                          [--overwrite] [--quiet] [--json]

Inputs
    Any folder of videos, searched recursively (``.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .flv``;
    hidden folders and the output folder are left out), e.g. LRS2's ``main/<speaker>/<clip>.mp4``
    (give ``main`` as INPUT). Or an LRS2-style file list (``--filelist train.txt``): one
    ``<speaker>/<clip>`` per line, relative to INPUT (or to ``INPUT/main``), extension optional;
    anything after the first blank on a line (LRS2's test list has ``NF`` flags) is ignored.
    A clip's id is its path relative to INPUT without the extension, ``/`` replaced by ``__``.

Per video (:func:`preprocess_video`)
    1. The audio track is decoded to 16 kHz mono (:func:`engine.core.audio.load_audio`) and turned into
       the authors' mel spectrogram (:func:`engine.core.audio.melspectrogram`), shape (80, M).
    2. Frames are decoded and converted to 25 fps by :func:`engine.core.video.iter_frames` (nearest
       timestamp; 30 fps sources lose every sixth frame), streaming: one frame at a time.
    3. MediaPipe FaceMesh (one instance per worker; the authors' settings) on every frame. From
       the 131 ORDER points: the float box ``min/max`` widened by ``margin_px`` (5) pixels and
       clamped to [0, 1]; the crop ``frame[int(y_min*h):int(y_max*h), int(x_min*w):int(x_max*w)]``
       resized to 128x128 (bilinear); the landmarks ``((x - x_min)/(x_max - x_min), (y - y_min) /
       (y_max - y_min))`` in the ``[pose(74) | content(57)]`` column order; the crop size
       ``hw = (y2 - y1, x2 - x1)`` of the integer box; the lip openness (points 0-17).
    4. Sketches: ``round(engine.core.sketch.draw_sketch(landmarks_float32, hw, raw=True))`` as uint8
       (the batched :func:`engine.core.sketch.draw_sketches`, bit-identical).
    5. Checks; a failing video raises :class:`PreprocessError` and is reported, never half-written.

What was matched from the authors' preprocessing (Weizhi-Zhong/IP_LAP, ``preprocess/
preprocess_video.py`` and ``preprocess_audio.py``; read for reference, not copied)
    * FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
      min_detection_confidence=0.5) on the RGB frame; the box over the same 131 points; the
      5-pixel margin with clamping; the crop slice from ``int(v * size)`` of the float box and the
      cv2 default (bilinear) resize to 128x128; landmarks normalised by the *float* box (not the
      integer one used at inference); pose/content split and ordering (the authors' training
      loader sorts them into ORDER order, which is our column order); sketch lines of grey 224,
      1 pixel, drawn on a canvas whose short side is 128, resized bilinearly to 128x128 and stored
      as 8 bits (the authors wrote PNGs, i.e. the value rounded to uint8); frames without a face
      stored nothing (here: zeros and ``valid = False``); mel of the whole audio track, 16 kHz.
    * Deliberate differences: the sketch canvas size comes from the integer crop size ``hw``
      (stored, so that the training code can redraw any sketch exactly) while the authors used the
      float box size ``(y_max - y_min) * h``: the long side of the canvas can differ by one pixel.
      Sketches are drawn from the stored float32 landmarks (the authors: float64), so the stored
      sketch equals ``draw_sketch(landmarks, hw)`` exactly. Non-25 fps videos are converted (the
      authors' script refused them); audio is resampled by FFmpeg's swresample (the authors:
      librosa's resampler after an ffmpeg wav export) and mixed to mono as the channel mean.

Run behaviour (:func:`preprocess_folder`)
    * Parallel: a ``ProcessPoolExecutor`` (spawn start method; FaceMesh built once per worker;
      ``workers=1`` runs in this process). Workers ignore Ctrl-C; the main process stops them.
    * Resumable: a clip is written to ``clips/<id>.tmp/`` and renamed to ``clips/<id>/`` when
      complete, so a folder without ``.tmp`` is complete; a rerun skips complete clips made with
      the same settings (``skipped_existing``) unless ``overwrite``. Interruption (Ctrl-C, a
      killed process) leaves at most a ``.tmp`` folder, removed by the next run.
    * Bad files (unreadable, no video or audio stream, no face, too few frames with a face, too
      short for one 5-frame window) are listed with a reason in ``report.json``; the run goes on.
      A worker process that dies (e.g. a decoder crash) is replaced; its video is retried alone
      once and then reported as failed.
    * ``manifest.json`` is rebuilt from the complete clip folders at the end of every run
      (also after Ctrl-C). Two runs must not write to the same OUT at the same time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CLIP_FILES",
    "FORMAT_VERSION",
    "VIDEO_EXTENSIONS",
    "PreprocessConfig",
    "PreprocessError",
    "VideoEntry",
    "add_arguments",
    "clip_id",
    "config_from_args",
    "default_workers",
    "is_complete",
    "list_videos",
    "load_clip",
    "preprocess_folder",
    "preprocess_video",
    "read_filelist",
    "read_manifest",
    "rebuild_manifest",
    "run_from_args",
    "summary",
]

FORMAT_VERSION = 1
IMAGE_SIZE = 128
SAMPLE_RATE = 16000
#: Frames in one training window (the transformer's T).
WINDOW = 5
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")
#: Files of a complete clip folder; meta.json is written last.
CLIP_FILES: tuple[str, ...] = (
    "faces.npy",
    "sketches.npy",
    "landmarks.npy",
    "hw.npy",
    "valid.npy",
    "openness.npy",
    "mel.npy",
    "meta.json",
)
TMP_SUFFIX = ".tmp"
_SKETCH_BATCH = 256
MEL_FPS = 80.0  # mel frames per second (16 kHz, hop 200)
MEL_HOP = 200
MEL_CHUNK = 16  # mel frames per video frame's chunk

#: progress(done, total, entry): entry = {"id", "source", "status": "processed" | "skipped_existing"
#: | "failed", "frames" (processed only), "reason" (failed only)}.
ProgressCallback = Callable[[int, int, dict[str, Any]], None]


class PreprocessError(ValueError):
    """A video that cannot become a training clip, or an unusable input/output folder."""


def default_workers() -> int:
    """min(4, the CPUs this process may use)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    return max(1, min(4, n))


@dataclass
class PreprocessConfig:
    """Settings of a preprocessing run (all but the run-control ones are recorded in meta.json)."""

    #: Worker processes; 1 = everything in this process.
    workers: int = field(default_factory=default_workers)
    #: Crop margin in pixels around the 131 landmarks (the authors' training preprocessing: 5).
    margin_px: int = 5
    #: Output frame rate (IP_LAP: 25).
    fps: float = 25.0
    #: Reprocess clips that are already complete.
    overwrite: bool = False
    #: Process at most this many videos (the first ones in listing order); None = all.
    limit: int | None = None
    #: Keep at most this many frames (at ``fps``) of each video; the audio is cut just after the
    #: last kept frame's mel chunk. None = all.
    max_frames: int | None = None
    #: File extensions taken as videos (lower case, with the dot).
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    #: A clip needs a face in at least this fraction of its frames.
    min_valid_fraction: float = 0.5
    #: An LRS2-style file list (``<speaker>/<clip>`` per line) instead of searching INPUT.
    filelist: str | None = None
    #: Show a tqdm bar when no progress callback is given.
    show_progress: bool = True
    #: multiprocessing start method for the worker pool.
    start_method: str = "spawn"

    def __post_init__(self) -> None:
        if int(self.workers) < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.workers = int(self.workers)
        if not self.margin_px >= 0:
            raise ValueError(f"margin_px must be >= 0, got {self.margin_px}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.limit is not None and int(self.limit) < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if self.max_frames is not None and int(self.max_frames) < WINDOW:
            raise ValueError(f"max_frames must be >= {WINDOW} (one window), got {self.max_frames}")
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {self.min_valid_fraction}")
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in self.extensions)
        if not exts:
            raise ValueError("extensions must not be empty")
        self.extensions = exts

    def settings(self) -> dict[str, Any]:
        """What decides a clip's content: a complete clip made with other settings is redone."""
        return {
            "fps": float(self.fps),
            "margin_px": self.margin_px,
            "image_size": IMAGE_SIZE,
            "max_frames": self.max_frames,
        }


# --------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoEntry:
    """One input video: ``source`` is its path relative to the input root (posix)."""

    path: Path
    source: str

    @property
    def id(self) -> str:
        return clip_id(self.source)


def clip_id(source: str) -> str:
    """Clip id of a source path relative to the input root: extension dropped, ``/`` -> ``__``."""
    p = Path(source.replace("\\", "/"))
    return str(p.with_suffix("")).replace(os.sep, "/").replace("/", "__")


def _relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` (absolute paths, symbolic links not resolved), posix."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return Path(rel).as_posix()


def list_videos(
    root: str | os.PathLike,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    filelist: str | os.PathLike | None = None,
    exclude: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Videos under ``root``, sorted by relative path.

    Without ``filelist``: every file with one of ``extensions`` (case-insensitive) found
    recursively, skipping hidden files and folders (names starting with ".") and the folders in
    ``exclude``. With ``filelist``: the files that :func:`read_filelist` finds (lines without a
    video are left out here; :func:`read_filelist` returns them).
    """
    root = Path(root)
    if not root.is_dir():
        raise PreprocessError(f"input folder not found: {root}")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    if filelist is not None:
        found, _ = read_filelist(root, filelist, exts)
        return found
    skip = {Path(e).resolve() for e in exclude}
    seen: set[Path] = set()  # real folders already walked (symbolic-link loops)
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        d = Path(dirpath)
        real = d.resolve()
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in skip)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in exts:
                out.append(d / name)
    return sorted(out, key=lambda p: _relative(p, root))


def read_filelist(
    root: str | os.PathLike, filelist: str | os.PathLike, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> tuple[list[Path], list[str]]:
    """Resolve an LRS2-style file list against ``root``: returns ``(videos, missing lines)``.

    A line ``<speaker>/<clip>`` (extension optional; text after the first blank ignored, empty
    lines and ``#`` comments skipped) names ``root/<line><ext>`` for the first of ``extensions``
    (lower or upper case) that exists, else ``root/main/<line><ext>`` (LRS2's own lists are
    relative to ``main``).
    Duplicated lines count once. Videos keep the list's order.
    """
    root = Path(root)
    fl = Path(filelist)
    if not fl.is_file():
        raise PreprocessError(f"file list not found: {fl}")
    exts = [e.lower() if e.startswith(".") else "." + e.lower() for e in extensions]
    found: list[Path] = []
    missing: list[str] = []
    seen: set[str] = set()
    for raw in fl.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name = line.split()[0].replace("\\", "/").lstrip("/")
        if name in seen:
            continue
        seen.add(name)
        hit = None
        for base in (root, root / "main"):
            stem = base / name
            if stem.suffix.lower() in exts and stem.is_file():
                hit = stem
            else:
                cands = (Path(f"{stem}{x}") for e in exts for x in (e, e.upper()))
                hit = next((c for c in cands if c.is_file()), None)
            if hit is not None:
                break
        if hit is None:
            missing.append(name)
        else:
            found.append(hit)
    return found, missing


# --------------------------------------------------------------------------------------------
# One video
# --------------------------------------------------------------------------------------------


def _training_box(
    points: np.ndarray, h: int, w: int, margin_px: float
) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The authors' training box: float ``(y_min, y_max, x_min, x_max)`` and integer ``(y1, y2, x1, x2)``.

    min/max over the 131 ORDER points, widened by ``margin_px`` pixels, clamped to [0, 1]. The
    integer box is :func:`engine.core.face.crop_box` with the same margin.
    """
    from engine.core.face import crop_box
    from engine.core.landmark_sets import ALL_MP

    pts = points[ALL_MP, :2].astype(np.float64)
    x_min, y_min = (float(v) for v in pts.min(axis=0))
    x_max, y_max = (float(v) for v in pts.max(axis=0))
    x_min = max(x_min - margin_px / w, 0)
    x_max = min(x_max + margin_px / w, 1)
    y_min = max(y_min - margin_px / h, 0)
    y_max = min(y_max + margin_px / h, 1)
    return (y_min, y_max, x_min, x_max), crop_box(points, h, w, margin_px)


def _landmarks_float_box(points: np.ndarray, fbox: tuple[float, ...]) -> np.ndarray:
    """Full (2, 131) ``[pose | content]`` landmarks normalised by the float box, float32."""
    from engine.core.landmark_sets import FULL_MP

    y_min, y_max, x_min, x_max = fbox
    pts = points[FULL_MP, :2].astype(np.float64)
    x = (pts[:, 0] - x_min) / (x_max - x_min)
    y = (pts[:, 1] - y_min) / (y_max - y_min)
    return np.stack([x, y]).astype(np.float32)


def _grey_sketches(landmarks: np.ndarray, hw: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 (L, 128, 128): rounded raw sketches of the valid frames, zeros elsewhere."""
    from engine.core.sketch import draw_sketches

    out = np.zeros((len(valid), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    idx = np.flatnonzero(valid)
    for s in range(0, idx.size, _SKETCH_BATCH):
        part = idx[s : s + _SKETCH_BATCH]
        raw = draw_sketches(landmarks[part], hw[part], raw=True)[..., 0]
        out[part] = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return out


def _longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for v in mask.tolist():
        run = run + 1 if v else 0
        best = max(best, run)
    return best


def _compute_clip(
    path: Path, config: PreprocessConfig, landmarker: Any, source: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and meta of one clip (nothing written). Raises :class:`PreprocessError`."""
    from engine.core import video
    from engine.core.audio import AudioError, load_audio, melspectrogram, num_video_frames
    from engine.core.face import crop_face

    t0 = time.perf_counter()
    try:
        info = video.probe_video(path)
    except (video.VideoError, OSError) as e:
        raise PreprocessError(f"unreadable video: {e}") from None
    if not info.has_audio:
        raise PreprocessError("no audio stream")
    try:
        wav = load_audio(path, SAMPLE_RATE)
    except (AudioError, OSError) as e:
        raise PreprocessError(f"unreadable audio: {e}") from None

    faces: list[np.ndarray] = []
    landmarks: list[np.ndarray] = []
    hws: list[tuple[int, int]] = []
    valid: list[bool] = []
    openness: list[float] = []
    blank_face = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    blank_lm = np.zeros((2, 131), dtype=np.float32)
    size: tuple[int, int] | None = None
    try:
        for i, frame in enumerate(video.iter_frames(path, fps=config.fps, max_frames=config.max_frames)):
            h, w = frame.shape[:2]
            size = size or (h, w)
            rec = landmarker.detect(frame, i)
            ok = rec.found and rec.points is not None
            if ok:
                fbox, box = _training_box(rec.points, h, w, config.margin_px)
                y1, y2, x1, x2 = box
                ok = y2 > y1 and x2 > x1
            if ok:
                faces.append(crop_face(frame, box, IMAGE_SIZE))
                landmarks.append(_landmarks_float_box(rec.points, fbox))
                hws.append((y2 - y1, x2 - x1))
                openness.append(float(rec.lip_openness))
            else:
                faces.append(blank_face)
                landmarks.append(blank_lm)
                hws.append((0, 0))
                openness.append(0.0)
            valid.append(bool(ok))
    except video.VideoError as e:
        raise PreprocessError(f"unreadable video: {e}") from None
    t_frames = time.perf_counter() - t0

    n = len(valid)
    valid_arr = np.array(valid, dtype=bool)
    n_valid = int(valid_arr.sum())
    if n < WINDOW:
        raise PreprocessError(f"too short: {n} frame(s) at {config.fps:g} fps, a window needs {WINDOW}")
    if n_valid == 0:
        raise PreprocessError(f"no face found in any of its {n} frames")
    if n_valid < config.min_valid_fraction * n:
        raise PreprocessError(
            f"too few frames with a face: {n_valid} of {n} ({n_valid / n:.0%}, "
            f"need {config.min_valid_fraction:.0%})"
        )

    if config.max_frames is not None and n >= config.max_frames:
        # Cut: keep the audio up to the end of the last kept frame's mel chunk, so that every kept
        # frame has one (chunk k: mel frames int(k * 80 / fps) .. +16; M = 1 + samples // hop).
        last_start = int((n - 1) * (MEL_FPS / config.fps))
        wav = wav[: (last_start + MEL_CHUNK - 1) * MEL_HOP]
    mel = melspectrogram(wav)
    mel_frames = int(mel.shape[1])
    with_audio = min(n, num_video_frames(mel_frames, config.fps))
    if with_audio < WINDOW:
        raise PreprocessError(
            f"audio too short: {wav.size / SAMPLE_RATE:.2f} s gives mel chunks for {with_audio} frame(s), "
            f"a window needs {WINDOW}"
        )
    if _longest_run(valid_arr[:with_audio]) < WINDOW:
        raise PreprocessError(
            f"no window of {WINDOW} consecutive frames with a face and audio "
            f"(face in {n_valid} of {n} frames)"
        )

    lm = np.stack(landmarks).astype(np.float32)
    hw = np.array(hws, dtype=np.int32).reshape(n, 2)
    sketches = _grey_sketches(lm, hw, valid_arr)
    arrays = {
        "faces": np.stack(faces),
        "sketches": sketches,
        "landmarks": lm,
        "hw": hw,
        "valid": valid_arr,
        "openness": np.array(openness, dtype=np.float32),
        "mel": np.ascontiguousarray(mel, dtype=np.float32),
    }
    assert size is not None
    meta = {
        "version": FORMAT_VERSION,
        "source": source,
        "frames": n,
        "fps": float(config.fps),
        "mel_frames": mel_frames,
        "margin_px": config.margin_px,
        "valid_frames": n_valid,
        "width": int(size[1]),
        "height": int(size[0]),
        "source_fps": float(info.fps),
        "image_size": IMAGE_SIZE,
        "max_frames": config.max_frames,
        "sample_rate": SAMPLE_RATE,
        "audio_samples": int(wav.size),
        "seconds": round(time.perf_counter() - t0, 3),
        "seconds_frames": round(t_frames, 3),
    }
    return arrays, meta


def _tmp_dir(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + TMP_SUFFIX)


def _write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def preprocess_video(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PreprocessConfig | None = None,
    *,
    landmarker: Any = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Preprocess one video into the clip folder ``out_dir`` (replacing it); returns its meta.

    The files are written to ``<out_dir>.tmp/`` and the folder renamed to ``out_dir`` only when
    complete; on any error or interruption the ``.tmp`` folder is removed and ``out_dir`` is left
    as it was. ``landmarker``: a :class:`engine.core.face.FaceLandmarker` to reuse (one is made and
    closed otherwise). ``source``: the path recorded in meta.json (default: ``path`` as given).
    Raises :class:`PreprocessError` for a video that cannot become a clip (the message says why)
    and ``FileNotFoundError`` for a missing file.
    """
    config = config or PreprocessConfig()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {p}")
    out_dir = Path(out_dir)
    if out_dir.name.endswith(TMP_SUFFIX):
        raise PreprocessError(f"clip folder name must not end in {TMP_SUFFIX!r}: {out_dir}")
    own = landmarker is None
    if own:
        from engine.core.face import FaceLandmarker, FaceMeshConfig

        landmarker = FaceLandmarker(FaceMeshConfig(margin_px=config.margin_px))
    try:
        arrays, meta = _compute_clip(p, config, landmarker, source if source is not None else str(path))
    finally:
        if own:
            landmarker.close()
    meta = {"version": meta.pop("version"), "id": out_dir.name, **meta}

    tmp = _tmp_dir(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        _write_json(tmp / "meta.json", meta)  # last: marks the files complete
        old = out_dir.with_name(f".{out_dir.name}.old{TMP_SUFFIX}")  # "." : never a clip id
        if out_dir.exists():  # set the old clip aside in one rename: never a half-deleted clip
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def is_complete(clip_dir: str | os.PathLike, settings: dict[str, Any] | None = None) -> bool:
    """True when ``clip_dir`` is a finished clip folder (all files, readable meta.json) whose
    recorded settings equal ``settings`` (see :meth:`PreprocessConfig.settings`) when given."""
    d = Path(clip_dir)
    if d.name.endswith(TMP_SUFFIX) or not d.is_dir():
        return False
    if not all((d / f).is_file() for f in CLIP_FILES):
        return False
    try:
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("version") != FORMAT_VERSION:
        return False
    if settings is None:
        return True
    return all(meta.get(k) == v for k, v in settings.items())


def load_clip(clip_dir: str | os.PathLike, mmap_mode: str | None = "r") -> dict[str, Any]:
    """The arrays of one clip folder (memory-mapped by default) and its ``meta`` dict."""
    d = Path(clip_dir)
    if not is_complete(d):
        raise PreprocessError(f"not a complete clip folder: {d}")
    out: dict[str, Any] = {
        f[:-4]: np.load(d / f, mmap_mode=mmap_mode) for f in CLIP_FILES if f.endswith(".npy")
    }
    out["meta"] = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    return out


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


def rebuild_manifest(out_root: str | os.PathLike, config: PreprocessConfig | None = None) -> dict[str, Any]:
    """Rewrite ``out_root/manifest.json`` from the complete clip folders and return it.

    The manifest's fps and margin come from ``config``, else from the existing manifest, else
    from the first complete clip (else the defaults). Complete clips made with another fps,
    margin or crop size are left out and named under ``"excluded"``.
    """
    root = Path(out_root)
    clips_dir = root / "clips"
    if config is not None:
        fps, margin = float(config.fps), config.margin_px
    else:
        fps = margin = None
        if (root / "manifest.json").is_file():
            try:
                old = read_manifest(root)
                fps, margin = float(old["fps"]), old["margin_px"]
            except (PreprocessError, KeyError, TypeError, ValueError):
                pass
    clips: list[dict[str, Any]] = []
    excluded: list[str] = []
    names = sorted(os.listdir(clips_dir)) if clips_dir.is_dir() else []
    for name in names:
        d = clips_dir / name
        if not is_complete(d):
            continue
        meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        if fps is None:
            fps, margin = float(meta["fps"]), meta["margin_px"]
        if (float(meta["fps"]), meta["margin_px"], meta.get("image_size")) != (fps, margin, IMAGE_SIZE):
            excluded.append(name)
            continue
        clips.append(
            {
                "id": name,
                "source": meta["source"],
                "frames": int(meta["frames"]),
                "valid_frames": int(meta["valid_frames"]),
                "mel_frames": int(meta["mel_frames"]),
            }
        )
    defaults = PreprocessConfig(workers=1)
    manifest: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "fps": fps if fps is not None else defaults.fps,
        "margin_px": margin if margin is not None else defaults.margin_px,
        "image_size": IMAGE_SIZE,
        "clips": clips,
    }
    if excluded:
        manifest["excluded"] = excluded
    root.mkdir(parents=True, exist_ok=True)
    _write_json(root / "manifest.json", manifest)
    return manifest


def read_manifest(out_root: str | os.PathLike) -> dict[str, Any]:
    """``out_root/manifest.json`` as a dict (format version checked)."""
    p = Path(out_root) / "manifest.json"
    if not p.is_file():
        raise PreprocessError(f"no manifest.json in {Path(out_root)} (run the preprocessing first)")
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise PreprocessError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("version") != FORMAT_VERSION:
        raise PreprocessError(f"{p}: unsupported manifest version {manifest.get('version')!r}")
    return manifest


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

_WORKER_LANDMARKER: Any = None


def _worker_init(margin_px: int) -> None:
    """Per worker: ignore Ctrl-C (the parent stops workers), one OpenCV thread, one FaceMesh."""
    global _WORKER_LANDMARKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)
    from engine.core.face import FaceLandmarker, FaceMeshConfig

    _WORKER_LANDMARKER = FaceLandmarker(FaceMeshConfig(margin_px=margin_px))


def _process_one(
    entry: VideoEntry, out_root: str, config: PreprocessConfig, landmarker: Any
) -> dict[str, Any]:
    """Process one video; never raises for a bad video (the result says ``failed``)."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {"id": entry.id, "source": entry.source}
    try:
        meta = preprocess_video(
            entry.path,
            Path(out_root) / "clips" / entry.id,
            config,
            landmarker=landmarker,
            source=entry.source,
        )
        result.update(status="processed", frames=meta["frames"], valid_frames=meta["valid_frames"])
    except (PreprocessError, FileNotFoundError) as e:
        result.update(status="failed", reason=str(e))
    except Exception as e:  # an unexpected failure on one file must not stop the run
        result.update(
            status="failed",
            reason=f"unexpected error: {e.__class__.__name__}: {e}",
            traceback=traceback.format_exc(limit=8),
        )
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def _worker_run(entry: VideoEntry, out_root: str, config: PreprocessConfig) -> dict[str, Any]:
    return _process_one(entry, out_root, config, _WORKER_LANDMARKER)


# --------------------------------------------------------------------------------------------
# A run over a folder
# --------------------------------------------------------------------------------------------


def _collect(
    input_root: Path, out_root: Path, config: PreprocessConfig
) -> tuple[list[VideoEntry], list[dict[str, Any]]]:
    """Videos to consider (after ``limit``) and the failures found while listing."""
    failed: list[dict[str, Any]] = []
    if config.filelist is not None:
        paths, missing = read_filelist(input_root, config.filelist, config.extensions)
        for name in missing:
            failed.append(
                {
                    "source": name,
                    "reason": f"listed in {config.filelist} but no video {name}"
                    f"{{{','.join(config.extensions)}}} under {input_root} or {input_root / 'main'}",
                }
            )
    else:
        paths = list_videos(input_root, config.extensions, exclude=[out_root])
    entries: list[VideoEntry] = []
    by_id: dict[str, str] = {}
    for p in paths:
        e = VideoEntry(path=p, source=_relative(p, input_root))
        if e.id.endswith(TMP_SUFFIX):
            failed.append({"source": e.source, "reason": f"its clip id {e.id!r} ends in {TMP_SUFFIX!r}"})
        elif e.id in by_id:
            failed.append(
                {"source": e.source, "reason": f"clip id {e.id!r} is already taken by {by_id[e.id]}"}
            )
        else:
            by_id[e.id] = e.source
            entries.append(e)
    if config.limit is not None:
        entries = entries[: int(config.limit)]
    return entries, failed


class _Progress:
    def __init__(self, total: int, callback: ProgressCallback | None, show: bool) -> None:
        self.total, self.done, self.frames = total, 0, 0
        self.callback = callback
        self.t0 = time.perf_counter()
        self.bar = None
        if callback is None and show:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="preprocess", unit="video", dynamic_ncols=True)

    def __call__(self, entry: dict[str, Any]) -> None:
        self.done += 1
        self.frames += int(entry.get("frames", 0) or 0)
        if self.bar is not None:
            elapsed = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.frames / elapsed:.0f} frames/s", refresh=False)
            self.bar.update(1)
        if self.callback is not None:
            public = {k: v for k, v in entry.items() if k in ("id", "source", "status", "frames", "reason")}
            self.callback(self.done, self.total, public)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_serial(entries: Sequence[VideoEntry], out_root: Path, config: PreprocessConfig, on_result) -> None:
    from engine.core.face import FaceLandmarker, FaceMeshConfig

    with FaceLandmarker(FaceMeshConfig(margin_px=config.margin_px)) as fm:
        for e in entries:
            on_result(_process_one(e, str(out_root), config, fm))


def _stop_pool(ex: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now (they ignore SIGINT)."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)


_CRASH_REASON = (
    "a worker process died while processing it (a crash in the decoder or FaceMesh, or out of memory)"
)
#: Fresh pools in a row that may die before finishing any video before the run gives up.
_MAX_DEAD_POOLS = 5


def _run_pool(
    entries: Sequence[VideoEntry], out_root: Path, config: PreprocessConfig, on_result, inflight_ids: set[str]
) -> None:
    """Run ``entries`` on a process pool, at most 2 x workers submitted at a time.

    When a worker dies, every video that was submitted and not finished becomes a suspect;
    suspects are rerun one at a time (nothing beside them), and one that kills a worker while
    alone is reported as failed. After :data:`_MAX_DEAD_POOLS` pools in a row die without
    finishing a video (e.g. workers that cannot start), :class:`PreprocessError` is raised.
    """
    ctx = multiprocessing.get_context(config.start_method)
    n = max(1, min(config.workers, len(entries)))
    pending: deque[VideoEntry] = deque(entries)
    suspects: deque[VideoEntry] = deque()
    dead_pools = 0
    while pending or suspects:
        ex = ProcessPoolExecutor(
            max_workers=n, mp_context=ctx, initializer=_worker_init, initargs=(config.margin_px,)
        )
        inflight: dict[Future, VideoEntry] = {}
        broken = False
        finished = 0

        def submit(e: VideoEntry, ex: ProcessPoolExecutor = ex, inflight: dict = inflight) -> bool:
            try:
                f = ex.submit(_worker_run, e, str(out_root), config)
            except BrokenProcessPool:
                return False
            inflight[f] = e
            inflight_ids.add(e.id)
            return True

        try:
            while (pending or suspects or inflight) and not broken:
                if suspects:  # isolate: one suspect at a time, nothing beside it
                    if not inflight:
                        e = suspects.popleft()
                        if not submit(e):
                            suspects.appendleft(e)
                            broken = True
                else:
                    while pending and len(inflight) < 2 * n and not broken:
                        e = pending.popleft()
                        if not submit(e):
                            pending.appendleft(e)
                            broken = True
                if broken or not inflight:
                    continue
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for f in done:
                    try:
                        res = f.result()
                    except BrokenProcessPool:
                        broken = True  # f stays in inflight: handled below with the others
                        continue
                    e = inflight.pop(f)
                    inflight_ids.discard(e.id)
                    finished += 1
                    on_result(res)
            if broken:
                alone = len(inflight) == 1
                for f, e in list(inflight.items()):
                    res = None
                    if f.done() and not f.cancelled() and f.exception() is None:
                        res = f.result()
                    inflight_ids.discard(e.id)
                    shutil.rmtree(_tmp_dir(out_root / "clips" / e.id), ignore_errors=True)
                    if res is not None:
                        finished += 1
                        on_result(res)
                    elif alone:
                        on_result(
                            {"id": e.id, "source": e.source, "status": "failed", "reason": _CRASH_REASON}
                        )
                    else:
                        suspects.append(e)
                inflight.clear()
                dead_pools = 0 if finished else dead_pools + 1
                if dead_pools >= _MAX_DEAD_POOLS:
                    raise PreprocessError(
                        f"worker processes keep dying ({dead_pools} pools in a row finished no video); "
                        "see the errors above, or run with workers=1"
                    )
        finally:
            if broken or inflight:  # a dead pool, KeyboardInterrupt or an error in this process
                _stop_pool(ex)
            else:
                ex.shutdown(wait=True)


def preprocess_folder(
    input_root: str | os.PathLike,
    out_root: str | os.PathLike,
    config: PreprocessConfig | None = None,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Preprocess every video under ``input_root`` into ``out_root``; returns the run's report.

    The report (also written to ``out_root/report.json``) holds ``processed`` and
    ``skipped_existing`` (clip ids), ``failed`` (``{"source", "reason"}``, plus ``"id"`` when the
    video was tried), ``seconds``, and ``frames`` / ``frames_per_second`` (frames written and their
    rate), ``listed``, ``interrupted``, ``input_root``, ``out_root`` and ``config``.
    ``manifest.json`` is rebuilt at the end, also when the run is interrupted (Ctrl-C is then
    re-raised after both files are written). ``progress(done, total, entry)`` is called after each
    video (see :data:`ProgressCallback`); without it a tqdm bar is shown if
    ``config.show_progress``.
    """
    config = config or PreprocessConfig()
    t0 = time.perf_counter()
    input_root, out_root = Path(input_root), Path(out_root)
    if not input_root.is_dir():
        raise PreprocessError(f"input folder not found: {input_root}")
    clips_dir = out_root / "clips"
    clips_dir.mkdir(parents=True, exist_ok=True)
    for stale in clips_dir.glob(f"*{TMP_SUFFIX}"):  # left by an interrupted run (also ".<id>.old.tmp")
        shutil.rmtree(stale, ignore_errors=True)

    entries, failed = _collect(input_root, out_root, config)
    settings = config.settings()
    report: dict[str, Any] = {
        "processed": [],
        "skipped_existing": [],
        "failed": list(failed),
        "seconds": 0.0,
        "frames": 0,
        "frames_per_second": 0.0,
        "listed": len(entries) + len(failed),
        "interrupted": False,
        "input_root": str(input_root),
        "out_root": str(out_root),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
    }
    todo: list[VideoEntry] = []
    skipped: list[VideoEntry] = []
    for e in entries:
        if not config.overwrite and is_complete(clips_dir / e.id, settings):
            skipped.append(e)
        else:
            todo.append(e)

    bar = _Progress(len(entries), progress, config.show_progress)
    results: dict[str, dict[str, Any]] = {}

    def on_result(res: dict[str, Any]) -> None:
        results[res["id"]] = res
        bar(res)

    inflight_ids: set[str] = set()
    try:
        for e in skipped:
            on_result({"id": e.id, "source": e.source, "status": "skipped_existing"})
        if todo and (config.workers == 1 or len(todo) == 1):
            _run_serial(todo, out_root, config, on_result)
        elif todo:
            _run_pool(todo, out_root, config, on_result, inflight_ids)
    except KeyboardInterrupt:
        report["interrupted"] = True
        raise
    finally:
        bar.close()
        for i in inflight_ids:  # workers were stopped; remove what they left
            shutil.rmtree(_tmp_dir(clips_dir / i), ignore_errors=True)
        for e in entries:  # listing order
            res = results.get(e.id)
            if res is None:
                continue
            if res["status"] == "processed":
                report["processed"].append(e.id)
                report["frames"] += int(res.get("frames", 0))
            elif res["status"] == "skipped_existing":
                report["skipped_existing"].append(e.id)
            else:
                item = {"source": e.source, "reason": res["reason"], "id": e.id}
                if "traceback" in res:
                    item["traceback"] = res["traceback"]
                report["failed"].append(item)
        report["seconds"] = round(time.perf_counter() - t0, 3)
        report["frames_per_second"] = round(report["frames"] / max(report["seconds"], 1e-9), 2)
        rebuild_manifest(out_root, config)
        _write_json(out_root / "report.json", report)
    return report


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the preprocessing arguments (INPUT OUT and options) to ``parser``."""
    d = PreprocessConfig(workers=1)
    parser.add_argument("input", metavar="INPUT", help="folder of videos (LRS2: the 'main' folder)")
    parser.add_argument("out", metavar="OUT", help="output dataset folder (created; reruns resume)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default: min(4, CPUs) = {default_workers()}; 1 = no pool)",
    )
    parser.add_argument(
        "--filelist", metavar="F", help="LRS2-style list of <speaker>/<clip> lines, relative to INPUT"
    )
    parser.add_argument(
        "--limit", type=int, metavar="N", help="process at most N videos (the first N listed)"
    )
    parser.add_argument(
        "--max-frames", type=int, metavar="N", help="keep at most N frames (25 fps) of each video"
    )
    parser.add_argument("--overwrite", action="store_true", help="reprocess clips that are already complete")
    parser.add_argument(
        "--margin-px", type=int, default=d.margin_px, help="crop margin in pixels (default: 5)"
    )
    parser.add_argument(
        "--min-valid-fraction",
        type=float,
        default=d.min_valid_fraction,
        help="least fraction of frames with a face (default: %(default)s)",
    )
    parser.add_argument(
        "--extensions",
        default=",".join(e[1:] for e in d.extensions),
        help="video file extensions, comma-separated (default: %(default)s)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    exts = tuple(e.strip() for e in str(args.extensions).split(",") if e.strip())
    return PreprocessConfig(
        workers=args.workers if args.workers is not None else default_workers(),
        margin_px=args.margin_px,
        overwrite=args.overwrite,
        limit=args.limit,
        max_frames=args.max_frames,
        extensions=exts,
        min_valid_fraction=args.min_valid_fraction,
        filelist=args.filelist,
        show_progress=not args.quiet,
    )


def summary(report: dict[str, Any]) -> str:
    """A few lines for people: counts, speed, and each failure with its reason."""
    lines = [
        f"{len(report['processed'])} processed, {len(report['skipped_existing'])} already done, "
        f"{len(report['failed'])} failed, in {report['seconds']:.1f} s "
        f"({report['frames']} frames, {report['frames_per_second']:.1f} frames/s)"
        + (" - interrupted, run again to resume" if report.get("interrupted") else "")
    ]
    for f in report["failed"]:
        lines.append(f"  failed: {f['source']}: {f['reason']}")
    lines.append(f"report: {Path(report['out_root']) / 'report.json'}")
    return "\n".join(lines)


def run_from_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments; prints a summary. 0 = done (failures are in the report),
    1 = no usable video (none found, or every one failed), 130 = interrupted."""
    config = config_from_args(args)
    try:
        report = preprocess_folder(args.input, args.out, config)
    except KeyboardInterrupt:
        rp = Path(args.out) / "report.json"
        if rp.is_file():
            print(summary(json.loads(rp.read_text(encoding="utf-8"))), file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(summary(report))
    if not report["processed"] and not report["skipped_existing"]:
        if not report["failed"]:
            print(f"no videos found under {args.input}", file=sys.stderr)
        return 1
    return 0
