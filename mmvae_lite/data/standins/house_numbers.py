"""House-number digits: the SVHN stand-in.

32x32 RGB crops of street-number digits rendered from the TrueType fonts that matplotlib ships
(DejaVu, STIX, Computer Modern), with coloured plates, gradients, partial neighbouring digits cut
at the left/right edges, small affine jitter, stroke-weight changes, blur and noise. Vectorised
with ``grid_sample`` warps of pre-rendered glyph masks.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .common import (_balanced_labels, _bernoulli, _blur, _cache_file, _load_cached, _save_cached,
                     _uniform, _upsample_matrix)

__all__ = ["HOUSE_NUMBERS_VERSION", "house_numbers"]

#: Bump when the house-number renderer changes (invalidates cached arrays).
HOUSE_NUMBERS_VERSION = 4
# Fonts shipped in matplotlib's mpl-data/fonts/ttf (missing ones are skipped).
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmb10.ttf",
    "cmtt10.ttf",
)
_ATLAS = 64  # glyph atlas tile size (pixels)
_GLYPH_H = 44  # ink height of every digit inside its tile


# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _glyph_atlas() -> tuple[torch.Tensor, torch.Tensor]:
    """Render digits 0-9 of every available font once.

    Returns ``(atlas, widths)``: ``atlas`` float (F*10, 1, 64, 64) in [0, 1], each
    digit's ink box scaled to a height of 44 px and centred, lightly blurred so that
    thresholding it at different levels thickens or thins the strokes; ``widths``
    (F*10,) ink widths in atlas pixels.
    """
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    tiles, widths = [], []
    for name in _FONT_FILES:
        path = font_dir / name
        if not path.is_file():
            continue
        font = ImageFont.truetype(str(path), 96)
        for d in range(10):
            img = Image.new("L", (192, 192), 0)
            ImageDraw.Draw(img).text((36, 24), str(d), fill=255, font=font)
            a = np.asarray(img, dtype=np.float32) / 255.0
            rows, cols = np.nonzero(a > 0.5)
            if rows.size == 0:
                break  # font without digits
            crop = img.crop((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
            h, w = crop.height, crop.width
            new_w = max(2, int(round(w * _GLYPH_H / h)))
            new_w = min(new_w, _ATLAS - 4)
            crop = crop.resize((new_w, _GLYPH_H), Image.LANCZOS)
            tile = Image.new("L", (_ATLAS, _ATLAS), 0)
            tile.paste(crop, ((_ATLAS - new_w) // 2, (_ATLAS - _GLYPH_H) // 2))
            tiles.append(np.asarray(tile, dtype=np.float32) / 255.0)
            widths.append(float(new_w))
        else:
            continue
        del tiles[len(tiles) - (len(tiles) % 10):]  # drop a partial font
        del widths[len(widths) - (len(widths) % 10):]
    if not tiles:
        raise RuntimeError(
            f"no usable TrueType fonts found in {font_dir}; the house-number stand-in "
            "needs matplotlib's bundled DejaVu fonts"
        )
    atlas = torch.from_numpy(np.stack(tiles))[:, None]
    atlas = _blur(atlas, 1.6).clamp_(0, 1)
    # normalise so that a stroke's centre reaches ~1 after blurring
    atlas = (atlas / atlas.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)).contiguous()
    return atlas, torch.tensor(widths)


def _random_colours(g: torch.Generator, n: int, light: torch.Tensor, sat: torch.Tensor) -> torch.Tensor:
    """Colours with approximately the given lightness and saturation, (n, 3)."""
    hue = torch.rand(n, generator=g) * 2 * math.pi
    # three cosines 120 degrees apart: a cheap hue wheel with zero mean
    phases = torch.tensor([0.0, 2 * math.pi / 3, 4 * math.pi / 3])
    chroma = torch.cos(hue[:, None] - phases[None, :])
    return (light[:, None] + 0.5 * sat[:, None] * chroma).clamp(0, 1)


def _house_number_chunk(labels: torch.Tensor, g: torch.Generator, atlas: torch.Tensor,
                        widths: torch.Tensor) -> torch.Tensor:
    """Render one chunk of house-number crops; returns float (B, 3, 32, 32) in [0, 1]."""
    b = labels.numel()
    n_fonts = atlas.shape[0] // 10
    size = 32
    font = torch.randint(0, n_fonts, (b,), generator=g)
    left = torch.randint(0, 10, (b,), generator=g)
    right = torch.randint(0, 10, (b,), generator=g)
    has_left = _bernoulli(g, b, 0.75)
    has_right = _bernoulli(g, b, 0.75)
    sel = font * 10 + labels
    sel_l = font * 10 + left
    sel_r = font * 10 + right

    height = _uniform(g, b, 13.0, 28.0)  # ink height in output pixels
    aspect = _uniform(g, b, 0.75, 1.3)  # horizontal stretch
    shear = _uniform(g, b, -0.25, 0.25)
    angle = _uniform(g, b, -0.24, 0.24)  # radians, about +-14 degrees
    cx = size / 2 + _uniform(g, b, -3.0, 3.0)
    cy = size / 2 + _uniform(g, b, -3.0, 3.0)
    gap = _uniform(g, b, 0.0, 0.4) * _GLYPH_H  # atlas pixels between ink boxes
    thresh = _uniform(g, b, 0.22, 0.62)  # stroke weight: low = bold
    soft = _uniform(g, b, 0.05, 0.16)  # edge softness

    # output pixel centres relative to the digit centre
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    px = xs[None] - cx[:, None, None]
    py = ys[None] - cy[:, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    qx = cos * px + sin * py
    qy = -sin * px + cos * py
    qx = qx - shear[:, None, None] * qy
    qx = qx / aspect[:, None, None]
    k = (_GLYPH_H / height)[:, None, None]  # output px -> atlas px
    ax, ay = qx * k, qy * k

    w_c, w_l, w_r = widths[sel], widths[sel_l], widths[sel_r]
    offsets = (
        torch.zeros(b),
        -(w_c / 2 + gap + w_l / 2),
        w_c / 2 + gap + w_r / 2,
    )
    mask = torch.zeros(b, 1, size, size)
    for s, off, present in ((sel, offsets[0], None), (sel_l, offsets[1], has_left),
                            (sel_r, offsets[2], has_right)):
        grid = torch.stack(((ax - off[:, None, None]) / (_ATLAS / 2),
                            ay / (_ATLAS / 2)), dim=-1)
        m = F.grid_sample(atlas[s], grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
        if present is not None:
            m = m * present[:, None, None, None]
        mask = torch.maximum(mask, m)
    t = thresh[:, None, None, None]
    mask = torch.sigmoid((mask - t) / soft[:, None, None, None])
    mask = (mask - torch.sigmoid(-t / soft[:, None, None, None])).clamp_min(0)
    mask = mask / mask.amax(dim=(2, 3), keepdim=True).clamp_min(0.3)
    mask = mask.clamp(0, 1)

    # colours: plate (background) and digit (foreground) with a lightness gap
    l_bg = _uniform(g, b, 0.05, 0.95)
    contrast = _uniform(g, b, 0.16, 0.7)
    up = (l_bg < 0.5) ^ _bernoulli(g, b, 0.12)  # mostly away from the background
    up = torch.where(l_bg + contrast > 1.0, torch.zeros_like(up), up)
    up = torch.where(l_bg - contrast < 0.0, torch.ones_like(up), up)
    l_fg = torch.where(up, l_bg + contrast, l_bg - contrast).clamp(0, 1)
    sat_bg = torch.rand(b, generator=g) ** 2.5 * 0.75  # mostly greyish plates, some colour
    sat_fg = torch.rand(b, generator=g) ** 2.5 * 0.75
    bg = _random_colours(g, b, l_bg, sat_bg)[:, :, None, None]
    fg = _random_colours(g, b, l_fg, sat_fg)[:, :, None, None]

    # background: plate colour + linear gradient + low-frequency texture
    grad_dir = torch.rand(b, generator=g) * 2 * math.pi
    grad_amp = _uniform(g, b, 0.0, 0.25)
    gx = torch.cos(grad_dir)[:, None, None] * (xs[None] / size - 0.5)
    gy = torch.sin(grad_dir)[:, None, None] * (ys[None] / size - 0.5)
    shade = (gx + gy) * grad_amp[:, None, None]
    low = torch.randn(b, 3, 4, 4, generator=g) * _uniform(g, b, 0.0, 0.08)[:, None, None, None]
    up = _upsample_matrix(4, size)
    low = up @ low @ up.T
    background = bg + shade[:, None] + low

    # a second surface (wall / plate edge) on one side, for some crops
    edge = _bernoulli(g, b, 0.3)
    edge_pos = _uniform(g, b, 1.0, 6.0)
    edge_side = torch.randint(0, 4, (b,), generator=g)
    dist = torch.stack((xs[None].expand(b, -1, -1), size - xs[None].expand(b, -1, -1),
                        ys[None].expand(b, -1, -1), size - ys[None].expand(b, -1, -1)), 1)
    dist = dist.gather(1, edge_side[:, None, None, None].expand(-1, 1, size, size))
    outside = ((dist < edge_pos[:, None, None, None]) & edge[:, None, None, None]).float()
    other = _random_colours(g, b, _uniform(g, b, 0.05, 0.95), _uniform(g, b, 0.0, 0.6))
    background = background * (1 - outside) + other[:, :, None, None] * outside

    # drop shadow / outline under the digits for some crops
    shadow = _bernoulli(g, b, 0.25)[:, None, None, None].float()
    sm = torch.roll(mask, shifts=(1, 1), dims=(2, 3)) * shadow
    dark = (bg * 0.35)
    img = background * (1 - sm) + dark * sm
    fg_shade = 1 + shade[:, None] * 0.5
    img = img * (1 - mask) + (fg * fg_shade) * mask

    # global lighting, blur, resolution loss and sensor noise
    light = _uniform(g, b, 0.7, 1.15)[:, None, None, None]
    img = img * light
    blur_w = _uniform(g, b, 0.0, 1.0)[:, None, None, None]
    img = img * (1 - blur_w) + _blur(img, 1.0) * blur_w
    lowres = _bernoulli(g, b, 0.4)[:, None, None, None].float()
    up = _upsample_matrix(size // 2, size)
    small = up @ F.avg_pool2d(img, 2) @ up.T
    img = img * (1 - lowres) + small * lowres
    noise = torch.randn(b, 3, size, size, generator=g) * _uniform(g, b, 0.0, 0.06)[:, None, None, None]
    return (img + noise).clamp(0, 1)


def house_numbers(n: int, seed: int = 0, *,
                  cache_dir: Optional[os.PathLike] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate ``n`` SVHN-like 32x32 RGB digit crops.

    Args:
        n: number of images.
        seed: random seed; equal ``(n, seed)`` give identical outputs.
        cache_dir: if given, the arrays are cached there as
            ``house_numbers_n{n}_s{seed}_v{version}.npz`` (silently skipped when the
            directory is not writable).

    Returns:
        ``(images, labels)``: uint8 tensor (n, 3, 32, 32) and int64 tensor (n,) with
        labels 0-9 balanced (counts differ by at most one).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    path = _cache_file(Path(cache_dir) if cache_dir else None,
                       f"house_numbers_n{n}_s{seed}_v{HOUSE_NUMBERS_VERSION}")
    cached = _load_cached(path)
    if cached is not None and cached.get("images", np.empty(0)).shape == (n, 3, 32, 32):
        return torch.from_numpy(cached["images"]), torch.from_numpy(cached["labels"]).long()

    atlas, widths = _glyph_atlas()
    g = torch.Generator().manual_seed(int(seed))
    labels = _balanced_labels(n, 10, g)
    images = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
    # fixed 1024-image steps, each with its own generator seeded from ``seed``
    base = torch.randint(0, 2**62, (1,), generator=g).item()
    step = 1024
    with torch.no_grad():
        for start in range(0, n, step):
            stop = min(start + step, n)
            gc = torch.Generator().manual_seed(base + start)
            img = _house_number_chunk(labels[start:stop], gc, atlas, widths)
            images[start:stop] = (img * 255 + 0.5).to(torch.uint8)
    _save_cached(path, images=images.numpy(), labels=labels.numpy())
    return images, labels

