"""Memory of ``mouthpiece dub`` and ``prepare`` (issue 14): the dub streams, so its peak RSS does not grow
with the audio's length, and an image far larger than needed is scaled down on load.

Each command runs in a child process (``python -m engine ...``) that reports its own peak RSS
(``VmHWM`` of /proc/self/status, read as it exits). The bounds are fixed and generous for
load; what they are far below is recorded in benchmarks/results/dub_memory_cpu.md (the whole-file dub
of the same silent file peaked at several times the bound, growing with the length).
"""

from __future__ import annotations

import os
import subprocess
import sys
import wave

import av
import numpy as np
import pytest

from benchmarks.dub_memory import CHILD  # the child that reports its own peak RSS
from engine.core.audio import num_video_frames
from tests.conftest import ROOT

PORTRAIT = ROOT / "assets" / "portrait.png"
SILENCE_S = 240  # 4 minutes: 5,996 frames
#: The streaming dub stays under this whatever the length (measured on the 2-core CI machine, with the
#: avatar prepared in the same process: 423 MB for 1 minute, 433 MB for these 4 minutes; the whole-file
#: dub before it: 513 MB and 890 MB, 33 s and 61 s of wall time for these 4 minutes).
DUB_RSS_MB = 560
PREPARE_RSS_MB = 1500  # a 10000x10000 JPEG (the decoded image alone is 300 MB; before: over 12 GB)


def _run(args: list[str], cwd) -> tuple[int, str, float]:
    """Exit status, output and peak RSS (MB) of ``python -m engine ARGS`` in a child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    hwm = cwd / "hwm.txt"
    cmd = [sys.executable, "-c", CHILD, str(hwm), *args]
    r = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return r.returncode, r.stdout, int(hwm.read_text()) / 1024


def _write_silence(path, seconds: int, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        second = np.zeros(rate, "<i2").tobytes()
        for _ in range(seconds):
            f.writeframes(second)


def test_a_long_silent_dub_runs_in_bounded_memory(tmp_path):
    audio, out = tmp_path / "silence.wav", tmp_path / "out.mp4"
    _write_silence(audio, SILENCE_S)
    args = ["dub", "--avatar", str(PORTRAIT), "--audio", str(audio), "--out", str(out)]
    rc, text, peak = _run(
        args + ["--renderer", "preview", "--refs", "1", "--cache", str(tmp_path / "c"), "--quiet"], tmp_path
    )
    assert rc == 0, text
    frames = num_video_frames(1 + SILENCE_S * 16000 // 200)
    assert frames == 5996 and f"{frames} frames at 25 fps ({SILENCE_S:.2f} s of audio)" in text
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert (v.frames, v.average_rate, a.rate) == (frames, 25, 48000)
        assert float(v.duration * v.time_base) == pytest.approx(frames / 25)
        assert float(a.duration * a.time_base) == pytest.approx(SILENCE_S, abs=0.03)  # all the audio
    assert peak < DUB_RSS_MB, f"peak RSS {peak:.0f} MB"
    assert not (tmp_path / "out.partial.mp4").exists()


def test_a_huge_image_is_scaled_down_and_prepares_in_bounded_memory(tmp_path):
    import cv2

    big = cv2.resize(cv2.imread(str(PORTRAIT)), (10000, 10000), interpolation=cv2.INTER_LINEAR)
    assert cv2.imwrite(str(tmp_path / "huge.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    del big
    rc, text, peak = _run(
        ["prepare", str(tmp_path / "huge.jpg"), "--refs", "1", "--cache", str(tmp_path / "c")], tmp_path
    )
    assert rc == 0, text
    assert "face found in 1" in text and "the 10000x10000 image was scaled down to at most 2048 px" in text
    frames = np.load(next((tmp_path / "c").iterdir()) / "frames.npy", mmap_mode="r")
    assert frames.shape == (1, 2048, 2048, 3)
    assert peak < PREPARE_RSS_MB, f"peak RSS {peak:.0f} MB"
