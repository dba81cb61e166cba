"""Training-data preprocessing (engine/training/preprocess*.py, dataset.py) against the format of
docs/training_data.md.

Synthetic videos are made from the bundled public-domain portrait (moved and scaled a little per
frame, a tone as audio), so everything but the last tests runs on a fresh clone; the tests on the
real clips in ../shared/media skip without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.core.audio import load_audio, melspectrogram, num_video_frames
from engine.core.face import FaceLandmarker, FaceMeshConfig, crop_box
from engine.core.landmark_sets import ALL_MP, FULL_MP
from engine.core.sketch import draw_sketch
from engine.core.video import iter_frames, read_image, write_mp4
from engine.training import preprocess as pp

ROOT = Path(__file__).resolve().parents[1]
PORTRAIT = ROOT / "assets" / "portrait.png"
SR = 16000
SIZE = 192  # synthetic frame size


def _face_frames(n: int, seed: int) -> list[np.ndarray]:
    """n frames of the portrait's face region, each moved (+-4 px) and scaled (+-3 %) a little."""
    img = read_image(PORTRAIT)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cy, cx = 131 + rng.uniform(-4, 4), 225 + rng.uniform(-4, 4)
        m = cv2.getRotationMatrix2D((cx, cy), 0, 1 + rng.uniform(-0.03, 0.03))
        m[:, 2] += (SIZE / 2 - cx, SIZE / 2 - cy)
        out.append(cv2.warpAffine(img, m, (SIZE, SIZE), borderMode=cv2.BORDER_REPLICATE))
    return out


def _tone(seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _write(path: Path, frames: list[np.ndarray], fps: float = 25, audio: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"audio": _tone(len(frames) / fps), "audio_rate": SR} if audio else {}
    write_mp4(path, frames, fps=fps, **kw)
    return path


def _quiet(workers: int = 1, **kw) -> pp.PreprocessConfig:
    return pp.PreprocessConfig(workers=workers, show_progress=False, **kw)


def _load(out: Path, cid: str) -> dict:
    return pp.load_clip(out / "clips" / cid, mmap_mode=None)


def _assert_same_clip(a: dict, b: dict) -> None:
    for k in ("faces", "sketches", "landmarks", "hw", "valid", "openness", "mel"):
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    drop = ("seconds", "seconds_frames")
    assert {k: v for k, v in a["meta"].items() if k not in drop} == {
        k: v for k, v in b["meta"].items() if k not in drop
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An LRS2-like input folder (main/<speaker>/<clip>.mp4) with good and bad videos."""
    root = tmp_path_factory.mktemp("input")
    main = root / "main"
    face12 = _face_frames(12, seed=0)
    blank = np.full((SIZE, SIZE, 3), 127, np.uint8)
    v = {
        "good": _write(main / "spk1" / "00001.mp4", face12),
        "good2": _write(main / "spk2" / "00001.mp4", _face_frames(10, seed=1)),
        "conv30": _write(main / "spk2" / "00002.MP4", _face_frames(15, seed=2), fps=30),
        "no_audio": _write(main / "spk3" / "silent.mp4", face12[:8], audio=False),
        "no_face": _write(main / "spk3" / "blank.mp4", [blank] * 8),
        "short": _write(main / "spk3" / "short.mp4", face12[:3]),
        "few_faces": _write(main / "spk4" / "few.mp4", face12[:3] + [blank] * 9),
        # half the frames have a face (enough), but never 5 in a row
        "no_window": _write(
            main / "spk4" / "gaps.mp4", [f if i % 4 < 2 else blank for i, f in enumerate(face12)]
        ),
    }
    corrupt = main / "spk3" / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    v["corrupt"] = corrupt
    (main / "spk1" / "notes.txt").write_text("not a video")
    (main / ".hidden").mkdir()
    _write(main / ".hidden" / "x.mp4", face12[:5])
    return root, v


@pytest.fixture(scope="module")
def first_run(data, tmp_path_factory):
    root, _ = data
    out = tmp_path_factory.mktemp("out")
    events = []
    report = pp.preprocess_folder(root / "main", out, _quiet(), progress=lambda *a: events.append(a))
    return out, report, events


@pytest.fixture(scope="module")
def landmarker():
    with FaceLandmarker(FaceMeshConfig(margin_px=5)) as fm:
        yield fm


# --------------------------------------------------------------------------------------------
# listing
# --------------------------------------------------------------------------------------------


def test_list_videos_recursive_and_filelist(data, tmp_path):
    root, v = data
    rel = [p.relative_to(root / "main").as_posix() for p in pp.list_videos(root / "main")]
    assert rel == [
        "spk1/00001.mp4",
        "spk2/00001.mp4",
        "spk2/00002.MP4",
        "spk3/blank.mp4",
        "spk3/corrupt.mp4",
        "spk3/short.mp4",
        "spk3/silent.mp4",
        "spk4/few.mp4",
        "spk4/gaps.mp4",
    ]
    assert pp.list_videos(root / "main", extensions=[".avi"]) == []
    assert pp.clip_id("spk1/00001.mp4") == "spk1__00001"
    assert pp.clip_id("a/b/c.d.mkv") == "a__b__c.d"

    # LRS2 file list: relative to the root or to root/main, extension optional, flags ignored
    fl = tmp_path / "train.txt"
    fl.write_text("spk1/00001\n# comment\n\nspk2/00002 NF\nspk9/00001\nspk1/00001\nmain/spk2/00001.mp4\n")
    found, missing = pp.read_filelist(root, fl)
    assert found == [v["good"], v["conv30"], v["good2"]]
    assert missing == ["spk9/00001"]
    assert pp.list_videos(root, filelist=fl) == found
    with pytest.raises(pp.PreprocessError, match="input folder not found"):
        pp.list_videos(root / "nope")


# --------------------------------------------------------------------------------------------
# one run: contents per the contract, bad files reported
# --------------------------------------------------------------------------------------------


def test_report_lists_processed_and_failures_with_reasons(first_run):
    out, report, events = first_run
    assert report["processed"] == ["spk1__00001", "spk2__00001", "spk2__00002"]
    assert report["skipped_existing"] == []
    reasons = {f["source"]: f["reason"] for f in report["failed"]}
    assert set(reasons) == {
        "spk3/blank.mp4",
        "spk3/corrupt.mp4",
        "spk3/short.mp4",
        "spk3/silent.mp4",
        "spk4/few.mp4",
        "spk4/gaps.mp4",
    }
    assert "no face found in any of its 8 frames" in reasons["spk3/blank.mp4"]
    assert "unreadable video" in reasons["spk3/corrupt.mp4"]
    assert "too short: 3 frame(s)" in reasons["spk3/short.mp4"]
    assert reasons["spk3/silent.mp4"] == "no audio stream"
    assert "too few frames with a face: 3 of 12" in reasons["spk4/few.mp4"]
    assert "no window of 5 consecutive frames" in reasons["spk4/gaps.mp4"]
    assert report["frames"] == 12 + 10 + 13 and report["listed"] == 9 and not report["interrupted"]
    assert json.loads((out / "report.json").read_text()) == report
    # progress: one call per video, counting up to the total
    assert [e[:2] for e in events] == [(i, 9) for i in range(1, 10)]
    assert {e[2]["status"] for e in events} == {"processed", "failed"}
    # only complete clip folders, no leftovers
    assert sorted(p.name for p in (out / "clips").iterdir()) == report["processed"]


def test_manifest_matches_clip_folders(first_run):
    out, report, _ = first_run
    m = pp.read_manifest(out)
    assert (m["version"], m["fps"], m["margin_px"], m["image_size"]) == (1, 25.0, 5, 128)
    assert [c["id"] for c in m["clips"]] == report["processed"]
    for c in m["clips"]:
        meta = json.loads((out / "clips" / c["id"] / "meta.json").read_text())
        assert c == {k: meta[k] for k in ("id", "source", "frames", "valid_frames", "mel_frames")}
    (out / "manifest.json").unlink()
    assert pp.rebuild_manifest(out) == m
    assert pp.read_manifest(out) == m


def test_clip_arrays_follow_the_contract(first_run, data):
    out, _, _ = first_run
    c = _load(out, "spk1__00001")
    L = 12
    shapes = {
        "faces": ((L, 128, 128, 3), np.uint8),
        "sketches": ((L, 128, 128), np.uint8),
        "landmarks": ((L, 2, 131), np.float32),
        "hw": ((L, 2), np.int32),
        "valid": ((L,), np.bool_),
        "openness": ((L,), np.float32),
    }
    for k, (shape, dtype) in shapes.items():
        assert c[k].shape == shape and c[k].dtype == dtype, k
    assert c["mel"].dtype == np.float32 and c["mel"].shape == (80, c["meta"]["mel_frames"])
    meta = c["meta"]
    assert meta["frames"] == L and meta["valid_frames"] == L and c["valid"].all()
    assert (meta["width"], meta["height"], meta["fps"], meta["source_fps"], meta["margin_px"]) == (
        SIZE,
        SIZE,
        25.0,
        25.0,
        5,
    )
    assert meta["source"] == "spk1/00001.mp4"
    lm = c["landmarks"]
    assert np.isfinite(lm).all() and lm.min() > 0 and lm.max() < 1
    assert (c["hw"] > 40).all() and (c["openness"] > 0).all()
    assert 0 < c["sketches"].max() <= 224 and c["faces"].std() > 10

    # the 30 fps source: 15 frames = 0.5 s -> floor(0.5 * 25 + 1/2) = 13 frames at 25 fps
    c30 = _load(out, "spk2__00002")
    assert c30["meta"]["source_fps"] == 30.0
    assert c30["meta"]["frames"] == 13 == len(list(iter_frames(data[1]["conv30"], fps=25)))


def test_crop_landmarks_and_sketch_recomputed_independently(first_run, data, landmarker):
    """Frame by frame: FaceMesh again, the 5 px training box, the crop, float-box landmarks."""
    out, _, _ = first_run
    c = _load(out, "spk1__00001")
    for i, frame in enumerate(iter_frames(data[1]["good"], fps=25)):
        h, w = frame.shape[:2]
        pts = landmarker.detect(frame, i).points.astype(np.float64)
        y1, y2, x1, x2 = crop_box(pts, h, w, margin_px=5)
        assert tuple(c["hw"][i]) == (y2 - y1, x2 - x1)
        np.testing.assert_array_equal(c["faces"][i], cv2.resize(frame[y1:y2, x1:x2], (128, 128)))
        # float box: the 131 points' extent widened by 5 px (no clamping needed here)
        lo, hi = pts[ALL_MP, :2].min(0), pts[ALL_MP, :2].max(0)
        x_min, x_max, y_min, y_max = lo[0] - 5 / w, hi[0] + 5 / w, lo[1] - 5 / h, hi[1] + 5 / h
        want = np.stack(
            [
                (pts[FULL_MP, 0] - x_min) / (x_max - x_min),
                (pts[FULL_MP, 1] - y_min) / (y_max - y_min),
            ]
        )
        np.testing.assert_allclose(c["landmarks"][i], want, atol=1e-6)
        # so the margin is 5 px on every side, measured in the crop
        lm = c["landmarks"][i].astype(np.float64)
        fw, fh = (x_max - x_min) * w, (y_max - y_min) * h
        for gap in (lm[0].min() * fw, (1 - lm[0].max()) * fw, lm[1].min() * fh, (1 - lm[1].max()) * fh):
            assert gap == pytest.approx(5.0, abs=1e-3)
        assert c["openness"][i] == pytest.approx(np.hypot(*(pts[0, :2] - pts[17, :2])), abs=1e-6)
        # the sketch is draw_sketch of the stored landmarks and crop size, in grey levels
        sk = draw_sketch(c["landmarks"][i], tuple(c["hw"][i]), raw=True)[..., 0]
        assert np.abs(c["sketches"][i].astype(np.float64) - sk).max() <= 1.0


def test_mel_is_the_melspectrogram_of_the_audio(first_run, data):
    out, _, _ = first_run
    c = _load(out, "spk1__00001")
    wav = load_audio(data[1]["good"])
    np.testing.assert_array_equal(c["mel"], melspectrogram(wav))
    assert c["meta"]["audio_samples"] == wav.size
    # 12 frames = 0.48 s; AAC pads up to 1023 samples: chunks for at least the first 8 frames
    assert num_video_frames(c["meta"]["mel_frames"]) >= 8


def test_preprocess_video_errors_and_max_frames(data, tmp_path, landmarker):
    _, v = data
    with pytest.raises(pp.PreprocessError, match="no audio stream"):
        pp.preprocess_video(v["no_audio"], tmp_path / "x", _quiet(), landmarker=landmarker)
    with pytest.raises(pp.PreprocessError, match="unreadable video"):
        pp.preprocess_video(v["corrupt"], tmp_path / "x", _quiet(), landmarker=landmarker)
    with pytest.raises(FileNotFoundError):
        pp.preprocess_video(tmp_path / "missing.mp4", tmp_path / "x", _quiet(), landmarker=landmarker)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.tmp").exists()
    with pytest.raises(ValueError, match="max_frames"):
        pp.PreprocessConfig(max_frames=3)

    meta = pp.preprocess_video(v["good"], tmp_path / "cut", _quiet(max_frames=6), landmarker=landmarker)
    c = pp.load_clip(tmp_path / "cut", mmap_mode=None)
    assert meta["frames"] == 6 == c["faces"].shape[0] and meta["max_frames"] == 6
    # the audio is cut after the last frame's mel chunk: frame 5's chunk is mel frames 16..31,
    # so 31 * 200 samples (mel frames = 1 + samples // 200 = 32); every frame has its chunk
    assert meta["audio_samples"] == 6200 and c["mel"].shape == (80, 32) == (80, meta["mel_frames"])
    assert num_video_frames(meta["mel_frames"]) == 6
    np.testing.assert_array_equal(c["mel"], melspectrogram(load_audio(v["good"])[:6200]))


# --------------------------------------------------------------------------------------------
# resumability, interruption, parallel
# --------------------------------------------------------------------------------------------


def test_rerun_skips_complete_clips_and_redoes_a_deleted_one(first_run, data, tmp_path):
    root, _ = data
    out = tmp_path / "out"
    shutil.copytree(first_run[0], out)
    before = _load(out, "spk2__00001")
    (out / "clips" / "stale.tmp").mkdir()  # left by an interrupted run

    r2 = pp.preprocess_folder(root / "main", out, _quiet())
    assert r2["processed"] == [] and r2["frames"] == 0
    assert r2["skipped_existing"] == ["spk1__00001", "spk2__00001", "spk2__00002"]
    assert len(r2["failed"]) == 6  # bad files are tried again and reported again
    assert not (out / "clips" / "stale.tmp").exists()

    shutil.rmtree(out / "clips" / "spk2__00001")
    r3 = pp.preprocess_folder(root / "main", out, _quiet())
    assert r3["processed"] == ["spk2__00001"]
    assert r3["skipped_existing"] == ["spk1__00001", "spk2__00002"]
    _assert_same_clip(_load(out, "spk2__00001"), before)
    assert [c["id"] for c in pp.read_manifest(out)["clips"]] == r2["skipped_existing"]

    # other settings are not "complete": a margin change redoes the clip
    r4 = pp.preprocess_folder(root / "main", out, _quiet(margin_px=6, limit=1))
    assert r4["processed"] == ["spk1__00001"] and r4["listed"] == 1 and r4["failed"] == []
    m = pp.read_manifest(out)
    assert m["margin_px"] == 6 and [c["id"] for c in m["clips"]] == ["spk1__00001"]
    assert m["excluded"] == ["spk2__00001", "spk2__00002"]


def test_interrupt_leaves_no_half_written_clip(data, tmp_path, monkeypatch):
    root, v = data
    inp = tmp_path / "in"
    (inp / "s").mkdir(parents=True)
    shutil.copy(v["good"], inp / "s" / "a.mp4")
    out = tmp_path / "out"
    real_save = np.save
    calls = []

    def save_then_interrupt(path, arr, *a, **kw):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_save(path, arr, *a, **kw)

    monkeypatch.setattr(pp.np, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pp.preprocess_folder(inp, out, _quiet())
    assert list((out / "clips").iterdir()) == []  # neither s__a nor s__a.tmp
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] and report["processed"] == []
    assert pp.read_manifest(out)["clips"] == []

    monkeypatch.setattr(pp.np, "save", real_save)
    assert pp.preprocess_folder(inp, out, _quiet())["processed"] == ["s__a"]


def test_two_workers_give_the_same_clips(first_run, data, tmp_path):
    root, _ = data
    fl = tmp_path / "list.txt"
    fl.write_text("spk1/00001\nspk2/00001\nspk3/silent\nspk9/gone\n")
    out = tmp_path / "out2"
    r = pp.preprocess_folder(root / "main", out, _quiet(workers=2, filelist=str(fl)))
    assert r["processed"] == ["spk1__00001", "spk2__00001"]
    reasons = {f["source"]: f["reason"] for f in r["failed"]}
    assert set(reasons) == {"spk9/gone", "spk3/silent.mp4"}
    assert reasons["spk9/gone"].startswith(f"listed in {fl} but no video spk9/gone")
    assert reasons["spk3/silent.mp4"] == "no audio stream"
    for cid in r["processed"]:
        _assert_same_clip(_load(out, cid), _load(first_run[0], cid))


def test_ctrl_c_with_a_pool(data, tmp_path):
    """A real SIGINT to the command's process group while workers are busy: exit status 130, the
    workers stopped, no .tmp folder left, every clip folder complete, report and manifest written."""
    _, v = data
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(40):
        (inp / f"v{i:02d}.mp4").symlink_to(v["good"])
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "train",
        "preprocess",
        str(inp),
        str(out),
        "--workers",
        "2",
        "--quiet",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C reaches it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # not ignored (set by a shell's &)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        names = [p.name for p in (out / "clips").iterdir()] if (out / "clips").is_dir() else []
        if any(not n.endswith(".tmp") for n in names):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    names = sorted(p.name for p in (out / "clips").iterdir())
    assert names and not any(n.endswith(".tmp") for n in names) and len(names) < 40
    assert all(pp.is_complete(out / "clips" / n) for n in names)
    report = json.loads((out / "report.json").read_text())
    # (a clip renamed into place just before the stop may miss from "processed", never the reverse)
    assert report["interrupted"] and set(report["processed"]) <= set(names)
    assert [c["id"] for c in pp.read_manifest(out)["clips"]] == names


def _fake_init(margin_px: int) -> None:
    pass


def _failing_init(margin_px: int) -> None:
    raise RuntimeError("this worker cannot start")


def _fake_run(entry: pp.VideoEntry, out_root: str, config: pp.PreprocessConfig) -> dict:
    if "crash" in entry.source:
        os._exit(3)  # a decoder segfault, as far as the pool can tell
    return {"id": entry.id, "source": entry.source, "status": "processed", "frames": 1}


def test_pool_survives_a_worker_crash(monkeypatch, tmp_path):
    """A worker that dies costs only its own video; the others (also those lost in the same
    crash) are redone. Uses fork and stand-in worker functions: no FaceMesh, no spawn cost."""
    monkeypatch.setattr(pp, "_worker_init", _fake_init)
    monkeypatch.setattr(pp, "_worker_run", _fake_run)
    entries = [pp.VideoEntry(tmp_path / f"{n}.mp4", f"s/{n}.mp4") for n in ("a", "b", "crash", "c", "d", "e")]
    results = []
    cfg = _quiet(workers=2, start_method="fork")
    pp._run_pool(entries, tmp_path, cfg, results.append, set())
    status = {r["id"]: r["status"] for r in results}
    assert len(results) == 6 and status.pop("s__crash") == "failed" and set(status.values()) == {"processed"}
    assert next(r["reason"] for r in results if r["id"] == "s__crash").startswith("a worker process died")

    # workers that cannot start at all: the run stops with a clear error instead of failing every file
    monkeypatch.setattr(pp, "_worker_init", _failing_init)
    with pytest.raises(pp.PreprocessError, match="worker processes keep dying"):
        pp._run_pool(entries * 3, tmp_path, cfg, results.append, set())


def test_command_line(data, tmp_path, capsys):
    root, _ = data
    fl = tmp_path / "one.txt"
    fl.write_text("spk2/00001\n")
    out = tmp_path / "cli"
    argv = [str(root / "main"), str(out), "--workers", "1", "--filelist", str(fl), "--quiet"]
    assert cli_main(["train", "preprocess", *argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["processed"] == ["spk2__00001"] and report["config"]["filelist"] == str(fl)
    assert cli_main(["train", "preprocess", *argv]) == 0
    assert "0 processed, 1 already done, 0 failed" in capsys.readouterr().out
    assert cli_main(["train", "preprocess", *argv, "--overwrite"]) == 0
    assert "1 processed, 0 already done, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "clips").iterdir()) == ["spk2__00001"]  # the old one replaced
    fl.write_text("spk3/silent\n")
    assert cli_main(["train", "preprocess", *argv]) == 1  # nothing usable
    assert "failed: spk3/silent.mp4: no audio stream" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert cli_main(["train", "preprocess", str(tmp_path / "empty"), str(tmp_path / "o2"), "--quiet"]) == 1
    assert "no videos found" in capsys.readouterr().err
    assert cli_main(["train", "preprocess", str(tmp_path / "nope"), str(out)]) == 2
    assert capsys.readouterr().err.startswith("mouthpiece: error: input folder not found")


# --------------------------------------------------------------------------------------------
# real clips (../shared/media)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_run(media_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("media_in")
    (root / "spk").mkdir()
    for name in ("talk_b_25fps.mp4", "talk_c_30fps.mp4"):
        (root / "spk" / name).symlink_to(media_dir / name)
    out = tmp_path_factory.mktemp("media_out")
    # talk_b cut to 50 frames; talk_c whole (the 30 -> 25 fps conversion over the full clip)
    rb = pp.preprocess_folder(root, out, _quiet(max_frames=50, limit=1))
    rc = pp.preprocess_folder(root, out, _quiet())
    return root, out, rb, rc


def test_real_clips(media_run, landmarker):
    root, out, rb, rc = media_run
    assert rb["processed"] == ["spk__talk_b_25fps"]
    # the second run has other settings (no max_frames): it redoes talk_b and adds talk_c
    assert rc["processed"] == ["spk__talk_b_25fps", "spk__talk_c_30fps"] and rc["failed"] == []

    c = _load(out, "spk__talk_c_30fps")
    L = c["meta"]["frames"]
    assert abs(L - 165) <= 1 and L == len(list(iter_frames(root / "spk" / "talk_c_30fps.mp4", fps=25)))
    assert c["meta"]["source_fps"] == pytest.approx(30.0) and (c["meta"]["width"], c["meta"]["height"]) == (
        700,
        700,
    )
    assert c["valid"].mean() > 0.95
    lm = c["landmarks"][c["valid"]]
    assert ((lm >= 0) & (lm <= 1)).mean() > 0.99
    wav = load_audio(root / "spk" / "talk_c_30fps.mp4")
    np.testing.assert_array_equal(c["mel"], melspectrogram(wav))
    assert num_video_frames(c["meta"]["mel_frames"]) >= L - 5
    for i in np.flatnonzero(c["valid"])[::20]:
        sk = draw_sketch(c["landmarks"][i], tuple(c["hw"][i]), raw=True)[..., 0]
        assert np.abs(c["sketches"][i].astype(np.float64) - sk).max() <= 1.0
    # a crop against its frame: FaceMesh again, 5 px training box
    frame = next(iter_frames(root / "spk" / "talk_c_30fps.mp4", fps=25))
    y1, y2, x1, x2 = crop_box(landmarker.detect(frame).points, 700, 700, margin_px=5)
    np.testing.assert_array_equal(c["faces"][0], cv2.resize(frame[y1:y2, x1:x2], (128, 128)))
    # lips move in real speech
    assert np.ptp(c["openness"][c["valid"]]) > 0.01

    b = _load(out, "spk__talk_b_25fps")
    assert b["meta"]["frames"] == 125 and b["valid"].all() and b["meta"]["source_fps"] == 25.0
