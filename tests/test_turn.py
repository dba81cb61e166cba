"""Behind NAT: relay-only ICE through a real TURN server (Debian's coturn), from headless Chromium.

The test starts ``turnserver`` (coturn) on 127.0.0.1 with a temporary configuration: long-term
credentials (a user, a password, a realm), UDP only (no TLS / DTLS listeners), relay addresses on
127.0.0.1 in a known port range, its log in a file; it runs in the foreground and the test stops it.
The server runs with ``--ice-server turn:127.0.0.1:PORT`` and the credentials and WITHOUT
``--loopback``: it offers its interface addresses (host candidates). Chromium uses relay-only ICE
(``iceTransportPolicy: "relay"``, the ICE servers taken from ``/api/info``), so the only candidates
the browser may use are relay candidates allocated on coturn: every packet between them goes
through the TURN server, as for a browser behind a NAT that lets nothing else out.

- The page on ``/?relay=1`` with a fake microphone: the avatar video plays (frames advance) and the
  page shows the route ``relay -> host``.
- A WHEP viewer (a small WHEP exchange in a page script, relay-only) of a websocket session.

Each checks, in the browser's getStats, that the selected pair is relay (a coturn relay address)
-> host (the server's interface address), in aioice's nominated pair that the server talks to that
relay address, in coturn's log that the allocation was granted to our user with a permission for
the server's address, and at the end that the browser released it. (One video consumer per
session here: the page and a WHEP viewer on one session is the multi-viewer test's subject.) The
ICE-server options and ``/api/info`` are checked without coturn.

Every wait is bounded (``LIMIT``) and waits on a condition (page state, server state, the log).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from streaming.config import ICE_CREDENTIAL_ENV, ServerConfig, add_arguments, config_from_args
from tests.helpers import chromium_missing, launch_chromium, until

LIMIT = 30.0  # seconds: a bound on every wait
MS = LIMIT * 1000
TURNSERVER = shutil.which("turnserver")
USER, PASSWORD, REALM = "mouthpiece", "turn-test-secret", "mouthpiece.test"
RELAY_PORTS = 200  # the width of coturn's relay port range
WANT_FRAMES = 25


# ---- the ICE-server options and /api/info (no coturn, no browser) ----------------------------


def parse(*argv: str, env: dict | None = None) -> ServerConfig:
    saved = os.environ.get(ICE_CREDENTIAL_ENV)
    os.environ.pop(ICE_CREDENTIAL_ENV, None)
    os.environ.update(env or {})
    try:
        p = argparse.ArgumentParser(prog="mouthpiece serve", exit_on_error=False)
        add_arguments(p)
        return config_from_args(p.parse_args(list(argv)))
    finally:
        os.environ.pop(ICE_CREDENTIAL_ENV, None)
        if saved is not None:
            os.environ[ICE_CREDENTIAL_ENV] = saved


def test_ice_server_options():
    assert parse().ice_server_entries() == []
    cfg = parse(
        "--ice-server",
        "stun:stun.example.org",
        "--ice-server",
        "turn:turn.example.org:3478?transport=udp",
        "--ice-server",
        "turns:turn.example.org:5349?transport=tcp",
        "--ice-username",
        "alice",
        "--ice-credential",
        "s3cret",
    )
    assert cfg.ice_server_entries() == [
        {"urls": ["stun:stun.example.org"]},
        {
            "urls": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"],
            "username": "alice",
            "credential": "s3cret",
        },
    ]
    # the credential from the environment (kept off the command line)
    cfg = parse("--ice-server", "turn:10.0.0.1", "--ice-username", "bob", env={ICE_CREDENTIAL_ENV: "pw"})
    assert cfg.ice_server_entries() == [{"urls": ["turn:10.0.0.1"], "username": "bob", "credential": "pw"}]
    assert parse("--ice-server", "stun:10.0.0.1:3478").ice_server_entries() == [
        {"urls": ["stun:10.0.0.1:3478"]}
    ]

    # a TURN server without credentials: one clear line (the CLI prints ValueErrors as such)
    with pytest.raises(ValueError, match=r"^a TURN server needs credentials: give --ice-username"):
        parse("--ice-server", "turn:turn.example.org", "--ice-username", "alice")
    with pytest.raises(ValueError, match="needs credentials"):
        ServerConfig(ice_servers=("turn:turn.example.org",), ice_credential="x")
    # URLs that aiortc or a browser would not take
    bad = {
        "https://turn.example.org": "not a STUN or TURN URL",
        "turn:alice:pw@turn.example.org": "not a STUN or TURN URL",
        "turn:turn.example.org:99999": "bad port",
        "stun:stun.example.org?transport=udp": "a STUN URL takes no transport",
        "turns:turn.example.org?transport=udp": "runs over tcp",
        "turn:turn.example.org?transport=sctp": "not a STUN or TURN URL",
        "stuns:stun.example.org": "not a STUN or TURN URL",
        "turn:[::1]:3478": "not a STUN or TURN URL",
    }
    for url, why in bad.items():
        with pytest.raises(argparse.ArgumentError, match=why):
            parse("--ice-server", url)
        with pytest.raises(ValueError, match=why):
            ServerConfig(ice_servers=(url,))


def test_api_info_lists_the_ice_servers():
    from streaming.server import AvatarLibrary, ModelEngine, create_app, serve_app

    async def main():
        cfg = ServerConfig(
            renderer="none",
            refs=1,
            ice_servers=("stun:127.0.0.1:3478", "turn:127.0.0.1:3478"),
            ice_username=USER,
            ice_credential=PASSWORD,
        )
        app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
        async with serve_app(app) as base, aiohttp.ClientSession() as http:
            async with http.get(base + "/api/info") as res:
                assert res.status == 200
                info = await res.json()
        assert info["ice_servers"] == [
            {"urls": ["stun:127.0.0.1:3478"]},
            {"urls": ["turn:127.0.0.1:3478"], "username": USER, "credential": PASSWORD},
        ]

    asyncio.run(main())


# ---- coturn ---------------------------------------------------------------------------------


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (coturn listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def stun_binding_answered(port: int, timeout: float = 0.2) -> bool:
    """Whether a STUN Binding request (RFC 8489) to 127.0.0.1:port gets a success response."""
    tid = os.urandom(12)
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + tid
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(request, ("127.0.0.1", port))
        try:
            data = s.recv(2048)
        except (TimeoutError, ConnectionRefusedError):
            return False
    return data[:2] == b"\x01\x01" and data[8:20] == tid


@dataclass
class Coturn:
    port: int
    relay_min: int
    relay_max: int
    log: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def allocation(self, relay_port: int) -> str | None:
        """The coturn session that allocated the relay address 127.0.0.1:relay_port for our user
        (granted: the ALLOCATE succeeded), or None."""
        m = re.search(rf"Local relay addr: 127\.0\.0\.1:{relay_port}\n.*session (\d+): new, ", self.text())
        if m is None:
            return None
        granted = (
            rf"session {m[1]}: realm <{REALM}> user <{USER}>: incoming packet ALLOCATE processed, success"
        )
        return m[1] if re.search(granted, self.text()) else None

    def permits(self, session: str, host: str) -> bool:
        """Whether the allocation ``session`` got a permission (or channel) for the peer ``host``."""
        return f"session {session}: peer {host} lifetime updated" in self.text()

    def released(self, session: str) -> bool:
        """Whether the allocation ``session`` was released (a Refresh with lifetime 0) or closed."""
        text = self.text()
        return f"session {session}: closed" in text or bool(
            re.search(
                rf"session {session}: refreshed, realm=<{REALM}>, username=<{USER}>, lifetime=0\b", text
            )
        )

    def relays_in_range(self, port: int) -> bool:
        return self.relay_min <= port <= self.relay_max


def _die_with_parent() -> None:
    """In the child: SIGTERM when the test process dies, even killed (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


@contextlib.contextmanager
def coturn(folder: Path):
    """coturn on 127.0.0.1 (a free port), relaying on 127.0.0.1, until the block ends."""
    port = free_port()
    relay_min = 20000 + (port * 7919) % 40000  # a range that differs between runs
    relay_max = relay_min + RELAY_PORTS - 1
    log = folder / "turnserver.log"
    conf = folder / "turnserver.conf"
    conf.write_text(
        "\n".join(
            [
                f"listening-port={port}",
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"min-port={relay_min}",
                f"max-port={relay_max}",
                "lt-cred-mech",
                f"user={USER}:{PASSWORD}",
                f"realm={REALM}",
                "fingerprint",
                "no-tls",
                "no-dtls",
                "no-tcp-relay",
                "no-cli",
                "no-multicast-peers",
                "allow-loopback-peers",  # the relay is on 127.0.0.1 (a server in --loopback mode too)
                "no-software-attribute",
                "relay-threads=1",  # one thread: each allocation's log lines stay together
                f"userdb={folder / 'turndb'}",
                f"pidfile={folder / 'turnserver.pid'}",
                f"log-file={log}",
                "simple-log",
                "no-stdout-log",
                "verbose",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        [TURNSERVER, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    server = Coturn(port, relay_min, relay_max, log, proc)
    try:
        for _ in range(int(LIMIT / 0.2)):
            if proc.poll() is not None:
                raise RuntimeError(f"turnserver exited with {proc.returncode}:\n{server.text()[-2000:]}")
            if stun_binding_answered(port):
                break
        else:
            raise TimeoutError(f"turnserver did not answer STUN within {LIMIT} s:\n{server.text()[-2000:]}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# ---- the page and a WHEP viewer, relay-only ------------------------------------------------

# The pair ICE selected, from getStats: its local and remote candidates.
SELECTED_PAIR_JS = """
async (pc) => {
  const report = await pc.getStats();
  let id = null;
  report.forEach((r) => {
    if (r.type === "transport" && r.selectedCandidatePairId) id = r.selectedCandidatePairId;
  });
  const pair = id && report.get(id);
  if (!pair || pair.state !== "succeeded") return null;
  const pick = (c) => ({
    type: c.candidateType, address: c.address, port: c.port, relayProtocol: c.relayProtocol,
  });
  return { local: pick(report.get(pair.localCandidateId)), remote: pick(report.get(pair.remoteCandidateId)),
           bytesReceived: pair.bytesReceived };
}
"""

# A WHEP viewer (draft-ietf-wish-whep): a recvonly offer, complete (no trickle), POSTed as
# application/sdp; the answer's Location is the resource to DELETE. ICE servers from /api/info,
# relay-only. Frames are counted with requestVideoFrameCallback on a video element.
WHEP_JS = """
async () => {
  const info = await (await fetch("/api/info")).json();
  const pc = new RTCPeerConnection({ iceServers: info.ice_servers, iceTransportPolicy: "relay" });
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const video = document.createElement("video");
  video.muted = true;
  video.playsInline = true;
  document.body.append(video);
  const stream = new MediaStream();
  pc.addEventListener("track", (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
    video.play().catch(() => {});
  });
  const viewer = (window.whep = { pc, video, frames: 0, location: null, status: null });
  const count = () => { viewer.frames += 1; video.requestVideoFrameCallback(count); };
  video.requestVideoFrameCallback(count);
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
  });
  const res = await fetch("/whep", { method: "POST", headers: { "Content-Type": "application/sdp" },
                                     body: pc.localDescription.sdp });
  viewer.status = res.status;
  if (res.status !== 201) return { status: res.status, text: await res.text() };
  viewer.location = res.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  return { status: res.status, location: viewer.location };
}
"""


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    from tests.helpers import speechlike, write_wav

    path = tmp_path_factory.mktemp("turn-media") / "mic.wav"
    write_wav(path, speechlike(3.0, seed=3))
    return path


def browser_requirements(turn: bool = True) -> None:
    if turn and TURNSERVER is None:
        pytest.skip("coturn is not installed (apt-get install coturn): no TURN server to relay through")
    why = chromium_missing()
    if why is not None:
        pytest.skip(why)


def is_loopback(host: str) -> bool:
    return ipaddress.ip_address(host).is_loopback


@dataclass
class Relayed:
    turn: Coturn | None  # None: no TURN server
    server: object  # streaming.registry.Server
    base: str
    browser: object  # playwright Browser
    errors: list
    loopback: bool  # the server in --loopback mode (it offers 127.0.0.1 only)


@contextlib.asynccontextmanager
async def relayed(turn: Coturn, folder: Path, wav: Path, loopback: bool = False):
    """The server with the TURN server and its credentials, by default not in loopback mode (it
    offers its interface addresses: the relay must reach them), and Chromium with a fake
    microphone."""
    from playwright.async_api import async_playwright

    from streaming.server import SERVER, AvatarLibrary, ModelEngine, create_app, serve_app

    empty = folder / "no-checkpoints"
    empty.mkdir(exist_ok=True)
    cfg = ServerConfig(
        loopback=loopback,
        ice_servers=(turn.url,),
        ice_username=USER,
        ice_credential=PASSWORD,
        cache_dir=str(folder / "avatars"),
        refs=1,
        checkpoint_dir=str(empty),
    )
    app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
    async with serve_app(app) as base, async_playwright() as pw:
        browser = await launch_chromium(pw, wav, loopback=False)
        try:
            yield Relayed(turn, app[SERVER], base, browser, [], loopback)
        finally:
            await browser.close()


async def new_page(env: Relayed, url: str):
    page = await env.browser.new_page()
    page.set_default_timeout(MS)
    page.on("pageerror", lambda e: env.errors.append(str(e)))
    await page.goto(url)
    return page


async def check_relayed(turn: Coturn, pair: dict | None, server_pairs: list, loopback: bool = False) -> str:
    """The browser's selected pair is relay (a coturn relay address) -> host (the server's
    interface address); the server's nominated pair is the same path seen from its side; coturn
    granted the allocation to our user and relayed to the server's address. The allocation."""
    assert pair is not None, "the browser has no selected candidate pair"
    local, remote = pair["local"], pair["remote"]
    assert local["type"] == "relay" and local["relayProtocol"] == "udp", pair
    assert local["address"] == "127.0.0.1" and turn.relays_in_range(local["port"]), pair
    assert remote["type"] == "host" and is_loopback(remote["address"]) == loopback, pair
    assert pair["bytesReceived"] > 10_000, pair
    (server_local, server_remote), *_ = server_pairs
    assert server_local[0] == remote["address"], (server_local, pair)
    assert server_remote == ("127.0.0.1", local["port"]), (server_remote, pair)
    # coturn writes its log with a delay: wait for the lines
    try:
        allocation = await until(lambda: turn.allocation(local["port"]), "coturn to log the allocation")
        await until(lambda: turn.permits(allocation, server_local[0]), "coturn to log the permission")
    except TimeoutError as e:
        raise AssertionError(f"{e}:\n{turn.text()[-3000:]}") from None
    return allocation


def run_relayed(tmp_path: Path, wav: Path, body, loopback: bool = False) -> None:
    browser_requirements()

    async def main(turn: Coturn):
        async with relayed(turn, tmp_path, wav, loopback) as env:
            allocations = await body(env)
            assert not env.errors, env.errors
        # the browser released its allocations (a Refresh with lifetime 0) when its peers closed
        await until(
            lambda: all(turn.released(a) for a in allocations),
            "coturn to see the browser's allocations released",
        )

    with coturn(tmp_path) as turn:
        asyncio.run(asyncio.wait_for(main(turn), 4 * LIMIT))
    assert not [t for t in threading.enumerate() if t.name.startswith("mouthpiece-live")]


@pytest.mark.parametrize("loopback", [False, True], ids=["interfaces", "loopback"])
def test_page_relay_only_through_coturn(tmp_path, wav, loopback):
    """The page on /?relay=1: the avatar plays, through the relay, and the page shows the route.
    With the server in --loopback mode too: the relay address (127.0.0.1) is a loopback candidate
    it accepts, and it sends nothing elsewhere."""
    from streaming.ice import selected_pairs, stray_sends

    async def body(env: Relayed) -> list[str]:
        page = await new_page(env, env.base + "/?relay=1")
        await page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('Ready')"
        )
        await page.click("#start")
        await page.wait_for_function(
            "n => window.mouthpiece.framesShown >= n && document.getElementById('video').currentTime > 0",
            arg=WANT_FRAMES,
        )
        hosted = await until(lambda: next(iter(env.server.sessions.values()), None), "a session")
        shown = await page.evaluate("() => window.mouthpiece.framesShown")
        await page.wait_for_function("n => window.mouthpiece.framesShown >= n", arg=shown + WANT_FRAMES)
        pair = await page.evaluate(f"() => ({SELECTED_PAIR_JS})(window.mouthpiece.state.pc)")
        allocation = await check_relayed(env.turn, pair, selected_pairs(hosted.pc), loopback)
        assert not loopback or not stray_sends(), stray_sends()  # (recorded in loopback mode only)
        await until(lambda: hosted.stream.live.stats.audio_seconds > 0.5, "microphone audio at the server")
        # the page shows the route it took
        await page.click("#stages-panel summary")
        await page.wait_for_function(
            "() => { const r = document.querySelector('#path tr[data-figure=\"route\"]');"
            " return r && r.children[1].textContent === 'relay -> host'; }"
        )
        await page.click("#stop")
        await until(lambda: not env.server.sessions, "the session to close after Stop")
        return [allocation]

    run_relayed(tmp_path, wav, body, loopback)


def test_whep_viewer_relay_only_through_coturn(tmp_path, wav):
    """A WHEP viewer in Chromium, relay-only, of a websocket session (PCM in, no other viewer)."""
    from streaming.ice import selected_pairs
    from tests.helpers import speechlike

    pcm = (speechlike(4.0, seed=5) * 32767).astype("<i2").tobytes()  # 16 kHz mono s16le

    async def body(env: Relayed) -> list[str]:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(env.base.replace("http", "ws") + "/ws") as ws,
        ):
            hello = await ws.receive_json(timeout=LIMIT)
            assert hello["type"] == "session", hello

            async def talk() -> None:  # 100 ms of speech every 100 ms, looped
                k = 0
                while True:
                    await ws.send_bytes(pcm[k : k + 3200])
                    k = (k + 3200) % len(pcm)
                    await asyncio.sleep(0.1)

            talking = asyncio.create_task(talk())
            try:
                viewer = await new_page(env, env.base + "/api/info")  # the server's origin, no page script
                answer = await viewer.evaluate(WHEP_JS)
                assert answer == {"status": 201, "location": answer["location"]}, answer
                assert answer["location"].startswith(hello["whep"] + "/"), (answer, hello)
                await viewer.wait_for_function(
                    "n => window.whep.frames >= n && window.whep.video.currentTime > 0", arg=WANT_FRAMES
                )
                seen = await viewer.evaluate("() => window.whep.frames")
                await viewer.wait_for_function("n => window.whep.frames >= n", arg=seen + WANT_FRAMES)
                hosted = env.server.sessions[hello["session"]]
                (pc,) = hosted.viewers.values()
                pair = await viewer.evaluate(f"() => ({SELECTED_PAIR_JS})(window.whep.pc)")
                allocation = await check_relayed(env.turn, pair, selected_pairs(pc))
                # the viewer leaves: DELETE its resource, then close its peer connection
                status = await viewer.evaluate(
                    "async () => { const res = await fetch(window.whep.location, { method: 'DELETE' });"
                    " window.whep.pc.close(); return res.status; }"
                )
                assert status == 200
                await until(lambda: not hosted.viewers, "the viewer to be gone")
            finally:
                talking.cancel()
                await asyncio.gather(talking, return_exceptions=True)
        await until(lambda: not env.server.sessions, "the websocket session to close")
        return [allocation]

    run_relayed(tmp_path, wav, body)


def test_relay_only_without_a_turn_server_is_explained(tmp_path, wav):
    """/?relay=1 on a server that lists no TURN server: one clear message, no session attempted."""
    browser_requirements(turn=False)
    from playwright.async_api import async_playwright

    from streaming.server import SERVER, AvatarLibrary, ModelEngine, create_app, serve_app

    async def main():
        cfg = ServerConfig(renderer="none", refs=1, ice_servers=("stun:127.0.0.1:3478",))
        app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
        async with serve_app(app) as base, async_playwright() as pw:
            browser = await launch_chromium(pw, wav, loopback=False)
            try:
                env = Relayed(None, app[SERVER], base, browser, [], False)
                page = await new_page(env, base + "/?relay=1")
                await page.wait_for_function(
                    "() => document.getElementById('status').textContent.startsWith('Ready')"
                )
                await page.click("#start")
                error = page.locator("#error")
                await error.wait_for(state="visible")
                text = await error.inner_text()
                assert text.startswith("Relay-only ICE (?relay=1 in the address) needs a TURN server"), text
                assert await page.locator("#start").is_enabled()
                assert env.server.started_total == 0 and not env.errors, env.errors
            finally:
                await browser.close()

    asyncio.run(asyncio.wait_for(main(), 2 * LIMIT))
