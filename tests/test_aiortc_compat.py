"""Every reach into aiortc / aioice internals (streaming/aiortc_compat.py) against the installed aiortc.

The first test inspects real aiortc objects (a peer connection with transceivers, a sender) without
connecting anything: each capability check holds and each function reads or changes what it should, and
fails clearly on an object that is not aiortc's. The second makes one short call between two peer
connections in this process over loopback only (:func:`streaming.ice.loopback_ice`) and checks that the
hooks take effect: the replaced encoder output is what the send loop uses, the RTCP tap sees sender
reports, the RTP timestamp origin becomes known, and the nominated ICE pairs are read. Every wait has a
time limit.
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket

from streaming import aiortc_compat as compat
from streaming.ice import LOOPBACK, local_candidate_hosts, loopback_ice, selected_pairs

LIMIT = 20.0  # seconds: a bound on every wait


def test_capabilities_on_real_aiortc_objects():
    async def main():
        pc = RTCPeerConnection()
        try:
            audio = pc.addTransceiver("audio")
            video = pc.addTransceiver("video")
            sender = pc.addTrack(VideoStreamTrack())

            # the audio jitter buffer's prefetch (the server's --mic-prefetch)
            rec = audio.receiver
            assert compat.can_set_audio_prefetch(rec)
            assert compat.audio_prefetch(rec) == 4  # aiortc's default, as --mic-prefetch's help says
            assert compat.set_audio_prefetch(rec, 2) and compat.audio_prefetch(rec) == 2
            assert compat.set_audio_prefetch(rec, 0) and compat.audio_prefetch(rec) == 1
            assert not compat.set_audio_prefetch(None, 2)
            assert not compat.can_set_audio_prefetch(object())
            assert compat.audio_prefetch(object()) is None

            # the RTP timestamp origin: known only once a packet arrived
            for r in (audio.receiver, video.receiver):
                assert compat.can_read_rtp_timestamp_origin(r)
                assert compat.rtp_timestamp_origin(r) is None
            assert not compat.can_read_rtp_timestamp_origin(None)
            with pytest.raises(compat.AiortcInternalsError, match="timestamp_mapper"):
                compat.rtp_timestamp_origin(object())

            # the RTCP tap sees a packet before aiortc handles it (aiortc's handler still runs)
            seen = []
            assert compat.can_tap_rtcp(rec)
            compat.tap_rtcp(rec, seen.append)
            sr = RtcpSrPacket(ssrc=1234, sender_info=RtcpSenderInfo(1 << 32, 9000, 1, 100))
            await rec._handle_rtcp_packet(sr)
            assert seen == [sr]
            assert not compat.can_tap_rtcp(object())
            with pytest.raises(compat.AiortcInternalsError, match="_handle_rtcp_packet"):
                compat.tap_rtcp(object(), seen.append)

            # the sender's encoder output
            assert compat.can_replace_next_encoded_frame(sender)
            original = compat.next_encoded_frame(sender)
            assert asyncio.iscoroutinefunction(original)

            async def replacement(codec):
                return await original(codec)

            compat.set_next_encoded_frame(sender, replacement)
            assert compat.next_encoded_frame(sender) is replacement
            assert not compat.can_replace_next_encoded_frame(object())
            assert compat.next_encoded_frame(object()) is None
            with pytest.raises(compat.AiortcInternalsError, match="_next_encoded_frame"):
                compat.set_next_encoded_frame(object(), replacement)

            # the ICE connection under a gatherer (nothing nominated before a call)
            assert compat.missing_aioice_hooks() == []
            compat.require_aioice_hooks()
            conn = compat.ice_connection(audio.sender.transport.transport.iceGatherer)
            assert isinstance(conn, aioice.ice.Connection)
            assert compat.nominated_pairs(conn) == []
            with pytest.raises(compat.AiortcInternalsError, match="_connection"):
                compat.ice_connection(object())
            with pytest.raises(compat.AiortcInternalsError, match="_nominated"):
                compat.nominated_pairs(object())
        finally:
            await pc.close()

    asyncio.run(main())


def test_hooks_take_effect_in_a_loopback_call():
    async def main():
        with loopback_ice() as config:
            client, server = RTCPeerConnection(config), RTCPeerConnection(config)
            source = VideoStreamTrack()
            client.addTrack(AudioStreamTrack())
            video_sender = client.addTrack(source)
            encoded = []
            original = compat.next_encoded_frame(video_sender)

            async def counted(codec):
                frame = await original(codec)
                if frame is not None:
                    encoded.append(frame)
                return frame

            compat.set_next_encoded_frame(video_sender, counted)

            reports: dict[str, list] = {"audio": [], "video": []}
            got = {"audio": asyncio.Event(), "video": asyncio.Event()}
            consumers: list[asyncio.Task] = []

            async def consume(track) -> None:
                while True:
                    try:
                        await track.recv()
                    except MediaStreamError:
                        return
                    got[track.kind].set()

            @server.on("track")
            def on_track(track) -> None:
                consumers.append(asyncio.ensure_future(consume(track)))

            try:
                await client.setLocalDescription(await client.createOffer())
                await server.setRemoteDescription(client.localDescription)
                receivers = {t.kind: t.receiver for t in server.getTransceivers()}
                assert compat.set_audio_prefetch(receivers["audio"], 1)
                for kind, rec in receivers.items():
                    compat.tap_rtcp(
                        rec, lambda p, k=kind: reports[k].append(p) if isinstance(p, RtcpSrPacket) else None
                    )
                await server.setLocalDescription(await server.createAnswer())
                await client.setRemoteDescription(server.localDescription)

                for kind in ("audio", "video"):
                    await asyncio.wait_for(got[kind].wait(), LIMIT)
                    assert isinstance(compat.rtp_timestamp_origin(receivers[kind]), int)
                assert compat.audio_prefetch(receivers["audio"]) == 1
                assert encoded  # the send loop took its frames from the replacement

                async def sender_reports() -> None:  # aiortc sends RTCP every 0.5-1.5 s
                    while not (reports["audio"] and reports["video"]):
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(sender_reports(), LIMIT)

                for pc in (client, server):
                    pairs = selected_pairs(pc)
                    assert pairs and all(a[0] == LOOPBACK and b[0] == LOOPBACK for a, b in pairs)
                    assert local_candidate_hosts(pc) == {LOOPBACK}
            finally:
                source.stop()
                await client.close()
                await server.close()
                for t in consumers:
                    t.cancel()
                await asyncio.gather(*consumers, return_exceptions=True)

    asyncio.run(main())


def test_frames_are_handed_on_at_their_last_packet():
    """hand_on_frames_at_once: a video frame leaves the receiver's jitter buffer at its marker packet
    (aiortc's own: when the next frame's first packet arrives), in order, with its payloads joined; a
    frame whose marker was lost leaves when the next frame begins; every audio packet is a frame."""
    from aiortc.rtp import RtpPacket

    def packet(seq: int, ts: int, data: bytes, marker: bool) -> RtpPacket:
        p = RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, marker=int(marker))
        p._data = data  # what aiortc's receiver sets (the depayloaded bytes) before the buffer sees it
        return p

    async def main():
        pc = RTCPeerConnection()
        try:
            video, audio = pc.addTransceiver("video").receiver, pc.addTransceiver("audio").receiver
            assert compat.can_hand_on_frames_at_once(video)
            assert not compat.can_hand_on_frames_at_once(object()) and not compat.hand_on_frames_at_once(None)
            assert compat.hand_on_frames_at_once(video) and compat.hand_on_frames_at_once(audio)
            jb = getattr(video, compat._JITTER_BUFFER)
            assert jb.add(packet(100, 3000, b"a", False)) == (False, None)  # not complete yet
            _, frame = jb.add(packet(101, 3000, b"b", True))  # its last packet: handed on at once
            assert (frame.timestamp, frame.data) == (3000, b"ab")
            assert jb.add(packet(102, 6600, b"c", False))[1] is None  # its marker (103) is lost ...
            assert jb.add(packet(104, 10200, b"d", True))[1] is None  # ... and 103 is missing: a gap
            _, frame = jb.add(packet(103, 6600, b"e", False))  # the gap filled: the frame, no marker
            assert (frame.timestamp, frame.data) == (6600, b"ce")
            # one frame per packet added (as aiortc's): 104, complete since, leaves with the next packet
            _, frame = jb.add(packet(105, 13800, b"f", True))
            assert (frame.timestamp, frame.data) == (10200, b"d")
            ajb = getattr(audio, compat._JITTER_BUFFER)
            for seq in range(7, 10):
                _, frame = ajb.add(packet(seq, seq * 960, bytes([seq]), False))
                assert (frame.timestamp, frame.data) == (seq * 960, bytes([seq]))  # no prefetch, no wait
        finally:
            await pc.close()

    asyncio.run(asyncio.wait_for(main(), LIMIT))
