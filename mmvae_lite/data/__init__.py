"""Datasets for the MMVAE experiments: MNIST, SVHN, MNIST-SVHN pairs and CUB image-captions.

One module per idea:

* :mod:`.files` -- the data directory, the known files and their checksums, fetch hints;
* :mod:`.download` -- the download switch, the mirror, :func:`fetch_file` (atomic, verified)
  and the torchvision downloads of MNIST and SVHN;
* :mod:`.sources` -- real data or stand-in (:func:`resolve_source`), downloading what is
  missing first;
* :mod:`.datasets` -- :class:`GatherDataset`, the base tensors + index tensors every dataset is;
* :mod:`.mnist_svhn` -- MNIST, SVHN (through ``torchvision.datasets``) and the same-digit pairs;
* :mod:`.captions` -- tokeniser and :class:`Vocab`; :mod:`.cub` -- CUB image-caption pairs;
* :mod:`.standins` -- the house-number and bird stand-ins for SVHN and CUB;
* :mod:`.experiment` -- :func:`load_dataset` and :func:`experiment_data`.

Every loader first looks in the data directory (``root=``, else ``$MMVAE_LITE_DATA``, else
``~/.cache/mmvae_lite``), downloads what is missing (unless ``download=False`` or
``$MMVAE_LITE_OFFLINE=1``), and then falls back to the stand-in (SVHN, CUB) or to a
:class:`DataError` that names the file, its checksum and the command that fetches it (MNIST).
Each prints one line saying what it loaded.
"""
from . import standins
from .captions import CaptionTooLongError, Vocab, VocabMismatchError, tokenize
from .cub import CUBDataset, load_cub
from .datasets import GatherDataset, LabelledImages
from .download import (MIRROR_ENV, OFFLINE_ENV, DownloadError, downloads_enabled, fetch_file,
                       mirror_url)
from .experiment import DATASET_NAMES, experiment_data, load_dataset
from .files import (CACHE_ENV, DATA_ENV, KNOWN_FILES, DataError, KnownFile, UnknownDatasetError,
                    cache_dir, data_root, file_status, find_file, require_file, shown, verify_file)
from .mnist_svhn import MNISTSVHN, load_mnist, load_mnist_svhn, load_svhn, pair_indices
from .sources import Source, resolve_source

__all__ = [
    "DataError", "UnknownDatasetError", "VocabMismatchError", "CaptionTooLongError", "DownloadError",
    "KnownFile", "KNOWN_FILES", "Source", "DATA_ENV", "CACHE_ENV", "OFFLINE_ENV", "MIRROR_ENV",
    "data_root", "cache_dir", "shown", "find_file", "verify_file", "require_file", "file_status",
    "resolve_source", "downloads_enabled", "mirror_url", "fetch_file",
    "GatherDataset", "LabelledImages", "MNISTSVHN", "CUBDataset", "Vocab", "tokenize", "pair_indices",
    "load_mnist", "load_svhn", "load_mnist_svhn", "load_cub", "load_dataset", "experiment_data",
    "DATASET_NAMES", "standins",
]
