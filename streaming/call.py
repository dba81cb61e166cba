"""The call demo (docs/calls.md): ``GET /call`` is its page (``web_client/call.html``) and
``GET /call/ws?room=NAME`` its signalling: a websocket that relays the WebRTC offer, answer and ICE
candidates between the two peers of a room. The media goes peer to peer between the browsers; the
server only passes these few messages (and the avatar, when a peer switches its camera to it, is a
session of its own, POST /offer).

**Messages.** The server's first message is ``{"type": "joined", "room", "peers", "polite"}``
(``peers``: how many are in the room with this one; ``polite``: whether this peer yields when both
offer at once, the "perfect negotiation" pattern of the WebRTC specification); the other peer gets
``{"type": "peer_joined"}``, and ``{"type": "peer_left"}`` when this one leaves. A client sends JSON
objects, read with :class:`~streaming.control.Fields` and relayed (rebuilt from the fields read,
never forwarded as received) to the other peer:

- ``{"type": "description", "description": {"type": "offer" | "answer" | "rollback", "sdp"}}``;
- ``{"type": "candidate", "candidate": {"candidate", "sdpMid"?, "sdpMLineIndex"?,
  "usernameFragment"?}}`` (null: the end of candidates);
- ``{"type": "state", "camera": "camera" | "avatar" | "off", "microphone": bool}`` (shown to the
  other side).

Anything else is answered ``{"type": "error", "error": "bad_message", "message"}`` (one plain
sentence) and the socket stays open; a message while alone in the room is answered ``no_peer``.

**Bounds.** At most :data:`PEERS_PER_ROOM` peers in a room (a third gets 409 ``room_full``), at
most :data:`MAX_ROOMS` rooms (then 503 ``busy``); a room is removed when its last peer leaves; a
message may be at most :data:`MAX_MESSAGE_BYTES` (larger: close code 1009); a peer that does not
answer pings for :data:`HEARTBEAT_S` is gone. The room name is 1-64 letters, digits, ``-`` or
``_`` (else 400 ``bad_request``). The token and Origin checks are :mod:`streaming.security`'s, as
on every endpoint (the websocket takes ``?token=``); at shutdown every call socket is closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, WSMsgType, web

from streaming.config import WEB_CLIENT
from streaming.control import BadInput, Fields, error, loads_object, shown
from streaming.registry import json_error

__all__ = ["MAX_MESSAGE_BYTES", "MAX_ROOMS", "PEERS_PER_ROOM", "CallRooms", "setup"]

log = logging.getLogger("mouthpiece.server")

PEERS_PER_ROOM = 2
MAX_ROOMS = 64
MAX_MESSAGE_BYTES = 64 * 1024  # an SDP offer of audio, video and a data channel is a few kB
MAX_SDP_CHARS = 60 * 1024
HEARTBEAT_S = 20.0
ROOM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
DESCRIPTION_TYPES = ("offer", "answer", "rollback")
CAMERAS = ("camera", "avatar", "off")
MESSAGE_TYPES = ("description", "candidate", "state")

ROOMS: web.AppKey[CallRooms] = web.AppKey("mouthpiece_call_rooms")
routes = web.RouteTableDef()


@dataclass
class CallRooms:
    """The rooms of the call demo: name -> the sockets of its peers (in the order they joined)."""

    rooms: dict[str, list[web.WebSocketResponse]] = field(default_factory=dict)

    def join(self, name: str, ws: web.WebSocketResponse) -> list[web.WebSocketResponse]:
        peers = self.rooms.setdefault(name, [])
        peers.append(ws)
        return peers

    def leave(self, name: str, ws: web.WebSocketResponse) -> web.WebSocketResponse | None:
        """Remove ``ws`` from its room (the room too when it is empty); the peer left behind."""
        peers = self.rooms.get(name, [])
        if ws in peers:
            peers.remove(ws)
        if not peers:
            self.rooms.pop(name, None)
            return None
        return peers[0]

    def other(self, name: str, ws: web.WebSocketResponse) -> web.WebSocketResponse | None:
        return next((p for p in self.rooms.get(name, []) if p is not ws), None)

    async def close_all(self, _app=None) -> None:
        sockets = [ws for peers in self.rooms.values() for ws in peers]
        for ws in sockets:
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def relayed(msg: dict) -> dict:
    """The message to pass on for a client's ``msg``, rebuilt from its typed fields; BadInput names
    what is wrong."""
    f = Fields(msg, "bad_message")
    kind = f.choice("type", None, MESSAGE_TYPES) if "type" in msg else None
    if kind is None:
        raise BadInput(f"type must be one of {', '.join(MESSAGE_TYPES)}", "bad_message")
    if kind == "description":
        desc = msg.get("description")
        if not isinstance(desc, dict):
            raise BadInput("description must be an object with type and sdp", "bad_message")
        d = Fields(desc, "bad_message")
        dtype = d.choice("type", None, DESCRIPTION_TYPES) if "type" in desc else None
        if dtype is None:
            raise BadInput(f"description.type must be one of {', '.join(DESCRIPTION_TYPES)}", "bad_message")
        sdp = d.text("sdp", "", max_len=MAX_SDP_CHARS)
        if dtype != "rollback" and not sdp.startswith("v=0"):
            raise BadInput("description.sdp must be an SDP text (starting v=0)", "bad_message")
        return {"type": "description", "description": {"type": dtype, "sdp": sdp}}
    if kind == "candidate":
        cand = msg.get("candidate")
        if cand is None:
            return {"type": "candidate", "candidate": None}
        if not isinstance(cand, dict):
            raise BadInput("candidate must be an object (an RTCIceCandidateInit) or null", "bad_message")
        c = Fields(cand, "bad_message")
        out = {"candidate": c.text("candidate", "", max_len=1024)}
        mid = c.text("sdpMid", None, max_len=64)
        if mid is not None:
            out["sdpMid"] = mid
        if cand.get("sdpMLineIndex") is not None:
            out["sdpMLineIndex"] = c.integer("sdpMLineIndex", 0, 0, 63)
        ufrag = c.text("usernameFragment", None, max_len=256)
        if ufrag is not None:
            out["usernameFragment"] = ufrag
        return {"type": "candidate", "candidate": out}
    mic = msg.get("microphone", True)
    if not isinstance(mic, bool):
        raise BadInput("microphone must be true or false", "bad_message")
    return {"type": "state", "camera": f.choice("camera", "camera", CAMERAS), "microphone": mic}


@routes.get("/call")
async def call_page(request: web.Request) -> web.StreamResponse:
    page = WEB_CLIENT / "call.html"
    if not page.is_file():
        return web.Response(status=404, text="web_client/call.html is missing")
    return web.FileResponse(page)


@routes.get("/call/ws")
async def call_socket(request: web.Request) -> web.StreamResponse:
    rooms = request.app[ROOMS]
    name = request.query.get("room", "")
    if not ROOM_NAME.fullmatch(name):
        return json_error(400, "bad_request", "room must be 1 to 64 letters, digits, - or _")
    peers = rooms.rooms.get(name, [])
    if len(peers) >= PEERS_PER_ROOM:
        return json_error(409, "room_full", f"the room is full: a call has at most {PEERS_PER_ROOM} people")
    if not peers and len(rooms.rooms) >= MAX_ROOMS:
        return json_error(503, "busy", f"the server has {MAX_ROOMS} calls already: try again later")
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    # checked again after the handshake: another peer may have joined meanwhile
    peers = rooms.rooms.get(name, [])
    if len(peers) >= PEERS_PER_ROOM or (not peers and len(rooms.rooms) >= MAX_ROOMS):
        await ws.send_json(error("room_full", "the room filled up while joining"))
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"room full")
        return ws
    peers = rooms.join(name, ws)
    log.info("call room %s: a peer joined (%d)", name, len(peers))
    try:
        await ws.send_json(
            {"type": "joined", "room": name, "peers": len(peers) - 1, "polite": len(peers) > 1}
        )
        other = rooms.other(name, ws)
        if other is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await other.send_json({"type": "peer_joined"})
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await _relay(rooms, name, ws, message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_json(error("bad_message", "messages must be JSON text, not binary"))
            elif message.type == WSMsgType.ERROR:
                break
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        left = rooms.leave(name, ws)
        log.info("call room %s: a peer left", name)
        if left is not None:
            with contextlib.suppress(Exception):
                await left.send_json({"type": "peer_left"})
    return ws


async def _relay(rooms: CallRooms, name: str, ws: web.WebSocketResponse, text: str) -> None:
    try:
        out = relayed(loads_object(text, "a call message", limit=MAX_MESSAGE_BYTES))
    except BadInput as e:
        await ws.send_json(error(e.code, e.message))
        return
    other = rooms.other(name, ws)
    if other is None:
        await ws.send_json(error("no_peer", f"nobody else is in the room {shown(name)} yet"))
        return
    with contextlib.suppress(ConnectionError, RuntimeError):
        await other.send_str(json.dumps(out))


def setup(app: web.Application) -> None:
    """Add the call demo's routes and rooms to ``app`` (its sockets close at shutdown)."""
    app[ROOMS] = CallRooms()
    app.add_routes(routes)
    app.on_shutdown.append(app[ROOMS].close_all)
