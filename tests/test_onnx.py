"""ONNX export (models/onnx_export.py) and the ONNX Runtime backends (engine/onnx_backend.py)
against the golden outputs and the torch models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import models  # noqa: E402
from engine.synth.backends.onnx import OnnxLandmarkGenerator, OnnxRenderer, providers  # noqa: E402
from models.fast_renderer import FastRenderer  # noqa: E402
from models.onnx_export import (  # noqa: E402
    ONNX_FORMAT_VERSION,
    export_landmark_generator,
    export_renderer,
    read_metadata,
)
from tests.conftest import golden  # noqa: E402

TOL = 1e-4


def maxdiff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@pytest.fixture(scope="module")
def sha(standin_paths) -> dict[str, str]:
    return {k: models.sha256(p) for k, p in standin_paths.items()}


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def landmark_onnx(landmark_model, onnx_dir, sha):
    return export_landmark_generator(
        landmark_model, onnx_dir / "landmark.onnx", source_sha256=sha["landmark_generator"]
    )


@pytest.fixture(scope="module")
def onnx_renderer(renderer_model, onnx_dir, sha) -> OnnxRenderer:
    """Dynamic-N renderer and reference encoder, exported through the cache folder."""
    return OnnxRenderer.from_torch(
        renderer_model, cache_dir=onnx_dir / "cache", source_sha256=sha["renderer"]
    )


@pytest.fixture(scope="module")
def fixed_n3_path(renderer_model, onnx_dir):
    return export_renderer(renderer_model, onnx_dir / "renderer_n3.onnx", n_refs=3, verify=False)


def renderer_golden(n: int) -> dict[str, np.ndarray]:
    return golden(f"golden_renderer_N{n}_seed1.npz")


def landmark_inputs() -> tuple[list[torch.Tensor], np.ndarray]:
    g = golden("golden_landmark_seed1.npz")
    args = [torch.from_numpy(g[k]) for k in ("T_mels", "T_pose", "Nl_pose", "Nl_content")]
    return args, g["predict_content"]


# --- landmark generator ------------------------------------------------------------------------------


def test_landmark_onnx_matches_golden_and_torch(landmark_model, landmark_onnx):
    gen = OnnxLandmarkGenerator(landmark_onnx)
    args, want = landmark_inputs()
    out = gen(*args)  # B = 2
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (10, 2, 57)
    with torch.no_grad():
        ref = landmark_model(*args)
    assert maxdiff(out, want) <= TOL
    assert maxdiff(out, ref) <= TOL
    one = gen(*[a[1:] for a in args])  # B = 1 (second row), numpy inputs accepted too
    assert one.shape == (5, 2, 57)
    assert maxdiff(one, want[5:]) <= TOL
    assert maxdiff(gen(*[a[1:].numpy() for a in args]), ref[5:]) <= TOL


def test_landmark_graph_is_standard_attention(landmark_onnx, sha):
    model = onnx.load(str(landmark_onnx))
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}
    assert {"MatMul", "Softmax"} <= ops  # attention spelled out, no fused kernel
    assert [i.name for i in model.graph.input] == ["mels", "pose", "ref_pose", "ref_content"]
    assert [o.name for o in model.graph.output] == ["content"]
    meta = read_metadata(landmark_onnx)
    assert meta["kind"] == "landmark_generator"
    assert meta["mouthpiece_format"] == ONNX_FORMAT_VERSION
    assert meta["source_sha256"] == sha["landmark_generator"]


def test_landmark_bad_shapes(landmark_onnx):
    gen = OnnxLandmarkGenerator(landmark_onnx)
    args, _ = landmark_inputs()
    with pytest.raises(ValueError, match="pose"):
        gen(args[0], args[1][:, :4], args[2], args[3])  # T = 4
    with pytest.raises(ValueError, match="other inputs have B=1"):
        gen(args[0][:1], args[1], args[2], args[3])  # batch sizes disagree


def test_export_prints_nothing_and_keeps_mode(landmark_model, tmp_path, capfd):
    landmark_model.train()
    try:
        export_landmark_generator(landmark_model, tmp_path / "lm.onnx", verify=False)
        assert landmark_model.training and all(m.training for m in landmark_model.modules())
    finally:
        landmark_model.eval()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# --- renderer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_ref", [1, 3])
def test_renderer_onnx_matches_golden(onnx_renderer, renderer_model, n_ref):
    g = renderer_golden(n_ref)
    onnx_renderer.set_references(torch.from_numpy(g["ref_imgs"][0]), torch.from_numpy(g["ref_sketches"][0]))
    out = onnx_renderer.render(torch.from_numpy(g["face"][:, 0]), g["target_sketches"], g["mel"][:, 0])
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.shape == (1, 3, 128, 128)
    assert maxdiff(out, g["generated_face"]) <= TOL

    # The bank computed in torch gives the same frames.
    fast = FastRenderer(renderer_model, fold_translation=True).eval()
    with torch.inference_mode():
        bank = fast.encode_references(
            torch.from_numpy(g["ref_imgs"][0]), torch.from_numpy(g["ref_sketches"][0])
        )
    onnx_renderer.set_bank(bank.hi, bank.h2, bank.h2_norm)
    again = onnx_renderer.render(g["face"][:, 0], g["target_sketches"], g["mel"][:, 0])
    assert maxdiff(again, g["generated_face"]) <= TOL


def test_renderer_batch_rows_independent(onnx_renderer):
    g = renderer_golden(3)
    onnx_renderer.set_references(g["ref_imgs"][0], g["ref_sketches"][0])
    face, sketches, mel = g["face"][:, 0], g["target_sketches"], g["mel"][:, 0]
    rows = (
        (face, sketches, mel),
        (face[..., ::-1].copy(), sketches[:, ::-1].copy(), mel * 0.5 - 1),  # a different frame
    )
    singles = [onnx_renderer.render(*row) for row in rows]
    both = onnx_renderer.render(*(np.concatenate(parts) for parts in zip(*rows, strict=True)))
    assert both.shape == (2, 3, 128, 128)
    assert maxdiff(singles[0], singles[1]) > 1e-3  # the rows really differ
    assert maxdiff(both[:1], singles[0]) <= 1e-5
    assert maxdiff(both[1:], singles[1]) <= 1e-5


def test_renderer_metadata_and_cache(onnx_renderer, renderer_model, onnx_dir, sha):
    meta = onnx_renderer.metadata
    assert meta["kind"] == "renderer"
    assert meta["n_refs"] == "dynamic"
    assert meta["mouthpiece_format"] == ONNX_FORMAT_VERSION
    assert meta["source_sha256"] == sha["renderer"]
    assert meta["fold_translation"] == "True"
    files = sorted((onnx_dir / "cache").glob("*.onnx"))
    assert [f.name.split("-")[0] for f in files] == ["reference_encoder", "renderer"]
    assert read_metadata(files[0])["kind"] == "reference_encoder"
    for f in files:
        onnx.checker.check_model(str(f))
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = OnnxRenderer.from_torch(
        renderer_model, cache_dir=onnx_dir / "cache", source_sha256=sha["renderer"]
    )
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # reused, not exported again
    assert again.n_refs is None


def test_renderer_fixed_n(fixed_n3_path, onnx_renderer):
    meta = read_metadata(fixed_n3_path)
    assert meta["kind"] == "renderer" and meta["n_refs"] == "3"
    encoder = next((fixed_n3_path.parent / "cache").glob("reference_encoder*.onnx"))
    fixed = OnnxRenderer(fixed_n3_path, encoder)
    assert fixed.n_refs == 3
    g = renderer_golden(3)
    fixed.set_references(g["ref_imgs"][0], g["ref_sketches"][0])
    out = fixed.render(g["face"][:, 0], g["target_sketches"], g["mel"][:, 0])
    assert maxdiff(out, g["generated_face"]) <= TOL
    g1 = renderer_golden(1)
    with pytest.raises(ValueError, match="N=3"):
        fixed.set_references(g1["ref_imgs"][0], g1["ref_sketches"][0])
    bank = [np.zeros((1, c, s, s), np.float32) for c, s in ((35, 128), (256, 64), (256, 64))]
    with pytest.raises(ValueError, match="N=3"):
        fixed.set_bank(*bank)


def test_renderer_bad_inputs(onnx_renderer):
    g = renderer_golden(3)
    face, sketches, mel = g["face"][:, 0], g["target_sketches"], g["mel"][:, 0]
    bare = OnnxRenderer(onnx_renderer._render.path)  # no encoder graph
    with pytest.raises(RuntimeError, match="set_references"):
        bare.render(face, sketches, mel)
    with pytest.raises(RuntimeError, match="set_bank"):
        bare.set_references(g["ref_imgs"][0], g["ref_sketches"][0])

    onnx_renderer.set_references(g["ref_imgs"][0], g["ref_sketches"][0])
    with pytest.raises(ValueError, match="face"):
        onnx_renderer.render(face[..., :64, :64], sketches, mel)  # wrong size
    with pytest.raises(ValueError, match="target_sketches"):
        onnx_renderer.render(face, sketches[:, :4], mel)  # 4 sketches
    with pytest.raises(ValueError, match="B=1"):
        onnx_renderer.render(face, np.concatenate([sketches, sketches]), mel)  # batch sizes disagree
    with pytest.raises(ValueError, match="mel"):
        onnx_renderer.render(face, sketches, mel[..., :8])
    with pytest.raises(ValueError, match="pairs"):
        onnx_renderer.set_references(g["ref_imgs"][0], g["ref_sketches"][0, :2])
    with pytest.raises(ValueError, match="ref_imgs"):
        onnx_renderer.set_references(g["ref_imgs"][0, :, :, :64], g["ref_sketches"][0, :, :, :64])
    bank = [np.zeros((n, c, s, s), np.float32) for n, c, s in ((3, 35, 128), (2, 256, 64), (3, 256, 64))]
    with pytest.raises(ValueError, match="number of references"):
        onnx_renderer.set_bank(*bank)
    bank = [np.zeros((3, c, s, s), np.float32) for c, s in ((32, 128), (256, 64), (256, 64))]
    with pytest.raises(ValueError, match="bank_hi"):
        onnx_renderer.set_bank(*bank)


def test_traceable_modulation_is_exact(renderer_model):
    """The out-of-place border correction used for export gives the eager module's numbers."""
    from models.onnx_export import _TraceableModulation

    fast = FastRenderer(renderer_model).eval()
    gen = torch.Generator().manual_seed(3)
    for mod, channels in ((fast._mod_half, 15), (fast._mod_full, 15)):
        m = torch.rand(2, channels, 16, 24, generator=gen)
        with torch.no_grad():
            want, got = mod(m), _TraceableModulation(mod)(m)
        for (g0, b0), (g1, b1) in zip(want, got, strict=True):
            assert torch.equal(g0, g1) and torch.equal(b0, b1)


def test_renderer_rejects_wrong_kind(landmark_onnx):
    with pytest.raises(ValueError, match="renderer"):
        OnnxRenderer(landmark_onnx)


# --- providers ---------------------------------------------------------------------------------------


def test_providers():
    assert providers("cpu") == ["CPUExecutionProvider"]
    assert providers(torch.device("cpu")) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unsupported device"):
        providers("mps")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        got = providers("cuda:0")
        assert got[0][0] == "CUDAExecutionProvider" and got[-1] == "CPUExecutionProvider"
    else:
        with pytest.raises(RuntimeError, match=r"mouthpiece\[gpu\]"):
            providers("cuda")
