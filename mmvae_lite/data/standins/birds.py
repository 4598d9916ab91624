"""Bird sprites with CUB-style captions: the CUB stand-in.

64x64 bird-like sprites whose attributes (part colours, size, bill, tail, background ...) drive
both the picture and ten captions written in CUB's style by a small grammar. Because the captions
are generated from the attributes, cross-modal generation can be scored by attribute agreement.
Drawing uses broadcast ellipse/half-plane masks.
"""
from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .common import _blur, _cache_file, _load_cached, _save_cached

__all__ = ["BIRDS_VERSION", "BIRD_ATTRIBUTES", "BirdCaptions", "bird_captions", "claimed_attributes"]

#: Bump when the bird renderer / caption grammar changes.
BIRDS_VERSION = 2

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


#: The parts whose colour a caption names right before the part's noun ("a red crown", "blue wings").
_PART_NOUNS = {"crown_color": r"crown", "wing_color": r"wings", "belly_color": r"(?:belly|breast)",
               "back_color": r"back", "bill_color": r"(?:bill|beak)"}


@functools.lru_cache(maxsize=1)
def _claim_patterns() -> dict[str, "re.Pattern[str]"]:
    """One compiled pattern per part: any colour word of the grammar right before the part's noun."""
    words = sorted(set(_COLOUR_NAMES).union(*(BIRD_ATTRIBUTES[a] for a in _PART_NOUNS)), key=len, reverse=True)
    return {attr: re.compile(r"\b(" + "|".join(words) + r") " + noun + r"\b") for attr, noun in _PART_NOUNS.items()}


def claimed_attributes(text: str) -> dict[str, int]:
    """The part colours a stand-in caption names: ``{attribute: value index}`` (indices into
    :data:`BIRD_ATTRIBUTES`). The inverse of the caption grammar for the colours, the attributes a
    picture shows best; a generated caption that names no part colour claims nothing.

    A claim no stand-in bird can make (a colour the part never has, such as "a red bill") or a part
    named with two different colours ("a red crown, a blue crown") is read as the value ``-1``: a
    claim that is wrong for every image, so that such captions cannot score as describing one.
    """
    out = {}
    for attr, pattern in _claim_patterns().items():
        named = {m.group(1) for m in pattern.finditer(text)}
        if named:
            values = BIRD_ATTRIBUTES[attr]
            (colour,) = named if len(named) == 1 else (None,)
            out[attr] = values.index(colour) if colour in values else -1
    return out


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

