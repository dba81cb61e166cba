"""Websocket PCM ingest (``GET /ws[?avatar=]``) for TTS and dubbing engines: one session per
connection. The server's first message is ``{"type": "session", "session", "whep", "avatar"}``
(watch the result over WHEP); binary messages are PCM in the format of the last ``start`` control
(default 16 kHz mono s16le; a sample split across messages is carried over), stamped with their
arrival; text messages are control messages (:mod:`streaming.control`). Busy: the error and close
code 1013; unknown avatar: close code 1008; a message over :data:`MAX_MESSAGE_BYTES`: the error
``too_big`` and close code 1009. The session ends when the socket closes (or the client is gone).

**Bounded ahead of real time.** Audio enters the session only while the session is less than
``max_lead_s`` ahead of real time: a message is split into pieces of at most :data:`PIECE_S` and
each piece is pushed when the lead allows, so no message, however long its audio, makes more than
``max_lead_s`` of windows, frames or playout audio. Audio waiting for the lead (held) is at most the
message being fed and one more: while two are held the server stops reading the socket (TCP
backpressure), so a client can queue at most ~2 x :data:`MAX_MESSAGE_BYTES` here. Controls read
while audio is held act at once (``flush``/``interrupt`` drop the held audio too), except ``end``,
which waits for the held audio to be fed, and ``segment_end``, which is queued behind it (a flush
drops it with the audio: the flush ends the utterance). The turn-taking events
(:mod:`streaming.turns`) are written once the client asks for them (``{"type": "events"}``), in
order, before the reply of the message that caused them (a flush's ``playback_finished`` comes
before the flush's reply); at most :data:`MAX_EVENTS` wait for a client that does not read.
Held audio that waited counts as arriving when it is pushed (the ``ingest`` stage and ``input``
stats are the server's intake, not the message's arrival). While it is not reading, the server pings
the client every :data:`PROBE_S` so that one that left is found (and its session torn down) within
seconds; while it reads, a client silent for :data:`HEARTBEAT_S` is pinged and one that does not
answer within half of that is gone (aiohttp's own heartbeat is off: it would count the time the
server is not reading, when the client's answer waits behind its audio, against the client)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from dataclasses import dataclass

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from streaming.avatars import AvatarUnavailable
from streaming.control import PCM_FORMATS, error, handle_control, parse_text, pcm_format, segment_end, shown
from streaming.registry import Busy, busy_response, server_of
from streaming.session import StreamSession
from streaming.tracks import wait_cancelled

__all__ = ["MAX_MESSAGE_BYTES", "PIECE_S", "PROBE_S", "routes", "websocket"]

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # one websocket message (aiohttp max_msg_size): larger closes with 1009
PIECE_S = 0.2  # seconds of audio pushed into the session at a time (a large message is split)
MIN_PIECE_S = 0.02  # a piece shorter than this waits for more room (unless it is the message's rest)
PROBE_S = 1.0  # while the server is not reading, a ping this often finds a client that left
HEARTBEAT_S = 20.0  # while reading: nothing heard for this long -> a ping; no answer in half of it -> gone
HELD_MESSAGES = 2  # audio messages held for the lead before the server stops reading
MAX_EVENTS = 1024  # turn-taking events waiting for the socket (a client that does not read loses the oldest)
DEFAULT_FORMAT = {"sample_rate": 16000, "channels": 1, "format": "s16le"}

NONFINITE = (
    "the audio had NaN or infinite samples: they were replaced by silence (send finite samples, "
    "f32le from -1 to 1)"
)

log = logging.getLogger("mouthpiece.server")
routes = web.RouteTableDef()


class _IngestSocket(web.WebSocketResponse):
    """aiohttp refuses a message over ``max_msg_size`` from its frame header (nothing of it is
    buffered) and closes the socket with 1009 from inside ``receive()``: this says why first."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if code == WSCloseCode.MESSAGE_TOO_BIG and not self.closed:
            mib = MAX_MESSAGE_BYTES // (1024 * 1024)
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.send_json(
                    error(
                        "too_big", f"a message may be at most {mib} MiB: send the audio in smaller messages"
                    )
                )
            message = message or b"message too big"
        return await super().close(code=code, message=message, drain=drain)


@dataclass
class _Held:
    """Audio received and not yet pushed: whole samples of one message in its format."""

    fmt: dict
    data: memoryview
    arrived: float | None  # the message's arrival; None once it has waited for the lead
    pos: int = 0
    segment_end: bool = False  # no audio: a segment_end that waits for the audio held before it

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


class _Ingest:
    """The websocket's audio path into one session (the module docstring): parse, hold, feed."""

    def __init__(self, stream: StreamSession) -> None:
        self.s = stream
        self.fmt = dict(DEFAULT_FORMAT)
        self.carry = b""  # a partial sample at the end of the last message
        self.held: collections.deque[_Held] = collections.deque()
        self.end_pending = False  # END received while audio was held: sent once the audio is in

    @property
    def ending(self) -> bool:
        return self.end_pending or self.s.ended

    def accept(self, payload: bytes, arrived: float) -> None:
        step = PCM_FORMATS[self.fmt["format"]].itemsize * self.fmt["channels"]
        data = memoryview(self.carry + payload if self.carry else payload)
        usable = len(data) - len(data) % step
        self.carry = bytes(data[usable:])
        if usable:
            self.held.append(_Held(self.fmt, data[:usable], arrived))

    def drop(self) -> None:
        """Forget the held audio (a flush, or the end of the connection)."""
        self.held.clear()
        self.carry = b""

    def feed(self) -> list[dict]:
        """Push held audio while the lead allows; the replies to send (of a held ``segment_end``, in
        order after the audio before it; ``ended`` of a held END)."""
        s, max_lead = self.s, self.s.config.max_lead_s
        replies = []
        while self.held and not s.closed:
            item = self.held[0]
            if item.segment_end:
                self.held.popleft()
                replies.append(segment_end(s))
                continue
            fmt = item.fmt
            dtype = PCM_FORMATS[fmt["format"]]
            step, rate = dtype.itemsize * fmt["channels"], fmt["sample_rate"]
            room = max_lead - s.lead_s()
            left = item.left // step
            n = min(left, int(min(room, PIECE_S) * rate))
            if n < left and n < MIN_PIECE_S * rate:
                break  # far enough ahead: wait for the clock
            chunk = item.data[item.pos : item.pos + n * step]
            x = np.frombuffer(chunk, dtype=dtype).reshape(-1, fmt["channels"])
            x = x.astype(np.float32) / 32768.0 if dtype.kind == "i" else x.astype(np.float32)
            s.push_audio(x, rate, arrived=item.arrived)
            item.pos += n * step
            if not item.left:
                self.held.popleft()
        for item in self.held:
            item.arrived = None  # what is still held waits: it arrives when it is pushed
        if self.end_pending and not self.held and not s.closed:
            self.end_pending = False
            if not s.ended:
                s.end()
            return [*replies, {"type": "ended"}]
        return replies

    def wait_s(self) -> float:
        """How long until the lead leaves room for the next piece."""
        over = self.s.lead_s() - self.s.config.max_lead_s + MIN_PIECE_S
        return min(0.25, max(0.02, over))


class _Outbox:
    """The session's turn-taking events waiting to be written to the socket (at most
    :data:`MAX_EVENTS`), in the order they happened, once the client has asked for them;
    :attr:`wake` is set when one arrives."""

    def __init__(self) -> None:
        self.items: collections.deque[dict] = collections.deque(maxlen=MAX_EVENTS)
        self.wake = asyncio.Event()
        self.on = False  # the client asked for them ({"type": "events", "turns": true})

    def turns(self, on: bool) -> None:
        self.on = on

    def put(self, event: dict) -> None:
        if self.on:
            self.items.append(event)
            self.wake.set()

    async def send(self, ws: web.WebSocketResponse, reply: dict | None = None) -> None:
        """Write the waiting events, then ``reply`` (so a flush's ``playback_finished`` comes first)."""
        self.wake.clear()
        while self.items:
            await ws.send_json(self.items.popleft())
        if reply is not None:
            await ws.send_json(reply)


def _gone(request: web.Request, ws: web.WebSocketResponse) -> bool:
    transport = request.transport
    return ws.closed or transport is None or transport.is_closing()


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    srv = server_of(request)
    # our own heartbeat (aiohttp's counts the time the server is not reading against the client)
    ws = _IngestSocket(autoping=False, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    name = request.query.get("avatar")
    if name is not None and name not in srv.library.sources:
        await ws.send_json(
            error("unknown_avatar", f"no avatar named {shown(name)}; choose one of {srv.library.available()}")
        )
        await ws.close(code=1008, message=b"unknown avatar")
        return ws
    try:
        hosted = await srv.new_session("websocket", name)
    except Busy:
        await ws.send_json(dict(error("busy", busy_response(srv).text), max_sessions=srv.cfg.max_sessions))
        await ws.close(code=1013, message=b"busy")
        return ws
    except AvatarUnavailable as e:
        await ws.send_json(error(e.code, e.message))
        await ws.close(code=1008, message=b"avatar unavailable")
        return ws
    s = hosted.stream
    ing = _Ingest(s)
    out = _Outbox()
    s.turn_listeners.append(out.put)
    recv: asyncio.Task | None = None
    loop = asyncio.get_running_loop()
    closing = loop.create_task(hosted.closing.wait())  # DELETE or shutdown: close the socket at once
    woken: asyncio.Task | None = None  # waits for a turn-taking event to write
    warned = False  # the client was told that its audio had NaN / infinite samples
    probed = heard = loop.time()  # the last probe while not reading; the last message from the client
    pinged: float | None = None  # a heartbeat ping not yet answered
    try:
        await ws.send_json(
            {"type": "session", "session": s.id, "whep": f"/whep/{s.id}", "avatar": s.avatar_name}
        )
        while not (s.closed or closing.done()):
            for reply in ing.feed():
                await out.send(ws, reply)
            await out.send(ws)
            if woken is None or woken.done():
                woken = loop.create_task(out.wake.wait())
            if s.nonfinite_samples and not warned:
                warned = True
                await ws.send_json({"type": "warning", "warning": "nonfinite_audio", "message": NONFINITE})
            if recv is None and len(ing.held) < HELD_MESSAGES and not ws.closed:
                recv = loop.create_task(ws.receive())
            # a session closed elsewhere (DELETE, shutdown) is noticed within PROBE_S
            timeout = ing.wait_s() if ing.held or ing.end_pending else PROBE_S
            waits = {closing, woken} if recv is None else {recv, closing, woken}
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if closing.done():
                break
            now = loop.time()
            if recv is None:  # not reading (backpressure): is the client still there?
                heard, pinged = now, None  # nothing can be heard now: the heartbeat waits
                if _gone(request, ws):
                    break
                if now - probed >= PROBE_S:  # a write to a peer that left fails
                    probed = now
                    await ws.ping()
                continue
            if not recv.done():  # reading, nothing came
                if pinged is not None and now - pinged > HEARTBEAT_S / 2:
                    break  # no answer to the heartbeat: the client is gone
                if pinged is None and now - heard > HEARTBEAT_S:
                    pinged = now
                    await ws.ping()
                continue
            msg, recv = recv.result(), None
            heard, pinged = now, None
            if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT):
                try:
                    reply = await _message(srv, hosted, ing, msg, out)
                except ConnectionError:
                    raise
                except Exception:  # a bug: the client gets a plain line, the log the traceback
                    log.exception("session %s: a websocket message could not be handled", s.id)
                    reply = error("internal", "the server could not handle this message")
                await out.send(ws, reply)
            elif msg.type == WSMsgType.PING:
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                pass
            else:  # CLOSE, CLOSING, CLOSED, ERROR (a message too big: aiohttp has closed with 1009)
                break
    except ConnectionError:  # the client left while the server wrote to it
        pass
    finally:  # the session goes first, even when this handler is being cancelled (shutdown)
        ing.drop()
        with contextlib.suppress(ValueError):
            s.turn_listeners.remove(out.put)
        out.items.clear()
        for task in (recv, woken):
            if task is not None:
                task.cancel()
        closing.cancel()
        await srv.close_session(s.id)
        for task in (recv, woken):
            if task is not None:
                await wait_cancelled(task)
        await wait_cancelled(closing)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close(message=b"session ended")
    return ws


async def _message(srv, hosted, ing: _Ingest, msg, out: _Outbox) -> dict | None:
    """A binary (audio) or text (control) message: the reply, or None."""
    if msg.type == WSMsgType.BINARY:
        if ing.ending:
            return error("ended", "audio after end is ignored")
        ing.accept(msg.data, hosted.stream.clock())
        return None
    return await _text(srv, hosted, ing, msg.data, out)


async def _text(srv, hosted, ing: _Ingest, text: str, out: _Outbox) -> dict | None:
    """A text message: a control (the reply, or None)."""
    ctl, bad = parse_text(text)
    if bad is not None:
        return bad
    kind = ctl.get("type")
    if hosted.stream.closed or hosted.closing.is_set():
        return error("ended", "the session has ended")
    if kind == "start":
        new, problem = pcm_format(ctl, ing.fmt)
        if problem:
            return error("bad_format", problem)
        ing.fmt, ing.carry = new, b""
        return {"type": "started", **new}
    if kind in ("flush", "interrupt"):
        ing.drop()  # the held audio is queued audio: dropped with the rest
    elif kind == "segment_end" and (ing.held or ing.end_pending):
        if ing.end_pending:
            return error("ended", "segment_end after end: the session takes no more audio")
        ing.held.append(_Held(ing.fmt, memoryview(b""), None, segment_end=True))  # after the held audio
        return None
    elif kind == "end" and ing.held:
        ing.end_pending = True  # after the held audio (the feed loop answers "ended")
        return None
    return await handle_control(srv, hosted, ctl, out.turns)
