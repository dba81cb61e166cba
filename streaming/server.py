"""The HTTP / WebRTC / websocket server (``python server.py``, ``mouthpiece serve``).

Endpoints (JSON unless said otherwise; errors are ``{"error": code, "message": text}``):

- ``GET /`` the page (web_client/), ``GET /static/...`` its files.
- ``GET /api/info``: mode (``neural`` or ``passthrough``), weights, a message when there are none,
  avatars, session count and limit, delay.
- ``GET /api/avatars``, ``GET /api/avatars/{name}/poster.jpg``.
- ``POST /offer`` ``{"sdp", "type": "offer", "avatar"?}`` -> ``{"sdp", "type": "answer",
  "session"}``: a browser session. The offer carries the microphone (audio, sendrecv), a video
  transceiver (recvonly) and optionally a data channel ``control`` for JSON control messages
  (below); the answer sends back the avatar's video and the delayed audio.
- WHIP ``POST /whip`` (``application/sdp``; ``?avatar=``) -> 201, ``Location: /whip/{session}``:
  audio in (OBS and other WHIP encoders; a video track they send is read and discarded);
  ``DELETE /whip/{session}`` ends it.
- WHEP ``POST /whep/{session}`` (or ``/whep``: the newest session) -> 201,
  ``Location: /whep/{session}/{viewer}``: the session's video and audio to any WHEP player;
  ``DELETE`` that location ends the viewer.
- ``GET /ws`` (``?avatar=``): websocket PCM ingest for TTS and dubbing engines. Text messages are
  JSON controls; binary messages are PCM in the format of the last ``start`` (default 16 kHz mono
  s16le). The first message from the server is ``{"type": "session", "session", "whep"}``.
- ``GET /api/sessions``, ``GET /api/sessions/{id}`` (stats), ``DELETE /api/sessions/{id}``.
- ``GET /healthz``; ``GET /metrics`` (Prometheus text format).

Control messages (data channel or websocket): ``{"type": "start", "sample_rate", "channels",
"format": "s16le" | "f32le"}`` (websocket only), ``{"type": "flush"}``, ``{"type": "interrupt"}``,
``{"type": "switch_avatar", "avatar": name}``, ``{"type": "stats"}``, ``{"type": "end"}``. The
server answers ``{"type": "stats", ...}``, ``{"type": "avatar", "avatar"}``, ``{"type": "ended"}``
or ``{"type": "error", "error", "message"}``; on the data channel it also pushes stats every 0.5 s.

At most ``max_sessions`` sessions run at once; beyond it ``/offer`` and WHIP answer 503 with
``{"error": "busy"}`` and ``Retry-After``, and a websocket gets that error and close code 1013.
A session ends when its peer disconnects (RTCP BYE, ICE failure, websocket closed), on DELETE, or
at shutdown; its tasks, threads, peer connections and viewers go with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from aiohttp import WSMsgType, web
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

from engine.core.avatar import Avatar, AvatarConfig, AvatarError, prepare_avatar
from engine.live.messages import Control, ControlKind
from engine.live.session import LiveConfig
from engine.synth.choice import ModelEngine
from streaming.ice import loopback_ice
from streaming.session import STAGES, StreamConfig, StreamSession
from streaming.tracks import MicrophoneSink, wait_cancelled

__all__ = [
    "SERVER",
    "AvatarLibrary",
    "ModelEngine",
    "Server",
    "ServerConfig",
    "create_app",
    "serve_app",
]

log = logging.getLogger("mouthpiece.server")

ROOT = Path(__file__).resolve().parent.parent
WEB_CLIENT = ROOT / "web_client"
DEFAULT_AVATAR = ROOT / "assets" / "portrait.png"
MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".png", ".jpg", ".jpeg", ".webp", ".bmp"}
PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    avatars: tuple[str, ...] = ()  # video or image files; the bundled portrait is always offered
    avatar_dir: str | None = None  # every video / image file in this folder
    default_avatar: str | None = None  # name; default: the first of --avatar, else the portrait
    refs: int | str = 5
    cache_dir: str | None = None
    landmark_checkpoint: str | None = None
    renderer_checkpoint: str | None = None
    checkpoint_dir: str = "checkpoints"
    random_weights: bool = False
    renderer: str = "auto"  # auto | neural | retrieval | none (module docstring of ModelEngine.from_config)
    device: str = "auto"
    backend: str = "fast"
    precision: str = "fp32"
    max_sessions: int = 4
    max_batch: int = 16  # windows per model call, across sessions
    max_viewers: int = 16
    ice_servers: tuple[str, ...] = ()  # stun: / turn: URLs; none by default (no outside traffic)
    loopback: bool = False  # ICE on 127.0.0.1 only (local demos, tests)
    connect_timeout_s: float = 20.0  # a peer that has not connected by then is dropped
    mic_prefetch: int = 2  # 20 ms packets aiortc buffers before decoding a microphone (its default: 4)
    stream: StreamConfig = field(default_factory=StreamConfig)


# ---------------------------------------------------------------------------------------------
# Models and avatars
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Sessions
# ---------------------------------------------------------------------------------------------


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


class Busy(Exception):
    pass


class Server:
    """Sessions, models and avatars behind the HTTP app (see the module docstring)."""

    def __init__(self, cfg: ServerConfig, engine: ModelEngine, library: AvatarLibrary) -> None:
        self.cfg = cfg
        self.engine = engine
        self.library = library
        self.sessions: dict[str, Hosted] = {}
        self.started_total = self.rejected_total = self.ended_total = 0
        self.closed_counts = {"speech": 0, "rest": 0, "dropped": 0, "model_calls": 0, "video_sent": 0}
        self._background: set[asyncio.Task] = set()
        self._pending = 0  # sessions being created (counted against the limit)
        self._ice = contextlib.ExitStack()
        self.started_at = time.time()

    # ---- lifecycle -------------------------------------------------------------------------

    async def startup(self, app=None) -> None:
        if self.cfg.loopback:
            self._ice.enter_context(loopback_ice())
        try:
            avatar = await self.library.load(self.library.default)
        except (AvatarError, OSError, ValueError) as e:
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
        return RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.cfg.ice_servers])

    # ---- sessions --------------------------------------------------------------------------

    async def new_session(self, kind: str, avatar_name: str | None) -> Hosted:
        if len(self.sessions) + self._pending >= self.cfg.max_sessions:
            self.rejected_total += 1
            raise Busy()
        self._pending += 1
        try:
            name = avatar_name or self.library.default
            avatar = await self.library.load(name)
            stream = StreamSession(avatar, self.engine.synthesizer, self.cfg.stream, avatar_name=name)
            await stream.start()
        finally:
            self._pending -= 1
        hosted = Hosted(kind, stream)
        self.sessions[stream.id] = hosted
        self.started_total += 1
        log.info("session %s (%s) started with avatar %s", stream.id, kind, name)
        return hosted

    def newest(self) -> Hosted | None:
        return next(reversed(self.sessions.values()), None) if self.sessions else None

    async def close_session(self, sid: str) -> bool:
        hosted = self.sessions.pop(sid, None)
        if hosted is None:
            return False
        s = hosted.stream
        snap = s.live.stats
        self.closed_counts["speech"] += snap.speech_frames
        self.closed_counts["rest"] += snap.rest_frames
        self.closed_counts["dropped"] += snap.dropped
        self.closed_counts["model_calls"] += snap.model_calls
        self.closed_counts["video_sent"] += s.video.sent
        for pc in list(hosted.viewers.values()):
            await pc.close()
        hosted.viewers.clear()
        if hosted.pc is not None:
            await hosted.pc.close()
        for sink in hosted.sinks:
            await sink.aclose()
        for t in list(hosted.tasks):
            t.cancel()
            await wait_cancelled(t)
        await s.aclose()
        self.ended_total += 1
        if all(h.stream.avatar is not s.avatar for h in self.sessions.values()):
            self.engine.synthesizer.release(
                s.avatar
            )  # its reference bank (GPU memory) goes with its last session
        log.info("session %s closed", sid)
        return True

    def _watch_pc(self, pc: RTCPeerConnection, on_gone) -> None:
        """Call ``on_gone`` when ``pc`` fails or closes, or has not connected ``connect_timeout_s``
        after the answer (a peer that left during ICE)."""
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState == "connected":
                connected.set()
            if pc.connectionState in ("failed", "closed"):
                connected.set()
                self.spawn(on_gone())

        async def deadline() -> None:
            try:
                await asyncio.wait_for(connected.wait(), self.cfg.connect_timeout_s)
            except TimeoutError:
                log.info("a peer did not connect within %.0f s: closing it", self.cfg.connect_timeout_s)
                await on_gone()

        self.spawn(deadline())

    def _sink_audio(self, hosted: Hosted, pc: RTCPeerConnection) -> None:
        """Feed the first remote audio track of ``pc`` into the session; discard other tracks.
        When the audio track ends (the peer hung up), the session is closed."""

        @pc.on("track")
        def _track(track) -> None:
            if track.kind == "audio" and not hosted.sinks:
                self._set_prefetch(pc, track)
                sink = MicrophoneSink(hosted.stream, track)
                hosted.sinks.append(sink)
                task = sink.start()
                task.add_done_callback(lambda _t: self.spawn(self.close_session(hosted.stream.id)))
            else:
                hole = MediaBlackhole()
                hole.addTrack(track)
                hosted.tasks.add(self.spawn(_drain(hole)))

    def _set_prefetch(self, pc: RTCPeerConnection, track) -> None:
        """aiortc holds 4 audio packets (80 ms) before decoding; on a LAN fewer are enough. (aiortc has
        no public setting for it: the receiver's jitter buffer is changed if it is where expected.)"""
        rec = next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)
        jb = getattr(rec, "_RTCRtpReceiver__jitter_buffer", None)
        if jb is not None and hasattr(jb, "_prefetch"):
            jb._prefetch = max(1, int(self.cfg.mic_prefetch))

    async def _answer(
        self, pc: RTCPeerConnection, offer: RTCSessionDescription, send: Hosted | None = None
    ) -> RTCSessionDescription:
        """Answer ``offer``; with ``send``, the answer carries that session's video and delayed audio
        (a new viewer of its relay). ValueError / RuntimeError: an offer that cannot be answered."""
        await pc.setRemoteDescription(offer)
        if send is not None:
            for track in send.stream.subscribe():
                sender = pc.addTrack(track)
                if track.kind == "video":
                    send.stream.watch_sender(sender)  # the encode and send stages
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription

    # ---- control messages ------------------------------------------------------------------

    async def handle_control(self, hosted: Hosted, msg: dict) -> dict | None:
        """Act on one control message; the reply (or None)."""
        kind = msg.get("type")
        s = hosted.stream
        if kind in ("flush", "interrupt"):
            s.control(Control(ControlKind.from_wire(kind)))
            return {"type": kind, "ok": True}
        if kind == "stats":
            return s.stats()
        if kind == "switch_avatar":
            name = msg.get("avatar")
            if name not in self.library.sources:
                return _error(
                    "unknown_avatar", f"no avatar named {name!r}; choose one of {self.library.names()}"
                )
            try:
                avatar = await self.library.load(name)
            except (AvatarError, OSError, ValueError) as e:
                return _error("avatar_failed", f"avatar {name!r} could not be prepared: {e}")
            if not s.closed:
                s.switch_avatar(avatar, name)
            return {"type": "avatar", "avatar": name}
        if kind == "end":
            if not s.ended:
                s.end()
            return {"type": "ended"}
        return _error("bad_message", f"unknown control message type {kind!r}")


def _error(code: str, message: str) -> dict:
    return {"type": "error", "error": code, "message": message}


async def _drain(hole: MediaBlackhole) -> None:
    await hole.start()
    try:
        await asyncio.Event().wait()
    finally:
        await hole.stop()


def _json_error(status: int, code: str, message: str, **extra) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _busy_response(server: Server, sdp: bool = False) -> web.Response:
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


# ---------------------------------------------------------------------------------------------
# HTTP handlers
# ---------------------------------------------------------------------------------------------

routes = web.RouteTableDef()
SERVER = web.AppKey("server", Server)  # app[SERVER]: the Server behind an application


def _server(request: web.Request) -> Server:
    return request.app[SERVER]


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    page = WEB_CLIENT / "index.html"
    if not page.is_file():
        return web.Response(status=404, text="web_client/index.html is missing")
    return web.FileResponse(page)


@routes.get("/api/info")
async def info(request: web.Request) -> web.Response:
    srv = _server(request)
    eng = srv.engine
    return web.json_response(
        {
            "name": "mouthpiece",
            "mode": eng.mode,
            "weights": eng.weights,
            "message": eng.message,
            "device": eng.device,
            "renderer": eng.renderer_name,
            "avatars": srv.library.describe(),
            "default_avatar": srv.library.default,
            "sessions": len(srv.sessions),
            "max_sessions": srv.cfg.max_sessions,
            "delay_ms": srv.cfg.stream.delay_ms,
            # the microphone packets (20 ms) aiortc holds before decoding (latency figures of the page)
            "mic_prefetch": srv.cfg.mic_prefetch,
        }
    )


@routes.get("/api/avatars")
async def avatars(request: web.Request) -> web.Response:
    srv = _server(request)
    return web.json_response({"default": srv.library.default, "avatars": srv.library.describe()})


@routes.get("/api/avatars/{name}/poster.jpg")
async def poster(request: web.Request) -> web.Response:
    srv = _server(request)
    name = request.match_info["name"]
    if name not in srv.library.sources:
        return _json_error(404, "unknown_avatar", f"no avatar named {name!r}")
    try:
        await srv.library.load(name)
        data = srv.library.poster(name)
    except (AvatarError, OSError, ValueError) as e:
        return _json_error(422, "avatar_failed", str(e))
    return web.Response(body=data, content_type="image/jpeg")


@routes.get("/api/sessions")
async def sessions(request: web.Request) -> web.Response:
    srv = _server(request)
    return web.json_response(
        {
            "sessions": [
                dict(h.stream.stats(), kind=h.kind, viewers=len(h.viewers)) for h in srv.sessions.values()
            ]
        }
    )


@routes.get("/api/sessions/{sid}")
async def session_stats(request: web.Request) -> web.Response:
    hosted = _server(request).sessions.get(request.match_info["sid"])
    if hosted is None:
        return _json_error(404, "unknown_session", "no such session")
    return web.json_response(dict(hosted.stream.stats(), kind=hosted.kind, viewers=len(hosted.viewers)))


@routes.delete("/api/sessions/{sid}")
async def session_delete(request: web.Request) -> web.Response:
    if not await _server(request).close_session(request.match_info["sid"]):
        return _json_error(404, "unknown_session", "no such session")
    return web.json_response({"closed": request.match_info["sid"]})


async def _read_offer_json(request: web.Request) -> tuple[RTCSessionDescription, dict]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_request", "message": f"not JSON: {e}"})
        ) from e
    if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "bad_request", "message": 'expected {"sdp": "...", "type": "offer"}'}),
            content_type="application/json",
        )
    return RTCSessionDescription(sdp=body["sdp"], type="offer"), body


def _check_avatar(srv: Server, name: str | None) -> web.Response | None:
    if name is not None and name not in srv.library.sources:
        return _json_error(
            404, "unknown_avatar", f"no avatar named {name!r}; choose one of {srv.library.names()}"
        )
    return None


@routes.post("/offer")
async def offer(request: web.Request) -> web.Response:
    srv = _server(request)
    desc, body = await _read_offer_json(request)
    name = body.get("avatar") or None
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        hosted = await srv.new_session("webrtc", name)
    except Busy:
        return _busy_response(srv)
    except (AvatarError, OSError, ValueError) as e:
        return _json_error(422, "avatar_failed", str(e))
    sid = hosted.stream.id
    pc = hosted.pc = RTCPeerConnection(srv.rtc_configuration())
    srv._watch_pc(pc, lambda: srv.close_session(sid))
    srv._sink_audio(hosted, pc)

    @pc.on("datachannel")
    def _channel(channel) -> None:
        if channel.label != "control":
            return
        hosted.channel = channel

        def push(stats: dict) -> None:
            if channel.readyState == "open":
                channel.send(json.dumps(stats))

        hosted.stream.on_stats = push

        @channel.on("message")
        def _message(message) -> None:
            async def reply() -> None:
                try:
                    msg = json.loads(message)
                    out = await srv.handle_control(hosted, msg if isinstance(msg, dict) else {})
                except (json.JSONDecodeError, TypeError) as e:
                    out = _error("bad_message", f"not a JSON object: {e}")
                if out is not None and channel.readyState == "open":
                    channel.send(json.dumps(out))

            hosted.tasks.add(srv.spawn(reply()))

    try:
        answer = await srv._answer(pc, desc, send=hosted)
    except (ValueError, RuntimeError) as e:  # a malformed or unusable offer
        await srv.close_session(sid)
        return _json_error(400, "bad_offer", f"could not answer this offer: {e}")
    return web.json_response({"sdp": answer.sdp, "type": "answer", "session": sid})


async def _read_sdp(request: web.Request) -> RTCSessionDescription:
    if request.content_type != "application/sdp":
        raise web.HTTPUnsupportedMediaType(text="WHIP/WHEP offers must be sent as application/sdp")
    return RTCSessionDescription(sdp=await request.text(), type="offer")


def _sdp_created(answer: RTCSessionDescription, location: str) -> web.Response:
    return web.Response(
        status=201,
        text=answer.sdp,
        content_type="application/sdp",
        headers={"Location": location, "Access-Control-Expose-Headers": "Location"},
    )


@routes.post("/whip")
async def whip(request: web.Request) -> web.Response:
    srv = _server(request)
    desc = await _read_sdp(request)
    name = request.query.get("avatar")
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        hosted = await srv.new_session("whip", name)
    except Busy:
        return _busy_response(srv, sdp=True)
    sid = hosted.stream.id
    pc = hosted.pc = RTCPeerConnection(srv.rtc_configuration())
    srv._watch_pc(pc, lambda: srv.close_session(sid))
    srv._sink_audio(hosted, pc)
    try:
        answer = await srv._answer(pc, desc)
    except (ValueError, RuntimeError) as e:
        await srv.close_session(sid)
        return web.Response(status=400, text=f"could not answer this offer: {e}")
    return _sdp_created(answer, f"/whip/{sid}")


@routes.delete("/whip/{sid}")
async def whip_delete(request: web.Request) -> web.Response:
    srv = _server(request)
    hosted = srv.sessions.get(request.match_info["sid"])
    if hosted is None or hosted.kind != "whip":
        return web.Response(status=404, text="no such WHIP session")
    await srv.close_session(hosted.stream.id)
    return web.Response(status=200)


@routes.post("/whep")
@routes.post("/whep/{sid}")
async def whep(request: web.Request) -> web.Response:
    srv = _server(request)
    desc = await _read_sdp(request)
    sid = request.match_info.get("sid")
    hosted = srv.sessions.get(sid) if sid else srv.newest()
    if hosted is None:
        return web.Response(status=404, text="no session to watch: start one (page, WHIP or websocket) first")
    if len(hosted.viewers) >= srv.cfg.max_viewers:
        return web.Response(
            status=503, text="too many viewers for this session", headers={"Retry-After": "5"}
        )
    sid = hosted.stream.id
    vid = uuid.uuid4().hex[:8]
    pc = RTCPeerConnection(srv.rtc_configuration())
    hosted.viewers[vid] = pc

    async def gone() -> None:
        viewer = hosted.viewers.pop(vid, None)
        if viewer is not None:
            await viewer.close()

    srv._watch_pc(pc, gone)
    try:
        answer = await srv._answer(pc, desc, send=hosted)
    except (ValueError, RuntimeError) as e:
        await gone()
        return web.Response(status=400, text=f"could not answer this offer: {e}")
    return _sdp_created(answer, f"/whep/{sid}/{vid}")


@routes.delete("/whep/{sid}/{vid}")
async def whep_delete(request: web.Request) -> web.Response:
    hosted = _server(request).sessions.get(request.match_info["sid"])
    pc = hosted.viewers.pop(request.match_info["vid"], None) if hosted is not None else None
    if pc is None:
        return web.Response(status=404, text="no such WHEP viewer")
    await pc.close()
    return web.Response(status=200)


@routes.route("PATCH", "/whip/{sid}")
@routes.route("PATCH", "/whep/{sid}/{vid}")
async def trickle(request: web.Request) -> web.Response:
    # aiortc gathers all candidates before answering; trickle ICE is not needed
    return web.Response(status=405, text="trickle ICE is not supported: send a complete offer")


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    srv = _server(request)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    name = request.query.get("avatar")
    if name is not None and name not in srv.library.sources:
        await ws.send_json(
            _error("unknown_avatar", f"no avatar named {name!r}; choose one of {srv.library.names()}")
        )
        await ws.close(code=1008, message=b"unknown avatar")
        return ws
    try:
        hosted = await srv.new_session("websocket", name)
    except Busy:
        await ws.send_json(dict(_error("busy", _busy_response(srv).text), max_sessions=srv.cfg.max_sessions))
        await ws.close(code=1013, message=b"busy")
        return ws
    s = hosted.stream
    await ws.send_json({"type": "session", "session": s.id, "whep": f"/whep/{s.id}", "avatar": s.avatar_name})
    fmt = {"sample_rate": 16000, "channels": 1, "format": "s16le"}
    carry = b""
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                arrived = s.clock()
                if s.ended:
                    await ws.send_json(_error("ended", "audio after end is ignored"))
                    continue
                dtype = PCM_FORMATS[fmt["format"]]
                step = dtype.itemsize * fmt["channels"]
                data = carry + msg.data
                usable = len(data) - len(data) % step
                carry = data[usable:]
                if usable:
                    x = np.frombuffer(data[:usable], dtype=dtype).reshape(-1, fmt["channels"])
                    x = x.astype(np.float32) / 32768.0 if dtype.kind == "i" else x.astype(np.float32)
                    s.push_audio(x, fmt["sample_rate"], arrived=arrived)
                while not s.room() and not s.closed:  # backpressure: stop reading while far ahead
                    await asyncio.sleep(0.05)
            elif msg.type == WSMsgType.TEXT:
                try:
                    ctl = json.loads(msg.data)
                    if not isinstance(ctl, dict):
                        raise TypeError("not an object")
                except (json.JSONDecodeError, TypeError) as e:
                    await ws.send_json(_error("bad_message", f"control messages are JSON objects: {e}"))
                    continue
                if ctl.get("type") == "start":
                    new, problem = _pcm_format(ctl, fmt)
                    if problem:
                        await ws.send_json(_error("bad_format", problem))
                    else:
                        fmt, carry = new, b""
                        await ws.send_json({"type": "started", **fmt})
                    continue
                out = await srv.handle_control(hosted, ctl)
                if out is not None:
                    await ws.send_json(out)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await srv.close_session(s.id)
    return ws


def _pcm_format(ctl: dict, old: dict) -> tuple[dict, str | None]:
    new = dict(old)
    try:
        new["sample_rate"] = int(ctl.get("sample_rate", old["sample_rate"]))
        new["channels"] = int(ctl.get("channels", old["channels"]))
    except (TypeError, ValueError):
        return old, "sample_rate and channels must be integers"
    new["format"] = str(ctl.get("format", old["format"]))
    if new["format"] not in PCM_FORMATS:
        return old, f"format must be one of {sorted(PCM_FORMATS)}"
    if not 1000 <= new["sample_rate"] <= 384000:
        return old, f"unsupported sample rate {new['sample_rate']}"
    if not 1 <= new["channels"] <= 8:
        return old, f"unsupported channel count {new['channels']}"
    return new, None


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    srv = _server(request)
    return web.json_response(
        {
            "status": "ok",
            "mode": srv.engine.mode,
            "sessions": len(srv.sessions),
            "max_sessions": srv.cfg.max_sessions,
            "uptime_s": time.time() - srv.started_at,
        }
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=prometheus_text(_server(request)), content_type="text/plain", charset="utf-8")


def _resident_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def prometheus_text(srv: Server) -> str:
    """The server's metrics in the Prometheus text exposition format (0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"{name}{{{lab}}} {value:.6g}" if lab else f"{name} {value:.6g}")

    hosted = list(srv.sessions.values())
    metric("mouthpiece_sessions_active", "gauge", "Sessions running now.", [({}, len(hosted))])
    metric("mouthpiece_sessions_max", "gauge", "Session limit.", [({}, srv.cfg.max_sessions)])
    metric("mouthpiece_sessions_started_total", "counter", "Sessions started.", [({}, srv.started_total)])
    metric(
        "mouthpiece_sessions_rejected_total",
        "counter",
        "Sessions refused (busy).",
        [({}, srv.rejected_total)],
    )
    metric(
        "mouthpiece_viewers_active", "gauge", "WHEP viewers now.", [({}, sum(len(h.viewers) for h in hosted))]
    )
    totals = dict(srv.closed_counts)
    for h in hosted:
        st = h.stream.live.stats
        totals["speech"] += st.speech_frames
        totals["rest"] += st.rest_frames
        totals["dropped"] += st.dropped
        totals["model_calls"] += st.model_calls
        totals["video_sent"] += h.stream.video.sent
    metric(
        "mouthpiece_frames_total",
        "counter",
        "Session frames made, by kind (dropped: windows shed by the latency budget).",
        [({"kind": k}, totals[k]) for k in ("speech", "rest", "dropped")],
    )
    metric(
        "mouthpiece_model_calls_total", "counter", "Session model requests.", [({}, totals["model_calls"])]
    )
    w = srv.engine.worker
    if w is not None:
        ws = w.stats.snapshot()
        metric("mouthpiece_model_batches_total", "counter", "Batched model calls.", [({}, ws["calls"])])
        metric(
            "mouthpiece_model_shared_batches_total",
            "counter",
            "Model calls that served several sessions at once.",
            [({}, ws["shared_calls"])],
        )
        metric(
            "mouthpiece_model_batch_windows",
            "gauge",
            "Mean windows per model call (recent calls).",
            [({}, ws["mean_windows_per_call"])],
        )
    metric(
        "mouthpiece_video_frames_sent_total", "counter", "Video frames sent.", [({}, totals["video_sent"])]
    )
    metric(
        "mouthpiece_session_fps",
        "gauge",
        "Video frames per second sent (last 2 s).",
        [({"session": h.stream.id}, h.stream.fps) for h in hosted],
    )
    metric(
        "mouthpiece_session_dropped",
        "gauge",
        "Windows shed by the latency budget in this session.",
        [({"session": h.stream.id}, h.stream.live.stats.dropped) for h in hosted],
    )
    metric(
        "mouthpiece_session_late_frames",
        "gauge",
        "Video frames that repeated the last image because the model was late.",
        [({"session": h.stream.id}, h.stream.video.late) for h in hosted],
    )
    metric(
        "mouthpiece_process_cpu_seconds_total",
        "counter",
        "CPU time of the server process (user + system, all threads).",
        [({}, time.process_time())],
    )
    rss = _resident_bytes()
    if rss is not None:
        metric("mouthpiece_process_resident_memory_bytes", "gauge", "Resident memory.", [({}, rss)])
    torch = sys.modules.get("torch")  # the models' library, when loaded (never imported here)
    if torch is not None and torch.cuda.is_available():
        used = torch.cuda.is_initialized()
        metric(
            "mouthpiece_gpu_memory_bytes",
            "gauge",
            "GPU memory of this process (PyTorch's allocator: allocated tensors, reserved by the cache).",
            [
                ({"device": str(d), "kind": kind}, fn(d) if used else 0)
                for d in range(torch.cuda.device_count())
                for kind, fn in (
                    ("allocated", torch.cuda.memory_allocated),
                    ("reserved", torch.cuda.memory_reserved),
                )
            ],
        )
    name = "mouthpiece_stage_latency_seconds"
    lines.append(f"# HELP {name} Per-stage latency over the active sessions' recent frames.")
    lines.append(f"# TYPE {name} summary")
    for stage in STAGES:
        vals = [v for h in hosted for v in h.stream.latency[stage]]
        if not vals:
            continue
        arr = np.asarray(vals)
        for q in (0.5, 0.95, 0.99):
            lines.append(f'{name}{{stage="{stage}",quantile="{q}"}} {np.quantile(arr, q):.6g}')
        lines.append(f'{name}_sum{{stage="{stage}"}} {arr.sum():.6g}')
        lines.append(f'{name}_count{{stage="{stage}"}} {arr.size}')
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# App and entry point
# ---------------------------------------------------------------------------------------------


def create_app(cfg: ServerConfig, engine: ModelEngine | None = None, library: AvatarLibrary | None = None):
    """The aiohttp application (models and avatars loaded from ``cfg`` unless given)."""
    # The live front end makes a small numpy matmul every 20 ms; an idle multi-threaded OpenBLAS
    # pool spins between them and burns most of a core. One BLAS thread is faster for these sizes.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    engine = engine or ModelEngine.from_config(cfg)
    library = library or AvatarLibrary.from_config(cfg)
    server = Server(cfg, engine, library)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app[SERVER] = server
    app.add_routes(routes)
    if WEB_CLIENT.is_dir():
        app.router.add_static("/static/", WEB_CLIENT)
    app.on_startup.append(server.startup)
    app.on_shutdown.append(server.shutdown)
    return app


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, host: str = "127.0.0.1"):
    """Run ``app`` on ``host`` at a free port for the block (tests, benchmarks, the bench tool's
    local mode); yields its base URL (no trailing slash)."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        h, port = runner.addresses[0][:2]
        yield f"http://{h}:{port}"
    finally:
        await runner.cleanup()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--avatar", action="append", default=[], metavar="FILE", help="an avatar video or image (repeat)"
    )
    p.add_argument("--avatar-dir", metavar="DIR", help="offer every video / image in this folder")
    p.add_argument("--default-avatar", metavar="NAME", help="avatar of new sessions (default: the first)")
    p.add_argument("--refs", default="5", metavar="N|auto", help="renderer references per avatar (default 5)")
    p.add_argument("--cache", default=None, help="avatar cache folder")
    p.add_argument(
        "--landmark-checkpoint", metavar="P", help="default: checkpoints/landmarkgenerator_checkpoint.pth"
    )
    p.add_argument("--renderer-checkpoint", metavar="P", help="default: checkpoints/renderer_checkpoint.pth")
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        metavar="DIR",
        help="where to look for both checkpoints (e.g. the output of mouthpiece train presenter)",
    )
    p.add_argument(
        "--random-weights", action="store_true", help="stand-in weights (noise faces; demos, tests)"
    )
    p.add_argument(
        "--renderer",
        default="auto",
        choices=("auto", "neural", "retrieval", "none"),
        help="auto (neural on a GPU with both weights, else the retrieval preview), neural, retrieval, none",
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    p.add_argument("--backend", default="fast", choices=("fast", "plain", "cuda-graph", "onnx"))
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--batch", type=int, default=2, help="max windows a session sends per request (default 2)")
    p.add_argument(
        "--max-batch", type=int, default=16, help="max windows per model call, across sessions (default 16)"
    )
    p.add_argument(
        "--delay-ms", type=float, default=400.0, help="audio in -> lips and audio out (default 400)"
    )
    p.add_argument("--max-sessions", type=int, default=4, help="concurrent sessions (default 4)")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN URL (repeat)")
    p.add_argument("--loopback", action="store_true", help="ICE on 127.0.0.1 only (local demos and tests)")
    p.add_argument(
        "--mic-prefetch",
        type=int,
        default=2,
        metavar="N",
        help="20 ms microphone packets buffered before decoding (default 2; more on jittery networks)",
    )
    p.add_argument("--no-speech-gate", action="store_true", help="animate silence too (as the authors)")
    p.add_argument("-v", "--verbose", action="store_true")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    refs = args.refs if args.refs == "auto" else int(args.refs)
    live = LiveConfig(batch=args.batch, speech_gate=not args.no_speech_gate)
    return ServerConfig(
        host=args.host,
        port=args.port,
        avatars=tuple(args.avatar),
        avatar_dir=args.avatar_dir,
        default_avatar=args.default_avatar,
        refs=refs,
        cache_dir=args.cache,
        landmark_checkpoint=args.landmark_checkpoint,
        renderer_checkpoint=args.renderer_checkpoint,
        checkpoint_dir=getattr(args, "checkpoint_dir", None) or "checkpoints",
        random_weights=args.random_weights,
        renderer=args.renderer,
        device=args.device,
        backend=args.backend,
        precision=args.precision,
        max_sessions=args.max_sessions,
        max_batch=args.max_batch,
        ice_servers=tuple(args.ice_server),
        loopback=args.loopback,
        mic_prefetch=args.mic_prefetch,
        stream=StreamConfig(delay_ms=args.delay_ms, live=live),
    )


def serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    cfg = config_from_args(args)
    app = create_app(cfg)
    server: Server = app[SERVER]
    print(
        f"mouthpiece: mode {server.engine.mode} on {server.engine.device}; avatars {server.library.names()}"
    )
    if server.engine.message:
        print(f"mouthpiece: {server.engine.message}")
    print(f"mouthpiece: open http://{cfg.host}:{cfg.port}/ (Ctrl+C to stop)", flush=True)
    web.run_app(app, host=cfg.host, port=cfg.port, print=None, handle_signals=True)
    return 0
