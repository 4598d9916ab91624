"""Where and how a run executes: the device (chosen once), seeding, and the CPU heap trimming.

Kept apart from :mod:`mmvae_lite.training` because none of it is about the optimisation itself;
``training`` re-exports these names.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Optional

import torch


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def available_devices() -> list[str]:
    """The device types usable here, e.g. ``['cpu']`` or ``['cpu', 'cuda']``."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if _mps_available() else [])


def select_device(device: "str | torch.device | None" = None) -> torch.device:
    """The device to use: the one given, else CUDA, else Apple MPS, else CPU.

    A device that torch does not know, or that this machine lacks (``cuda`` without a GPU),
    raises a ``ValueError`` naming it and the devices available.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    avail = ", ".join(available_devices())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r} is not a device torch knows; choose cpu, cuda, cuda:<index> or mps "
                         f"(available here: {avail})") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: this machine has no usable CUDA GPU (torch {torch.__version__}); "
                             f"available: {avail}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {device!r}: Apple MPS is not available on this machine; available: {avail}")
        return dev
    raise ValueError(f"device {device!r}: training runs on {avail} here (type {dev.type!r} is not supported)")


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and Python's ``random``."""
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class HeapTrimmer:
    """Give freed heap memory back to the OS when the resident size has crept up (glibc, CPU).

    glibc keeps freed blocks below its (adaptive, up to 32 MB) mmap threshold in the heap. Steps
    that allocate blocks of varying size, as the row-sparse backward of the K=30 DReG objective does
    (:class:`~mmvae_lite.networks._RowSparseRecompute`, a different number of rows every step),
    fragment it: measured here, the resident size after a MNIST-SVHN step grew from 0.9 to 1.6-1.9 GB
    over the first 40 steps of a run, still growing, with peaks of 1.95-2.3 GB. After a step, if the
    resident size exceeds the one after the last trim by more than ``slack_mb``, ``malloc_trim(0)``
    returns the free pages (then after almost every such step: 0.9-1.0 GB between steps, peak
    1.9 GB, 0-2% slower). Checking costs one read of ``/proc/self/statm``; a trim about 7 ms plus the
    page faults of re-touching memory, so steps that do not grow the heap (K=1, the ELBO, a dense
    K=30 step) never pay for one. A no-op off Linux/glibc.
    """

    def __init__(self, slack_mb: float = 128.0,
                 rss_mb: Optional[Callable[[], float]] = None, trim: Optional[Callable[[], Any]] = None) -> None:
        self.slack_mb = slack_mb
        self._rss_mb = rss_mb or _statm_rss_mb
        self._trim = trim if trim is not None else _glibc_malloc_trim()
        self.base_mb: Optional[float] = None
        self.trims = 0

    @property
    def active(self) -> bool:
        return self._trim is not None

    def after_step(self) -> bool:
        """Trim if the heap crept up since the last trim; returns whether it trimmed."""
        if self._trim is None:
            return False
        rss = self._rss_mb()
        if self.base_mb is None or rss < self.base_mb:
            self.base_mb = rss
            return False
        if rss - self.base_mb <= self.slack_mb:
            return False
        self._trim()
        self.trims += 1
        self.base_mb = self._rss_mb()
        return True


PROGRESS_ENV = "MMVAE_LITE_PROGRESS"


def progress_enabled() -> bool:
    """Progress bars on, unless ``$MMVAE_LITE_PROGRESS`` is ``0`` (the book's build sets it: a
    non-terminal output keeps every refresh of a bar as a line)."""
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def _statm_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _glibc_malloc_trim() -> Optional[Callable[[], Any]]:
    """``malloc_trim(0)`` of the C library where it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux") or not os.path.exists("/proc/self/statm"):
        return None
    try:
        import ctypes
        fn = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):   # musl and others have no malloc_trim
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


__all__ = ["select_device", "available_devices", "seed_everything", "HeapTrimmer", "progress_enabled", "PROGRESS_ENV"]
