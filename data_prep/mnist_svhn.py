"""Fetch MNIST and SVHN, verify them, and build the MNIST-SVHN pair indices.

Usage::

    python -m data_prep.mnist_svhn [--root DIR] [--check] [--skip-svhn]
                                   [--multiplier 20] [--max-per-class 10000] [--seed 0]

The loaders do the same by themselves when a file is missing; this script does it up front.
Downloads go through torchvision (``torchvision.datasets.MNIST`` / ``SVHN``: MNIST from its
mirrors, SVHN from ``http://ufldl.stanford.edu/housenumbers/``), or from ``$MMVAE_LITE_MIRROR``
when set, into torchvision's layout: ``DIR/MNIST/raw/`` and ``DIR/SVHN/``. Every file is checked
against :data:`mmvae_lite.data.KNOWN_FILES` (sha256 for MNIST, torchvision's md5 for SVHN);
files already present and correct are not downloaded again; corrupt ones are renamed to
``*.corrupt`` and fetched again. ``--check`` hashes every present file (it never trusts a
cached verification) and touches no network.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from . import NetworkError, add_common_args, fail, move_aside, prepare_root, print_status

MNIST_KEYS = tuple(f"MNIST/raw/{split}-{what}" + gz for split in ("train", "t10k")
                   for what in ("images-idx3-ubyte", "labels-idx1-ubyte") for gz in (".gz", ""))
SVHN_KEYS = ("SVHN/train_32x32.mat", "SVHN/test_32x32.mat")


def _set_aside_corrupt(keys: Sequence[str], root) -> bool:
    """Move corrupt files aside; True if every key is present and verified."""
    from mmvae_lite.data import DataError, find_file, shown, verify_file

    complete = True
    for key in keys:
        path = find_file(key, root)
        if path is None:
            complete = False
            continue
        try:
            verify_file(path, key, root)
        except DataError as e:
            print(f"{key}: corrupt ({str(e).splitlines()[0]}); moved to {shown(move_aside(path))}")
            complete = False
    return complete


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.mnist_svhn",
        description="Download MNIST and SVHN into DIR/MNIST/raw and DIR/SVHN, verify their checksums "
                    "and build the MNIST-SVHN pair indices (cached in the data directory).")
    add_common_args(parser)
    parser.add_argument("--skip-svhn", action="store_true",
                        help="only MNIST (the SVHN stand-in will be used)")
    parser.add_argument("--multiplier", type=int, default=20,
                        help="pairs per instance (paper text: 20; authors' code: 30)")
    parser.add_argument("--max-per-class", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0, help="pairing seed")
    args = parser.parse_args(argv)

    from mmvae_lite.data import DataError, load_mnist_svhn, shown
    from mmvae_lite.data.download import download_mnist, download_svhn

    try:
        root = prepare_root(args.root)
    except DataError as e:
        return fail(str(e))
    keys = MNIST_KEYS + (() if args.skip_svhn else SVHN_KEYS)
    if args.check:
        ok = print_status(root, keys)
        return 0 if ok else 1

    print(f"data directory: {shown(root)}")
    try:
        if _set_aside_corrupt(MNIST_KEYS, root):
            print("MNIST: present and verified")
        else:
            print(f"MNIST: downloaded from {download_mnist(root)} and verified", flush=True)
        for key in () if args.skip_svhn else SVHN_KEYS:
            if _set_aside_corrupt([key], root):
                print(f"{key}: present and verified")
            else:
                split = key.split("/")[-1].split("_")[0]
                print(f"{key}: downloaded from {download_svhn(root, split)} and verified", flush=True)
    except NetworkError as e:
        return fail(f"{e}\nCheck the internet connection (or proxy settings) and run again; or "
                    f"download the file(s) yourself into {shown(root)}/MNIST/raw or {shown(root)}/SVHN.")
    except DataError as e:
        return fail(str(e))

    try:
        for split in ("train", "test"):
            ds = load_mnist_svhn(split, root, multiplier=args.multiplier,
                                 max_per_class=args.max_per_class, seed=args.seed,
                                 standin="always" if args.skip_svhn else "never", download=False)
            counts = ds.labels.bincount(minlength=10).tolist()
            print(f"pairs {split}: {len(ds)} (per class {counts})")
    except DataError as e:
        return fail(str(e))
    print("done.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
