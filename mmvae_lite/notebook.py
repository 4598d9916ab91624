"""Small conveniences for the book's chapters (and your own notebooks).

``setup()`` reads the preset switch ``MMVAE_LITE_PRESET`` (``quick`` or ``paper``; default:
``paper`` when a CUDA GPU is present, else ``quick``), picks the device once, seeds everything,
and prints one line saying which preset, device and data directory the chapter runs with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .training import seed_everything, select_device

PRESET_ENV = "MMVAE_LITE_PRESET"


def preset_from_env() -> str:
    """``quick`` or ``paper``, from ``$MMVAE_LITE_PRESET`` or from whether a GPU is present."""
    preset = os.environ.get(PRESET_ENV, "").strip().lower()
    if not preset:
        return "paper" if torch.cuda.is_available() else "quick"
    if preset not in ("quick", "paper"):
        raise ValueError(f"{PRESET_ENV}={preset!r}: choose 'quick' or 'paper'")
    return preset


def _inline_figures() -> None:
    """In an IPython kernel, show figures inline (``%matplotlib inline``): the book's build kernels
    and Colab then render every returned Figure as an image rather than as ``<Figure ...>`` text."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is not a dependency of the package
        return
    ip = get_ipython()
    if ip is not None and getattr(ip, "kernel", None) is not None:
        ip.run_line_magic("matplotlib", "inline")


@dataclass(frozen=True)
class Session:
    preset: str
    device: torch.device
    seed: int

    @property
    def quick(self) -> bool:
        return self.preset == "quick"


def setup(seed: int = 0, threads: "int | None" = None) -> Session:
    """Choose preset and device, seed all RNGs, set plotting defaults, and print a one-line header."""
    preset = preset_from_env()
    device = select_device()
    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    try:
        import matplotlib as mpl
        mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.spines.top": False,
                             "axes.spines.right": False, "image.interpolation": "nearest"})
    except ImportError:  # pragma: no cover
        pass
    _inline_figures()
    try:
        from .data import data_root
        root = str(data_root())
    except Exception as e:  # noqa: BLE001 - a header must never stop a chapter
        root = f"unavailable ({e})"
    print(f"[mmvae_lite] preset: {preset} (set {PRESET_ENV}=quick|paper) | device: {device} | "
          f"torch {torch.__version__} | data: {root}")
    return Session(preset, device, seed)


__all__ = ["setup", "preset_from_env", "Session", "PRESET_ENV"]
