"""Checkpoint loading (strict, clear errors), conversion and the ``mouthpiece checkpoints`` CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import models
from engine.cli import main
from models import CheckpointError
from tests.conftest import golden


@pytest.fixture(scope="module")
def landmark_sd():
    return models.standin_state_dict("landmark_generator", seed=1)


def _save(path, sd, wrap=True):
    torch.save(
        {"state_dict": sd, "optimizer": None, "global_step": 0, "global_epoch": 0} if wrap else sd, str(path)
    )
    return path


def _landmark_out(model):
    g = golden("golden_landmark_seed1.npz")
    with torch.inference_mode():
        return model(*(torch.from_numpy(g[k]) for k in ("T_mels", "T_pose", "Nl_pose", "Nl_content")))


@pytest.mark.parametrize("prefix,wrap", [("", True), ("module.", True), ("", False)])
def test_landmark_loads_with_and_without_module_prefix(tmp_path, landmark_sd, prefix, wrap):
    path = _save(tmp_path / "lm.pth", {prefix + k: v for k, v in landmark_sd.items()}, wrap)
    model = models.load_landmark_generator(path)
    assert not model.training
    d = float(
        (_landmark_out(model) - torch.from_numpy(golden("golden_landmark_seed1.npz")["predict_content"]))
        .abs()
        .max()
    )
    assert d <= 1e-4


def test_renderer_with_module_prefix_keeps_perceptual_apart(renderer_model, standin_paths):
    assert len(renderer_model.perceptual_state_dict) == 32
    assert all(k.startswith("perceptual.model.network.") for k in renderer_model.perceptual_state_dict)
    assert not any(k.startswith("perceptual") for k in renderer_model.state_dict())
    raw = torch.load(standin_paths["renderer"], weights_only=True)["state_dict"]
    assert all(k.startswith("module.") for k in raw)


def test_wrong_shape_missing_and_unexpected_are_all_named(tmp_path, landmark_sd):
    sd = dict(landmark_sd)
    sd["jaw_keypoint_map.weight"] = torch.zeros(35, 512)
    del sd["Norm.bias"]
    sd["extra.layer.weight"] = torch.zeros(3)
    path = _save(tmp_path / "bad.pth", sd)
    with pytest.raises(CheckpointError) as e:
        models.load_landmark_generator(path)
    msg = str(e.value)
    assert "jaw_keypoint_map.weight: shape (35, 512), expected (34, 512)" in msg
    assert "missing 1 tensor(s): Norm.bias" in msg
    assert "unexpected 1 tensor(s): extra.layer.weight" in msg
    assert str(path) in msg


def test_truncated_empty_and_foreign_files_are_clear_errors(tmp_path, standin_paths):
    data = standin_paths["landmark_generator"].read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        models.load_landmark_generator(tmp_path / "trunc.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        models.load_renderer(tmp_path / "empty.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError):
        models.load_renderer(tmp_path / "text.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        models.load_renderer(tmp_path / "nope.pth")
    (tmp_path / "trunc.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(CheckpointError, match="safetensors"):
        models.load_renderer(tmp_path / "trunc.safetensors")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"a": _Evil()}}, f)
    with pytest.raises(CheckpointError):
        models.load_renderer(path)


def test_wrong_network_kind_is_reported(standin_paths):
    with pytest.raises(CheckpointError, match="holds the renderer, but a landmark generator was asked for"):
        models.load_landmark_generator(standin_paths["renderer"])


def test_unrelated_state_dict_is_reported(tmp_path):
    path = _save(tmp_path / "other.pth", {"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="holds neither"):
        models.load_renderer(path)


def test_safetensors_conversion_fp32_exact_and_fp16_close(tmp_path, standin_paths):
    src = standin_paths["landmark_generator"]
    f32 = models.convert(src, tmp_path / "lm.safetensors")
    f16 = models.convert(src, tmp_path / "lm16.safetensors", half=True)
    assert f16.stat().st_size < 0.6 * f32.stat().st_size
    ref = _landmark_out(models.load_landmark_generator(src))
    out32 = _landmark_out(models.load_landmark_generator(f32))
    out16 = _landmark_out(models.load_landmark_generator(f16))
    assert torch.equal(out32, ref)
    assert float((out16 - ref).abs().max()) < 0.05
    ckpt = models.read_checkpoint(f16)
    assert ckpt.kind == "landmark_generator" and ckpt.metadata["dtype"] == "float16"
    assert ckpt.metadata["source_sha256"] == models.sha256(src)


def test_renderer_conversion_keeps_perceptual_tensors(tmp_path, standin_paths, renderer_model):
    out = models.convert(standin_paths["renderer"], tmp_path / "r.safetensors")
    loaded = models.load_renderer(out)
    assert set(loaded.perceptual_state_dict) == set(renderer_model.perceptual_state_dict)
    sd_a, sd_b = loaded.state_dict(), renderer_model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_b)
    loss = models.load_perceptual_loss(out)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert float(loss(x, x.roll(3, -1))) == pytest.approx(
            float(models.load_perceptual_loss(renderer_model)(x, x.roll(3, -1))), rel=1e-6
        )


def test_convert_refuses_bad_checkpoints_and_non_safetensors_output(tmp_path, landmark_sd, standin_paths):
    bad = _save(tmp_path / "bad.pth", {k: v for k, v in landmark_sd.items() if k != "Norm.weight"})
    with pytest.raises(CheckpointError, match="Norm.weight"):
        models.convert(bad, tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match=".safetensors"):
        models.convert(standin_paths["landmark_generator"], tmp_path / "x.pth")


def test_cli_verify_reports_and_exit_status(tmp_path, standin_paths, capsys):
    rc = main(
        [
            "checkpoints",
            "verify",
            "--json",
            str(standin_paths["landmark_generator"]),
            str(standin_paths["renderer"]),
        ]
    )
    reports = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [r["kind"] for r in reports] == ["landmark_generator", "renderer"]
    assert all(r["usable"] and len(r["sha256"]) == 64 and r["forward_seconds"] > 0 for r in reports)
    assert reports[0]["parameters"] == sum(p.numel() for p in models.LandmarkGenerator().parameters())
    assert reports[1]["perceptual_tensors"] == 32
    assert reports[0]["sha256"] == models.sha256(standin_paths["landmark_generator"])

    trunc = tmp_path / "trunc.pth"
    trunc.write_bytes(standin_paths["landmark_generator"].read_bytes()[:1000])
    rc = main(
        [
            "checkpoints",
            "verify",
            str(standin_paths["landmark_generator"]),
            str(trunc),
            str(tmp_path / "missing.pth"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert out.count("OK  ") == 1 and out.count("FAIL") == 2
    assert "file not found" in out and "truncated or corrupt" in out


def test_cli_convert_and_standin(tmp_path, standin_paths, capsys):
    assert main(["checkpoints", "standin", "--out", str(tmp_path / "sw"), "--seed", "2"]) == 0
    written = sorted(p.name for p in (tmp_path / "sw").iterdir())
    assert written == ["standin_landmark_seed2.pth", "standin_renderer_seed2.pth"]
    seed2 = models.read_checkpoint(tmp_path / "sw" / "standin_landmark_seed2.pth").state_dict["Norm.weight"]
    seed1 = models.read_checkpoint(standin_paths["landmark_generator"]).state_dict["Norm.weight"]
    assert not torch.equal(seed1, seed2)
    dst = tmp_path / "lm16.safetensors"
    assert main(["checkpoints", "convert", str(standin_paths["landmark_generator"]), str(dst), "--half"]) == 0
    assert "float16" in capsys.readouterr().out
    assert models.read_checkpoint(dst).dtype == torch.float16
    assert main(["checkpoints", "convert", str(tmp_path / "none.pth"), str(dst)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_verify_flags_non_finite_weights(tmp_path, landmark_sd, capsys):
    sd = dict(landmark_sd)
    sd["Norm.weight"] = torch.full((512,), float("nan"))
    path = _save(tmp_path / "nan.pth", sd)
    assert main(["checkpoints", "verify", str(path)]) == 1
    assert "non-finite values in: Norm.weight" in capsys.readouterr().out
    assert np.isnan(sd["Norm.weight"].numpy()).all()


def test_command_modules_share_one_error_convention(capsys):
    """Every command (mouthpiece, python -m engine, server.py) goes through engine.cli.errors.tool_main:
    a listed error is one ``PROG: error: ...`` line and status 2, Ctrl+C is status 130, anything else
    propagates."""
    import argparse

    from engine.cli.errors import tool_main

    parser = argparse.ArgumentParser(prog="tool")
    parser.add_argument("what")

    def run(args):
        if args.what == "ok":
            return 0
        if args.what == "missing":
            raise FileNotFoundError("avatar file not found: x.png")
        if args.what == "stop":
            raise KeyboardInterrupt
        raise KeyError(args.what)

    assert tool_main(parser, run, ["ok"]) == 0
    assert tool_main(parser, run, ["missing"]) == 2
    assert capsys.readouterr().err == "tool: error: avatar file not found: x.png\n"
    assert tool_main(parser, run, ["stop"]) == 130
    assert capsys.readouterr().err == "tool: interrupted\n"
    with pytest.raises(KeyError):  # not a user error: a bug, with its traceback
        tool_main(parser, run, ["other"])
