"""Settings and error of a training-data preprocessing run (:mod:`.preprocess`): which videos are
taken, how clips are made (fps, crop margin, frame cap; recorded in each clip's meta.json via
:func:`.dataset.clip_settings`) and how the run goes (workers, progress, resume)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .dataset import DEFAULT_FPS, DEFAULT_MARGIN_PX, WINDOW, clip_settings

__all__ = ["VIDEO_EXTENSIONS", "PreprocessConfig", "PreprocessError", "ProgressCallback", "default_workers"]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv")

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
    margin_px: int = DEFAULT_MARGIN_PX
    #: Output frame rate (IP_LAP: 25).
    fps: float = DEFAULT_FPS
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
        return clip_settings(self.fps, self.margin_px, self.max_frames)
