"""WebRTC: the browser's ``POST /offer`` (microphone in; avatar video and delayed audio out; the
data channel ``control``), WHIP ingest (RFC 9725: ``POST /whip``, ``DELETE /whip/{session}``) and
WHEP viewers (the WHEP draft: ``POST /whep[/{session}]``, ``DELETE /whep/{session}/{viewer}``);
docs/api.md has the requests and answers.

Offers are checked before anything is created (:func:`parse_offer`: UTF-8 SDP with media; WHIP
must send audio, WHEP must receive audio or video): a bad one gets 400 and a one-line message,
never an exception text. An offer is answered with exactly its m-lines (:func:`answer_offer`):
a viewer gets the session's video and audio only on the m-lines that ask to receive them (a
video-only or audio-only WHEP player works), and no data channel unless offered. The 201 answers
carry ``Location``, an ``ETag`` (the answer's ICE ufrag) and the ICE servers as ``Link: <url>;
rel="ice-server"`` headers (:func:`ice_links`), which ``OPTIONS`` on every WHIP / WHEP path also
gives. aiortc gathers every candidate before it answers, so trickle ICE and ICE restarts are not
supported: ``PATCH`` is answered 405 with ``Allow``. Each peer connection is watched
(:func:`watch_pc`): ICE or DTLS failed, closed, ICE not connected within :data:`ICE_TIMEOUT_S`,
or DTLS not up :data:`DTLS_TIMEOUT_S` after ICE connected, ends the session or viewer. A session's
first audio track feeds it through a :class:`~streaming.tracks.MicrophoneSink` with the
configured jitter buffer prefetch, and the session ends with that track; any other track is read
and discarded. WHIP sessions and WHEP viewers that ended are remembered for a while
(:meth:`~streaming.registry.Server.ended_recently`): their DELETE is answered 200."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.contrib.media import MediaBlackhole

from streaming.aiortc_compat import hand_on_frames_at_once, set_audio_prefetch
from streaming.avatars import AvatarUnavailable
from streaming.control import MAX_CONTROL_BYTES, BadInput, Fields, channel_reply, error, loads_object, shown
from streaming.registry import Busy, Hosted, Server, busy_response, json_error, server_of
from streaming.tracks import MicrophoneSink

__all__ = [
    "DTLS_TIMEOUT_S",
    "ICE_TIMEOUT_S",
    "MAX_OFFER_BYTES",
    "OfferError",
    "answer_offer",
    "ice_links",
    "parse_offer",
    "routes",
    "sink_audio",
    "watch_pc",
]

log = logging.getLogger("mouthpiece.server")

SDP_TYPE = "application/sdp"
MAX_OFFER_BYTES = 64 * 1024  # an SDP offer is a few kB; more is refused (413)
MAX_OFFER_JSON_BYTES = MAX_OFFER_BYTES + MAX_CONTROL_BYTES  # /offer: the SDP in JSON, and the rest
BODY_TIMEOUT_S = 10.0  # a request body that has not arrived by then is refused (408)
# aioice reports ICE failed only when every check has gone unanswered for ~40 s (its STUN
# retransmissions), so the server keeps its own deadlines: ICE connected within ICE_TIMEOUT_S of
# the answer (a working path takes well under 2 s, relays included), then DTLS up within
# DTLS_TIMEOUT_S (a stalled handshake); both within connect_timeout_s
ICE_TIMEOUT_S = 10.0
DTLS_TIMEOUT_S = 5.0
RETRY_AFTER_S = 2  # POST /whep with no session yet: try again after this
MEDIA_KINDS = ("audio", "video")
RECEIVES = ("recvonly", "sendrecv")  # directions of an offer's m-line that ask to receive
SENDS = ("sendonly", "sendrecv")
UNANSWERABLE = (
    "could not answer this offer (it needs ICE credentials, a DTLS fingerprint and Opus audio or "
    "VP8 / H.264 video)"
)
# the methods of each WHIP / WHEP path (PATCH, trickle ICE and ICE restarts, is not supported)
ENDPOINT_METHODS = "OPTIONS, POST"
RESOURCE_METHODS = "DELETE, OPTIONS"


class OfferError(Exception):
    """An offer that cannot be answered; ``str()`` is a one-line message for the client."""


# ---- offers --------------------------------------------------------------------------------------


def parse_offer(body: bytes, need: str) -> tuple[RTCSessionDescription, sdp.SessionDescription]:
    """Check an SDP offer before anything is made for it. ``need``: ``"send-audio"`` (WHIP: an
    audio m-line the client sends), ``"receive"`` (WHEP: an audio or video m-line the client
    receives) or ``""``. Returns the description to answer and its parse; OfferError (with a
    plain message) otherwise."""
    if not body.strip():
        raise OfferError("the offer is empty: send an SDP offer")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OfferError("the offer is not UTF-8 text: send an SDP offer") from None
    if not text.lstrip().startswith("v=0"):
        raise OfferError("the offer is not SDP (it must start with v=0)")
    try:
        parsed = sdp.SessionDescription.parse(text)
    except Exception:  # aiortc's parser fails with assorted errors on malformed lines
        raise OfferError("the offer is not valid SDP") from None
    media = [m for m in parsed.media if m.kind in MEDIA_KINDS]
    if not parsed.media:
        raise OfferError("the offer has no media (m=) lines")
    for m in parsed.media:
        if not (m.ice.usernameFragment and m.ice.password):
            raise OfferError("the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)")
    if need == "send-audio" and not any(m.kind == "audio" and _direction(m) in SENDS for m in media):
        raise OfferError("a WHIP offer must send audio (an audio m-line, sendonly or sendrecv)")
    if need == "receive" and not any(_direction(m) in RECEIVES for m in media):
        raise OfferError("a WHEP offer must receive audio or video (a recvonly or sendrecv m-line)")
    return RTCSessionDescription(sdp=text, type="offer"), parsed


def _direction(m) -> str:
    return m.direction or "sendrecv"


async def answer_offer(
    pc: RTCPeerConnection, offer: RTCSessionDescription, send: Hosted | None = None
) -> RTCSessionDescription:
    """Answer ``offer`` with exactly its m-lines; with ``send``, the session's video and delayed
    audio go out on the first video and the first audio m-line that ask to receive (a new viewer
    of that session). OfferError (a plain message; the cause is logged) when it cannot be answered."""
    try:
        await pc.setRemoteDescription(offer)
        if send is not None:
            _attach(pc, offer, send)
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as e:  # aiortc raises ValueError and its own errors for offers it cannot take
        log.info("an offer could not be answered: %s: %s", type(e).__name__, e)
        raise OfferError(UNANSWERABLE) from None
    return pc.localDescription


def _attach(pc: RTCPeerConnection, offer: RTCSessionDescription, send: Hosted) -> None:
    receives = {
        m.rtp.muxId: m.kind
        for m in sdp.SessionDescription.parse(offer.sdp).media
        if m.kind in MEDIA_KINDS and _direction(m) in RECEIVES
    }
    video, audio = send.stream.subscribe()
    tracks = {"video": video, "audio": audio}
    for transceiver in pc.getTransceivers():
        kind = receives.get(transceiver.mid)
        track = tracks.pop(kind, None) if kind else None
        if track is None:
            continue
        transceiver.sender.replaceTrack(track)
        transceiver.direction = (
            "sendrecv" if transceiver.direction in ("recvonly", "sendrecv") else "sendonly"
        )
        if kind == "video":
            send.stream.watch_sender(transceiver.sender)  # the encode and send stages
    for track in tracks.values():  # a kind the offer does not receive
        track.stop()


def ice_links(srv: Server) -> list[str]:
    """The configured ICE servers as ``Link`` header values (RFC 9725 section 4.6):
    ``<turn:host?transport=udp>; rel="ice-server"; username="u"; credential="c";
    credential-type="password"``."""
    links = []
    for server in srv.rtc_configuration().iceServers or []:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        secrets = f"{getattr(server, 'username', '') or ''}{getattr(server, 'credential', '') or ''}"
        if any(c in secrets for c in "\r\n"):  # cannot be a header value
            continue
        for url in urls:
            if not url or any(c in url for c in '<> "\r\n'):
                continue
            link = f'<{url}>; rel="ice-server"'
            if getattr(server, "username", None):
                link += f"; username={_quoted(server.username)}"
            if getattr(server, "credential", None):
                link += f'; credential={_quoted(server.credential)}; credential-type="password"'
            links.append(link)
    return links


def _quoted(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---- peers ---------------------------------------------------------------------------------------


def watch_pc(srv: Server, pc: RTCPeerConnection, on_gone) -> None:
    """Call ``on_gone`` once when ``pc`` fails (ICE or DTLS) or closes, when its ICE has not
    connected :data:`ICE_TIMEOUT_S` after the answer (a peer that left, or whose checks fail),
    when its DTLS is not up :data:`DTLS_TIMEOUT_S` after ICE connected (a stalled or refused
    handshake), or when it is not connected ``connect_timeout_s`` after the answer."""
    ice_up, connected = asyncio.Event(), asyncio.Event()
    state = {"gone": False}

    def end(why: str) -> None:
        ice_up.set()
        connected.set()
        if not state["gone"]:
            state["gone"] = True
            log.info("a peer %s: closing it", why)
            srv.spawn(on_gone())

    @pc.on("iceconnectionstatechange")
    async def _ice() -> None:
        if pc.iceConnectionState == "completed":
            ice_up.set()
        elif pc.iceConnectionState == "failed":
            end("failed ICE")

    @pc.on("connectionstatechange")
    async def _state() -> None:
        if pc.connectionState == "connected":
            ice_up.set()
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            end(f"is {pc.connectionState}")

    async def deadline() -> None:
        loop = asyncio.get_running_loop()
        limit = loop.time() + srv.cfg.connect_timeout_s
        ice_limit = min(ICE_TIMEOUT_S, srv.cfg.connect_timeout_s)
        try:
            await asyncio.wait_for(ice_up.wait(), ice_limit)
        except TimeoutError:
            end(f"did not connect (ICE) within {ice_limit:.0f} s")
            return
        try:
            await asyncio.wait_for(connected.wait(), max(0.0, min(DTLS_TIMEOUT_S, limit - loop.time())))
        except TimeoutError:
            end("did not complete DTLS after ICE connected")

    srv.spawn(deadline())


def sink_audio(srv: Server, hosted: Hosted, pc: RTCPeerConnection) -> None:
    """Feed the first remote audio track of ``pc`` into the session; discard other tracks.
    When the audio track ends (the peer hung up), the session is closed."""

    @pc.on("track")
    def _track(track) -> None:
        if track.kind == "audio" and not hosted.sinks:
            # aiortc holds 4 audio packets (80 ms) before decoding; on a LAN fewer are enough, and none
            # (0: each packet decoded as it comes) where the playout delay covers the network's jitter
            # (no public setting: the receiver's jitter buffer is changed if it is where expected)
            receiver = _receiver_of(pc, track)
            if srv.cfg.mic_prefetch == 0:
                hand_on_frames_at_once(receiver)
            else:
                set_audio_prefetch(receiver, srv.cfg.mic_prefetch)
            sink = MicrophoneSink(hosted.stream, track)
            hosted.sinks.append(sink)
            task = sink.start()
            task.add_done_callback(lambda _t: srv.spawn(srv.close_session(hosted.stream.id)))
        else:
            hole = MediaBlackhole()
            hole.addTrack(track)
            hosted.tasks.add(srv.spawn(_drain(hole)))


def _receiver_of(pc: RTCPeerConnection, track):
    return next((t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None)


async def _drain(hole: MediaBlackhole) -> None:
    await hole.start()
    try:
        await asyncio.Event().wait()
    finally:
        await hole.stop()


# ---- the browser's /offer ------------------------------------------------------------------------

routes = web.RouteTableDef()


async def read_body(request: web.Request, limit: int, what: str = "the body") -> bytes:
    """The request body, at most ``limit`` bytes (413 otherwise, from its ``Content-Length`` before
    anything is read) and within :data:`BODY_TIMEOUT_S` (408: a body that never comes, or comes a
    byte at a time, does not hold the handler)."""
    if request.content_length is not None and request.content_length > limit:
        raise BadInput(f"{what} is too large: at most {limit // 1024} KiB", "too_large", 413)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while size <= limit:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except TimeoutError:
        raise BadInput(f"{what} did not arrive within {BODY_TIMEOUT_S:.0f} s", "timeout", 408) from None
    if size > limit:
        raise BadInput(f"{what} is too large: at most {limit // 1024} KiB", "too_large", 413)
    return b"".join(chunks)


async def _read_offer_json(request: web.Request) -> tuple[RTCSessionDescription, str | None]:
    """The offer and the avatar name of a ``POST /offer`` body (:class:`BadInput` otherwise)."""
    limit = MAX_OFFER_JSON_BYTES
    body = loads_object(await read_body(request, limit), "the body", "bad_request", limit)
    # JSON sent as text/plain (or a form type) is a cross-site "simple" request, which browsers make
    # without asking the server first (no CORS preflight): it must never start a session
    if request.content_type != "application/json":
        raise BadInput("send the offer as application/json", "unsupported_media_type", 415)
    f = Fields(body, "bad_request")
    expected = 'expected {"sdp": "...", "type": "offer"}'
    if body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
        raise BadInput(expected)
    name = f.text("avatar", must="a string (the name of an avatar)") or None
    return RTCSessionDescription(sdp=body["sdp"], type="offer"), name


def _check_avatar(srv: Server, name: str | None) -> web.Response | None:
    if name is not None and name not in srv.library.sources:
        return json_error(
            404, "unknown_avatar", f"no avatar named {shown(name)}; choose one of {srv.library.available()}"
        )
    return None


@routes.post("/offer")
async def offer(request: web.Request) -> web.Response:
    srv = server_of(request)
    desc, name = await _read_offer_json(request)
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        srv.check_room()  # busy first (a client retrying a full server learns that)
        parse_offer(desc.sdp.encode(), "")  # then the offer, before anything is made for it
        hosted = await srv.new_session("webrtc", name)
    except OfferError as e:
        return json_error(400, "bad_offer", str(e))
    except Busy:
        return busy_response(srv)
    except AvatarUnavailable as e:
        return json_error(422, e.code, e.message)
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
        turns = {"on": False}  # playback_started / playback_finished as they happen, once asked for

        def set_turns(on: bool) -> None:
            turns["on"] = on

        def push_turn(event: dict) -> None:
            if turns["on"]:
                push(event)

        hosted.stream.turn_listeners.append(push_turn)

        @channel.on("message")
        def _message(message) -> None:
            async def reply() -> None:
                try:
                    out = await channel_reply(srv, hosted, message, set_turns)
                except Exception:  # a bug: the client gets a plain line, the log the traceback
                    log.exception("session %s: a data channel message could not be handled", sid)
                    out = error("internal", "the server could not handle this message")
                if out is not None and channel.readyState == "open":
                    channel.send(json.dumps(out))

            hosted.tasks.add(srv.spawn(reply()))

    try:
        answer = await answer_offer(pc, desc, send=hosted)
    except OfferError as e:
        await srv.close_session(sid)
        return json_error(400, "bad_offer", str(e))
    return web.json_response({"sdp": answer.sdp, "type": "answer", "session": sid})


# ---- WHIP and WHEP -------------------------------------------------------------------------------


def _plain(status: int, message: str, headers=None) -> web.Response:
    return web.Response(status=status, text=message, headers=headers)


async def _read_sdp(request: web.Request) -> bytes:
    if request.content_type != SDP_TYPE:
        raise web.HTTPUnsupportedMediaType(text="WHIP/WHEP offers must be sent as application/sdp")
    try:
        return await read_body(request, MAX_OFFER_BYTES, "the offer")
    except BadInput as e:  # WHIP and WHEP answer errors as text
        if e.status == 413:
            size = request.content_length or 0
            raise web.HTTPRequestEntityTooLarge(MAX_OFFER_BYTES, size, text=e.message) from None
        raise web.HTTPRequestTimeout(text=e.message) from None


def _with_links(srv: Server, headers: dict | None = None) -> list[tuple[str, str]]:
    return [*(headers or {}).items(), *(("Link", link) for link in ice_links(srv))]


def _sdp_created(srv: Server, answer: RTCSessionDescription, location: str) -> web.Response:
    ufrag = re.search(r"^a=ice-ufrag:(\S+)", answer.sdp, re.MULTILINE)
    etag = f'"{ufrag.group(1) if ufrag else uuid.uuid4().hex}"'
    return web.Response(
        status=201,
        text=answer.sdp,
        content_type=SDP_TYPE,
        headers=_with_links(srv, {"Location": location, "ETag": etag}),
    )


@routes.route("OPTIONS", "/whip")
@routes.route("OPTIONS", "/whep")
@routes.route("OPTIONS", "/whep/{sid}")
async def endpoint_options(request: web.Request) -> web.Response:
    # the ICE servers (and, for a browser on an allowed origin, the CORS preflight: app.py)
    return web.Response(status=204, headers=_with_links(server_of(request), {"Allow": ENDPOINT_METHODS}))


@routes.route("OPTIONS", "/whip/{sid}")
@routes.route("OPTIONS", "/whep/{sid}/{vid}")
async def resource_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=_with_links(server_of(request), {"Allow": RESOURCE_METHODS}))


@routes.post("/whip")
async def whip(request: web.Request) -> web.Response:
    srv = server_of(request)
    body = await _read_sdp(request)
    try:
        desc, _ = parse_offer(body, "send-audio")
    except OfferError as e:
        return _plain(400, str(e))
    name = request.query.get("avatar")
    bad = _check_avatar(srv, name)
    if bad is not None:
        return bad
    try:
        hosted = await srv.new_session("whip", name)
    except Busy:
        return busy_response(srv, sdp=True)
    except AvatarUnavailable as e:
        return _plain(422, e.message)
    sid = hosted.stream.id
    pc = hosted.pc = RTCPeerConnection(srv.rtc_configuration())
    watch_pc(srv, pc, lambda: srv.close_session(sid))
    sink_audio(srv, hosted, pc)
    try:
        answer = await answer_offer(pc, desc)
    except OfferError as e:
        await srv.close_session(sid)
        return _plain(400, str(e))
    return _sdp_created(srv, answer, f"/whip/{sid}")


@routes.delete("/whip/{sid}")
async def whip_delete(request: web.Request) -> web.Response:
    srv = server_of(request)
    sid = request.match_info["sid"]
    hosted = srv.sessions.get(sid)
    if hosted is None or hosted.kind != "whip":
        if srv.ended_recently(f"/whip/{sid}"):
            return _plain(200, "the WHIP session had ended")
        return _plain(404, "no such WHIP session")
    await srv.close_session(sid)
    return web.Response(status=200)


@routes.post("/whep")
@routes.post("/whep/{sid}")
async def whep(request: web.Request) -> web.Response:
    srv = server_of(request)
    body = await _read_sdp(request)
    sid = request.match_info.get("sid")
    hosted = srv.sessions.get(sid) if sid else srv.newest()
    if hosted is None and sid:
        return _plain(404, "no such session (it may have ended)")
    if hosted is None:
        return _plain(
            404,
            "no session to watch yet: start one (page, WHIP or websocket), then try again",
            {"Retry-After": str(RETRY_AFTER_S)},
        )
    if len(hosted.viewers) >= srv.cfg.max_viewers:
        return _plain(503, "too many viewers for this session", {"Retry-After": "5"})
    try:
        desc, _ = parse_offer(body, "receive")
    except OfferError as e:
        return _plain(400, str(e))
    sid = hosted.stream.id
    vid = secrets.token_urlsafe(16)  # 128 random bits: the viewer's URL is unguessable
    pc = RTCPeerConnection(srv.rtc_configuration())
    hosted.viewers[vid] = pc

    drains: set[asyncio.Task] = set()

    async def gone() -> None:
        viewer = hosted.viewers.pop(vid, None)
        if viewer is not None:
            srv.mark_ended(f"/whep/{sid}/{vid}")
            await viewer.close()
            srv.collect()  # the viewer's peer connection is a reference cycle: free it now
        for t in list(drains):
            t.cancel()

    watch_pc(srv, pc, gone)

    @pc.on("track")
    def _track(track) -> None:  # a sendrecv offer's media: read and discarded, until the viewer goes
        hole = MediaBlackhole()
        hole.addTrack(track)
        drains.add(srv.spawn(_drain(hole)))

    try:
        answer = await answer_offer(pc, desc, send=hosted)
    except OfferError as e:
        await gone()
        if hosted.closing.is_set():  # the session ended while answering (its tracks with it)
            return _plain(404, "no such session (it has ended)")
        return _plain(400, str(e))
    if hosted.closing.is_set() or srv.sessions.get(sid) is not hosted:  # it ended while answering
        await gone()
        return _plain(404, "no such session (it has ended)")
    return _sdp_created(srv, answer, f"/whep/{sid}/{vid}")


@routes.delete("/whep/{sid}/{vid}")
async def whep_delete(request: web.Request) -> web.Response:
    srv = server_of(request)
    sid, vid = request.match_info["sid"], request.match_info["vid"]
    hosted = srv.sessions.get(sid)
    pc = hosted.viewers.pop(vid, None) if hosted is not None else None
    if pc is None:
        if srv.ended_recently(f"/whep/{sid}/{vid}"):
            return _plain(200, "the WHEP viewer had ended")
        return _plain(404, "no such WHEP viewer")
    srv.mark_ended(f"/whep/{sid}/{vid}")
    await pc.close()
    srv.collect()
    return web.Response(status=200)


@routes.route("PATCH", "/whip/{sid}")
@routes.route("PATCH", "/whep/{sid}/{vid}")
async def trickle(request: web.Request) -> web.Response:
    # aiortc gathers every candidate before it answers: no trickle ICE, no ICE restart (RFC 9725
    # section 4.3.1: a resource that supports PATCH for neither answers 405)
    return _plain(
        405,
        "trickle ICE and ICE restarts are not supported: send a complete offer",
        {"Allow": RESOURCE_METHODS},
    )
