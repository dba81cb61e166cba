"""GStreamer's ``webrtcbin`` as a third-party WHIP publisher and WHEP player of the real server.

The clients are tests/gst_webrtc.py, run as child processes with Debian's Python and PyGObject
(``/usr/bin/python3``: the project's virtual environment has no ``gi``), each doing the WHIP / WHEP
HTTP exchange itself. The server runs in the test's event loop on 127.0.0.1 (no weights: the
preview renderer), not in loopback mode (libnice offers the machine's interface addresses, not
127.0.0.1). One webrtcbin publishes a speech-like WAV to ``POST /whip`` (Opus, paced in real
time); while it talks, another plays the session with ``POST /whep/{session}`` (VP8 and Opus,
decoded, frames counted by a fakesink's handoffs). Both end with a DELETE of their resource.

DTLS certificate: GStreamer 1.22 makes an RSA certificate, which aiortc refuses ("no shared
cipher"); the clients get an ECDSA P-256 certificate (RFC 8827 requires every endpoint to support
it), made here with ``cryptography`` (docs/deploy.md, "GStreamer").

Skips, with the reason, where Debian's Python, PyGObject or a GStreamer element is missing.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
from pathlib import Path

import pytest

SYSTEM_PYTHON = Path("/usr/bin/python3")
CLIENT = Path(__file__).resolve().parent / "gst_webrtc.py"
PACKAGES = (
    "python3-gi gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0 "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice"
)
LIMIT = 60.0  # seconds: a bound on each client's whole run
SPEECH_S = 8.0  # the WAV the publisher sends
WATCH_FRAMES = 75  # the player plays until it decoded this many frames (3 s at 25 fps)


def _probe() -> str | None:
    """Why the GStreamer clients cannot run here, or None."""
    if not SYSTEM_PYTHON.is_file():
        return f"no Debian Python at {SYSTEM_PYTHON}"
    try:
        out = subprocess.run(
            [str(SYSTEM_PYTHON), str(CLIENT), "probe"], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "probing GStreamer timed out"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer / PyGObject not usable from {SYSTEM_PYTHON} ({last}); apt-get install {PACKAGES}"
    missing = json.loads(out.stdout)["missing"]
    if missing:
        return f"GStreamer elements missing: {', '.join(missing)} (apt-get install {PACKAGES})"
    return None


_why = _probe()
if _why is not None:
    pytest.skip(_why, allow_module_level=True)

from streaming.server import SERVER, AvatarLibrary, ModelEngine, ServerConfig, create_app, serve_app  # noqa: E402
from tests.helpers import speechlike, until, write_wav  # noqa: E402


def ecdsa_pem() -> str:
    """A self-signed ECDSA P-256 certificate and its private key, PEM (what dtlssrtpdec takes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gstreamer-webrtc-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode() + key_pem.decode()


async def client(*args: str, release: asyncio.Event | None = None) -> dict:
    """Run tests/gst_webrtc.py with Debian's Python; its JSON result (stderr shown on failure).
    With ``release``, its stdin is closed when the event is set (``whip --hold``)."""
    proc = await asyncio.create_subprocess_exec(
        str(SYSTEM_PYTHON),
        str(CLIENT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )

    async def run() -> tuple[bytes, bytes]:
        if release is not None:
            await release.wait()
        proc.stdin.close()
        return await proc.communicate()

    try:
        out, err = await asyncio.wait_for(run(), LIMIT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    assert lines, (
        f"gst_webrtc.py {args[0]} printed nothing (status {proc.returncode}):\n{err.decode()[-3000:]}"
    )
    result = json.loads(lines[-1])
    assert proc.returncode == 0 and result.get("connected"), (result, err.decode()[-3000:])
    return result


def test_webrtcbin_publishes_with_whip_and_plays_with_whep(tmp_path):
    wav = tmp_path / "speech.wav"
    write_wav(wav, speechlike(SPEECH_S, seed=7))
    pem = tmp_path / "dtls.pem"
    pem.write_text(ecdsa_pem())
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()

    async def main():
        # not loopback: libnice offers the interface addresses; no ICE servers (host candidates)
        cfg = ServerConfig(cache_dir=str(tmp_path / "avatars"), refs=1, checkpoint_dir=str(empty))
        app = create_app(cfg, ModelEngine.from_config(cfg), AvatarLibrary.from_config(cfg))
        server = app[SERVER]
        async with serve_app(app) as base:
            watched = asyncio.Event()  # the publisher keeps its session until the player is done
            publish = asyncio.create_task(
                client(
                    "whip",
                    f"{base}/whip",
                    "--wav",
                    str(wav),
                    "--pem",
                    str(pem),
                    "--seconds",
                    "40",
                    "--hold",
                    release=watched,
                )
            )
            await until(lambda: server.sessions or publish.done(), "the WHIP session", 30)
            if publish.done():
                raise AssertionError(f"the publisher ended before its session was seen: {await publish}")
            hosted = next(iter(server.sessions.values()))
            assert hosted.kind == "whip"
            stats = hosted.stream.live.stats
            await until(lambda: stats.audio_seconds > 1.0 or publish.done(), "audio from webrtcbin", 30)
            assert not publish.done(), publish.result()
            speaking: list[bool] = []
            watch = asyncio.create_task(
                client(
                    "whep",
                    f"{base}/whep/{hosted.stream.id}",
                    *("--pem", str(pem), "--seconds", "30", "--frames", str(WATCH_FRAMES)),
                )
            )
            while not watch.done():
                speaking.append(bool(hosted.stream.stats()["speaking"]))
                await asyncio.sleep(0.05)
            played = await watch
            watched.set()
            sent = await publish
            await until(lambda: not server.sessions, "the WHIP session to end after its DELETE", 30)

        print(f"webrtcbin WHIP publisher: {sent}\nwebrtcbin WHEP player: {played}")
        # the publisher: connected, sent the whole file in real time, and DELETE ended the session
        assert sent["eos"] and sent["delete"] == 200, sent
        assert sent["rtp_packets"] >= 0.9 * SPEECH_S * 50, sent  # 20 ms Opus packets
        assert sent["location"].startswith(f"{base}/whip/{hosted.stream.id}"), sent
        # the file, less what played while ICE and DTLS connected (the source does not wait for them)
        assert stats.audio_seconds >= SPEECH_S - 3.0, stats.audio_seconds
        assert any(speaking), "the server's speech gate never opened on webrtcbin's audio"
        # the player: the avatar's video (its size) and the session's audio, decoded
        frame = server.library.get(hosted.stream.avatar_name).frames[0]
        assert (played["width"], played["height"]) == (frame.shape[1], frame.shape[0]), played
        assert played["video_frames"] >= WATCH_FRAMES and played["fps"] >= 12, played  # 25 fps sent
        assert played["audio_samples"] >= 0.5 * 48000 * WATCH_FRAMES / 25, played
        assert played["delete"] == 200, played
        assert played["location"].startswith(f"{base}/whep/{hosted.stream.id}/"), played

    asyncio.run(asyncio.wait_for(main(), 3 * LIMIT))
