"""Dead units: ReLU units that output zero for every example, and so never get a gradient again.

A ReLU unit whose pre-activation is negative on every input passes no gradient to the weights that
feed it: once dead it stays dead, and the network has lost its capacity for good. Adam's first
steps move every weight by about the learning rate in the direction of its gradient's sign, which
on this book's MNIST-SVHN models switches off a quarter to two thirds of the encoders' units within
a few hundred steps (results/README.md measures it; :class:`~mmvae_lite.training.Trainer`'s
``warmup_steps`` is the remedy tried there). torch has forward hooks but no such count: hence this.
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd
import torch
import torch.nn as nn

from ..models import VAE
from .checks import Model, check_int, model_names
from .examples import batch_size_of, iterate_examples
from .runtime import device_of, evaluation_mode

__all__ = ["dead_units"]


def _unit_max(out: torch.Tensor) -> torch.Tensor:
    """The largest output of each unit over a batch: per channel for images (B, C, H, W), else per feature."""
    if out.dim() == 4:
        return out.detach().amax(dim=(0, 2, 3))
    return out.detach().reshape(-1, out.shape[-1]).amax(dim=0)


def dead_units(model: Model, data: Any, *, max_examples: Optional[int] = 1000, batch_size: int = 500,
               seed: int = 0) -> pd.DataFrame:
    """For every ``nn.ReLU`` of each modality's encoder and decoder, how many of its units are dead.

    The encoders read the modality's examples; each decoder reads its own modality's posterior
    means (what it reconstructs from in training). A unit (a channel of a convolution, a feature of
    a linear layer) is dead when it outputs 0 for all ``max_examples`` examples (a seeded subset of
    ``data``). Activations other than ReLU (the CUB feature networks' ELU) cannot die and are not listed.

    Returns a DataFrame with one row per ReLU: ``modality``, ``network`` (``encoder``/``decoder``),
    ``layer`` (the module's name inside that network), ``units``, ``dead`` and ``fraction``.
    """
    check_int(batch_size, "batch_size", 1, what="examples per batch")
    if max_examples is not None:
        check_int(max_examples, "max_examples", 1, what="examples looked at, or None for all")
    names = model_names(model, "dead_units")        # refuses anything but a VAE or MultimodalVAE
    dev = device_of(model)
    parts = {model.name: model.modality} if isinstance(model, VAE) else {n: model.modalities[n] for n in names}
    seen: dict[tuple[str, str, str], torch.Tensor] = {}
    hooks = []

    def record(key: tuple[str, str, str]):
        def hook(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
            m = _unit_max(out)
            seen[key] = m if key not in seen else torch.maximum(seen[key], m)
        return hook

    for name, mod in parts.items():
        for network in ("encoder", "decoder"):
            for layer, sub in getattr(mod, network).named_modules():
                if isinstance(sub, nn.ReLU):
                    hooks.append(sub.register_forward_hook(record((name, network, layer))))
    n = 0
    try:
        with evaluation_mode(model):
            for batch, _ in iterate_examples(data, batch_size, names=names, max_examples=max_examples,
                                             seed=seed, device=dev):
                for name, mod in parts.items():
                    if name in batch:
                        loc, _scale = mod.encoder(batch[name])
                        mod.decoder(loc)
                n += batch_size_of(batch)
    finally:
        for h in hooks:
            h.remove()
    if n == 0:
        raise ValueError(f"dead_units: the data ({type(data).__name__}) has no examples")
    rows = [{"modality": k[0], "network": k[1], "layer": k[2], "units": int(m.numel()),
             "dead": int((m <= 0).sum()), "fraction": float((m <= 0).float().mean())} for k, m in seen.items()]
    return pd.DataFrame(rows, columns=["modality", "network", "layer", "units", "dead", "fraction"])
