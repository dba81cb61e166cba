"""WebRTC transport: a client peer sends a WAV as its microphone, the server peer lip-syncs it.

Two RTCPeerConnections in one process over loopback only (:func:`streaming.ice.loopback_ice`): the
client's audio (a synthetic speech-like WAV through ``MediaPlayer``) feeds a
:class:`streaming.session.StreamSession` via :class:`MicrophoneSink`; the session's video and its
delayed audio come back through its tracks (:meth:`StreamSession.subscribe`).
The real transformer runs with stand-in weights; the renderer is the cheap ``InvertBackend`` of
tests/helpers.py. Every wait has a time limit; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import wave

import aioice.ice
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from engine.core.avatar import AvatarConfig, prepare_avatar
from streaming.ice import LOOPBACK, local_candidate_hosts, loopback_ice, selected_pairs
from streaming.session import StreamConfig, StreamSession
from streaming.tracks import MicrophoneSink
from tests.helpers import PORTRAIT, InvertBackend, private_neural, speechlike

LIMIT = 20.0  # seconds: a bound on every wait
WANT = 30  # video frames the client collects (1.2 s at 25 fps)
RTP_STEP = 90000 // 25  # one frame in the 90 kHz RTP video clock


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    return prepare_avatar(PORTRAIT, AvatarConfig(n_refs=1), tmp_path_factory.mktemp("stream-avatar"))


def write_wav(path, seconds: float = 1.0, rate: int = 48000) -> None:
    x16 = speechlike(seconds, seed=3)  # 16 kHz
    x = np.interp(np.arange(3 * x16.size) / 3, np.arange(x16.size), x16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())


def test_webrtc_loopback_mic_in_avatar_video_out(avatar, landmark_model, tmp_path):
    wav = tmp_path / "mic.wav"
    write_wav(wav)

    async def main():
        before = asyncio.all_tasks()
        real_hosts = aioice.ice.get_host_addresses
        with loopback_ice() as config:
            assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == [LOOPBACK]
            assert config.iceServers == []  # no STUN / TURN
            client, server = RTCPeerConnection(config), RTCPeerConnection(config)
            synth = private_neural(landmark_model, InvertBackend())
            session = await StreamSession(avatar, synth, StreamConfig()).start()
            video, audio = session.subscribe()
            player = MediaPlayer(str(wav))
            sinks: list[MicrophoneSink] = []
            got_audio, got_frames = asyncio.Event(), asyncio.Event()
            received: list = []
            audio_frames: list = []

            @server.on("track")
            def on_server_track(track):
                if track.kind == "audio":
                    sinks.append(MicrophoneSink(session, track))
                    sinks[-1].start()
                    got_audio.set()

            async def consume(track):
                while True:
                    try:
                        frame = await track.recv()
                    except MediaStreamError:
                        return
                    if track.kind == "audio":
                        audio_frames.append(frame.pts)
                        continue
                    received.append((frame.pts, frame.height, frame.width))
                    if len(received) >= WANT:
                        got_frames.set()

            consumers: list[asyncio.Task] = []

            @client.on("track")
            def on_client_track(track):
                consumers.append(asyncio.ensure_future(consume(track)))

            try:
                client.addTrack(player.audio)
                client.addTransceiver("video", direction="recvonly")
                await client.setLocalDescription(await client.createOffer())
                await server.setRemoteDescription(client.localDescription)
                server.addTrack(video)
                server.addTrack(audio)
                await server.setLocalDescription(await server.createAnswer())
                await client.setRemoteDescription(server.localDescription)

                await asyncio.wait_for(got_audio.wait(), LIMIT)
                await asyncio.wait_for(got_frames.wait(), LIMIT)

                # only loopback candidates were gathered, and the selected pairs are loopback
                for pc in (client, server):
                    assert local_candidate_hosts(pc) == {LOOPBACK}
                    pairs = selected_pairs(pc)
                    assert pairs and all(la[0] == LOOPBACK and ra[0] == LOOPBACK for la, ra in pairs)

                # the client hangs up: its sender says BYE, the server's audio track ends -> END
                await client.close()
                await asyncio.wait_for(sinks[0].wait(), LIMIT)
            finally:
                await client.close()
                await server.close()
                await session.aclose()
                for sink in sinks:
                    await sink.aclose()
                for task in consumers:
                    await asyncio.wait_for(task, LIMIT)
            stats = session.live.stats
        assert aioice.ice.get_host_addresses is real_hosts  # restored
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        return received, audio_frames, session.video, sinks[0], stats, client, server, leftover

    received, audio_frames, video, sink, stats, client, server, leftover = asyncio.run(
        asyncio.wait_for(main(), 3 * LIMIT)
    )

    assert len(received) >= WANT
    h, w = avatar.frame_size
    assert len(audio_frames) > 10  # the delayed audio came back on the same connection
    assert all((fh, fw) == (h, w) for _, fh, fw in received)
    steps = [(b - a) % (1 << 32) for (a, _, _), (b, _, _) in itertools.pairwise(received)]
    assert steps and all(s == RTP_STEP for s in steps), steps
    # the server sent session frames (not only repeats), and the microphone reached the session
    assert video.fresh > 0 and video.sent >= len(received)
    assert sink.frames > 0 and sink.sample_rate == 48000 and stats.frames > 0
    # everything closed
    assert client.connectionState == "closed" and server.connectionState == "closed"
    assert video.readyState == "ended"
    assert not leftover, leftover
    assert not [t for t in threading.enumerate() if t.name.startswith("mouthpiece-live")]


class FakeClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("phase_ms", [0.0, 3.0, 19.0, 21.0, 39.0])
def test_playout_puts_session_frame_zero_at_exactly_the_delay(phase_ms):
    """The first audio fixes the anchor and moves the grid's phase (by at most half a frame) so that
    session frame 0, and its audio, are due exactly ``delay`` after the audio came in, wherever it
    fell between two frames; an earlier implied arrival (a late first packet) moves it again."""
    from streaming.tracks import Playout

    clock = FakeClock()
    pl = Playout(0.4, clock=clock)
    start0 = pl.start
    clock.t += 1.0 + phase_ms / 1e3  # the first audio arrives 1 s + phase into the session
    t0 = clock.t
    anchor = pl.set_anchor(t0)
    assert pl.time_of_session_frame(0) == pytest.approx(t0 + 0.4, abs=1e-9)
    assert pl.start + anchor / 25 == pytest.approx(t0 + 0.4, abs=1e-9)
    assert abs(pl.start - start0) <= 0.020 + 1e-9 and float(anchor).is_integer()
    assert pl.set_anchor(t0 + 5.0) == anchor  # once

    # audio pushed 15 ms later says sample 0 would have arrived 12 ms before the first packet did
    clock.t += 0.015
    assert pl.refine_anchor(t0 - 0.012)
    assert pl.time_of_session_frame(0) == pytest.approx(t0 - 0.012 + 0.4, abs=1e-9)
    assert not pl.refine_anchor(t0 - 0.0125)  # under REFINE_MIN_S earlier: no churn
    assert not pl.refine_anchor(t0)  # later: never
    # once session frame 0 is about to be shown, the anchor stays
    clock.t = pl.time_of_session_frame(0) - 0.030
    assert not pl.refine_anchor(t0 - 0.2)
    assert pl.time_of_session_frame(0) == pytest.approx(t0 - 0.012 + 0.4, abs=1e-9)


def test_playout_with_a_delay_under_two_frames_keeps_the_grid():
    """A delay too short to move the grid (the frame would be due before the tracks could follow):
    the next frame on the present grid, as late as a frame."""
    from streaming.tracks import Playout

    clock = FakeClock()
    pl = Playout(0.0, clock=clock)
    start0 = pl.start
    clock.t += 0.515  # between frames 12 (0.48) and 13 (0.52)
    anchor = pl.set_anchor(clock.t)
    assert pl.start == start0 and anchor == 13
    assert 0.0 <= pl.time_of_session_frame(0) - clock.t < 0.040
