"""Hostile and careless HTTP input to the server (issue 15): every case is answered with its 4xx
status, its error code and one plain sentence, no answer names a path, a traceback or an exception,
no handler crashes (no traceback in the server's log), and after each case a normal session (a
websocket PCM session whose first frames are made) still works on the same server. Avatars: a
face-less video in ``--avatar-dir`` is prepared once in a worker thread (``/healthz`` answers
meanwhile), its failure is remembered and shown without paths; ``mouthpiece serve`` with a broken
``--avatar`` is one line and exit 2. The websocket and data channel cases are in
test_hostile_server_ws.py. Raw sockets where the HTTP client would not send the input."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import cv2
import numpy as np
import pytest

from streaming import webrtc
from streaming.server import AvatarLibrary, ServerConfig, create_app
from tests.conftest import ROOT
from tests.helpers import LIMIT, ThreadServer, assert_clean, invert_engine, server_config

SDP = {"Content-Type": "application/sdp"}


def faceless_video(path, frames: int = 750) -> None:
    """A video with no face in it (a flat, slowly changing grey): seconds to find that out."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(frames):
        w.write(np.full((240, 320, 3), 90 + i % 50, np.uint8))
    w.release()


@pytest.fixture(scope="module")
def hs(tmp_path_factory, landmark_model):
    """One server for the module: the portrait (default), a face-less image and a face-less video."""
    root = tmp_path_factory.mktemp("hostile-http")
    avatars = root / "avatars"
    avatars.mkdir()
    cv2.imwrite(str(avatars / "blank.png"), np.full((256, 256, 3), 128, np.uint8))
    faceless_video(avatars / "slow.mp4")
    cfg = ServerConfig(
        refs=1, cache_dir=str(root / "cache"), avatar_dir=str(avatars), default_avatar="portrait"
    )
    app = create_app(
        server_config(max_sessions=4),
        engine=invert_engine(landmark_model),
        library=AvatarLibrary.from_config(cfg),
    )
    with ThreadServer(app) as running:
        running.private = (str(root), str(ROOT))
        yield running


@pytest.fixture(autouse=True)
def still_serves(hs):
    """After each test: no handler crashed, a normal session works, no session is left."""
    before = len(hs.errors)
    yield
    assert hs.errors[before:] == []
    hs.assert_serves()
    hs.assert_no_sessions()


async def request(url: str, method: str, path: str, **kw) -> tuple[int, dict, str]:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, **kw) as r:
        return r.status, dict(r.headers), await r.text()


def ask(hs, method: str, path: str, **kw) -> tuple[int, dict, str]:
    status, headers, text = asyncio.run(asyncio.wait_for(request(hs.url, method, path, **kw), LIMIT))
    assert_clean(text, *hs.private)
    return status, headers, text


def raw(hs, data: bytes, wait_close: float = LIMIT) -> bytes:
    """Send raw bytes on a new connection; what the server answers until it closes (or a limit)."""
    host, port = hs.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_close) as s:
        s.sendall(data)
        out = b""
        try:
            while b"\r\n\r\n" not in out or len(out) < 12:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
            s.settimeout(0.5)
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            pass
    return out


# ---- POST /offer -------------------------------------------------------------------------------

OFFER_CASES = [
    # (name, body, status, code, the sentence)
    (
        "avatar list",
        {"type": "offer", "sdp": "v=0", "avatar": ["portrait"]},
        400,
        "bad_request",
        "avatar must be a string (the name of an avatar), not an array",
    ),
    (
        "avatar dict",
        {"type": "offer", "sdp": "v=0", "avatar": {"a": 1}},
        400,
        "bad_request",
        "avatar must be a string (the name of an avatar), not an object",
    ),
    (
        "avatar number",
        {"type": "offer", "sdp": "v=0", "avatar": 1e308},
        400,
        "bad_request",
        "avatar must be a string (the name of an avatar), not a number",
    ),
    (
        "avatar bool",
        {"type": "offer", "sdp": "v=0", "avatar": True},
        400,
        "bad_request",
        "avatar must be a string (the name of an avatar), not a boolean",
    ),
    (
        "avatar huge",
        {"type": "offer", "sdp": "v=0", "avatar": "a" * 5000},
        400,
        "bad_request",
        "avatar is too long (at most 256 characters)",
    ),
    (
        "unknown avatar",
        {"type": "offer", "sdp": "v=0", "avatar": "../../etc/passwd"},
        404,
        "unknown_avatar",
        "no avatar named '../../etc/passwd'",
    ),
    ("sdp missing", {"type": "offer"}, 400, "bad_request", 'expected {"sdp": "...", "type": "offer"}'),
    (
        "sdp null",
        {"type": "offer", "sdp": None},
        400,
        "bad_request",
        'expected {"sdp": "...", "type": "offer"}',
    ),
    (
        "sdp list",
        {"type": "offer", "sdp": ["v=0"]},
        400,
        "bad_request",
        'expected {"sdp": "...", "type": "offer"}',
    ),
    (
        "type answer",
        {"type": "answer", "sdp": "v=0"},
        400,
        "bad_request",
        'expected {"sdp": "...", "type": "offer"}',
    ),
    (
        "sdp garbage",
        {"type": "offer", "sdp": "hello"},
        400,
        "bad_offer",
        "the offer is not SDP (it must start with v=0)",
    ),
    (
        "sdp no media",
        {"type": "offer", "sdp": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"},
        400,
        "bad_offer",
        "the offer has no media (m=) lines",
    ),
    ("array", [1, 2], 400, "bad_request", "the body must be a JSON object, not an array"),
    ("string", "offer", 400, "bad_request", "the body must be a JSON object, not a string"),
    ("null", None, 400, "bad_request", "the body must be a JSON object, not null"),
]


@pytest.mark.parametrize("name, body, status, code, sentence", OFFER_CASES, ids=[c[0] for c in OFFER_CASES])
def test_offer_json_of_every_wrong_shape_is_a_4xx_with_one_sentence(hs, name, body, status, code, sentence):
    got, _, text = ask(
        hs, "POST", "/offer", data=json.dumps(body), headers={"Content-Type": "application/json"}
    )
    answer = json.loads(text)
    assert (got, answer["error"]) == (status, code), text
    assert answer["message"].startswith(sentence), answer
    assert "\n" not in answer["message"]
    assert not hs.server.sessions  # nothing was started for it


RAW_BODIES = [
    ("deeply nested", b"[" * 60000 + b"]" * 60000, 400, "the body is nested too deeply"),
    ("deeply nested objects", b'{"a":' * 20000 + b"1" + b"}" * 20000, 400, "the body is nested too deeply"),
    ("not JSON", b"{sdp: v=0", 400, "the body is not JSON"),
    ("not UTF-8", b'{"type": "offer", "sdp": "\xff\xfe"}', 400, "the body is not UTF-8 text"),
    ("empty", b"", 400, "the body is not JSON"),
    (
        "a 5000-digit number",
        b'{"type": "offer", "sdp": "v=0", "avatar": ' + b"9" * 5000 + b"}",
        400,
        "the body has a number that is too long",
    ),
    (
        "NaN",
        b'{"type": "offer", "sdp": "v=0", "avatar": NaN}',
        400,
        "avatar must be a string (the name of an avatar), not a number",
    ),
    (
        "over the cap",
        b'{"sdp": "' + b"a" * (200 * 1024) + b'"}',
        413,
        "the body is too large: at most 128 KiB",
    ),
]


@pytest.mark.parametrize("name, body, status, sentence", RAW_BODIES, ids=[c[0] for c in RAW_BODIES])
def test_offer_bodies_that_are_not_json_objects(hs, name, body, status, sentence):
    for ctype in ("application/json", "text/plain"):
        got, _, text = ask(hs, "POST", "/offer", data=body, headers={"Content-Type": ctype})
        answer = json.loads(text)
        if ctype == "text/plain" and name == "NaN":  # a JSON object, but not sent as JSON: never a session
            assert got == 415 and answer["message"] == "send the offer as application/json", text
            continue
        assert got == status and answer["message"] == sentence, (ctype, text)


def test_a_huge_content_length_is_refused_before_the_body_is_read(hs):
    """``Content-Length: 10^12`` and a few bytes: 413 at once, from the header (no wait for the
    body that will never come)."""
    head = (
        f"POST /offer HTTP/1.1\r\nHost: {hs.url[7:]}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000000\r\n\r\n{}"
    ).encode()
    t0 = time.monotonic()
    out = raw(hs, head)
    assert out.startswith(b"HTTP/1.1 413"), out[:200]
    assert b"the body is too large: at most 128 KiB" in out
    assert time.monotonic() - t0 < LIMIT
    assert_clean(out.decode("latin-1"), *hs.private)


def test_a_body_that_never_arrives_is_refused_after_the_body_deadline(hs, monkeypatch):
    """Slowloris: a body announced and never sent (or sent a byte at a time) does not hold the
    handler: 408 after :data:`webrtc.BODY_TIMEOUT_S` (1 s here; 10 s in service). The idle
    connection itself is aiohttp's to close (its keep-alive and read timeouts)."""
    monkeypatch.setattr(webrtc, "BODY_TIMEOUT_S", 1.0)
    for path, ctype in (
        ("/offer", "application/json"),
        ("/whip", "application/sdp"),
        ("/whep", "application/sdp"),
    ):
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {hs.url[7:]}\r\nContent-Type: {ctype}\r\n"
            "Content-Length: 5000\r\n\r\nv=0\r\n"
        ).encode()
        out = raw(hs, head)
        assert out.startswith(b"HTTP/1.1 408"), (path, out[:200])
        assert b"did not arrive within 1 s" in out, out


# ---- WHIP and WHEP -----------------------------------------------------------------------------


def _offer_sdp(direction: str = "sendonly") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
        f"a={direction}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
        "a=rtpmap:111 opus/48000/2\r\n"
    )


WHIP_CASES = [
    ("non-UTF-8", b"v=0\r\n\xff\xfe\xfd", SDP, 400, "the offer is not UTF-8 text: send an SDP offer"),
    ("empty", b"", SDP, 400, "the offer is empty: send an SDP offer"),
    ("not SDP", b"GET / HTTP/1.1", SDP, 400, "the offer is not SDP (it must start with v=0)"),
    (
        "JSON",
        b'{"sdp": "v=0"}',
        {"Content-Type": "application/json"},
        415,
        "WHIP/WHEP offers must be sent as application/sdp",
    ),
    (
        "no content type",
        b"v=0",
        {"Content-Type": ""},
        415,
        "WHIP/WHEP offers must be sent as application/sdp",
    ),
    ("too big", b"v=0\r\n" + b"a=x\r\n" * 20000, SDP, 413, "the offer is too large: at most 64 KiB"),
    (
        "receives only",
        _offer_sdp("recvonly").encode(),
        SDP,
        400,
        "a WHIP offer must send audio (an audio m-line, sendonly or sendrecv)",
    ),
    (
        "no ICE",
        _offer_sdp().replace("a=ice-ufrag:abcd\r\n", "").encode(),
        SDP,
        400,
        "the offer has no ICE credentials (a=ice-ufrag, a=ice-pwd)",
    ),
]


@pytest.mark.parametrize("name, body, headers, status, sentence", WHIP_CASES, ids=[c[0] for c in WHIP_CASES])
def test_whip_offers_of_every_wrong_shape(hs, name, body, headers, status, sentence):
    got, _, text = ask(hs, "POST", "/whip", data=body, headers=headers)
    assert (got, text) == (status, sentence)
    assert not hs.server.sessions


def test_whip_and_whep_paths_with_wrong_names_methods_and_fragments(hs):
    # an unknown or unavailable avatar, an unknown session, a PATCH of garbage ICE fragments
    status, _, text = ask(hs, "POST", "/whip?avatar=%ff%fe", data=_offer_sdp(), headers=SDP)
    assert status == 404 and json.loads(text)["error"] == "unknown_avatar"
    status, _, text = ask(hs, "POST", "/whip?avatar=blank", data=_offer_sdp(), headers=SDP)
    assert (status, text) == (422, "avatar 'blank' (blank.png) is unavailable: no face was found in it")
    status, _, text = ask(hs, "POST", "/whep/nosuchsession", data=_offer_sdp("recvonly"), headers=SDP)
    assert (status, text) == (404, "no such session (it may have ended)")
    for path in ("/whip/x", "/whep/x/y"):
        status, headers, text = ask(
            hs,
            "PATCH",
            path,
            data=b"a=candidate:\xff garbage\r\n" * 100,
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        )
        assert status == 405 and headers["Allow"] == "DELETE, OPTIONS"
        assert text == "trickle ICE and ICE restarts are not supported: send a complete offer"
    status, _, text = ask(hs, "DELETE", "/whip/nosuch")
    assert (status, text) == (404, "no such WHIP session")
    status, _, text = ask(hs, "DELETE", "/whep/nosuch/viewer")
    assert (status, text) == (404, "no such WHEP viewer")
    status, headers, _ = ask(hs, "OPTIONS", "/whep")
    assert status == 204 and headers["Allow"] == "OPTIONS, POST"


def test_wrong_methods_and_unknown_paths(hs):
    """405 with ``Allow`` for a known path, 404 for an unknown one; neither names anything inside."""
    for method, path, allow in (
        ("GET", "/offer", "POST"),
        ("PUT", "/api/sessions/x", None),
        ("POST", "/api/info", "GET"),
        ("DELETE", "/api/avatars", "GET"),
        ("GET", "/whip", None),
    ):
        status, headers, _ = ask(hs, method, path)
        assert status == 405 and "Allow" in headers, (method, path)
        if allow:
            assert allow in headers["Allow"]
    for path in (
        "/nope",
        "/api/../../etc/passwd",
        "/static/../streaming/app.py",
        "/%ff",
        "/api/sessions/x/y",
    ):
        status, _, text = ask(hs, "GET", path)
        assert status in (403, 404), (path, status, text)
        assert "def " not in text and "import" not in text
    status, _, text = ask(hs, "GET", "/api/sessions/nosuch")
    assert status == 404 and json.loads(text) == {"error": "unknown_session", "message": "no such session"}
    status, _, text = ask(hs, "DELETE", "/api/sessions/nosuch")
    assert status == 404 and json.loads(text)["error"] == "unknown_session"


# ---- avatars -----------------------------------------------------------------------------------


def test_a_failed_avatar_is_prepared_once_and_shown_unavailable_without_paths(hs):
    lib = hs.server.library
    first = ask(hs, "GET", "/api/avatars/blank/poster.jpg")
    started = lib.preparations
    for _ in range(3):  # remembered: not prepared again
        assert ask(hs, "GET", "/api/avatars/blank/poster.jpg")[:3:2] == first[:3:2]
    assert lib.preparations == started
    status, _, text = first
    assert status == 422 and json.loads(text) == {
        "error": "no_face",
        "message": "avatar 'blank' (blank.png) is unavailable: no face was found in it",
    }
    for path in ("/api/avatars", "/api/info"):
        body = json.loads(ask(hs, "GET", path)[2])
        blank = next(a for a in body["avatars"] if a["name"] == "blank")
        assert blank["ready"] is False and blank["available"] is False and blank["error"] == "no_face"
        assert blank["message"] == "avatar 'blank' (blank.png) is unavailable: no face was found in it"
        assert blank["source"] == "blank.png"
    # a session asking for it: 422 with the same sentence, and nothing started
    status, _, text = ask(
        hs, "POST", "/offer", json={"type": "offer", "sdp": _offer_sdp(), "avatar": "blank"}
    )
    assert status == 422 and json.loads(text)["error"] == "no_face"
    status, _, text = ask(hs, "GET", "/api/avatars/%2e%2e%2fportrait/poster.jpg")
    assert status == 404 and json.loads(text)["error"] == "unknown_avatar"


def test_info_names_no_folder(hs):
    """Weights found on disk and avatar files are named by their file names only."""
    eng = hs.server.engine
    saved = eng.weights
    eng.weights = {
        "landmark": "/home/someone/ckpt/landmark.pth",
        "renderer": "/srv/w/renderer.pth",
        "standin": False,
    }
    try:
        status, _, text = ask(hs, "GET", "/api/info")  # (ask checks for /home, /tmp, /work, ...)
    finally:
        eng.weights = saved
    info = json.loads(text)
    assert status == 200 and "/srv" not in text
    assert info["weights"] == {"landmark": "landmark.pth", "renderer": "renderer.pth", "standin": False}
    assert all(a["source"] == os.path.basename(a["source"]) for a in info["avatars"])


def test_healthz_answers_while_an_avatar_is_prepared(hs):
    """A face-less 750-frame video is prepared (seconds of FaceMesh) in a worker thread: /healthz
    and a running session's requests are answered meanwhile. The issue's target is 100 ms; the
    bound here is 1 s so that a loaded CI machine (2 cores shared with the preparation) cannot
    make it flaky, and the measured figure is printed (docs/security.md quotes it)."""
    lib = hs.server.library

    async def main():
        async with aiohttp.ClientSession() as http:
            posters = [
                asyncio.create_task(request(hs.url, "GET", "/api/avatars/slow/poster.jpg")) for _ in range(3)
            ]
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LIMIT
            while "slow" not in lib._preparing:  # the preparation has begun
                assert loop.time() < deadline
                await asyncio.sleep(0.005)
            times = []
            while "slow" in lib._preparing:
                t0 = time.perf_counter()
                async with http.get(hs.url + "/healthz") as r:
                    assert r.status == 200 and (await r.json())["status"] == "ok"
                times.append(time.perf_counter() - t0)
                await asyncio.sleep(0.02)
            answers = await asyncio.gather(*posters)
        return times, answers

    before = lib.preparations
    times, answers = asyncio.run(asyncio.wait_for(main(), 4 * LIMIT))
    assert lib.preparations == before + 1  # three requests, one preparation
    assert len(times) >= 5, times  # the preparation took long enough to measure
    print(
        f"/healthz while an avatar prepared: {len(times)} requests, max {max(times) * 1e3:.1f} ms, "
        f"median {sorted(times)[len(times) // 2] * 1e3:.1f} ms"
    )
    assert max(times) < 1.0, times
    for status, _, text in answers:
        assert status == 422 and json.loads(text)["message"] == (
            "avatar 'slow' (slow.mp4) is unavailable: no face was found in it"
        )


# ---- mouthpiece serve with a broken --avatar ---------------------------------------------------


def test_serve_with_a_broken_avatar_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "noface.png"
    cv2.imwrite(str(bad), np.full((128, 128, 3), 200, np.uint8))
    with socket.socket() as s:  # a free port (the check comes before the port is taken)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "serve",
            "--avatar",
            str(bad),
            "--renderer",
            "none",
            "--cache",
            str(tmp_path / "cache"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mouthpiece:")]
    assert lines == [f"mouthpiece: avatar {bad}: no face was found in it"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "open http" not in proc.stdout
