"""Real data or stand-in: :func:`resolve_source` looks for the verified real files, downloads
what is missing when it may, and otherwise settles on the stand-in (SVHN, CUB) or raises a
clear :class:`~.files.DataError` (MNIST, which downloads anywhere that is online)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from .download import (OFFLINE_ENV, DownloadError, download_known, download_mnist, download_svhn,
                       downloads_enabled)
from .files import (DataError, PathLike, UnknownDatasetError, data_root, fetch_hint, find_file, known,
                    shown, verify_file, writable_dir)

__all__ = ["Source", "StandinMode", "resolve_source", "announce", "MNIST_FILES", "SVHN_FILES",
           "CUB_CAPTION_FILES"]

StandinMode = Literal["auto", "never", "always"]
TAG = "[mmvae_lite]"

#: The files each loader reads, per split.
MNIST_FILES = {
    "train": ("MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"),
    "test": ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"),
}
SVHN_FILES = {"train": "SVHN/train_32x32.mat", "test": "SVHN/test_32x32.mat"}
CUB_CAPTION_FILES = {"train": "cub/text_trainvalclasses.txt", "test": "cub/text_testclasses.txt"}

_SOURCE_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": MNIST_FILES,
    "svhn": {s: (f,) for s, f in SVHN_FILES.items()},
    "cub-captions": {s: tuple(CUB_CAPTION_FILES.values()) for s in ("train", "test")},
}
_HAS_STANDIN = {"mnist": False, "svhn": True, "cub-captions": True, "cub-images": True,
                "cub-features": True}
_LABEL = {"mnist": "MNIST", "svhn": "SVHN", "cub-captions": "CUB captions",
          "cub-images": "CUB images", "cub-features": "CUB ResNet-101 features"}


@dataclass(frozen=True)
class Source:
    """Where one modality of a dataset comes from.

    Attributes:
        kind: ``"real"`` or ``"standin"``.
        reason: one line saying what was found (or missing) and how to fetch it.
        name: the dataset name asked for.
        missing: the files or folders that were not found (for a stand-in).
    """

    kind: Literal["real", "standin"]
    reason: str
    name: str = ""
    missing: tuple[str, ...] = ()

    @property
    def is_real(self) -> bool:
        return self.kind == "real"

    def __str__(self) -> str:
        return f"{self.name}: {self.kind} ({self.reason})"


def announce(line: str, verbose: bool) -> None:
    """Print one banner line (the package's only way of talking while loading)."""
    if verbose:
        print(f"{TAG} {line}", flush=True)


def cub_image_dir(base: Path, split: str) -> Path:
    return base / "cub" / split


def cub_feature_file(base: Path, split: str) -> Path:
    return base / "cub" / "resnet101_2048" / f"{split}.ft"


def _download_missing(name: str, keys: list[str], base: Path, verbose: bool) -> tuple[str, str]:
    """Download the missing ``keys`` of ``name``; ``("", "")`` on success, else why not in a few
    words and in full (the file, its expected checksum)."""
    names = ", ".join(Path(k).name for k in keys)
    announce(f"{_LABEL[name]}: {names} not in {shown(base)}; downloading", verbose)
    try:
        if name == "mnist":
            download_mnist(base)
        elif name == "svhn":
            for k in keys:
                download_svhn(base, Path(k).stem.split("_")[0])
        else:
            for k in keys:
                download_known(k, base)
    except DownloadError as e:
        return f"download failed: {e.cause}", f"download failed: {e}"
    return "", ""


def resolve_source(name: str, root: Optional[PathLike] = None, standin: StandinMode = "auto",
                   split: Optional[str] = None, *, download: Optional[bool] = False,
                   verbose: bool = True) -> Source:
    """Decide between real data and the stand-in for dataset ``name``.

    Args:
        name: ``"mnist"``, ``"svhn"``, ``"cub-captions"``, ``"cub-images"`` or
            ``"cub-features"``.
        root: data directory (see :func:`~.files.data_root`).
        standin: ``"auto"`` (real when present and verified, else stand-in),
            ``"never"`` (real or :class:`DataError`), ``"always"`` (stand-in).
        split: ``"train"`` or ``"test"``; ``None`` checks both.
        download: fetch missing files first (MNIST, SVHN, the CUB test-class captions):
            ``True``, ``False`` (the default here: only look), or ``None`` (yes unless
            ``$MMVAE_LITE_OFFLINE`` is set; what the loaders pass).
        verbose: print the download banner.

    Returns:
        A :class:`Source`. Real files are verified against :data:`~.files.KNOWN_FILES`.

    Raises:
        DataError: a present file is corrupt; or files are missing (and could not be
            downloaded) and ``standin="never"`` or the dataset has no stand-in, like MNIST.
        UnknownDatasetError: unknown ``name``.
    """
    if standin not in ("auto", "never", "always"):
        raise ValueError(f"standin must be 'auto', 'never' or 'always', got {standin!r}")
    if name not in _HAS_STANDIN:
        raise UnknownDatasetError(
            f"unknown data source {name!r}; valid names: {', '.join(_HAS_STANDIN)}")
    splits = [split] if split is not None else ["train", "test"]
    for s in splits:
        if s not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {s!r}")
    base = data_root(root)
    label = _LABEL[name]
    if standin == "always":
        if not _HAS_STANDIN[name]:
            raise DataError(f"{label} has no stand-in; use standin='auto' or 'never'.")
        return Source("standin", "stand-in requested (standin='always')", name)

    missing: list[str] = []
    found: list[Path] = []
    note = full_note = ""
    downloaded = False
    hint_module = "data_prep.cub" if name.startswith("cub") else "data_prep.mnist_svhn"
    if name in _SOURCE_FILES:
        keys = sorted({k for s in splits for k in _SOURCE_FILES[name][s]})
        absent = [k for k in keys if find_file(k, base) is None]
        fetchable = [k for k in absent if name != "cub-captions" or known(k).url]
        if fetchable and not downloads_enabled(download):
            note = f"downloads are off (${OFFLINE_ENV})" if download is None else ""
        elif fetchable and not writable_dir(base):
            note = "the data directory is read-only, so nothing was downloaded"
        elif fetchable:
            note, full_note = _download_missing(name, fetchable, base, verbose)
            downloaded = not note
        for key in keys:
            path = find_file(key, base)
            if path is None:
                missing.append(Path(key).name)
            else:
                verify_file(path, key, base)  # corrupt -> DataError, even in "auto"
                found.append(path.parent)
    elif name == "cub-images":
        for s in splits:
            d = cub_image_dir(base, s)
            if not (d.is_dir() and any(d.iterdir())):
                missing.append(f"cub/{s}/ image folders")
            else:
                found.append(d)
    else:  # cub-features
        for s in splits:
            p = cub_feature_file(base, s)
            if not p.is_file():
                missing.append(f"cub/resnet101_2048/{s}.ft")
            else:
                found.append(p.parent)
    hint = fetch_hint(hint_module, base) + (" --features" if name == "cub-features" else "")
    if not missing:
        where = shown(found[0] if len(set(found)) == 1 else base)
        done = "downloaded and verified into" if downloaded else "verified files in"
        return Source("real", f"{done} {where}", name)
    what = ", ".join(missing) + f" not found in {shown(base)}"
    if standin == "never" or not _HAS_STANDIN[name]:
        full = full_note or note
        raise DataError(f"{label}: {what}{f'; {full}' if full else ''}.\nFetch with: {hint}")
    return Source("standin", f"{what}{f'; {note}' if note else ''}; fetch with: {hint}", name,
                  tuple(missing))
