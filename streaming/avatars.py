"""Named avatars (:class:`AvatarLibrary`): the ``--avatar`` files, every video / image of
``--avatar-dir`` and the bundled portrait, each prepared once on first use (face crops, landmarks,
renderer references; blocking, so :meth:`AvatarLibrary.load` runs it in a worker thread) and kept
in memory. Errors of a source that cannot be prepared are remembered and shown by ``describe``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import cv2
import numpy as np

from engine.core.avatar import Avatar, AvatarConfig, AvatarError, prepare_avatar
from streaming.config import DEFAULT_AVATAR, ServerConfig

__all__ = ["MEDIA_SUFFIXES", "AvatarLibrary"]

MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class AvatarLibrary:
    """Named avatar sources, prepared once (in a worker thread) and kept in memory."""

    def __init__(self, sources: dict[str, Path], default: str, config: AvatarConfig, cache_dir=None) -> None:
        if default not in sources:
            raise ValueError(f"default avatar {default!r} is not among {sorted(sources)}")
        self.sources = dict(sources)
        self.default = default
        self.config = config
        self.cache_dir = cache_dir
        self._ready: dict[str, Avatar] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: ServerConfig) -> AvatarLibrary:
        files = [Path(p) for p in cfg.avatars]
        for p in files:
            if not p.is_file():
                raise FileNotFoundError(f"avatar file not found: {p}")
        if cfg.avatar_dir:
            d = Path(cfg.avatar_dir)
            if not d.is_dir():
                raise FileNotFoundError(f"avatar folder not found: {d}")
            files += sorted(p for p in d.iterdir() if p.suffix.lower() in MEDIA_SUFFIXES and p.is_file())
        sources: dict[str, Path] = {}
        for p in files:
            name, k = p.stem, 2
            while name in sources:
                name, k = f"{p.stem}-{k}", k + 1
            sources[name] = p
        default = cfg.default_avatar or (next(iter(sources)) if sources else "portrait")
        if "portrait" not in sources:
            sources["portrait"] = DEFAULT_AVATAR
        return cls(sources, default, AvatarConfig(n_refs=cfg.refs), cfg.cache_dir)

    def names(self) -> list[str]:
        return list(self.sources)

    def get(self, name: str) -> Avatar:
        """The prepared avatar (prepares it on first use: blocking)."""
        if name not in self.sources:
            raise KeyError(name)
        with self._lock:
            if name in self._ready:
                return self._ready[name]
            try:
                avatar = prepare_avatar(self.sources[name], self.config, self.cache_dir)
            except (AvatarError, OSError, ValueError) as e:
                self._errors[name] = str(e)
                raise
            self._ready[name] = avatar
            return avatar

    async def load(self, name: str) -> Avatar:
        if name in self._ready:
            return self._ready[name]
        return await asyncio.get_running_loop().run_in_executor(None, self.get, name)

    def describe(self) -> list[dict]:
        out = []
        for name, src in self.sources.items():
            item = {
                "name": name,
                "source": src.name,
                "default": name == self.default,
                "ready": name in self._ready,
            }
            a = self._ready.get(name)
            if a is not None:
                h, w = a.frame_size
                item.update(frames=a.n_frames, width=w, height=h, still=a.n_frames == 1)
            if name in self._errors:
                item["error"] = self._errors[name]
            out.append(item)
        return out

    def poster(self, name: str) -> bytes:
        frame = np.asarray(self.get(name).frames[0])
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR image
            raise RuntimeError("could not encode the poster")
        return buf.tobytes()
