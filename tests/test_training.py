"""Training (issue 8, part 2): discriminator, losses, datasets, both stages on a synthetic dataset,
checkpoints in the official format, resume, AMP (CUDA only)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import models
from engine.cli import main as cli_main
from engine.core.audio import num_video_frames as mel_chunk_count
from engine.training import (
    LandmarkWindows,
    RendererLossWeights,
    RendererSamples,
    TrainingError,
    discriminator_loss,
    feature_matching_loss,
    landmark_losses,
    lsgan_loss,
    perceptual_terms,
    read_log,
    read_manifest,
    renderer_generator_loss,
    split_clips,
    velocity_loss,
    write_synthetic_dataset,
)
from engine.training.landmark_stage import LandmarkTrainer
from engine.training.renderer_stage import RendererTrainer, vgg_state_dict
from engine.training.trainer import LandmarkTrainConfig, RendererTrainConfig
from models.discriminator import DiscriminatorConfig, MultiscaleDiscriminator
from models.perceptual import PERCEPTUAL_PREFIX, PerceptualLoss
from tests.conftest import GOLDEN

VAL_CLIP = "synthetic__clip02"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a shared 2-core machine, two spinning threads are many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def drop_checkpoints(folder):
    for p in list(folder.rglob("*.pth")):  # hundreds of MB each; pytest keeps three runs' folders
        p.unlink()


@pytest.fixture(autouse=True)
def checkpoints_dropped_after_test(tmp_path):
    yield
    drop_checkpoints(tmp_path)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_dataset(
        tmp_path_factory.mktemp("train") / "data", clips=3, frames=40, seed=0, size=32
    )


def lm_config(data, out, **kw) -> LandmarkTrainConfig:
    base = dict(
        batch_size=2, max_steps=2, log_every=1, save_every=0, sample_every=0, val_every=0, val_fraction=0
    )
    return LandmarkTrainConfig(data=str(data), out=str(out), **{**base, **kw})


def rd_config(data, out, init, **kw) -> RendererTrainConfig:
    base = dict(
        batch_size=2,
        n_ref=1,
        max_steps=1,
        log_every=1,
        save_every=0,
        sample_every=0,
        val_every=0,
        val_fraction=0,
        steps_per_epoch=1,
        warmup_epochs=1,
        init=str(init) if init else None,
    )
    return RendererTrainConfig(data=str(data), out=str(out), **{**base, **kw})


def events(out, name):
    return [r for r in read_log(out / "log.jsonl") if r["event"] == name]


def golden_keys(fname):
    return list(json.loads((GOLDEN / fname).read_text())["tensors"])


# ---------------------------------------------------------------------------------------------
# Discriminator


def test_discriminator_shapes_features_and_names():
    disc = MultiscaleDiscriminator(DiscriminatorConfig())
    out = disc(torch.rand(2, 3, 128, 128))
    assert len(out) == 2 and all(len(s) == 3 + 2 for s in out)
    assert [tuple(f.shape) for f in out[0]] == [
        (2, 64, 65, 65),
        (2, 128, 33, 33),
        (2, 256, 17, 17),
        (2, 512, 18, 18),
        (2, 1, 19, 19),
    ]
    assert [tuple(f.shape) for f in out[1]] == [
        (2, 64, 33, 33),
        (2, 128, 17, 17),
        (2, 256, 9, 9),
        (2, 512, 10, 10),
        (2, 1, 11, 11),
    ]
    sd = disc.state_dict()
    # pix2pixHD names; instance norm has no tensors; conv weights ~ N(0, 0.02)
    assert sorted({k.split(".")[0] for k in sd}) == [f"scale{i}_layer{j}" for i in range(2) for j in range(5)]
    assert len(sd) == 2 * 5 * 2
    assert abs(float(disc.scale0_layer1[0].weight.detach().std()) - 0.02) < 0.002
    # the full-resolution input goes through the last scale's network
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        direct = x
        for j in range(5):
            direct = getattr(disc, f"scale1_layer{j}")(direct)
        assert torch.equal(disc(x)[0][-1], direct)
    flat = MultiscaleDiscriminator(DiscriminatorConfig(get_interm_feat=False))
    out = flat(torch.rand(1, 3, 64, 64))
    assert [len(s) for s in out] == [1, 1] and out[0][0].shape == (1, 1, 11, 11)


# ---------------------------------------------------------------------------------------------
# Losses


def test_velocity_and_l1_by_hand():
    T = 3
    pred = torch.zeros(T, 2, 2)  # one window, two points
    gt = torch.zeros(T, 2, 2)
    gt[1:, 0, 0], gt[1:, 1, 0] = 3.0, 4.0  # point 0 moves by (3, 4) between frames 0 and 1
    # differences: (3,4,0,0) then 0 -> distances 5 and 0 (up to pairwise_distance's eps 1e-6)
    assert abs(float(velocity_loss(pred, gt, T)) - 2.5) < 1e-5
    terms = landmark_losses(pred, gt, T)
    assert abs(float(terms["l1"]) - (2 * (3 + 4)) / 12) < 1e-6
    assert abs(float(terms["loss"]) - float(terms["l1"]) - float(terms["velocity"])) < 1e-6
    # windows are not mixed: two windows, each constant in time, differing from each other
    two = torch.cat([torch.zeros(T, 2, 2), torch.ones(T, 2, 2)])
    assert float(velocity_loss(two, torch.zeros_like(two), T)) < 1e-5


def test_lsgan_discriminator_and_feature_matching_by_hand():
    def outs(vals):  # 2 scales x (two features, patch map)
        return [
            [torch.full((1, 2, 3, 3), a), torch.full((1, 2, 2, 2), b), torch.full((1, 1, 2, 2), c)]
            for a, b, c in vals
        ]

    fake = outs([(1.0, 2.0, 0.5), (0.5, 0.0, 0.0)])
    real = outs([(0.0, 0.0, 9.0), (0.0, 0.0, 1.0)])
    assert abs(float(lsgan_loss(fake, True)) - (0.25 + 1.0)) < 1e-6
    assert abs(float(lsgan_loss(fake, False)) - (0.25 + 0.0)) < 1e-6
    d = discriminator_loss(fake, real)  # 0.5 * (fake->0: 0.25 + real->1: 64 + 0)
    assert abs(float(d) - 0.5 * (0.25 + 64.0)) < 1e-5
    # 1/num_D * 4/(3+1) * (|1| + |2| + |0.5| + |0|); the patch maps are not features
    assert abs(float(feature_matching_loss(fake, real, n_layers=3)) - 0.5 * 3.5) < 1e-6


def test_renderer_total_loss_weights():
    t = {
        k: torch.tensor(v)
        for k, v in dict(warp=1.0, perceptual=2.0, style=0.01, gan=3.0, feature_matching=5.0).items()
    }
    w = RendererLossWeights()
    assert float(renderer_generator_loss(t, w, warmup=True)) == pytest.approx(2.5)
    assert float(renderer_generator_loss(t, w, warmup=False)) == pytest.approx(
        2.5 * 1 + 4 * (2 + 250 * 0.01) + 0.25 * 3 + 2.5 * 5
    )


def test_perceptual_terms_equal_perceptual_loss():
    torch.manual_seed(0)
    net = PerceptualLoss()
    a, b, target = torch.rand(3, 2, 3, 32, 32).unbind(0)
    (pa, sa), (pb, sb) = perceptual_terms(net, [a, b], target, [False, True])
    assert float(sa) == 0.0
    assert float(pa) == pytest.approx(float(net(a, target)), rel=1e-5)
    assert float(pb + 250 * sb) == pytest.approx(float(net(b, target, style_weight=250)), rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Data


def test_synthetic_dataset_follows_the_contract(data_dir):
    from engine.core.audio import mel_chunk_starts

    m = read_manifest(data_dir)
    assert m["version"] == 1 and m["image_size"] == 32 and len(m["clips"]) == 3
    for entry in m["clips"]:
        d = data_dir / "clips" / entry["id"]
        L = entry["frames"]
        faces, sketches = np.load(d / "faces.npy"), np.load(d / "sketches.npy")
        lms, hw, valid = np.load(d / "landmarks.npy"), np.load(d / "hw.npy"), np.load(d / "valid.npy")
        mel = np.load(d / "mel.npy")
        assert faces.shape == (L, 32, 32, 3) and faces.dtype == np.uint8
        assert sketches.shape == (L, 32, 32) and sketches.dtype == np.uint8 and sketches.max() == 224
        assert lms.shape == (L, 2, 131) and lms.dtype == np.float32 and np.isfinite(lms).all()
        assert hw.shape == (L, 2) and hw.dtype == np.int32 and valid.dtype == bool
        assert mel.shape == (80, entry["mel_frames"]) and mel.dtype == np.float32
        assert np.load(d / "openness.npy").shape == (L,)
        assert int(valid.sum()) == entry["valid_frames"]
        assert json.loads((d / "meta.json").read_text())["frames"] == L
    for M in [10, 16, 17, 100, 129, 1000, 3201]:
        assert mel_chunk_count(M) == len(mel_chunk_starts(M))


def test_landmark_windows_follow_the_authors_sampling(data_dir):
    ds = LandmarkWindows(data_dir, T=5, n_ref=15, samples_per_epoch=64, seed=3)
    invalid_seen = False
    for i in range(64):
        c, window, refs = ds.draw(i)
        clip = ds.clips[c]
        s = window[0]
        assert 2 <= s <= clip.frames - 5 - 2 and window == list(range(s, s + 5))
        assert clip.valid[window].all() and clip.valid[refs].all()
        assert len(set(refs)) == 15 and not set(refs) & set(window)
        assert mel_chunk_count(np.load(clip.path / "mel.npy").shape[1]) > window[-1] - 2
        invalid_seen |= not clip.valid.all()
    assert invalid_seen  # the clip with an invalid frame is drawn, its bad frame never
    item = ds[5]
    c, window, refs = ds.draw(5)
    mel = np.load(ds.clips[c].path / "mel.npy")
    lms = np.load(ds.clips[c].path / "landmarks.npy")
    assert item["mels"].shape == (5, 1, 80, 16)
    f = window[3]
    assert np.array_equal(item["mels"][3, 0].numpy(), mel[:, int((f - 2) * 3.2) : int((f - 2) * 3.2) + 16])
    assert np.array_equal(item["pose"].numpy(), lms[window][:, :, :74])
    assert np.array_equal(item["content"].numpy(), lms[window][:, :, 74:])
    assert item["ref_pose"].shape == (15, 2, 74) and item["ref_content"].shape == (15, 2, 57)
    assert ds.draw(5) == ds.draw(5)  # a pure function of (seed, epoch, index)
    ds.set_epoch(1)
    assert [ds.draw(i) for i in range(8)] != [ds.draw(i) for i in range(8, 16)]


def test_renderer_samples_use_the_middle_frame_and_its_mel(data_dir):
    ds = RendererSamples(data_dir, n_ref=3, samples_per_epoch=32, seed=1)
    for i in range(32):
        c, window, refs = ds.draw(i)
        assert ds.clips[c].valid[window].all() and ds.clips[c].valid[refs].all() and len(set(refs)) == 3
    item = ds[0]
    c, window, refs = ds.draw(0)
    d = ds.clips[c].path
    middle = window[2]
    faces, sketches, mel = np.load(d / "faces.npy"), np.load(d / "sketches.npy"), np.load(d / "mel.npy")
    assert item["face"].shape == (1, 3, 32, 32)
    assert np.allclose(item["face"][0].numpy(), faces[middle].transpose(2, 0, 1) / 255.0)
    assert item["sketches"].shape == (5, 3, 32, 32) and torch.equal(
        item["sketches"][:, 0], item["sketches"][:, 2]
    )
    assert np.allclose(item["sketches"][1, 0].numpy(), sketches[window[1]] / 255.0)
    assert np.allclose(item["ref_imgs"][2].numpy(), faces[refs[2]].transpose(2, 0, 1) / 255.0)
    start = int((middle - 2) * 3.2)
    assert np.array_equal(item["mel"][0, 0].numpy(), mel[:, start : start + 16])


def test_split_clips(data_dir):
    m = read_manifest(data_dir)
    assert split_clips(m, 0.0) == ([c["id"] for c in m["clips"]], [])
    train, val = split_clips(m, 0.3, seed=0)
    assert len(val) == 1 and len(train) == 2 and not set(train) & set(val)
    assert split_clips(m, 0.0, [VAL_CLIP])[1] == [VAL_CLIP]
    with pytest.raises(ValueError, match="not in the manifest"):
        split_clips(m, 0.0, ["nope"])


# ---------------------------------------------------------------------------------------------
# Landmark stage


def test_landmark_stage_runs_and_checkpoint_round_trips(data_dir, tmp_path):
    out = tmp_path / "lm"
    cfg = lm_config(data_dir, out, max_steps=3, save_every=3, sample_every=3, val_every=3, val_batches=1)
    cfg.val_clips = [VAL_CLIP]
    trainer = LandmarkTrainer(cfg, echo=False)
    trainer.run()
    train = events(out, "train")
    assert [r["step"] for r in train] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in train for k in ("l1", "velocity", "loss"))
    (val,) = events(out, "val")
    assert math.isfinite(val["l1"]) and math.isfinite(val["velocity"])
    assert (out / "samples" / "step000003.png").is_file()
    assert json.loads((out / "config.json").read_text())["stage"] == "landmark"
    ckpt_path = out / "checkpoints" / "landmark_step000003.pth"
    assert (out / "latest.pth").resolve() == ckpt_path.resolve()

    raw = torch.load(ckpt_path, weights_only=True)
    assert {"state_dict", "optimizer", "global_step", "global_epoch"} <= set(raw)
    assert raw["global_step"] == 3
    assert list(raw["state_dict"]) == golden_keys("schema_landmark.json")  # the authors' names and order
    assert len(raw["optimizer"]["param_groups"][0]["params"]) == len(list(trainer.model.parameters()))

    loaded = models.load_landmark_generator(out / "latest.pth")  # strict
    batch = trainer.first_batch()
    trainer.model.eval()
    with torch.no_grad():
        args = (batch["mels"], batch["pose"], batch["ref_pose"], batch["ref_content"])
        assert torch.equal(loaded(*args), trainer.model(*args))


def test_landmark_overfits_one_batch(data_dir, tmp_path):
    trainer = LandmarkTrainer(lm_config(data_dir, tmp_path / "o", lr=1e-3), echo=False)
    batch = trainer.first_batch()
    losses = [trainer.train_step(batch) for _ in range(5)]
    assert losses[-1]["l1"] < 0.5 * losses[0]["l1"]
    assert losses[-1]["loss"] < losses[0]["loss"]


def test_landmark_resume_is_exact(data_dir, tmp_path):
    a = LandmarkTrainer(
        lm_config(data_dir, tmp_path / "a", max_steps=4, save_every=2, steps_per_epoch=3), echo=False
    )
    a.run()
    b_out = tmp_path / "b"
    LandmarkTrainer(
        lm_config(data_dir, b_out, max_steps=2, save_every=2, steps_per_epoch=3), echo=False
    ).run()
    saved = torch.load(b_out / "latest.pth", weights_only=True)
    b = LandmarkTrainer(
        lm_config(data_dir, b_out, max_steps=4, save_every=2, steps_per_epoch=3, resume=True, keep_last=1),
        echo=False,
    )
    assert (b.step, b.epoch) == (2, 0)
    opt = b.optimizer.state_dict()
    assert opt["state"].keys() == saved["optimizer"]["state"].keys()
    assert all(
        torch.equal(opt["state"][i][k], saved["optimizer"]["state"][i][k])
        for i in opt["state"]
        for k in ("exp_avg", "step")
    )
    b.run()
    (start,) = events(b_out, "start")[1:]
    assert start["step"] == 2 and start["resumed_from"].endswith("landmark_step000002.pth")
    assert [r["step"] for r in events(b_out, "train")] == [1, 2, 3, 4]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the same run as without the interruption
    assert sorted(p.name for p in (b_out / "checkpoints").iterdir()) == [
        "landmark_step000004.pth"
    ]  # keep_last


def test_landmark_cli(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [str(data_dir), str(out), "--max-steps", "1", "--batch-size", "2", "--val-clips", VAL_CLIP]
    argv += [
        "--val-every",
        "1",
        "--val-batches",
        "1",
        "--sample-every",
        "0",
        "--seed",
        "1",
        "--num-workers",
        "1",
    ]
    assert cli_main(["train", "landmark", *argv]) == 0
    assert [r["step"] for r in events(out, "val")] == [1]
    assert json.loads((out / "config.json").read_text())["val_clips"] == [VAL_CLIP]
    assert cli_main(["train", "landmark", *argv]) == 2  # the folder holds a run: --resume or another folder
    assert "--resume" in capsys.readouterr().err
    assert cli_main(["train", "landmark", str(data_dir), str(tmp_path / "none"), "--resume"]) == 2


# ---------------------------------------------------------------------------------------------
# Renderer stage


@pytest.fixture(scope="module")
def renderer_run(data_dir, standin_paths, tmp_path_factory):
    """Two steps: step 1 in warm-up (epoch 0), step 2 with the full loss (epoch 1)."""
    out = tmp_path_factory.mktemp("rd") / "run"
    cfg = rd_config(data_dir, out, standin_paths["renderer"], max_steps=2, save_every=1, sample_every=2)
    cfg.val_every, cfg.val_batches, cfg.val_clips = 2, 1, [VAL_CLIP]
    trainer = RendererTrainer(cfg, echo=False)
    trainer.run()
    yield trainer, out
    drop_checkpoints(out)


def test_renderer_stage_crosses_warmup(renderer_run):
    _, out = renderer_run
    t1, t2 = events(out, "train")
    assert t1["warmup"] is True and "gan" not in t1 and "disc" not in t1
    assert t2["warmup"] is False
    for k in ("warp", "perceptual", "style", "gan", "feature_matching", "disc", "loss"):
        assert math.isfinite(t2[k]), k
    assert t1["loss"] == pytest.approx(2.5 * t1["warp"], rel=1e-5)
    assert [(p["step"], p["phase"]) for p in events(out, "phase")] == [(0, "warmup"), (1, "full")]
    (val,) = events(out, "val")
    assert all(math.isfinite(val[k]) for k in ("warp", "perceptual", "style", "l1"))
    assert (out / "samples" / "step000002.png").is_file()
    start = events(out, "start")[0]
    assert "perceptual.model.network" in start["perceptual"] and start["warmup_steps"] == 1


def test_renderer_checkpoint_round_trips(renderer_run, standin_paths):
    trainer, out = renderer_run
    path = out / "checkpoints" / "renderer_step000002.pth"
    assert (out / "latest.pth").resolve() == path.resolve()
    raw = torch.load(path, weights_only=True)
    keys = list(raw["state_dict"])
    assert all(k.startswith("module.") for k in keys)
    # the authors' Renderer (perceptual loss inside) loads it strictly after replace('module.', '', 1)
    assert [k.replace("module.", "", 1) for k in keys] == golden_keys("schema_renderer.json")
    n_params = len(list(trainer.model.parameters())) + len(list(PerceptualLoss().network.parameters()))
    assert len(raw["optimizer"]["param_groups"][0]["params"]) == n_params
    assert (raw["global_step"], raw["global_epoch"]) == (2, 1)

    loaded = models.load_renderer(out / "latest.pth")  # strict
    init_vgg = models.read_checkpoint(standin_paths["renderer"]).perceptual
    assert init_vgg.keys() == loaded.perceptual_state_dict.keys()
    assert all(torch.equal(init_vgg[k], loaded.perceptual_state_dict[k]) for k in init_vgg)
    models.load_perceptual_loss(loaded)  # seeds a further run

    batch = trainer.first_batch()
    trainer.model.eval()
    with torch.no_grad():
        args = (batch["face"], batch["sketches"], batch["ref_imgs"], batch["ref_sketches"], batch["mel"])
        for a, b in zip(loaded(*args), trainer.model(*args), strict=True):
            assert torch.equal(a, b)
    disc = torch.load(out / "checkpoints" / "disc_step000002.pth", weights_only=True)
    MultiscaleDiscriminator().load_state_dict(disc["state_dict"], strict=True)
    assert disc["optimizer"]["param_groups"][0]["betas"] == (0.5, 0.999)


def test_renderer_overfit_warp_falls(data_dir, standin_paths, tmp_path):
    trainer = RendererTrainer(rd_config(data_dir, tmp_path / "o", standin_paths["renderer"]), echo=False)
    batch = trainer.first_batch()
    assert trainer.in_warmup
    losses = [trainer.train_step(batch)["warp"] for _ in range(5)]
    assert losses[-1] < 0.75 * losses[0], losses


def test_renderer_resume_restores_everything(data_dir, standin_paths, tmp_path):
    out = tmp_path / "r"
    RendererTrainer(rd_config(data_dir, out, standin_paths["renderer"], save_every=1), echo=False).run()
    main = torch.load(out / "latest.pth", weights_only=True)
    disc = torch.load(out / "checkpoints" / "disc_step000001.pth", weights_only=True)
    t = RendererTrainer(rd_config(data_dir, out, None, max_steps=2, resume=True), echo=False)
    assert (t.step, t.epoch, t.in_warmup) == (1, 1, False)
    sd = t.official_state_dict()
    assert all(torch.equal(sd[k], main["state_dict"][k]) for k in sd)
    assert all(torch.equal(v, disc["state_dict"][k]) for k, v in t.disc.state_dict().items())
    state = t.optimizer.state_dict()["state"]
    assert state.keys() == main["optimizer"]["state"].keys()
    assert all(
        torch.equal(state[i]["exp_avg_sq"], main["optimizer"]["state"][i]["exp_avg_sq"]) for i in state
    )
    t.run()
    assert "gan" in events(out, "train")[-1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-2:] == [
        "renderer_step000001.pth",
        "renderer_step000002.pth",
    ]


def test_renderer_needs_vgg_weights(data_dir, tmp_path):
    cfg = rd_config(data_dir, tmp_path / "x", None)
    with pytest.raises(TrainingError, match="--perceptual random"):
        RendererTrainer(cfg, echo=False)
    assert cli_main(["train", "renderer", str(data_dir), str(tmp_path / "y"), "--max-steps", "0"]) == 2
    cfg = rd_config(data_dir, tmp_path / "z", None, perceptual="random", disc_during_warmup=True)
    RendererTrainer(cfg, echo=False).run()
    assert any("RANDOM" in w["message"] for w in events(tmp_path / "z", "warning"))
    (rec,) = events(tmp_path / "z", "train")
    assert rec["warmup"] is True and math.isfinite(rec["disc"]) and "gan" not in rec  # the authors' schedule
    assert models.load_renderer(tmp_path / "z" / "latest.pth").perceptual_state_dict  # random VGG19 saved too
    with pytest.raises(TrainingError, match="random"):  # and not taken for ImageNet weights later
        RendererTrainer(rd_config(data_dir, tmp_path / "w", tmp_path / "z" / "latest.pth"), echo=False)


def test_vgg_weight_files(tmp_path):
    net = PerceptualLoss().network.state_dict()
    tv = {f"features.{k}": v for k, v in net.items()}
    tv["classifier.0.weight"] = torch.zeros(2, 2)
    for obj in (tv, net, {PERCEPTUAL_PREFIX + k: v for k, v in net.items()}, {"state_dict": tv}):
        got = vgg_state_dict(obj, "x")
        assert got.keys() == net.keys()
    with pytest.raises(TrainingError, match="no VGG19"):
        vgg_state_dict({"foo": torch.zeros(1)}, "x")


# ---------------------------------------------------------------------------------------------
# Mixed precision (CUDA only)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="AMP is only used on CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_steps_on_cuda(data_dir, standin_paths, tmp_path, amp):
    lm = LandmarkTrainer(
        lm_config(data_dir, tmp_path / "lm", device="cuda", amp=amp, max_steps=2), echo=False
    )
    assert lm.amp.enabled and (lm.amp.scaler is not None) == (amp == "fp16")
    lm.run()
    cfg = rd_config(data_dir, tmp_path / "rd", standin_paths["renderer"], device="cuda", amp=amp, max_steps=2)
    RendererTrainer(cfg, echo=False).run()
    for out in (tmp_path / "lm", tmp_path / "rd"):
        assert all(math.isfinite(r["loss"]) for r in events(out, "train"))
    models.load_renderer(tmp_path / "rd" / "latest.pth")


# ---- real clips: the tiny dataset from ../shared/media ------------------------------------------


@pytest.fixture(scope="module")
def media_data(tmp_path_factory, media_dir):
    """talk_a and talk_b (40 frames each) through the real preprocessing."""
    from engine.training.preprocess import PreprocessConfig, preprocess_folder

    src = tmp_path_factory.mktemp("videos")
    for name in ("talk_a_25fps.mp4", "talk_b_25fps.mp4"):
        (src / name).symlink_to(media_dir / name)
    out = tmp_path_factory.mktemp("media_data")
    report = preprocess_folder(src, out, PreprocessConfig(workers=1, max_frames=40, show_progress=False))
    assert not report["failed"], report["failed"]
    return out


def test_stages_learn_on_real_clips(media_data, standin_paths, tmp_path):
    """A few steps of both stages on real, preprocessed clips: finite losses that fall when one
    batch is learnt over and over (the landmark loss, and the renderer's warp loss in warm-up)."""
    lm = LandmarkTrainer(lm_config(media_data, tmp_path / "lm", lr=1e-3, batch_size=4), echo=False)
    batch = lm.first_batch()
    assert batch["mels"].shape == (4, 5, 1, 80, 16) and batch["ref_content"].shape == (4, 15, 2, 57)
    losses = [lm.train_step(batch) for _ in range(6)]
    assert all(math.isfinite(v) for r in losses for v in r.values())
    assert losses[-1]["loss"] < 0.7 * losses[0]["loss"], losses
    r = RendererTrainer(rd_config(media_data, tmp_path / "r", standin_paths["renderer"]), echo=False)
    batch = r.first_batch()
    assert batch["face"].shape == (2, 1, 3, 128, 128) and batch["sketches"].shape == (2, 5, 3, 128, 128)
    warp = [r.train_step(batch)["warp"] for _ in range(3)]
    assert all(math.isfinite(v) for v in warp) and warp[-1] < warp[0], warp
