"""What one websocket client can make the server hold is bounded: audio far ahead of real time in one
message (60 s, and 15 MB = 491 s) enters the session no more than ``max_lead_s`` ahead, frames are
made no further ahead than playout needs (the preview renderer on the bundled 512x512 portrait: one
full-frame image per speech frame, which is what made 60 s of audio cost 1.1 GB before), the session
still lip-syncs, and a client that leaves with audio queued has its session torn down within
seconds. A message over the limit is refused with a clear error and close code 1009. The server runs
in this process (aiohttp on a free port, the ``websockets`` library as the client); the RSS figures
include the client's copy of what it sends, so the bounds are generous and stated with each test.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest
import websockets

from engine.core.clock import FPS
from engine.live.session import LiveConfig
from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app
from streaming.session import RENDER_MARGIN_S, StreamConfig
from streaming.websocket import MAX_MESSAGE_BYTES
from tests.helpers import LIMIT, speechlike, until

DELAY_MS = 400.0  # the server's default
MAX_LEAD_S = 20.0  # the server's default
MIB = 1024 * 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize() / MIB


@pytest.fixture(scope="module")
def make_app(tmp_path_factory):
    empty = tmp_path_factory.mktemp("no-checkpoints")
    cache = tmp_path_factory.mktemp("bounded-avatars")

    def make(max_lead_s: float = MAX_LEAD_S):
        cfg = ServerConfig(
            loopback=True,
            refs=1,
            device="cpu",
            checkpoint_dir=str(empty),
            cache_dir=str(cache),
            stream=StreamConfig(delay_ms=DELAY_MS, max_lead_s=max_lead_s, live=LiveConfig(batch=2)),
        )
        engine = ModelEngine.from_config(cfg)
        assert engine.mode == "preview"  # a full-frame image per speech frame: what filled memory before
        return create_app(cfg, engine=engine, library=AvatarLibrary.from_config(cfg))

    return make


def pcm(seconds: float, seed: int = 0) -> bytes:
    """Speech (s16le, 16 kHz mono) of ``seconds``: the 3 s test signal repeated."""
    x = np.tile(speechlike(3.0, seed=seed), int(np.ceil(seconds / 3.0)))[: int(seconds * 16000)]
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


async def recv_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), LIMIT))


async def watch(s, seconds: float, marks: dict) -> None:
    """Sample the session for ``seconds``: the largest lead, how far ahead of playout frames are made
    (in frames), and the process's RSS."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        marks["lead"] = max(marks.get("lead", -1e9), s.lead_s())
        due = s.playout.session_frame(s.playout.frame_now())
        ready = s._ready  # the frames made and waiting for their time (the pump moves them at once)
        if ready and due is not None:  # how far ahead of the frame due now the newest one made is
            marks["ahead"] = max(marks.get("ahead", 0), ready[-1].index - due)
        marks["rss"] = max(marks.get("rss", 0.0), rss_mib())
        await asyncio.sleep(0.02)


def one_big_message(make_app, payload: bytes, watch_s: float):
    app = make_app()
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            ws_url = url.replace("http", "ws") + "/ws"
            async with websockets.connect(ws_url, max_size=None, close_timeout=LIMIT) as ws:
                sid = (await recv_json(ws))["session"]
                s = server.sessions[sid].stream
                closed = asyncio.Event()
                s.on_close = lambda _s: closed.set()
                before = rss_mib()
                t_sent = time.perf_counter()
                await ws.send(payload)
                await until(lambda: s.live.samples_received > 16000 * (MAX_LEAD_S - 1), "the lead to fill")
                marks: dict = {}
                await watch(s, watch_s, marks)
                await ws.send(json.dumps({"type": "stats"}))
                stats = await recv_json(ws)
                received = s.live.samples_received
                t_left = time.perf_counter()
                elapsed = t_left - t_sent
            # the client left with most of its audio not yet taken in: the session goes at once
            await asyncio.wait_for(closed.wait(), LIMIT)
            gone_s = time.perf_counter() - t_left
            await until(lambda: not server.sessions, "the registry to drop the session")
        return before, marks, stats, received, elapsed, gone_s

    return asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))


def check(before, marks, stats, received, elapsed, gone_s, payload_s: float, rss_bound_mib: float) -> None:
    assert marks["lead"] <= MAX_LEAD_S + 0.05, marks  # never further ahead than max_lead_s
    # what went in: the lead and the time that passed; the rest of the message waited, unprocessed
    assert received <= 16000 * (MAX_LEAD_S + elapsed + 0.1), (received, elapsed)
    assert received < 16000 * (payload_s - 5)
    # frames are made at most delay + margin ahead of the frame due now (+ a model call and a batch)
    assert marks["ahead"] <= (DELAY_MS / 1e3 + RENDER_MARGIN_S + 0.5) * FPS + 4, marks
    assert marks["rss"] - before < rss_bound_mib, (before, marks)
    sf = stats["session_frames"]
    assert sf["speech_frames"] > 50 and sf["frames"] >= sf["speech_frames"]  # still lip-synced
    assert stats["lead_s"] > MAX_LEAD_S - 2  # and still far ahead: the held audio is fed as it goes
    assert gone_s < 5.0, gone_s  # torn down within seconds, audio queued or not


def test_one_message_of_60_s_is_fed_as_the_lead_allows(make_app):
    """60 s in one message (1.9 MB): before, 1.1 GB (every frame made at once). Bounds: 100 MiB of
    RSS growth (measured: 27-37 MiB), the lead <= 20 s, frames made no more than ~1.1 s ahead of the
    frame due (measured: 16 frames, 0.64 s)."""
    payload = pcm(60.0)
    check(*one_big_message(make_app, payload, watch_s=4.0), payload_s=60.0, rss_bound_mib=100.0)


def test_one_message_of_15_mb_is_fed_as_the_lead_allows(make_app):
    """15 MB in one message (491 s of 16 kHz audio): before, 5 GB in 13 s. Bound: 200 MiB of RSS
    growth (measured: 75-84 MiB), which includes ~45 MB of copies of the message (the client's, its
    masked frame, the server's)."""
    payload = pcm(15 * 1024 * 1024 / 32000)
    assert len(payload) < MAX_MESSAGE_BYTES
    check(
        *one_big_message(make_app, payload, watch_s=3.0),
        payload_s=len(payload) / 32000,
        rss_bound_mib=200.0,
    )


def test_flush_drops_held_audio_and_a_message_too_big_is_refused(make_app):
    """A flush read while audio waits for the lead drops it (the session's clock stops where it was);
    a message over 16 MiB gets the error ``too_big`` and close code 1009, and its session ends."""
    app = make_app()
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            ws_url = url.replace("http", "ws") + "/ws"
            async with websockets.connect(ws_url, max_size=None) as ws:
                sid = (await recv_json(ws))["session"]
                s = server.sessions[sid].stream
                t_sent = time.perf_counter()
                await ws.send(pcm(40.0))
                await until(lambda: s.live.samples_received > 16000 * (MAX_LEAD_S - 1), "the lead to fill")
                await ws.send(json.dumps({"type": "flush"}))
                assert (await recv_json(ws))["type"] == "flush"
                at_flush = s.live.samples_received
                elapsed = time.perf_counter() - t_sent
                await ws.send(json.dumps({"type": "stats"}))
                stats = await recv_json(ws)  # replies come in order: the flush has been handled
                await ws.send(json.dumps({"type": "end"}))
                ended = await recv_json(ws)
                after = s.live.samples_received
            async with websockets.connect(ws_url, max_size=None) as ws:
                await recv_json(ws)
                await ws.send(b"\0" * (MAX_MESSAGE_BYTES + 2))
                too_big = await recv_json(ws)
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), LIMIT)
            await until(lambda: not server.sessions, "both sessions to end")
        return at_flush, elapsed, stats, ended, after, too_big, closed.value.rcvd

    at_flush, elapsed, stats, ended, after, too_big, rcvd = asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))
    # what went in: the lead and the time that passed (the other ~20 s were held, then dropped)
    assert at_flush <= 16000 * (MAX_LEAD_S + elapsed + 0.1) and at_flush < 16000 * 39
    assert stats["session_frames"]["flushes"] == 1
    assert ended == {"type": "ended"}
    assert after - at_flush < 16000  # nothing of the held audio went in after the flush
    assert too_big["type"] == "error" and too_big["error"] == "too_big" and "16 MiB" in too_big["message"]
    assert rcvd.code == 1009 and rcvd.reason == "message too big"


def test_a_client_that_vanishes_while_the_server_is_not_reading_is_found(make_app):
    """Two messages of 60 s: the server holds both and stops reading the socket; the client's
    connection is then cut (no close frame). The server's probe finds it gone and the session is torn
    down within seconds, its held audio dropped."""
    app = make_app()
    server = app[SERVER]
    payload = pcm(60.0)

    async def main():
        async with serve_app(app) as url:
            ws = await websockets.connect(url.replace("http", "ws") + "/ws", max_size=None)
            sid = (await recv_json(ws))["session"]
            s = server.sessions[sid].stream
            closed = asyncio.Event()
            s.on_close = lambda _s: closed.set()
            t_sent = time.perf_counter()
            await ws.send(payload)
            await ws.send(payload)
            await until(lambda: s.live.samples_received > 16000 * (MAX_LEAD_S - 1), "the lead to fill")
            received = s.live.samples_received
            t_cut = time.perf_counter()
            elapsed = t_cut - t_sent
            ws.transport.abort()  # the client is gone: no close frame, the TCP connection reset
            await asyncio.wait_for(closed.wait(), LIMIT)
            gone_s = time.perf_counter() - t_cut
            await until(lambda: not server.sessions, "the registry to drop the session")
        return received, elapsed, gone_s

    received, elapsed, gone_s = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert received <= 16000 * (MAX_LEAD_S + elapsed + 0.1)  # most of the 120 s was still held
    assert received < 16000 * 100
    assert gone_s < 5.0, gone_s


def test_an_offer_session_whose_peer_leaves_is_torn_down_within_seconds(make_app, tmp_path):
    """A browser-style session (our aiortc client, ``POST /offer``) with a microphone file playing:
    when the peer closes, the session goes within seconds."""
    from streaming.client import RtcClient
    from tests.helpers import write_wav

    wav = tmp_path / "mic.wav"
    write_wav(wav, np.tile(speechlike(3.0, seed=2), 4))
    app = make_app()
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            client = await RtcClient(url, audio_path=str(wav), keep_video=False).start()
            s = server.sessions[client.session].stream
            closed = asyncio.Event()
            s.on_close = lambda _s: closed.set()
            await client.wait_video(25, LIMIT)
            await until(lambda: s.live.samples_received > 0, "the microphone to reach the session")
            t_left = time.perf_counter()
            await client.close()
            await asyncio.wait_for(closed.wait(), LIMIT)
            gone_s = time.perf_counter() - t_left
            await until(lambda: not server.sessions, "the registry to drop the session")
        return gone_s

    gone_s = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert gone_s < 5.0, gone_s


def test_a_session_deleted_by_the_operator_closes_its_websocket(make_app):
    """``DELETE /api/sessions/{id}`` of a websocket session: the socket is closed (1000, "session
    ended") within seconds, without the client sending anything."""
    import aiohttp

    app = make_app()
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            async with websockets.connect(url.replace("http", "ws") + "/ws") as ws:
                sid = (await recv_json(ws))["session"]
                async with aiohttp.ClientSession() as http, http.delete(f"{url}/api/sessions/{sid}") as r:
                    status = r.status
                t0 = time.perf_counter()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), LIMIT)
                dt = time.perf_counter() - t0
            assert not server.sessions
            return status, closed.value.rcvd, dt

    status, rcvd, dt = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert status == 200 and rcvd.code == 1000 and rcvd.reason == "session ended"
    assert dt < 5.0, dt


def test_rest_frames_reach_the_tracks_as_views_of_the_avatar(tmp_path):
    """Silence costs no image: the rest frames a session hands its video track (``take_frame``)
    are read-only views of the avatar's own frames, and no more of them are made ahead than the
    render horizon allows (2 s of silence pushed at once: after a second, what is due and ~0.6 s
    more exist)."""
    from engine.synth.none import NoneSynthesizer
    from streaming.server import AvatarLibrary, ServerConfig
    from streaming.session import StreamSession

    lib = AvatarLibrary.from_config(ServerConfig(refs=1, cache_dir=str(tmp_path)))

    async def main():
        avatar = await lib.load("portrait")
        async with StreamSession(avatar, NoneSynthesizer(), StreamConfig(delay_ms=DELAY_MS)) as s:
            s.push_audio(np.zeros(2 * 16000, np.float32), 16000)
            p0 = s.playout.session_frame(s.playout.frame_now())
            await until(lambda: s.live.stats.frames > 5, "the first frames")
            await asyncio.sleep(1.0)  # the horizon bounds what exists a second later
            made = s.live.stats.frames
            p = max(0, s.playout.session_frame(s.playout.frame_now()))
            frames = [s.take_frame(q)[0] for q in range(p, p + 5)]
        return avatar, frames, made, p - max(0, p0)

    avatar, frames, made, shown = asyncio.run(asyncio.wait_for(main(), LIMIT))
    assert all(f is not None for f in frames)
    for f in frames:
        assert f.kind.value == "rest" and not f.image.flags.writeable
        assert np.shares_memory(f.image, avatar.frames)  # the avatar's frame itself, not a copy
    # not all 2 s (50 frames) at once: what is due, plus the horizon (delay + margin), plus a tick
    assert made <= shown + (DELAY_MS / 1e3 + RENDER_MARGIN_S) * FPS + 8, (made, shown)


def test_a_client_held_back_by_backpressure_is_not_taken_for_gone(make_app, monkeypatch):
    """Three messages of 3 s with a lead limit of 1 s: the server stops reading for seconds, longer
    than its heartbeat (shortened to 1 s here); the client, whose answers to pings wait behind its audio,
    stays connected, all its audio goes in, and it is still answered afterwards."""
    from streaming import websocket as ingest

    monkeypatch.setattr(ingest, "HEARTBEAT_S", 1.0)
    app = make_app(max_lead_s=1.0)
    server = app[SERVER]
    payload = pcm(3.0)

    async def main():
        async with serve_app(app) as url:
            async with websockets.connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
                sid = (await recv_json(ws))["session"]
                s = server.sessions[sid].stream
                for _ in range(3):
                    await ws.send(payload)
                await until(lambda: s.live.samples_received >= 16000 * 8.9, "all 9 s to go in", 2 * LIMIT)
                marks: dict = {}
                await watch(s, 0.5, marks)
                await ws.send(json.dumps({"type": "stats"}))
                return await recv_json(ws), marks

    stats, marks = asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))
    assert stats["type"] == "stats" and stats["session_frames"]["audio_seconds"] > 8.9
    assert stats["lead_s"] <= 1.05 and marks["lead"] <= 1.05
