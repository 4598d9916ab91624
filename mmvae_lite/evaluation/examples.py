"""How metrics read data: datasets, dicts of tensors, a bare tensor, or any iterable of batches.

Data can be given as a dataset of :mod:`mmvae_lite.data` (anything with ``get_batch`` or
``batches``; labels from its ``labels``), a dict ``name -> Tensor`` (examples on the first axis;
labels from the ``labels=`` argument or a ``"label"`` key), a single tensor for a single-modality
model, or any iterable of dict batches. ``max_examples`` evaluates a seeded random subset (the
MNIST-SVHN pairs are stored sorted by digit, so "the first n" would be one digit only).
"""
from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional, Sequence

import torch

from .checks import check_int, model_names

__all__ = ["iterate_examples", "materialise", "num_examples", "total_examples", "batch_size_of", "one_batch"]

_LABEL_KEYS = ("label", "labels")


def num_examples(data: Any) -> Optional[int]:
    """The number of examples in ``data`` when it can be known without reading it, else None.

    A plain iterable of batches (a list, a generator) has no known count: its length counts batches.
    """
    if isinstance(data, torch.Tensor):
        return int(data.shape[0]) if data.dim() else 0
    if isinstance(data, Mapping):
        for v in data.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0]) if v.dim() else 0
        return None
    if isinstance(data, torch.utils.data.DataLoader):
        sampler = data.batch_sampler.sampler if data.batch_sampler is not None else data.sampler
        try:
            return None if data.drop_last else len(sampler)
        except TypeError:
            return None
    if hasattr(data, "get_batch") or hasattr(data, "batches"):
        try:
            return len(data)
        except TypeError:
            return None
    return None


def total_examples(data: Any, max_examples: Optional[int]) -> Optional[int]:
    """How many examples a metric will see (for progress bars): ``min(len(data), max_examples)``."""
    n = num_examples(data)
    if n is None:
        return max_examples
    return min(n, max_examples) if max_examples is not None else n


def batch_size_of(batch: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def _class_labels(labels: Any) -> torch.Tensor:
    """Labels as a LongTensor; float labels must hold whole numbers (NaN or 2.5 is no class)."""
    y = torch.as_tensor(labels)
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ValueError("labels must be whole class numbers; got non-integer or NaN values")
    return y.long()


def _bad_data(data: Any, arg: str) -> TypeError:
    return TypeError(f"{arg} must be a dataset (with get_batch or batches), a dict name -> Tensor, a Tensor, or an "
                     f"iterable of dict batches; got {type(data).__name__}")


def iterate_examples(data: Any, batch_size: int = 256, *, names: Optional[Sequence[str]] = None,
                     labels: Optional[torch.Tensor] = None, max_examples: Optional[int] = None,
                     seed: int = 0, device: "torch.device | str | None" = None, arg: str = "data",
                     ) -> Iterator[tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]]:
    """Yield ``(batch, labels)`` pairs in a fixed order; ``labels`` is None when there are none.

    Args:
        data: a dataset (``get_batch`` / ``batches``), a dict ``name -> Tensor``, a tensor (needs
            exactly one name in ``names``), or an iterable of dict batches (for one name also of
            tensors or ``(inputs, labels)`` pairs, as a DataLoader over image-label items yields).
        batch_size: examples per batch (>= 1).
        names: keep only these keys of each batch (the model's modalities).
        labels: (N,) labels aligned with ``data``; default ``data.labels`` or a ``"label"`` key.
        max_examples: use a seeded random subset of this size (kept in data order) when the
            data can be indexed; otherwise the first ``max_examples``. None: all.
        device: move batches and labels there.
        arg: the caller's name for ``data``, used in error messages.

    Raises:
        ValueError: for a bad ``batch_size`` / ``max_examples``, labels of the wrong length, or
            data without a single example.
        TypeError: for data of none of the kinds above.
    """
    batch_size = check_int(batch_size, "batch_size")
    max_examples = check_int(max_examples, "max_examples", none=True)
    if isinstance(data, torch.Tensor):
        if names is None or len(names) != 1:
            raise ValueError(f"{arg} is a bare tensor, which needs a single-modality model; pass a dict name -> tensor")
        data = {names[0]: data}
    if labels is None and isinstance(data, Mapping):
        labels = data.get("label", data.get("labels"))
    if labels is None and not isinstance(data, Mapping):
        labels = getattr(data, "labels", None)
    labels = _class_labels(labels) if labels is not None else None
    if isinstance(data, Mapping):
        sizes = {k: int(v.shape[0]) if v.dim() else 0 for k, v in data.items() if isinstance(v, torch.Tensor)}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"the tensors of {arg} must hold the same number of examples, got {sizes}")
    n = num_examples(data)
    if n == 0:
        raise ValueError(f"{arg} holds no examples")
    if labels is not None and n is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries but {arg} has {n} examples")
    keep = (lambda b: {k: v for k, v in b.items() if k in names}) if names is not None else \
        (lambda b: {k: v for k, v in b.items() if k not in _LABEL_KEYS})
    dev = torch.device(device) if device is not None else None

    def out(b: Mapping[str, torch.Tensor], y: Optional[torch.Tensor]):
        b = keep(b)
        if dev is not None:
            b = {k: v.to(dev) for k, v in b.items()}
            y = y.to(dev) if y is not None else None
        return b, y

    indexable = isinstance(data, Mapping) or hasattr(data, "get_batch")
    if indexable and n is not None:
        if max_examples is not None and max_examples < n:
            g = torch.Generator().manual_seed(int(seed))
            rows = torch.randperm(n, generator=g)[:max_examples].sort().values
        else:
            rows = torch.arange(n)
        for i in range(0, len(rows), batch_size):
            r = rows[i:i + batch_size]
            if isinstance(data, Mapping):
                b = {k: v[r] for k, v in data.items() if isinstance(v, torch.Tensor) and k not in _LABEL_KEYS}
            else:
                b = data.get_batch(r)
            yield out(b, labels[r] if labels is not None else None)
        return
    # sequential sources: dataset.batches(...) or an iterable of batches
    if hasattr(data, "batches"):
        it = data.batches(batch_size, shuffle=False)
    else:
        try:
            it = iter(data)
        except TypeError:
            raise _bad_data(data, arg) from None
    seen = 0
    for b in it:
        if isinstance(b, (tuple, list)) and len(b) == 2 and all(isinstance(t, torch.Tensor) for t in b):
            if names is None or len(names) != 1:
                raise ValueError(f"{arg} yields (inputs, labels) pairs, which need a single-modality model")
            b = {names[0]: b[0], "label": b[1]}          # e.g. a DataLoader over (image, label) items
        if isinstance(b, torch.Tensor):
            if names is None or len(names) != 1:
                raise ValueError(f"{arg} yields tensor batches, which need a single-modality model")
            b = {names[0]: b}
        if not isinstance(b, Mapping):
            raise TypeError(f"{arg} must yield dict batches name -> Tensor, got a {type(b).__name__}")
        b = dict(b)
        bs = batch_size_of({k: v for k, v in b.items() if k not in _LABEL_KEYS})
        y = b.pop("label", b.pop("labels", None))
        if y is None and labels is not None:
            y = labels[seen:seen + bs]
        if max_examples is not None and seen + bs > max_examples:
            cut = max_examples - seen
            b = {k: v[:cut] for k, v in b.items()}
            y = y[:cut] if y is not None else None
            bs = cut
        if bs <= 0:
            break
        yield out(b, _class_labels(y) if y is not None else None)
        seen += bs
        if max_examples is not None and seen >= max_examples:
            break
    if seen == 0:
        raise ValueError(f"{arg} holds no examples")


def materialise(data: Any, names: Sequence[str], *, labels: Optional[torch.Tensor] = None,
                max_examples: Optional[int] = None, seed: int = 0, batch_size: int = 1024, arg: str = "data",
                ) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    """All (or ``max_examples``) examples of ``data`` as CPU tensors ``{name: (N, ...)}`` and labels (N,)."""
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    ys: list[torch.Tensor] = []
    for b, y in iterate_examples(data, batch_size, names=names, labels=labels, max_examples=max_examples, seed=seed,
                                 arg=arg):
        for k in names:
            if k in b:
                parts[k].append(b[k].cpu())
        if y is not None:
            ys.append(y.cpu())
    return ({k: torch.cat(v) for k, v in parts.items() if v}, torch.cat(ys) if ys else None)


def one_batch(model: Any, batch: Any, fn: str) -> dict[str, torch.Tensor]:
    """A batch of examples for ``fn``: a dict name -> Tensor (a bare tensor for a single-modality VAE)."""
    names = model_names(model, fn)
    if isinstance(batch, torch.Tensor) and len(names) == 1:
        batch = {names[0]: batch}
    if not isinstance(batch, Mapping):
        raise TypeError(f"{fn}: batch must be a dict modality name -> Tensor, got {type(batch).__name__}")
    out = {k: v for k, v in batch.items() if k in names}
    if not out:
        raise ValueError(f"{fn}: batch holds none of the model's modalities {names}; it has {sorted(batch)}")
    if batch_size_of(out) == 0:
        raise ValueError(f"{fn}: batch holds no examples")
    return out
