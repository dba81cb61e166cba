"""Named avatars (:class:`AvatarLibrary`): the ``--avatar`` files, every video / image of
``--avatar-dir`` and the bundled portrait, each prepared once (face crops, landmarks, renderer
references) and kept in memory.

**Never on the event loop.** Preparing is blocking (seconds for a long video): :meth:`load` runs it
in a worker thread and awaits it, :meth:`poster_jpeg` likewise, and the loop never takes the
library's lock while a preparation runs (the lock guards only the dictionaries). Concurrent
requests for one avatar share one preparation (one future per name). :meth:`get` is the blocking
form (worker threads, tests). **Failures are remembered**: an avatar that could not be prepared is
not prepared again on the next request; it is :class:`AvatarUnavailable` (a code and a plain
sentence that names the file's base name at most: the full error, with its paths, goes to the log)
and ``describe`` shows it as ``"available": false``. :meth:`prepare_now` prepares named avatars
before the server serves (``mouthpiece serve`` checks ``--avatar`` and the default this way)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.core.avatar import Avatar, AvatarConfig, AvatarError, prepare_avatar
from streaming.config import DEFAULT_AVATAR, ServerConfig

__all__ = ["MEDIA_SUFFIXES", "AvatarLibrary", "AvatarUnavailable", "plain_reason"]

log = logging.getLogger("mouthpiece.server")

MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class AvatarUnavailable(Exception):
    """An avatar that could not be prepared: ``code`` (``avatar_missing``, ``avatar_unreadable``,
    ``no_face``, ``avatar_failed``) and ``message``, one plain sentence without paths. A new one is
    raised each time (a remembered failure is data, :class:`_Failure`: re-raising one exception
    object would grow its traceback with every request)."""

    def __init__(self, name: str, code: str, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.name, self.code, self.message, self.reason = name, code, message, reason or message


@dataclass(frozen=True)
class _Failure:
    name: str
    code: str
    message: str
    reason: str  # the message's plain reason alone ("no face was found in it")

    def error(self) -> AvatarUnavailable:
        return AvatarUnavailable(self.name, self.code, self.message, self.reason)


def plain_reason(e: BaseException) -> tuple[str, str]:
    """The code and the plain reason (no paths, no exception text) of a preparation error."""
    text = str(e)
    if isinstance(e, FileNotFoundError):
        return "avatar_missing", "its file is missing"
    if isinstance(e, AvatarError) and "no face found" in text:
        return "no_face", "no face was found in it"
    if isinstance(e, AvatarError) and "no frames could be read" in text:
        return "avatar_unreadable", "it could not be read as a video or an image"
    if isinstance(e, AvatarError) and ": frame " in text:
        return "no_face", "the face could not be followed through its frames"
    if isinstance(e, AvatarError) and "not a file" in text:
        return "avatar_missing", "it is not a file"
    return "avatar_failed", "it could not be prepared"


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
        self._errors: dict[str, _Failure] = {}
        self._preparing: dict[str, concurrent.futures.Future] = {}  # name -> its one preparation
        self._posters: dict[str, bytes] = {}
        self._lock = threading.Lock()  # guards the dictionaries only (never held while preparing)
        self.preparations = 0  # preparations started (each avatar at most once)

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

    def available(self) -> list[str]:
        """The names of the avatars not known to have failed."""
        return [n for n in self.sources if n not in self._errors]

    # ---- preparing ---------------------------------------------------------------------------

    def _future(self, name: str) -> tuple[concurrent.futures.Future, bool]:
        """The preparation of ``name`` (done if it is ready or failed) and whether the caller must
        run it (it was not started before)."""
        with self._lock:
            fut = self._preparing.get(name)
            if fut is not None:
                return fut, False
            fut = concurrent.futures.Future()
            if name in self._ready:
                fut.set_result(self._ready[name])
                return fut, False
            if name in self._errors:
                fut.set_exception(self._errors[name].error())
                return fut, False
            self._preparing[name] = fut
            self.preparations += 1
            return fut, True

    def _prepare(self, name: str, fut: concurrent.futures.Future) -> None:
        """Prepare ``name`` (blocking; the one run of its preparation) and settle ``fut``."""
        src = self.sources[name]
        try:
            avatar = prepare_avatar(src, self.config, self.cache_dir)
        except Exception as e:  # noqa: BLE001 - any failure makes the avatar unavailable, once
            code, reason = plain_reason(e)
            log.error("avatar %s (%s) could not be prepared: %s: %s", name, src, type(e).__name__, e)
            failure = _Failure(name, code, f"avatar {name!r} ({src.name}) is unavailable: {reason}", reason)
            with self._lock:
                self._errors[name] = failure
                self._preparing.pop(name, None)
            fut.set_exception(failure.error())
            return
        with self._lock:
            self._ready[name] = avatar
            self._preparing.pop(name, None)
        fut.set_result(avatar)

    def get(self, name: str) -> Avatar:
        """The prepared avatar (prepares it on first use: blocking; never on the event loop).
        KeyError for an unknown name, :class:`AvatarUnavailable` for one that failed."""
        if name not in self.sources:
            raise KeyError(name)
        fut, mine = self._future(name)
        if mine:
            self._prepare(name, fut)
        return fut.result()

    async def load(self, name: str) -> Avatar:
        """The prepared avatar, prepared in a worker thread (shared with every concurrent request
        for it); KeyError or :class:`AvatarUnavailable` as :meth:`get`."""
        if name not in self.sources:
            raise KeyError(name)
        ready = self._ready.get(name)
        if ready is not None:
            return ready
        fut, mine = self._future(name)
        if mine:
            asyncio.get_running_loop().run_in_executor(None, self._prepare, name, fut)
        # shield: a request that goes away does not cancel the preparation others wait for
        return await asyncio.shield(asyncio.wrap_future(fut))

    def prepare_now(self, names: list[str]) -> list[AvatarUnavailable]:
        """Prepare ``names`` now, in a worker thread (start-up, before serving); the failures."""
        problems = []
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mouthpiece-avatars") as pool:
            for name in dict.fromkeys(names):
                try:
                    pool.submit(self.get, name).result()
                except AvatarUnavailable as e:
                    problems.append(e)
        return problems

    # ---- what clients see ----------------------------------------------------------------------

    def describe(self) -> list[dict]:
        out = []
        for name, src in self.sources.items():
            problem = self._errors.get(name)
            item = {
                "name": name,
                "source": src.name,
                "default": name == self.default,
                "ready": name in self._ready,
                "available": problem is None,
            }
            a = self._ready.get(name)
            if a is not None:
                h, w = a.frame_size
                item.update(frames=a.n_frames, width=w, height=h, still=a.n_frames == 1)
            if problem is not None:
                item.update(error=problem.code, message=problem.message)
            out.append(item)
        return out

    async def poster_jpeg(self, name: str) -> bytes:
        """The avatar's first frame as a JPEG (prepared and encoded in a worker thread, once)."""
        data = self._posters.get(name)
        if data is None:
            avatar = await self.load(name)
            data = await asyncio.get_running_loop().run_in_executor(None, _jpeg, avatar)
            self._posters[name] = data
        return data

    def poster(self, name: str) -> bytes:
        """:meth:`poster_jpeg`, blocking (not on the event loop)."""
        return self._posters.get(name) or _jpeg(self.get(name))


def _jpeg(avatar: Avatar) -> bytes:
    frame = np.asarray(avatar.frames[0])
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 BGR image
        raise RuntimeError("could not encode the poster")
    return buf.tobytes()
