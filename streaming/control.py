"""The control protocol: JSON control messages of a session, the same on the WebRTC data channel
``control`` and on the websocket (docs/api.md). :func:`handle_control` acts on ``flush``,
``interrupt``, ``segment_end`` (:func:`segment_end`), ``switch_avatar``, ``stats``, ``events`` (the
turn-taking events on or off for this transport) and ``end`` and
gives the reply (``{"type": "error", "error", "message"}`` for anything it cannot do: :func:`error`);
:func:`channel_reply` and :func:`parse_text` are how the data channel and the websocket read a text message;
:func:`pcm_format` checks the websocket-only ``start`` message (PCM format of the binary messages
that follow). Nothing here touches the transport: the callers send the replies.

**Client input** is read in one way, here: :func:`loads_object` (JSON text -> an object, at most
:data:`MAX_CONTROL_BYTES`; too deep, not JSON, not an object: :class:`BadInput`) and
:class:`Fields` (typed fields: a wrong type, a non-finite or out-of-range number, a bool where a
number is expected: :class:`BadInput`). A :class:`BadInput` is a code and one plain sentence for
the client (HTTP handlers answer it 400 through the app's error middleware; the websocket and the
data channel answer it as an error message) and never carries an exception's text."""

from __future__ import annotations

import json
import math

import numpy as np

from engine.live.messages import Control, ControlKind
from streaming.avatars import AvatarUnavailable
from streaming.registry import Hosted, Server

__all__ = [
    "MAX_CONTROL_BYTES",
    "PCM_FORMATS",
    "BadInput",
    "Fields",
    "channel_reply",
    "error",
    "handle_control",
    "loads_object",
    "parse_text",
    "pcm_format",
    "segment_end",
    "shown",
]

PCM_FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
MAX_CONTROL_BYTES = 64 * 1024  # a control message (or a JSON request body) is a few hundred bytes
CONTROL_TYPES = ("flush", "interrupt", "segment_end", "switch_avatar", "stats", "events", "end")


class BadInput(Exception):
    """Client input that cannot be used: ``code`` and ``message`` (one plain sentence), ``status``
    for an HTTP answer."""

    def __init__(self, message: str, code: str = "bad_request", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


def error(code: str, message: str) -> dict:
    return {"type": "error", "error": code, "message": message}


def shown(value, limit: int = 40) -> str:
    """A client's value as it may appear in an answer: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def loads_object(
    text: str | bytes, what: str = "the message", code: str = "bad_message", limit: int = MAX_CONTROL_BYTES
) -> dict:
    """``text`` (at most ``limit`` bytes) as a JSON object, or :class:`BadInput` saying why not."""
    if len(text) > limit:
        raise BadInput(f"{what} is too long: at most {limit // 1024} KiB", code)
    try:
        obj = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)  # UTF-8 only
    except RecursionError:  # json recurses once per nesting level
        raise BadInput(f"{what} is nested too deeply", code) from None
    except UnicodeDecodeError:
        raise BadInput(f"{what} is not UTF-8 text", code) from None
    except json.JSONDecodeError:
        raise BadInput(f"{what} is not JSON", code) from None
    except ValueError:  # an integer literal of thousands of digits
        raise BadInput(f"{what} has a number that is too long", code) from None
    if not isinstance(obj, dict):
        raise BadInput(f"{what} must be a JSON object, not {_json_type(obj)}", code)
    return obj


class Fields:
    """Typed reads of a JSON object's fields; each problem is a :class:`BadInput` (``code``) that
    names the field and what it must be."""

    def __init__(self, obj: dict, code: str = "bad_request") -> None:
        self.obj, self.code = obj, code

    def _bad(self, key: str, must: str, value) -> BadInput:
        return BadInput(f"{key} must be {must}, not {_json_type(value)}", self.code)

    def text(self, key: str, default: str | None = None, *, must: str = "a string", max_len: int = 256):
        """A string field (absent or null: ``default``)."""
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(key, must, value)
        if len(value) > max_len:
            raise BadInput(f"{key} is too long (at most {max_len} characters)", self.code)
        return value

    def integer(self, key: str, default: int, lo: int, hi: int) -> int:
        """A whole number from ``lo`` to ``hi`` (absent: ``default``; ``48000.0`` is 48000; null,
        bools, strings, NaN, infinities and fractions are refused)."""
        if key not in self.obj:
            return default
        value = self.obj[key]
        must = f"a whole number from {lo} to {hi}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._bad(key, must, value)
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise BadInput(f"{key} must be {must}, not {shown(value)}", self.code)
        if not lo <= value <= hi:
            raise BadInput(f"{key} must be {must}, not {shown(int(value))}", self.code)
        return int(value)

    def flag(self, key: str, default: bool) -> bool:
        """``true`` or ``false`` (absent: ``default``; null, numbers and strings are refused)."""
        if key not in self.obj:
            return default
        value = self.obj[key]
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def choice(self, key: str, default: str, options) -> str:
        must = f"one of {', '.join(sorted(options))}"
        value = self.text(key, default, must=must)
        if value not in options:
            raise BadInput(f"{key} must be {must}, not {shown(value)}", self.code)
        return value


async def handle_control(srv: Server, hosted: Hosted, msg: dict, turns=None) -> dict | None:
    """Act on one control message; the reply (or None). ``turns``: callable(bool) that turns the
    transport's turn-taking events on or off (``events``)."""
    try:
        return await _control(srv, hosted, msg, turns)
    except BadInput as e:
        return error(e.code, e.message)


async def _control(srv: Server, hosted: Hosted, msg: dict, turns=None) -> dict | None:
    kind = msg.get("type")
    s = hosted.stream
    if not isinstance(kind, str) or kind not in CONTROL_TYPES:
        what = shown(kind) if isinstance(kind, str) else _json_type(kind)
        return error("bad_message", f"unknown control message type {what}: one of {', '.join(CONTROL_TYPES)}")
    if s.closed:
        return error("ended", "the session has ended")
    if kind in ("flush", "interrupt"):
        s.control(Control(ControlKind.from_wire(kind)))
        return {"type": kind, "ok": True}
    if kind == "stats":
        return s.stats()
    if kind == "segment_end":
        return segment_end(s)
    if kind == "events":
        on = Fields(msg, "bad_message").flag("turns", True)
        if turns is not None:
            turns(on)
        return {"type": "events", "turns": on}
    if kind == "switch_avatar":
        name = Fields(msg, "bad_message").text("avatar", must="a string (the name of an avatar)")
        if name is None:
            return error("bad_message", "switch_avatar needs avatar (the name of an avatar)")
        if name not in srv.library.sources:
            return error(
                "unknown_avatar", f"no avatar named {shown(name)}; choose one of {srv.library.available()}"
            )
        try:
            avatar = await srv.library.load(name)
        except AvatarUnavailable as e:
            return error(e.code, e.message)
        if not s.closed:
            s.switch_avatar(avatar, name)
        return {"type": "avatar", "avatar": name}
    if not s.ended:  # end
        s.end()
    return {"type": "ended"}


def segment_end(s) -> dict:
    """End the session's utterance (``segment_end``): the reply, with the utterance's id."""
    if s.ended:
        return error("ended", "segment_end after end: the session takes no more audio")
    utterance = s.segment_end()
    if utterance is None:
        return error("no_utterance", "segment_end: no utterance to end (no audio since the last one ended)")
    return {"type": "segment_end", "ok": True, "utterance": utterance}


async def channel_reply(srv: Server, hosted: Hosted, message, turns=None) -> dict | None:
    """The reply to one data channel message (a JSON object, as text or UTF-8 bytes)."""
    try:
        msg = loads_object(message, "a control message")
    except BadInput as e:
        return error(e.code, e.message)
    return await handle_control(srv, hosted, msg, turns)


def parse_text(text: str) -> tuple[dict | None, dict | None]:
    """A websocket text message as ``(control, None)``, or ``(None, error reply)`` where it is not
    a JSON object."""
    try:
        return loads_object(text, "a control message"), None
    except BadInput as e:
        return None, error(e.code, e.message)


def pcm_format(ctl: dict, old: dict) -> tuple[dict, str | None]:
    """The PCM format a ``start`` message asks for (``old``'s values where it names none) and
    None, or ``old`` and what is wrong with it."""
    f = Fields(ctl, "bad_format")
    try:
        new = {
            "sample_rate": f.integer("sample_rate", old["sample_rate"], 1000, 384000),
            "channels": f.integer("channels", old["channels"], 1, 8),
            "format": f.choice("format", old["format"], PCM_FORMATS),
        }
    except BadInput as e:
        return old, e.message
    return new, None
