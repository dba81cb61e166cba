"""Pixel metrics without weights: PSNR and SSIM (Wang et al. 2004, per channel, 'valid' window)
of two images of the same shape; uint8 images have the range 255, float images 1.0."""

from __future__ import annotations

import math

import cv2
import numpy as np


def _pair(a: np.ndarray, b: np.ndarray, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("images are empty")
    if data_range is None:
        if a.dtype == np.uint8 and b.dtype == np.uint8:
            data_range = 255.0
        elif np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating):
            data_range = 1.0
        else:
            raise ValueError(f"give data_range for images of dtype {a.dtype} and {b.dtype}")
    return a.astype(np.float64), b.astype(np.float64), float(data_range)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(R^2 / MSE)``, MSE over every pixel and channel.

    ``R`` is 255 for uint8 images and 1.0 for float images unless ``data_range`` says otherwise.
    Identical images give ``inf``.
    """
    x, y, r = _pair(a, b, data_range)
    mse = float(np.mean((x - y) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(r * r / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` (x and y), keeping only the positions where the whole
    window lies inside the image (MATLAB ``filter2(..., 'valid')``)."""
    r = len(g) // 2
    out = cv2.sepFilter2D(img, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)
    return out[r : img.shape[0] - r, r : img.shape[1] - r]


def _ssim_channel(x: np.ndarray, y: np.ndarray, r: float, g: np.ndarray) -> float:
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window (sigma 1.5), K1 = 0.01,
    K2 = 0.03, population (co)variances, mean over the positions where the window fits inside the
    image ('valid'). Colour images: SSIM of each channel separately, then the mean of the channels.

    ``R`` (the dynamic range) is 255 for uint8 and 1.0 for float images unless ``data_range`` says
    otherwise. Identical images give 1.0. Images must be at least 11x11.
    """
    x, y, r = _pair(a, b, data_range)
    if x.ndim not in (2, 3) or x.shape[0] < 11 or x.shape[1] < 11:
        raise ValueError(f"SSIM needs (H, W) or (H, W, C) images of at least 11x11, got {x.shape}")
    g = _gaussian_1d()
    if x.ndim == 2:
        return _ssim_channel(x, y, r, g)
    return float(np.mean([_ssim_channel(x[..., c], y[..., c], r, g) for c in range(x.shape[2])]))
