"""The on-disk contract of a training dataset (docs/training_data.md), shared by its writers
(:mod:`.preprocess`, :func:`.data.write_synthetic_dataset`) and its readers (:mod:`.data`,
:mod:`.finetune`): ``DATA/manifest.json`` and one folder ``DATA/clips/<id>/`` per clip holding
:data:`CLIP_FILES` (``meta.json`` written last; a folder is renamed from ``<id>.tmp`` when complete).
Mel chunk counts and starts are :mod:`engine.core.audio`'s; :func:`mel_start` is the one per-frame
start for code that has no mel yet.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.audio import MEL_FPS

FORMAT_VERSION = 1
IMAGE_SIZE = 128  # face crop and sketch size
SAMPLE_RATE = 16000  # the audio behind mel.npy
WINDOW = 5  # frames in one training window: every clip has one with faces and mel chunks
N_POSE, N_CONTENT = 74, 57  # landmarks.npy columns: [pose(74) | content(57)]
DEFAULT_FPS = 25.0
DEFAULT_MARGIN_PX = 5
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


class DataError(ValueError):
    """A training data folder that cannot be used; the message says why."""


def mel_start(frame: int, fps: float = DEFAULT_FPS) -> int:
    """First mel frame of video frame ``frame``'s chunk (``engine.core.audio.mel_chunk_starts``)."""
    return int(frame * (MEL_FPS / fps))


def clip_settings(fps: float, margin_px: int, max_frames: int | None) -> dict[str, Any]:
    """What decides a clip's content (recorded in meta.json): a clip made otherwise is redone."""
    return {"fps": float(fps), "margin_px": margin_px, "image_size": IMAGE_SIZE, "max_frames": max_frames}


def tmp_dir(clip_dir: Path) -> Path:
    """The folder a clip is written to before it is renamed to ``clip_dir``."""
    return clip_dir.with_name(clip_dir.name + TMP_SUFFIX)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(obj, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_clip(clip_dir: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write one clip folder: the arrays and meta.json (last) into ``<clip_dir>.tmp/``, then one
    rename; an existing ``clip_dir`` is set aside in one rename first (never half-deleted). On any
    error or interruption the ``.tmp`` folder is removed and ``clip_dir`` is left as it was."""
    tmp = tmp_dir(clip_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr)
        write_json(tmp / "meta.json", meta)  # last: marks the files complete
        old = clip_dir.with_name(f".{clip_dir.name}.old{TMP_SUFFIX}")  # "." : never a clip id
        if clip_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(clip_dir, old)
        os.replace(tmp, clip_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def is_complete(clip_dir: str | os.PathLike, settings: dict[str, Any] | None = None) -> bool:
    """True when ``clip_dir`` is a finished clip folder (all files, readable meta.json) whose
    recorded settings equal ``settings`` (see :func:`clip_settings`) when given."""
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


def read_meta(clip_dir: str | os.PathLike) -> dict[str, Any]:
    """A clip folder's meta.json."""
    return json.loads((Path(clip_dir) / "meta.json").read_text(encoding="utf-8"))


def load_clip(clip_dir: str | os.PathLike, mmap_mode: str | None = "r") -> dict[str, Any]:
    """The arrays of one clip folder (memory-mapped by default) and its ``meta`` dict."""
    d = Path(clip_dir)
    if not is_complete(d):
        raise DataError(f"not a complete clip folder: {d}")
    out: dict[str, Any] = {
        f[:-4]: np.load(d / f, mmap_mode=mmap_mode) for f in CLIP_FILES if f.endswith(".npy")
    }
    out["meta"] = read_meta(d)
    return out


def manifest_entry(clip_id: str, meta: dict[str, Any]) -> dict[str, Any]:
    """A clip's line in manifest.json, from its meta."""
    return {
        "id": clip_id,
        "source": meta["source"],
        "frames": int(meta["frames"]),
        "valid_frames": int(meta["valid_frames"]),
        "mel_frames": int(meta["mel_frames"]),
    }


def write_manifest(
    root: Path, clips: list[dict[str, Any]], fps: float, margin_px: int, image_size: int = IMAGE_SIZE, **extra
) -> dict[str, Any]:
    """Write ``root/manifest.json`` (``extra``: e.g. ``excluded``) and return it."""
    manifest: dict[str, Any] = {
        "version": FORMAT_VERSION,
        "fps": fps,
        "margin_px": margin_px,
        "image_size": image_size,
        "clips": clips,
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "manifest.json", manifest)
    return manifest


def rebuild_manifest(out_root: str | os.PathLike, config: Any = None) -> dict[str, Any]:
    """Rewrite ``out_root/manifest.json`` from the complete clip folders and return it.

    The manifest's fps and margin come from ``config`` (anything with ``fps`` and ``margin_px``,
    e.g. a ``PreprocessConfig``), else from the existing manifest, else from the first complete
    clip (else the defaults). Complete clips made with another fps, margin or crop size are left
    out and named under ``"excluded"``.
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
            except (KeyError, TypeError, ValueError):
                pass
    clips: list[dict[str, Any]] = []
    excluded: list[str] = []
    names = sorted(os.listdir(clips_dir)) if clips_dir.is_dir() else []
    for name in names:
        d = clips_dir / name
        if not is_complete(d):
            continue
        meta = read_meta(d)
        if fps is None:
            fps, margin = float(meta["fps"]), meta["margin_px"]
        if (float(meta["fps"]), meta["margin_px"], meta.get("image_size")) != (fps, margin, IMAGE_SIZE):
            excluded.append(name)
            continue
        clips.append(manifest_entry(name, meta))
    return write_manifest(
        root,
        clips,
        fps if fps is not None else DEFAULT_FPS,
        margin if margin is not None else DEFAULT_MARGIN_PX,
        **({"excluded": excluded} if excluded else {}),
    )


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """``root/manifest.json`` as a dict (format version and clip list checked)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DataError(
            f"no manifest.json in {Path(root)}: not a preprocessed dataset (run the preprocessing)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise DataError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: unsupported manifest (not a JSON object)")
    if manifest.get("version") != FORMAT_VERSION or not isinstance(manifest.get("clips"), list):
        raise DataError(f"{path}: unsupported manifest (version {manifest.get('version')!r})")
    return manifest


def split_clips(
    manifest: dict, val_fraction: float = 0.0, val_clips: list[str] | None = None, seed: int = 0
) -> tuple[list[str], list[str]]:
    """(train ids, validation ids). ``val_clips`` names the held-out clips; otherwise a fraction
    ``val_fraction`` of the clips (at least one when the fraction is positive and two or more clips
    exist, always leaving one for training), drawn with ``seed``."""
    ids = [c["id"] for c in manifest["clips"]]
    if val_clips:
        unknown = sorted(set(val_clips) - set(ids))
        if unknown:
            raise DataError(f"held-out clip ids not in the manifest: {', '.join(unknown)}")
        val = [i for i in ids if i in set(val_clips)]
    elif val_fraction > 0 and len(ids) >= 2:
        n = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        order = np.random.default_rng([seed, 7]).permutation(len(ids))
        chosen = set(order[:n].tolist())
        val = [i for k, i in enumerate(ids) if k in chosen]
    else:
        val = []
    train = [i for i in ids if i not in set(val)]
    if not train:
        raise DataError("no clips left for training after holding out the validation clips")
    return train, val
