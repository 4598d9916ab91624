"""Helpers shared by the stand-in generators: seeded draws, the ``.npz`` cache, separable blurs."""
from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def _bernoulli(g: torch.Generator, n: int, p: float) -> torch.Tensor:
    return torch.rand(n, generator=g) < p


def _balanced_labels(n: int, classes: int, g: torch.Generator) -> torch.Tensor:
    """``n`` labels with counts differing by at most one, in random order."""
    labels = torch.arange(n, dtype=torch.int64) % classes
    return labels[torch.randperm(n, generator=g)]


def _cache_file(cache_dir: Optional[Path], stem: str) -> Optional[Path]:
    if cache_dir is None:
        return None
    return Path(cache_dir) / f"{stem}.npz"


def _load_cached(path: Optional[Path]) -> Optional[dict]:
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception:  # corrupt / partial cache file: regenerate
        return None


def _save_cached(path: Optional[Path], **arrays: np.ndarray) -> None:
    """Atomically write ``arrays`` to ``path``; silently give up if not writable."""
    if path is None:
        return
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        np.savez(tmp, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _gaussian_kernel(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, C, H, W) tensor (reflect padding), by two matmuls."""
    return _blur_matrix(x.shape[-2], sigma) @ x @ _blur_matrix(x.shape[-1], sigma).T


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """(size, size) matrix applying a 1-d Gaussian blur with reflect padding."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = _gaussian_kernel(sigma, r)
    m = torch.zeros(size, size)
    for i in range(size):
        for j, w in zip(range(i - r, i + r + 1), k.tolist()):
            j = -j if j < 0 else (2 * (size - 1) - j if j >= size else j)
            m[i, min(max(j, 0), size - 1)] += w
    return m


@functools.lru_cache(maxsize=16)
def _upsample_matrix(src: int, dst: int) -> torch.Tensor:
    """(dst, src) matrix for bilinear upsampling (align_corners=False)."""
    eye = torch.eye(src)[:, None, :]  # (src, 1, src)
    up = F.interpolate(eye, size=dst, mode="linear", align_corners=False)  # (src, 1, dst)
    return up[:, 0, :].T.contiguous()

