"""Renderer backends behind one interface: plain, fast, CUDA graphs (GPU only), precisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.synth.backends import BACKENDS, DTYPES, CudaGraphRenderer, make_renderer_backend
from tests.conftest import golden

CUDA = torch.cuda.is_available()


def _golden_call(n: int):
    g = golden(f"golden_renderer_N{n}_seed1.npz")
    t = {k: torch.from_numpy(g[k]) for k in g}
    refs = (t["ref_imgs"][0], t["ref_sketches"][0])
    args = (t["face"][:, 0], t["target_sketches"], t["mel"][:, 0])
    return refs, args, g["generated_face"]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


@pytest.mark.parametrize("name", ["plain", "fast"])
@pytest.mark.parametrize("n", [1, 3])
def test_cpu_backends_reproduce_the_golden_face(renderer_model, name, n):
    refs, args, expected = _golden_call(n)
    backend = make_renderer_backend(name, renderer_model)
    backend.set_references(*refs)
    out = backend.render(*args)
    assert out.dtype == torch.float32 and out.shape == (1, 3, 128, 128)
    assert float(np.abs(out.numpy() - expected).max()) <= 1e-4


def test_backends_render_batches_row_by_row(renderer_model):
    refs, (face, sketches, mel), _ = _golden_call(3)
    backend = make_renderer_backend("fast", renderer_model)
    backend.set_references(*refs)
    gen = torch.Generator().manual_seed(3)
    faces = torch.cat([face, torch.rand(1, 3, 128, 128, generator=gen)])
    sk = torch.cat([sketches, sketches.flip(-1)])
    mels = torch.cat([mel, mel * 0.5])
    both = backend.render(faces, sk, mels)
    second = backend.render(faces[1:], sk[1:], mels[1:])
    assert float((both[1:] - second).abs().max()) <= 1e-5


def test_a_lower_precision_backend_leaves_the_callers_model_alone(renderer_model):
    before = renderer_model.flow_module.conv1.weight.dtype
    backend = make_renderer_backend("fast", renderer_model, torch.bfloat16)
    assert (
        backend.model is not renderer_model and backend.fast.flow_module.conv1.weight.dtype == torch.bfloat16
    )
    assert renderer_model.flow_module.conv1.weight.dtype == before == torch.float32
    assert set(DTYPES) == {"fp32", "fp16", "bf16"}


def test_unknown_backend_and_cuda_graph_without_cuda_are_clear_errors(renderer_model):
    with pytest.raises(ValueError, match="unknown renderer backend 'nope'; choose one of"):
        make_renderer_backend("nope", renderer_model)
    assert "cuda-graph" in BACKENDS
    if not CUDA:
        with pytest.raises(ValueError, match="needs the renderer on a CUDA device"):
            CudaGraphRenderer(renderer_model)
    backend = make_renderer_backend("fast", renderer_model)
    with pytest.raises(RuntimeError, match="set_references"):
        backend.render(torch.zeros(1, 3, 128, 128), torch.zeros(1, 5, 3, 128, 128), torch.zeros(1, 1, 80, 16))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graph_equals_eager_on_gpu(renderer_model, dtype):
    import copy

    model = copy.deepcopy(renderer_model).cuda()
    refs, (face, sketches, mel), expected = _golden_call(3)
    eager = make_renderer_backend("fast", model, dtype)
    graph = make_renderer_backend("cuda-graph", model, dtype)
    for b in (eager, graph):
        b.set_references(*(r.cuda() for r in refs))
    gen = torch.Generator().manual_seed(0)
    for trial in range(3):  # replays with new inputs copied into the static buffers
        f = face if trial == 0 else torch.rand(1, 3, 128, 128, generator=gen)
        args = (f.cuda(), sketches.cuda(), mel.cuda())
        out_g, out_e = graph.render(*args), eager.render(*args)
        assert float((out_g - out_e).abs().max()) <= (1e-5 if dtype == torch.float32 else 2e-3)
    out = graph.render(face.cuda(), sketches.cuda(), mel.cuda()).cpu().numpy()
    assert _psnr(out, expected) >= (80 if dtype == torch.float32 else 40)
    # a new avatar with the same N is copied into the captured bank
    graph.set_references(*(r.flip(-1).cuda() for r in refs))
    eager.set_references(*(r.flip(-1).cuda() for r in refs))
    args = (face.cuda(), sketches.cuda(), mel.cuda())
    assert float((graph.render(*args) - eager.render(*args)).abs().max()) <= (
        1e-5 if dtype == torch.float32 else 2e-3
    )
