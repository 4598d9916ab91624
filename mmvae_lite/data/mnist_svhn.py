"""MNIST, SVHN and the MNIST-SVHN pairs of the paper's first experiment.

MNIST and SVHN are read by ``torchvision.datasets.MNIST`` / ``SVHN`` from torchvision's own
layout in the data directory (``MNIST/raw/``; ``SVHN/`` or the ``.mat`` files at the top),
after their files were checked against :data:`~.files.KNOWN_FILES` (and, when missing,
downloaded through torchvision: see :mod:`.download`). SVHN falls back to the house-number
stand-in. What torchvision lacks is here: the same-digit pairing of the two (:func:`pair_indices`,
cached per data directory) and the one-line banners.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import torch

from . import standins
from .datasets import GatherDataset, LabelledImages, subset_rows
from .files import DataError, PathLike, cache_dir, data_root, fetch_hint, find_file, shown
from .sources import MNIST_FILES, SVHN_FILES, Source, StandinMode, announce, resolve_source

__all__ = ["MNISTSVHN", "load_mnist", "load_svhn", "pair_indices", "load_mnist_svhn",
           "SVHN_STANDIN_SIZE", "STANDIN_SEED"]

#: Size of the SVHN stand-in per split (the real dataset's sizes).
SVHN_STANDIN_SIZE = {"train": 73257, "test": 26032}
#: Seeds of the stand-in data per split (fixed: the *data* must not depend on run seeds).
STANDIN_SEED = {"train": 0, "test": 1}
_PAIRING_VERSION = 1


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _read_mnist(split: str, base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    # torchvision's IDX readers on the two files of this split (resolve_source found and verified
    # them). The MNIST class itself would insist on all four files, whichever split is asked for,
    # and would prefer a stale MNIST/processed/*.pt over the checked raw files.
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images, labels = (find_file(key, base) for key in MNIST_FILES[split])
    assert images is not None and labels is not None
    try:
        return read_image_file(str(images)).unsqueeze(1).contiguous(), read_label_file(str(labels)).long()
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as e:
        raise DataError(f"MNIST {split}: torchvision could not read {shown(images.parent)} "
                        f"({e}); delete the files and fetch them again with "
                        f"`{fetch_hint('data_prep.mnist_svhn', base)}`.") from None


def _read_svhn(split: str, base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision.datasets import SVHN

    path = find_file(SVHN_FILES[split], base)
    assert path is not None  # resolve_source found and verified it
    # resolve_source verified the file against KNOWN_FILES (hashed once, then recorded);
    # torchvision would md5 the 182 MB again on every load
    verified = type("SVHN", (SVHN,), {"_check_integrity": lambda self: True})
    try:
        ds = verified(str(path.parent), split=split, download=False)
    except Exception as e:  # torchvision (scipy underneath) raises many types for bad files
        raise DataError(f"{shown(path)} could not be read as an SVHN .mat file ({e}); delete it and "
                        f"fetch it again with `{fetch_hint('data_prep.mnist_svhn', base)}`.") from None
    # torchvision stores digit 0 as label 0 already (SVHN's files say 10)
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))


def _mnist_arrays(split: str, base: Path, download: Optional[bool],
                  verbose: bool) -> tuple[torch.Tensor, torch.Tensor, Source, str]:
    src = resolve_source("mnist", base, "never", split, download=download, verbose=verbose)
    images, labels = _read_mnist(split, base)
    line = f"MNIST {split}: real, {len(labels)} images ({src.reason})"
    announce(line, verbose)
    return images, labels, src, line


def _svhn_arrays(split: str, base: Path, standin: StandinMode, download: Optional[bool],
                 verbose: bool) -> tuple[torch.Tensor, torch.Tensor, Source, str]:
    src = resolve_source("svhn", base, standin, split, download=download, verbose=verbose)
    if src.is_real:
        images, labels = _read_svhn(split, base)
        line = f"SVHN {split}: real, {len(labels)} images ({src.reason})"
    else:
        images, labels = standins.house_numbers(SVHN_STANDIN_SIZE[split], STANDIN_SEED[split],
                                                cache_dir=cache_dir(base))
        line = (f"SVHN {split}: stand-in house-number digits, {len(labels)} images "
                f"({src.reason})")
    announce(line, verbose)
    return images, labels, src, line


class MNISTSVHN(GatherDataset):
    """Pairs of MNIST and SVHN images of the same digit.

    Holds the two uint8 base tensors (MNIST (M, 1, 28, 28), SVHN (S, 3, 32, 32)) and two
    index tensors (N,) -- a million pairs cost 16 MB of indices, not gigabytes of floats.

    ``dataset[i] -> {"mnist": float (1, 28, 28), "svhn": float (3, 32, 32), "label": int64}``;
    :meth:`batches` yields ``{"mnist": (B, 1, 28, 28), "svhn": (B, 3, 32, 32)}`` floats in [0, 1].
    """

    def __init__(self, mnist: torch.Tensor, svhn: torch.Tensor, mnist_index: torch.Tensor,
                 svhn_index: torch.Tensor, labels: torch.Tensor, source: Mapping[str, Source],
                 banner: str = "") -> None:
        super().__init__({"mnist": mnist, "svhn": svhn},
                         {"mnist": mnist_index, "svhn": svhn_index}, labels, source, banner)

    @property
    def mnist_index(self) -> torch.Tensor:
        """Row of the MNIST base tensor for every pair, LongTensor (N,)."""
        return self.index["mnist"]  # type: ignore[return-value]

    @property
    def svhn_index(self) -> torch.Tensor:
        """Row of the SVHN base tensor for every pair, LongTensor (N,)."""
        return self.index["svhn"]  # type: ignore[return-value]


def load_mnist(split: str = "train", root: Optional[PathLike] = None,
               subset: Optional[int] = None, seed: int = 0, verbose: bool = True,
               download: Optional[bool] = None) -> LabelledImages:
    """Real MNIST, downloaded when missing (there is no stand-in; it downloads anywhere).

    ``download``: fetch missing files (``None``: yes unless ``$MMVAE_LITE_OFFLINE`` is set).

    Returns:
        :class:`LabelledImages`; ``batches()`` yields ``{"mnist": float (B, 1, 28, 28)}``
        in [0, 1]; ``.labels`` int64 (N,); ``.bases["mnist"]`` uint8 (N, 1, 28, 28).

    Raises:
        DataError: files missing (and not downloadable) or corrupt, with the command that
            fetches them.
    """
    check_split(split)
    base = data_root(root)
    images, labels, src, line = _mnist_arrays(split, base, download, verbose)
    rows = subset_rows(len(labels), subset, seed)
    if rows is not None:
        images, labels = images[rows], labels[rows]
    return LabelledImages("mnist", images, labels, src, line)


def load_svhn(split: str = "train", root: Optional[PathLike] = None,
              standin: StandinMode = "auto", subset: Optional[int] = None, seed: int = 0,
              verbose: bool = True, download: Optional[bool] = None) -> LabelledImages:
    """SVHN, downloaded when missing, or the house-number stand-in when that fails.

    Returns:
        :class:`LabelledImages`; ``batches()`` yields ``{"svhn": float (B, 3, 32, 32)}``
        in [0, 1]; ``.labels`` int64 (N,) with digit 0 as label 0 (SVHN stores 10).
    """
    check_split(split)
    base = data_root(root)
    images, labels, src, line = _svhn_arrays(split, base, standin, download, verbose)
    rows = subset_rows(len(labels), subset, seed)
    if rows is not None:
        images, labels = images[rows], labels[rows]
    return LabelledImages("svhn", images, labels, src, line)


def pair_indices(labels_a: torch.Tensor, labels_b: torch.Tensor, multiplier: int = 20,
                 max_per_class: int = 10000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly pair instances of two labelled sets that share a class.

    For every class ``c`` present in both sets, ``n_c = min(#a_c, #b_c, max_per_class)``
    instances of each set are drawn at random; then ``multiplier`` times, independent
    random permutations of the two groups are matched. Every selected instance of
    either set thus appears in exactly ``multiplier`` pairs, each time with a random
    same-class partner (the scheme of the MMVAE authors' ``rand_match_on_idx``).

    Returns:
        ``(idx_a, idx_b)``, LongTensors of equal length ``multiplier * sum_c n_c`` with
        ``labels_a[idx_a] == labels_b[idx_b]``.
    """
    if multiplier < 1 or max_per_class < 1:
        raise ValueError("multiplier and max_per_class must be >= 1")
    labels_a = torch.as_tensor(labels_a).long()
    labels_b = torch.as_tensor(labels_b).long()
    g = torch.Generator().manual_seed(int(seed))
    out_a, out_b = [], []
    classes = sorted(set(labels_a.unique().tolist()) & set(labels_b.unique().tolist()))
    for c in classes:
        ia = torch.nonzero(labels_a == c).flatten()
        ib = torch.nonzero(labels_b == c).flatten()
        n = min(len(ia), len(ib), max_per_class)
        ia = ia[torch.randperm(len(ia), generator=g)[:n]]
        ib = ib[torch.randperm(len(ib), generator=g)[:n]]
        for _ in range(multiplier):
            out_a.append(ia[torch.randperm(n, generator=g)])
            out_b.append(ib[torch.randperm(n, generator=g)])
    if not out_a:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty.clone()
    return torch.cat(out_a), torch.cat(out_b)


def _cached_pairs(split: str, labels_a: torch.Tensor, labels_b: torch.Tensor, multiplier: int,
                  max_per_class: int, seed: int, cdir: Optional[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    h = hashlib.sha256()
    for t in (labels_a, labels_b):
        h.update(t.numpy().astype(np.int64).tobytes())
    h.update(f"{multiplier}|{max_per_class}|{seed}|{_PAIRING_VERSION}".encode())
    path = cdir / f"mnist_svhn_{split}_idx_{h.hexdigest()[:16]}.pt" if cdir else None
    if path is not None and path.is_file():
        try:
            d = torch.load(path, weights_only=True)
            return d["mnist"], d["svhn"]
        except Exception:
            pass  # unreadable cache: rebuild
    ia, ib = pair_indices(labels_a, labels_b, multiplier, max_per_class, seed)
    if path is not None:
        tmp: Optional[str] = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            torch.save({"mnist": ia, "svhn": ib}, tmp)
            os.replace(tmp, path)
        except (OSError, RuntimeError):   # the cache is optional (torch.save reports a full disk as RuntimeError)
            pass
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return ia, ib


def load_mnist_svhn(split: str = "train", root: Optional[PathLike] = None, multiplier: int = 20,
                    max_per_class: int = 10000, subset: Optional[int] = None, seed: int = 0,
                    standin: StandinMode = "auto", verbose: bool = True,
                    download: Optional[bool] = None) -> MNISTSVHN:
    """MNIST-SVHN pairs showing the same digit.

    Args:
        split: ``"train"`` or ``"test"``.
        root: data directory (see :func:`data_root`).
        multiplier: pairs per instance. The paper's text says each instance is paired
            with 20 same-class instances of the other set (default); the authors'
            released ``make-mnist-svhn-idx.py`` uses 30.
        max_per_class: at most this many instances per class and dataset (authors: 10000).
        subset: keep only this many pairs, drawn at random (deterministic in ``seed``),
            for quick runs.
        seed: seed of the pairing and the subset (the SVHN stand-in itself is fixed).
        standin: SVHN stand-in policy, see :func:`resolve_source`.
        verbose: print the one-line source banner of each modality.
        download: fetch missing MNIST/SVHN files (``None``: yes unless ``$MMVAE_LITE_OFFLINE``).

    Returns:
        :class:`MNISTSVHN`; ``batches()`` yields ``{"mnist": float (B, 1, 28, 28),
        "svhn": float (B, 3, 32, 32)}`` in [0, 1]; ``.labels`` int64 (N,).
    """
    check_split(split)
    base = data_root(root)
    m_img, m_lab, m_src, m_line = _mnist_arrays(split, base, download, verbose)
    s_img, s_lab, s_src, s_line = _svhn_arrays(split, base, standin, download, verbose)
    ia, ib = _cached_pairs(split, m_lab, s_lab, multiplier, max_per_class, seed, cache_dir(base))
    labels = m_lab[ia]
    rows = subset_rows(len(ia), subset, seed)
    if rows is not None:
        ia, ib, labels = ia[rows], ib[rows], labels[rows]
    line = (f"MNIST-SVHN {split}: {len(ia)} pairs (multiplier {multiplier}, at most "
            f"{max_per_class} per class, seed {seed}"
            + (f", subset {len(ia)}" if rows is not None else "") + ")")
    announce(line, verbose)
    return MNISTSVHN(m_img, s_img, ia, ib, labels, {"mnist": m_src, "svhn": s_src},
                     "\n".join((m_line, s_line, line)))
