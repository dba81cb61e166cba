"""A real WebRTC client of the server (aiortc): sends an audio file or track as its microphone and
records what comes back, with sender timestamps. Used by the tests and the latency benchmark.

Timing. Everything is on the Unix clock (``time.time()``), the clock aiortc puts in its RTCP
sender reports (NTP). Each received frame's RTP timestamp is mapped to the time the *server sent
it* through the sender reports of its stream (:class:`streaming.rtp_clock.RtpClock`, the one
mapping the latency tool uses too; :meth:`RtcClient.stream_clock`), so audio and video can be
compared on one clock whatever the receive jitter buffers did. The client also records when it
sent each of its own audio frames (:attr:`RtcClient.sent_audio`), so latency from a sample going in
to its frame coming out can be measured.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtcpSrPacket

from streaming.aiortc_compat import hand_on_frames_at_once, rtp_timestamp_origin, tap_rtcp
from streaming.ice import loopback_configuration
from streaming.rtp_clock import CLOCK_RATE, RtpClock, ntp_to_unix
from streaming.tracks import audio_frame_samples, wait_cancelled

__all__ = ["RtcClient", "ntp_to_unix"]


@dataclass
class Received:
    pts: int  # RTP timestamp
    arrival: float  # time.time() when the decoded frame came out of aiortc
    data: np.ndarray | None  # video: BGR image; audio: float32 mono 48 kHz


class _TimedTrack(MediaStreamTrack):
    """Passes the frames of ``source`` on and records (pts, sample_rate, time.time(), samples) of each."""

    def __init__(self, source: MediaStreamTrack, log: list) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source
        self._log = log

    async def recv(self):
        frame = await self._source.recv()
        self._log.append((int(frame.pts), int(frame.sample_rate), time.time(), int(frame.samples)))
        return frame

    def stop(self) -> None:
        super().stop()
        self._source.stop()


@dataclass
class RtcClient:
    """One browser-like session: POST /offer, microphone up, avatar video and audio down."""

    base_url: str
    audio_path: str | None = None  # a file played as the microphone (real time)
    audio_track: MediaStreamTrack | None = None  # or any audio track
    avatar: str | None = None
    keep_video: bool = True  # keep decoded images (BGR)
    on_video: Callable[[int, float, np.ndarray], None] | None = None  # (pts, arrival, BGR image) per frame
    ice_servers: tuple[str, ...] = ()  # STUN / TURN URLs; none: host candidates only
    token: str | None = field(default=None, repr=False)  # the server's --token (Authorization: Bearer)
    session: str | None = None
    video: list[Received] = field(default_factory=list)
    audio: list[Received] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)
    sent_audio: list[tuple[int, int, float, int]] = field(default_factory=list)  # (pts, rate, time, n)
    clocks: dict[str, RtpClock] = field(default_factory=dict)

    def __post_init__(self) -> None:
        config = (
            RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in self.ice_servers])
            if self.ice_servers
            else loopback_configuration()
        )
        self.pc = RTCPeerConnection(config)
        self._tasks: list[asyncio.Task] = []
        self._player: MediaPlayer | None = None
        self._new_video = asyncio.Event()
        self._new_message = asyncio.Event()
        self.channel = None
        self.clocks = {k: RtpClock(r) for k, r in CLOCK_RATE.items()}

    def auth_headers(self) -> dict[str, str]:
        """``Authorization: Bearer`` with :attr:`token`, when one is set (docs/security.md)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def start(self) -> RtcClient:
        pc = self.pc
        source = self.audio_track
        if source is None and self.audio_path is not None:
            self._player = MediaPlayer(self.audio_path)
            source = self._player.audio
        if source is not None:
            pc.addTransceiver(_TimedTrack(source, self.sent_audio), direction="sendrecv")
        else:
            pc.addTransceiver("audio", direction="sendrecv")
        pc.addTransceiver("video", direction="recvonly")
        self.channel = pc.createDataChannel("control")

        @self.channel.on("message")
        def _message(message) -> None:
            self.messages.append(json.loads(message))
            self._new_message.set()

        @pc.on("track")
        def _track(track) -> None:
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if self.avatar:
            body["avatar"] = self.avatar
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.base_url}/offer", json=body, headers=self.auth_headers()) as r:
                answer = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"offer refused ({r.status}): {answer.get('message')}")
        self.session = answer["session"]
        self._receivers = {}
        for t in pc.getTransceivers():
            self._instrument(t.receiver, t.kind)
            if t.kind == "video":  # a frame is decoded at its last packet, as browsers do
                hand_on_frames_at_once(t.receiver)
            self._receivers[t.kind] = t.receiver
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        return self

    def _instrument(self, receiver, kind: str) -> None:
        """Record the RTCP sender reports the receiver gets (the stream's RTP -> wall clock map)."""
        clock = self.clocks[kind]

        def on_packet(packet) -> None:
            if isinstance(packet, RtcpSrPacket):
                clock.add(packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)

        tap_rtcp(receiver, on_packet)

    async def _consume(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.time()
            if track.kind == "video":
                want = self.keep_video or self.on_video is not None
                img = frame.to_ndarray(format="bgr24") if want else None
                self.video.append(Received(int(frame.pts), now, img if self.keep_video else None))
                if self.on_video is not None:
                    self.on_video(int(frame.pts), now, img)
                self._new_video.set()
            else:
                x = audio_frame_samples(frame).astype(np.float32)
                if frame.format.name == "s16" or x.dtype.kind == "i":
                    x = x / 32768.0
                mono = x.mean(axis=1) if x.ndim == 2 else x
                if frame.sample_rate != 48000:  # pragma: no cover - aiortc decodes Opus at 48 kHz
                    raise RuntimeError(f"unexpected audio rate {frame.sample_rate}")
                self.audio.append(Received(int(frame.pts), now, mono.astype(np.float32)))

    async def send(self, msg: dict) -> None:
        while self.channel.readyState != "open":
            await asyncio.sleep(0.01)
        self.channel.send(json.dumps(msg))

    async def wait_video(self, n: int, timeout: float) -> None:
        """Wait until ``n`` video frames have arrived."""

        async def until() -> None:
            while len(self.video) < n:
                self._new_video.clear()
                await self._new_video.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_message(self, predicate, timeout: float) -> dict:
        async def until() -> dict:
            seen = 0
            while True:
                for m in self.messages[seen:]:
                    if predicate(m):
                        return m
                seen = len(self.messages)
                self._new_message.clear()
                await self._new_message.wait()

        return await asyncio.wait_for(until(), timeout)

    def stream_clock(self, kind: str) -> RtpClock:
        """The ``kind`` stream's clock on aiortc's pts: the sender reports so far (a copy) and the
        stream's RTP origin (aiortc's pts is the RTP timestamp minus the stream's first one; that
        origin is read from the receiver). ValueError before the stream's first frame."""
        receiver = getattr(self, "_receivers", {}).get(kind)
        origin = None if receiver is None else rtp_timestamp_origin(receiver)
        if origin is None:
            raise ValueError(f"no {kind} frame received yet")
        clock = self.clocks[kind]
        return RtpClock(clock.rate, list(clock.reports), int(origin) % (1 << 32))

    def send_time(self, kind: str, pts: int) -> float:
        """When the server sent the received frame with ``pts`` (:meth:`stream_clock`);
        ValueError before its first frame or sender report."""
        return self.stream_clock(kind).time_of(int(pts))

    def input_time(self, sample: int, rate: int = 48000) -> float | None:
        """When the client sent its input sample ``sample`` (at ``rate``), from the sent frames."""
        for pts, r, t, n in self.sent_audio:
            if (pts + n) * rate // r > sample:  # the frame that holds the sample
                return t
        return None

    def received_audio(self) -> tuple[np.ndarray, float]:
        """The received audio as one float32 48 kHz array and the send time of its first sample
        (frames placed by their RTP timestamps; gaps are zeros)."""
        if not self.audio:
            return np.zeros(0, np.float32), float("nan")
        base = self.audio[0].pts
        n_total = max(((a.pts - base) % (1 << 32)) + a.data.size for a in self.audio)
        out = np.zeros(n_total, np.float32)
        for a in self.audio:
            s = (a.pts - base) % (1 << 32)
            out[s : s + a.data.size] = a.data
        return out, self.send_time("audio", base)

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            if not t.done():
                t.cancel()
            await wait_cancelled(t)
