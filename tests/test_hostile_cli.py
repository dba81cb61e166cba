"""The ``mouthpiece`` command as a careless or unlucky user drives it: every case is a real process
(``python -m engine``, what the console script runs), and each bad input must be answered by one
``mouthpiece...: error: ...`` line on stderr (the exit status of engine/cli/errors.py: 2 for a user
error, 128 + N for signal N), never a traceback, never PyTorch's advice to load a checkpoint with
``weights_only=False``; the inputs are unchanged afterwards and no output or ``.partial.mp4`` is left.

The inputs are made here (the bundled portrait, synthetic speech, small videos and hostile files), so
the suite needs no shared media. The avatar is prepared once in this process, so most commands run no
face detection; the native libraries' own log lines (MediaPipe, TensorFlow Lite, libpng) are not ours
and are left out before the lines are counted (:func:`our_lines`).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.helpers import PORTRAIT, speechlike, write_wav

# Lines the native libraries write to stderr themselves (not the command's): MediaPipe / absl logging,
# TensorFlow Lite, libpng; and tqdm's progress bars.
NATIVE = re.compile(
    r"^([WIEF]\d{4} \d\d:\d\d|WARNING: All log messages before absl|INFO: Created TensorFlow Lite"
    r"|libpng warning|FaceMesh:|dubbing:)"
)
FORBIDDEN = ("Traceback", "weights_only", "file an issue", "pop from empty list", "avcodec_send_frame")
LIMIT_S = 180  # one command's time limit: generous, for a loaded machine


def our_lines(stderr: str) -> list[str]:
    """The command's own stderr lines (progress bars and native libraries' log lines left out)."""
    lines = []
    for line in stderr.replace("\r", "\n").splitlines():
        if line.strip() and not NATIVE.match(line.strip()):
            lines.append(line)
    return lines


def mouthpiece(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    """``mouthpiece ARGS`` in ``cwd`` (a real process, this checkout's engine)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
        **kw,
    )


def _float_wav(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    """A 32-bit float WAV (format 3), which can hold NaN and infinity."""
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    path.write_bytes(
        b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
        + b"data" + struct.pack("<I", len(data)) + data
    )  # fmt: skip
    return path


def _wav16(path: Path, x: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _video(path: Path, n: int, fast_start: bool) -> Path:
    """``n`` frames of the portrait (256 x 256, 25 fps, H.264); ``fast_start``: the index (moov) first,
    so that a cut file still opens and declares all ``n`` frames."""
    import av
    import cv2

    img = cv2.resize(cv2.imread(str(PORTRAIT)), (256, 256), interpolation=cv2.INTER_AREA)
    options = {"movflags": "faststart"} if fast_start else {}
    with av.open(str(path), "w", options=options) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 256, 256, "yuv420p"
        for i in range(n):
            shifted = np.roll(img, i % 3, axis=1)  # not all identical frames
            for p in s.encode(av.VideoFrame.from_ndarray(shifted, format="bgr24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder of inputs, good and hostile, with the portrait's avatar prepared in ``c/`` (--refs 1)."""
    import torch

    from engine.core.avatar import AvatarConfig, prepare_avatar

    d = tmp_path_factory.mktemp("hostile")
    shutil.copy(PORTRAIT, d / "p.png")
    prepare_avatar(d / "p.png", AvatarConfig(n_refs=1), d / "c")
    write_wav(d / "speech.wav", speechlike(1.0))
    write_wav(d / "short.wav", speechlike(0.1))
    _wav16(d / "silence.wav", np.zeros(16000, np.float32))
    _wav16(d / "empty.wav", np.zeros(0, np.float32))
    (d / "cut.wav").write_bytes((d / "speech.wav").read_bytes()[:300])  # header of 1 s, 256 bytes of it
    bad = speechlike(1.0)
    bad[4000:8000], bad[9000], bad[9001] = np.nan, np.inf, -np.inf
    _float_wav(d / "nan.wav", bad)
    _wav16(d / "long.wav", 0.1 * np.sin(2 * np.pi * 220 * np.arange(120 * 16000) / 16000))  # 120 s
    (d / "notes.txt").write_text("not a picture\n")
    (d / "grey.png").write_bytes(_png(np.full((96, 96, 3), 128, np.uint8)))
    (d / "folder").mkdir()
    (d / "made.mp4").mkdir()  # a folder with a video's name
    _video(d / "talk.mp4", 10, fast_start=False)
    os.link(d / "talk.mp4", d / "hard.mp4")
    whole = _video(d / "whole.mp4", 40, fast_start=True)
    (d / "cut.mp4").write_bytes(whole.read_bytes()[: _middle_of_packet(whole, 20)])
    ck = d / "ck"
    ck.mkdir()
    (ck / "page.pth").write_text(
        "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body></body></html>\n"
    )
    (ck / "text.pth").write_text("landmarkgenerator_checkpoint.pth\n")
    torch.save({"state_dict": {"fusion_transformer.x": torch.zeros(4)}}, ck / "lm_wrong.pth")
    torch.save(
        {"state_dict": {f"fusion_transformer.w{i}": torch.rand(64, 64) for i in range(8)}}, ck / "a.pth"
    )
    (ck / "trunc.pth").write_bytes((ck / "a.pth").read_bytes()[:40000])
    torch.save({"state_dict": {"x": _Code()}}, ck / "objects.pth")
    return d


def _middle_of_packet(path: Path, k: int) -> int:
    """The byte offset halfway through video packet ``k`` (in file order) of ``path``."""
    import av

    with av.open(str(path)) as c:
        packets = sorted((p.pos, p.size) for p in c.demux(c.streams.video[0]) if p.size)
    pos, size = packets[k]
    return pos + size // 2


class _Code:
    """Pickles as a call of ``print``: what a malicious checkpoint does with ``weights_only=False``."""

    def __reduce__(self):
        return (print, ("this ran",))


def _png(img: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".png", img)[1].tobytes()


def _digests(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.rglob("*"))
        if p.is_file() and not p.relative_to(d).parts[0] == "c"
    }


def _refused(r: subprocess.CompletedProcess, *words: str, status: int = 2) -> str:
    """Assert one ``mouthpiece...: error:`` line holding ``words`` and exit ``status``; the line."""
    lines = our_lines(r.stderr)
    assert r.returncode == status, (r.returncode, r.stderr[-2000:])
    assert len(lines) == 1 and re.match(r"mouthpiece( \w+)*: error: ", lines[0]), r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])
    for w in FORBIDDEN:
        assert w not in r.stderr and w not in r.stdout, (w, r.stderr[-2000:])
    assert "open http" not in r.stdout
    return lines[0]


DUB = ("dub", "--refs", "1", "--cache", "c", "--quiet")
PREVIEW = (*DUB, "--renderer", "preview")

# (arguments, words the one error line holds); each runs in the work folder, status 2
REFUSED = [
    # the output is one of the inputs: by name, by another spelling, by a hard link
    ((*PREVIEW, "--avatar", "talk.mp4", "--audio", "speech.wav", "--out", "talk.mp4"), ["--out", "--avatar"]),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "talk.mp4", "--out", "folder/../talk.mp4"), ["--audio"]),
    ((*PREVIEW, "--avatar", "talk.mp4", "--audio", "speech.wav", "--out", "hard.mp4"), ["--avatar"]),
    # missing, folders, the wrong kind of file
    ((*PREVIEW, "--avatar", "p.png", "--audio", "missing.wav", "--out", "o.mp4"), ["audio file not found"]),
    (
        (*PREVIEW, "--avatar", "missing.png", "--audio", "speech.wav", "--out", "o.mp4"),
        ["avatar file not found"],
    ),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "folder", "--out", "o.mp4"), ["folder", "not a file"]),
    ((*PREVIEW, "--avatar", "folder", "--audio", "speech.wav", "--out", "o.mp4"), ["folder", "not a file"]),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "p.png", "--out", "o.mp4"), ["p.png", "no audio stream"]),
    ((*PREVIEW, "--avatar", "speech.wav", "--audio", "speech.wav", "--out", "o.mp4"), ["no video stream"]),
    ((*PREVIEW, "--avatar", "notes.txt", "--audio", "speech.wav", "--out", "o.mp4"), ["notes.txt"]),
    ((*PREVIEW, "--avatar", "grey.png", "--audio", "speech.wav", "--out", "o.mp4"), ["grey.png", "no face"]),
    # outputs that cannot be written
    ((*PREVIEW, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mov"), ["o.mov", ".mp4"]),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "speech.wav", "--out", "made.mp4"), ["made.mp4", "folder"]),
    (
        (*PREVIEW, "--avatar", "p.png", "--audio", "speech.wav", "--out", "p.png/o.mp4"),
        ["p.png is not a folder"],
    ),
    # option values
    ((*PREVIEW, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4", "--batch", "x"), ["--batch"]),
    ((*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4", "--refs", "many"), ["--refs"]),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4", "--device", "gpu9"),
        ["--device"],
    ),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4", "--renderer", "x"),
        ["--renderer"],
    ),
    (("dub", "--avatar", "p.png"), ["required", "--audio"]),
    # audio too short or unreadable, on every renderer
    ((*PREVIEW, "--avatar", "p.png", "--audio", "short.wav", "--out", "o.mp4"), ["too short", "at least 3"]),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "cut.wav", "--out", "o.mp4"), ["too short"]),
    ((*PREVIEW, "--avatar", "p.png", "--audio", "empty.wav", "--out", "o.mp4"), ["empty.wav", "no samples"]),
    (
        (*DUB, "--avatar", "p.png", "--audio", "short.wav", "--out", "o.mp4", "--random-weights"),
        ["too short", "at least 3"],
    ),
    # weights: none here, or files that are not checkpoints
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4"),
        [
            "no landmark transformer checkpoint found in checkpoints/",
            "--random-weights",
            "--renderer preview",
        ],
    ),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4")
        + ("--landmark-checkpoint", "ck/page.pth", "--renderer-checkpoint", "ck/page.pth"),
        ["ck/page.pth", "is not a PyTorch checkpoint (it looks like HTML"],
    ),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4")
        + ("--landmark-checkpoint", "ck/trunc.pth", "--renderer-checkpoint", "ck/page.pth"),
        ["ck/trunc.pth", "is truncated or corrupt"],
    ),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4")
        + ("--landmark-checkpoint", "ck/objects.pth", "--renderer-checkpoint", "ck/page.pth"),
        ["ck/objects.pth", "Python objects besides tensors"],
    ),
    (
        (*DUB, "--avatar", "p.png", "--audio", "speech.wav", "--out", "o.mp4")
        + ("--landmark-checkpoint", "ck/lm_wrong.pth", "--renderer-checkpoint", "ck/page.pth"),
        ["ck/lm_wrong.pth", "wrong tensors for the landmark generator", "mouthpiece checkpoints verify"],
    ),
    (("checkpoints", "convert", "ck/text.pth", "o.safetensors"), ["ck/text.pth", "looks like a text file"]),
    # the server's port, before anything starts
    (("serve", "--port", "99999"), ["--port", "99999", "not a port number"]),
    (("serve", "--host", "no-such-host.invalid", "--renderer", "none"), ["--host", "no-such-host.invalid"]),
    (("serve", "--max-sessions", "0"), ["--max-sessions", "expected 1 or more, got 0"]),
    (("serve", "--mic-prefetch", "-1"), ["--mic-prefetch", "expected 0 or more, got -1"]),
    (("serve", "--delay-ms", "soon"), ["--delay-ms", "auto"]),
    # training and evaluation without their data
    (("train", "preprocess", "missing", "out_pre"), ["input folder not found: missing"]),
    (("train", "landmark", "folder", "out_lm"), ["no manifest.json in folder"]),
    (("train", "presenter", "missing.mp4", "--out", "out_p"), ["missing.mp4"]),
    (("train", "eval", "--generated", "missing.mp4", "--reference", "talk.mp4"), ["missing.mp4"]),
    (("prepare", "missing.mp4"), ["avatar file not found: missing.mp4"]),
]


def test_every_bad_input_is_one_line_and_status_2_with_the_inputs_untouched(work):
    before = _digests(work)
    names = set(os.listdir(work))
    with ThreadPoolExecutor(max_workers=3) as pool:  # each case a process of its own
        results = list(pool.map(lambda case: mouthpiece(*case[0], cwd=work), REFUSED))
    failures = []
    for (args, words), r in zip(REFUSED, results, strict=True):
        try:
            _refused(r, *words)
        except AssertionError as e:
            failures.append(f"mouthpiece {' '.join(args)}: {e}")
    assert not failures, "\n".join(failures)
    assert _digests(work) == before  # every input as it was
    assert set(os.listdir(work)) == names  # no output, no NAME.partial.mp4, no folder made


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads and writes anything")
def test_unreadable_inputs_and_unwritable_folders_are_one_line(work, tmp_path):
    audio = tmp_path / "locked.wav"
    shutil.copy(work / "speech.wav", audio)
    audio.chmod(0)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        r = mouthpiece(*PREVIEW, "--avatar", "p.png", "--audio", str(audio), "--out", "o.mp4", cwd=work)
        _refused(r, "locked.wav")
        r = mouthpiece(
            *PREVIEW, "--avatar", "p.png", "--audio", "speech.wav", "--out", str(ro / "o.mp4"), cwd=work
        )
        _refused(r, "no permission to write")
    finally:
        audio.chmod(0o644)
        ro.chmod(0o755)
    assert not (work / "o.mp4").exists() and not list(ro.iterdir())


def _frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(c.streams.video[0]))


def test_silence_dubs_and_nan_samples_become_silence_with_one_warning(work, tmp_path):
    r = mouthpiece(
        *PREVIEW, "--avatar", "p.png", "--audio", "silence.wav", "--out", str(tmp_path / "s.mp4"), cwd=work
    )
    assert r.returncode == 0 and our_lines(r.stderr) == [], r.stderr[-2000:]
    assert _frames(tmp_path / "s.mp4") == 21  # 1 s: 21 windows
    before = (work / "nan.wav").read_bytes()
    out = tmp_path / "nan.mp4"
    r = mouthpiece(*PREVIEW, "--avatar", "p.png", "--audio", "nan.wav", "--out", str(out), cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    assert our_lines(r.stderr) == [
        "mouthpiece: warning: nan.wav: 4002 of 16000 samples were not numbers (NaN or infinite) and were "
        "replaced by silence"
    ], r.stderr[-2000:]
    assert not any(w in r.stderr for w in FORBIDDEN) and "RuntimeWarning" not in r.stderr
    assert _frames(out) == 21  # every frame, and the file plays
    assert (work / "nan.wav").read_bytes() == before


def test_a_truncated_video_is_read_with_one_warning(work, tmp_path):
    r = mouthpiece("prepare", "cut.mp4", "--refs", "1", "--cache", str(tmp_path / "c"), cwd=work)
    assert r.returncode == 0, r.stderr[-2000:]
    warnings = [line for line in our_lines(r.stderr) if "warning" in line]
    assert len(warnings) == 1, r.stderr[-2000:]
    m = re.fullmatch(
        r"mouthpiece: warning: cut\.mp4 is truncated or damaged: read (\d+) of 40 frames", warnings[0]
    )
    assert m and 0 < int(m[1]) < 40, warnings
    assert f"{m[1]} frames" in r.stdout  # the avatar has the frames that were read
    r = mouthpiece("prepare", "whole.mp4", "--refs", "1", "--cache", str(tmp_path / "c"), cwd=work)
    assert r.returncode == 0 and "warning" not in r.stderr and "40 frames" in r.stdout, r.stderr[-2000:]


STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def test_a_stop_signal_leaves_no_partial_file(work, tmp_path):
    """Three dubs of 120 s of audio at once, each stopped by one signal as soon as its NAME.partial.mp4
    exists: status 128 + N, one line, no partial file, and the older file of the output's name (a
    finished dub replaces it, an interrupted one never does) unchanged."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {}
    for signum in STOP:
        folder = tmp_path / signal.Signals(signum).name
        folder.mkdir()
        (folder / "long.mp4").write_bytes(b"an older dub")
        cmd = [sys.executable, "-m", "engine", *PREVIEW, "--avatar", "p.png", "--audio", "long.wav"]
        runs[signum] = subprocess.Popen(
            [*cmd, "--out", str(folder / "long.mp4")],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored (a shell's &)
        )
    try:
        deadline = time.monotonic() + LIMIT_S
        waiting = dict(runs)
        while waiting and time.monotonic() < deadline:
            for signum, proc in list(waiting.items()):
                partial = tmp_path / signal.Signals(signum).name / "long.partial.mp4"
                if partial.exists() or proc.poll() is not None:
                    assert proc.poll() is None, f"the dub ended before it was stopped: {proc.stderr.read()}"
                    proc.send_signal(signum)
                    del waiting[signum]
            time.sleep(0.02)  # polling the file system: the partial file has no event to wait on
        assert not waiting, "a dub did not start writing"
        errors = {signum: proc.communicate(timeout=LIMIT_S)[1] for signum, proc in runs.items()}
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for signum, proc in runs.items():
        err, name = errors[signum], signal.Signals(signum).name
        assert proc.returncode == 128 + signum, (name, proc.returncode, err[-2000:])
        assert our_lines(err) == [f"mouthpiece: interrupted by {name}; nothing written"], err[-2000:]
        folder = tmp_path / name
        assert os.listdir(folder) == ["long.mp4"] and (folder / "long.mp4").read_bytes() == b"an older dub"


def _busy_port() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_serve_refuses_a_busy_port_before_saying_open_and_binds_before_it(work):
    with _busy_port() as busy:
        port = busy.getsockname()[1]
        r = mouthpiece("serve", "--port", str(port), "--renderer", "none", cwd=work)
        _refused(r, f"port {port} on 127.0.0.1 is in use", "--port")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "serve", "--port", "0", "--renderer", "none", "--cache", "c"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in proc.stdout:  # event-gated: the line saying where to open it
            if m := re.search(r"open (http://127\.0\.0\.1:(\d+)/)", line):
                url = m[1]
                break
        assert url, "no 'open' line"
        with urllib.request.urlopen(url + "healthz", timeout=30) as answer:  # listening when it said so
            assert answer.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]


def test_version(work):
    r = mouthpiece("--version", cwd=work)
    assert r.returncode == 0 and re.fullmatch(r"mouthpiece \d+\.\d+\.\d+\S*\n", r.stdout), r
