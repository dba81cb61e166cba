"""The torch renderer backends: ``plain`` (the authors' mathematics as written), ``fast`` (references
encoded once per avatar, :class:`models.fast_renderer.FastRenderer`) and ``cuda-graph`` (``fast`` replayed
as CUDA graphs per batch size)."""

from __future__ import annotations

import copy

import torch

import models


class PlainTorchRenderer:
    """The authors' mathematics as written (every reference encoded and modulated per frame)."""

    name = "plain"

    def __init__(self, model: models.Renderer, dtype: torch.dtype = torch.float32):
        param = next(model.parameters())
        self.device = param.device
        self.dtype = dtype
        # A copy in another precision, so that the caller's model is left as it was.
        self.model = (model if param.dtype == dtype else copy.deepcopy(model).to(dtype)).eval()
        self._refs: tuple[torch.Tensor, torch.Tensor] | None = None

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, self.dtype, non_blocking=True)

    def set_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor) -> None:
        if ref_imgs.shape != ref_sketches.shape or ref_imgs.ndim != 4:
            raise ValueError(
                "references must be (N, 3, H, W) pairs, got "
                f"{tuple(ref_imgs.shape)} and {tuple(ref_sketches.shape)}"
            )
        self._refs = (self._in(ref_imgs), self._in(ref_sketches))

    @torch.inference_mode()
    def render(self, faces: torch.Tensor, target_sketches: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        if self._refs is None:
            raise RuntimeError("set_references() must be called before render()")
        B = faces.shape[0]
        imgs, sketches = self._refs
        generated, _ = self.model(
            self._in(faces)[:, None],  # (B, 1, 3, H, W)
            self._in(target_sketches),  # (B, 5, 3, H, W)
            imgs.expand(B, *imgs.shape),  # (B, N, 3, H, W)
            sketches.expand(B, *sketches.shape),  # (B, N, 3, H, W)
            self._in(mels)[:, None],  # (B, 1, 1, 80, 16)
        )
        return generated.float()  # (B, 3, H, W)


class FastTorchRenderer(PlainTorchRenderer):
    """:class:`models.fast_renderer.FastRenderer`: the references encoded once into a bank, the
    alignment's SPADE modulations computed once per frame and shared by all N references, folded
    modulation convolutions. Same outputs as the plain model within float rounding (tested)."""

    name = "fast"

    def __init__(
        self, model: models.Renderer, dtype: torch.dtype = torch.float32, fold_translation: bool = True
    ):
        from models.fast_renderer import FastRenderer

        super().__init__(model, dtype)
        self.fast = FastRenderer(self.model, fold_alignment=True, fold_translation=fold_translation).eval()
        self.bank = None

    @torch.inference_mode()
    def set_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor) -> None:
        super().set_references(ref_imgs, ref_sketches)
        self.bank = self.fast.encode_references(*self._refs)

    @torch.inference_mode()
    def render(self, faces: torch.Tensor, target_sketches: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("set_references() must be called before render()")
        return self.fast(self.bank, self._in(faces), self._in(target_sketches), self._in(mels)).float()


class CudaGraphRenderer(FastTorchRenderer):
    """The fast renderer captured in CUDA graphs: one graph per batch size, static input and output
    buffers that each call copies into and out of, the bank at a fixed address (a new avatar with
    the same N is copied into it, so the graphs stay valid). Needs a CUDA device."""

    name = "cuda-graph"

    def __init__(self, model: models.Renderer, dtype: torch.dtype = torch.float16, warmup: int = 3):
        super().__init__(model, dtype)
        if self.device.type != "cuda":
            raise ValueError("the cuda-graph backend needs the renderer on a CUDA device (--device cuda)")
        self.warmup = warmup
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}

    @torch.inference_mode()
    def set_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor) -> None:
        old = self.bank
        PlainTorchRenderer.set_references(self, ref_imgs, ref_sketches)
        new = self.fast.encode_references(*self._refs)
        if old is not None and old.hi.shape == new.hi.shape:
            for dst, src in ((old.hi, new.hi), (old.h2, new.h2), (old.h2_norm, new.h2_norm)):
                dst.copy_(src)  # same addresses: captured graphs read the new references
        else:
            self.bank = new
            self._graphs.clear()

    def _graph(self, B: int):
        if B not in self._graphs:
            dev, dt = self.device, self.dtype
            static = (
                torch.zeros(B, 3, 128, 128, device=dev, dtype=dt),
                torch.zeros(B, 5, 3, 128, 128, device=dev, dtype=dt),
                torch.zeros(B, 1, 80, 16, device=dev, dtype=dt),
            )
            stream = torch.cuda.Stream(dev)
            stream.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(stream):  # warm-up builds the cached constants off the graph
                for _ in range(self.warmup):
                    self.fast(self.bank, *static)
            torch.cuda.current_stream(dev).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self.fast(self.bank, *static)
            self._graphs[B] = (graph, static, out)
        return self._graphs[B]

    @torch.inference_mode()
    def render(self, faces: torch.Tensor, target_sketches: torch.Tensor, mels: torch.Tensor) -> torch.Tensor:
        if self.bank is None:
            raise RuntimeError("set_references() must be called before render()")
        graph, (f, s, m), out = self._graph(faces.shape[0])
        f.copy_(faces, non_blocking=True)
        s.copy_(target_sketches, non_blocking=True)
        m.copy_(mels, non_blocking=True)
        graph.replay()
        return out.float()  # a new tensor: the static output is overwritten by the next replay
