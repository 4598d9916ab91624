"""Synthetic stand-ins for the datasets that cannot be downloaded everywhere.

Two generators live here, both deterministic given ``seed`` and fast enough to run
on a laptop CPU:

* :func:`house_numbers` -- a stand-in for SVHN: 32x32 RGB crops of street-number
  digits rendered from the TrueType fonts that matplotlib ships (DejaVu, STIX,
  Computer Modern), with coloured plates, gradients, partial neighbouring digits
  cut at the left/right edges, small affine jitter, stroke-weight changes, blur
  and noise.
* :func:`bird_captions` -- a stand-in for CUB image-caption pairs: 64x64 bird-like
  sprites whose attributes (part colours, size, bill, tail, background ...) drive
  both the picture and ten captions written in CUB's style by a small grammar.
  Because the captions are generated from the attributes, cross-modal generation
  can be scored by attribute agreement.

Neither is the real data. They exist so that every experiment in the package can
run end to end where SVHN/CUB are missing; results on them are not comparable to
the paper's numbers. :mod:`mmvae_lite.data` decides when they are used and says so.

Generation is vectorised with torch (``grid_sample`` warps of pre-rendered glyph
masks for the digits, broadcast ellipse/half-plane masks for the birds). Results
can be cached as ``.npz`` files in a cache directory, keyed by ``(n, seed, version)``.
"""
from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "HOUSE_NUMBERS_VERSION",
    "BIRDS_VERSION",
    "BIRD_ATTRIBUTES",
    "BirdCaptions",
    "house_numbers",
    "bird_captions",
    "standin_features",
    "STANDIN_FEATURE_DIM",
]

#: Bump when the house-number renderer changes (invalidates cached arrays).
HOUSE_NUMBERS_VERSION = 4
#: Bump when the bird renderer / caption grammar changes.
BIRDS_VERSION = 2
#: Dimension of the stand-in image features (same as ResNet-101 pooled features).
STANDIN_FEATURE_DIM = 2048

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
# small helpers
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# house numbers (SVHN stand-in)
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


# --------------------------------------------------------------------------------------
# birds with captions (CUB stand-in)
# --------------------------------------------------------------------------------------
#: Colour names used by the bird sprites and their RGB values (0-1).
_COLOURS: dict[str, tuple[float, float, float]] = {
    "black": (0.08, 0.08, 0.09),
    "white": (0.93, 0.93, 0.90),
    "grey": (0.55, 0.56, 0.58),
    "brown": (0.47, 0.31, 0.17),
    "red": (0.82, 0.12, 0.10),
    "orange": (0.95, 0.52, 0.10),
    "yellow": (0.96, 0.85, 0.15),
    "blue": (0.18, 0.38, 0.85),
    "green": (0.25, 0.58, 0.22),
    "buff": (0.86, 0.76, 0.55),
}
_COLOUR_NAMES = tuple(_COLOURS)

#: Attribute name -> the names of its values. Attribute ``i`` of a bird is an index
#: into ``BIRD_ATTRIBUTES[name]``.
BIRD_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "size": ("small", "medium", "large"),
    "crown_color": _COLOUR_NAMES,
    "wing_color": _COLOUR_NAMES,
    "belly_color": _COLOUR_NAMES,
    "back_color": _COLOUR_NAMES,
    "bill_shape": ("pointed", "cone", "hooked", "needle"),
    "bill_length": ("short", "long"),
    "bill_color": ("black", "grey", "orange", "yellow"),
    "tail_length": ("short", "long"),
    "wingbars": ("none", "white"),
    "eyering": ("none", "white"),
    "background": ("sky", "foliage", "water", "branch"),
}

_BG_COLOURS = {
    "sky": ((0.55, 0.74, 0.93), (0.85, 0.92, 0.98)),
    "foliage": ((0.20, 0.36, 0.16), (0.45, 0.60, 0.30)),
    "water": ((0.22, 0.42, 0.55), (0.48, 0.66, 0.72)),
    "branch": ((0.72, 0.78, 0.70), (0.90, 0.90, 0.84)),
}


class BirdCaptions(NamedTuple):
    """Output of :func:`bird_captions`.

    Attributes:
        images: uint8 (n, 3, S, S) (None when generated with ``with_images=False``).
        captions: ``n * captions_per_image`` strings; caption ``j`` describes image
            ``j // captions_per_image`` (the layout of the real CUB caption files).
        attributes: int64 (n, A); column ``a`` indexes ``BIRD_ATTRIBUTES[names[a]]``.
        attribute_names: the ``A`` attribute names, in column order.
        captions_per_image: captions per image.
    """

    images: Optional[torch.Tensor]
    captions: list[str]
    attributes: torch.Tensor
    attribute_names: tuple[str, ...]
    captions_per_image: int


def _sample_bird_attributes(n: int, rng: np.random.Generator) -> np.ndarray:
    names = list(BIRD_ATTRIBUTES)
    a = np.zeros((n, len(names)), dtype=np.int64)
    for j, name in enumerate(names):
        a[:, j] = rng.integers(0, len(BIRD_ATTRIBUTES[name]), n)
    ci = {c: i for i, c in enumerate(_COLOUR_NAMES)}
    col = {name: j for j, name in enumerate(names)}
    # some structure, as in real birds: crowns often match the back, bellies are light
    same = rng.random(n) < 0.35
    a[same, col["crown_color"]] = a[same, col["back_color"]]
    light = rng.random(n) < 0.4
    a[light, col["belly_color"]] = rng.choice([ci["white"], ci["buff"], ci["yellow"], ci["grey"]],
                                              light.sum())
    wing_back = rng.random(n) < 0.4
    a[wing_back, col["wing_color"]] = a[wing_back, col["back_color"]]
    return a


def _draw_birds(attrs: torch.Tensor, g: torch.Generator, size: int) -> torch.Tensor:
    """Draw bird sprites; ``attrs`` int64 (B, A). Returns float (B, 3, S, S) in [0, 1]."""
    b = attrs.shape[0]
    names = list(BIRD_ATTRIBUTES)
    A = {name: attrs[:, j] for j, name in enumerate(names)}
    palette = torch.tensor([_COLOURS[c] for c in _COLOUR_NAMES])
    bill_pal = torch.tensor([_COLOURS["black"], _COLOURS["grey"], _COLOURS["orange"],
                             _COLOURS["yellow"]])

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    ys, xs = ys[None], xs[None]

    def col(v: torch.Tensor) -> torch.Tensor:
        return v[:, :, None, None]

    # --- background --------------------------------------------------------------------
    bg_ids = A["background"]
    bg_lo = torch.tensor([_BG_COLOURS[k][0] for k in BIRD_ATTRIBUTES["background"]])[bg_ids]
    bg_hi = torch.tensor([_BG_COLOURS[k][1] for k in BIRD_ATTRIBUTES["background"]])[bg_ids]
    t = ((ys + 1) / 2).expand(b, -1, -1)[:, None]
    img = col(bg_hi) * (1 - t) + col(bg_lo) * t
    blobs = F.interpolate(torch.randn(b, 1, 6, 6, generator=g), size=(size, size),
                          mode="bicubic", align_corners=False)
    tex_amp = torch.tensor([0.03, 0.14, 0.06, 0.04])[bg_ids]
    img = img + blobs * col(tex_amp[:, None])
    # water: horizontal ripples; branch: a brown bar the bird perches on
    ripple = 0.05 * torch.sin(ys * 40 + torch.rand(b, 1, 1, generator=g) * 6)
    img = img + (bg_ids == 2).float()[:, None, None, None] * ripple[:, None]

    # --- pose ----------------------------------------------------------------------------
    scale = torch.tensor([0.62, 0.8, 0.98])[A["size"]] * (1 + 0.06 * torch.randn(b, generator=g))
    facing = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    ox = 0.12 * torch.randn(b, generator=g)
    oy = 0.08 * torch.randn(b, generator=g) - 0.05
    tilt = 0.25 * torch.randn(b, generator=g)

    # bird-local coordinates (bird faces +x, unit = scale), computed once
    _X = (xs - ox[:, None, None]) * facing[:, None, None] / scale[:, None, None]
    _Y = (ys - oy[:, None, None]) / scale[:, None, None]
    _c, _s = torch.cos(tilt)[:, None, None], torch.sin(tilt)[:, None, None]
    LX, LY = _c * _X + _s * _Y, -_s * _X + _c * _Y
    del _X, _Y, _c, _s

    def local(x0: float = 0.0, y0: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Bird-local coordinates relative to the point ``(x0, y0)``."""
        return LX - x0, LY - y0

    def ellipse(x0: float, y0: float, rx: float | torch.Tensor, ry: float | torch.Tensor,
                rot: float = 0.0) -> torch.Tensor:
        X, Y = local(x0, y0)
        if rot:
            c, s = math.cos(rot), math.sin(rot)
            X, Y = c * X + s * Y, -s * X + c * Y
        rx_t = torch.as_tensor(rx, dtype=torch.float32).reshape(-1, 1, 1)
        ry_t = torch.as_tensor(ry, dtype=torch.float32).reshape(-1, 1, 1)
        d = (X / rx_t) ** 2 + (Y / ry_t) ** 2
        edge = 0.08
        return ((1 - d) / edge + 0.5).clamp(0, 1)[:, None]

    def paint(img: torch.Tensor, mask: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
        return img.lerp_(col(colour).expand_as(img), mask)

    branch_mask = torch.zeros(b, 1, size, size)
    is_branch = (bg_ids == 3).float()[:, None, None, None]
    by = (oy + 0.52 * scale)[:, None, None]
    branch_mask = ((0.05 - (ys - by - 0.08 * xs).abs()) / 0.02 + 0.5).clamp(0, 1)[:, None] * is_branch
    img = paint(img, branch_mask, torch.tensor(_COLOURS["brown"]).expand(b, 3) * 0.7)

    # --- legs -----------------------------------------------------------------------------
    X, Y = local()
    legs = (((0.025 - (X - 0.02).abs()) / 0.015 + 0.5).clamp(0, 1)
            * ((Y > 0.25) & (Y < 0.56)).float())[:, None]
    img = paint(img, legs, torch.tensor([0.25, 0.22, 0.2]).expand(b, 3))

    # --- tail -----------------------------------------------------------------------------
    tail_len = torch.tensor([0.28, 0.52])[A["tail_length"]]
    X, Y = local(-0.42, 0.05)
    ang = 0.35
    Xr, Yr = math.cos(ang) * X - math.sin(ang) * Y, math.sin(ang) * X + math.cos(ang) * Y
    tl = tail_len[:, None, None]
    tail = (((-Xr) > 0) & ((-Xr) < tl) & (Yr.abs() < 0.07 + 0.1 * (-Xr) / tl)).float()[:, None]
    img = paint(img, tail, palette[A["wing_color"]] * 0.8)

    # --- body, back, belly ------------------------------------------------------------------
    body = ellipse(0.0, 0.05, 0.46, 0.3)
    img = paint(img, body, palette[A["back_color"]])
    belly = body * ellipse(0.08, 0.2, 0.4, 0.22)
    img = paint(img, belly, palette[A["belly_color"]])

    # --- wing (+ wingbars) -----------------------------------------------------------------------
    wing = ellipse(-0.08, 0.0, 0.36, 0.15, rot=-0.25)
    img = paint(img, wing, palette[A["wing_color"]])
    X, Y = local(-0.08, 0.0)
    bars = (torch.sin((X + 0.3 * Y) * 38) > 0.55).float()[:, None] * wing
    bars = bars * ((X > -0.15) & (X < 0.15)).float()[:, None]
    img = paint(img, bars * (A["wingbars"] == 1).float()[:, None, None, None],
                torch.tensor(_COLOURS["white"]).expand(b, 3))

    # --- head and crown ---------------------------------------------------------------------------
    hx, hy, hr = 0.4, -0.22, 0.2
    head = ellipse(hx, hy, hr, hr)
    img = paint(img, head, palette[A["back_color"]] * 0.5 + palette[A["belly_color"]] * 0.5)
    X, Y = local(hx, hy)
    crown = head * ((-Y - 0.02) / 0.04 + 0.5).clamp(0, 1)[:, None]
    img = paint(img, crown, palette[A["crown_color"]])
    throat = head * ellipse(hx + 0.05, hy + 0.14, 0.12, 0.08)
    img = paint(img, throat, palette[A["belly_color"]])

    # --- bill ------------------------------------------------------------------------------
    bill_len = torch.tensor([0.16, 0.34])[A["bill_length"]]
    shape = A["bill_shape"]
    base_half = torch.tensor([0.065, 0.1, 0.07, 0.03])[shape]  # half-thickness at the base
    droop = torch.tensor([0.0, 0.0, 0.6, 0.15])[shape]  # hooked / curved tip
    X, Y = local(hx + hr * 0.85, hy + 0.02)
    L = bill_len[:, None, None]
    u = (X / L).clamp(0, 1)
    centre = droop[:, None, None] * L * u ** 2
    half = base_half[:, None, None] * (1 - u)
    bill = ((X > 0) & (X < L) & ((Y - centre).abs() < half + 0.012)).float()[:, None]
    img = paint(img, bill, bill_pal[A["bill_color"]])

    # --- eye and eye-ring ------------------------------------------------------------------------
    ering = ellipse(hx + 0.07, hy - 0.02, 0.065, 0.065) * (A["eyering"] == 1).float()[:, None, None, None]
    img = paint(img, ering, torch.tensor(_COLOURS["white"]).expand(b, 3))
    eye = ellipse(hx + 0.07, hy - 0.02, 0.04, 0.04)
    img = paint(img, eye, torch.tensor([0.02, 0.02, 0.02]).expand(b, 3))

    # soft shading, slight blur and noise so that it is not perfectly flat
    shade = 1 - 0.12 * (ys[:, None] - oy[:, None, None, None])
    img = img * shade
    img = _blur(img, 0.6)
    img = img + 0.015 * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


_SIZE_WORDS = {
    "small": ("small", "tiny", "little"),
    "medium": ("medium sized", "medium-sized", "medium"),
    "large": ("large", "big", "larger"),
}
_BILL_SHAPE_WORDS = {
    "pointed": ("pointed", "pointy", "sharp"),
    "cone": ("cone-shaped", "thick", "conical"),
    "hooked": ("hooked", "curved"),
    "needle": ("thin", "needle-like", "slender"),
}
_BILL_NOUNS = ("bill", "beak")
_BG_PHRASES = {
    "sky": ("flying in the sky", "against a blue sky"),
    "foliage": ("sitting in the leaves", "perched among green leaves"),
    "water": ("near the water", "standing by the water"),
    "branch": ("perched on a branch", "sitting on a branch"),
}


def _caption(a: dict[str, str], rng: np.random.Generator) -> str:
    """One CUB-style caption mentioning a random subset of the attributes."""
    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    def a_(phrase: str) -> str:
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    bill = pick(_BILL_NOUNS)
    parts: list[str] = []
    facts = [
        a_(f"{a['crown_color']} crown"),
        f"{a['wing_color']} wings",
        a_(f"{a['belly_color']} {'belly' if rng.random() < 0.6 else 'breast'}"),
        a_(f"{a['back_color']} back"),
        a_(f"{a['bill_length']} {pick(_BILL_SHAPE_WORDS[a['bill_shape']])} {bill}"),
        a_(f"{a['bill_color']} {bill}"),
        a_(f"{a['tail_length']} tail"),
    ]
    if a["wingbars"] == "white":
        facts.append("white wingbars")
    if a["eyering"] == "white":
        facts.append("a white eyering")
    k = int(rng.integers(2, 5))
    chosen = [facts[i] for i in rng.choice(len(facts), size=k, replace=False)]
    if len(chosen) > 1:
        body = ", ".join(chosen[:-1]) + " and " + chosen[-1]
    else:
        body = chosen[0]
    size = pick(_SIZE_WORDS[a["size"]])
    style = int(rng.integers(5))
    if style == 0:
        parts.append(f"this {size} bird has {body}")
    elif style == 1:
        parts.append(f"{a_(size)} bird with {body}")
    elif style == 2:
        parts.append(f"this bird is {size} and has {body}")
    elif style == 3:
        main = a["back_color"] if rng.random() < 0.5 else a["wing_color"]
        parts.append(f"this bird is mostly {main} with {body}")
    else:
        parts.append(f"the {size} bird has {body}")
    if rng.random() < 0.12:
        parts.append(pick(_BG_PHRASES[a["background"]]))
    return " , ".join(parts).replace(" , ", ", ") + "."


def bird_captions(n: int, seed: int = 0, *, captions_per_image: int = 10, image_size: int = 64,
                  cache_dir: Optional[os.PathLike] = None, with_images: bool = True) -> BirdCaptions:
    """Generate ``n`` bird sprites with CUB-style captions.

    Each image's attributes (see :data:`BIRD_ATTRIBUTES`) set the colours of its crown,
    back, wings and belly, its size, bill (shape, length, colour), tail length,
    wingbars, eye-ring and background. Every caption mentions a random subset of
    them (2-4 facts), in random order and wording, in lower case with the
    punctuation style of the real captions (``"this small bird has a red crown,
    white wings and a short pointed bill."``).

    Args:
        n: number of images.
        seed: random seed; identical arguments give identical outputs.
        captions_per_image: captions per image (the real CUB has 10).
        image_size: side of the square images (64 in the MMVAE paper).
        cache_dir: optional directory to cache the result as ``.npz``.
        with_images: if False, skip drawing (``images`` is None); the captions and
            attributes are the same as with images.

    Returns:
        A :class:`BirdCaptions` tuple ``(images, captions, attributes,
        attribute_names, captions_per_image)``.
    """
    if n < 0 or captions_per_image < 1:
        raise ValueError("need n >= 0 and captions_per_image >= 1")
    names = tuple(BIRD_ATTRIBUTES)
    stem = f"birds_n{n}_s{seed}_c{captions_per_image}_i{image_size}_v{BIRDS_VERSION}"
    path = _cache_file(Path(cache_dir) if cache_dir else None, stem)
    cached = _load_cached(path)
    if cached is not None and cached.get("images", np.empty(0)).shape == (n, 3, image_size, image_size):
        return BirdCaptions(torch.from_numpy(cached["images"]), [str(c) for c in cached["captions"]],
                            torch.from_numpy(cached["attributes"]).long(), names, captions_per_image)

    if not with_images:
        if cached is not None:
            return BirdCaptions(None, [str(c) for c in cached["captions"]],  # type: ignore[arg-type]
                                torch.from_numpy(cached["attributes"]).long(), names,
                                captions_per_image)
    rng = np.random.default_rng(seed)
    attrs = _sample_bird_attributes(n, rng)
    captions: list[str] = []
    for i in range(n):
        a = {name: BIRD_ATTRIBUTES[name][attrs[i, j]] for j, name in enumerate(names)}
        captions.extend(_caption(a, rng) for _ in range(captions_per_image))
    attrs_t = torch.from_numpy(attrs)
    if not with_images:
        return BirdCaptions(None, captions, attrs_t, names, captions_per_image)  # type: ignore[arg-type]
    images = torch.empty(n, 3, image_size, image_size, dtype=torch.uint8)
    step = 1024
    with torch.no_grad():
        for start in range(0, n, step):
            stop = min(start + step, n)
            gc = torch.Generator().manual_seed(int(seed) * 1_000_003 + start)
            img = _draw_birds(attrs_t[start:stop], gc, image_size)
            images[start:stop] = (img * 255 + 0.5).to(torch.uint8)
    _save_cached(path, images=images.numpy(), captions=np.array(captions),
                 attributes=attrs)
    return BirdCaptions(images, captions, attrs_t, names, captions_per_image)


# --------------------------------------------------------------------------------------
# stand-in image features
# --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _feature_net(seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 48, 5, stride=2, padding=2),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(48, 192, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Conv2d(192, STANDIN_FEATURE_DIM, 1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def standin_features(images: torch.Tensor, seed: int = 0, batch_size: int = 1024) -> torch.Tensor:
    """Fixed random-convolution features: a stand-in for ResNet-101 pooled features.

    The pretrained ResNet-101 weights used by the paper cannot be downloaded
    everywhere, so this maps each image to a non-negative 2048-d vector with a
    *fixed* (seeded, untrained) three-layer ReLU conv net followed by global average
    pooling. It keeps colour and coarse shape information (so nearest-neighbour
    look-ups find similar birds) but it is *not* a pretrained feature extractor.

    Args:
        images: uint8 (N, 3, H, W) or float in [0, 1].
        seed: seed of the random weights (fixed per dataset).
        batch_size: images per forward pass.

    Returns:
        float32 (N, 2048), non-negative, scaled to an average value of about 0.5.
    """
    net = _feature_net(int(seed))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size]
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            out.append(net((x - mean) / std))
    feats = torch.cat(out) if out else torch.zeros(0, STANDIN_FEATURE_DIM)
    return feats * 0.25
