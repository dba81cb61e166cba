"""WebRTC: the browser's ``POST /offer`` (microphone in; avatar video and delayed audio out; the
data channel ``control``), WHIP ingest (``POST /whip``, ``DELETE /whip/{session}``) and WHEP
viewers (``POST /whep[/{session}]``, ``DELETE /whep/{session}/{viewer}``); docs/api.md has the
requests and answers. Each session's peer connection is watched (:func:`watch_pc`: failed, closed
or never connected within ``connect_timeout_s`` ends the session or viewer); its first audio track
feeds the session through a :class:`~streaming.tracks.MicrophoneSink` with the configured jitter
buffer prefetch, and the session ends with that track; any other track is read and discarded.
Viewers get proxies of the session's tracks (:func:`answer_offer`). aiortc gathers every candidate
before it answers, so trickle ICE (PATCH) is refused."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaBlackhole

from engine.core.avatar import AvatarError
from streaming.aiortc_compat import set_audio_prefetch
from streaming.control import channel_reply
from streaming.registry import Busy, Hosted, Server, busy_response, json_error, server_of
from streaming.tracks import MicrophoneSink

__all__ = ["answer_offer", "routes", "sink_audio", "watch_pc"]

log = logging.getLogger("mouthpiece.server")


def watch_pc(srv: Server, pc: RTCPeerConnection, on_gone) -> None:
    """Call ``on_gone`` when ``pc`` fails or closes, or has not connected ``connect_timeout_s``
    after the answer (a peer that left during ICE)."""
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    async def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()
        if pc.connectionState in ("failed", "closed"):
            connected.set()
            srv.spawn(on_gone())

    async def deadline() -> None:
        try:
            await asyncio.wait_for(connected.wait(), srv.cfg.connect_timeout_s)
        except TimeoutError:
            log.info("a peer did not connect within %.0f s: closing it", srv.cfg.connect_timeout_s)
            await on_gone()

    srv.spawn(deadline())


def sink_audio(srv: Server, hosted: Hosted, pc: RTCPeerConnection) -> None:
    """Feed the first remote audio track of ``pc`` into the session; discard other tracks.
    When the audio track ends (the peer hung up), the session is closed."""

    @pc.on("track")
    def _track(track) -> None:
        if track.kind == "audio" and not hosted.sinks:
            # aiortc holds 4 audio packets (80 ms) before decoding; on a LAN fewer are enough (no
            # public setting: the receiver's jitter buffer is changed if it is where expected)
            set_audio_prefetch(_receiver_of(pc, track), srv.cfg.mic_prefetch)
            sink = MicrophoneSink(hosted.stream, track)
            hosted.sinks.append(sink)
            task = sink.start()
            task.add_done_callback(lambda _t: srv.spawn(srv.close_session(hosted.stream.id)))
        else:
            hole = MediaBlackhole()
            hole.addTrack(track)
            hosted.tasks.add(srv.spawn(_drain(hole)))


async def answer_offer(
    pc: RTCPeerConnection, offer: RTCSessionDescription, send: Hosted | None = None
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


def _receiver_of(pc: RTCPeerConnection, track):
    return next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)


async def _drain(hole: MediaBlackhole) -> None:
    await hole.start()
    try:
        await asyncio.Event().wait()
    finally:
        await hole.stop()


routes = web.RouteTableDef()


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
        return json_error(
            404, "unknown_avatar", f"no avatar named {name!r}; choose one of {srv.library.names()}"
        )
    return None


@routes.post("/offer")
async def offer(request: web.Request) -> web.Response:
    srv = server_of(request)
    desc, body = await _read_offer_json(request)
    name = body.get("avatar") or None
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        hosted = await srv.new_session("webrtc", name)
    except Busy:
        return busy_response(srv)
    except (AvatarError, OSError, ValueError) as e:
        return json_error(422, "avatar_failed", str(e))
    sid = hosted.stream.id
    pc = hosted.pc = RTCPeerConnection(srv.rtc_configuration())
    watch_pc(srv, pc, lambda: srv.close_session(sid))
    sink_audio(srv, hosted, pc)

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
                out = await channel_reply(srv, hosted, message)
                if out is not None and channel.readyState == "open":
                    channel.send(json.dumps(out))

            hosted.tasks.add(srv.spawn(reply()))

    try:
        answer = await answer_offer(pc, desc, send=hosted)
    except (ValueError, RuntimeError) as e:  # a malformed or unusable offer
        await srv.close_session(sid)
        return json_error(400, "bad_offer", f"could not answer this offer: {e}")
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
    srv = server_of(request)
    desc = await _read_sdp(request)
    name = request.query.get("avatar")
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        hosted = await srv.new_session("whip", name)
    except Busy:
        return busy_response(srv, sdp=True)
    sid = hosted.stream.id
    pc = hosted.pc = RTCPeerConnection(srv.rtc_configuration())
    watch_pc(srv, pc, lambda: srv.close_session(sid))
    sink_audio(srv, hosted, pc)
    try:
        answer = await answer_offer(pc, desc)
    except (ValueError, RuntimeError) as e:
        await srv.close_session(sid)
        return web.Response(status=400, text=f"could not answer this offer: {e}")
    return _sdp_created(answer, f"/whip/{sid}")


@routes.delete("/whip/{sid}")
async def whip_delete(request: web.Request) -> web.Response:
    srv = server_of(request)
    hosted = srv.sessions.get(request.match_info["sid"])
    if hosted is None or hosted.kind != "whip":
        return web.Response(status=404, text="no such WHIP session")
    await srv.close_session(hosted.stream.id)
    return web.Response(status=200)


@routes.post("/whep")
@routes.post("/whep/{sid}")
async def whep(request: web.Request) -> web.Response:
    srv = server_of(request)
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

    watch_pc(srv, pc, gone)
    try:
        answer = await answer_offer(pc, desc, send=hosted)
    except (ValueError, RuntimeError) as e:
        await gone()
        return web.Response(status=400, text=f"could not answer this offer: {e}")
    return _sdp_created(answer, f"/whep/{sid}/{vid}")


@routes.delete("/whep/{sid}/{vid}")
async def whep_delete(request: web.Request) -> web.Response:
    hosted = server_of(request).sessions.get(request.match_info["sid"])
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
