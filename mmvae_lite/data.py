"""Datasets for the MMVAE experiments: MNIST, SVHN, MNIST-SVHN pairs and CUB image-captions.

Where the data live
    :func:`data_root` picks the data directory: an explicit ``root`` argument, else the
    environment variable ``MMVAE_LITE_DATA``, else ``~/.cache/mmvae_lite``. Two layouts
    are understood: this package's (``mnist/*.gz``, ``svhn/*.mat``, ``cub/...``) and
    torchvision's (``MNIST/raw/*.gz``, ``SVHN/*.mat`` or the ``.mat`` files at the top).
    Derived files (pair indices, stand-in arrays, checksum records) go to
    :func:`cache_dir`, which is inside the data directory when that is writable and
    under ``~/.cache/mmvae_lite/derived`` otherwise.

Real or stand-in
    Every loader asks :func:`resolve_source` whether the real files are present and
    intact (checked against the checksums in :data:`KNOWN_FILES`). If they are missing
    it falls back to a synthetic stand-in from :mod:`mmvae_lite.standins` (SVHN and
    CUB only) and prints one line saying so and how to fetch the real files;
    ``standin="never"`` turns that into a :class:`DataError`, ``standin="always"``
    forces the stand-in. A file that is present but corrupt is always an error.

Fast batches
    Every dataset keeps its images as uint8 base tensors plus index tensors, and
    :meth:`GatherDataset.batches` builds each batch with one vectorised gather (and
    moves the base tensors to the training device once), so no per-item Python runs
    in the training loop. The ``torch.utils.data.Dataset`` interface works too.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from . import standins

__all__ = [
    "DataError",
    "UnknownDatasetError",
    "VocabMismatchError",
    "CaptionTooLongError",
    "KnownFile",
    "KNOWN_FILES",
    "Source",
    "data_root",
    "cache_dir",
    "find_file",
    "verify_file",
    "require_file",
    "file_status",
    "resolve_source",
    "read_idx",
    "GatherDataset",
    "LabelledImages",
    "MNISTSVHN",
    "CUBDataset",
    "Vocab",
    "tokenize",
    "pair_indices",
    "load_mnist",
    "load_svhn",
    "load_mnist_svhn",
    "load_cub",
    "load_dataset",
    "experiment_data",
    "DATASET_NAMES",
]

PathLike = Union[str, "os.PathLike[str]"]
StandinMode = Literal["auto", "never", "always"]

#: Environment variable naming the data directory.
DATA_ENV = "MMVAE_LITE_DATA"
#: Environment variable overriding the directory for derived/cached files.
CACHE_ENV = "MMVAE_LITE_CACHE"
_TAG = "[mmvae_lite]"


# ======================================================================================
# errors
# ======================================================================================
class DataError(RuntimeError):
    """A data file or dataset request is wrong; the message says what and how to fix it."""


class UnknownDatasetError(DataError, ValueError):
    """:func:`load_dataset` (or :func:`resolve_source`) got a name it does not know."""


class VocabMismatchError(DataError, ValueError):
    """A vocabulary differs from the one a model/checkpoint was trained with."""


class CaptionTooLongError(DataError, ValueError):
    """A caption has more tokens than the maximum sentence length (``on_long="error"``)."""


# ======================================================================================
# known files and checksums
# ======================================================================================
@dataclass(frozen=True)
class KnownFile:
    """A data file this package knows how to check.

    Attributes:
        key: canonical path relative to the data directory (this package's layout).
        layouts: every relative path where the file is accepted, in search order.
        algo: ``"sha256"``, ``"md5"`` or ``"git-blob-sha1"`` (git's object id of the
            file, ``sha1(b"blob <size>\\0" + content)``).
        digest: expected hex digest for ``algo``.
        size: expected size in bytes, when known.
        fetch: python module that downloads it (``python -m <fetch> --root DIR``).
        note: provenance of the checksum.
    """

    key: str
    layouts: tuple[str, ...]
    algo: str
    digest: str
    size: Optional[int]
    fetch: str
    note: str = ""


def _mnist_file(name: str, sha256: str, size: int) -> KnownFile:
    return KnownFile(f"mnist/{name}", (f"mnist/{name}", f"MNIST/raw/{name}"), "sha256", sha256,
                     size, "data_prep.mnist_svhn", "sha256 of the original LeCun et al. file")


def _svhn_file(name: str, md5: str, size: int) -> KnownFile:
    return KnownFile(f"svhn/{name}", (f"svhn/{name}", f"SVHN/{name}", name), "md5", md5, size,
                     "data_prep.mnist_svhn", "md5 published by torchvision.datasets.SVHN")


#: Every raw file the loaders read, with its checksum.
KNOWN_FILES: dict[str, KnownFile] = {
    f.key: f
    for f in (
        _mnist_file("train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        _mnist_file("train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        _mnist_file("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        _mnist_file("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
        _svhn_file("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", 182040794),
        _svhn_file("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", 64275384),
        KnownFile("cub/text_testclasses.txt", ("cub/text_testclasses.txt",), "sha256",
                  "839b13171b614b12efb08737dcbab3bd0f1d0dfe8700cfb4fd0d68233b42c7fd", 2284795,
                  "data_prep.cub",
                  "sha256 of the file in iffsid/mmvae (git blob e392e3de...)"),
        KnownFile("cub/text_trainvalclasses.txt", ("cub/text_trainvalclasses.txt",),
                  "git-blob-sha1", "de172dbd09a07014c94b1c86f340b26fbf150092", None,
                  "data_prep.cub",
                  "no sha256 is known: only its git blob id in iffsid/mmvae, which is checked "
                  "(size ~7 MB, 88550 lines expected)"),
    )
}

_MNIST_FILES = {
    "train": ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"),
    "test": ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz"),
}
_SVHN_FILES = {"train": "svhn/train_32x32.mat", "test": "svhn/test_32x32.mat"}
_CUB_CAPTION_FILES = {"train": "cub/text_trainvalclasses.txt", "test": "cub/text_testclasses.txt"}
#: Image counts of the MMVAE CUB split (150 train+val classes / 50 test classes).
_CUB_IMAGES = {"train": 8855, "test": 2933}
#: Size of the stand-ins per split (the real datasets' sizes).
_SVHN_STANDIN_SIZE = {"train": 73257, "test": 26032}
#: Seeds of the stand-in data per split (fixed: the *data* must not depend on run seeds).
_STANDIN_SEED = {"train": 0, "test": 1}
_PAIRING_VERSION = 1


def _fetch_hint(module: str, root: Path) -> str:
    return f"python -m {module} --root {root}"


# ======================================================================================
# directories
# ======================================================================================
def data_root(root: Optional[PathLike] = None) -> Path:
    """Resolve the data directory.

    Order: ``root`` if given, else ``$MMVAE_LITE_DATA``, else ``~/.cache/mmvae_lite``
    (created if missing). An explicitly given directory (argument or environment
    variable) must exist.

    Raises:
        DataError: if an explicitly given directory does not exist or is a file.
    """
    if root is not None:
        origin, path = "the given data directory", Path(root).expanduser()
    elif os.environ.get(DATA_ENV):
        origin, path = f"${DATA_ENV}", Path(os.environ[DATA_ENV]).expanduser()
    else:
        path = Path.home() / ".cache" / "mmvae_lite"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # unwritable home: stand-ins still work, just without caching
        return path
    if not path.exists():
        raise DataError(
            f"{origin} {path} does not exist. Create it and fetch the data with "
            f"`{_fetch_hint('data_prep.mnist_svhn', path)}` (and `data_prep.cub`), or point "
            f"${DATA_ENV} at an existing data directory."
        )
    if not path.is_dir():
        raise DataError(f"{origin} {path} is not a directory.")
    return path.resolve()


def _writable_dir(path: Path) -> bool:
    """True if ``path`` exists or can be created and written to.

    Directories whose permission bits forbid writing count as read-only even for
    root (who could write anyway): a data directory marked read-only stays untouched.
    """
    probe_at = path
    while not probe_at.exists():
        if probe_at.parent == probe_at:
            return False
        probe_at = probe_at.parent
    try:
        if not probe_at.is_dir() or not (probe_at.stat().st_mode & 0o222):
            return False
    except OSError:
        return False
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".probe")
        os.close(fd)
        os.unlink(probe)
        return True
    except OSError:
        return False


def cache_dir(root: Optional[PathLike] = None) -> Optional[Path]:
    """Writable directory for derived files (pair indices, stand-ins, checksum records).

    ``$MMVAE_LITE_CACHE`` if set; else ``<data root>/derived`` if writable; else
    ``~/.cache/mmvae_lite/derived/root-<hash of the data root>``. ``None`` if nothing
    is writable (everything then works without caching).
    """
    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser()
        return path if _writable_dir(path) else None
    base = data_root(root)
    own = base / "derived"
    if _writable_dir(own):
        return own
    tag = hashlib.sha1(str(base).encode()).hexdigest()[:10]
    fallback = Path.home() / ".cache" / "mmvae_lite" / "derived" / f"root-{tag}"
    return fallback if _writable_dir(fallback) else None


# ======================================================================================
# checksums
# ======================================================================================
def _digest(path: Path, algo: str) -> str:
    if algo == "git-blob-sha1":
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass


def find_file(key: str, root: Optional[PathLike] = None) -> Optional[Path]:
    """Path of known file ``key`` under the data directory in any accepted layout, or None."""
    spec = _known(key)
    base = data_root(root)
    for rel in spec.layouts:
        p = base / rel
        if p.is_file():
            return p
    return None


def _known(key: str) -> KnownFile:
    try:
        return KNOWN_FILES[key]
    except KeyError:
        raise DataError(f"unknown data file {key!r}; known: {', '.join(KNOWN_FILES)}") from None


def verify_file(path: PathLike, key: str, root: Optional[PathLike] = None) -> Path:
    """Check ``path`` against the checksum of known file ``key``.

    A successful check is recorded in ``<cache_dir>/verified.json`` keyed by the
    file's absolute path, size and modification time, so that big files are hashed
    only once.

    Raises:
        DataError: naming the file, the expected and actual checksum, and the command
            that fetches a good copy.
    """
    spec = _known(key)
    path = Path(path)
    st = path.stat()
    base = data_root(root)
    record_id = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{spec.algo}:{spec.digest}"
    cdir = cache_dir(base)
    record_file = cdir / "verified.json" if cdir is not None else None
    records: dict[str, float] = {}
    if record_file is not None and record_file.is_file():
        try:
            records = json.loads(record_file.read_text())
        except (OSError, ValueError):
            records = {}
    if record_id in records:
        return path
    hint = _fetch_hint(spec.fetch, base)
    if spec.size is not None and st.st_size != spec.size:
        raise DataError(
            f"{path} is corrupt or truncated: {st.st_size} bytes, expected {spec.size} "
            f"({spec.algo} {spec.digest}). Delete it and fetch it again with `{hint}`."
        )
    actual = _digest(path, spec.algo)
    if actual != spec.digest:
        raise DataError(
            f"{path} has the wrong checksum: {spec.algo} {actual}, expected {spec.digest}. "
            f"The file is corrupt or a different version; delete it and fetch it again "
            f"with `{hint}`."
        )
    if record_file is not None:
        records[record_id] = time.time()
        _atomic_write_text(record_file, json.dumps(records, indent=0))
    return path


def require_file(key: str, root: Optional[PathLike] = None) -> Path:
    """Find and verify known file ``key``; raise :class:`DataError` if missing or corrupt."""
    path = find_file(key, root)
    spec = _known(key)
    if path is None:
        base = data_root(root)
        where = ", ".join(str(base / rel) for rel in spec.layouts)
        raise DataError(
            f"{Path(key).name} not found (looked in {where}); expected {spec.algo} "
            f"{spec.digest}. Fetch it with `{_fetch_hint(spec.fetch, base)}`."
        )
    return verify_file(path, key, root)


def file_status(root: Optional[PathLike] = None) -> dict[str, tuple[str, str]]:
    """Status of every known file: ``{key: (status, detail)}``, status in
    ``"ok"``, ``"missing"``, ``"corrupt"``. Never touches the network."""
    out: dict[str, tuple[str, str]] = {}
    for key in KNOWN_FILES:
        path = find_file(key, root)
        if path is None:
            out[key] = ("missing", "")
            continue
        try:
            verify_file(path, key, root)
            out[key] = ("ok", str(path))
        except DataError as e:
            out[key] = ("corrupt", str(e))
    return out


# ======================================================================================
# real-or-stand-in selection
# ======================================================================================
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


#: Names accepted by :func:`resolve_source`, with their file keys per split.
_SOURCE_FILES: dict[str, dict[str, tuple[str, ...]]] = {
    "mnist": {s: f for s, f in _MNIST_FILES.items()},
    "svhn": {s: (f,) for s, f in _SVHN_FILES.items()},
    "cub-captions": {"train": tuple(_CUB_CAPTION_FILES.values()),
                     "test": tuple(_CUB_CAPTION_FILES.values())},
}
_HAS_STANDIN = {"mnist": False, "svhn": True, "cub-captions": True, "cub-images": True,
                "cub-features": True}


def _cub_image_dir(base: Path, split: str) -> Path:
    return base / "cub" / split


def _cub_feature_file(base: Path, split: str) -> Path:
    return base / "cub" / "resnet101_2048" / f"{split}.ft"


def resolve_source(name: str, root: Optional[PathLike] = None, standin: StandinMode = "auto",
                   split: Optional[str] = None) -> Source:
    """Decide between real data and the stand-in for dataset ``name``.

    Args:
        name: ``"mnist"``, ``"svhn"``, ``"cub-captions"``, ``"cub-images"`` or
            ``"cub-features"``.
        root: data directory (see :func:`data_root`).
        standin: ``"auto"`` (real when present and verified, else stand-in),
            ``"never"`` (real or :class:`DataError`), ``"always"`` (stand-in).
        split: ``"train"`` or ``"test"``; ``None`` checks both.

    Returns:
        A :class:`Source`. Real files are verified against :data:`KNOWN_FILES`.

    Raises:
        DataError: a present file is corrupt; or files are missing and
            ``standin="never"`` (or the dataset has no stand-in, like MNIST).
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
    label = {"mnist": "MNIST", "svhn": "SVHN", "cub-captions": "CUB captions",
             "cub-images": "CUB images", "cub-features": "CUB ResNet-101 features"}[name]

    if standin == "always":
        if not _HAS_STANDIN[name]:
            raise DataError(f"{label} has no stand-in; use standin='auto' or 'never'.")
        return Source("standin", "stand-in requested (standin='always')", name)

    missing: list[str] = []
    found: list[str] = []
    hint_module = "data_prep.cub" if name.startswith("cub") else "data_prep.mnist_svhn"
    if name in _SOURCE_FILES:
        keys = sorted({k for s in splits for k in _SOURCE_FILES[name][s]})
        for key in keys:
            path = find_file(key, base)
            if path is None:
                missing.append(Path(key).name)
            else:
                verify_file(path, key, base)  # corrupt -> DataError, even in "auto"
                found.append(str(path))
    elif name == "cub-images":
        for s in splits:
            d = _cub_image_dir(base, s)
            if not (d.is_dir() and any(d.iterdir())):
                missing.append(f"cub/{s}/ image folders")
            else:
                found.append(str(d))
    else:  # cub-features
        for s in splits:
            p = _cub_feature_file(base, s)
            if not p.is_file():
                missing.append(f"cub/resnet101_2048/{s}.ft")
            else:
                found.append(str(p))
    hint = _fetch_hint(hint_module, base) + (" --features" if name == "cub-features" else "")
    if not missing:
        where = os.path.commonpath(found) if found else str(base)
        return Source("real", f"verified files in {where}", name)
    what = ", ".join(missing)
    if standin == "never" or not _HAS_STANDIN[name]:
        raise DataError(f"{label}: {what} not found in {base}. Fetch with: {hint}")
    return Source("standin", f"{what} not found in {base}; fetch with: {hint}", name,
                  tuple(missing))


def _announce(line: str, verbose: bool) -> None:
    if verbose:
        print(f"{_TAG} {line}", flush=True)


# ======================================================================================
# raw readers
# ======================================================================================
def read_idx(path: PathLike) -> np.ndarray:
    """Read a (gzipped) IDX file (the MNIST format) into a numpy array.

    Raises:
        DataError: the file is truncated, not gzip/IDX, or its size disagrees with its header.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is not a readable gzip file ({e}); delete it and fetch it "
                        f"again with `python -m data_prep.mnist_svhn`.") from None
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (bad magic number).")
    ndim = buf[3]
    if len(buf) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (incomplete IDX header).")
    shape = tuple(int(d) for d in np.frombuffer(buf, ">u4", ndim, 4))
    expected = int(np.prod(shape)) + 4 + 4 * ndim
    if len(buf) != expected:
        raise DataError(f"{path} has {len(buf)} bytes after decompression; its header "
                        f"{shape} needs {expected}. The file is truncated or corrupt.")
    return np.frombuffer(buf, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_mnist(split: str, base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    img_key, lab_key = _MNIST_FILES[split]
    images = read_idx(require_file(img_key, base))
    labels = read_idx(require_file(lab_key, base))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"MNIST {split}: image/label files do not match "
                        f"({images.shape} vs {labels.shape}).")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def _read_svhn(split: str, base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    path = require_file(_SVHN_FILES[split], base)
    try:
        import scipy.io
    except ImportError:  # pragma: no cover - scipy is a declared dependency of [vision]
        raise DataError("reading SVHN .mat files needs scipy: pip install scipy") from None
    try:
        mat = scipy.io.loadmat(str(path))
        x, y = mat["X"], mat["y"]
    except Exception as e:  # scipy raises many types for bad files
        raise DataError(f"{path} could not be read as an SVHN .mat file ({e}); delete it and "
                        f"fetch it again with `{_fetch_hint('data_prep.mnist_svhn', base)}`.") \
            from None
    images = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1))))
    labels = torch.from_numpy(y.astype(np.int64).reshape(-1) % 10)  # label 10 means digit 0
    return images, labels


# ======================================================================================
# dataset classes
# ======================================================================================
def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


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
        self.bases = dict(bases)
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

    def __getitem__(self, i: int) -> Any:
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
    """One image modality with labels (MNIST or SVHN); ``dataset[i] -> (image, label)``."""

    def __init__(self, key: str, images: torch.Tensor, labels: torch.Tensor, source: Source,
                 banner: str = "") -> None:
        super().__init__({key: images}, labels=labels, source={key: source}, banner=banner)
        self.key = key

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self._item(int(i))[self.key], self.labels[int(i)]  # type: ignore[index]


class MNISTSVHN(GatherDataset):
    """Pairs of MNIST and SVHN images of the same digit.

    Holds the two uint8 base tensors (MNIST (M, 1, 28, 28), SVHN (S, 3, 32, 32)) and two
    index tensors (N,) -- a million pairs cost 16 MB of indices, not gigabytes of floats.

    ``dataset[i] -> ((mnist float (1, 28, 28), label), (svhn float (3, 32, 32), label))``;
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

    def __getitem__(self, i: int):  # type: ignore[override]
        item = self._item(int(i))
        label = self.labels[int(i)]  # type: ignore[index]
        return (item["mnist"], label), (item["svhn"], label)


# ======================================================================================
# MNIST / SVHN / MNIST-SVHN
# ======================================================================================
def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _mnist_arrays(split: str, base: Path, verbose: bool) -> tuple[torch.Tensor, torch.Tensor, Source, str]:
    src = resolve_source("mnist", base, "never", split)
    images, labels = _read_mnist(split, base)
    line = f"MNIST {split}: real, {len(labels)} images ({src.reason})"
    _announce(line, verbose)
    return images.unsqueeze(1), labels, src, line


def _svhn_arrays(split: str, base: Path, standin: StandinMode,
                 verbose: bool) -> tuple[torch.Tensor, torch.Tensor, Source, str]:
    src = resolve_source("svhn", base, standin, split)
    if src.is_real:
        images, labels = _read_svhn(split, base)
        line = f"SVHN {split}: real, {len(labels)} images ({src.reason})"
    else:
        images, labels = standins.house_numbers(_SVHN_STANDIN_SIZE[split], _STANDIN_SEED[split],
                                                cache_dir=cache_dir(base))
        line = (f"SVHN {split}: stand-in house-number digits, {len(labels)} images "
                f"({src.reason})")
    _announce(line, verbose)
    return images, labels, src, line


def _subset_rows(n: int, subset: Optional[int], seed: int) -> Optional[torch.Tensor]:
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


def load_mnist(split: str = "train", root: Optional[PathLike] = None,
               subset: Optional[int] = None, seed: int = 0, verbose: bool = True) -> LabelledImages:
    """Real MNIST (there is no stand-in; it downloads anywhere).

    Returns:
        :class:`LabelledImages`; ``batches()`` yields ``{"mnist": float (B, 1, 28, 28)}``
        in [0, 1]; ``.labels`` int64 (N,); ``.bases["mnist"]`` uint8 (N, 1, 28, 28).

    Raises:
        DataError: files missing or corrupt (with the command that fetches them).
    """
    _check_split(split)
    base = data_root(root)
    images, labels, src, line = _mnist_arrays(split, base, verbose)
    rows = _subset_rows(len(labels), subset, seed)
    if rows is not None:
        images, labels = images[rows], labels[rows]
    return LabelledImages("mnist", images, labels, src, line)


def load_svhn(split: str = "train", root: Optional[PathLike] = None,
              standin: StandinMode = "auto", subset: Optional[int] = None, seed: int = 0,
              verbose: bool = True) -> LabelledImages:
    """SVHN, or the house-number stand-in when the ``.mat`` files are missing.

    Returns:
        :class:`LabelledImages`; ``batches()`` yields ``{"svhn": float (B, 3, 32, 32)}``
        in [0, 1]; ``.labels`` int64 (N,) with digit 0 as label 0 (SVHN stores 10).
    """
    _check_split(split)
    base = data_root(root)
    images, labels, src, line = _svhn_arrays(split, base, standin, verbose)
    rows = _subset_rows(len(labels), subset, seed)
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
        except OSError:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
    return ia, ib


def load_mnist_svhn(split: str = "train", root: Optional[PathLike] = None, multiplier: int = 20,
                    max_per_class: int = 10000, subset: Optional[int] = None, seed: int = 0,
                    standin: StandinMode = "auto", verbose: bool = True) -> MNISTSVHN:
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

    Returns:
        :class:`MNISTSVHN`; ``batches()`` yields ``{"mnist": float (B, 1, 28, 28),
        "svhn": float (B, 3, 32, 32)}`` in [0, 1]; ``.labels`` int64 (N,).
    """
    _check_split(split)
    base = data_root(root)
    m_img, m_lab, m_src, m_line = _mnist_arrays(split, base, verbose)
    s_img, s_lab, s_src, s_line = _svhn_arrays(split, base, standin, verbose)
    ia, ib = _cached_pairs(split, m_lab, s_lab, multiplier, max_per_class, seed, cache_dir(base))
    labels = m_lab[ia]
    rows = _subset_rows(len(ia), subset, seed)
    if rows is not None:
        ia, ib, labels = ia[rows], ib[rows], labels[rows]
    line = (f"MNIST-SVHN {split}: {len(ia)} pairs (multiplier {multiplier}, at most "
            f"{max_per_class} per class, seed {seed}"
            + (f", subset {len(ia)}" if rows is not None else "") + ")")
    _announce(line, verbose)
    return MNISTSVHN(m_img, s_img, ia, ib, labels, {"mnist": m_src, "svhn": s_src},
                     "\n".join((m_line, s_line, line)))


# ======================================================================================
# captions: tokeniser and vocabulary
# ======================================================================================
# Split like nltk's word_tokenize does on these captions: clitics ('s, n't, 're ...)
# become their own tokens, hyphenated words and words joined by a period stay whole
# ("light-brown", "beak.and"), every other punctuation character is a token, "..." is one.
_CLITIC_RE = re.compile(r"(?<=[a-z])(n't|'s|'re|'ve|'ll|'d|'m)\b")
_TOKEN_RE = re.compile(r"n't|'(?:s|re|ve|ll|d|m)\b|[a-z0-9]+(?:[-.'][a-z0-9]+)*|\.\.\.|\S")


_CANNOT_RE = re.compile(r"\b(can)(not)\b")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokenisation equivalent in effect to ``nltk.word_tokenize`` on
    CUB captions, without needing nltk or its punkt data.

    On the 29,330 real test-class captions it gives the same tokens as nltk's
    ``NLTKWordTokenizer`` applied to the lower-cased line for all lines but one
    (``"rump.,"``: nltk keeps ``"rump."`` whole, this gives ``"rump", "."``).
    """
    text = _CLITIC_RE.sub(r" \1", text.lower())
    text = _CANNOT_RE.sub(r"\1 \2", text)
    return _TOKEN_RE.findall(text)


class Vocab:
    """Word <-> index map for captions, in the MMVAE authors' conventions.

    Index 0 is ``<exc>`` (the authors' unknown/excluded-word token), 1 ``<pad>``,
    2 ``<eos>``; then the training words in order of first appearance. A sentence is
    encoded as its first ``max_length - 1`` tokens, ``<eos>``, then ``<pad>`` up to
    ``max_length``.
    """

    SPECIALS = ("<exc>", "<pad>", "<eos>")

    def __init__(self, words: Sequence[str], max_length: int = 32, min_occ: int = 3) -> None:
        words = list(words)
        if tuple(words[:3]) != self.SPECIALS:
            raise ValueError(f"a vocabulary must start with {self.SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("duplicate words in vocabulary")
        if max_length < 2:
            raise ValueError("max_length must be >= 2")
        self.i2w: list[str] = words
        self.w2i: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.max_length = int(max_length)
        self.min_occ = int(min_occ)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_captions(cls, captions: Sequence[str], min_occ: int = 3,
                      max_length: int = 32) -> "Vocab":
        """Build from *training* captions: a word is kept if it occurs more than
        ``min_occ`` times (the authors' rule: words seen ``<= min_occ`` times map to ``<exc>``)."""
        counts: Counter[str] = Counter()
        for c in captions:
            counts.update(tokenize(c))
        words = [w for w, n in counts.items() if n > min_occ and w not in cls.SPECIALS]
        return cls(list(cls.SPECIALS) + words, max_length, min_occ)

    # --- basic protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.i2w)

    def __contains__(self, word: str) -> bool:
        return word in self.w2i

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.i2w == other.i2w

    def __repr__(self) -> str:
        return f"Vocab({len(self)} words, max_length={self.max_length}, id={self.fingerprint()})"

    @property
    def exc_idx(self) -> int:
        return 0

    unk_idx = exc_idx

    @property
    def pad_idx(self) -> int:
        return 1

    @property
    def eos_idx(self) -> int:
        return 2

    # --- encoding -----------------------------------------------------------------------------
    def _ids(self, tokens: list[str]) -> tuple[list[int], bool]:
        truncated = len(tokens) > self.max_length - 1
        tokens = tokens[: self.max_length - 1]
        ids = [self.w2i.get(t, 0) for t in tokens] + [2]
        return ids + [1] * (self.max_length - len(ids)), truncated

    def encode(self, text: str, on_long: Literal["truncate", "error"] = "truncate") -> torch.Tensor:
        """Caption -> LongTensor (max_length,). See :meth:`encode_many` for ``on_long``."""
        return self.encode_many([text], on_long)[0][0]

    def encode_many(self, texts: Sequence[str], on_long: Literal["truncate", "error"] = "truncate"
                    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Encode captions.

        Args:
            texts: captions.
            on_long: captions with ``max_length`` tokens or more (no room for
                ``<eos>``) are cut to ``max_length - 1`` tokens plus ``<eos>`` (the
                authors' behaviour, ``"truncate"``) or raise
                :class:`CaptionTooLongError` (``"error"``).

        Returns:
            ``(ids, lengths, n_truncated)``: LongTensor (N, max_length), LongTensor (N,)
            of lengths including ``<eos>``, and the number of truncated captions.
        """
        if on_long not in ("truncate", "error"):
            raise ValueError(f"on_long must be 'truncate' or 'error', got {on_long!r}")
        ids = np.empty((len(texts), self.max_length), dtype=np.int64)
        lengths = np.empty(len(texts), dtype=np.int64)
        n_trunc, first = 0, None
        for i, t in enumerate(texts):
            toks = tokenize(t)
            row, cut = self._ids(toks)
            ids[i] = row
            lengths[i] = min(len(toks), self.max_length - 1) + 1
            if cut:
                n_trunc += 1
                first = i if first is None else first
        if n_trunc and on_long == "error":
            raise CaptionTooLongError(
                f"{n_trunc} of {len(texts)} captions are longer than the maximum of "
                f"{self.max_length - 1} tokens + <eos> (first: caption {first}, "
                f"{len(tokenize(texts[first]))} tokens: {texts[first][:80]!r}...). Use "
                f"on_long='truncate' to cut them as the MMVAE authors do, or a larger max_length.")
        return torch.from_numpy(ids), torch.from_numpy(lengths), n_trunc

    def decode(self, ids: Union[torch.Tensor, Sequence[int]], strip: bool = True) -> str:
        """Token ids -> text. With ``strip``, stop at ``<eos>`` and drop ``<pad>``."""
        out = []
        for i in torch.as_tensor(ids).flatten().tolist():
            if not 0 <= i < len(self.i2w):
                raise VocabMismatchError(
                    f"token id {i} is outside this vocabulary of {len(self)} words; the ids "
                    f"come from a different vocabulary (check Vocab.check_compatible).")
            w = self.i2w[i]
            if strip and w == "<eos>":
                break
            if strip and w == "<pad>":
                continue
            out.append(w)
        return " ".join(out)

    # --- identity and persistence -----------------------------------------------------------------
    def fingerprint(self) -> str:
        """Short sha256 of the word list and maximum length (identifies the vocabulary)."""
        h = hashlib.sha256(("\n".join(self.i2w) + f"\n#max_length={self.max_length}").encode())
        return h.hexdigest()[:16]

    def check_compatible(self, expected: Union[int, str, "Vocab"]) -> None:
        """Raise :class:`VocabMismatchError` unless this vocabulary matches ``expected``
        (a vocabulary size, a :meth:`fingerprint`, or another :class:`Vocab`)."""
        if isinstance(expected, Vocab):
            expected = expected.fingerprint()
        if isinstance(expected, (int, np.integer)):
            if int(expected) != len(self):
                raise VocabMismatchError(
                    f"vocabulary size mismatch: the data give {len(self)} words, the model "
                    f"expects {int(expected)}. The model was trained with another caption "
                    f"vocabulary (different training captions, min_occ or data source); "
                    f"load the vocab saved with the checkpoint (Vocab.load) or retrain.")
            return
        if str(expected) != self.fingerprint():
            raise VocabMismatchError(
                f"vocabulary fingerprint mismatch: data {self.fingerprint()} (size {len(self)}), "
                f"expected {expected}. Load the vocab saved with the checkpoint (Vocab.load) "
                f"or retrain with this one.")

    def to_dict(self) -> dict[str, Any]:
        return {"words": self.i2w, "max_length": self.max_length, "min_occ": self.min_occ,
                "fingerprint": self.fingerprint()}

    def save(self, path: PathLike) -> None:
        """Write the vocabulary as JSON (``words``, ``max_length``, ``min_occ``, ``fingerprint``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: PathLike) -> "Vocab":
        """Read a vocabulary written by :meth:`save`.

        Raises:
            DataError: unreadable file, or its recorded fingerprint does not match.
        """
        try:
            d = json.loads(Path(path).read_text())
            v = cls(d["words"], d.get("max_length", 32), d.get("min_occ", 3))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path} is not a vocabulary file written by Vocab.save ({e}).") \
                from None
        if "fingerprint" in d and d["fingerprint"] != v.fingerprint():
            raise VocabMismatchError(f"{path} is corrupt: its word list does not match its "
                                     f"recorded fingerprint {d['fingerprint']}.")
        return v


# ======================================================================================
# CUB
# ======================================================================================
class CUBDataset(GatherDataset):
    """CUB image-caption pairs (real or stand-in): one row per caption.

    Fields: ``"sentence"`` LongTensor (N, max_length) and, when an image modality is
    available, ``"image"``: float (B, 2048) features or float (B, 3, 64, 64) in [0, 1],
    gathered from the per-image base by ``image_index = row // captions_per_image``.
    ``dataset[i] -> (image, sentence)`` (or just the sentence without images).

    Attributes:
        vocab: the :class:`Vocab` built from the training captions.
        captions: raw caption strings (N,).
        lengths: LongTensor (N,) sentence lengths including ``<eos>``.
        n_truncated: how many captions were cut to ``max_length``.
        image_index: LongTensor (N,) image of every caption.
        images: uint8 (M, 3, 64, 64) pictures for display (None if unavailable).
        attributes: int64 (M, A) stand-in attributes per image (None for real data),
            with column names :attr:`attribute_names`.
        image_form: ``"features"``, ``"images"`` or ``None`` (captions only).
    """

    def __init__(self, bases: Mapping[str, torch.Tensor], index: Mapping[str, Optional[torch.Tensor]],
                 *, vocab: Vocab, captions: list[str], lengths: torch.Tensor, n_truncated: int,
                 image_index: torch.Tensor, images: Optional[torch.Tensor],
                 attributes: Optional[torch.Tensor], attribute_names: tuple[str, ...],
                 image_form: Optional[str], captions_per_image: int,
                 source: Mapping[str, Source], banner: str) -> None:
        super().__init__(bases, index, None, source, banner)
        self.vocab = vocab
        self.captions = captions
        self.lengths = lengths
        self.n_truncated = n_truncated
        self.image_index = image_index
        self.images = images
        self.attributes = attributes
        self.attribute_names = attribute_names
        self.image_form = image_form
        self.captions_per_image = captions_per_image

    def __getitem__(self, i: int):  # type: ignore[override]
        item = self._item(int(i))
        if "image" in item:
            return item["image"], item["sentence"]
        return item["sentence"]

    def caption_attributes(self) -> Optional[torch.Tensor]:
        """Stand-in attributes of the image of every caption, int64 (N, A), or None."""
        return None if self.attributes is None else self.attributes[self.image_index]

    def nearest_images(self, features: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Images whose features are closest (Euclidean) to ``features``.

        Used to display feature-space generations, as the paper does for CUB.

        Args:
            features: float (B, 2048).
            k: neighbours per query.

        Returns:
            ``(images, indices)``: float (B, k, 3, 64, 64) in [0, 1] and LongTensor (B, k)
            of rows of :attr:`images`.
        """
        if self.image_form != "features":
            raise DataError("nearest_images needs a dataset loaded with image_form='features'.")
        if self.images is None:
            raise DataError("no display images are stored with these features; run "
                            "`python -m data_prep.cub` to create them.")
        base = self.bases["image"]
        feats = torch.as_tensor(features).to(base.dtype).cpu()
        if feats.ndim != 2 or feats.shape[1] != base.shape[1]:
            raise ValueError(f"features must be (B, {base.shape[1]}), got {tuple(feats.shape)}")
        d = torch.cdist(feats, base.cpu())
        idx = d.topk(k, dim=1, largest=False).indices
        return self.images[idx].float() / 255.0, idx


def _read_caption_file(key: str, base: Path) -> list[str]:
    path = require_file(key, base)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a UTF-8 text file ({e}).") from None
    return text.splitlines()


def _split_by_image(n_images: int, frac: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(int(seed) + 104729)
    perm = torch.randperm(n_images, generator=g)
    cut = int(round(frac * n_images))
    return perm[:cut].sort().values, perm[cut:].sort().values


def _real_cub_images(split: str, base: Path, verbose: bool) -> torch.Tensor:
    """Real CUB images of ``split`` resized to 64x64 uint8 (M, 3, 64, 64), cached."""
    from PIL import Image

    folder = _cub_image_dir(base, split)
    files = sorted(p for d in sorted(folder.iterdir()) if d.is_dir()
                   for p in sorted(d.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise DataError(f"no images found in {folder}")
    listing = hashlib.sha1("\n".join(f"{p.relative_to(folder)}|{p.stat().st_size}"
                                      for p in files).encode()).hexdigest()[:12]
    cdir = cache_dir(base)
    cached = cdir / f"cub_images64_{split}_{listing}.npy" if cdir else None
    if cached is not None and cached.is_file():
        try:
            return torch.from_numpy(np.load(cached))
        except (OSError, ValueError):
            pass
    _announce(f"CUB {split}: resizing {len(files)} images to 64x64 (once; cached)", verbose)
    out = np.empty((len(files), 3, 64, 64), dtype=np.uint8)
    for i, p in enumerate(files):
        try:
            with Image.open(p) as im:
                im = im.convert("RGB").resize((64, 64), Image.BILINEAR)
                out[i] = np.asarray(im).transpose(2, 0, 1)
        except OSError as e:
            raise DataError(f"cannot read image {p} ({e}); re-fetch with "
                            f"`{_fetch_hint('data_prep.cub', base)}`.") from None
    if cached is not None:
        try:
            np.save(cached, out)
        except OSError:
            pass
    return torch.from_numpy(out)


def _real_cub_features(split: str, base: Path) -> torch.Tensor:
    path = _cub_feature_file(base, split)
    try:
        feats = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DataError(f"{path} is not a readable feature file ({e}); recreate it with "
                        f"`{_fetch_hint('data_prep.cub', base)} --features`.") from None
    feats = torch.as_tensor(feats).float().reshape(len(feats), -1)
    if feats.shape[1] != 2048:
        raise DataError(f"{path} holds features of dimension {feats.shape[1]}, expected 2048.")
    return feats


def _standin_cub(split: str, n_images: Optional[int], cpi: int, cdir: Optional[Path],
                 with_images: bool = True) -> standins.BirdCaptions:
    n = _CUB_IMAGES[split] if n_images is None else int(n_images)
    return standins.bird_captions(n, seed=100 + _STANDIN_SEED[split], captions_per_image=cpi,
                                  cache_dir=cdir, with_images=with_images)


def _standin_features(images: torch.Tensor, key: str, cdir: Optional[Path]) -> torch.Tensor:
    path = cdir / f"{key}_features_v{standins.BIRDS_VERSION}.npy" if cdir else None
    if path is not None and path.is_file():
        try:
            f = torch.from_numpy(np.load(path))
            if f.shape == (len(images), standins.STANDIN_FEATURE_DIM):
                return f
        except (OSError, ValueError):
            pass
    feats = standins.standin_features(images)
    if path is not None:
        try:
            np.save(path, feats.numpy())
        except OSError:
            pass
    return feats


def load_cub(split: str = "train", root: Optional[PathLike] = None,
             image_form: Literal["features", "images"] = "features",
             standin: StandinMode = "auto",
             captions: Literal["auto", "real", "standin"] = "auto",
             max_length: int = 32, min_occ: int = 3,
             on_long: Literal["truncate", "error"] = "truncate",
             n_images: Optional[int] = None, captions_per_image: int = 10,
             subset: Optional[int] = None, seed: int = 0, vocab: Optional["Vocab"] = None,
             verbose: bool = True) -> CUBDataset:
    """CUB image-caption pairs (one row per caption; 10 captions per image).

    Source rule (``standin="auto"``): the real data are used when the full real CUB
    files are present (both caption files, verified, plus the images -- or the
    ResNet-101 features for ``image_form="features"``); otherwise the stand-in bird
    sprites with captions generated from the same attributes
    (:func:`mmvae_lite.standins.bird_captions`). ``standin="never"`` raises
    :class:`DataError` when anything is missing; ``"always"`` forces the stand-in.

    ``captions="real"`` uses real captions even when the rest is missing. Without the
    train-class caption file, the real *test-class* captions are split 80/20 by image
    (seeded) into train/test portions and there is no image modality (the real
    images are missing and stand-in sprites would not match real captions): the
    dataset then yields ``{"sentence"}`` only.

    Args:
        split: ``"train"`` or ``"test"``.
        root: data directory.
        image_form: ``"features"`` -- 2048-d ResNet-101 pooled features (real) or
            fixed random-conv stand-in features; ``"images"`` -- 64x64 RGB.
        standin: see above and :func:`resolve_source`.
        captions: ``"auto"``, ``"real"`` or ``"standin"``.
        max_length: sentence length incl. ``<eos>`` (authors: 32).
        min_occ: words seen ``<= min_occ`` times in the training captions map to ``<exc>``.
        on_long: ``"truncate"`` (authors) or ``"error"`` for over-long captions.
        n_images: stand-in size of this split (default: the real sizes, 8855 / 2933). The
            vocabulary is built from the training split: for a test split with a
            non-default training size, pass ``vocab=train.vocab``.
        captions_per_image: stand-in captions per image.
        subset: keep this many caption rows, drawn at random (deterministic in ``seed``).
        seed: seed of ``subset`` and of the 80/20 split of real test-class captions.
        vocab: use this vocabulary (e.g. the one saved with a checkpoint) instead of
            building one from the training captions.
        verbose: print the source banner.

    Returns:
        :class:`CUBDataset`; ``batches()`` yields ``{"image": float (B, 2048) or
        (B, 3, 64, 64), "sentence": LongTensor (B, max_length)}``.
    """
    _check_split(split)
    if image_form not in ("features", "images"):
        raise ValueError(f"image_form must be 'features' or 'images', got {image_form!r}")
    if captions not in ("auto", "real", "standin"):
        raise ValueError(f"captions must be 'auto', 'real' or 'standin', got {captions!r}")
    base = data_root(root)
    cdir = cache_dir(base)
    img_name = "cub-features" if image_form == "features" else "cub-images"

    if standin == "always" or captions == "standin":
        cap_src = Source("standin", "stand-in requested", "cub-captions")
        img_src = Source("standin", "stand-in requested", img_name)
    else:
        cap_src = resolve_source("cub-captions", base, "auto")
        if image_form == "features":
            # real features can also come from images via data_prep.cub
            img_src = resolve_source("cub-features", base, "auto")
        else:
            img_src = resolve_source("cub-images", base, "auto")
        if standin == "never" and not (cap_src.is_real and img_src.is_real):
            bad = [s for s in (cap_src, img_src) if not s.is_real]
            raise DataError("real CUB data incomplete: " + "; ".join(s.reason for s in bad))
        test_caps_present = find_file("cub/text_testclasses.txt", base) is not None
        if captions == "real":
            if not cap_src.is_real:
                if not test_caps_present:
                    raise DataError(f"captions='real' but no real CUB caption file is present "
                                    f"({cap_src.reason}).")
                cap_src = Source("real", "only the test-class captions are present "
                                 f"({cap_src.reason})", "cub-captions")
        elif not (cap_src.is_real and img_src.is_real):
            # auto: use the stand-in pairs unless the full real set exists
            gone = [m for s in (cap_src, img_src) for m in s.missing]
            hint = _fetch_hint("data_prep.cub", base) + (
                " --features" if image_form == "features" else "")
            why = f"{', '.join(gone)} not found in {base}; fetch with: {hint}"
            cap_src = Source("standin", why, "cub-captions")
            img_src = Source("standin", why, img_name)

    attributes: Optional[torch.Tensor] = None
    attribute_names: tuple[str, ...] = ()
    images: Optional[torch.Tensor] = None
    lines: list[str] = []
    if cap_src.kind == "standin":
        data = _standin_cub(split, n_images, captions_per_image, cdir)
        if vocab is None:
            # the vocabulary always comes from the (default-size) stand-in training split
            train = data if split == "train" else _standin_cub(
                "train", None if split == "test" else n_images, captions_per_image, cdir,
                with_images=False)
            vocab = Vocab.from_captions(train.captions, min_occ, max_length)
        caps, cpi = data.captions, captions_per_image
        images, attributes, attribute_names = data.images, data.attributes, data.attribute_names
        lines.append(f"CUB {split}: stand-in bird sprites with generated captions, "
                     f"{len(images)} images x {cpi} captions ({cap_src.reason})")
    else:
        cpi = 10
        train_file = find_file("cub/text_trainvalclasses.txt", base)
        if train_file is not None and cap_src.is_real:
            train_caps = _read_caption_file("cub/text_trainvalclasses.txt", base)
            test_caps = _read_caption_file("cub/text_testclasses.txt", base)
            caps = train_caps if split == "train" else test_caps
            cap_note = "real CUB captions"
        else:
            test_caps = _read_caption_file("cub/text_testclasses.txt", base)
            if len(test_caps) % cpi:
                raise DataError(f"cub/text_testclasses.txt has {len(test_caps)} lines, not a "
                                f"multiple of {cpi} captions per image.")
            tr_img, te_img = _split_by_image(len(test_caps) // cpi, 0.8, seed)
            rows = {s: (ix[:, None] * cpi + torch.arange(cpi)).flatten()
                    for s, ix in (("train", tr_img), ("test", te_img))}
            train_caps = [test_caps[i] for i in rows["train"].tolist()]
            caps = train_caps if split == "train" else [test_caps[i] for i in rows["test"].tolist()]
            cap_note = ("real CUB test-class captions, split 80/20 by image because the "
                        "train-class captions are missing")
        vocab = vocab or Vocab.from_captions(train_caps, min_occ, max_length)
        lines.append(f"CUB {split}: {cap_note}, {len(caps)} captions")

    ids, lengths, n_trunc = vocab.encode_many(caps, on_long)
    image_index = torch.arange(len(caps)) // cpi
    bases: dict[str, torch.Tensor] = {"sentence": ids}
    index: dict[str, Optional[torch.Tensor]] = {"sentence": None}
    form: Optional[str] = None
    if cap_src.kind == "standin":
        assert images is not None
        if image_form == "features":
            bases["image"] = _standin_features(
                images, f"birds_{split}_n{len(images)}_c{cpi}", cdir)
            lines.append(f"CUB {split} image features: stand-in (fixed random-conv 2048-d "
                         f"features of the sprites, NOT ResNet-101)")
        else:
            bases["image"] = images
        index["image"] = image_index
        form = image_form
    elif img_src.is_real and train_file is not None:
        if image_form == "features":
            bases["image"] = _real_cub_features(split, base)
            if _cub_image_dir(base, split).is_dir():
                images = _real_cub_images(split, base, verbose)
        else:
            images = _real_cub_images(split, base, verbose)
            bases["image"] = images
        n_img = len(bases["image"])
        if n_img * cpi != len(caps):
            raise DataError(f"CUB {split}: {n_img} images but {len(caps)} captions "
                            f"(expected {cpi} per image); the image folder or feature file "
                            f"does not match the caption file.")
        index["image"] = image_index
        form = image_form
        lines.append(f"CUB {split} images: real ({img_src.reason})")
    else:
        lines.append(f"CUB {split}: no image modality (real images missing: {img_src.reason}); "
                     f"batches yield 'sentence' only")
    lines.append(f"CUB vocabulary: {len(vocab)} words (min_occ {min_occ}, from the training "
                 f"captions), {n_trunc} of {len(caps)} captions truncated to {max_length} tokens")
    for line in lines:
        _announce(line, verbose)

    ds_rows = _subset_rows(len(caps), subset, seed)
    if ds_rows is not None:
        ids, lengths, image_index = ids[ds_rows], lengths[ds_rows], image_index[ds_rows]
        caps = [caps[i] for i in ds_rows.tolist()]
        bases["sentence"] = ids
        if "image" in index:
            index["image"] = image_index
    src = {"sentence": cap_src}
    if "image" in bases:
        src["image"] = img_src
    return CUBDataset(bases, index, vocab=vocab, captions=list(caps), lengths=lengths,
                      n_truncated=n_trunc, image_index=image_index, images=images,
                      attributes=attributes, attribute_names=attribute_names, image_form=form,
                      captions_per_image=cpi, source=src, banner="\n".join(lines))


# ======================================================================================
# dispatch
# ======================================================================================
_LOADERS: dict[str, Callable[..., GatherDataset]] = {
    "mnist": load_mnist,
    "svhn": load_svhn,
    "mnist-svhn": load_mnist_svhn,
    "cub": load_cub,
}
#: Names accepted by :func:`load_dataset`.
DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, split: str = "train", **kwargs: Any) -> GatherDataset:
    """Load a dataset by name: ``"mnist"``, ``"svhn"``, ``"mnist-svhn"`` or ``"cub"``.

    Keyword arguments go to the matching ``load_*`` function.

    Raises:
        UnknownDatasetError: listing the valid names.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in _LOADERS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return _LOADERS[key](split=split, **kwargs)


def experiment_data(cfg: Any, root: Optional[PathLike] = None, standin: StandinMode = "auto",
                    verbose: bool = True) -> tuple[GatherDataset, GatherDataset, Any]:
    """Train and test data for a run configuration (:class:`mmvae_lite.config.Config`).

    Uses ``cfg.experiment`` (``mnist``, ``svhn``, ``mnist-svhn``, ``cub-features``,
    ``cub-images``), ``cfg.pairing_multiplier``, ``cfg.train_subset`` and
    ``cfg.test_subset``. The data (pairing, subsets) use a fixed seed 0, independent of
    the run's seed, so that runs with different seeds see the same data.

    Returns:
        ``(train, test, cfg)``; for CUB ``cfg.vocab_size`` is set from the vocabulary.
    """
    exp = str(cfg.experiment)
    tr_sub, te_sub = getattr(cfg, "train_subset", None), getattr(cfg, "test_subset", None)
    common: dict[str, Any] = dict(root=root, verbose=verbose)
    if exp == "mnist":
        train = load_mnist("train", subset=tr_sub, **common)
        test = load_mnist("test", subset=te_sub, **common)
    elif exp == "svhn":
        train = load_svhn("train", standin=standin, subset=tr_sub, **common)
        test = load_svhn("test", standin=standin, subset=te_sub, **common)
    elif exp == "mnist-svhn":
        mult = int(getattr(cfg, "pairing_multiplier", 20))
        train = load_mnist_svhn("train", multiplier=mult, subset=tr_sub, standin=standin, **common)
        test = load_mnist_svhn("test", multiplier=mult, subset=te_sub, standin=standin, **common)
    elif exp in ("cub-features", "cub-images"):
        form = "features" if exp == "cub-features" else "images"
        train = load_cub("train", image_form=form, standin=standin, subset=tr_sub, **common)
        test = load_cub("test", image_form=form, standin=standin, subset=te_sub,
                        vocab=train.vocab, **common)
        if hasattr(cfg, "replace"):
            cfg = cfg.replace(vocab_size=len(train.vocab))
    else:
        raise UnknownDatasetError(f"unknown experiment {exp!r}; valid: mnist, svhn, mnist-svhn, "
                                  f"cub-features, cub-images")
    return train, test, cfg
