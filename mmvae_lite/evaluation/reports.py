"""The paper's tables in one call: :func:`evaluate_mnist_svhn` (Tables 1-3, and 5) and :func:`evaluate_cub` (Table 4).

Each returns plain DataFrames (one row per model) plus the seconds spent on each part, with
``quick`` defaults sized for a laptop CPU and full defaults that follow the paper.
"""
from __future__ import annotations

import numbers
import time
from typing import Any, Callable, Mapping, Optional

import pandas as pd
import torch.nn as nn

from ..models import MultimodalVAE, VAE
from .checks import PathLike, check_int, require_multimodal
from .classifiers import data_source, get_digit_classifier
from .coherence import coherence
from .cub import CCA, SentenceEmbedder, cub_coherence, fit_cub_cca
from .examples import materialise
from .latent import latent_accuracy
from .likelihoods import log_likelihoods
from .runtime import device_of

__all__ = ["evaluate_mnist_svhn", "evaluate_cub", "flat_table"]

_DIGITS = ("mnist", "svhn")


def _one_row(d: Mapping[str, float], index: str = "model") -> pd.DataFrame:
    return pd.DataFrame([dict(d)], index=[index])


def evaluate_mnist_svhn(model: MultimodalVAE, test_data: Any, train_data: Any = None, *,
                        classifiers: Optional[Mapping[str, nn.Module]] = None, quick: bool = False,
                        K: Optional[int] = None, n_coherence: Optional[int] = None, n_joint: Optional[int] = None,
                        n_probe_train: Optional[int] = None, n_probe_test: Optional[int] = None,
                        n_likelihood: "int | str | None" = None, scaled: bool = False,
                        baselines: Optional[Mapping[str, VAE]] = None, root: Optional[PathLike] = None,
                        classifier_cache: Optional[PathLike] = None, likelihoods: bool = True,
                        seed: int = 0, progress: bool = True, verbose: bool = True) -> dict[str, pd.DataFrame]:
    """The paper's MNIST-SVHN tables for one model, as DataFrames.

    Returns a dict with

    * ``"classifiers"``: the digit classifiers' test accuracies (rows mnist / svhn);
    * ``"coherence"``: one row, joint and cross coherence (Table 2; fractions) plus reconstructions;
    * ``"latent_accuracy"`` (when ``train_data`` is given): one row per model (this one and any
      single-modality ``baselines``, e.g. ``{"VAE (mnist)": vae}``), linear-probe accuracies (Table 1);
    * ``"likelihoods"``: means of :func:`log_likelihoods` (Table 3; one row) and
      ``"likelihoods_per_example"``: the per-example values;
    * ``"timings"``: seconds spent on each part.

    Defaults (``quick=False`` / ``quick=True``): coherence on all / 1000 test pairs, 10000 / 1000
    prior samples for joint coherence, probe fitted on 10000 / 2000 training pairs and tested on
    all / 1000 test pairs, likelihoods with K = 1000 / 20 samples per proposal on 1000 / 100
    random test pairs (``n_likelihood=None`` with ``quick=False`` still means 1000, as the full test
    set at K = 1000 takes hours on a CPU; ``n_likelihood="all"`` uses every test pair). Missing
    ``classifiers`` come from
    :func:`get_digit_classifier` (trained and cached on first use).
    """
    model = require_multimodal(model, "evaluate_mnist_svhn", "its tables compare MNIST and SVHN generations")
    if not any(n in model.names for n in _DIGITS) and not classifiers:
        raise ValueError(f"evaluate_mnist_svhn needs a model with an 'mnist' or 'svhn' modality (or classifiers=), "
                         f"got modalities {model.names}")
    for value, arg in ((K, "K"), (n_coherence, "n_coherence"), (n_probe_train, "n_probe_train"),
                       (n_probe_test, "n_probe_test")):
        check_int(value, arg, none=True)
    check_int(n_joint, "n_joint", minimum=0, none=True)
    if n_likelihood != "all" and n_likelihood is not None and not (
            isinstance(n_likelihood, numbers.Integral) and not isinstance(n_likelihood, bool) and n_likelihood >= 1):
        raise ValueError(f"n_likelihood must be an integer >= 1, 'all' or None, got {n_likelihood!r}")
    timings: dict[str, float] = {}
    out: dict[str, pd.DataFrame] = {}
    K = K or (20 if quick else 1000)
    n_coherence = n_coherence if n_coherence is not None else (1000 if quick else None)
    n_joint = n_joint if n_joint is not None else (1000 if quick else 10000)
    n_probe_train = n_probe_train if n_probe_train is not None else (2000 if quick else 10000)
    n_probe_test = n_probe_test if n_probe_test is not None else (1000 if quick else None)
    n_likelihood = n_likelihood if n_likelihood is not None else (100 if quick else 1000)
    n_likelihood = None if n_likelihood == "all" else n_likelihood

    t0 = time.perf_counter()
    clfs = dict(classifiers or {})
    for name in _DIGITS:
        if name in model.names and name not in clfs:
            clfs[name] = get_digit_classifier(name, root, source=data_source(test_data, name), cache=classifier_cache,
                                              progress=progress, verbose=verbose)
    dev = device_of(model)
    clfs = {k: v.to(dev) for k, v in clfs.items()}
    out["classifiers"] = pd.DataFrame(
        [{"modality": k, "source": getattr(v, "source", ""), "test_accuracy": getattr(v, "test_accuracy", None)}
         for k, v in clfs.items()]).set_index("modality")
    timings["classifiers"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    out["coherence"] = _one_row(coherence(model, test_data, clfs, n_joint=n_joint, max_examples=n_coherence,
                                          seed=seed, progress=progress))
    timings["coherence"] = time.perf_counter() - t0

    if train_data is not None:
        t0 = time.perf_counter()
        rows = {"model": latent_accuracy(model, train_data, test_data, n_train=n_probe_train, n_test=n_probe_test,
                                         seed=seed)}
        for label, vae in (baselines or {}).items():
            rows[label] = latent_accuracy(vae, train_data, test_data, n_train=n_probe_train, n_test=n_probe_test,
                                          seed=seed)
        out["latent_accuracy"] = pd.DataFrame.from_dict(rows, orient="index")
        timings["latent_accuracy"] = time.perf_counter() - t0

    if likelihoods:
        t0 = time.perf_counter()
        per = log_likelihoods(model, test_data, K, max_examples=n_likelihood, scaled=scaled, seed=seed,
                              progress=progress)
        out["likelihoods_per_example"] = per
        out["likelihoods"] = _one_row(per.mean().to_dict())
        timings["likelihoods"] = time.perf_counter() - t0
    out["timings"] = pd.DataFrame([timings], index=["seconds"])
    return out


def evaluate_cub(model: MultimodalVAE, test_data: Any, train_data: Any, *, embedder: Optional[SentenceEmbedder] = None,
                 cca: Optional[CCA] = None, image_features: Optional[Callable] = None, quick: bool = False,
                 k: int = 40, n_joint: int = 1000, n_train: Optional[int] = None, n_test: Optional[int] = None,
                 vocab: Any = None, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """CUB CCA coherence (paper Table 4) in one call.

    Fits (unless given) the sentence embedder (FastText on the training captions: 300-d, 10
    epochs; ``quick``: 64-d, 3 epochs) and the CCA (k = 40 directions) on training pairs
    (``n_train``; quick default 5000), then scores the test pairs (``n_test``; quick default 1000).
    Returns ``{"cca": one-row DataFrame (ground_truth, joint, image->sentence, sentence->image),
    "correlations": canonical correlations of the fit, "embedder": ..., "cca_model": ...,
    "timings": ...}``.
    """
    model = require_multimodal(model, "evaluate_cub", "CCA coherence compares images with sentences")
    k = check_int(k, "k")
    n_joint = check_int(n_joint, "n_joint", minimum=0)
    check_int(n_train, "n_train", none=True)
    check_int(n_test, "n_test", none=True)
    timings: dict[str, float] = {}
    n_train = n_train if n_train is not None else (5000 if quick else None)
    n_test = n_test if n_test is not None else (1000 if quick else None)
    t0 = time.perf_counter()
    if embedder is None:
        vocab = vocab if vocab is not None else getattr(train_data, "vocab", None)
        if vocab is None:
            raise ValueError("evaluate_cub needs a vocabulary (train_data.vocab or vocab=) to fit the embedder")
        x, _ = materialise(train_data, ["sentence"], arg="train_data")
        if "sentence" not in x:
            raise ValueError("evaluate_cub: train_data must hold 'sentence' token ids to fit the embedder")
        texts = None
        caps = getattr(train_data, "captions", None)
        if caps is not None and len(caps) == len(x["sentence"]):
            from ..data import tokenize
            texts = [tokenize(c) for c in caps]
        embedder = SentenceEmbedder.fit(x["sentence"], vocab, texts=texts, dim=64 if quick else 300,
                                        epochs=3 if quick else 10, seed=seed)
    timings["embedder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if cca is None:
        cca = fit_cub_cca(train_data, embedder, image_features=image_features, k=k, max_examples=n_train, seed=seed)
    timings["cca"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = cub_coherence(model, test_data, cca, embedder, image_features=image_features, n_joint=n_joint,
                           max_examples=n_test, seed=seed, progress=progress)
    timings["coherence"] = time.perf_counter() - t0
    return {"cca": _one_row(scores), "correlations": pd.Series(cca.correlations, name="correlation"),
            "embedder": embedder, "cca_model": cca, "timings": pd.DataFrame([timings], index=["seconds"])}


def _plain(v):
    """A JSON-friendly scalar: numbers as float (NaN as None), anything else unchanged."""
    if v is None or isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return None if f != f else f


def flat_table(df) -> dict:
    """A one-row DataFrame as ``{column: value}``; a table as ``{"row/column": value}``."""
    if len(df) == 1:
        return {str(k): _plain(v) for k, v in df.iloc[0].to_dict().items()}
    return {f"{i}/{k}": _plain(v) for i, row in df.to_dict(orient="index").items() for k, v in row.items()}
