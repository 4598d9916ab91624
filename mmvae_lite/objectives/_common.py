"""Helpers shared by the objectives: argument checks, log-mean-exp and the DReG/STL surrogate."""
from __future__ import annotations

import math
import numbers
from typing import Callable, Literal, Mapping

import torch

from ..models import Batch, MultimodalVAE

Gradient = Literal["dreg", "stl"]
Objective = Callable[..., torch.Tensor]


def check_K(K: object) -> int:
    """``K`` must be an integer >= 1 (a bool is not accepted); returns it as an int."""
    if isinstance(K, bool) or not isinstance(K, numbers.Integral) or K < 1:
        raise ValueError(f"K (samples per modality) must be an integer >= 1, got {K!r}")
    return int(K)


def check_x(x: "torch.Tensor | Batch") -> None:
    """A unimodal input (tensor or one-entry batch) must hold at least one example."""
    tensors = x.values() if isinstance(x, Mapping) else [x]
    for t in tensors:
        if isinstance(t, torch.Tensor) and (t.dim() == 0 or t.shape[0] == 0):
            raise ValueError(f"x (the batch) must hold at least one example; got shape {tuple(t.shape)}")


def check_batch(model: MultimodalVAE, batch: Batch) -> None:
    """A multimodal batch must be non-empty and give every modality the same number of examples."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a dict of modality name -> tensor, got {type(batch).__name__}")
    sizes = {n: (tuple(t.shape)[0] if isinstance(t, torch.Tensor) and t.dim() else None)
             for n, t in batch.items() if n in model.modalities}
    if any(s in (0, None) for s in sizes.values()):
        raise ValueError(f"batch must hold at least one example per modality; got batch sizes {sizes}")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"batch: every modality needs the same number of examples; got batch sizes {sizes}")


def check_gradient(gradient: object) -> None:
    if gradient not in ("dreg", "stl"):
        raise ValueError(f"gradient must be 'dreg' or 'stl', got {gradient!r}")


def log_mean_exp(x: torch.Tensor, dim: "int | tuple[int, ...]" = 0) -> torch.Tensor:
    """log (1/n sum exp x) over ``dim`` (one axis or several), computed stably."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    n = math.prod(x.shape[d] for d in dims)
    return torch.logsumexp(x, dim=dims) - math.log(n)


def reweighted(lw: torch.Tensor, z: torch.Tensor, dims: tuple[int, ...], gradient: Gradient) -> torch.Tensor:
    """IWAE value over ``dims`` with the eq. (8) (DReG) or STL surrogate gradient.

    ``lw`` must use detached-q densities. The encoder receives ``sum_k w~_k^2 dlogw_k/dz_k dz_k/dphi``
    (``"dreg"``) or ``sum_k w~_k dlogw_k/dz_k dz_k/dphi`` (``"stl"``); the decoder and prior receive
    ``sum_k w~_k grad log w_k``. Eq. (8) is an unbiased gradient of the bound only when every
    sample is drawn from the proposal q that divides the weights (see the package docstring).
    """
    check_gradient(gradient)
    lse = torch.logsumexp(lw, dim=dims, keepdim=True)
    with torch.no_grad():
        w = (lw - lse).exp()                          # normalised weights, w~_k
    if gradient == "dreg" and z.requires_grad:
        # d/dz of sum_k w~_k log w_k is w~_k dlogw_k/dz; scaling it by w~_k again gives eq. 8.
        # (cast back: under bf16 autocast z is bf16 while the weights are float32)
        z.register_hook(lambda g: (g * w.unsqueeze(-1)).to(g.dtype))
    surrogate = (w * lw).sum(dims)                    # gradient: sum_k w~_k grad log w_k
    value = (lse.squeeze(dims) - math.log(math.prod(lw.shape[d] for d in dims))).detach()
    return value + (surrogate - surrogate.detach())
