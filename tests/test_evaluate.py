"""Evaluation metrics (engine.evaluation): exact values on constructed cases, the optional networks
through tiny TorchScript / ONNX stand-ins, null metrics with reasons, clear errors, real clips."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

import engine.evaluation as ev
from engine.cli import main as cli_main
from engine.core.face import crop_box
from engine.core.landmark_sets import LIP_MP
from engine.evaluation.syncnet import _dct2_ortho
from tests.conftest import ROOT

PORTRAIT = ROOT / "assets" / "portrait.png"


# --------------------------------------------------------------------------------------------
# Stand-in networks (scripted, saved to tmp_path: no weights anywhere)
# --------------------------------------------------------------------------------------------


class MeanAbsLpips(torch.nn.Module):
    """LPIPS stand-in: mean |x - y| over channels and pixels, shaped (B, 1, 1, 1) like lpips."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).abs().mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1)


class ChannelMeanEmbedding(torch.nn.Module):
    """ArcFace stand-in: per-channel means plus a fixed offset, (B, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) + torch.tensor([0.5, 0.25, 1.0])


class PooledFeatures(torch.nn.Module):
    """Inception stand-in: 2x2 average pool of each channel, (B, 12, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).reshape(x.shape[0], 12, 1, 1)


def _standardise(v: torch.Tensor) -> torch.Tensor:
    return (v - v.mean(dim=1, keepdim=True)) / (v.std(dim=1, keepdim=True, unbiased=False) + 1e-6)


class BrightnessEnergySyncNet(torch.nn.Module):
    """SyncNet stand-in: the lip embedding is the standardised brightness of the 5 frames, the audio
    embedding the standardised log energy (MFCC c0) of the five 40 ms blocks of the window."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    @torch.jit.export
    def forward_lip(self, x: torch.Tensor) -> torch.Tensor:
        return _standardise(x.mean(dim=(1, 3, 4)))

    @torch.jit.export
    def forward_aud(self, x: torch.Tensor) -> torch.Tensor:
        return _standardise(x[:, 0, 0, :].reshape(x.shape[0], 5, 4).mean(dim=2))


class WrongShapeLpips(torch.nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x - y).mean(dim=(2, 3)).repeat(1, 3)  # (B, 9): not one value per pair


class FlatEmbedding(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))  # (B,): not (B, D)


def _script(module: torch.nn.Module, path):
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def standin_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalnets")
    return {
        "lpips": _script(MeanAbsLpips(), d / "lpips.pt"),
        "arcface": _script(ChannelMeanEmbedding(), d / "arcface.pt"),
        "fid": _script(PooledFeatures(), d / "inception.pt"),
        "syncnet": _script(BrightnessEnergySyncNet(), d / "syncnet.pt"),
    }


@pytest.fixture(scope="module")
def standin_networks(standin_files):
    return ev.load_networks(
        lpips=standin_files["lpips"],
        fid=standin_files["fid"],
        arcface=standin_files["arcface"],
        syncnet=standin_files["syncnet"],
    )


@pytest.fixture(scope="module")
def landmarker():
    from engine.core.face import FaceLandmarker

    with FaceLandmarker() as fm:
        yield fm


# --------------------------------------------------------------------------------------------
# PSNR and SSIM
# --------------------------------------------------------------------------------------------


def test_psnr_known_values():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (32, 40, 3), dtype=np.uint8)
    assert ev.psnr(a, a) == math.inf
    assert ev.psnr(a, a + 10) == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)  # MSE 100
    assert ev.psnr(a + 10, a) == ev.psnr(a, a + 10)
    f = a.astype(np.float32) / 255
    assert ev.psnr(f, f + np.float32(0.1)) == pytest.approx(20.0, abs=1e-4)  # range 1, MSE 0.01
    with pytest.raises(ValueError, match="data_range"):
        ev.psnr(a, f)
    with pytest.raises(ValueError, match="shape"):
        ev.psnr(a, a[:-1])


def _ssim_by_windows(x: np.ndarray, y: np.ndarray, r: float = 255.0) -> float:
    """Wang et al. 2004 written out window by window (the reference the fast version must match)."""
    g1 = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g1, g1)
    w /= w.sum()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    per_channel = []
    for c in range(x.shape[2]):
        a, b = x[..., c].astype(np.float64), y[..., c].astype(np.float64)
        values = []
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va = (w * (pa - ma) ** 2).sum()
                vb = (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_matches_a_window_by_window_reference_and_is_symmetric():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (17, 19, 3), dtype=np.uint8)
    noisy = np.clip(a.astype(np.int16) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    s = ev.ssim(a, noisy)
    assert s == pytest.approx(_ssim_by_windows(a, noisy), abs=1e-10)
    assert s == pytest.approx(ev.ssim(noisy, a), abs=1e-12)
    assert 0 < s < 1
    assert ev.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    grey = a[..., 0]
    assert ev.ssim(grey, noisy[..., 0]) == pytest.approx(
        _ssim_by_windows(a[..., :1], noisy[..., :1]), abs=1e-10
    )
    with pytest.raises(ValueError, match="11x11"):
        ev.ssim(a[:10], a[:10])


def test_ssim_of_constant_images_is_the_luminance_term():
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 140 + c1) / (100**2 + 140**2 + c1)  # no variance: contrast term C2/C2 = 1
    assert ev.ssim(a, b) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------------
# Fréchet distance
# --------------------------------------------------------------------------------------------


def test_frechet_distance_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(2)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert ev.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)
    assert ev.frechet_distance(mu1, np.diag(v1), mu1, np.diag(v1)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_full_and_singular_covariances():
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(50, 8)), rng.normal(size=(60, 8)) @ rng.normal(size=(8, 8)) + 0.5
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    value = ev.frechet_distance(mu1, s1, mu2, s2)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert value == pytest.approx(expected, rel=1e-8)
    # fewer samples than dimensions: singular covariances stay finite and non-negative
    g1, g2 = rng.normal(size=(5, 32)), rng.normal(size=(5, 32))
    singular = ev.frechet_distance(*ev.feature_statistics(g1), *ev.feature_statistics(g2))
    assert math.isfinite(singular) and singular > 0
    assert ev.frechet_distance(*ev.feature_statistics(g1), *ev.feature_statistics(g1)) == pytest.approx(
        0.0, abs=1e-6
    )


# --------------------------------------------------------------------------------------------
# LipLMD
# --------------------------------------------------------------------------------------------


def test_lip_lmd_zero_for_identical_and_exact_for_a_known_shift():
    rng = np.random.default_rng(4)
    ref = np.concatenate([rng.uniform(0.3, 0.7, (478, 2)), rng.normal(size=(478, 1))], axis=1)
    h, w = 400, 300
    assert ev.lip_lmd(ref, ref, (h, w)) == 0.0
    y1, y2, x1, x2 = crop_box(ref, h, w, 25)
    gen = ref.copy()
    gen[LIP_MP, 0] += 6 / w  # 6 pixels to the right in the frame
    gen[LIP_MP, 1] -= 8 / h  # 8 pixels up
    expected = math.hypot(6 * 128 / (x2 - x1), 8 * 128 / (y2 - y1))
    assert ev.lip_lmd(gen, ref, (h, w)) == pytest.approx(expected, rel=1e-9)
    other = ref.copy()
    other[~np.isin(np.arange(478), LIP_MP), :2] += 0.01  # moving only non-lip points changes nothing
    other[LIP_MP] = ref[LIP_MP]
    assert ev.lip_lmd(other, ref, (h, w)) == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------------------------
# SyncNet
# --------------------------------------------------------------------------------------------


def test_mfcc_follows_the_python_speech_features_definition():
    rng = np.random.default_rng(5)
    wav = rng.normal(0, 0.1, 16000 * 1 + 123)
    cc = ev.mfcc(wav)
    assert cc.shape == (13, 1 + math.ceil((wav.size - 400) / 160))
    sig = np.clip(np.round(wav * 32768), -32768, 32767)
    sig = np.append(sig[0], sig[1:] - 0.97 * sig[:-1])
    frame = sig[3 * 160 : 3 * 160 + 400]
    energy = np.sum(np.abs(np.fft.rfft(frame, 512)) ** 2) / 512
    assert cc[0, 3] == pytest.approx(np.log(energy), rel=1e-12)  # coefficient 0 = log frame energy
    scipy_fft = pytest.importorskip("scipy.fft")
    x = rng.normal(size=26)
    np.testing.assert_allclose(_dct2_ortho(26) @ x, scipy_fft.dct(x, type=2, norm="ortho"), atol=1e-12)


def test_mfcc_equals_python_speech_features_when_installed():
    psf = pytest.importorskip("python_speech_features")
    wav = np.random.default_rng(6).normal(0, 0.1, 8000)
    sig = np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16)
    np.testing.assert_allclose(ev.mfcc(wav), psf.mfcc(sig, 16000).T, rtol=1e-9, atol=1e-9)


def _planted_av(shift: int, n_frames: int = 40, seed: int = 7):
    """Crops whose brightness follows r[t] and audio whose 40 ms block u has log energy ~ r[u + shift]."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0, 1, n_frames + 40)
    crops = np.stack([np.full((224, 224, 3), int(40 + 170 * r[t + 20]), np.uint8) for t in range(n_frames)])
    amp = 0.01 * np.exp(2.5 * r[20 + shift : 20 + shift + n_frames])
    wav = rng.normal(0, 1, n_frames * 640) * np.repeat(amp, 640)
    return crops, wav


@pytest.mark.parametrize("shift", [0, 3, -2])
def test_syncnet_offset_search_finds_a_planted_offset(standin_networks, shift):
    crops, wav = _planted_av(shift)
    s = ev.syncnet_score(crops, wav, standin_networks.syncnet_lip, standin_networks.syncnet_audio)
    assert s["offset"] == shift
    assert s["windows"] == 40 - 5
    assert s["conf"] > 1.0 and s["dist"] < float(np.median(s["mdist"])) - 1.0
    assert s["mdist"].shape == (31,) and s["framewise_conf"].shape == (35,)


def test_syncnet_offsets_on_plain_embeddings():
    a = np.random.default_rng(8).normal(size=(28, 4))
    v = np.concatenate([np.zeros((2, 4)), a[:-2]])  # video window i shows audio window i - 2
    s = ev.syncnet_offsets(v, a, vshift=5)
    assert s["offset"] == 2
    assert s["dist"] == pytest.approx(2e-6, rel=1e-3)  # |0 + 1e-6| over 4 dimensions, as torch's eps
    assert s["conf"] == pytest.approx(float(np.median(s["mdist"])) - s["dist"])


def test_syncnet_crop_follows_the_track_crop_geometry():
    frame = np.zeros((300, 400, 3), np.uint8)
    frame[100:200, 150:250] = 255  # the "face" box (150, 100, 250, 200): bs = 50
    crop = ev.syncnet_crop(frame, (150, 100, 250, 200))
    assert crop.shape == (224, 224, 3)
    # rows cy - bs .. cy + 1.8 bs = 100 .. 240 and columns cx - 1.4 bs .. cx + 1.4 bs = 130 .. 270:
    # the white box covers rows 0 .. 100/140 and columns 20/140 .. 120/140 of the crop
    assert crop[int(224 * 0.3), 112].tolist() == [255, 255, 255]
    assert crop[int(224 * 0.9), 112].tolist() == [0, 0, 0]
    assert crop[112, 5].tolist() == [0, 0, 0]


# --------------------------------------------------------------------------------------------
# LPIPS, CSIM, FID stand-ins (TorchScript and ONNX)
# --------------------------------------------------------------------------------------------


def _faces(seed: int, n: int = 4, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_lpips_and_csim_standins_give_the_expected_values(standin_networks):
    a, b = _faces(9), _faces(10)
    d = ev.lpips_distances(standin_networks.lpips, a, b)
    expected = np.abs(a.astype(np.float64) / 127.5 - b.astype(np.float64) / 127.5).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(d, expected, rtol=1e-5)
    white, black = np.full((1, 8, 8, 3), 255, np.uint8), np.zeros((1, 8, 8, 3), np.uint8)
    assert ev.lpips_distances(standin_networks.lpips, white, black)[0] == pytest.approx(2.0)

    e = ev.arcface_embeddings(standin_networks.arcface, a)
    rgb = a[..., ::-1].astype(np.float64) / 127.5 - 1
    np.testing.assert_allclose(e, rgb.mean(axis=(1, 2)) + [0.5, 0.25, 1.0], rtol=1e-5, atol=1e-6)
    ea, eb = e, ev.arcface_embeddings(standin_networks.arcface, b)
    cos = np.sum(ea * eb, 1) / np.linalg.norm(ea, axis=1) / np.linalg.norm(eb, axis=1)
    np.testing.assert_allclose(ev.cosine_similarity(ea, eb), cos, rtol=1e-12)


def test_fid_with_a_feature_standin(standin_networks):
    a, b = _faces(11, n=6), _faces(12, n=6) // 2
    fa, fb = ev.fid_features(standin_networks.fid, a), ev.fid_features(standin_networks.fid, b)
    assert fa.shape == (6, 12)
    sa, sb = ev.feature_statistics(fa), ev.feature_statistics(fb)
    assert ev.frechet_distance(*sa, *sa) == pytest.approx(0, abs=1e-6)
    assert ev.frechet_distance(*sa, *sb) > 0.01


def test_an_onnx_lpips_standin_gives_the_torchscript_values(tmp_path, standin_networks):
    x = torch.zeros(2, 3, 16, 16)
    dynamic, fixed = tmp_path / "lpips.onnx", tmp_path / "lpips_b1.onnx"
    torch.onnx.export(
        MeanAbsLpips(),
        (x, x),
        str(dynamic),
        dynamo=False,
        opset_version=17,
        input_names=["x", "y"],
        output_names=["d"],
        dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}, "d": {0: "b"}},
    )
    torch.onnx.export(
        MeanAbsLpips(), (x[:1], x[:1]), str(fixed), dynamo=False, opset_version=17, input_names=["x", "y"]
    )
    a, b = _faces(13, n=5, size=16), _faces(14, n=5, size=16)
    want = ev.lpips_distances(standin_networks.lpips, a, b)
    for path in (dynamic, fixed):
        net = ev.load_networks(lpips=path).lpips
        assert net.backend == "onnx"
        np.testing.assert_allclose(ev.lpips_distances(net, a, b), want, rtol=1e-5)
    assert ev.load_networks(lpips=fixed).lpips.fixed_batch == 1  # fed one pair at a time


def test_similarity_transform_recovers_a_known_similarity():
    rng = np.random.default_rng(15)
    src = rng.uniform(0, 100, (5, 2))
    ang, scale, t = 0.3, 1.7, np.array([4.0, -9.0])
    rot = scale * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    m = ev.similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m, np.hstack([rot, t[:, None]]), atol=1e-9)


# --------------------------------------------------------------------------------------------
# Absent networks, broken files
# --------------------------------------------------------------------------------------------


def test_absent_networks_are_null_with_reasons(landmarker):
    rng = np.random.default_rng(16)
    frames = [rng.integers(0, 256, (64, 80, 3), dtype=np.uint8) for _ in range(3)]
    out = ev.evaluate_frames(frames, [f.copy() for f in frames], landmarker=landmarker)
    m, why = out["metrics"], out["reasons"]
    assert m["psnr_full"]["value"] == math.inf and m["ssim_full"]["n"] == 3
    for k in ("psnr_face", "ssim_face", "lip_lmd"):
        assert m[k] is None and "no face" in why[k]
    assert out["frames"]["no_face_reference"] == 3
    for k, option in (("lpips", "--lpips-model"), ("fid", "--fid-model"), ("csim", "--arcface-model")):
        assert m[k] is None and option in why[k] and "docs/evaluation.md" in why[k]
    assert m["syncnet_conf"] is None and "--syncnet-model" in why["syncnet_conf"]
    text = ev.format_table(out)
    assert "LPIPS: no --lpips-model given; see docs/evaluation.md" in text
    json.loads(ev.to_json(out))  # strict JSON: inf written as "inf"
    assert json.loads(ev.to_json(out))["metrics"]["psnr_full"]["value"] == "inf"
    with pytest.raises(ev.EvaluationError, match="reference sequence is longer"):
        ev.evaluate_frames(frames[:2], frames, landmarker=landmarker)
    empty = ev.evaluate_frames([], [], landmarker=landmarker)
    assert empty["metrics"]["psnr_full"] is None and "no frame pairs" in empty["reasons"]["psnr_full"]


def test_broken_and_wrong_network_files_are_clear_errors(tmp_path, standin_files):
    junk_pt, junk_onnx = tmp_path / "junk.pt", tmp_path / "junk.onnx"
    junk_pt.write_bytes(b"not a model")
    junk_onnx.write_bytes(b"not a model either")
    with pytest.raises(ev.EvaluationError, match="junk.pt: cannot be loaded as a TorchScript LPIPS"):
        ev.load_networks(lpips=junk_pt)
    with pytest.raises(ev.EvaluationError, match="junk.onnx: cannot be loaded as an ONNX"):
        ev.load_networks(fid=junk_onnx)
    with pytest.raises(ev.EvaluationError, match="model file not found: .*missing.pt"):
        ev.load_networks(arcface=tmp_path / "missing.pt")
    with pytest.raises(ev.EvaluationError, match="no forward_lip"):
        ev.load_networks(syncnet=standin_files["lpips"])
    with pytest.raises(ev.EvaluationError, match="both"):
        ev.load_networks(syncnet_lip=standin_files["lpips"])

    wrong = ev.load_networks(lpips=_script(WrongShapeLpips(), tmp_path / "wrong.pt")).lpips
    with pytest.raises(ev.EvaluationError, match=r"wrong.pt: the LPIPS network returned shape \(4, 9\)"):
        ev.lpips_distances(wrong, _faces(1), _faces(2))
    flat = ev.load_networks(arcface=_script(FlatEmbedding(), tmp_path / "flat.pt")).arcface
    with pytest.raises(ev.EvaluationError, match=r"flat.pt: the ArcFace network returned shape \(4,\)"):
        ev.arcface_embeddings(flat, _faces(1))
    lpips_as_arcface = ev.load_networks(arcface=standin_files["lpips"]).arcface  # needs two inputs
    with pytest.raises(ev.EvaluationError, match="lpips.pt: the ArcFace .* network failed on input"):
        ev.arcface_embeddings(lpips_as_arcface, _faces(1))


# --------------------------------------------------------------------------------------------
# Whole evaluations
# --------------------------------------------------------------------------------------------


def _mouth_warp(frame: np.ndarray, box, stretch: float = 1.25) -> np.ndarray:
    """Stretch the lower half of the face box vertically (a crude 'open mouth')."""
    y1, y2, x1, x2 = box
    out = frame.copy()
    mid = (y1 + y2) // 2
    part = frame[mid:y2, x1:x2]
    big = cv2.resize(part, (x2 - x1, int((y2 - mid) * stretch)))
    out[mid:y2, x1:x2] = big[: y2 - mid]
    return out


def test_all_metrics_on_the_bundled_portrait_with_standin_networks(standin_networks, landmarker):
    portrait = cv2.imread(str(PORTRAIT))
    box = landmarker.detect(portrait).box
    reference = [portrait] * 8
    generated = [_mouth_warp(portrait, box, 1.05 + 0.05 * i) for i in range(8)]
    audio = np.random.default_rng(17).normal(0, 0.05, 8 * 640)
    out = ev.evaluate_frames(
        generated, reference, landmarker=landmarker, networks=standin_networks, audio=audio, per_frame=True
    )
    m = out["metrics"]
    assert out["reasons"] == {}
    for k in ("psnr_face", "ssim_face", "psnr_full", "ssim_full", "lip_lmd", "lpips", "csim", "fid"):
        assert m[k] is not None and math.isfinite(m[k]["value"]), k
    lmd = out["per_frame"]["lip_lmd"]["values"]
    assert m["lip_lmd"]["n"] == 8 and lmd[-1] > lmd[0] > 0  # the more stretched, the farther
    assert m["psnr_face"]["value"] < m["psnr_full"]["value"]
    assert m["csim"]["value"] > 0.9 and m["lpips"]["value"] >= 0
    assert m["syncnet_dist"]["n"] == 3 and math.isfinite(m["syncnet_conf"]["value"])
    assert isinstance(m["syncnet_offset"]["value"], int)
    # a one-shot iterator works too (the frames SyncNet needs are kept on the first pass)
    again = ev.evaluate_frames(
        iter(generated), iter(reference), landmarker=landmarker, networks=standin_networks, audio=audio
    )
    assert again["metrics"]["syncnet_dist"]["value"] == pytest.approx(m["syncnet_dist"]["value"])


def test_lip_lmd_on_a_real_clip(media_dir, landmarker):
    from engine.core.video import read_frames

    frames, _ = read_frames(media_dir / "talk_b_25fps.mp4", max_frames=6)
    same = ev.evaluate_frames(frames, frames, landmarker=landmarker)
    assert same["metrics"]["lip_lmd"]["value"] == 0.0 and same["metrics"]["ssim_face"]["value"] == 1.0
    warped = [_mouth_warp(f, landmarker.detect(f).box) for f in frames]
    out = ev.evaluate_frames(warped, frames, landmarker=landmarker)
    assert out["metrics"]["lip_lmd"]["n"] == 6 and out["metrics"]["lip_lmd"]["value"] > 1.0
    assert out["metrics"]["ssim_face"]["value"] < 1.0


def test_cli_compares_two_videos_and_writes_json(media_dir, tmp_path, capsys):
    talk = str(media_dir / "talk_b_25fps.mp4")
    out = tmp_path / "r.json"
    assert (
        cli_main(
            [
                "train",
                "eval",
                "--generated",
                talk,
                "--reference",
                talk,
                "--max-frames",
                "6",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "PSNR face crop" in printed and "LPIPS: no --lpips-model given" in printed
    result = json.loads(out.read_text())
    assert result["frames"] == {
        "pairs": 6,
        "evaluated": 4,
        "skipped_start": 2,
        "no_face_reference": 0,
        "no_face_generated": 0,
    }
    assert result["metrics"]["lip_lmd"]["value"] == 0.0 and result["metrics"]["psnr_full"]["value"] == "inf"
    assert cli_main(["train", "eval", "--generated", talk]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mouthpiece: error: ")
    assert "--generated and --reference go together" in err
    assert cli_main(["train", "eval", "--generated", talk, "--reference", talk, "--video", talk]) == 2


def test_evaluate_checkpoints_with_standin_weights(media_dir, standin_paths, tmp_path, landmarker):
    saved = tmp_path / "dub.mp4"
    out = ev.evaluate_checkpoints(
        media_dir / "talk_b_25fps.mp4",
        standin_paths["landmark_generator"],
        standin_paths["renderer"],
        held_out_frames=(25, 38),
        n_refs=1,
        cache_dir=tmp_path / "cache",
        save_video=saved,
        landmarker=landmarker,
    )
    held = out["held_out"]
    assert held["frames"] == [25, 38] and held["n_refs"] == 1 and held["template_frames"] == 13
    assert out["frames"]["pairs"] == held["output_frames"] and out["frames"]["skipped_start"] == 2
    assert out["frames"]["evaluated"] == held["output_frames"] - 2 > 4
    for k in ("psnr_face", "ssim_face", "psnr_full", "ssim_full", "lip_lmd"):
        m = out["metrics"][k]
        assert m is not None and math.isfinite(m["value"]) and m["n"] >= 1, k
    # only the pasted face changes, so the full frame is closer to the original than the face crop
    assert out["metrics"]["psnr_full"]["value"] > out["metrics"]["psnr_face"]["value"]
    assert saved.is_file() and out["checkpoints"]["random_weights"] is False
