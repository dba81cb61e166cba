"""Websocket PCM ingest (``GET /ws[?avatar=]``) for TTS and dubbing engines: one session per
connection. The server's first message is ``{"type": "session", "session", "whep", "avatar"}``
(watch the result over WHEP); binary messages are PCM in the format of the last ``start`` control
(default 16 kHz mono s16le; a sample split across messages is carried over), stamped with their
arrival; text messages are control messages (:mod:`streaming.control`). While the session is far
ahead of real time the server stops reading (backpressure). Busy: the error and close code 1013;
unknown avatar: close code 1008. The session ends when the socket closes."""

from __future__ import annotations

import asyncio

import numpy as np
from aiohttp import WSMsgType, web

from streaming.control import PCM_FORMATS, error, handle_control, parse_text, pcm_format
from streaming.registry import Busy, busy_response, server_of

__all__ = ["routes", "websocket"]

routes = web.RouteTableDef()


@routes.get("/ws")
async def websocket(request: web.Request) -> web.StreamResponse:
    srv = server_of(request)
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    name = request.query.get("avatar")
    if name is not None and name not in srv.library.sources:
        await ws.send_json(
            error("unknown_avatar", f"no avatar named {name!r}; choose one of {srv.library.names()}")
        )
        await ws.close(code=1008, message=b"unknown avatar")
        return ws
    try:
        hosted = await srv.new_session("websocket", name)
    except Busy:
        await ws.send_json(dict(error("busy", busy_response(srv).text), max_sessions=srv.cfg.max_sessions))
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
                    await ws.send_json(error("ended", "audio after end is ignored"))
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
                ctl, bad = parse_text(msg.data)
                if bad is not None:
                    await ws.send_json(bad)
                    continue
                if ctl.get("type") == "start":
                    new, problem = pcm_format(ctl, fmt)
                    if problem:
                        await ws.send_json(error("bad_format", problem))
                    else:
                        fmt, carry = new, b""
                        await ws.send_json({"type": "started", **fmt})
                    continue
                out = await handle_control(srv, hosted, ctl)
                if out is not None:
                    await ws.send_json(out)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        await srv.close_session(s.id)
    return ws
