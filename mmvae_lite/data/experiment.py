"""The package's face for data: a dataset by name, and the train/test data of a run configuration."""
from __future__ import annotations

from typing import Any, Callable, Optional

from .cub import load_cub
from .datasets import GatherDataset
from .files import PathLike, UnknownDatasetError
from .mnist_svhn import load_mnist, load_mnist_svhn, load_svhn
from .sources import StandinMode

__all__ = ["DATASET_NAMES", "load_dataset", "experiment_data"]

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
                    verbose: bool = True, download: Optional[bool] = None
                    ) -> tuple[GatherDataset, GatherDataset, Any]:
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
    common: dict[str, Any] = dict(root=root, verbose=verbose, download=download)
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
