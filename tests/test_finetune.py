"""``mouthpiece train presenter``: one command from a presenter's video to fine-tuned weights, with
the held-out evaluation before and after (engine/training/finetune.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import models
from engine.cli import main
from engine.training.finetune import PresenterConfig, PresenterError, fine_tune_presenter


def test_missing_weights_say_how_to_start(tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"not read: the weights are checked first")
    cfg = PresenterConfig(video=str(video), out=str(tmp_path / "out"), checkpoint_dir=str(tmp_path / "none"))
    with pytest.raises(PresenterError, match="--scratch") as e:
        fine_tune_presenter(cfg, say=lambda _: None)
    assert "--landmark-init" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        fine_tune_presenter(
            PresenterConfig(
                video=str(video), out=str(tmp_path / "o"), landmark_init=str(tmp_path / "nowhere.pth")
            ),
            say=lambda _: None,
        )


def test_a_video_too_short_to_train_on(tmp_path, media_dir, standin_paths):
    cfg = PresenterConfig(
        video=str(media_dir / "talk_b_25fps.mp4"),  # 5 s: 125 frames
        out=str(tmp_path / "out"),
        landmark_init=str(standin_paths["landmark_generator"]),
        renderer_init=str(standin_paths["renderer"]),
        held_out_s=4.0,  # leaves 25 frames
    )
    with pytest.raises(PresenterError, match="leaves 25 for training"):
        fine_tune_presenter(cfg, say=lambda _: None)


def test_fine_tune_a_presenter_from_the_command_line(tmp_path, media_dir, standin_paths, capsys):
    """Stand-in weights play the published checkpoints: preprocessing, both stages, weights in the
    official layout that the engine loads, and the held-out evaluation before and after."""
    out = tmp_path / "presenter"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = main(
            [
                "train", "presenter", str(media_dir / "talk_b_25fps.mp4"), "--out", str(out),
                "--landmark-init", str(standin_paths["landmark_generator"]),
                "--renderer-init", str(standin_paths["renderer"]),
                "--held-out-s", "0.5", "--landmark-steps", "4", "--landmark-batch", "4",
                "--renderer-steps", "1", "--renderer-batch", "2",
                "--eval-refs", "1", "--eval-frames", "10", "--save-every", "100", "--sample-every", "100",
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    text = capsys.readouterr().out
    assert rc == 0, text
    summary = json.loads((out / "summary.json").read_text())
    # the held-out tail (0.5 s = 12 frames) stayed out of the dataset
    assert summary["frames"] == {"total": 125, "train": 113, "held_out": [113, 123]}
    meta = json.loads((out / "data" / "clips" / "talk_b_25fps" / "meta.json").read_text())
    assert meta["frames"] == 113
    # the weights: official layout, loaded strictly by the engine, changed by training
    for kind, name in (
        (models.LANDMARK, "landmarkgenerator_checkpoint.pth"),
        (models.RENDERER, "renderer_checkpoint.pth"),
    ):
        ck = torch.load(str(out / name), map_location="cpu", weights_only=True)
        assert set(ck) == {"state_dict", "optimizer", "global_step", "global_epoch"}
        assert ck["optimizer"] is None and ck["global_step"] == (4 if kind == models.LANDMARK else 1)
        start = torch.load(str(standin_paths[kind]), map_location="cpu", weights_only=True)["state_dict"]
        start = {k.removeprefix("module."): v for k, v in start.items()}
        tuned = {k.removeprefix("module."): v for k, v in ck["state_dict"].items()}
        assert set(tuned) == set(start)
        assert any(not torch.equal(tuned[k], start[k]) for k in start if start[k].is_floating_point())
    models.load_landmark_generator(out / "landmarkgenerator_checkpoint.pth")
    models.load_renderer(out / "renderer_checkpoint.pth")
    # the loss curves: finite, and the landmark loss fell over its 4 steps (fixed seed)
    curves = summary["curves"]
    loss = [v for _, v in curves["landmark"]["train/loss"]]
    assert len(loss) >= 2 and all(math.isfinite(v) for v in loss) and loss[-1] < loss[0], loss
    assert {"train/warp", "train/perceptual", "train/style", "train/gan"} <= set(curves["renderer"])
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    # the evaluation: the same held-out frames before and after, every basic metric finite
    metrics = json.loads((out / "metrics.json").read_text())
    for when in ("before", "after"):
        m = metrics[when]["metrics"]
        for key in ("psnr_face", "ssim_face", "psnr_full", "ssim_full", "lip_lmd"):
            # 10 held-out frames of audio make 6 mel chunks (frames), the first 2 repeat the third
            assert np.isfinite(m[key]["value"]) and m[key]["n"] == 4, (when, key, m[key])
        assert m["lpips"] is None and "lpips" in metrics[when]["reasons"]  # no network given
    assert "psnr_face" in text and "mouthpiece serve --checkpoint-dir" in text
