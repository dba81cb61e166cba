"""The control protocol: JSON control messages of a session, the same on the WebRTC data channel
``control`` and on the websocket (docs/api.md). :func:`handle_control` acts on ``flush``,
``interrupt``, ``switch_avatar``, ``stats`` and ``end`` and gives the reply (``{"type": "error",
"error", "message"}`` for anything it cannot do: :func:`error`); :func:`channel_reply` and
:func:`parse_text` are how the data channel and the websocket read a text message;
:func:`pcm_format` checks the websocket-only ``start`` message (PCM format of the binary messages
that follow). Nothing here touches the transport: the callers send the replies."""

from __future__ import annotations

import json

import numpy as np

from engine.core.avatar import AvatarError
from engine.live.messages import Control, ControlKind
from streaming.registry import Hosted, Server

__all__ = ["PCM_FORMATS", "channel_reply", "error", "handle_control", "parse_text", "pcm_format"]

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


def error(code: str, message: str) -> dict:
    return {"type": "error", "error": code, "message": message}


async def handle_control(srv: Server, hosted: Hosted, msg: dict) -> dict | None:
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
        if name not in srv.library.sources:
            return error("unknown_avatar", f"no avatar named {name!r}; choose one of {srv.library.names()}")
        try:
            avatar = await srv.library.load(name)
        except (AvatarError, OSError, ValueError) as e:
            return error("avatar_failed", f"avatar {name!r} could not be prepared: {e}")
        if not s.closed:
            s.switch_avatar(avatar, name)
        return {"type": "avatar", "avatar": name}
    if kind == "end":
        if not s.ended:
            s.end()
        return {"type": "ended"}
    return error("bad_message", f"unknown control message type {kind!r}")


async def channel_reply(srv: Server, hosted: Hosted, message) -> dict | None:
    """The reply to one data channel message (a JSON text; one that is not an object is treated as
    an object without a type)."""
    try:
        msg = json.loads(message)
        return await handle_control(srv, hosted, msg if isinstance(msg, dict) else {})
    except (json.JSONDecodeError, TypeError) as e:
        return error("bad_message", f"not a JSON object: {e}")


def parse_text(text: str) -> tuple[dict | None, dict | None]:
    """A websocket text message as ``(control, None)``, or ``(None, error reply)`` where it is not
    a JSON object."""
    try:
        ctl = json.loads(text)
        if not isinstance(ctl, dict):
            raise TypeError("not an object")
    except (json.JSONDecodeError, TypeError) as e:
        return None, error("bad_message", f"control messages are JSON objects: {e}")
    return ctl, None


def pcm_format(ctl: dict, old: dict) -> tuple[dict, str | None]:
    """The PCM format a ``start`` message asks for (``old``'s values where it names none) and
    None, or ``old`` and what is wrong with it."""
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
