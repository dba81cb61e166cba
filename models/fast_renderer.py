"""Inference renderer that shares work across frames and references (same mathematics as ``Renderer``).

The plain :class:`models.renderer.Renderer` recomputes, for every frame and every one of the N
references,

* the reference encoder ``h1 = ReLU(BN(conv1(cat(img, sketch))))``, ``h2 = ReLU(BN(conv2(h1)))``,
  which depends on the references only, and
* the SPADE modulation ``(gamma, beta) = (gamma(conv1(m)), beta(conv1(m)))`` of the six SPADE layers
  of the alignment module, which depends on the frame's five driving sketches only and is the same
  for all N references (the plain model ``repeat_interleave``-s the sketches N times first).

:class:`FastRenderer` splits the work accordingly:

1. :meth:`FastRenderer.encode_references` runs once per avatar and returns a :class:`ReferenceBank`
   (reference images, h1, h2, and the instance norm of h2, which is the only per-reference input of
   the first SPADE layer of ``spade_layer_1``).
2. :meth:`FastRenderer.forward` computes the six modulations once per frame (batch B), runs the
   per-reference part (instance norms, ``conv_1``/``conv_2`` of the SPADE blocks, pixel shuffle,
   ``conv_4``, ``conv_5``, the warps) as one batch of N*B rows with ``gamma``/``beta`` broadcast over
   the references instead of copied, fuses the references as IPLAP_FACTS.md section 7 step 7, and
   runs the translation module.

Why it is exact: every convolution, norm and activation acts on each batch row independently, so
computing a value that is identical for several rows once and broadcasting it gives the same
numbers. Row layout changes (reference-major rows, warping N*B sampling grids from N source maps,
one ``grid_sample`` for h1 and the image together, the reference sum taken over another axis) change
at most the order of floating-point additions. SPADE's ``n + n * gamma + beta`` is evaluated as
``n * (1 + gamma) + beta`` in one fused pass (``1 + gamma`` once per frame), followed by an in-place
LeakyReLU: one rounding differs, and it saves ~10% at N = 25 on CPU (memory traffic over N*B rows).

Folded modulation (``fold_alignment``, on by default; ``fold_translation``, off by default): a SPADE
modulation ``gamma(conv1(m))`` is two 3x3 convolutions with no non-linearity between them, i.e. one
linear map of ``m``. Away from the image border it equals a single 5x5 convolution of ``m`` with the
composed kernel ``K = sum_h Wg[:, h] (*) W1[h]`` and bias ``bg + sum Wg b1``; on the 1-pixel border
the plain model zero-pads the *hidden* map ``c = conv1(m)``, which the 5x5 convolution does not, so
the terms that read ``c`` outside the image (computed exactly from ``m``'s edge rows/columns) are
subtracted there. This is the same real-number map (exact in float64 to 1e-14) with the products
distributed differently; it costs ``Cm*2C*25`` instead of ``Cm*256*9 + 256*2C*9`` multiply-adds per
pixel: ~6x fewer for the alignment's driving sketches (Cm = 15), ~3.6x and ~30x fewer for the
translation's ``spade_2`` (h1, Cm = 32) and ``spade_4`` (reference, Cm = 3). The translation's
``spade_1`` (Cm = 256) would get slower and is never folded. ``fold_translation=False`` calls the
plain translation module unchanged. The folded kernels are constants: no gradient reaches the folded
layers' ``conv1``/``gamma``/``beta`` weights, so turn folding off to fine-tune through this class.

The forward pass has static shapes, no data-dependent control flow and no host synchronisation; its
constants (identity sampling grid, folded kernels) are built on first use and cached per device and
dtype (the kernels also per weight version), so it can be traced (``torch.jit.trace``,
``torch.export``), exported or captured in a graph once :meth:`FastRenderer.forward` has run once
eagerly on the target device and dtype.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import SPADEBlock, SPADELayer
from .renderer import WEIGHT_EPS, Renderer, nearest

Modulation = tuple[torch.Tensor, torch.Tensor]  # (gamma, beta), each (B, C, h, w)


@dataclass
class ReferenceBank:
    """Everything of the alignment module that depends on the N references only.

    ``h1`` and ``imgs`` are channel views of ``hi`` (N, 32 + 3, H, W): both are warped with the same
    full-resolution deformation, so the forward pass samples them with a single ``grid_sample``.
    """

    hi: torch.Tensor  # (N, 35, H, W) = cat(h1, imgs)
    h1: torch.Tensor  # (N, 32, H, W)
    imgs: torch.Tensor  # (N, 3, H, W)
    h2: torch.Tensor  # (N, 256, H/2, W/2)
    h2_norm: torch.Tensor  # (N, 256, H/2, W/2) InstanceNorm(h2), spade_layer_1.spade_layer_1's input

    @property
    def n_refs(self) -> int:
        return self.h2.shape[0]

    def to(self, *args, **kwargs) -> ReferenceBank:
        hi = self.hi.to(*args, **kwargs)
        c = self.h1.shape[1]
        h2, h2_norm = self.h2.to(*args, **kwargs), self.h2_norm.to(*args, **kwargs)
        return ReferenceBank(hi, hi[:, :c], hi[:, c:], h2, h2_norm)


@contextmanager
def _constant():
    """Context for building cached constants: normal (not inference) tensors without autograd history,
    so that later calls in any mode (inference, no_grad, autograd, tracing) can use them."""
    with torch.inference_mode(False), torch.no_grad():  # inference_mode(False) turns grad mode on
        yield


class SharedModulation:
    """(gamma, beta) of several SPADE layers that read the same modulation map ``m``.

    ``fold=False``: ``layer.modulation(m)`` per layer (the plain computation).
    ``fold=True``: one 5x5 convolution with the composed kernels of all layers plus an exact border
    correction (see the module docstring). The composed kernels are computed in float64 from the
    layers' current weights on first use and cached per (device, dtype, weight versions).
    """

    def __init__(self, layers: list[SPADELayer], fold: bool):
        self.layers = list(layers)
        self.fold = fold
        self._cache: tuple | None = None
        if fold:
            for layer in self.layers:
                for conv in (layer.conv1, layer.gamma, layer.beta):
                    if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
                        raise ValueError("folding needs 3x3, stride 1, padding 1 convolutions")
            c = {layer.gamma.out_channels for layer in self.layers}
            hid = {layer.conv1.out_channels for layer in self.layers}
            if len(c) != 1 or len(hid) != 1:
                raise ValueError("folded layers must have equal channel and hidden sizes")

    def _params(self) -> list[torch.Tensor]:
        convs = [conv for layer in self.layers for conv in (layer.conv1, layer.gamma, layer.beta)]
        return [p for conv in convs for p in conv.parameters()]

    def _folded(self) -> tuple[torch.Tensor, ...]:
        if self._cache is not None and torch.compiler.is_compiling():
            return self._cache[1]  # export/compile: the kernels built by the last eager call
        # Inference tensors (weights made or cast under inference_mode) have no version counter: an
        # in-place change of those is not seen; call FastRenderer.clear_cache() after one.
        key = tuple(
            (p.device, p.dtype, p.data_ptr(), 0 if p.is_inference() else p._version) for p in self._params()
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._fold())
        return self._cache[1]

    def _fold(self) -> tuple[torch.Tensor, ...]:
        ref = self.layers[0].conv1.weight
        n_layers = len(self.layers)
        with _constant():
            f64 = torch.float64
            w1 = torch.cat([layer.conv1.weight for layer in self.layers]).to(f64)  # (L*hid, Cm, 3, 3)
            b1 = torch.cat([layer.conv1.bias for layer in self.layers]).to(f64)  # (L*hid,)
            wg = torch.cat([torch.cat([la.gamma.weight, la.beta.weight]) for la in self.layers]).to(f64)
            bg = torch.cat([torch.cat([la.gamma.bias, la.beta.bias]) for la in self.layers]).to(f64)
            out2, hid = wg.shape[0] // n_layers, w1.shape[0] // n_layers  # 2C, hidden
            wg_l = wg.reshape(n_layers, out2, hid, 3, 3)
            w1_l = w1.reshape(n_layers, hid, -1, 3, 3)
            k = torch.zeros(n_layers, out2, w1.shape[1], 5, 5, dtype=f64, device=ref.device)
            for a in range(3):
                for b in range(3):  # correlation of correlations: offsets add up
                    k[..., a : a + 3, b : b + 3] += torch.einsum("loh,lhixy->loixy", wg_l[..., a, b], w1_l)
            bias = bg + torch.einsum("lohxy,lh->lo", wg_l, b1.reshape(n_layers, hid)).reshape(-1)
            cast = {"device": ref.device, "dtype": ref.dtype}
            return (
                k.reshape(-1, w1.shape[1], 5, 5).to(**cast),  # (L*2C, Cm, 5, 5) composed kernels
                bias.to(**cast),  # (L*2C,)
                w1.to(**cast),
                b1.to(**cast),
                wg.to(**cast),  # (L*2C, hid, 3, 3), applied per layer with groups=L
            )

    def __call__(self, m: torch.Tensor) -> list[Modulation]:
        """m (B, Cm, h, w) -> [(gamma, beta)] per layer, each (B, C, h, w)."""
        if not self.fold:
            return [layer.modulation(m) for layer in self.layers]
        k, bias, w1, b1, wg = self._folded()
        n_layers = len(self.layers)
        out = F.conv2d(m, k, bias, padding=2)  # (B, L*2C, h, w), exact away from the border
        # conv1(m) on the ring just outside the image, where the plain model zero-pads instead:
        top = F.conv2d(m[..., :1, :], w1[:, :, 2:3, :], b1, padding=(0, 2))  # (B, L*hid, 1, w+2)
        bottom = F.conv2d(m[..., -1:, :], w1[:, :, 0:1, :], b1, padding=(0, 2))  # (B, L*hid, 1, w+2)
        left = F.conv2d(m[..., :, :1], w1[:, :, :, 2:3], b1, padding=(1, 0))  # (B, L*hid, h, 1)
        right = F.conv2d(m[..., :, -1:], w1[:, :, :, 0:1], b1, padding=(1, 0))  # (B, L*hid, h, 1)
        # ... and the gamma/beta taps that read it (corners once, through top/bottom).
        g = n_layers
        out[..., :1, :] -= F.conv2d(top, wg[:, :, 0:1, :], groups=g)  # (B, L*2C, 1, w)
        out[..., -1:, :] -= F.conv2d(bottom, wg[:, :, 2:3, :], groups=g)  # (B, L*2C, 1, w)
        out[..., :, :1] -= F.conv2d(left, wg[:, :, :, 0:1], padding=(1, 0), groups=g)  # (B, L*2C, h, 1)
        out[..., :, -1:] -= F.conv2d(right, wg[:, :, :, 2:3], padding=(1, 0), groups=g)  # (B, L*2C, h, 1)
        gamma_beta = out.unflatten(1, (n_layers, 2, -1))  # (B, L, 2, C, h, w), views
        return [(gamma_beta[:, i, 0], gamma_beta[:, i, 1]) for i in range(n_layers)]


def _modulate(n: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, refs: int) -> torch.Tensor:
    """``leaky_relu(n + n * gamma + beta, 0.2)`` (SPADE layer + activation), (gamma, beta) shared by
    all references.

    n: (N*B, C, h, w) reference-major rows, or (N, C, h, w) when it depends on the references only;
    gamma, beta: (B, C, h, w). Returns (N*B, C, h, w) without materialising N copies of gamma/beta.
    Computed as ``n * (1 + gamma) + beta`` (one fused pass, ``1 + gamma`` once per frame) and an
    in-place activation: two passes over the N*B rows instead of four, and one allocation.
    """
    n = n.reshape(refs, -1, *n.shape[1:])  # (N, B or 1, C, h, w)
    out = torch.addcmul(beta, n, 1 + gamma)  # (N, B, C, h, w): gamma, beta broadcast over references
    # flatten, not reshape(refs * B, ...): a traced graph must not record B as a constant
    return F.leaky_relu(out, 0.2, inplace=True).flatten(0, 1)  # (N*B, C, h, w)


def _spade_block(
    block: SPADEBlock,
    x: torch.Tensor | None,
    mods: list[Modulation],
    refs: int = 1,
    norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """``SPADEBlock.forward`` with precomputed modulations; ``norm`` replaces ``IN(x)`` when known."""
    (g1, b1), (g2, b2) = mods
    n = block.spade_layer_1.instance_norm(x) if norm is None else norm
    x = block.conv_1(_modulate(n, g1, b1, refs))  # (N*B, C, h, w)
    n = block.spade_layer_2.instance_norm(x)
    return block.conv_2(_modulate(n, g2, b2, refs))  # (N*B, C, h, w)


def _warp_shared(src: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Warp N source maps with N*B deformations, without copying the sources B times.

    src: (N, C, h, w); deformation: (N*B, h, w, 2) reference-major. ``grid_sample`` evaluates each
    output location independently, so stacking the B grids of reference n along the height axis
    ((N, B*h, w, 2)) gives exactly the rows ``warp(src[n], deformation[n*B + b])``.
    Returns (N, C, B, h, w).
    """
    refs, c, h, w = src.shape
    grid = deformation.reshape(refs, -1, w, 2)  # (N, B*h, w, 2)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(refs, c, -1, h, w)  # (N, C, B, h, w)


class FastRenderer(nn.Module):
    """The IP_LAP renderer for inference with precomputed references (see the module docstring).

    Built from a loaded :class:`models.Renderer`; ``flow_module`` and ``translation`` are the same
    module objects (shared parameters, no copies), so moving or casting the plain model moves this
    one too (cached constants follow on the next call).

        fast = FastRenderer(renderer).eval()
        bank = fast.encode_references(ref_imgs, ref_sketches)  # (N, 3, H, W) each, once per avatar
        generated = fast(bank, face, target_sketches, mel)  # (B, 3, H, W) per batch of frames
    """

    def __init__(self, renderer: Renderer, fold_alignment: bool = True, fold_translation: bool = False):
        super().__init__()
        self.flow_module = renderer.flow_module
        self.translation = renderer.translation
        self.fold_alignment = fold_alignment
        self.fold_translation = fold_translation
        fm, tr = self.flow_module, self.translation

        def layers(*blocks: SPADEBlock) -> list[SPADELayer]:
            return [layer for b in blocks for layer in (b.spade_layer_1, b.spade_layer_2)]

        # Not submodules: they only hold references to the shared layers.
        self._mod_half = SharedModulation(layers(fm.spade_layer_1, fm.spade_layer_2), fold_alignment)
        self._mod_full = SharedModulation(layers(fm.spade_layer_4), fold_alignment)
        self._mod_h1 = SharedModulation(layers(tr.spade_2), fold_translation)
        self._mod_ref = SharedModulation(layers(tr.spade_4), fold_translation)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _param(self) -> torch.Tensor:
        return self.flow_module.conv1.weight

    def clear_cache(self) -> None:
        """Drop the cached grids and folded kernels (rebuilt on the next call). Only needed after
        changing weights in place under ``inference_mode``; other changes are detected."""
        self._grids.clear()
        for mod in (self._mod_half, self._mod_full, self._mod_h1, self._mod_ref):
            mod._cache = None

    def _identity_grid(self, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(2, h, w) identity sampling grid (x, y) in [-1, 1] and the flow scale (1, 2, 1, 1), cached."""
        key = (h, w, like.device, like.dtype)
        if key not in self._grids:
            with _constant():
                x = 2 * (torch.arange(w, device=like.device, dtype=like.dtype) / (w - 1)) - 1
                y = 2 * (torch.arange(h, device=like.device, dtype=like.dtype) / (h - 1)) - 1
                grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)])  # (2, h, w)
                scale = torch.tensor([w - 1, h - 1], device=like.device, dtype=like.dtype)
                self._grids[key] = (grid, scale.reshape(1, 2, 1, 1))
        return self._grids[key]

    def _deformation(self, flow: torch.Tensor) -> torch.Tensor:
        """``flow_to_deformation`` in NCHW: (R, 2, h, w) pixels -> (R, 2, h, w) grid in [-1, 1] (x, y).

        The same per-element operations as the plain function: ``grid + 2 * (flow / (size - 1))``."""
        grid, scale = self._identity_grid(flow.shape[-2], flow.shape[-1], flow)
        return grid + 2 * (flow / scale)

    @torch.no_grad()
    def encode_references(self, ref_imgs: torch.Tensor, ref_sketches: torch.Tensor) -> ReferenceBank:
        """(N, 3, H, W) reference images and sketches -> :class:`ReferenceBank` (model's device/dtype)."""
        if ref_imgs.ndim != 4 or ref_imgs.shape != ref_sketches.shape:
            raise ValueError(
                "references must be (N, 3, H, W) pairs, got "
                f"{tuple(ref_imgs.shape)} and {tuple(ref_sketches.shape)}"
            )
        p = self._param()
        imgs = ref_imgs.to(p.device, p.dtype)
        h1, h2 = self.flow_module.encode_references(imgs, ref_sketches.to(p.device, p.dtype))
        hi = torch.cat([h1, imgs], dim=1)  # (N, 35, H, W)
        h2_norm = self.flow_module.spade_layer_1.spade_layer_1.instance_norm(h2)  # (N, 256, H/2, W/2)
        c = h1.shape[1]
        return ReferenceBank(hi=hi, h1=hi[:, :c], imgs=hi[:, c:], h2=h2, h2_norm=h2_norm)

    def align(
        self, bank: ReferenceBank, target_sketches: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``FlowModule.forward`` for a bank: (B, 5, 3, H, W) -> fused h1, h2 and warped reference.

        Per-reference rows are reference-major: row ``n * B + b`` is reference n, frame b.
        """
        fm = self.flow_module
        refs = bank.n_refs
        B = target_sketches.shape[0]
        H, W = target_sketches.shape[-2:]
        half = (H // 2, W // 2)

        # Once per frame, shared by all N references.
        driving = target_sketches.reshape(B, -1, H, W)  # (B, 15, H, W), sketch-major channels
        mod_half = self._mod_half(nearest(driving, half))  # 4 x (gamma, beta), (B, 256, H/2, W/2)
        mod_full = self._mod_full(driving)  # 2 x (gamma, beta), (B, 64, H, W)

        # Per reference and frame: N*B rows.
        s = _spade_block(fm.spade_layer_1, None, mod_half[:2], refs, bank.h2_norm)  # (N*B, 256, H/2, W/2)
        s = _spade_block(fm.spade_layer_2, s, mod_half[2:], refs)  # (N*B, 256, H/2, W/2)
        s = fm.pixel_shuffle_1(s)  # (N*B, 64, H, W)
        s = _spade_block(fm.spade_layer_4, s, mod_full, refs)  # (N*B, 64, H, W)

        deformation = self._deformation(fm.conv_4(s))  # (N*B, 2, H, W), NCHW
        weight = fm.conv_5(s)  # (N*B, 1, H, W)
        weight_half = nearest(weight, half)  # (N*B, 1, H/2, W/2)
        deformation_half = F.interpolate(deformation, size=half, mode="bilinear", align_corners=False)

        # Weighted fusion over the references (IPLAP_FACTS.md section 7, step 7).
        weight = weight.reshape(refs, B, 1, H, W).transpose(1, 2)  # (N, 1, B, H, W)
        weight_half = weight_half.reshape(refs, B, 1, *half).transpose(1, 2)  # (N, 1, B, H/2, W/2)
        denom = weight.sum(dim=0) + WEIGHT_EPS  # (1, B, H, W)
        hi = _warp_shared(bank.hi, deformation.permute(0, 2, 3, 1))  # (N, 35, B, H, W)
        hi = ((hi * weight).sum(dim=0) / denom).transpose(0, 1)  # (B, 35, H, W)
        h2 = _warp_shared(bank.h2, deformation_half.permute(0, 2, 3, 1))  # (N, 256, B, H/2, W/2)
        h2 = ((h2 * weight_half).sum(dim=0) / nearest(denom, half)).transpose(0, 1)  # (B, 256, H/2, W/2)
        c = bank.h1.shape[1]
        return hi[:, :c], h2, hi[:, c:]  # (B, 32, H, W), (B, 256, H/2, W/2), (B, 3, H, W)

    def translate(
        self,
        face: torch.Tensor,  # (B, 3, H, W)
        sketches: torch.Tensor,  # (B, 15, H, W)
        ref: torch.Tensor,  # (B, 3, H, W)
        h1: torch.Tensor,  # (B, 32, H, W)
        h2: torch.Tensor,  # (B, 256, H/2, W/2)
        mel: torch.Tensor,  # (B, 1, 80, 16)
    ) -> torch.Tensor:
        """``Translation.forward``; with ``fold_translation`` spade_2/spade_4 use folded modulations."""
        tr = self.translation
        if not self.fold_translation:
            return tr(face, sketches, ref, h1, h2, mel)
        x = torch.cat([tr.mask_lower_half(face), sketches], dim=1)  # (B, 18, H, W)
        x = F.relu(tr.conv1_bn(tr.conv1(x)))  # (B, 32, H, W)
        x = F.relu(tr.conv2_bn(tr.conv2(x)))  # (B, 256, H/2, W/2)
        a = tr.audio_encoder(mel).flatten(1)  # (B, 512)
        x = tr.adain_1(tr.spade_1(x, h2), a)  # (B, 256, H/2, W/2)
        x = tr.pixel_suffle_1(x)  # (B, 64, H, W)
        x = tr.adain_2(_spade_block(tr.spade_2, x, self._mod_h1(h1)), a)  # (B, 64, H, W)
        x = _spade_block(tr.spade_4, x, self._mod_ref(ref))  # (B, 64, H, W)
        return torch.sigmoid(tr.conv_last(F.leaky_relu(x, 0.01)))  # (B, 3, H, W)

    def forward(
        self,
        bank: ReferenceBank,
        face: torch.Tensor,  # (B, 3, H, W) the target frame's face crop
        target_sketches: torch.Tensor,  # (B, 5, 3, H, W)
        mel: torch.Tensor,  # (B, 1, 80, 16)
        return_warped: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Generated faces (B, 3, H, W), and the fused warped reference (B, 3, H, W) if asked."""
        B, _, _, H, W = target_sketches.shape
        h1, h2, ref = self.align(bank, target_sketches)
        generated = self.translate(face, target_sketches.reshape(B, -1, H, W), ref, h1, h2, mel)
        return (generated, ref) if return_warped else generated  # (B, 3, H, W)
