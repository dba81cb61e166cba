"""Standard WHIP (RFC 9725) and WHEP (the IETF draft) against the real server: real aiortc peers
publish and watch, raw aiohttp requests check what the specs ask of a server. CORS for configured
origins (preflights, exposed headers, nothing for other origins), one-sided offers answered with
exactly their m-lines, PATCH refused with ``Allow``, ICE servers in ``Link`` headers, bad offers
refused with a plain line and no slot held, failed peers removed within seconds, DELETE of a
resource that ended on its own, ``POST /whep`` before any session. Passthrough renderer (no model
work), loopback ICE only; every wait is on server state or media with a generous time limit.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path

import aiohttp
import pytest
from aioice import stun
from aiortc import RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from streaming.ice import loopback_configuration
from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app
from streaming.webrtc import DTLS_TIMEOUT_S, ICE_TIMEOUT_S, ice_links
from tests.helpers import LIMIT, speechlike, until, write_wav

SDP = {"Content-Type": "application/sdp"}
ALLOWED = "http://player.example:8081"
CONNECT_TIMEOUT_S = 60.0  # the connect deadline, far above the removal bounds asserted here
REMOVED_WITHIN_S = 20.0  # a failed peer must be gone well before that deadline


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("whip-whep")
    wav = d / "speech.wav"
    write_wav(wav, speechlike(4.0, seed=8))
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
        connect_timeout_s=kw.pop("connect_timeout_s", CONNECT_TIMEOUT_S),
        **kw,
    )
    return create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))


class StunResponder(asyncio.DatagramProtocol):
    """A STUN server on loopback (RFC 8489 Binding only), so that the server's ICE gathering with
    a configured ``stun:`` URL completes at once instead of waiting out its 5 s STUN timeout."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.requests = 0

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method == stun.Method.BINDING and request.message_class == stun.Class.REQUEST:
            self.requests += 1
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=request.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            self.transport.sendto(bytes(response), addr)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(main, limit: float = 4 * LIMIT):
    return asyncio.run(asyncio.wait_for(main(), limit))


def m_lines(sdp: str) -> list[tuple[str, str]]:
    """(kind, direction) of every m-line of ``sdp``, in order."""
    out = []
    for section in sdp.split("\r\nm=")[1:]:
        kind = section.split(" ", 1)[0]
        direction = next(
            (d for d in ("sendrecv", "sendonly", "recvonly", "inactive") if f"\r\na={d}" in section),
            "sendrecv",
        )
        out.append((kind, direction))
    return out


async def post(http, url: str, body, headers=SDP) -> tuple[int, dict, str]:
    async with http.post(url, data=body, headers=headers) as r:
        return r.status, r.headers, await r.text()


async def publish(url: str, wav: Path, video: bool = False, mangle=None):
    """An aiortc WHIP client publishing ``wav`` (looped) as audio: (pc, status, headers, answer)."""
    pc = RTCPeerConnection(loopback_configuration())
    pc.addTransceiver(MediaPlayer(str(wav), loop=True).audio, direction="sendonly")
    if video:
        pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    async with aiohttp.ClientSession() as http:
        status, headers, answer = await post(http, f"{url}/whip", mangle(offer) if mangle else offer)
    if status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    return pc, status, headers, answer


class Viewer:
    """An aiortc WHEP player receiving ``kinds`` (in that m-line order), counting what arrives."""

    def __init__(self, kinds=("video", "audio"), channel: bool = False) -> None:
        self.pc = RTCPeerConnection(loopback_configuration())
        self.frames: dict[str, list] = {}
        self.tasks: list[asyncio.Task] = []
        for kind in kinds:
            self.pc.addTransceiver(kind, direction="recvonly")
        if channel:
            self.pc.createDataChannel("chat")
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._read(track))))

    async def _read(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.frames.setdefault(track.kind, []).append(frame)

    async def watch(self, url: str, path: str = "/whep", mangle=None, headers=SDP):
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription.sdp
        async with aiohttp.ClientSession() as http:
            status, got, answer = await post(http, url + path, mangle(offer) if mangle else offer, headers)
        if status == 201:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return status, got, answer

    async def close(self) -> None:
        await self.pc.close()
        for t in self.tasks:  # a track that never started does not end with the connection
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def count(viewer: Viewer, kind: str) -> int:
    return len(viewer.frames.get(kind, []))


# ---- CORS, OPTIONS, Link ------------------------------------------------------------------------


def test_cors_for_allowed_origins_only_and_options_with_ice_links(media):
    stun_port = free_udp_port()
    stun_url = f"stun:127.0.0.1:{stun_port}"
    app = make_app(media, allow_origins=(ALLOWED,), ice_servers=(stun_url,))
    server = app[SERVER]
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}

    async def main():
        out = {}
        loop = asyncio.get_running_loop()
        stun_transport, responder = await loop.create_datagram_endpoint(
            StunResponder, local_addr=("127.0.0.1", stun_port)
        )
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            for path in ("/whip", "/whip/abc", "/whep", "/whep/abc", "/whep/abc/def"):
                for who, origin in (("allowed", ALLOWED), ("other", "http://evil.example")):
                    async with http.options(url + path, headers={"Origin": origin, **preflight}) as r:
                        out[(path, who)] = (r.status, r.headers.copy())
                async with http.options(url + path) as r:  # the specs' OPTIONS: no Origin
                    out[(path, "plain")] = (r.status, r.headers.copy())
            async with http.post(url + "/whep", data="v=0", headers={**SDP, "Origin": ALLOWED}) as r:
                out["no-session"] = (r.status, r.headers.copy(), await r.text())
            pc, status, headers, _ = await publish(url, media["wav"])
            assert status == 201
            out["whip"] = headers
            # a page from another origin is refused (streaming/security.py); a player that sends no
            # Origin (not a browser) is served
            for who, origin in (("allowed", ALLOWED), ("other", "http://evil.example"), ("none", None)):
                viewer = Viewer()
                out[("whep", who)] = await viewer.watch(
                    url, headers={**SDP, **({"Origin": origin} if origin else {})}
                )
                await viewer.close()
            await pc.close()
            await until(lambda: not server.sessions, "the WHIP session to end with its publisher")
        stun_transport.close()
        out["stun requests"] = responder.requests
        return out

    out = run(main)
    assert out["stun requests"] >= 3  # the server gathered with the configured STUN server
    link = f'<{stun_url}>; rel="ice-server"'
    for path in ("/whip", "/whip/abc", "/whep", "/whep/abc", "/whep/abc/def"):
        status, h = out[(path, "allowed")]
        assert status == 204 and h["Access-Control-Allow-Origin"] == ALLOWED and "Origin" in h["Vary"]
        assert [m.strip() for m in h["Access-Control-Allow-Methods"].split(",")] == [
            "POST",
            "PATCH",
            "DELETE",
            "OPTIONS",
        ]
        assert {x.strip().lower() for x in h["Access-Control-Allow-Headers"].split(",")} == {
            "content-type",
            "authorization",
            "if-match",
        }
        status, h = out[(path, "other")]
        assert status == 204 and not [k for k in h if k.lower().startswith("access-control-")]
        status, h = out[(path, "plain")]
        assert status == 204 and h.getall("Link") == [link]
        assert "OPTIONS" in h["Allow"] and "PATCH" not in h["Allow"]
    status, h, text = out["no-session"]
    assert status == 404 and h["Access-Control-Allow-Origin"] == ALLOWED and int(h["Retry-After"]) > 0
    assert "Retry-After" in h["Access-Control-Expose-Headers"] and "\n" not in text.strip()
    assert out["whip"].getall("Link") == [link]  # the POST 201 answer
    assert "Access-Control-Allow-Origin" not in out["whip"]  # no Origin sent: no CORS headers
    status, h, _ = out[("whep", "allowed")]
    assert status == 201 and h["Access-Control-Allow-Origin"] == ALLOWED and h.getall("Link") == [link]
    assert {x.strip() for x in h["Access-Control-Expose-Headers"].split(",")} >= {"Location", "Link", "ETag"}
    status, h, _ = out[("whep", "other")]
    assert status == 403 and not [k for k in h if k.lower().startswith("access-control-")]
    status, h, _ = out[("whep", "none")]
    assert status == 201 and not [k for k in h if k.lower().startswith("access-control-")]


def test_no_cors_headers_without_allow_origin(media):
    app = make_app(media)

    async def main():
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            headers = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
            async with http.options(url + "/whep", headers=headers) as r:
                return r.status, r.headers.copy()

    status, h = run(main)
    assert status == 204 and not [k for k in h if k.lower().startswith("access-control-")]
    assert "Link" not in h  # no ICE servers configured


def test_ice_links_carry_credentials():
    class Stub:  # ice_links only asks the server for its RTCConfiguration
        def rtc_configuration(self):
            from aiortc import RTCConfiguration

            return RTCConfiguration(
                iceServers=[
                    RTCIceServer(urls="stun:stun.example.net"),
                    RTCIceServer(urls="turn:bad.example.net", username="u\r\nX-Injected: 1", credential="c"),
                    RTCIceServer(
                        urls=["turn:turn.example.net?transport=udp", "turns:turn.example.net"],
                        username="user",
                        credential='pa"ss',
                    ),
                ]
            )

    assert ice_links(Stub()) == [
        '<stun:stun.example.net>; rel="ice-server"',
        '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; '
        'credential="pa\\"ss"; credential-type="password"',
        '<turns:turn.example.net>; rel="ice-server"; username="user"; credential="pa\\"ss"; '
        'credential-type="password"',
    ]


# ---- one-sided offers, ETag, PATCH, DELETE ------------------------------------------------------


def test_one_sided_offers_are_answered_with_exactly_what_was_offered(media):
    app = make_app(media)
    server = app[SERVER]

    async def main():
        out = {}
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            out["before"] = await post(http, f"{url}/whep", "v=0")  # nothing to watch yet
            pc, status, headers, answer = await publish(url, media["wav"])  # audio only, no channel
            assert status == 201, answer
            out["whip"] = (headers, answer)
            sid = headers["Location"].rsplit("/", 1)[1]
            width, height = server.sessions[sid].stream.avatar.frame_size[::-1]
            viewers = {
                "video": Viewer(("video",)),
                "audio": Viewer(("audio",)),
                "audio+video": Viewer(("audio", "video"), channel=True),
            }
            hosted = server.sessions[sid]
            # one viewer at a time: several video viewers at once are the broadcast tests' subject
            for name, v in viewers.items():
                status, headers, answer = await v.watch(url, f"/whep/{sid}")
                assert status == 201, answer
                out[name] = (headers, answer)
                assert len(hosted.viewers) == 1
                kinds = [k for k, _ in m_lines(answer) if k in ("audio", "video")]
                await until(
                    lambda v=v, kinds=kinds: min(count(v, k) for k in kinds) >= 25, f"media at {name}"
                )
                out[name, "frames"] = {k: len(f) for k, f in v.frames.items()}
                if name == "video":
                    out["size"] = (v.frames["video"][-1].width, v.frames["video"][-1].height)
                    out["video location"] = headers["Location"]
                await v.close()
                await until(lambda: not hosted.viewers, f"the {name} viewer to be removed after it closed")
            out["avatar"] = (width, height)
            out["patch"] = {}
            for path in (f"/whip/{sid}", out["video location"]):
                patch_headers = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
                async with http.patch(url + path, data="a=end-of-candidates\r\n", headers=patch_headers) as r:
                    out["patch"][path] = (r.status, r.headers.get("Allow"), await r.text())
            async with http.delete(url + out["video location"]) as r:  # ended on its own
                out["delete_ended_viewer"] = r.status
            await pc.close()
            await until(lambda: not server.sessions, "the WHIP session to end when its publisher left")
            async with http.delete(f"{url}/whip/{sid}") as r:  # ended on its own
                out["delete_ended_whip"] = r.status
            async with http.delete(f"{url}/whip/{'0' * 12}") as r:
                out["delete_unknown"] = r.status
        return out

    out = run(main)
    status, headers, text = out["before"]
    assert status == 404 and int(headers["Retry-After"]) > 0 and "try again" in text
    headers, answer = out["whip"]
    assert m_lines(answer) == [("audio", "recvonly")]
    assert headers["ETag"] == '"' + re.search(r"a=ice-ufrag:(\S+)", answer).group(1) + '"'
    assert m_lines(out["video"][1]) == [("video", "sendonly")]
    assert m_lines(out["audio"][1]) == [("audio", "sendonly")]
    assert m_lines(out["audio+video"][1]) == [
        ("audio", "sendonly"),
        ("video", "sendonly"),
        ("application", "sendrecv"),
    ]
    for name in ("video", "audio", "audio+video"):
        assert re.fullmatch(r'"[^"]+"', out[name][0]["ETag"])
    assert set(out["video", "frames"]) == {"video"} and set(out["audio", "frames"]) == {"audio"}
    assert out["size"] == out["avatar"]
    for status, allow, text in out["patch"].values():
        assert status == 405 and allow == "DELETE, OPTIONS" and "not supported" in text
    assert out["delete_ended_viewer"] == 200 and out["delete_ended_whip"] == 200
    assert out["delete_unknown"] == 404


# ---- bad offers ----------------------------------------------------------------------------------


def _strip_ice(sdp: str) -> str:
    return "".join(line for line in sdp.splitlines(True) if not line.startswith(("a=ice-ufrag", "a=ice-pwd")))


def test_bad_offers_get_400_and_hold_nothing(media):
    app = make_app(media)
    server = app[SERVER]
    bodies = {
        "empty": b"",
        "blank": b"  \r\n",
        "garbage": b"hello, I am not SDP",
        "json": b'{"sdp": "v=0", "type": "offer"}',
        "not utf-8": b"v=0\r\n\xff\xfe\x00o=- 1 1 IN IP4 0.0.0.0\r\n",
        "no media": b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
        "broken m-line": b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio x\r\n",
    }

    async def main():
        out = {}
        async with serve_app(app) as url, aiohttp.ClientSession() as http:
            for name, body in bodies.items():
                out[("whip", name)] = await post(http, f"{url}/whip", body)
                assert not server.sessions and not server._pending, name
            out[("whip", "415")] = await post(http, f"{url}/whip", b"v=0", {"Content-Type": "text/plain"})
            out[("whip", "413")] = await post(http, f"{url}/whip", b"v=0\r\n" + b"a=x\r\n" * 20000)
            # valid SDP that a WHIP server cannot take: video only, no ICE credentials
            v = Viewer(("video",))
            await v.pc.setLocalDescription(await v.pc.createOffer())
            out[("whip", "video only")] = await post(http, f"{url}/whip", v.pc.localDescription.sdp)
            await v.pc.close()
            pc, status, _, text = await publish(url, media["wav"], mangle=_strip_ice)
            out[("whip", "no ICE credentials")] = (status, None, text)
            await pc.close()
            assert not server.sessions
            # a normal session works after all that
            pc, status, headers, _ = await publish(url, media["wav"], video=True)  # a video track too
            assert status == 201
            out["whip ok"] = headers
            sid = headers["Location"].rsplit("/", 1)[1]
            hosted = server.sessions[sid]
            for name, body in bodies.items():
                out[("whep", name)] = await post(http, f"{url}/whep/{sid}", body)
                assert not hosted.viewers, name
            out[("whep", "415")] = await post(
                http, f"{url}/whep/{sid}", b"v=0", {"Content-Type": "application/json"}
            )
            sender = RTCPeerConnection(loopback_configuration())  # a "viewer" that only sends
            sender.addTransceiver("audio", direction="sendonly")
            await sender.setLocalDescription(await sender.createOffer())
            out[("whep", "sends only")] = await post(http, f"{url}/whep/{sid}", sender.localDescription.sdp)
            await sender.close()
            assert not hosted.viewers
            viewer = Viewer()
            status, _, _ = await viewer.watch(url, f"/whep/{sid}")
            assert status == 201
            await until(lambda: count(viewer, "video") >= 25, "frames after the bad requests")
            await viewer.close()
            await pc.close()
            await until(lambda: not server.sessions, "the session to end with its publisher")
        return out

    out = run(main)
    for key, value in out.items():
        if not isinstance(key, tuple):
            continue
        status, _, text = value
        expected = 415 if key[1] == "415" else 413 if key[1] == "413" else 400
        assert status == expected, (key, status, text)
        line = text.strip()
        assert line and "\n" not in line and len(line) < 200, (key, text)
        for leak in ("Traceback", "Error", "Exception", "None", "/", "list"):
            assert leak not in line or key[1] in ("415", "413"), (key, line)
    assert "UTF-8" in out[("whip", "not utf-8")][2] and "empty" in out[("whip", "empty")][2]
    assert "send audio" in out[("whip", "video only")][2]
    assert "ICE credentials" in out[("whip", "no ICE credentials")][2]
    assert "receive audio or video" in out[("whep", "sends only")][2]


# ---- failed peers --------------------------------------------------------------------------------


def _wrong_ufrag(sdp: str) -> str:
    return re.sub(r"a=ice-ufrag:\S+", "a=ice-ufrag:wrongufrag", sdp)


def _wrong_fingerprint(sdp: str) -> str:
    fake = ":".join(["AB"] * 32)
    return re.sub(r"a=fingerprint:sha-256 \S+", f"a=fingerprint:sha-256 {fake}", sdp)


async def _silent_dtls(params) -> None:  # this peer never answers the DTLS handshake
    return None


def test_failed_ice_or_dtls_removes_the_peer_within_seconds(media):
    app = make_app(media)
    server = app[SERVER]

    async def removed(predicate, what: str) -> float:
        t0 = time.monotonic()
        await until(predicate, what, timeout=CONNECT_TIMEOUT_S - 5)
        return time.monotonic() - t0

    async def main():
        out = {}
        async with serve_app(app) as url:
            # ICE fails: the offer names ICE credentials the peer does not use (checks get 401)
            pc, status, _, _ = await publish(url, media["wav"], mangle=_wrong_ufrag)
            assert status == 201 and len(server.sessions) == 1
            out["ice"] = await removed(lambda: not server.sessions, "the session whose ICE failed to go")
            await pc.close()
            # a session to watch, then viewers whose DTLS fails or never starts
            pc, status, headers, _ = await publish(url, media["wav"])
            sid = headers["Location"].rsplit("/", 1)[1]
            hosted = server.sessions[sid]
            viewer = Viewer()
            status, headers, _ = await viewer.watch(url, f"/whep/{sid}", mangle=_wrong_fingerprint)
            assert status == 201 and len(hosted.viewers) == 1
            out["dtls"] = await removed(lambda: not hosted.viewers, "the viewer whose DTLS failed to go")
            await viewer.close()
            async with aiohttp.ClientSession() as http, http.delete(url + headers["Location"]) as r:
                out["delete_failed_viewer"] = r.status
            stalled = Viewer()
            await stalled.pc.setLocalDescription(await stalled.pc.createOffer())
            for t in stalled.pc.getTransceivers():
                t.receiver.transport.start = _silent_dtls
            async with aiohttp.ClientSession() as http:
                status, _, answer = await post(http, f"{url}/whep/{sid}", stalled.pc.localDescription.sdp)
            assert status == 201 and len(hosted.viewers) == 1
            await stalled.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
            await until(lambda: stalled.pc.iceConnectionState == "completed", "the stalled viewer's ICE")
            out["stalled"] = await removed(lambda: not hosted.viewers, "the viewer that never did DTLS to go")
            await stalled.close()
            viewer = Viewer()  # the session still serves
            assert (await viewer.watch(url, f"/whep/{sid}"))[0] == 201
            await until(lambda: count(viewer, "video") >= 10, "frames after the failed viewers")
            await viewer.close()
            await pc.close()
            await until(lambda: not server.sessions, "the session to end with its publisher")
        return out

    out = run(main, limit=6 * LIMIT)
    print(
        f"removed after: ICE failed {out['ice']:.2f} s, DTLS failed {out['dtls']:.2f} s, "
        f"DTLS stalled {out['stalled']:.2f} s"
    )
    assert ICE_TIMEOUT_S * 0.5 <= out["ice"] < REMOVED_WITHIN_S and out["dtls"] < REMOVED_WITHIN_S
    assert out["stalled"] < REMOVED_WITHIN_S and out["stalled"] >= DTLS_TIMEOUT_S * 0.5
    assert out["delete_failed_viewer"] == 200


def test_allow_origin_option():
    from engine.cli import build_parser
    from streaming.server import config_from_args

    def origins(*values):
        argv = ["serve", *(x for v in values for x in ("--allow-origin", v))]
        return config_from_args(build_parser().parse_args(argv)).allow_origins

    assert origins() == ()
    assert origins("HTTP://Player.Example:80/", "https://a.example:8443", "*") == (
        "http://player.example",  # as browsers send Origin: lower case, no default port
        "https://a.example:8443",
        "*",
    )
    for bad in (
        "player.example",
        "ftp://x.example",
        "http://x.example/path",
        "http://x.example:99999",
        "null",
    ):
        with pytest.raises(SystemExit):
            origins(bad)
