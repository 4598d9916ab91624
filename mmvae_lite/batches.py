"""Batches: iterate any data source in batches, and turn a batch into what a model takes.

Data sources: anything with a ``batches(batch_size, shuffle=..., generator=..., device=...)``
method (the datasets of :mod:`mmvae_lite.data`), a tensor or dict of tensors with the examples on
the first axis, or any re-iterable of batches (e.g. a ``torch.utils.data.DataLoader`` over the datasets,
whose items are dicts ``{modality: tensor, "label": ...}``, so its default collate makes dicts of
batches; :func:`model_batch` also takes the tuples and lists of other datasets).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Optional, Union

import torch
import torch.nn as nn

from .models import RESERVED_NAMES

Batch = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (a tensor, or dicts/lists/tuples of them) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch) if type(batch) in (list, tuple) else batch
    return batch


def _is_labels(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 1 and not x.is_floating_point()


def model_batch(batch: Any, model: nn.Module) -> Any:
    """The batch ``model`` takes, from a batch as data sources yield it.

    * a dict ``{modality: tensor}``: the label keys (``"label"``, ``"labels"``) are dropped;
    * a tensor: as it is (a single-modality model);
    * a tuple or list, as ``DataLoader``'s default collate makes of tuple items: one entry per
      modality in the model's order (:attr:`~mmvae_lite.models.MultimodalVAE.names`), each a
      tensor or a ``(tensor, labels)`` pair, with or without labels (1-D integer tensors, dropped).

    Models other than :class:`~mmvae_lite.models.VAE` / :class:`~mmvae_lite.models.MultimodalVAE`
    get the batch unchanged.
    """
    names = list(getattr(model, "names", None) or [])
    if not names and not isinstance(getattr(model, "name", None), str):
        return batch
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k not in RESERVED_NAMES}
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (list, tuple)):
        parts = [p[0] if isinstance(p, (list, tuple)) and len(p) == 2 and _is_labels(p[1]) else p for p in batch]
        parts = [p for p in parts if not _is_labels(p)]     # labels (B,); data is (B, *event), never 1-D integers
        n = max(len(names), 1)
        if len(parts) == n and all(isinstance(p, torch.Tensor) for p in parts):
            return dict(zip(names, parts)) if names else parts[0]
        kinds = [type(p).__name__ if not isinstance(p, torch.Tensor) else f"Tensor{tuple(p.shape)}" for p in batch]
        raise TypeError(f"a batch of {len(batch)} entries ({', '.join(kinds)}) for a model of "
                        f"{n} modalit{'ies' if n > 1 else 'y'} {names or [model.name]}: expected one tensor per "
                        f"modality in that order, optionally followed by labels, or a dict {{modality: tensor}}")
    raise TypeError(f"a batch must be a tensor, a dict {{modality: tensor}} or a tuple/list of tensors; "
                    f"got {type(batch).__name__}")


def batch_rows(batch: Any) -> int:
    """The number of examples in a (normalised) batch."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping) and batch:
        return batch_rows(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return batch_rows(batch[0])
    return 0


def iterate_batches(data: Any, batch_size: int, shuffle: bool = True, generator: Optional[torch.Generator] = None,
                    device: "torch.device | None" = None) -> Iterator[Batch]:
    """Yield batches from any supported data source (see the module docstring)."""
    if hasattr(data, "batches"):
        yield from data.batches(batch_size, shuffle=shuffle, generator=generator, device=device)
        return
    if isinstance(data, (torch.Tensor, Mapping)):
        if isinstance(data, Mapping) and not data:
            return
        if isinstance(data, Mapping):
            lengths = {k: (len(v) if hasattr(v, "__len__") else None) for k, v in data.items()}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"the fields of the data have different lengths {lengths}: one row per example")
        first = data if isinstance(data, torch.Tensor) else next(iter(data.values()))
        n = first.shape[0]
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            b = data[idx] if isinstance(data, torch.Tensor) else {k: v[idx] for k, v in data.items()}
            yield to_device(b, device) if device is not None else b
        return
    for b in data:
        yield to_device(b, device) if device is not None else b


def num_batches(data: Any, batch_size: int) -> Optional[int]:
    """Batches per epoch, or None when the source has no length."""
    try:
        n = len(data) if not isinstance(data, Mapping) else (len(next(iter(data.values()))) if data else 0)
    except TypeError:
        return None
    if hasattr(data, "batches") or isinstance(data, (torch.Tensor, Mapping)):
        return math.ceil(n / batch_size)
    return n


__all__ = ["Batch", "iterate_batches", "num_batches", "model_batch", "batch_rows", "to_device"]
