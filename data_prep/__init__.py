"""Scripts that fetch and prepare the real datasets (need internet; everything else is offline).

* ``python -m data_prep.mnist_svhn [--root DIR]`` -- MNIST and SVHN, checked against known
  checksums, then the MNIST-SVHN pair indices.
* ``python -m data_prep.cub [--root DIR] [--features]`` -- the MMVAE release of CUB (images
  and captions), optional ResNet-101 features.
* ``python -m data_prep.make_figure --out FILE.png`` -- a picture of the offline stand-ins.

Each accepts ``--check`` to report, without network access, which files are present,
missing or corrupt. The shared helpers below download with a progress bar, verify
checksums, and turn network failures into one clear message and exit code 1.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["NetworkError", "download", "prepare_root", "print_status", "add_common_args"]

_USER_AGENT = "mmvae_lite-data-prep/0.1 (+https://github.com/)"


class NetworkError(RuntimeError):
    """A download failed (no connection, HTTP error, timeout...)."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--root`` and ``--check``, shared by the scripts."""
    parser.add_argument("--root", type=Path, default=None,
                        help="data directory (default: $MMVAE_LITE_DATA, else ~/.cache/mmvae_lite); "
                             "created if missing")
    parser.add_argument("--check", action="store_true",
                        help="only report which files are present, missing or corrupt (no network)")


def prepare_root(root: Optional[Path]) -> Path:
    """Create (if needed) and return the data directory for a fetch script."""
    from mmvae_lite.data import DATA_ENV, data_root

    if root is None and os.environ.get(DATA_ENV):
        root = Path(os.environ[DATA_ENV])
    if root is not None:
        root = Path(root).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"error: cannot create data directory {root}: {e}")
    return data_root(root)


def print_status(root: Path, keys: Sequence[str]) -> bool:
    """Print present/missing/corrupt for the given known files; True if all are ok."""
    from mmvae_lite.data import KNOWN_FILES, file_status

    status = file_status(root)
    ok = True
    print(f"data directory: {root}")
    for key in keys:
        state, detail = status[key]
        spec = KNOWN_FILES[key]
        mark = {"ok": "ok     ", "missing": "MISSING", "corrupt": "CORRUPT"}[state]
        line = f"  [{mark}] {key}"
        if state == "ok":
            line += f"  ({detail}; {spec.algo} verified)"
        elif state == "corrupt":
            line += f"\n            {detail}"
        print(line)
        ok = ok and state == "ok"
    return ok


def _md5_or_sha(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def download(urls: Sequence[str], dest: Path, *, md5: Optional[str] = None,
             sha256: Optional[str] = None, timeout: float = 60.0) -> Path:
    """Download the first reachable URL of ``urls`` to ``dest`` with a tqdm progress bar.

    The file is written to a temporary name and moved into place only when complete and,
    if given, its md5/sha256 matches.

    Raises:
        NetworkError: no URL could be downloaded (message lists every failure).
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=dest.name, leave=True) as bar:
                    while True:
                        chunk = resp.read(1 << 20)
                        if not chunk:
                            break
                        out.write(chunk)
                        bar.update(len(chunk))
            for algo, want in (("md5", md5), ("sha256", sha256)):
                if want is not None:
                    got = _md5_or_sha(tmp, algo)
                    if got != want:
                        raise NetworkError(f"{url}: downloaded file has {algo} {got}, expected {want}")
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, socket.timeout, ConnectionError, TimeoutError,
                NetworkError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            errors.append(f"{url}: {reason}")
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
            if tmp.exists():
                tmp.unlink()
    raise NetworkError("could not download " + dest.name + ":\n  " + "\n  ".join(errors))


def fail(message: str) -> int:
    """Print an error for a fetch script and return exit code 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def move_aside(path: Path) -> Path:
    """Rename a corrupt file to ``<name>.corrupt`` (kept for inspection) before re-fetching."""
    target = path.with_name(path.name + ".corrupt")
    shutil.move(str(path), str(target))
    return target
