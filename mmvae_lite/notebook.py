"""Small conveniences for the book's chapters (and your own notebooks).

``setup()`` reads the preset switch ``MMVAE_LITE_PRESET`` (``quick`` or ``paper``; default
``quick``, also on a GPU: a chapter never starts hours of training unless asked to), picks the device once, seeds everything,
and prints a short header saying which preset, device and data directory the chapter runs with.
The header names the data directory without the machine's absolute path (``$MMVAE_LITE_DATA``
and the folder's name, or ``~/...``), so a built book shows nothing of the machine it was built on.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .runtime import seed_everything, select_device

PRESET_ENV = "MMVAE_LITE_PRESET"


def preset_from_env() -> str:
    """``quick`` or ``paper``, from ``$MMVAE_LITE_PRESET``; ``quick`` when unset.

    Never ``paper`` by default, not even on a GPU: opened in Colab, a chapter must not silently
    start many hours of training (paper-scale runs belong to the CLI, see chapter 10)."""
    preset = os.environ.get(PRESET_ENV, "").strip().lower()
    if not preset:
        return "quick"
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


def describe_data_root(root: Path, env_value: "str | None", env_name: str = "MMVAE_LITE_DATA") -> str:
    """Name the data directory ``root`` for printing, without the machine's absolute path.

    ``root`` came from ``$env_name`` (whose value is ``env_value``): ``"$MMVAE_LITE_DATA (…/data)"``;
    under the home directory: ``"~/.cache/mmvae_lite"``; anywhere else: ``"…/<folder name>"``.
    """
    if env_value:
        return f"${env_name} (…/{Path(env_value).name or root.name})"
    try:
        return "~/" + root.resolve().relative_to(Path.home().resolve()).as_posix()
    except (ValueError, RuntimeError, OSError):  # not under home, or no home directory
        return f"…/{root.name}"


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
        from . import data
        env_name = getattr(data, "DATA_ENV", "MMVAE_LITE_DATA")
        root = describe_data_root(data.data_root(), os.environ.get(env_name), env_name)
    except Exception as e:  # noqa: BLE001 - a header must never stop a chapter
        root = f"unavailable ({type(e).__name__})"
    # Two short lines, so that nothing is cut off at the book's width.
    print(f"[mmvae_lite] preset: {preset} ({PRESET_ENV}=quick|paper) | device: {device}\n"
          f"[mmvae_lite] data: {root} | torch {torch.__version__}")
    return Session(preset, device, seed)


__all__ = ["setup", "preset_from_env", "describe_data_root", "Session", "PRESET_ENV"]
