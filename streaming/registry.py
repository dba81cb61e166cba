"""The session registry (:class:`Server`): the running sessions (:class:`Hosted`: a
:class:`~streaming.session.StreamSession` and what belongs to it: its peer connection, microphone
sinks, WHEP viewers, data channel and tasks), the session limit (:class:`Busy` beyond
``max_sessions``, counting sessions still being created), the counters behind ``/metrics`` (the
ended sessions' totals, so that no counter goes back when a session ends; each session's frame
records go to the stage-latency histogram: :class:`~streaming.metrics.ServerMetrics`), and
start-up / shutdown of the application (loopback ICE, the default avatar and model warm-up, every
session closed at the end). :func:`Server.close_session` is the one way a session ends: it closes
its viewers, peer, sinks and tasks, then the session, and releases the avatar's model references
with its last session, and remembers the resources that ended (:meth:`Server.ended_recently`: a
bounded set of paths, so that a DELETE of a WHIP session or WHEP viewer that just ended on its own
is answered as done). ``app[SERVER]`` is the Server behind an application; :func:`json_error`
and :func:`busy_response` are the error answers the handlers share."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

from engine.synth.choice import ModelEngine
from streaming.avatars import AvatarLibrary, AvatarUnavailable
from streaming.config import ServerConfig
from streaming.ice import loopback_ice
from streaming.metrics import COUNTS, ServerMetrics, session_counts
from streaming.session import StreamSession
from streaming.tracks import wait_cancelled

__all__ = ["SERVER", "Busy", "Hosted", "Server", "busy_response", "json_error", "server_of"]

log = logging.getLogger("mouthpiece.server")

ENDED_KEEP = 1024  # ended resource paths remembered (the oldest are forgotten first)
ENDED_TTL_S = 600.0  # ... for this long


def _libc_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_malloc_trim = _libc_malloc_trim()


@dataclass
class Hosted:
    """A running session and what belongs to it."""

    kind: str  # "webrtc", "whip" or "websocket"
    stream: StreamSession
    pc: RTCPeerConnection | None = None
    sinks: list = field(default_factory=list)
    viewers: dict[str, RTCPeerConnection] = field(default_factory=dict)
    channel: object | None = None
    tasks: set = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set when close_session begins


class Busy(Exception):
    pass


class Server:
    """Sessions, models and avatars behind the HTTP app (the module docstring)."""

    def __init__(self, cfg: ServerConfig, engine: ModelEngine, library: AvatarLibrary) -> None:
        self.cfg = cfg
        self.engine = engine
        self.library = library
        self.sessions: dict[str, Hosted] = {}
        self.started_total = self.rejected_total = self.ended_total = 0
        self.closed_counts = dict.fromkeys(COUNTS, 0)  # the ended sessions' totals (session_counts)
        self._background: set[asyncio.Task] = set()
        self._pending = 0  # sessions being created (counted against the limit)
        self._ended: collections.OrderedDict[str, float] = collections.OrderedDict()  # path -> when
        self._ice = contextlib.ExitStack()
        self.started_at = time.time()
        self.metrics = ServerMetrics(self)

    # ---- lifecycle -------------------------------------------------------------------------

    async def startup(self, app=None) -> None:
        if self.cfg.loopback:
            self._ice.enter_context(loopback_ice())
        try:
            avatar = await self.library.load(self.library.default)
        except AvatarUnavailable as e:
            log.error("the default avatar could not be prepared: %s", e)
        else:
            synth = self.engine.synthesizer
            if synth.computes:  # the first model call is slow (allocations, kernels): not in a session
                seconds = await asyncio.get_running_loop().run_in_executor(None, synth.warm_up, avatar)
                log.info("models warmed up on avatar %s in %.2f s", self.library.default, seconds)
        # Start-up objects (models, avatars, libraries) never become garbage: keep them out of the
        # collector, whose full passes over them otherwise pause the event loop 100-160 ms.
        gc.collect()
        gc.freeze()

    async def shutdown(self, app=None) -> None:
        for sid in list(self.sessions):
            await self.close_session(sid)
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
        self._ice.close()

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def rtc_configuration(self) -> RTCConfiguration:
        return RTCConfiguration(iceServers=[RTCIceServer(**e) for e in self.cfg.ice_server_entries()])

    # ---- sessions --------------------------------------------------------------------------

    def check_room(self) -> None:
        """Busy (counted as rejected) when ``max_sessions`` sessions run or are being created."""
        if len(self.sessions) + self._pending >= self.cfg.max_sessions:
            self.rejected_total += 1
            raise Busy()

    async def new_session(self, kind: str, avatar_name: str | None) -> Hosted:
        self.check_room()
        self._pending += 1
        try:
            name = avatar_name or self.library.default
            avatar = await self.library.load(name)
            eng = self.engine
            stream = StreamSession(avatar, eng.synthesizer, self.cfg.stream, avatar_name=name)
            stream.frame_observers.append(self.metrics.observe_frame)  # each frame's stages -> the histogram
            await stream.start()
        finally:
            self._pending -= 1
        hosted = Hosted(kind, stream)
        self.sessions[stream.id] = hosted
        self.started_total += 1
        log.info("session %s (%s) started with avatar %s", stream.id, kind, name)
        return hosted

    def mark_ended(self, path: str) -> None:
        """Remember that the resource at ``path`` (``/whip/{id}``, ``/whep/{id}/{viewer}``) ended."""
        self._ended[path] = time.monotonic()
        self._ended.move_to_end(path)
        while len(self._ended) > ENDED_KEEP:
            self._ended.popitem(last=False)

    def ended_recently(self, path: str) -> bool:
        """Whether the resource at ``path`` ended within ``ENDED_TTL_S`` (and is still remembered)."""
        now = time.monotonic()
        while self._ended and now - next(iter(self._ended.values())) > ENDED_TTL_S:
            self._ended.popitem(last=False)
        return path in self._ended

    def _count_closed(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.closed_counts[k] += v

    def collect(self) -> float:
        """Free what closed sessions and viewers leave as reference cycles, now; returns the seconds
        it took. aiortc's peer connections are cycles (transports, senders, receivers, event
        handlers), and so, through them, are the session, its tracks, the last video frame and the
        codec contexts with their FFmpeg threads: without a collection they stay until the
        collector's next full pass, which a quiet server may not make for a long time (RSS and
        threads grew with every connection). The start-up objects are frozen (:meth:`startup`), so
        a pass covers only what sessions made (a few ms)."""
        t0 = time.perf_counter()
        gc.collect()
        if _malloc_trim is not None:  # and give the freed heap back (glibc keeps it per thread arena)
            _malloc_trim(0)
        dt = time.perf_counter() - t0
        log.debug("collected the closed session's cycles in %.1f ms", dt * 1e3)
        return dt

    def newest(self) -> Hosted | None:
        return next(reversed(self.sessions.values()), None) if self.sessions else None

    async def close_session(self, sid: str) -> bool:
        hosted = self.sessions.pop(sid, None)
        if hosted is None:
            return False
        hosted.closing.set()  # its transport stops taking messages now (the websocket closes)
        s = hosted.stream
        # Its counts move to the ended sessions' totals in the same step as it leaves the running
        # ones (a scrape between the two would see the counters go back), and what it still does
        # while it closes (frames sent to viewers until they are closed) follows after.
        counted = session_counts(s)
        self._count_closed(counted)
        for vid, pc in list(hosted.viewers.items()):
            self.mark_ended(f"/whep/{sid}/{vid}")
            await pc.close()
        hosted.viewers.clear()
        if hosted.kind == "whip":
            self.mark_ended(f"/whip/{sid}")
        if hosted.pc is not None:
            await hosted.pc.close()
        for sink in hosted.sinks:
            await sink.aclose()
        for t in list(hosted.tasks):
            t.cancel()
            await wait_cancelled(t)
        await s.aclose()
        self._count_closed({k: v - counted[k] for k, v in session_counts(s).items()})
        # the peer, its channel and the handlers' closures are cycles: drop them now, not at a collection
        hosted.pc = hosted.channel = None
        hosted.sinks.clear()
        hosted.tasks.clear()
        self.collect()
        self.ended_total += 1
        if all(h.stream.avatar is not s.avatar for h in self.sessions.values()):
            self.engine.synthesizer.release(s.avatar)  # its reference bank (GPU memory) goes with it
        log.info("session %s closed", sid)
        return True


SERVER = web.AppKey("server", Server)  # app[SERVER]: the Server behind an application


def server_of(request: web.Request) -> Server:
    return request.app[SERVER]


def json_error(status: int, code: str, message: str, **extra) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def busy_response(server: Server, sdp: bool = False) -> web.Response:
    msg = (
        f"The server is busy: all {server.cfg.max_sessions} session slots are in use. "
        "Try again in a few seconds, or raise --max-sessions."
    )
    headers = {"Retry-After": "5"}
    if sdp:
        return web.Response(status=503, text=msg, headers=headers)
    return web.json_response(
        {
            "error": "busy",
            "message": msg,
            "sessions": len(server.sessions),
            "max_sessions": server.cfg.max_sessions,
        },
        status=503,
        headers=headers,
    )
