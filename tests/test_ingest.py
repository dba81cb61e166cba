"""The server's other doors, each with a real client in the same process: websocket PCM ingest (the
``websockets`` library), WHIP (an aiortc peer publishing a file as audio) and WHEP (an aiortc
peer watching a session), plus /healthz, /metrics and the avatar API. Loopback ICE only; every
wait has a time limit.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import numpy as np
import pytest
import websockets
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from streaming.ice import loopback_configuration
from streaming.server import SERVER, AvatarLibrary, ServerConfig, create_app, serve_app
from tests.helpers import DELAY_MS, LIMIT, invert_engine, server_config, speechlike, until, write_wav


@pytest.fixture(scope="module")
def library_factory(tmp_path_factory):
    cache = tmp_path_factory.mktemp("ingest-avatars")

    def make() -> AvatarLibrary:
        return AvatarLibrary.from_config(ServerConfig(refs=1, cache_dir=str(cache)))

    return make


async def recv_json(ws) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), LIMIT))


def test_websocket_pcm_ingest_and_controls(library_factory, landmark_model):
    lib = library_factory()
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=lib)
    server = app[SERVER]
    rate, seconds = 22050, 1.5
    x16 = speechlike(seconds, seed=4)
    x = np.interp(np.arange(int(seconds * rate)) * 16000 / rate, np.arange(x16.size), x16).astype("<f4")
    stereo = np.stack([x, 0.5 * x], axis=1)  # (n, 2) float32 little endian
    payload = stereo.tobytes()

    async def main():
        async with serve_app(app) as url:
            ws_url = url.replace("http", "ws") + "/ws?avatar=portrait"
            async with websockets.connect(ws_url) as ws:
                hello = await recv_json(ws)
                assert hello["type"] == "session" and hello["avatar"] == "portrait"
                sid = hello["session"]
                assert hello["whep"] == f"/whep/{sid}" and sid in server.sessions
                await ws.send(
                    json.dumps({"type": "start", "sample_rate": rate, "channels": 2, "format": "f32le"})
                )
                started = await recv_json(ws)
                assert started == {"type": "started", "sample_rate": rate, "channels": 2, "format": "f32le"}
                # odd-sized binary messages: samples split across messages are carried over
                for i in range(0, len(payload), 3001):
                    await ws.send(payload[i : i + 3001])
                s = server.sessions[sid].stream
                await until(lambda: abs(s.live.stats.audio_seconds - seconds) < 1e-6)
                await ws.send(json.dumps({"type": "stats"}))
                stats = await recv_json(ws)
                assert stats["type"] == "stats" and stats["session"] == sid
                await ws.send("not json")
                bad = await recv_json(ws)
                assert bad["type"] == "error" and bad["error"] == "bad_message"
                await ws.send(json.dumps({"type": "start", "format": "u8"}))
                assert (await recv_json(ws))["error"] == "bad_format"
                await ws.send(json.dumps({"type": "switch_avatar", "avatar": "nobody"}))
                assert (await recv_json(ws))["error"] == "unknown_avatar"
                await ws.send(json.dumps({"type": "switch_avatar", "avatar": "portrait"}))
                assert await recv_json(ws) == {"type": "avatar", "avatar": "portrait"}
                await ws.send(json.dumps({"type": "flush"}))
                assert (await recv_json(ws))["type"] == "flush"
                await ws.send(json.dumps({"type": "end"}))
                assert await recv_json(ws) == {"type": "ended"}
                await until(lambda: s.drained)  # END: the last frames were made, the output closed
                live = s.live.stats
                result = (live.audio_seconds, live.windows, live.flushes, live.avatar_switches, s.ended)
            await until(lambda: not server.sessions)  # the socket closed: the session is gone
        return result

    audio_seconds, windows, flushes, switches, ended = asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))
    assert abs(audio_seconds - seconds) < 1e-6  # every sample arrived (no byte lost between messages)
    assert windows > 0 and flushes == 1 and switches == 1 and ended


def test_websocket_busy_when_full(library_factory, landmark_model):
    app = create_app(
        server_config(max_sessions=1), engine=invert_engine(landmark_model), library=library_factory()
    )

    async def main():
        async with serve_app(app) as url:
            ws_url = url.replace("http", "ws") + "/ws"
            async with websockets.connect(ws_url) as first:
                assert (await recv_json(first))["type"] == "session"
                async with websockets.connect(ws_url) as second:
                    busy = await recv_json(second)
                    with pytest.raises(websockets.ConnectionClosed) as closed:
                        await asyncio.wait_for(second.recv(), LIMIT)
            return busy, closed.value.rcvd.code

    busy, code = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert busy["type"] == "error" and busy["error"] == "busy" and busy["max_sessions"] == 1
    assert code == 1013  # try again later


async def _whip_publish(url: str, wav: str) -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(loopback_configuration())
    pc.addTransceiver(MediaPlayer(wav).audio, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/whip", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as r:
            assert r.status == 201, await r.text()
            assert r.content_type == "application/sdp"
            location, answer = r.headers["Location"], await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, location


async def _whep_watch(url: str, path: str, got: dict) -> tuple[RTCPeerConnection, str, list]:
    pc = RTCPeerConnection(loopback_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    tasks = []

    async def consume(track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            got.setdefault(track.kind, []).append(frame.pts)

    @pc.on("track")
    def on_track(track) -> None:
        tasks.append(asyncio.ensure_future(consume(track)))

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}{path}", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
        ) as r:
            assert r.status == 201, await r.text()
            location, answer = r.headers["Location"], await r.text()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, location, tasks


def test_whip_publish_and_whep_watch(library_factory, landmark_model, tmp_path):
    wav = tmp_path / "whip.wav"
    write_wav(wav, speechlike(3.0, seed=6))
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{url}/whep", data="v=0", headers={"Content-Type": "application/sdp"}
                ) as r:
                    no_session = r.status  # nothing to watch yet
                async with http.post(
                    f"{url}/whip", data="{}", headers={"Content-Type": "application/json"}
                ) as r:
                    wrong_type = r.status
            publisher, whip_location = await _whip_publish(url, str(wav))
            sid = whip_location.rsplit("/", 1)[1]
            assert whip_location == f"/whip/{sid}" and server.sessions[sid].kind == "whip"
            s = server.sessions[sid].stream
            await until(lambda: s.live.stats.audio_seconds > 0.5)

            got: dict = {}
            viewer, whep_location, tasks = await _whep_watch(url, f"/whep/{sid}", got)
            assert whep_location.startswith(f"/whep/{sid}/") and len(server.sessions[sid].viewers) == 1
            await until(lambda: len(got.get("video", [])) >= 25 and len(got.get("audio", [])) >= 25)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/metrics") as r:
                    metrics = await r.text()
                async with http.delete(f"{url}{whep_location}") as r:
                    viewer_deleted = r.status
                await until(lambda: not server.sessions[sid].viewers)
                async with http.delete(f"{url}{whip_location}") as r:
                    whip_deleted = r.status
            await until(lambda: not server.sessions)
            await viewer.close()
            await publisher.close()
            for t in tasks:
                await asyncio.wait_for(t, LIMIT)
        return no_session, wrong_type, got, metrics, viewer_deleted, whip_deleted

    no_session, wrong_type, got, metrics, viewer_deleted, whip_deleted = asyncio.run(
        asyncio.wait_for(main(), 3 * LIMIT)
    )
    assert no_session == 404 and wrong_type == 415
    video = got["video"]
    assert all((b - a) == 3600 for a, b in zip(video, video[1:], strict=False))  # 25 fps on the RTP clock
    assert "mouthpiece_viewers_active 1" in metrics and "mouthpiece_sessions_active 1" in metrics
    assert viewer_deleted == 200 and whip_deleted == 200


def test_health_metrics_and_avatar_api(library_factory, landmark_model):
    app = create_app(server_config(), engine=invert_engine(landmark_model), library=library_factory())

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            out = {}
            for path in ("/healthz", "/api/info", "/api/avatars", "/api/sessions"):
                async with http.get(url + path) as r:
                    out[path] = (r.status, await r.json())
            async with http.get(url + "/api/avatars/portrait/poster.jpg") as r:
                out["poster"] = (r.status, r.content_type, await r.read())
            async with http.get(url + "/api/avatars/nobody/poster.jpg") as r:
                out["unknown"] = (r.status, await r.json())
            async with http.post(url + "/offer", data="nonsense") as r:
                out["bad_offer"] = (r.status, await r.text())
            async with http.get(url + "/metrics") as r:
                out["metrics"] = (r.status, r.content_type, await r.text())
            return out

    out = asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
    assert out["/healthz"] == (200, out["/healthz"][1]) and out["/healthz"][1]["status"] == "ok"
    status, info = out["/api/info"]
    assert status == 200 and info["mode"] == "neural" and info["default_avatar"] == "portrait"
    assert info["max_sessions"] == 4 and info["delay_ms"] == DELAY_MS
    assert [a["name"] for a in out["/api/avatars"][1]["avatars"]] == ["portrait"]
    assert out["/api/sessions"] == (200, {"sessions": []})
    status, ctype, jpg = out["poster"]
    assert status == 200 and ctype == "image/jpeg" and jpg[:2] == b"\xff\xd8"
    assert out["unknown"][0] == 404 and out["unknown"][1]["error"] == "unknown_avatar"
    assert out["bad_offer"][0] == 400
    status, ctype, text = out["metrics"]
    assert status == 200 and ctype == "text/plain"
    for name in (
        "mouthpiece_sessions_active",
        "mouthpiece_frames_total",
        "mouthpiece_sessions_rejected_total",
    ):
        assert f"# TYPE {name}" in text


def test_serve_command_line_builds_the_server_config():
    from engine.cli import build_parser
    from streaming.server import config_from_args

    args = build_parser().parse_args(
        ["serve", "--port", "9001", "--avatar", "a.mp4", "--renderer", "retrieval", "--delay-ms", "500"]
        + ["--max-sessions", "2", "--batch", "3", "--max-batch", "8", "--loopback", "--mic-prefetch", "1"]
    )
    cfg = config_from_args(args)
    assert (cfg.port, cfg.avatars, cfg.renderer, cfg.max_sessions, cfg.max_batch) == (
        9001,
        ("a.mp4",),
        "preview",  # retrieval: the preview renderer's old name
        2,
        8,
    )
    assert (
        cfg.loopback and cfg.mic_prefetch == 1 and cfg.stream.delay_ms == 500.0 and cfg.stream.live.batch == 3
    )
    assert config_from_args(build_parser().parse_args(["serve"])).renderer == "auto"
    assert (
        config_from_args(build_parser().parse_args(["serve", "--renderer", "preview"])).renderer == "preview"
    )
    assert config_from_args(build_parser().parse_args(["serve"])).checkpoint_dir == "checkpoints"
    tuned = build_parser().parse_args(["serve", "--checkpoint-dir", "presenters/me"])  # train presenter's OUT
    assert config_from_args(tuned).checkpoint_dir == "presenters/me"
