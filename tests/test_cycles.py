"""Connect/disconnect cycles of each kind against one server: websocket sessions, browser-style
``/offer`` sessions (our aiortc client: microphone up, video and audio down, data channel), WHIP
publishers and WHEP viewers of one websocket session. Each client connects, gets media flowing, and
leaves; after :data:`CYCLES` cycles of each kind, with no session open, the server's RSS is within
50 MB of its value after the first round of cycles and its threads are back to that round's count
(``threading.enumerate()`` and ``/proc/self/task``).

The server runs in a child process (``python -m tests.test_cycles CACHE``: the CPU preview
renderer, no weights) so that the client's own peers, decoders and threads are not counted; it
reports its resources on a test-only route. Its figures are read as they are: the probe does not
collect garbage.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

import aiohttp
import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from streaming.client import RtcClient
from streaming.ice import loopback_configuration, loopback_ice
from tests.conftest import ROOT
from tests.helpers import LIMIT, speechlike, write_wav

CYCLES = 50  # of each kind
WARM = 5  # cycles of each kind before the reference figures are taken (RSS settles: allocator arenas)
MB = 1e6


def resources() -> dict:
    with open("/proc/self/statm") as f:
        rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    names = sorted(t.name for t in threading.enumerate())
    pool = [n for n in names if n.startswith("asyncio_")]  # the loop's default executor (bounded)
    return {
        "rss": rss,
        "threads": len(names) - len(pool),
        "tasks": len(os.listdir("/proc/self/task")) - len(pool),
        "pool": len(pool),
        "thread_names": names,
    }


def child_server(cache: str) -> None:
    """The server under test (this module run as a program): prints its URL, serves until stdin closes."""
    from aiohttp import web

    from engine.live.session import LiveConfig
    from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app
    from streaming.session import StreamConfig

    cfg = ServerConfig(
        loopback=True,
        refs=1,
        device="cpu",
        checkpoint_dir=os.path.join(cache, "no-checkpoints"),
        cache_dir=cache,
        max_sessions=8,  # the watched session and three kinds side by side, each closing as the next starts
        stream=StreamConfig(live=LiveConfig(batch=2)),
    )
    app = create_app(cfg, engine=ModelEngine.from_config(cfg), library=AvatarLibrary.from_config(cfg))

    async def report(request: web.Request) -> web.Response:
        srv = app[SERVER]
        out = resources()
        out["sessions"] = len(srv.sessions)
        out["viewers"] = sum(len(h.viewers) for h in srv.sessions.values())
        return web.json_response(out)

    app.router.add_get("/_test/resources", report)

    async def main() -> None:
        async with serve_app(app) as url:
            print(url, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cycles")
    (cache / "no-checkpoints").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_cycles", str(cache)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), f"the server did not start (exit code {proc.poll()})"
        yield url
    finally:
        proc.stdin.close()
        try:
            proc.wait(LIMIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def probe(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/_test/resources") as r:
        return await r.json()


async def idle(http, url: str) -> dict:
    """The server's figures once no session and no viewer is left."""
    out: dict = {}

    async def check() -> bool:
        out.update(await probe(http, url))
        return out["sessions"] == 0 and out["viewers"] == 0

    deadline = asyncio.get_running_loop().time() + LIMIT
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "sessions left open"
        await asyncio.sleep(0.05)
    return out


def pcm(seconds: float) -> bytes:
    return (speechlike(seconds, seed=3) * 32767).astype("<i2").tobytes()


async def websocket_cycle(url: str, audio: bytes) -> None:
    async with websockets.connect(url.replace("http", "ws") + "/ws") as ws:
        hello = json.loads(await asyncio.wait_for(ws.recv(), LIMIT))
        assert hello["type"] == "session"
        await ws.send(audio)
        await ws.send(json.dumps({"type": "stats"}))
        stats = json.loads(await asyncio.wait_for(ws.recv(), LIMIT))
        assert stats["type"] == "stats" and stats["session_frames"]["audio_seconds"] > 0


async def offer_cycle(url: str, wav: str) -> None:
    client = await RtcClient(url, audio_path=wav, keep_video=False).start()
    try:
        await client.wait_video(1, LIMIT)
    finally:
        await client.close()


async def whip_cycle(url: str, wav: str, http: aiohttp.ClientSession) -> None:
    pc = RTCPeerConnection(loopback_configuration())
    player = MediaPlayer(wav)
    try:
        pc.addTransceiver(player.audio, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(f"{url}/whip", data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201, await r.text()
            location, answer = r.headers["Location"], await r.text()
        connected = asyncio.Event()
        pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and connected.set())
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        try:
            await asyncio.wait_for(connected.wait(), LIMIT)
        except TimeoutError:
            raise AssertionError(f"whip: {pc.connectionState} {pc.iceConnectionState}") from None
        async with http.delete(f"{url}{location}") as r:
            assert r.status == 200
    finally:
        await pc.close()
        if player.audio is not None:
            player.audio.stop()


async def whep_cycle(url: str, sid: str, http: aiohttp.ClientSession) -> None:
    pc = RTCPeerConnection(loopback_configuration())
    got = asyncio.Event()
    tasks = []

    async def consume(track) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            if track.kind == "video":
                got.set()

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(consume(track))))
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp"}
        async with http.post(f"{url}/whep/{sid}", data=pc.localDescription.sdp, headers=headers) as r:
            assert r.status == 201, await r.text()
            location, answer = r.headers["Location"], await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(got.wait(), LIMIT)
        async with http.delete(f"{url}{location}") as r:
            assert r.status == 200
    finally:
        await pc.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_connect_disconnect_cycles_return_to_baseline(server_url, tmp_path):
    url = server_url
    wav = tmp_path / "mic.wav"
    write_wav(wav, np.tile(speechlike(2.0, seed=5), 30))  # a minute: no cycle runs out of audio
    audio = pcm(0.5)

    async def round_(http, n: int) -> None:
        """``n`` cycles of each kind, the kinds side by side (one websocket session feeds the viewers)."""
        async with websockets.connect(url.replace("http", "ws") + "/ws") as watched:
            sid = json.loads(await asyncio.wait_for(watched.recv(), LIMIT))["session"]

            async def kind(cycle) -> None:
                for _ in range(n):
                    await cycle()

            await asyncio.gather(
                kind(lambda: websocket_cycle(url, audio)),
                kind(lambda: offer_cycle(url, str(wav))),
                kind(lambda: whip_cycle(url, str(wav), http)),
                kind(lambda: whep_cycle(url, sid, http)),
            )

    async def main():
        with loopback_ice():  # the client's candidates on 127.0.0.1, as the server's (--loopback)
            return await cycles()

    async def cycles():
        async with aiohttp.ClientSession() as http:
            start = await idle(http, url)
            await round_(http, WARM)
            warm = await idle(http, url)
            await round_(http, CYCLES - WARM)
            end = await idle(http, url)
            # a thread that ends on its own (a codec's worker after its last frame) gets a moment
            deadline = asyncio.get_running_loop().time() + 10.0
            while end["threads"] > warm["threads"] or end["tasks"] > warm["tasks"]:
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
                end = await probe(http, url)
            return start, warm, end

    start, warm, end = asyncio.run(asyncio.wait_for(main(), 10 * LIMIT))
    grew = (end["rss"] - warm["rss"]) / MB
    assert grew < 50.0, (
        f"RSS {warm['rss'] / MB:.0f} -> {end['rss'] / MB:.0f} MB ({start['rss'] / MB:.0f} at start)"
    )
    assert end["threads"] <= warm["threads"], (warm["thread_names"], end["thread_names"])
    assert end["tasks"] <= warm["tasks"], (warm, end)
    assert end["pool"] <= min(32, (os.cpu_count() or 1) + 4)  # the default executor's own bound


if __name__ == "__main__":
    child_server(sys.argv[1])
