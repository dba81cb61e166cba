"""Hostile and careless input on the server's message channels (issue 15): the websocket (the
``start`` message and every control with every wrong JSON type, huge and non-finite numbers,
broken JSON, oversized text, invalid UTF-8, NaN audio, odd byte counts, messages after ``end``
and after the server closed the session, 100 sockets at once) and the WebRTC data channel (the
same probes from a real aiortc peer). Each answer is checked (its error code and sentence; no
path, traceback or exception text), no handler crashes (no traceback in the server's log), and
a normal session works afterwards on the same server. The HTTP cases are in
test_hostile_server.py."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import cv2
import numpy as np
import pytest
from aiohttp import WSMsgType
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from streaming import websocket
from streaming.ice import loopback_configuration
from streaming.server import AvatarLibrary, ServerConfig, create_app
from tests.conftest import ROOT
from tests.helpers import (
    LIMIT,
    ThreadServer,
    assert_clean,
    invert_engine,
    server_config,
    speechlike,
    write_wav,
)

MAX_SESSIONS = 4


@pytest.fixture(scope="module")
def hs(tmp_path_factory, landmark_model):
    root = tmp_path_factory.mktemp("hostile-ws")
    avatars = root / "avatars"
    avatars.mkdir()
    cv2.imwrite(str(avatars / "blank.png"), np.full((256, 256, 3), 128, np.uint8))
    cfg = ServerConfig(
        refs=1, cache_dir=str(root / "cache"), avatar_dir=str(avatars), default_avatar="portrait"
    )
    app = create_app(
        server_config(max_sessions=MAX_SESSIONS),
        engine=invert_engine(landmark_model),
        library=AvatarLibrary.from_config(cfg),
    )
    with ThreadServer(app) as running:
        running.private = (str(root), str(ROOT))
        running.wav = root / "speech.wav"
        write_wav(running.wav, speechlike(2.0, seed=3))
        yield running


@pytest.fixture(autouse=True)
def still_serves(hs):
    """After each test: no handler crashed, no session is left, a normal session works."""
    before = len(hs.errors)
    yield
    assert hs.errors[before:] == []
    hs.assert_no_sessions()
    hs.assert_serves()
    hs.assert_no_sessions()


def ws_url(hs, query: str = "") -> str:
    return hs.url.replace("http", "ws") + "/ws" + query


async def reply(ws, hs) -> dict:
    """The next JSON message of the server (checked for leaks)."""
    msg = await ws.receive(timeout=LIMIT)
    assert msg.type == WSMsgType.TEXT, msg
    return json.loads(assert_clean(msg.data, *hs.private))


# ---- text messages: every control with every wrong type ---------------------------------------

RATE = "sample_rate must be a whole number from 1000 to 384000"
CHANNELS = "channels must be a whole number from 1 to 8"
FORMAT = "format must be one of f32le, s16le"
AVATAR = "avatar must be a string (the name of an avatar)"
KINDS = "one of flush, interrupt, segment_end, switch_avatar, stats, events, end"
TURNS = "turns must be true or false"
NO_UTTERANCE = "segment_end: no utterance to end (no audio since the last one ended)"
TEXT_CASES = [
    # (the text sent, the error code, the sentence)
    ('{"type": "start", "sample_rate": Infinity}', "bad_format", f"{RATE}, not inf"),
    ('{"type": "start", "sample_rate": -Infinity}', "bad_format", f"{RATE}, not -inf"),
    ('{"type": "start", "sample_rate": NaN}', "bad_format", f"{RATE}, not nan"),
    ('{"type": "start", "sample_rate": 1e999}', "bad_format", f"{RATE}, not inf"),
    ('{"type": "start", "sample_rate": -1}', "bad_format", f"{RATE}, not -1"),
    ('{"type": "start", "sample_rate": 0}', "bad_format", f"{RATE}, not 0"),
    ('{"type": "start", "sample_rate": 1e12}', "bad_format", f"{RATE}, not 1000000000000"),
    ('{"type": "start", "sample_rate": 16000.5}', "bad_format", f"{RATE}, not 16000.5"),
    (
        '{"type": "start", "sample_rate": ' + "9" * 60 + "}",
        "bad_format",
        f"{RATE}, not 9999999999999999999999999999999999999...",
    ),
    ('{"type": "start", "sample_rate": "16000"}', "bad_format", f"{RATE}, not a string"),
    ('{"type": "start", "sample_rate": null}', "bad_format", f"{RATE}, not null"),
    ('{"type": "start", "sample_rate": true}', "bad_format", f"{RATE}, not a boolean"),
    ('{"type": "start", "sample_rate": [16000]}', "bad_format", f"{RATE}, not an array"),
    ('{"type": "start", "sample_rate": {"hz": 1}}', "bad_format", f"{RATE}, not an object"),
    ('{"type": "start", "channels": 0}', "bad_format", f"{CHANNELS}, not 0"),
    ('{"type": "start", "channels": 9}', "bad_format", f"{CHANNELS}, not 9"),
    ('{"type": "start", "channels": 2.5}', "bad_format", f"{CHANNELS}, not 2.5"),
    ('{"type": "start", "channels": false}', "bad_format", f"{CHANNELS}, not a boolean"),
    ('{"type": "start", "format": 5}', "bad_format", f"{FORMAT}, not a number"),
    ('{"type": "start", "format": "u8"}', "bad_format", f"{FORMAT}, not 'u8'"),
    ('{"type": "start", "format": ["s16le"]}', "bad_format", f"{FORMAT}, not an array"),
    ('{"type": "switch_avatar", "avatar": ["portrait"]}', "bad_message", f"{AVATAR}, not an array"),
    ('{"type": "switch_avatar", "avatar": {"name": "portrait"}}', "bad_message", f"{AVATAR}, not an object"),
    ('{"type": "switch_avatar", "avatar": 1}', "bad_message", f"{AVATAR}, not a number"),
    (
        '{"type": "switch_avatar", "avatar": null}',
        "bad_message",
        "switch_avatar needs avatar (the name of an avatar)",
    ),
    ('{"type": "switch_avatar"}', "bad_message", "switch_avatar needs avatar (the name of an avatar)"),
    (
        '{"type": "switch_avatar", "avatar": "' + "x" * 300 + '"}',
        "bad_message",
        "avatar is too long (at most 256 characters)",
    ),
    # (the failed avatar first: from then on, it is not among those offered)
    (
        '{"type": "switch_avatar", "avatar": "blank"}',
        "no_face",
        "avatar 'blank' (blank.png) is unavailable: no face was found in it",
    ),
    (
        '{"type": "switch_avatar", "avatar": "../../etc/passwd"}',
        "unknown_avatar",
        "no avatar named '../../etc/passwd'; choose one of ['portrait']",
    ),
    ('{"type": ["flush"]}', "bad_message", f"unknown control message type an array: {KINDS}"),
    ('{"type": "events", "turns": "yes"}', "bad_message", f"{TURNS}, not a string"),
    ('{"type": "events", "turns": 1}', "bad_message", f"{TURNS}, not a number"),
    ('{"type": "events", "turns": null}', "bad_message", f"{TURNS}, not null"),
    ('{"type": "events", "turns": [true]}', "bad_message", f"{TURNS}, not an array"),
    ('{"type": "events", "turns": {"on": true}}', "bad_message", f"{TURNS}, not an object"),
    ('{"type": "segment_end"}', "no_utterance", NO_UTTERANCE),  # before any audio
    ('{"type": "segment_end", "utterance": [1]}', "no_utterance", NO_UTTERANCE),  # extra fields: ignored
    ('{"type": "Segment_End"}', "bad_message", f"unknown control message type 'Segment_End': {KINDS}"),
    ('{"type": "segment-end"}', "bad_message", f"unknown control message type 'segment-end': {KINDS}"),
    ('{"type": null}', "bad_message", f"unknown control message type null: {KINDS}"),
    ('{"type": 5}', "bad_message", f"unknown control message type a number: {KINDS}"),
    ("{}", "bad_message", f"unknown control message type null: {KINDS}"),
    ('{"type": "reboot"}', "bad_message", f"unknown control message type 'reboot': {KINDS}"),
    (
        '{"type": "' + "z" * 1000 + '"}',
        "bad_message",
        f"unknown control message type 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz...: {KINDS}",
    ),
    ("not json", "bad_message", "a control message is not JSON"),
    ("", "bad_message", "a control message is not JSON"),
    ("[1, 2]", "bad_message", "a control message must be a JSON object, not an array"),
    ('"flush"', "bad_message", "a control message must be a JSON object, not a string"),
    ("[" * 30000 + "]" * 30000, "bad_message", "a control message is nested too deeply"),
    ('{"a":' * 10000 + "1" + "}" * 10000, "bad_message", "a control message is nested too deeply"),
    (
        '{"type": "flush", "pad": "' + "p" * 70000 + '"}',
        "bad_message",
        "a control message is too long: at most 64 KiB",
    ),
    (
        '{"type": "start", "sample_rate": ' + "1" * 5000 + "}",
        "bad_message",
        "a control message has a number that is too long",
    ),
]


def test_every_wrong_control_is_answered_and_the_socket_keeps_working(hs):
    """All the cases on one socket, in a row: each gets its error (code and sentence), and the
    session goes on (a good ``start`` and ``stats`` after each; 1 s of audio after all of them)."""

    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            sid = (await reply(ws, hs))["session"]
            for text, code, sentence in TEXT_CASES:
                await ws.send_str(text)
                got = await reply(ws, hs)
                assert got == {"type": "error", "error": code, "message": sentence}, text[:80]
                await ws.send_str('{"type": "stats"}')
                assert (await reply(ws, hs))["session"] == sid
            await ws.send_str('{"type": "start", "sample_rate": 48000.0, "channels": 1, "format": "s16le"}')
            assert await reply(ws, hs) == {
                "type": "started",
                "sample_rate": 48000,
                "channels": 1,
                "format": "s16le",
            }

    asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))


def test_invalid_utf8_text_closes_with_1007(hs):
    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            await reply(ws, hs)
            await ws._writer.send_frame(b'{"type": "\xff\xfe"}', WSMsgType.TEXT)  # what send_str never sends
            msg = await ws.receive(timeout=LIMIT)
            while msg.type == WSMsgType.TEXT:
                msg = await ws.receive(timeout=LIMIT)
            return msg.type, ws.close_code

    kind, code = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert kind in (WSMsgType.CLOSE, WSMsgType.CLOSED) and code == 1007  # invalid frame payload data


@pytest.mark.parametrize(
    "query, code, sentence",
    [
        ("?avatar=blank", "no_face", "avatar 'blank' (blank.png) is unavailable: no face was found in it"),
        ("?avatar=%ff%fe", "unknown_avatar", "no avatar named '\ufffd\ufffd'; choose one of ['portrait']"),
        ("?avatar=", "unknown_avatar", "no avatar named ''; choose one of ['portrait']"),
    ],
)
def test_websocket_avatar_query(hs, query, code, sentence):
    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs, query)) as ws:
            got = await reply(ws, hs)
            msg = await ws.receive(timeout=LIMIT)
            return got, msg.type, ws.close_code

    got, kind, close = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert got == {"type": "error", "error": code, "message": sentence}
    assert kind == WSMsgType.CLOSE and close == 1008


# ---- audio -------------------------------------------------------------------------------------


def test_binary_audio_odd_bytes_nan_and_messages_after_end(hs):
    """Audio before any ``start`` (the default 16 kHz s16le), in odd byte counts and empty
    messages; f32le audio with NaN and infinities (replaced by silence, the client told once,
    counted in stats); controls and audio after ``end``."""
    x = (speechlike(0.5, seed=2) * 32767).astype("<i2").tobytes()

    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            sid = (await reply(ws, hs))["session"]
            s = hs.server.sessions[sid].stream
            for i in range(0, len(x), 333):  # odd sizes: half samples carried over
                await ws.send_bytes(x[i : i + 333])
            await ws.send_bytes(b"")
            await ws.send_str('{"type": "start", "sample_rate": 16000, "format": "f32le"}')
            assert (await reply(ws, hs))["type"] == "started"
            bad = speechlike(0.5, seed=5)
            bad[::7], bad[1::7], bad[2::7] = np.nan, np.inf, -np.inf
            await ws.send_bytes(bad.astype("<f4").tobytes())
            assert await reply(ws, hs) == {
                "type": "warning",
                "warning": "nonfinite_audio",
                "message": "the audio had NaN or infinite samples: they were replaced by silence "
                "(send finite samples, f32le from -1 to 1)",
            }
            await ws.send_bytes(np.full(1600, 1e30, "<f4").tobytes())  # huge but finite: clipped
            await ws.send_bytes(bad.astype("<f4").tobytes())  # told once only: the next is stats
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LIMIT
            while True:
                await ws.send_str('{"type": "stats"}')
                stats = await reply(ws, hs)
                assert stats["type"] == "stats", stats
                if stats["session_frames"]["audio_seconds"] >= 1.6 - 1e-6:  # every sample is in
                    break
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
            per_message = sum(len(range(k, bad.size, 7)) for k in range(3))
            assert stats["nonfinite_samples"] == 2 * per_message
            played = hs.call(_read_audio(s, int(1.6 * 48000)))  # the playout audio (48 kHz)
            # finite, and the 1e30 samples entered as full scale (the 48 kHz resampler overshoots a
            # full-scale step by ~15 %)
            assert played.size and np.isfinite(played).all() and 0.99 < np.abs(played).max() < 1.5
            await ws.send_str('{"type": "end"}')
            assert await reply(ws, hs) == {"type": "ended"}
            # after end: audio is refused, controls answer, end again is ended
            await ws.send_bytes(x[:320])
            assert await reply(ws, hs) == {
                "type": "error",
                "error": "ended",
                "message": "audio after end is ignored",
            }
            for text, want in (
                ('{"type": "flush"}', {"type": "flush", "ok": True}),
                ('{"type": "interrupt"}', {"type": "interrupt", "ok": True}),
                ('{"type": "switch_avatar", "avatar": "portrait"}', {"type": "avatar", "avatar": "portrait"}),
                ('{"type": "end"}', {"type": "ended"}),
                ('{"type": "start", "sample_rate": Infinity}', None),
            ):
                await ws.send_str(text)
                got = await reply(ws, hs)
                if want is not None:
                    assert got == want, text
                else:
                    assert got["error"] == "bad_format"
            await ws.send_str('{"type": "stats"}')
            return await reply(ws, hs)

    stats = asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))
    assert stats["type"] == "stats" and stats["nonfinite_samples"] > 0


def test_segment_end_before_audio_twice_after_end_and_turn_events(hs):
    """``segment_end`` with nothing to end (before any audio, twice in a row) and after ``end``
    is answered with its error and the session goes on; with the events asked for, an utterance
    ended by ``segment_end`` is played out (no viewer: on the playout clock) to its full length;
    ``events`` off stops them."""
    x = speechlike(0.4, seed=9)

    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            await reply(ws, hs)
            events: list[dict] = []

            async def answer() -> dict:
                while True:
                    got = await reply(ws, hs)
                    if got["type"] in ("playback_started", "playback_finished"):
                        events.append(got)
                    else:
                        return got

            no_utterance = {"type": "error", "error": "no_utterance", "message": NO_UTTERANCE}
            await ws.send_str('{"type": "segment_end"}')
            assert await answer() == no_utterance
            await ws.send_str('{"type": "events"}')  # turns: true by default
            assert await answer() == {"type": "events", "turns": True}
            await ws.send_bytes((x * 32767).astype("<i2").tobytes())
            await ws.send_str('{"type": "segment_end"}')
            assert await answer() == {"type": "segment_end", "ok": True, "utterance": 1}
            await ws.send_str('{"type": "segment_end"}')  # twice
            assert await answer() == no_utterance
            while not any(e["type"] == "playback_finished" for e in events):
                await ws.send_str('{"type": "stats"}')
                assert (await answer())["type"] == "stats"
                await asyncio.sleep(0.05)
            started, finished = events
            assert started["type"] == "playback_started" and started["utterance"] == 1
            assert finished["utterance"] == 1 and finished["interrupted"] is False
            assert finished["reason"] == "segment_end" and finished["position_s"] == pytest.approx(0.4)
            await ws.send_str('{"type": "events", "turns": false}')
            assert await answer() == {"type": "events", "turns": False}
            await ws.send_bytes((x * 32767).astype("<i2").tobytes())
            await ws.send_str('{"type": "end"}')
            assert await answer() == {"type": "ended"}
            await ws.send_str('{"type": "segment_end"}')  # after end
            assert await answer() == {
                "type": "error",
                "error": "ended",
                "message": "segment_end after end: the session takes no more audio",
            }
            await ws.send_str('{"type": "stats"}')
            stats = await answer()
            assert stats["type"] == "stats" and len(events) == 2  # none after events off
            return stats

    asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))


async def _read_audio(s, n: int) -> np.ndarray:
    return np.asarray(s.read_audio(0, n), dtype=np.float32)


# ---- the session closed by the server; many sockets ---------------------------------------------


def test_a_deleted_session_closes_its_socket_at_once_and_later_messages_are_harmless(hs, monkeypatch):
    """``DELETE /api/sessions/{id}`` while the client is sending: the socket closes with 1000
    "session ended" when the session closes (the probe that would also notice it is made 10
    minutes apart here, so the close within LIMIT is the session's doing), and what the client
    sent meanwhile causes no error."""
    monkeypatch.setattr(websocket, "PROBE_S", 600.0)

    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            sid = (await reply(ws, hs))["session"]

            async def chatter():
                for _ in range(50):
                    await ws.send_str('{"type": "flush"}')
                    await ws.send_bytes(b"\x00\x01" * 160)
                    await asyncio.sleep(0.001)

            talk = asyncio.create_task(chatter())
            async with http.delete(f"{hs.url}/api/sessions/{sid}") as r:
                status, body = r.status, await r.json()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            msg = await ws.receive(timeout=LIMIT)
            while msg.type == WSMsgType.TEXT:  # replies to what was sent before the DELETE
                assert json.loads(msg.data)["type"] in ("flush", "error"), msg.data
                msg = await ws.receive(timeout=LIMIT)
            closed_after = loop.time() - t0
            with contextlib.suppress(ConnectionError, RuntimeError):
                await talk
            return status, body, sid, msg, ws.close_code, closed_after

    status, body, sid, msg, code, closed_after = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert status == 200 and body == {"closed": sid}
    assert msg.type == WSMsgType.CLOSE and code == 1000 and msg.extra == "session ended"
    assert closed_after < LIMIT


def test_a_hundred_sockets_get_the_session_limit(hs):
    """100 websockets at once: MAX_SESSIONS get a session, every other one the ``busy`` error and
    close code 1013; all slots are free again when they leave."""

    async def one(http):
        async with http.ws_connect(ws_url(hs)) as ws:
            first = await reply(ws, hs)
            if first["type"] == "session":
                return first, None
            msg = await ws.receive(timeout=LIMIT)
            return first, ws.close_code if msg.type == WSMsgType.CLOSE else msg.type

    async def hold():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            sockets = [await http.ws_connect(ws_url(hs)) for _ in range(MAX_SESSIONS)]
            firsts = [await reply(ws, hs) for ws in sockets]
            answers = await asyncio.gather(*(one(http) for _ in range(100)))
            for ws in sockets:
                await ws.close()
            return firsts, answers

    firsts, answers = asyncio.run(asyncio.wait_for(hold(), 6 * LIMIT))
    assert all(f["type"] == "session" for f in firsts)
    assert all(
        a[0]["error"] == "busy" and a[0]["max_sessions"] == MAX_SESSIONS and a[1] == 1013 for a in answers
    )
    assert "all 4 session slots are in use" in answers[0][0]["message"]
    hs.assert_no_sessions()
    assert hs.server.rejected_total >= 100


# ---- the data channel --------------------------------------------------------------------------

CHANNEL_CASES = [
    ("not json", "bad_message", "a control message is not JSON"),
    (b"\xff\xfe\x00binary", "bad_message", "a control message is not UTF-8 text"),
    ("[1]", "bad_message", "a control message must be a JSON object, not an array"),
    ('{"type": ["flush"]}', "bad_message", f"unknown control message type an array: {KINDS}"),
    (
        '{"type": "start", "sample_rate": 8000}',
        "bad_message",
        f"unknown control message type 'start': {KINDS}",
    ),
    ('{"type": "switch_avatar", "avatar": ["portrait"]}', "bad_message", f"{AVATAR}, not an array"),
    (
        '{"type": "switch_avatar", "avatar": "blank"}',
        "no_face",
        "avatar 'blank' (blank.png) is unavailable: no face was found in it",
    ),
    ('{"type": "events", "turns": "off"}', "bad_message", f"{TURNS}, not a string"),
    ("[" * 20000 + "]" * 20000, "bad_message", "a control message is nested too deeply"),
    (
        '{"type": "stats", "x": ' + "7" * 5000 + "}",
        "bad_message",
        "a control message has a number that is too long",
    ),
]


def test_data_channel_probes_are_answered_and_the_session_plays(hs):
    """A browser-like aiortc peer (microphone from a file, the ``control`` channel, video
    received): every probe gets its error reply, then ``flush`` and ``stats`` work and video
    frames arrive."""

    async def main():
        pc = RTCPeerConnection(loopback_configuration())
        channel = pc.createDataChannel("control")
        opened, replies = asyncio.Event(), asyncio.Queue()
        channel.on("open", opened.set)

        @channel.on("message")
        def _message(m) -> None:
            replies.put_nowait(json.loads(assert_clean(m, *hs.private)))  # stats pushes too

        player = MediaPlayer(str(hs.wav))
        pc.addTrack(player.audio)
        video = pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    hs.url + "/offer", json={"type": "offer", "sdp": pc.localDescription.sdp}
                ) as r:
                    assert r.status == 200, await r.text()
                    answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
            await asyncio.wait_for(opened.wait(), LIMIT)

            async def next_reply() -> dict:
                while True:  # the pushes (stats, the turn-taking events) are not replies
                    got = await asyncio.wait_for(replies.get(), LIMIT)
                    if got.get("type") not in ("stats", "playback_started", "playback_finished"):
                        return got

            for probe, code, sentence in CHANNEL_CASES:
                channel.send(probe)
                assert await next_reply() == {"type": "error", "error": code, "message": sentence}, probe
            channel.send('{"type": "flush"}')
            assert await next_reply() == {"type": "flush", "ok": True}
            frame = await asyncio.wait_for(video.receiver.track.recv(), LIMIT)
            return frame.width, answer["session"]
        finally:
            await pc.close()
            player.audio.stop()

    width, sid = asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))
    assert width > 0


def test_a_whep_viewer_of_a_session_that_ends_mid_negotiation(hs):
    """A WHEP offer for a session that is deleted at the same moment: 201 (the viewer then goes
    with the session) or 404 with its plain line; no viewer or session is left behind."""

    async def main():
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(hs)) as ws:
            sid = (await reply(ws, hs))["session"]
            pc = RTCPeerConnection(loopback_configuration())
            pc.addTransceiver("video", direction="recvonly")
            pc.addTransceiver("audio", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())

            async def offer():
                async with http.post(
                    f"{hs.url}/whep/{sid}",
                    data=pc.localDescription.sdp,
                    headers={"Content-Type": "application/sdp"},
                ) as r:
                    return r.status, await r.text()

            async def delete():
                async with http.delete(f"{hs.url}/api/sessions/{sid}") as r:
                    return r.status

            answered, deleted = await asyncio.gather(offer(), delete())
            await pc.close()
            return answered, deleted

    (status, text), deleted = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert deleted == 200
    assert_clean(text, *hs.private)
    assert status == 201 or (status, text) in (
        (404, "no such session (it has ended)"),
        (404, "no such session (it may have ended)"),
    ), (status, text)
