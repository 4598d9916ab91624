"""Save a figure of the offline stand-ins: 64 house-number digits and 8 bird image-caption pairs.

Usage::

    python -m data_prep.make_figure --out standins.png [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Optional, Sequence


def make_figure(out: Path, seed: int = 0, dpi: int = 110) -> Path:
    """Render the figure to ``out`` (PNG/PDF/SVG by suffix) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from mmvae_lite.data.standins import bird_captions, house_numbers

    digits, labels = house_numbers(64, seed)
    birds = bird_captions(8, seed)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6.6),
                                      gridspec_kw={"width_ratios": [1, 1.3], "wspace": 0.04})

    # left: an 8x8 mosaic of house numbers, with each tile's label below it
    tile, gap, label_h = 32, 4, 9
    cell_w, cell_h = tile + gap, tile + gap + label_h
    mosaic = np.ones((8 * cell_h, 8 * cell_w, 3), dtype=np.uint8) * 255
    for i in range(64):
        r, c = divmod(i, 8)
        y, x = r * cell_h, c * cell_w
        mosaic[y:y + tile, x:x + tile] = digits[i].permute(1, 2, 0).numpy()
    left.imshow(mosaic, interpolation="nearest")
    for i in range(64):
        r, c = divmod(i, 8)
        left.text(c * cell_w + tile / 2, r * cell_h + tile + 5, str(int(labels[i])),
                  ha="center", va="center", fontsize=7)
    left.set_title("stand-in SVHN: house-number digits (label = centre digit)", fontsize=11)
    left.axis("off")

    # right: 8 birds in a 4x2 layout, each with its first caption beside it
    size, text_w, pad = 64, 120, 10
    col_w, row_h = size + text_w + pad, size + pad
    canvas = np.ones((4 * row_h, 2 * col_w, 3), dtype=np.uint8) * 255
    for i in range(8):
        r, c = divmod(i, 2)
        canvas[r * row_h:r * row_h + size, c * col_w:c * col_w + size] = \
            birds.images[i].permute(1, 2, 0).numpy()
    right.imshow(canvas, interpolation="nearest")
    for i in range(8):
        r, c = divmod(i, 2)
        caption = birds.captions[i * birds.captions_per_image]
        right.text(c * col_w + size + 4, r * row_h + size / 2, "\n".join(textwrap.wrap(caption, 27)),
                   fontsize=8, va="center", ha="left")
    right.set_title("stand-in CUB: bird sprites with captions from the same attributes",
                    fontsize=11)
    right.axis("off")

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.make_figure",
                                     description="Save a figure of the offline stand-in datasets.")
    parser.add_argument("--out", type=Path, required=True, help="output image file, e.g. standins.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpi", type=int, default=110)
    args = parser.parse_args(argv)
    try:
        path = make_figure(args.out, args.seed, args.dpi)
    except OSError as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 1
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
