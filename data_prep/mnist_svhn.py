"""Fetch MNIST and SVHN, verify them, and build the MNIST-SVHN pair indices.

Usage::

    python -m data_prep.mnist_svhn [--root DIR] [--check] [--skip-svhn]
                                   [--multiplier 20] [--max-per-class 10000] [--seed 0]

Sources (the ones torchvision uses): MNIST from torchvision's mirrors
(``https://ossci-datasets.s3.amazonaws.com/mnist/``, then ``http://yann.lecun.com/exdb/mnist/``),
SVHN from ``http://ufldl.stanford.edu/housenumbers/`` (``train_32x32.mat``, ``test_32x32.mat``).
Files land in ``DIR/mnist/`` and ``DIR/svhn/`` and are checked against the checksums in
:data:`mmvae_lite.data.KNOWN_FILES` (sha256 for MNIST, torchvision's md5 for SVHN).
Files already present and correct are not downloaded again; corrupt ones are renamed
to ``*.corrupt`` and fetched again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import NetworkError, add_common_args, download, fail, move_aside, prepare_root, print_status

MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
MNIST_KEYS = ("mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz",
              "mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")
SVHN_KEYS = ("svhn/train_32x32.mat", "svhn/test_32x32.mat")


def _mirrors() -> tuple[str, ...]:
    """MNIST mirrors, in torchvision's order (torchvision.datasets.MNIST.mirrors)."""
    return MNIST_MIRRORS


def _svhn_url(name: str) -> str:
    """SVHN URL, as in torchvision.datasets.SVHN.split_list."""
    return SVHN_URL + name


def fetch_file(key: str, root: Path) -> str:
    """Make sure known file ``key`` is present and verified; download it if needed.

    Returns a short description of what was done. Raises NetworkError on failure.
    """
    from mmvae_lite.data import DataError, KNOWN_FILES, find_file, verify_file

    spec = KNOWN_FILES[key]
    path = find_file(key, root)
    if path is not None:
        try:
            verify_file(path, key, root)
            return f"{key}: present and verified ({path})"
        except DataError as e:
            aside = move_aside(path)
            print(f"{key}: corrupt ({e}); moved to {aside}, fetching again")
    name = Path(key).name
    dest = root / key
    if key.startswith("mnist/"):
        urls = [m + name for m in _mirrors()]
    else:
        urls = [_svhn_url(name)]
    kw = {"sha256": spec.digest} if spec.algo == "sha256" else {"md5": spec.digest}
    download(urls, dest, **kw)
    verify_file(dest, key, root)
    return f"{key}: downloaded and verified ({dest})"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.mnist_svhn",
        description="Download MNIST and SVHN into DIR/mnist and DIR/svhn, verify their checksums "
                    "and build the MNIST-SVHN pair indices (cached in the data directory).")
    add_common_args(parser)
    parser.add_argument("--skip-svhn", action="store_true",
                        help="only MNIST (the SVHN stand-in will be used)")
    parser.add_argument("--multiplier", type=int, default=20,
                        help="pairs per instance (paper text: 20; authors' code: 30)")
    parser.add_argument("--max-per-class", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0, help="pairing seed")
    args = parser.parse_args(argv)

    from mmvae_lite.data import DataError, load_mnist_svhn

    try:
        root = prepare_root(args.root)
    except DataError as e:
        return fail(str(e))
    keys = MNIST_KEYS + (() if args.skip_svhn else SVHN_KEYS)
    if args.check:
        ok = print_status(root, keys)
        return 0 if ok else 1

    print(f"data directory: {root}")
    try:
        for key in keys:
            print(fetch_file(key, root), flush=True)
    except NetworkError as e:
        return fail(f"{e}\nCheck the internet connection (or proxy settings) and run again; or "
                    f"download the file(s) yourself into {root}/mnist or {root}/svhn.")
    except DataError as e:
        return fail(str(e))

    try:
        for split in ("train", "test"):
            ds = load_mnist_svhn(split, root, multiplier=args.multiplier,
                                 max_per_class=args.max_per_class, seed=args.seed,
                                 standin="always" if args.skip_svhn else "never")
            counts = ds.labels.bincount(minlength=10).tolist()
            print(f"pairs {split}: {len(ds)} (per class {counts})")
    except DataError as e:
        return fail(str(e))
    print("done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
