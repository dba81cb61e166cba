"""FastRenderer (models/fast_renderer.py) against the golden outputs and the plain Renderer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from models.fast_renderer import FastRenderer, ReferenceBank, SharedModulation
from models.layers import SPADELayer
from tests.conftest import golden

TOL = 1e-4
CONFIGS = {
    "shared": {"fold_alignment": False},
    "default": {},
    "fold_translation": {"fold_translation": True},
}


def maxdiff(a, b) -> float:
    a = a.detach().double().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, np.float64)
    b = b.detach().double().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, np.float64)
    return float(np.abs(a - b).max())


def golden_inputs(n_ref: int) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    g = golden(f"golden_renderer_N{n_ref}_seed1.npz")
    keys = ("face", "target_sketches", "ref_imgs", "ref_sketches", "mel")
    return {k: torch.from_numpy(g[k]) for k in keys}, g


def render_golden(fast: FastRenderer, a: dict[str, torch.Tensor]):
    with torch.inference_mode():
        bank = fast.encode_references(a["ref_imgs"][0], a["ref_sketches"][0])
        return fast(bank, a["face"][:, 0], a["target_sketches"], a["mel"][:, 0], return_warped=True)


@pytest.mark.parametrize("config", ["default", "fold_translation"])
@pytest.mark.parametrize("n_ref", [1, 3])
def test_fast_renderer_matches_golden(renderer_model, n_ref, config):
    a, g = golden_inputs(n_ref)
    generated, warped = render_golden(FastRenderer(renderer_model, **CONFIGS[config]).eval(), a)
    assert generated.shape == warped.shape == (1, 3, 128, 128)
    diffs = {
        "generated_face": maxdiff(generated, g["generated_face"]),
        "warped_ref": maxdiff(warped, g["warped_ref"]),
    }
    assert all(d <= TOL for d in diffs.values()), diffs


def test_fast_renderer_float64_matches_golden(renderer_model):
    """Dtype-agnostic: a float64 copy (bank, grids and folded kernels in float64) agrees with golden.
    The copy is cast under inference_mode, so its weights are inference tensors (no version counter)."""
    a, g = golden_inputs(1)
    with torch.inference_mode():
        wide = copy.deepcopy(renderer_model).to(torch.float64)
    fast = FastRenderer(wide, fold_translation=True).eval()
    generated, warped = render_golden(fast, {k: v.to(torch.float64) for k, v in a.items()})
    assert generated.dtype == warped.dtype == torch.float64
    assert maxdiff(generated, g["generated_face"]) <= TOL
    assert maxdiff(warped, g["warped_ref"]) <= TOL


# Random inputs at a smaller, non-square size (the networks are fully convolutional): H != W catches
# x/y mix-ups in the grids and in the folded modulation's border terms, at a quarter of the cost.
N_REF, BATCH, H, W = 5, 3, 48, 64


@pytest.fixture(scope="module")
def random_case(renderer_model):
    gen = torch.Generator().manual_seed(7)
    x = {
        "ref_imgs": torch.rand(N_REF, 3, H, W, generator=gen),
        "ref_sketches": torch.rand(N_REF, 3, H, W, generator=gen),
        "face": torch.rand(BATCH, 3, H, W, generator=gen),
        "target_sketches": torch.rand(BATCH, 5, 3, H, W, generator=gen),
        "mel": torch.rand(BATCH, 1, 80, 16, generator=gen) * 2 - 1,
    }
    with torch.inference_mode():
        generated, warped = renderer_model(
            x["face"][:, None],
            x["target_sketches"],
            x["ref_imgs"].expand(BATCH, *x["ref_imgs"].shape),  # shared references
            x["ref_sketches"].expand(BATCH, *x["ref_sketches"].shape),
            x["mel"][:, None],
        )
    return x, generated, warped


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fast_renderer_matches_plain_batched(renderer_model, random_case, config):
    x, generated, warped = random_case
    fast = FastRenderer(renderer_model, **CONFIGS[config]).eval()
    with torch.inference_mode():
        bank = fast.encode_references(x["ref_imgs"], x["ref_sketches"])
        out, ref = fast(bank, x["face"], x["target_sketches"], x["mel"], return_warped=True)
    assert out.shape == ref.shape == (BATCH, 3, H, W)
    diffs = {"generated": maxdiff(out, generated), "warped": maxdiff(ref, warped)}
    assert all(d <= TOL for d in diffs.values()), diffs
    # Frames must differ from each other (each row its own face/sketches/mel).
    assert maxdiff(out[0], out[1]) > 1e-3


def test_batch_rows_are_independent(renderer_model, random_case):
    x = random_case[0]
    fast = FastRenderer(renderer_model).eval()
    with torch.inference_mode():
        bank = fast.encode_references(x["ref_imgs"], x["ref_sketches"])
        both = fast(bank, x["face"], x["target_sketches"], x["mel"], return_warped=True)
        for b in range(BATCH):
            one = fast(bank, x["face"][b : b + 1], x["target_sketches"][b : b + 1], x["mel"][b : b + 1], True)
            assert maxdiff(one[0], both[0][b : b + 1]) <= 1e-5
            assert maxdiff(one[1], both[1][b : b + 1]) <= 1e-5


def test_bank_is_computed_once_and_modulation_once_per_frame(renderer_model, random_case):
    x = random_case[0]
    fast = FastRenderer(renderer_model, fold_alignment=False).eval()
    fm = renderer_model.flow_module
    seen: dict[str, list[int]] = {"encoder": [], "modulation": [], "per_reference": []}
    hooks = [
        fm.conv1.register_forward_hook(lambda m, i, o: seen["encoder"].append(i[0].shape[0])),
        fm.spade_layer_1.spade_layer_1.conv1.register_forward_hook(
            lambda m, i, o: seen["modulation"].append(i[0].shape[0])
        ),
        fm.spade_layer_1.conv_1.register_forward_hook(
            lambda m, i, o: seen["per_reference"].append(i[0].shape[0])
        ),
    ]
    try:
        with torch.inference_mode():
            bank = fast.encode_references(x["ref_imgs"], x["ref_sketches"])
            assert isinstance(bank, ReferenceBank) and bank.n_refs == N_REF
            assert seen["encoder"] == [N_REF]
            first = fast(bank, x["face"], x["target_sketches"], x["mel"])
            second = fast(bank, x["face"], x["target_sketches"], x["mel"])
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(first, second)
    assert seen["encoder"] == [N_REF]  # not re-run by forward
    assert seen["modulation"] == [BATCH, BATCH]  # once per frame, not per reference
    assert seen["per_reference"] == [N_REF * BATCH, N_REF * BATCH]
    assert bank.h1.shape == (N_REF, 32, H, W) and bank.h2.shape == (N_REF, 256, H // 2, W // 2)
    assert bank.imgs.shape == (N_REF, 3, H, W) and torch.equal(bank.imgs, x["ref_imgs"])


def test_shares_the_plain_models_modules(renderer_model):
    fast = FastRenderer(renderer_model)
    assert fast.flow_module is renderer_model.flow_module
    assert fast.translation is renderer_model.translation
    ptrs = {p.data_ptr() for p in renderer_model.parameters()}
    assert {p.data_ptr() for p in fast.parameters()} <= ptrs
    assert sum(1 for _ in fast.buffers()) == sum(1 for _ in renderer_model.buffers())


@pytest.mark.parametrize("shape", [(15, 9, 13), (3, 6, 5)])
def test_folded_modulation_is_exact(shape):
    """The 5x5 composed kernel plus border correction equals conv1 -> gamma/beta (float64, 1e-12)."""
    cm, h, w = shape
    torch.manual_seed(0)
    layers = [SPADELayer(8, cm, hidden=16).double() for _ in range(3)]
    m = torch.randn(2, cm, h, w, dtype=torch.float64)
    shared = SharedModulation(layers, fold=True)
    for layer, (gamma, beta) in zip(layers, shared(m), strict=True):
        g, b = layer.modulation(m)
        assert gamma.shape == g.shape == (2, 8, h, w)
        assert maxdiff(gamma, g) <= 1e-12 and maxdiff(beta, b) <= 1e-12
    # The cached kernels follow in-place weight changes (e.g. load_state_dict).
    with torch.no_grad():
        layers[1].conv1.weight.mul_(2)
        layers[1].beta.bias.add_(1)
    gamma, beta = shared(m)[1]
    g, b = layers[1].modulation(m)
    assert maxdiff(gamma, g) <= 1e-12 and maxdiff(beta, b) <= 1e-12


def test_encode_references_rejects_bad_shapes(renderer_model):
    fast = FastRenderer(renderer_model)
    with pytest.raises(ValueError):
        fast.encode_references(torch.rand(1, 2, 3, 8, 8), torch.rand(1, 2, 3, 8, 8))
    with pytest.raises(ValueError):
        fast.encode_references(torch.rand(2, 3, 8, 8), torch.rand(3, 3, 8, 8))
