"""The datasets' common form: base tensors plus index tensors, batches by one vectorised gather.

Every dataset keeps its images as uint8 base tensors plus index tensors, and
:meth:`GatherDataset.batches` builds each batch with one gather (and moves the base tensors
to the training device once), so no per-item Python runs in the training loop. The
``torch.utils.data.Dataset`` interface works too: ``dataset[i]`` is a dict keyed by modality
name (plus ``"label"`` where there are labels), so a standard ``DataLoader`` with its default
collate yields the same dicts of batched tensors as :meth:`GatherDataset.batches`.
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping, Optional, Sequence, Union

import torch

from .files import DataError
from .sources import Source

__all__ = ["GatherDataset", "LabelledImages", "subset_rows"]


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


#: Base dtypes a dataset holds as they are: uint8 pictures (returned as float in [0, 1]),
#: float32 features, int64 token ids.
_KEPT = (torch.uint8, torch.float32, torch.int64)


def _checked_base(name: str, base: torch.Tensor) -> torch.Tensor:
    """Other float dtypes (float64, float16, bfloat16) become float32, the models' dtype;
    anything else is refused with a message naming the field."""
    if not isinstance(base, torch.Tensor):
        raise TypeError(f"field {name!r} must be a torch.Tensor, got {type(base).__name__}")
    if base.dtype in _KEPT:
        return base
    if base.is_floating_point():
        return base.float()
    raise TypeError(f"field {name!r} has dtype {base.dtype}; accepted: uint8 images (scaled to "
                    f"[0, 1]), floating point (as float32) or int64 token ids")


class GatherDataset(torch.utils.data.Dataset):
    """Rows built by gathering from base tensors; the common base of all datasets here.

    Field ``k`` of row ``i`` is ``bases[k][index[k][i]]`` (or ``bases[k][i]`` when
    ``index[k]`` is ``None``). uint8 bases are returned as float in [0, 1]; other
    dtypes (features, token ids) as they are.

    Attributes:
        bases: field name -> base tensor.
        index: field name -> LongTensor (N,) of base rows, or None for the identity.
        labels: LongTensor (N,) of class labels, or None.
        source: field name -> :class:`Source`.
        banner: human-readable lines describing the data (printed when loaded).
    """

    def __init__(self, bases: Mapping[str, torch.Tensor],
                 index: Optional[Mapping[str, Optional[torch.Tensor]]] = None,
                 labels: Optional[torch.Tensor] = None,
                 source: Optional[Mapping[str, Source]] = None, banner: str = "") -> None:
        self.bases = {k: _checked_base(k, v) for k, v in bases.items()}
        self.index = {k: (index or {}).get(k) for k in self.bases}
        lengths = {k: (len(ix) if ix is not None else len(self.bases[k]))
                   for k, ix in self.index.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"fields have different lengths: {lengths}")
        self._n = next(iter(lengths.values())) if lengths else 0
        if labels is not None and len(labels) != self._n:
            raise ValueError(f"labels have length {len(labels)}, expected {self._n}")
        self.labels = labels
        self.source = dict(source or {})
        self.banner = banner
        self._device_copies: dict[str, tuple[dict, dict, Optional[torch.Tensor]]] = {}

    @property
    def keys(self) -> tuple[str, ...]:
        """Names of the fields yielded by :meth:`batches`."""
        return tuple(self.bases)

    def __len__(self) -> int:
        return self._n

    def _item(self, i: int) -> dict[str, torch.Tensor]:
        if not -self._n <= i < self._n:
            raise IndexError(f"index {i} out of range for dataset of length {self._n}")
        i = i % self._n
        out = {}
        for k, base in self.bases.items():
            ix = self.index[k]
            out[k] = _to_float(base[int(ix[i]) if ix is not None else i])
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Row ``i`` as ``{field: tensor, ..., "label": int64 scalar}`` (no label key when
        unlabelled): the format of :meth:`batches` without the batch axis."""
        item = self._item(int(i))
        if self.labels is not None:
            item["label"] = self.labels[int(i)]
        return item

    def _on(self, device: Optional[Union[str, torch.device]]):
        if device is None:
            return self.bases, self.index, self.labels
        key = str(torch.device(device))
        if key not in self._device_copies:
            dev = torch.device(device)
            self._device_copies[key] = (
                {k: v.to(dev) for k, v in self.bases.items()},
                {k: (v.to(dev) if v is not None else None) for k, v in self.index.items()},
                self.labels.to(dev) if self.labels is not None else None,
            )
        return self._device_copies[key]

    def get_batch(self, rows: Union[Sequence[int], torch.Tensor],
                  device: Optional[Union[str, torch.device]] = None,
                  with_labels: bool = False) -> dict[str, torch.Tensor]:
        """Gather the given rows into a batch dict (same format as :meth:`batches`)."""
        bases, index, labels = self._on(device)
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        if device is not None:
            rows_t = rows_t.to(device)
        out: dict[str, torch.Tensor] = {}
        for k, base in bases.items():
            ix = index[k]
            out[k] = _to_float(base[ix[rows_t] if ix is not None else rows_t])
        if with_labels:
            if labels is None:
                raise DataError("this dataset has no labels (with_labels=True)")
            out["label"] = labels[rows_t]
        return out

    def batches(self, batch_size: int, shuffle: bool = True,
                generator: Optional[torch.Generator] = None,
                device: Optional[Union[str, torch.device]] = None, drop_last: bool = False,
                with_labels: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Iterate over the dataset in batches built by vectorised gathers.

        Args:
            batch_size: rows per batch.
            shuffle: random order (from ``generator``, a CPU ``torch.Generator``).
            generator: source of the permutation; ``None`` uses torch's global RNG.
            device: move base tensors there once (cached) and build batches there.
            drop_last: drop a final incomplete batch.
            with_labels: add a ``"label"`` LongTensor (B,) to every batch.

        Yields:
            ``dict[str, Tensor]`` with one entry per field (see :attr:`keys`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = self._n
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if device is not None:
            order = order.to(device)
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.get_batch(order[start:start + batch_size], device, with_labels)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Number of batches :meth:`batches` yields."""
        return self._n // batch_size if drop_last else math.ceil(self._n / batch_size)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}: {tuple(v.shape[1:])} {str(v.dtype).replace('torch.', '')}"
                           for k, v in self.bases.items())
        kinds = ", ".join(f"{k}={s.kind}" for k, s in self.source.items())
        return f"{type(self).__name__}(n={self._n}, {fields}; {kinds})"


class LabelledImages(GatherDataset):
    """One image modality with labels (MNIST or SVHN); ``dataset[i] -> {key: image, "label": label}``."""

    def __init__(self, key: str, images: torch.Tensor, labels: torch.Tensor, source: Source,
                 banner: str = "") -> None:
        super().__init__({key: images}, labels=labels, source={key: source}, banner=banner)
        self.key = key


def subset_rows(n: int, subset: Optional[int], seed: int) -> Optional[torch.Tensor]:
    if subset is None:
        return None
    if subset < 1:
        raise ValueError(f"subset must be a positive number of rows, got {subset}")
    if subset >= n:
        return None
    g = torch.Generator().manual_seed(int(seed) + 7919)
    # random order, not sorted: pair files are grouped by class, and the first rows of a subset
    # are what a chapter shows as "examples"
    return torch.randperm(n, generator=g)[:subset]


