"""One video -> one training clip folder (:func:`preprocess_video`): audio to 16 kHz mono and the
authors' mel, frames to 25 fps, FaceMesh per frame, the authors' training crop (float box with a
5-pixel margin), landmarks normalised by that box, grey sketches, lip openness; checks that the clip
holds a usable window, then :func:`.dataset.write_clip`. What matches the authors' preprocessing:
docs/training_data.md."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.audio import MEL_CHUNK_LEN, MelConfig

from .dataset import FORMAT_VERSION, IMAGE_SIZE, SAMPLE_RATE, TMP_SUFFIX, WINDOW, mel_start, write_clip
from .preprocess_config import PreprocessConfig, PreprocessError

__all__ = ["preprocess_video"]

_SKETCH_BATCH = 256


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
        # frame has one (chunk k: mel frames mel_start(k) .. +16; M = 1 + samples // hop).
        last_start = mel_start(n - 1, config.fps)
        wav = wav[: (last_start + MEL_CHUNK_LEN - 1) * MelConfig().hop]
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

    write_clip(out_dir, arrays, meta)
    return meta
