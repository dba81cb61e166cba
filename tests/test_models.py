"""Golden equivalence with the authors' code: schemas, stand-in weights, model outputs, losses."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

import models
from tests.conftest import GOLDEN, SHARED, golden

TOL = 1e-4


def maxdiff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.mark.parametrize(
    "kind,fname", [("landmark_generator", "schema_landmark.json"), ("renderer", "schema_renderer.json")]
)
def test_tensor_names_shapes_dtypes_equal_golden_schema(kind, fname):
    gold = json.loads((GOLDEN / fname).read_text())["tensors"]
    ours = models.schema(kind)["tensors"]
    assert sorted(set(gold) - set(ours)) == []
    assert sorted(set(ours) - set(gold)) == []
    assert {k: (v["shape"], v["dtype"]) for k, v in ours.items()} == {
        k: (v["shape"], v["dtype"]) for k, v in gold.items()
    }
    assert len(ours) == (435 if kind == "landmark_generator" else 284)


def _shared_make_weights():
    path = SHARED / "golden" / "make_weights.py"
    if not path.is_file():
        pytest.skip("shared/golden/make_weights.py not present")
    spec = importlib.util.spec_from_file_location("shared_make_weights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(
    "kind,fname,prefix",
    [("landmark_generator", "schema_landmark.json", ""), ("renderer", "schema_renderer.json", "module.")],
)
def test_standin_weights_bit_identical_to_reference_recipe(kind, fname, prefix):
    ref = _shared_make_weights().make_state_dict(json.loads((GOLDEN / fname).read_text()), 1, prefix)
    ours = models.standin_state_dict(kind, seed=1)
    assert set(ours) == set(ref)
    unequal = [k for k in ref if not torch.equal(ours[k], ref[k]) or ours[k].dtype != ref[k].dtype]
    assert unequal == []


def test_standin_recipe_spot_values():
    """Independent of shared/: a few values of the recipe, pinned."""
    sd = models.standin_state_dict("landmark_generator", seed=1)
    assert sd["mel_encoder.0.conv_block.1.num_batches_tracked"].dtype == torch.int64
    assert int(sd["mel_encoder.0.conv_block.1.num_batches_tracked"]) == 0
    pe = sd["fusion_transformer.position_a.pe"]
    assert pe.shape == (1, 512, 512)
    assert float(pe[0, 0, 0]) == 0.0 and float(pe[0, 0, 1]) == 1.0
    assert abs(float(pe[0, 3, 0]) - np.sin(3.0)) < 1e-6
    rv = sd["mel_encoder.0.conv_block.1.running_var"]
    assert 0.5 <= float(rv.min()) and float(rv.max()) <= 1.5
    w = sd["Norm.weight"]
    assert 0.6 <= float(w.min()) and float(w.max()) <= 1.4


def test_landmark_transformer_matches_golden(landmark_model):
    g = golden("golden_landmark_seed1.npz")
    with torch.inference_mode():
        out = landmark_model(*(torch.from_numpy(g[k]) for k in ("T_mels", "T_pose", "Nl_pose", "Nl_content")))
    assert out.shape == (10, 2, 57)
    d = maxdiff(out, g["predict_content"])
    assert d <= TOL, f"landmark transformer max abs diff {d:.3g}"


def test_landmark_batch_rows_are_independent(landmark_model):
    """Batching windows must not change any window's output (eval mode)."""
    g = golden("golden_landmark_seed1.npz")
    args = [torch.from_numpy(g[k]) for k in ("T_mels", "T_pose", "Nl_pose", "Nl_content")]
    with torch.inference_mode():
        both = landmark_model(*args)
        second = landmark_model(*(a[1:2] for a in args))
    assert maxdiff(both[5:], second.numpy()) <= 1e-5


@pytest.fixture(scope="module")
def perceptual(renderer_model):
    return models.load_perceptual_loss(renderer_model)


@pytest.mark.parametrize("n_ref", [1, 3])
def test_renderer_and_perceptual_losses_match_golden(renderer_model, perceptual, n_ref):
    g = golden(f"golden_renderer_N{n_ref}_seed1.npz")
    args = [torch.from_numpy(g[k]) for k in ("face", "target_sketches", "ref_imgs", "ref_sketches", "mel")]
    with torch.inference_mode():
        generated, warped = renderer_model(*args)
        face = args[0][:, 0]
        warp_loss = perceptual(warped, face)
        gen_loss = perceptual(generated, face, style_weight=250.0)
    assert generated.shape == warped.shape == (1, 3, 128, 128)
    diffs = {
        "generated_face": maxdiff(generated, g["generated_face"]),
        "warped_ref": maxdiff(warped, g["warped_ref"]),
        "perceptual_warp_loss": maxdiff(warp_loss.reshape(1), g["perceptual_warp_loss"]),
        "perceptual_gen_loss": maxdiff(gen_loss.reshape(1), g["perceptual_gen_loss"]),
    }
    assert all(d <= TOL for d in diffs.values()), diffs
    assert 0.0 <= float(generated.min()) and float(generated.max()) <= 1.0


def test_renderer_is_dtype_agnostic(renderer_model):
    """No hard-coded device or dtype: a float64 copy runs and agrees with the golden output (the
    half-precision CUDA paths are measured by the GPU benchmarks)."""
    import copy

    g = golden("golden_renderer_N1_seed1.npz")
    args = [torch.from_numpy(g[k]) for k in ("face", "target_sketches", "ref_imgs", "ref_sketches", "mel")]
    wide = copy.deepcopy(renderer_model).to(torch.float64)
    with torch.inference_mode():
        out, warped = wide(*(a.to(torch.float64) for a in args))
    assert out.dtype == torch.float64
    assert maxdiff(out, g["generated_face"]) <= TOL
    assert maxdiff(warped, g["warped_ref"]) <= TOL


def test_perceptual_loss_is_zero_for_identical_images_and_ignores_train_mode(perceptual):
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    perceptual.train()
    assert not perceptual.training
    with torch.inference_mode():
        assert float(perceptual(x, x, style_weight=250.0)) == 0.0
        assert float(perceptual(x, x.flip(-1))) > 0.0


@pytest.mark.parametrize("kind", ["landmark_generator", "renderer"])
def test_standin_model_holds_exactly_the_recipe_values(kind):
    model = models.standin_model(kind, seed=2)
    ref = models.standin_state_dict(kind, seed=2, prefix="")
    sd = model.state_dict()
    assert not model.training
    assert set(sd) == {k for k in ref if not k.startswith("perceptual.")}
    assert all(torch.equal(sd[k], ref[k]) for k in sd)
