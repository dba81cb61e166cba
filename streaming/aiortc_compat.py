"""Every reach into aiortc's (and aioice's) private internals, in one place.

aiortc has no public setting or hook for a few things the server, the sessions and the test client need:
the audio jitter buffer's prefetch, the RTP timestamp origin of a receiver, a look at the RTCP packets a
receiver gets, the encoder output of a sender and the ICE connection (and its nominated pairs) under an
``RTCIceGatherer``. Each reach is a small function here with a capability check (``can_...``) that says
whether the installed aiortc looks as expected; a function either degrades as documented (returns False /
None / an empty list) or raises :class:`AiortcInternalsError` naming what is missing.
``tests/test_aiortc_compat.py`` checks every capability against the installed aiortc with real aiortc
objects, so an aiortc upgrade that moves these internals fails there rather than silently in a session.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import aioice.ice
from aiortc.jitterbuffer import JitterFrame as _JitterFrame

__all__ = [
    "AiortcInternalsError",
    "audio_prefetch",
    "can_hand_on_frames_at_once",
    "hand_on_frames_at_once",
    "can_read_rtp_timestamp_origin",
    "can_replace_next_encoded_frame",
    "can_set_audio_prefetch",
    "can_tap_rtcp",
    "ice_connection",
    "missing_aioice_hooks",
    "next_encoded_frame",
    "nominated_pairs",
    "require_aioice_hooks",
    "rtp_timestamp_origin",
    "set_audio_prefetch",
    "set_next_encoded_frame",
    "tap_rtcp",
]

# name-mangled attributes of aiortc classes (``self.__x`` in class ``C`` is ``_C__x``)
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_TIMESTAMP_MAPPER = "_RTCRtpReceiver__timestamp_mapper"

# what streaming.ice patches (for the duration of a loopback block): (owner, attribute)
AIOICE_HOOKS = (
    (aioice.ice, "get_host_addresses"),
    (aioice.ice.Connection, "add_remote_candidate"),
    (aioice.ice.StunProtocol, "datagram_received"),
    (aioice.ice.StunProtocol, "send_stun"),
    (aioice.ice.StunProtocol, "send_data"),
)


class AiortcInternalsError(RuntimeError):
    """The installed aiortc / aioice does not have an internal this project relies on."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"aiortc internals changed: {what} (streaming/aiortc_compat.py needs an update for this "
            "aiortc version; tests/test_aiortc_compat.py shows which capability is gone)"
        )


# ---- RTCRtpReceiver: the audio jitter buffer's prefetch ----------------------------------------


def _audio_jitter_buffer(receiver):
    jb = getattr(receiver, _JITTER_BUFFER, None)
    return jb if jb is not None and hasattr(jb, "_prefetch") else None


def can_set_audio_prefetch(receiver) -> bool:
    """Whether ``receiver`` (an audio ``RTCRtpReceiver``) has a jitter buffer with a prefetch."""
    return _audio_jitter_buffer(receiver) is not None


def audio_prefetch(receiver) -> int | None:
    """The packets ``receiver``'s jitter buffer holds before decoding (aiortc's default for audio:
    4), or None where that cannot be read."""
    jb = _audio_jitter_buffer(receiver)
    return None if jb is None else jb._prefetch


def set_audio_prefetch(receiver, packets: int) -> bool:
    """Make ``receiver``'s jitter buffer hold ``packets`` (at least 1) 20 ms packets before it
    decodes (aiortc has no public setting). False, and nothing changed, where ``receiver`` is None
    or its jitter buffer is not where expected."""
    jb = _audio_jitter_buffer(receiver)
    if jb is None:
        return False
    jb._prefetch = max(1, int(packets))
    return True


# ---- RTCRtpReceiver: hand each frame on as soon as it is complete ------------------------------


def _frame_at_once_buffer(base):
    """A subclass of aiortc's ``JitterBuffer`` class ``base`` that hands a frame on at its last packet:
    for video the packet with the RTP marker bit (RFC 7741: the last packet of a frame), for audio
    every packet (one Opus frame each), as browsers do; aiortc's own waits for the first packet of
    the next frame, one frame interval later (40 ms of video at 25 fps, 20 ms of audio). A frame
    whose marker was lost is handed on when the next one begins, as before."""

    class FrameAtOnceJitterBuffer(base):
        def _remove_frame(self, sequence_number: int):
            packets, timestamp = [], None
            for count in range(self.capacity):
                packet = self._packets[(self._origin + count) % self._capacity]
                if packet is None:
                    return None
                if timestamp is not None and packet.timestamp != timestamp:  # the next frame began
                    return self._hand_on(packets, timestamp, count)
                timestamp = packet.timestamp
                packets.append(packet)
                if packet.marker or not self._is_video:
                    return self._hand_on(packets, timestamp, count + 1)
            return None

        def _hand_on(self, packets, timestamp, count):
            frame = _JitterFrame(data=b"".join(p._data for p in packets), timestamp=timestamp)
            self.remove(count)
            return frame

    return FrameAtOnceJitterBuffer


def can_hand_on_frames_at_once(receiver) -> bool:
    """Whether ``receiver``'s jitter buffer is aiortc's (its packets, origin and frame removal)."""
    jb = getattr(receiver, _JITTER_BUFFER, None)
    return all(hasattr(jb, a) for a in ("_packets", "_origin", "_capacity", "_is_video", "_remove_frame"))


def hand_on_frames_at_once(receiver) -> bool:
    """Make ``receiver`` (an ``RTCRtpReceiver``, before its first packet) decode each frame as soon
    as its last packet is in (see :func:`_frame_at_once_buffer`); its jitter then reaches the
    consumer, which must absorb it (the server's automatic delay measures and covers it). False,
    and nothing changed, where the jitter buffer is not where expected."""
    if not can_hand_on_frames_at_once(receiver):
        return False
    jb = getattr(receiver, _JITTER_BUFFER)
    cls = _frame_at_once_buffer(type(jb))
    setattr(receiver, _JITTER_BUFFER, cls(capacity=jb.capacity, is_video=jb._is_video))
    return True


# ---- RTCRtpReceiver: the RTP timestamp origin --------------------------------------------------


def can_read_rtp_timestamp_origin(receiver) -> bool:
    """Whether ``receiver`` has aiortc's timestamp mapper (its frames' pts are the RTP timestamp
    minus the stream's first one, the origin)."""
    return hasattr(getattr(receiver, _TIMESTAMP_MAPPER, None), "_origin")


def rtp_timestamp_origin(receiver) -> int | None:
    """The RTP timestamp ``receiver``'s frame pts are counted from (a received frame's RTP
    timestamp is ``(pts + origin) mod 2**32``); None until the first packet arrived.
    AiortcInternalsError where the receiver has no such mapper (see
    :func:`can_read_rtp_timestamp_origin`)."""
    if not can_read_rtp_timestamp_origin(receiver):
        raise AiortcInternalsError(f"RTCRtpReceiver has no {_TIMESTAMP_MAPPER} with an _origin")
    return getattr(receiver, _TIMESTAMP_MAPPER)._origin


# ---- RTCRtpReceiver: RTCP packets --------------------------------------------------------------


def can_tap_rtcp(receiver) -> bool:
    """Whether ``receiver`` handles its RTCP packets in an ``async _handle_rtcp_packet``."""
    return inspect.iscoroutinefunction(getattr(type(receiver), "_handle_rtcp_packet", None))


def tap_rtcp(receiver, on_packet: Callable[[object], None]) -> None:
    """Call ``on_packet(packet)`` with every RTCP packet ``receiver`` gets, before aiortc handles
    it (e.g. sender reports: the stream's RTP -> NTP clock map). AiortcInternalsError where the
    receiver does not look as expected (:func:`can_tap_rtcp`)."""
    if not can_tap_rtcp(receiver):
        raise AiortcInternalsError("RTCRtpReceiver has no async _handle_rtcp_packet")
    original = receiver._handle_rtcp_packet

    async def handle(packet) -> None:
        on_packet(packet)
        await original(packet)

    receiver._handle_rtcp_packet = handle


# ---- RTCRtpSender: encoded frames --------------------------------------------------------------

NextEncodedFrame = Callable[[object], Awaitable[object]]


def can_replace_next_encoded_frame(sender) -> bool:
    """Whether ``sender`` gets each encoded frame from an ``async _next_encoded_frame(codec)``
    that its send loop looks up on the instance (so a replacement is used)."""
    return inspect.iscoroutinefunction(getattr(type(sender), "_next_encoded_frame", None))


def next_encoded_frame(sender) -> NextEncodedFrame | None:
    """``sender``'s current ``_next_encoded_frame`` (``await f(codec)``: the next encoded frame or
    None), or None where the sender has none."""
    return getattr(sender, "_next_encoded_frame", None)


def set_next_encoded_frame(sender, fn: NextEncodedFrame) -> None:
    """Make ``sender`` take its encoded frames from ``fn`` (usually a wrapper of
    :func:`next_encoded_frame`'s result). AiortcInternalsError where the sender has no
    ``_next_encoded_frame`` to replace."""
    if next_encoded_frame(sender) is None:
        raise AiortcInternalsError("RTCRtpSender has no _next_encoded_frame")
    sender._next_encoded_frame = fn


# ---- ICE: aioice under aiortc ------------------------------------------------------------------


def ice_connection(gatherer) -> aioice.ice.Connection:
    """The aioice ``Connection`` behind an ``RTCIceGatherer``. AiortcInternalsError where there
    is none."""
    conn = getattr(gatherer, "_connection", None)
    if not isinstance(conn, aioice.ice.Connection):
        raise AiortcInternalsError("RTCIceGatherer has no aioice Connection in _connection")
    return conn


def nominated_pairs(conn: aioice.ice.Connection) -> list:
    """The nominated candidate pairs of an aioice ``Connection`` (one per component), each with
    ``local_addr`` and ``remote_addr``. AiortcInternalsError where they cannot be read."""
    nominated = getattr(conn, "_nominated", None)
    if not isinstance(nominated, dict):
        raise AiortcInternalsError("aioice Connection has no _nominated dict")
    return list(nominated.values())


def missing_aioice_hooks() -> list[str]:
    """The aioice functions :func:`streaming.ice.loopback_ice` replaces that are not there."""
    return [
        f"{getattr(owner, '__name__', owner)}.{name}"
        for owner, name in AIOICE_HOOKS
        if not callable(getattr(owner, name, None))
    ]


def require_aioice_hooks() -> None:
    """AiortcInternalsError naming the missing ones unless every hook of :data:`AIOICE_HOOKS` is
    there."""
    missing = missing_aioice_hooks()
    if missing:
        raise AiortcInternalsError(f"aioice lacks {', '.join(missing)}")
