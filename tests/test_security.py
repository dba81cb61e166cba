"""Who may use the server (streaming/security.py, docs/security.md), against the real server on
loopback: the token on every endpoint that starts, watches, controls, lists or ends a session (HTTP
``Authorization: Bearer``, the websocket's header or ``?token=``), ``/healthz`` open and saying
nothing private, websocket upgrades and state-changing requests from other sites' pages refused,
cross-site "simple" ``text/plain`` offers creating nothing, the ``Host`` header checked (DNS
rebinding), ``--public-host`` for a reverse proxy, unguessable session and viewer identifiers, and
``mouthpiece serve`` refusing a non-loopback ``--host`` without a token (a real subprocess; its access
log without query strings), and the bench tool sending the token. Every
refusal is one line of JSON with a plain sentence and no path, and a normal session works after it.
Renderer ``none`` (no model work), loopback ICE only; every wait has a time limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from streaming.client import RtcClient
from streaming.ice import loopback_configuration
from streaming.security import exposure_problem
from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app
from tests.conftest import ROOT
from tests.helpers import LIMIT, eventually, speechlike, until, write_wav

TOKEN = "s3cret-Token_0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
EVIL = "http://evil.example"
ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16): 128 random bits


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("security")
    wav = d / "speech.wav"
    write_wav(wav, speechlike(3.0, seed=5))
    empty = d / "no-checkpoints"
    empty.mkdir()
    return {"wav": wav, "cache": d / "avatars", "empty": empty}


def make_app(media, **kw):
    cfg = ServerConfig(
        loopback=True,
        refs=1,
        renderer="none",
        cache_dir=str(media["cache"]),
        checkpoint_dir=str(media["empty"]),
        **kw,
    )
    return create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))


def run(main, limit: float = 4 * LIMIT):
    return asyncio.run(asyncio.wait_for(main(), limit))


async def answer(r: aiohttp.ClientResponse) -> tuple[int, dict, str]:
    text = await r.text()
    return r.status, r.headers, text


def assert_refusal(status: int, text: str, want_status: int, code: str) -> dict:
    """One line of JSON with the error code and a plain sentence; no path, no exception text."""
    assert status == want_status, (status, text)
    assert "\n" not in text.strip()
    body = json.loads(text)
    assert body["error"] == code and body["message"].strip()
    assert str(ROOT) not in text and "Traceback" not in text and "Error" not in body["message"]
    return body


async def ws_session(http, url: str, headers=None, path: str = "/ws") -> str:
    """A normal websocket session: opened, its id announced, closed; its id."""
    async with http.ws_connect(url + path, headers=headers or {}) as ws:
        hello = await asyncio.wait_for(ws.receive_json(), LIMIT)
        assert hello["type"] == "session"
        return hello["session"]


async def ws_refused(http, url: str, headers=None, path: str = "/ws") -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        async with http.ws_connect(url + path, headers=headers or {}):
            pass
    return e.value.status


async def whep_offer() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection(loopback_configuration())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def test_token_guards_every_endpoint_but_the_page_and_healthz(media):
    app = make_app(media, token=TOKEN)
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            guarded = [
                ("GET", "/api/info", {}),
                ("GET", "/api/avatars", {}),
                ("GET", "/api/avatars/portrait/poster.jpg", {}),
                ("GET", "/api/sessions", {}),
                ("GET", "/api/sessions/x", {}),
                ("DELETE", "/api/sessions/x", {}),
                ("GET", "/metrics", {}),
                ("POST", "/offer", {"json": {"type": "offer"}}),  # refused before a session (400)
                ("POST", "/whip", {"data": "v=0", "headers": {"Content-Type": "application/sdp"}}),
                ("POST", "/whep", {"data": "v=0", "headers": {"Content-Type": "application/sdp"}}),
                ("DELETE", "/whip/x", {}),
                (
                    "PATCH",
                    "/whep/x/y",
                    {"data": "a=x", "headers": {"Content-Type": "application/trickle-ice-sdpfrag"}},
                ),
                ("GET", "/api/nothing-here", {}),
            ]
            for method, path, kw in guarded:
                headers = kw.pop("headers", {})
                for auth, code in (
                    ({}, "unauthorized"),
                    ({"Authorization": "Bearer wrong-token-0123456789"}, "invalid_token"),
                    ({"Authorization": f"Basic {TOKEN}"}, "invalid_token"),
                    ({"Authorization": f"Bearer {TOKEN}x"}, "invalid_token"),
                ):
                    async with http.request(method, url + path, headers={**headers, **auth}, **kw) as r:
                        status, h, text = await answer(r)
                    assert_refusal(status, text, 401, code)
                    assert h["WWW-Authenticate"].startswith("Bearer")
                    assert TOKEN not in text
                # ?token= is for the websocket only: everything else needs the header
                async with http.request(method, f"{url}{path}?token={TOKEN}", headers=headers, **kw) as r:
                    assert r.status == 401, (method, path)
                async with http.request(method, url + path, headers={**headers, **BEARER}, **kw) as r:
                    assert r.status != 401, (method, path, r.status)
            assert not server.sessions  # nothing refused made a session
            # the right token: real answers
            async with http.get(url + "/api/info", headers=BEARER) as r:
                assert r.status == 200 and (await r.json())["default_avatar"] == "portrait"
            async with http.get(url + "/metrics", headers=BEARER) as r:
                assert r.status == 200 and "mouthpiece_sessions" in await r.text()
            # the page, its files, /healthz and CORS preflights need none
            for path in ("/", "/static/app.js", "/static/style.css", "/healthz"):
                async with http.get(url + path) as r:
                    assert r.status == 200, path
            preflight = {"Origin": "http://player.example", "Access-Control-Request-Method": "POST"}
            async with http.options(url + "/whip", headers=preflight) as r:
                assert r.status == 204
            # a plain OPTIONS answers the ICE servers (TURN credentials) in Link headers: token only
            async with http.options(url + "/whip") as r:
                assert_refusal(r.status, await r.text(), 401, "unauthorized")
                assert "Link" not in r.headers
            async with http.options(url + "/whip", headers=BEARER) as r:
                assert r.status == 204
            async with http.get(url + "/healthz") as r:
                health = await r.json()
            # what /healthz says: liveness and load, nothing about avatars, files, clients or secrets
            assert set(health) == {"status", "mode", "sessions", "max_sessions", "uptime_s"}
            text = json.dumps(health)
            assert "portrait" not in text and "/" not in text and TOKEN not in text
            # the websocket: the header, or ?token= (browsers cannot set headers on a websocket)
            assert await ws_refused(http, url) == 401
            assert await ws_refused(http, url, path="/ws?token=wrong-token-0123456789") == 401
            sid = await ws_session(http, url, headers=BEARER)
            assert ID.fullmatch(sid)
            sid = await ws_session(http, url, path=f"/ws?token={TOKEN}")
            assert ID.fullmatch(sid)
            await until(lambda: not server.sessions, "the websocket sessions to end")
            # a real /offer session with the token: media both ways, then ended with DELETE
            client = await RtcClient(url, audio_path=str(media["wav"]), keep_video=False, token=TOKEN).start()
            try:
                await client.wait_video(1, LIMIT)
                assert ID.fullmatch(client.session)
                async with http.delete(f"{url}/api/sessions/{client.session}") as r:
                    assert r.status == 401 and client.session in server.sessions
                async with http.delete(f"{url}/api/sessions/{client.session}", headers=BEARER) as r:
                    assert r.status == 200
            finally:
                await client.close()
            await until(lambda: not server.sessions, "the session to end")

    run(main)


def test_pages_of_other_sites_are_refused(media):
    app = make_app(media, allow_origins=("http://player.example:8081",))
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            own = url  # http://127.0.0.1:PORT: the page's own origin
            for bad in (EVIL, "null", "http://127.0.0.1:1", "https://evil.example", "not an origin"):
                assert await ws_refused(http, url, headers={"Origin": bad}) == 403
                async with http.post(
                    url + "/offer", json={"type": "offer", "sdp": "v=0"}, headers={"Origin": bad}
                ) as r:
                    assert_refusal(*(await answer(r))[::2], 403, "forbidden_origin")
                async with http.delete(url + "/api/sessions/x", headers={"Origin": bad}) as r:
                    assert_refusal(r.status, await r.text(), 403, "forbidden_origin")
                async with http.post(
                    url + "/whip", data="v=0", headers={"Origin": bad, "Content-Type": "application/sdp"}
                ) as r:
                    assert r.status == 403
            # a GET is not state-changing: a page elsewhere cannot read the answer anyway (no CORS)
            async with http.get(url + "/healthz", headers={"Origin": EVIL}) as r:
                assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers
            # a cross-site "simple" request (a form or fetch without preflight) carries no Origin
            # check for us to rely on in old browsers: its text/plain offer must create nothing
            pc, sdp = await whep_offer()
            body = json.dumps({"type": "offer", "sdp": sdp})
            try:
                for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
                    async with http.post(url + "/offer", data=body, headers={"Content-Type": ctype}) as r:
                        status, _, text = await answer(r)
                    assert status in (400, 415), (ctype, status)
                    if status == 415:
                        assert_refusal(status, text, 415, "unsupported_media_type")
                    assert not server.sessions
            finally:
                await pc.close()
            # the page's own origin, an allowed origin, and clients that send no Origin all pass
            assert ID.fullmatch(await ws_session(http, url, headers={"Origin": own}))
            assert ID.fullmatch(await ws_session(http, url, headers={"Origin": "http://player.example:8081"}))
            assert ID.fullmatch(await ws_session(http, url))
            await until(lambda: not server.sessions, "the websocket sessions to end")
            # a same-origin /offer from the page (application/json) makes a session that works
            client = await RtcClient(url, audio_path=str(media["wav"]), keep_video=False).start()
            try:
                await client.wait_video(1, LIMIT)
            finally:
                await client.close()

    run(main)


def test_host_header_must_name_the_server(media):
    app = make_app(media, public_hosts=("avatar.example.org", "proxy.example:8443"))
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            port = int(url.rsplit(":", 1)[1])
            for host in (
                f"evil.example:{port}",  # DNS rebinding: evil.example now resolves to 127.0.0.1
                "evil.example",
                f"127.0.0.1:{port + 1 if port < 65535 else port - 1}",
                f"localhost.evil.example:{port}",
                f"proxy.example:{port}",  # a public host with a port answers on that port only
                "",
            ):
                for method, path in (
                    ("GET", "/"),
                    ("GET", "/api/info"),
                    ("GET", "/healthz"),
                    ("DELETE", "/api/sessions/x"),
                ):
                    async with http.request(method, url + path, headers={"Host": host}) as r:
                        assert_refusal(r.status, await r.text(), 421, "unknown_host")
                assert await ws_refused(http, url, headers={"Host": host}) == 421
            assert not server.sessions
            for host in (
                f"127.0.0.1:{port}",
                f"localhost:{port}",
                f"LocalHost:{port}",
                "avatar.example.org",
                "avatar.example.org:443",
                "proxy.example:8443",
            ):
                async with http.get(url + "/api/info", headers={"Host": host}) as r:
                    assert r.status == 200, host
            # behind a proxy that keeps the Host, the page's origin is the public name over https
            hdrs = {"Host": "avatar.example.org", "Origin": "https://avatar.example.org"}
            assert ID.fullmatch(await ws_session(http, url, headers=hdrs))
            # and behind one that rewrites it to the upstream address, the origin still names it
            assert ID.fullmatch(await ws_session(http, url, headers={"Origin": "https://avatar.example.org"}))
            assert await ws_refused(http, url, headers={"Host": "avatar.example.org", "Origin": EVIL}) == 403
            # no Host at all (HTTP/1.0): refused too
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/info HTTP/1.0\r\n\r\n")
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), LIMIT)
            writer.close()
            assert raw.startswith(b"HTTP/1.0 421") or raw.startswith(b"HTTP/1.1 421"), raw[:40]
            await until(lambda: not server.sessions, "the websocket sessions to end")
            assert ID.fullmatch(await ws_session(http, url))

    run(main)


def test_session_and_viewer_ids_are_unguessable(media):
    app = make_app(media)
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            async with http.ws_connect(url + "/ws") as ws:
                hello = await asyncio.wait_for(ws.receive_json(), LIMIT)
                sid = hello["session"]
                assert ID.fullmatch(sid) and hello["whep"] == f"/whep/{sid}"
                pc, sdp = await whep_offer()
                try:
                    async with http.post(
                        f"{url}/whep/{sid}", data=sdp, headers={"Content-Type": "application/sdp"}
                    ) as r:
                        assert r.status == 201
                        location = r.headers["Location"]
                        await pc.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
                    m = re.fullmatch(rf"/whep/{re.escape(sid)}/([^/]+)", location)
                    assert m and ID.fullmatch(m[1])
                    # a guessed viewer id of the right shape is nobody
                    async with http.delete(f"{url}/whep/{sid}/{'A' * 22}") as r:
                        assert r.status == 404
                    async with http.delete(url + location) as r:
                        assert r.status == 200
                finally:
                    await pc.close()
            await until(lambda: not server.sessions, "the session to end")

    run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_cmd(media, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "engine",
        "serve",
        "--renderer",
        "none",
        "--refs",
        "1",
        "--loopback",
        "--checkpoint-dir",
        str(media["empty"]),
        "--cache",
        str(media["cache"]),
        *extra,
    ]


def healthy(port: int, query: str = "") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz{query}", timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def test_exposed_host_without_a_token_refuses_to_start(media):
    env = {k: v for k, v in os.environ.items() if k != "MOUTHPIECE_TOKEN"}
    port = free_port()
    for extra, why in (
        (("--host", "0.0.0.0"), "MOUTHPIECE_TOKEN"),
        (("--host", "0.0.0.0", "--token", "short"), "too short"),
        (("--host", "0.0.0.0", "--token", "has space in it 0123456789"), "letters, digits"),
    ):
        cmd = serve_cmd(media, "--port", str(port), *extra)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode == 2, (extra, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mouthpiece: error: ") and why in lines[0], p.stderr
        assert "open http" not in p.stdout and "Traceback" not in p.stderr
        if why == "MOUTHPIECE_TOKEN":  # why, and the ways out
            assert "--token" in lines[0] and "--insecure" in lines[0] and "0.0.0.0" in lines[0]
    # loopback needs no token; a token or --insecure lets any host start (checked on the config)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert exposure_problem(ServerConfig(host=host)) is None
    assert exposure_problem(ServerConfig(host="0.0.0.0", token=TOKEN)) is None
    assert exposure_problem(ServerConfig(host="192.168.1.20", insecure=True)) is None
    assert exposure_problem(ServerConfig(host="192.168.1.20")) is not None
    assert exposure_problem(ServerConfig(host="::")) is not None
    # --insecure starts, with a loud warning, and serves
    proc = subprocess.Popen(
        serve_cmd(media, "--port", str(port), "--host", "0.0.0.0", "--insecure"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = iter(proc.stdout.readline, "")
        assert any("open http" in line for line in lines), "the server did not start"
        assert eventually(lambda: healthy(port) or proc.poll() is not None, timeout=LIMIT)
        assert healthy(port, "?token=not-in-the-log-0123456789")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "WARNING" in err and "--insecure" in err and "without a token" in err
    # the access log has the request, not its query (a websocket's ?token= stays out of logs)
    assert '"GET /healthz" 200' in err and "not-in-the-log" not in err


def test_the_bench_tool_sends_the_token(media):
    from streaming.bench import SessionOptions, SignalConfig, make_signal, run_session
    from streaming.bench.metrics import MetricsSampler, get_json

    app = make_app(media, token=TOKEN)
    server = app[SERVER]

    async def main():
        async with serve_app(app) as url:
            wants = ((None, "give --token or set MOUTHPIECE_TOKEN"), ("x" * 20, "refused the token"))
            for token, why in wants:
                with pytest.raises(RuntimeError, match=why):
                    await get_json(f"{url}/api/info", token=token)
            assert (await get_json(f"{url}/api/info", token=TOKEN))["default_avatar"] == "portrait"
            sampler = MetricsSampler(url, token=TOKEN)
            await sampler.sample()
            assert len(sampler.samples) == 1 and sampler.samples[0][1] is not None  # the CPU seconds
            signal = make_signal(SignalConfig(seconds=4.0))
            record = await run_session(url, signal, SessionOptions(connect_timeout_s=LIMIT, token=TOKEN))
            assert record.error is None and ID.fullmatch(record.session)
            assert TOKEN not in repr(SessionOptions(token=TOKEN))  # reports and logs do not show it
            await until(lambda: not server.sessions, "the bench session to end")

    run(main)
