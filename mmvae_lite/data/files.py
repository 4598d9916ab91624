"""The data directory and the files this package knows: where they live, their checksums,
how to fetch them, and how to name them in messages.

:func:`data_root` picks the data directory: an explicit ``root`` argument, else
``$MMVAE_LITE_DATA``, else ``~/.cache/mmvae_lite``. Real files use torchvision's layout
(``MNIST/raw/``, ``SVHN/`` or the ``.mat`` files at the top) and the MMVAE release's
(``cub/``). Derived files (pair indices, stand-in arrays, checksum records) go to
:func:`cache_dir`, inside the data directory when that is writable and under
``~/.cache/mmvae_lite/derived`` otherwise. Messages name paths with :func:`shown`, so that
what a chapter prints says ``$MMVAE_LITE_DATA/MNIST/raw``, not the machine's own path.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

__all__ = ["DataError", "UnknownDatasetError", "KnownFile", "KNOWN_FILES", "DATA_ENV", "CACHE_ENV",
           "data_root", "cache_dir", "shown", "find_file", "verify_file", "require_file",
           "file_status", "fetch_hint", "digest"]

PathLike = Union[str, "os.PathLike[str]"]

#: Environment variable naming the data directory.
DATA_ENV = "MMVAE_LITE_DATA"
#: Environment variable overriding the directory for derived/cached files.
CACHE_ENV = "MMVAE_LITE_CACHE"


class DataError(RuntimeError):
    """A data file or dataset request is wrong; the message says what and how to fix it."""


class UnknownDatasetError(DataError, ValueError):
    """A dataset or data-source name that is not known; the message lists the valid ones."""


@dataclass(frozen=True)
class KnownFile:
    """A data file this package knows how to check (and, where its source allows, fetch).

    Attributes:
        key: canonical path relative to the data directory.
        layouts: every relative path where the file is accepted, in search order.
        algo: ``"sha256"``, ``"md5"`` or ``"git-blob-sha1"`` (git's object id of the
            file, ``sha1(b"blob <size>\\0" + content)``).
        digest: expected hex digest for ``algo``.
        size: expected size in bytes, when known.
        fetch: python module that downloads it (``python -m <fetch> --root DIR``).
        note: provenance of the checksum.
        url: where the loaders download the file by itself ("" when it comes in a bundle:
            MNIST and SVHN through torchvision, the CUB train captions in the CUB zip).
    """

    key: str
    layouts: tuple[str, ...]
    algo: str
    digest: str
    size: Optional[int]
    fetch: str
    note: str = ""
    url: str = ""


def _mnist_file(name: str, sha256: str, size: int, what: str) -> KnownFile:
    return KnownFile(f"MNIST/raw/{name}", (f"MNIST/raw/{name}",), "sha256", sha256, size,
                     "data_prep.mnist_svhn", what)


def _svhn_file(name: str, md5: str, size: int) -> KnownFile:
    return KnownFile(f"SVHN/{name}", (f"SVHN/{name}", name), "md5", md5, size,
                     "data_prep.mnist_svhn", "md5 published by torchvision.datasets.SVHN")


_GZ = "sha256 of the original LeCun et al. file (what torchvision downloads)"
_RAW = "sha256 of the file torchvision unpacks from the .gz (what is read)"
#: Every raw file the loaders read, with its checksum.
KNOWN_FILES: dict[str, KnownFile] = {
    f.key: f
    for f in (
        _mnist_file("train-images-idx3-ubyte.gz",
                    "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422, _GZ),
        _mnist_file("train-labels-idx1-ubyte.gz",
                    "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881, _GZ),
        _mnist_file("t10k-images-idx3-ubyte.gz",
                    "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877, _GZ),
        _mnist_file("t10k-labels-idx1-ubyte.gz",
                    "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542, _GZ),
        _mnist_file("train-images-idx3-ubyte",
                    "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016, _RAW),
        _mnist_file("train-labels-idx1-ubyte",
                    "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008, _RAW),
        _mnist_file("t10k-images-idx3-ubyte",
                    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016, _RAW),
        _mnist_file("t10k-labels-idx1-ubyte",
                    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008, _RAW),
        _svhn_file("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373", 182040794),
        _svhn_file("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3", 64275384),
        KnownFile("cub/text_testclasses.txt", ("cub/text_testclasses.txt",), "sha256",
                  "839b13171b614b12efb08737dcbab3bd0f1d0dfe8700cfb4fd0d68233b42c7fd", 2284795,
                  "data_prep.cub", "sha256 of the file in iffsid/mmvae (git blob e392e3de...)",
                  "https://raw.githubusercontent.com/iffsid/mmvae/public/data/cub/text_testclasses.txt"),
        KnownFile("cub/text_trainvalclasses.txt", ("cub/text_trainvalclasses.txt",),
                  "git-blob-sha1", "de172dbd09a07014c94b1c86f340b26fbf150092", None,
                  "data_prep.cub",
                  "no sha256 is known: only its git blob id in iffsid/mmvae, which is checked "
                  "(size ~7 MB, 88550 lines expected)"),
    )
}


def shown(path: PathLike) -> str:
    """``path`` as messages print it: under ``$MMVAE_LITE_DATA`` as ``$MMVAE_LITE_DATA/...``,
    under the home directory as ``~/...``; any other path (one the user gave) as it is."""
    p = Path(path)
    env = os.environ.get(DATA_ENV)
    bases = [(Path(env).expanduser(), f"${DATA_ENV}")] if env else []
    bases.append((Path.home(), "~"))
    for base, label in bases:
        for b in {base, base.resolve()}:
            try:
                rel = p.relative_to(b)
            except ValueError:
                continue
            return label if str(rel) == "." else f"{label}/{rel.as_posix()}"
    return str(p)


def fetch_hint(module: str, root: Path) -> str:
    """The command that fetches the files of ``module`` into ``root``."""
    where = shown(root)
    if where.startswith("$"):
        where = f'"{where}"'
    return f"python -m {module} --root {where}"


def data_root(root: Optional[PathLike] = None) -> Path:
    """Resolve the data directory.

    Order: ``root`` if given, else ``$MMVAE_LITE_DATA``, else ``~/.cache/mmvae_lite``.
    The default directory is created when missing (downloads go there); an explicitly
    given directory (argument or environment variable) must exist.

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
            f"{origin} {path} does not exist. Create it (the loaders download what they can "
            f"into it) or point ${DATA_ENV} at an existing data directory.")
    if not path.is_dir():
        raise DataError(f"{origin} {path} is not a directory.")
    return path.resolve()


def writable_dir(path: Path) -> bool:
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
        return path if writable_dir(path) else None
    base = data_root(root)
    own = base / "derived"
    if writable_dir(own):
        return own
    tag = hashlib.sha1(str(base).encode()).hexdigest()[:10]
    fallback = Path.home() / ".cache" / "mmvae_lite" / "derived" / f"root-{tag}"
    return fallback if writable_dir(fallback) else None


def digest(path: PathLike, algo: str) -> str:
    """Hex digest of a file: ``"sha256"``, ``"md5"`` or ``"git-blob-sha1"``."""
    path = Path(path)
    if algo == "git-blob-sha1":
        h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    else:
        h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file; silently give up if not writable."""
    tmp: Optional[str] = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def known(key: str) -> KnownFile:
    """The :class:`KnownFile` of ``key``; :class:`DataError` listing the known keys if none."""
    try:
        return KNOWN_FILES[key]
    except KeyError:
        raise DataError(f"unknown data file {key!r}; known: {', '.join(KNOWN_FILES)}") from None


def find_file(key: str, root: Optional[PathLike] = None) -> Optional[Path]:
    """Path of known file ``key`` under the data directory in any accepted layout, or None."""
    spec = known(key)
    base = data_root(root)
    for rel in spec.layouts:
        p = base / rel
        if p.is_file():
            return p
    return None


def verify_file(path: PathLike, key: str, root: Optional[PathLike] = None,
                trust_record: bool = True) -> Path:
    """Check ``path`` against the checksum of known file ``key``.

    A successful check is recorded in ``<cache_dir>/verified.json`` keyed by the file's
    absolute path, size and modification time, so that loaders hash big files only once;
    ``trust_record=False`` (what ``--check`` uses) always hashes.

    Raises:
        DataError: naming the file, the expected and actual checksum, and the command
            that fetches a good copy.
    """
    spec = known(key)
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
    if trust_record and record_id in records:
        return path
    hint = fetch_hint(spec.fetch, base)
    if spec.size is not None and st.st_size != spec.size:
        raise DataError(
            f"{shown(path)} is corrupt or truncated: {st.st_size} bytes, expected {spec.size} "
            f"({spec.algo} {spec.digest}). Delete it and fetch it again with `{hint}`.")
    actual = digest(path, spec.algo)
    if actual != spec.digest:
        raise DataError(
            f"{shown(path)} has the wrong checksum: {spec.algo} {actual}, expected {spec.digest}. "
            f"The file is corrupt or a different version; delete it and fetch it again "
            f"with `{hint}`.")
    if record_file is not None:
        records[record_id] = time.time()
        atomic_write_text(record_file, json.dumps(records, indent=0))
    return path


def require_file(key: str, root: Optional[PathLike] = None) -> Path:
    """Find and verify known file ``key``; raise :class:`DataError` if missing or corrupt."""
    path = find_file(key, root)
    spec = known(key)
    if path is None:
        base = data_root(root)
        where = ", ".join(shown(base / rel) for rel in spec.layouts)
        raise DataError(
            f"{Path(key).name} not found (looked in {where}); expected {spec.algo} "
            f"{spec.digest}. Fetch it with `{fetch_hint(spec.fetch, base)}`.")
    return verify_file(path, key, root)


def file_status(root: Optional[PathLike] = None, keys: Optional[Iterable[str]] = None,
                trust_record: bool = False) -> dict[str, tuple[str, str]]:
    """Status of known files (all by default): ``{key: (status, detail)}``, status in
    ``"ok"``, ``"missing"``, ``"corrupt"``. Hashes every present file (unless
    ``trust_record``); never touches the network."""
    out: dict[str, tuple[str, str]] = {}
    for key in (KNOWN_FILES if keys is None else keys):
        spec = known(key)
        path = find_file(key, root)
        if path is None:
            out[key] = ("missing", f"expected {spec.algo} {spec.digest}")
            continue
        try:
            verify_file(path, key, root, trust_record=trust_record)
            out[key] = ("ok", shown(path))
        except DataError as e:
            out[key] = ("corrupt", str(e))
    return out
