"""How every metric runs: eval mode without gradients, a forked RNG, the model's device, progress bars.

No metric trains or changes the model it evaluates: each puts it in eval mode under
:func:`torch.no_grad` and restores every submodule's train/eval flag afterwards
(:func:`evaluation_mode`). Metrics that sample take a ``seed`` and draw from a forked RNG
(:func:`seeded`), so they are reproducible and leave the global torch RNG untouched.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional

import torch
import torch.nn as nn

__all__ = ["evaluation_mode", "seeded", "one_thread", "device_of", "progress_bar", "Progress"]


@contextlib.contextmanager
def evaluation_mode(*modules: Optional[nn.Module], grad: bool = False) -> Iterator[None]:
    """Eval mode (and ``no_grad`` unless ``grad``) inside; every submodule's flag restored after.

    Restoring each submodule's own ``training`` flag (not just calling ``train(old)`` on the
    root) keeps mixed states, e.g. a model whose frozen feature extractor is in eval mode.
    """
    flags = [(m, m.training) for mod in modules if mod is not None for m in mod.modules()]
    try:
        for mod in modules:
            if mod is not None:
                mod.eval()
        with torch.set_grad_enabled(grad):
            yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def seeded(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run with ``torch.manual_seed(seed)`` on a forked RNG (global state untouched); no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(int(seed))   # seeds every CUDA device too: all of them are forked
        yield


def _cuda_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG ``torch.manual_seed`` would touch (all, once CUDA is initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return [device] if device.type == "cuda" else []


def one_thread():
    """One BLAS thread (threadpoolctl, which scikit-learn brings): small fits only contend on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); CPU for a module without either."""
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def progress_bar(it: Iterable, progress: bool, total: Optional[int] = None, desc: str = "", unit: str = "it"):
    """``it`` wrapped in a tqdm bar when ``progress``, else ``it`` itself."""
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class Progress:
    """A tqdm bar counted in examples (``update(n)``), or nothing when ``progress`` is False."""

    def __init__(self, progress: bool, total: Optional[int], desc: str, unit: str = "ex") -> None:
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
