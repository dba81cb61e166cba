"""VGG19 perceptual and style loss of IP_LAP's renderer training (IPLAP_FACTS.md sections 1 and 9).

The renderer checkpoint carries ImageNet VGG19 ``features`` weights under
``perceptual.model.network.<i>``; :func:`vgg19_features` rebuilds the torchvision layer list so
that those names load as they are (torchvision itself is not needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# torchvision vgg19 "E" configuration: channels per conv, "M" = max pool.
_VGG19_CFG = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]

#: Index in ``features`` of the ReLU outputs used by the loss.
VGG19_LAYERS = {"relu_1_1": 1, "relu_2_1": 6, "relu_3_1": 11, "relu_4_1": 20, "relu_5_1": 29}
PERCEPTUAL_PREFIX = "perceptual.model.network."

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    """``torchvision.models.vgg19().features`` (37 modules, conv indices 0, 2, 5, ..., 34)."""
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(cin, v, kernel_size=3, padding=1), nn.ReLU()]
            cin = v
    return nn.Sequential(*layers)


def gram(x: torch.Tensor) -> torch.Tensor:
    b, ch, h, w = x.shape
    f = x.reshape(b, ch, h * w)
    return f @ f.transpose(1, 2) / (h * w * ch)  # (b, ch, ch)


class PerceptualLoss(nn.Module):
    """L1 between VGG19 features at relu1_1..relu5_1 over ``num_scales`` scales (bilinear x0.5).

    Inputs are images in [0, 1]; the ImageNet normalisation is applied as the authors did, as if
    they were in [-1, 1] (``(x + 1) / 2``, then mean/std). With ``style_weight`` > 0 the L1
    between Gram matrices at the first scale, times ``style_weight``, is added.
    """

    def __init__(self, num_scales: int = 2, layers: tuple[str, ...] = tuple(VGG19_LAYERS)):
        super().__init__()
        self.network = vgg19_features()
        self.layer_ids = [VGG19_LAYERS[name] for name in layers]
        self.num_scales = num_scales
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:  # the loss network always runs in eval mode
        return super().train(False)

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load ``perceptual.model.network.*`` tensors (prefix optional), strictly."""
        sd = {k.removeprefix(PERCEPTUAL_PREFIX): v for k, v in tensors.items()}
        self.network.load_state_dict(sd, strict=True)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, last = [], max(self.layer_ids)
        for i, layer in enumerate(self.network):
            x = layer(x)
            if i in self.layer_ids:
                out.append(x)
            if i == last:
                break
        return out

    def forward(self, inp: torch.Tensor, target: torch.Tensor, style_weight: float = 0.0) -> torch.Tensor:
        # inp, target: (B, 3, H, W) in [0, 1]
        inp = ((inp + 1) / 2 - self.mean) / self.std
        target = ((target + 1) / 2 - self.mean) / self.std
        loss = inp.new_zeros(())
        style = inp.new_zeros(())
        for scale in range(self.num_scales):
            for fi, ft in zip(self.features(inp), self.features(target), strict=True):
                ft = ft.detach()
                loss = loss + F.l1_loss(fi, ft)
                if style_weight and scale == 0:
                    style = style + F.l1_loss(gram(fi), gram(ft))
            if scale != self.num_scales - 1:
                kw = dict(mode="bilinear", scale_factor=0.5, align_corners=False, recompute_scale_factor=True)
                inp, target = F.interpolate(inp, **kw), F.interpolate(target, **kw)
        return loss + style * style_weight if style_weight else loss
