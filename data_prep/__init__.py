"""Scripts that fetch and prepare the real datasets (need internet; everything else is offline).

* ``python -m data_prep.mnist_svhn [--root DIR]`` -- MNIST and SVHN, checked against known
  checksums, then the MNIST-SVHN pair indices.
* ``python -m data_prep.cub [--root DIR] [--features]`` -- the MMVAE release of CUB (images
  and captions), optional ResNet-101 features.
* ``python -m data_prep.make_figure --out FILE.png`` -- a picture of the offline stand-ins.
* ``python -m data_prep.serve_mirror --dir DIR -- CMD ...`` -- run CMD with a loopback HTTP
  mirror of the data directory DIR (``$MMVAE_LITE_MIRROR``): how CI fills a fresh data
  directory through the same download path a new machine uses.

Each fetch script accepts ``--check`` to report, without network access, which files are
present, missing or corrupt (every present file is hashed). Downloads go through
:func:`mmvae_lite.data.fetch_file` (progress bar, checksum, atomic rename); network failures
become one clear message and exit code 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Optional, Sequence

from mmvae_lite.data.download import DownloadError as NetworkError
from mmvae_lite.data.download import fetch_file

__all__ = ["NetworkError", "download", "prepare_root", "print_status", "add_common_args"]


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
    """Hash and print present/missing/corrupt for the given known files; True if all are ok.

    Paths are printed relative to the data directory; a missing file's line gives its expected
    checksum."""
    from mmvae_lite.data import KNOWN_FILES, file_status, find_file, shown

    status = file_status(root, keys, trust_record=False)
    ok = True
    print(f"data directory: {shown(root)}")
    for key in keys:
        state, detail = status[key]
        spec = KNOWN_FILES[key]
        mark = {"ok": "ok     ", "missing": "MISSING", "corrupt": "CORRUPT"}[state]
        line = f"  [{mark}] {key}"
        if state == "ok":
            found = find_file(key, root)
            rel = found.relative_to(root).as_posix() if found is not None else key
            line += f"  ({'' if rel == key else f'as {rel}; '}{spec.algo} verified)"
        elif state == "missing":
            line += f"  (expected {spec.algo} {spec.digest})"
        else:
            line += f"\n            {detail}"
        print(line)
        ok = ok and state == "ok"
    return ok


def download(urls: Sequence[str], dest: Path, *, md5: Optional[str] = None,
             sha256: Optional[str] = None) -> Path:
    """Download the first reachable URL of ``urls`` to ``dest`` (progress bar, checksum when
    given, atomic): :func:`mmvae_lite.data.fetch_file`.

    Raises:
        NetworkError: no URL could be downloaded (the message lists every failure).
    """
    return fetch_file(urls, dest, sha256, md5=md5)


def fail(message: str) -> int:
    """Print an error for a fetch script and return exit code 1."""
    print(f"error: {message}", file=sys.stderr)
    return 1


def move_aside(path: Path) -> Path:
    """Rename a corrupt file to ``<name>.corrupt`` (kept for inspection) before re-fetching."""
    target = path.with_name(path.name + ".corrupt")
    shutil.move(str(path), str(target))
    return target
