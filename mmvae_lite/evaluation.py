r"""Evaluation of (multimodal) VAEs: the paper's metrics as functions that return plain data.

Every metric takes a model and data and returns dicts, tensors or :class:`pandas.DataFrame` s;
:mod:`mmvae_lite.plotting` draws them. No metric trains or changes the model it evaluates: each
puts the model in eval mode under :func:`torch.no_grad` and restores every submodule's
train/eval flag afterwards (:func:`evaluation_mode`). Metrics that sample take a ``seed`` and
draw their random numbers from a forked RNG, so they are reproducible and leave the global
torch RNG untouched.

Data can be given as a dataset of :mod:`mmvae_lite.data` (anything with ``batches`` or
``get_batch``; labels from its ``labels``), a dict ``name -> Tensor`` (examples on the first
axis; labels from the ``labels=`` argument), a single tensor for a single-modality model, or any
iterable of dict batches. ``max_examples`` evaluates a seeded random subset (the MNIST-SVHN
pairs are stored sorted by digit, so "the first n" would be one digit only).

What is measured, and how it relates to the paper (Shi et al. 2019) and the authors' scripts
(``src/report/*.py`` of iffsid/mmvae):

=============================  ==============================================================
:func:`coherence`              Table 2 / Table 5. *Cross*: encode x_s, sample z ~ q(z|x_s)
                               (for PoE the expert times the prior), decode the likelihood mean
                               of x_t, classify it, compare with the label of the pair.
                               *Joint*: z ~ p(z) (10000 draws), decode every modality, fraction
                               whose predicted digits agree. Fractions in [0, 1].
:func:`latent_accuracy`        Table 1. Logistic regression on posterior means (the authors
                               train a linear layer on one posterior sample; ``use="sample"``).
:func:`log_likelihoods`        Table 3. IWAE estimates, per example, as the authors'
                               ``calculate_likelihoods.py`` defines them (see its docstring).
:func:`cub_coherence`          Table 4. CCA between image features and SIF-weighted FastText
                               sentence embeddings; mean cosine similarity of projected pairs.
:func:`kl_per_dimension`       Figure 5 (right): per-dimension KL(q(z|x_m) || p(z)) and
                               symmetric KL between the experts.
:func:`latent_traversals`      Figure 5 (left): mu_m +- 5 prior standard deviations, per dim.
:func:`latent_embedding`       2-D PCA / t-SNE of posterior and prior samples (authors: UMAP).
:func:`gradient_snr`           Appendix C: signal-to-noise ratio of IWAE / STL / DReG gradients.
:func:`evaluate_mnist_svhn`    Tables 1-3 (and 5) in one call.
:func:`evaluate_cub`           Table 4 in one call.
=============================  ==============================================================
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from .distributions import kl_divergence
from .models import MixtureOfExperts, MixtureOfExpertsPosterior, MultimodalVAE, ProductOfExperts, VAE

Model = Union[VAE, MultimodalVAE]
PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "evaluation_mode", "iterate_examples",
    "DigitClassifier", "train_digit_classifier", "get_digit_classifier", "classifier_path",
    "classifier_accuracy", "predict_digits",
    "coherence", "cross_coherence", "joint_coherence",
    "posterior_features", "latent_accuracy",
    "log_likelihoods", "likelihood_summary",
    "SentenceEmbedder", "CCA", "fit_cub_cca", "cub_coherence", "attribute_accuracy",
    "kl_per_dimension", "latent_traversals", "latent_embedding",
    "gradient_snr",
    "evaluate_mnist_svhn", "evaluate_cub",
]


# =============================================================================================
# Shared machinery: eval mode, RNG, devices, batches
# =============================================================================================
@contextlib.contextmanager
def evaluation_mode(*modules: Optional[nn.Module], grad: bool = False) -> Iterator[None]:
    """Eval mode (and ``no_grad`` unless ``grad``) inside; every submodule's flag restored after.

    Restoring each submodule's own ``training`` flag (not just calling ``train(old)`` on the
    root) keeps mixed states, e.g. a model whose frozen feature extractor is in eval mode.
    """
    flags = [(m, m.training) for mod in modules if mod is not None for m in mod.modules()]
    try:
        for mod in modules:
            if mod is not None:
                mod.eval()
        with torch.set_grad_enabled(grad):
            yield
    finally:
        for m, flag in flags:
            m.training = flag


@contextlib.contextmanager
def _seeded(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run with ``torch.manual_seed(seed)`` on a forked RNG (global state untouched); no-op for None."""
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def _one_thread():
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()


def _device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def _names(model: Model) -> list[str]:
    if isinstance(model, MultimodalVAE):
        return model.names
    if isinstance(model, VAE):
        return [model.name]
    raise TypeError(f"expected a VAE or MultimodalVAE, got {type(model).__name__}")


def _modality(model: Model, name: str):
    return model.modalities[name] if isinstance(model, MultimodalVAE) else model.modality


def _bar(it: Iterable, progress: bool, total: Optional[int] = None, desc: str = "", unit: str = "it"):
    if not progress:
        return it
    from tqdm.auto import tqdm
    return tqdm(it, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


class _Progress:
    """A tqdm bar counted in examples (``update(n)``), or nothing when ``progress`` is False."""

    def __init__(self, progress: bool, total: Optional[int], desc: str) -> None:
        self.bar = None
        if progress:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _total(data: Any, max_examples: Optional[int]) -> Optional[int]:
    n = _num_examples(data)
    if n is None:
        return max_examples
    return min(n, max_examples) if max_examples is not None else n


def _num_examples(data: Any) -> Optional[int]:
    if isinstance(data, torch.Tensor):
        return int(data.shape[0])
    if isinstance(data, Mapping):
        for v in data.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
        return None
    try:
        return len(data)
    except TypeError:
        return None


def _batch_size_of(batch: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def iterate_examples(data: Any, batch_size: int = 256, *, names: Optional[Sequence[str]] = None,
                     labels: Optional[torch.Tensor] = None, max_examples: Optional[int] = None,
                     seed: int = 0, device: "torch.device | str | None" = None,
                     ) -> Iterator[tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]]:
    """Yield ``(batch, labels)`` pairs in a fixed order; ``labels`` is None when there are none.

    Args:
        data: a dataset (``get_batch`` / ``batches``), a dict ``name -> Tensor``, a tensor (needs
            exactly one name in ``names``), or an iterable of dict batches.
        names: keep only these keys of each batch (the model's modalities).
        labels: (N,) labels aligned with ``data``; default ``data.labels`` or a ``"label"`` key.
        max_examples: use a seeded random subset of this size (kept in data order) when the
            data can be indexed; otherwise the first ``max_examples``.
        device: move batches and labels there.
    """
    if isinstance(data, torch.Tensor):
        if names is None or len(names) != 1:
            raise ValueError("a bare tensor needs a single-modality model; pass a dict name -> tensor")
        data = {names[0]: data}
    if labels is None and isinstance(data, Mapping):
        labels = data.get("label", data.get("labels"))
    if labels is None and not isinstance(data, Mapping):
        labels = getattr(data, "labels", None)
    labels = torch.as_tensor(labels).long() if labels is not None else None
    n = _num_examples(data)
    keep = (lambda b: {k: v for k, v in b.items() if k in names}) if names is not None else \
        (lambda b: {k: v for k, v in b.items() if k not in ("label", "labels")})
    dev = torch.device(device) if device is not None else None

    def out(b: Mapping[str, torch.Tensor], y: Optional[torch.Tensor]):
        b = keep(b)
        if dev is not None:
            b = {k: v.to(dev) for k, v in b.items()}
            y = y.to(dev) if y is not None else None
        return b, y

    indexable = isinstance(data, Mapping) or hasattr(data, "get_batch")
    if indexable and n is not None:
        if max_examples is not None and max_examples < n:
            g = torch.Generator().manual_seed(int(seed))
            rows = torch.randperm(n, generator=g)[:max_examples].sort().values
        else:
            rows = torch.arange(n)
        for i in range(0, len(rows), batch_size):
            r = rows[i:i + batch_size]
            if isinstance(data, Mapping):
                b = {k: v[r] for k, v in data.items() if isinstance(v, torch.Tensor) and k not in ("label", "labels")}
            else:
                b = data.get_batch(r)
            yield out(b, labels[r] if labels is not None else None)
        return
    # sequential sources: dataset.batches(...) or an iterable of batches
    it = data.batches(batch_size, shuffle=False) if hasattr(data, "batches") else iter(data)
    seen = 0
    for b in it:
        if isinstance(b, torch.Tensor):
            if names is None or len(names) != 1:
                raise ValueError("tensor batches need a single-modality model")
            b = {names[0]: b}
        b = dict(b)
        bs = _batch_size_of({k: v for k, v in b.items() if k not in ("label", "labels")})
        y = b.pop("label", b.pop("labels", None))
        if y is None and labels is not None:
            y = labels[seen:seen + bs]
        if max_examples is not None and seen + bs > max_examples:
            cut = max_examples - seen
            b = {k: v[:cut] for k, v in b.items()}
            y = y[:cut] if y is not None else None
            bs = cut
        if bs <= 0:
            break
        yield out(b, torch.as_tensor(y).long() if y is not None else None)
        seen += bs
        if max_examples is not None and seen >= max_examples:
            break


def _materialise(data: Any, names: Sequence[str], *, labels: Optional[torch.Tensor] = None,
                 max_examples: Optional[int] = None, seed: int = 0, batch_size: int = 1024,
                 ) -> tuple[dict[str, torch.Tensor], Optional[torch.Tensor]]:
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    ys: list[torch.Tensor] = []
    for b, y in iterate_examples(data, batch_size, names=names, labels=labels, max_examples=max_examples, seed=seed):
        for k in names:
            if k in b:
                parts[k].append(b[k].cpu())
        if y is not None:
            ys.append(y.cpu())
    return ({k: torch.cat(v) for k, v in parts.items() if v}, torch.cat(ys) if ys else None)


# =============================================================================================
# 1. Digit classifiers (for coherence)
# =============================================================================================
CLASSIFIER_FORMAT = "mmvae_lite/digit-classifier/1"
_IMAGE_SHAPES = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}


class DigitClassifier(nn.Module):
    """A small CNN digit classifier for 1x28x28 (MNIST) or 3x32x32 (SVHN) images in [0, 1].

    conv 3x3 (16) - BN - ReLU - maxpool - conv 3x3 (32) - BN - ReLU - maxpool - FC 128 - ReLU -
    dropout - FC 10 (logits). About 1.2 M multiply-adds per MNIST image: one epoch over MNIST
    reaches about 99% test accuracy.
    Inputs may have any leading dims: ``(*lead, C, H, W) -> (*lead, 10)``.
    """

    def __init__(self, in_channels: int = 1, size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"image size must be divisible by 4, got {size}")
        self.in_channels, self.size, self.num_classes = in_channels, size, num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 128), nn.ReLU(inplace=True),
                                  nn.Dropout(0.3), nn.Linear(128, num_classes))
        self.test_accuracy: Optional[float] = None
        self.source: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        y = self.head(self.features((x.reshape(-1, *x.shape[-3:]) - 0.5) * 2.0))
        return y.reshape(*lead, self.num_classes)


def classifier_path(name: str, source: str = "real", root: Optional[PathLike] = None,
                    cache: Optional[PathLike] = None) -> Path:
    """Where the classifier for modality ``name`` trained on ``source`` data is cached.

    ``<cache>/{name}_{source}.pt`` when ``cache`` is given, else ``classifiers/`` inside the data
    directory's derived-files cache (:func:`mmvae_lite.data.cache_dir`: ``<data root>/derived`` when
    writable, else a per-root folder under ``~/.cache/mmvae_lite``), so a read-only data directory is
    never written to.
    """
    if cache is not None:
        return Path(cache).expanduser() / f"{name}_{source}.pt"
    from .data import cache_dir
    derived = cache_dir(root)
    base = (derived if derived is not None else Path.home() / ".cache" / "mmvae_lite") / "classifiers"
    return base / f"{name}_{source}.pt"


def _data_source(data: Any, name: str) -> Optional[str]:
    src = getattr(data, "source", None)
    if isinstance(src, Mapping) and name in src:
        return str(getattr(src[name], "kind", src[name]))
    if isinstance(src, str):
        return src
    return None


@torch.no_grad()
def predict_digits(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1024,
                   event_dims: int = 3) -> torch.Tensor:
    """Predicted classes for inputs ``(*lead, *event)`` -> LongTensor ``(*lead,)`` (classifier in eval mode).

    ``event_dims`` trailing dimensions form one input (3 for images ``C, H, W``).
    """
    lead = images.shape[:images.dim() - event_dims]
    flat = images.reshape(-1, *images.shape[images.dim() - event_dims:])
    dev = _device(classifier)
    with evaluation_mode(classifier):
        preds = [classifier(flat[i:i + batch_size].to(dev)).argmax(-1).cpu() for i in range(0, len(flat), batch_size)]
    out = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)
    return out.reshape(lead)


def classifier_accuracy(classifier: nn.Module, data: Any, name: Optional[str] = None, *,
                        labels: Optional[torch.Tensor] = None, batch_size: int = 1024,
                        max_examples: Optional[int] = None) -> float:
    """Accuracy of a digit classifier on ``data`` (a dataset with labels, or tensors + ``labels``)."""
    name = name or (getattr(data, "key", None) or "x")
    correct = total = 0
    for b, y in iterate_examples(data, batch_size, names=[name], labels=labels, max_examples=max_examples):
        if y is None:
            raise ValueError("classifier_accuracy needs labels")
        x = b[name]
        correct += int((predict_digits(classifier, x, batch_size, x.dim() - 1) == y.cpu()).sum())
        total += len(y)
    return correct / max(total, 1)


def train_digit_classifier(name: str, dataset: Any, epochs: int = 2, *, test: Any = None,
                           labels: Optional[torch.Tensor] = None, test_labels: Optional[torch.Tensor] = None,
                           batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
                           max_train: Optional[int] = None, device: "str | torch.device | None" = None,
                           progress: bool = True) -> DigitClassifier:
    """Train a :class:`DigitClassifier` for image modality ``name`` ('mnist' or 'svhn').

    Args:
        dataset: training images with labels: a dataset whose batches hold ``name`` (labels from
            ``dataset.labels``) or a tensor / dict with ``labels=``.
        epochs: passes over the (possibly sub-sampled) training set; Adam with a one-cycle
            learning rate (peak ``lr * 3``) so that 1-2 epochs suffice.
        test: optional held-out data; its accuracy is stored as ``classifier.test_accuracy``.
        max_train: train on a seeded random subset of this size.

    Returns:
        The trained classifier, in eval mode, with ``test_accuracy`` set (None without ``test``).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    x, y = _materialise(dataset, [name], labels=labels, max_examples=max_train, seed=seed)
    if name not in x or y is None:
        raise ValueError(f"training data for {name!r} must contain {name!r} images and labels")
    x = x[name]
    if x.is_floating_point():  # store compactly; every image source here is 8-bit
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    c, h, w = x.shape[1:]
    if h != w:
        raise ValueError(f"square images expected, got {tuple(x.shape[1:])}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        clf = DigitClassifier(c, h).to(dev)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        steps = epochs * math.ceil(len(x) / batch_size)
        sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3 * lr, total_steps=steps, pct_start=0.2)
                 if steps >= 20 else None)
        clf.train()
        bar = _bar(range(steps), progress, steps, f"training {name} classifier", "step")
        it = iter(())
        for _ in bar:
            try:
                idx = next(it)
            except StopIteration:
                it = iter(torch.randperm(len(x), generator=g).split(batch_size))
                idx = next(it)
            xb = x[idx].to(dev).float().div_(255.0)
            loss = F.cross_entropy(clf(xb), y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
    clf.eval()
    clf.source = _data_source(dataset, name) or ""
    if test is not None:
        clf.test_accuracy = classifier_accuracy(clf, test, name, labels=test_labels)
    return clf


def _save_classifier(clf: DigitClassifier, path: Path, name: str, source: str, epochs: int) -> None:
    from .training import atomic_save
    atomic_save({"format": CLASSIFIER_FORMAT, "name": name, "source": source, "in_channels": clf.in_channels,
                 "size": clf.size, "epochs": epochs,
                 "test_accuracy": float(clf.test_accuracy) if clf.test_accuracy is not None else -1.0,
                 "state_dict": clf.state_dict()}, path)


def load_digit_classifier(path: PathLike, device: "str | torch.device | None" = None) -> DigitClassifier:
    """Load a classifier saved by :func:`get_digit_classifier` (``weights_only=True``)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path} is not an mmvae_lite digit classifier file")
    clf = DigitClassifier(int(state["in_channels"]), int(state["size"]))
    clf.load_state_dict(state["state_dict"])
    acc = float(state["test_accuracy"])
    clf.test_accuracy = acc if acc >= 0 else None
    clf.source = str(state["source"])
    clf.requires_grad_(False)
    return clf.to(device or "cpu").eval()


def get_digit_classifier(name: str, root: Optional[PathLike] = None, *, source: Optional[str] = None,
                         train: Any = None, test: Any = None, epochs: Optional[int] = None,
                         cache: Optional[PathLike] = None, retrain: bool = False, max_train: Optional[int] = None,
                         device: "str | torch.device | None" = None, progress: bool = True,
                         verbose: bool = True) -> DigitClassifier:
    """The cached digit classifier for ``name`` ('mnist' or 'svhn'), trained first if missing.

    The file (see :func:`classifier_path`) stores the weights and the test accuracy; it is read
    with ``weights_only=True``. ``source`` ('real' or 'standin') picks the variant; by default it
    comes from ``train`` / ``test`` (``dataset.source``) or from :func:`mmvae_lite.data.resolve_source`.
    Without ``train``/``test`` the data are loaded with :mod:`mmvae_lite.data` (SVHN falls back to
    the stand-in when the real files are missing). Default epochs: 1 for MNIST, 2 for SVHN.
    """
    if name not in _IMAGE_SHAPES:
        raise ValueError(f"digit classifiers exist for {sorted(_IMAGE_SHAPES)}, not {name!r}")
    if source is None:
        source = _data_source(train, name) or _data_source(test, name)
    if source is None:
        from .data import resolve_source
        source = resolve_source(name, root, "auto").kind
    path = classifier_path(name, source, root, cache)
    if path.is_file() and not retrain:
        try:
            clf = load_digit_classifier(path, device)
            if verbose:
                acc = f"{100 * clf.test_accuracy:.2f}%" if clf.test_accuracy is not None else "unknown"
                print(f"[mmvae_lite] {name} classifier ({source}) from {path}: test accuracy {acc}", flush=True)
            return clf
        except Exception as e:  # unreadable or stale: retrain
            warnings.warn(f"could not load {path} ({e}); retraining", stacklevel=2)
    if train is None or test is None:
        from . import data as _data
        def loader(split: str, root: Optional[PathLike] = None, verbose: bool = True):
            if name == "mnist":
                return _data.load_mnist(split, root=root, verbose=verbose)
            return _data.load_svhn(split, root=root, standin="always" if source == "standin" else "never",
                                   verbose=verbose)
        train = train if train is not None else loader("train", root=root, verbose=verbose)
        test = test if test is not None else loader("test", root=root, verbose=verbose)
    epochs = epochs or (1 if name == "mnist" else 2)
    t0 = time.perf_counter()
    clf = train_digit_classifier(name, train, epochs, test=test, max_train=max_train, device=device,
                                 progress=progress)
    clf.requires_grad_(False)
    clf.source = source
    try:
        _save_classifier(clf, path, name, source, epochs)
        where = f"saved to {path}"
    except OSError as e:
        where = f"not saved ({e})"
    if verbose:
        print(f"[mmvae_lite] trained {name} classifier ({source}) in {time.perf_counter() - t0:.0f} s: "
              f"test accuracy {100 * (clf.test_accuracy or 0):.2f}%; {where}", flush=True)
    return clf


# =============================================================================================
# 2. Coherence (Table 2, Table 5)
# =============================================================================================
def _decoded_mean(model: Model, name: str, z: torch.Tensor) -> torch.Tensor:
    mod = _modality(model, name)
    return mod.likelihood.mean(mod.decode(z))


def cross_coherence(model: MultimodalVAE, data: Any, classifiers: Mapping[str, nn.Module], *,
                    labels: Optional[torch.Tensor] = None, batch_size: int = 256, mean_latent: bool = False,
                    max_examples: Optional[int] = None, seed: Optional[int] = 0, progress: bool = False
                    ) -> dict[str, float]:
    """Fraction of cross (and self) generations whose predicted digit equals the input's label.

    For each source modality s present in the data: z ~ q(z | x_s) (``model.unimodal_samples``: for
    PoE the expert times the prior expert; ``mean_latent`` uses the posterior mean instead of one
    sample, the authors sample), decode the likelihood mean of every target t that has a
    classifier, classify. Returns ``{"s->t": fraction}`` for all pairs, including s == t
    (reconstruction).
    """
    if not isinstance(model, MultimodalVAE):
        raise TypeError("cross_coherence needs a MultimodalVAE")
    dev = _device(model)
    targets = [t for t in model.names if t in classifiers]
    correct: dict[str, int] = {}
    total = 0
    bar = _Progress(progress, _total(data, max_examples), "cross coherence")
    with evaluation_mode(model, *classifiers.values()), _seeded(seed, dev):
        for batch, y in iterate_examples(data, batch_size, names=model.names, labels=labels,
                                         max_examples=max_examples, seed=seed or 0, device=dev):
            if y is None:
                raise ValueError("cross coherence needs labels (dataset.labels or labels=)")
            present, z = model.unimodal_samples(batch, 1, mean=mean_latent)     # (M, 1, B, L)
            for t in targets:
                pred = predict_digits(classifiers[t], _decoded_mean(model, t, z[:, 0]), batch_size,
                                      len(model.modalities[t].event_shape))                       # (M, B)
                for i, s in enumerate(present):
                    key = f"{s}->{t}"
                    correct[key] = correct.get(key, 0) + int((pred[i] == y.cpu()).sum())
            total += len(y)
            bar.update(len(y))
    bar.close()
    return {k: v / max(total, 1) for k, v in correct.items()}


def joint_coherence(model: MultimodalVAE, classifiers: Mapping[str, nn.Module], n: int = 10000, *,
                    batch_size: int = 1000, seed: Optional[int] = 0) -> float:
    """Fraction of prior samples z ~ p(z) for which the digits predicted from every decoded modality agree."""
    if not isinstance(model, MultimodalVAE):
        raise TypeError("joint_coherence needs a MultimodalVAE")
    names = [t for t in model.names if t in classifiers]
    if len(names) < 2:
        raise ValueError(f"joint coherence needs classifiers for >= 2 modalities, got {names}")
    dev = _device(model)
    agree = 0
    with evaluation_mode(model, *classifiers.values()), _seeded(seed, dev):
        prior = model.prior()
        for start in range(0, n, batch_size):
            z = prior.sample((min(batch_size, n - start),))
            preds = torch.stack([predict_digits(classifiers[t], _decoded_mean(model, t, z), batch_size,
                                                len(model.modalities[t].event_shape)) for t in names])
            agree += int((preds == preds[:1]).all(0).sum())
    return agree / max(n, 1)


def coherence(model: MultimodalVAE, data: Any, classifiers: Mapping[str, nn.Module], *,
              labels: Optional[torch.Tensor] = None, n_joint: int = 10000, batch_size: int = 256,
              mean_latent: bool = False, max_examples: Optional[int] = None, seed: Optional[int] = 0,
              progress: bool = False) -> dict[str, float]:
    """Joint and cross coherence (paper Table 2): ``{"joint": f, "s->t": f, ...}``, fractions in [0, 1].

    ``data`` is the *test* split with digit labels; ``classifiers`` maps modality names to
    digit classifiers (``(*, C, H, W) -> logits``), e.g. from :func:`get_digit_classifier`.
    See :func:`cross_coherence` and :func:`joint_coherence`.
    """
    out: dict[str, float] = {}
    if sum(t in classifiers for t in model.names) >= 2 and n_joint > 0:
        out["joint"] = joint_coherence(model, classifiers, n_joint, seed=seed)
    cross = cross_coherence(model, data, classifiers, labels=labels, batch_size=batch_size, mean_latent=mean_latent,
                            max_examples=max_examples, seed=seed, progress=progress)
    # cross-modal pairs first (the paper's columns, in model order), then reconstructions
    order = {n: i for i, n in enumerate(model.names)}
    keys = sorted(cross, key=lambda k: (k.split("->")[0] == k.split("->")[1],
                                        order[k.split("->")[0]], order[k.split("->")[1]]))
    out.update({k: cross[k] for k in keys})
    return out


# =============================================================================================
# 3. Linear probe on the latent space (Table 1)
# =============================================================================================
def posterior_features(model: Model, data: Any, *, labels: Optional[torch.Tensor] = None, joint: bool = False,
                       use: str = "mean", batch_size: int = 512, max_examples: Optional[int] = None,
                       seed: int = 0) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
    """Latent features per input set: ``{name: (N, L)}`` (+ ``"a,b"`` for the joint posterior) and labels.

    ``name`` uses q(z | x_name) alone (``model.posterior({name: x})``: for PoE the expert times the
    prior). ``use="mean"`` takes posterior means; ``"sample"`` one sample (the authors' choice).
    """
    if use not in ("mean", "sample"):
        raise ValueError(f"use must be 'mean' or 'sample', got {use!r}")
    names = _names(model)
    dev = _device(model)
    feats: dict[str, list[np.ndarray]] = {}
    ys: list[np.ndarray] = []
    with evaluation_mode(model), _seeded(seed, dev):
        for batch, y in iterate_examples(data, batch_size, names=names, labels=labels, max_examples=max_examples,
                                         seed=seed, device=dev):
            sets = [[n] for n in names if n in batch]
            if joint and isinstance(model, MultimodalVAE) and len(sets) > 1:
                sets.append([n for n in names if n in batch])
            for s in sets:
                if isinstance(model, MultimodalVAE):
                    q = model.posterior({k: batch[k] for k in s})
                else:
                    q = model.encode(batch[s[0]])
                z = q.mean if use == "mean" else q.sample()
                feats.setdefault(",".join(s), []).append(z.float().cpu().numpy())
            if y is not None:
                ys.append(y.cpu().numpy())
    return {k: np.concatenate(v) for k, v in feats.items()}, (np.concatenate(ys) if ys else None)


def latent_accuracy(model: Model, train: Any, test: Any, *, train_labels: Optional[torch.Tensor] = None,
                    test_labels: Optional[torch.Tensor] = None, n_train: Optional[int] = 10000,
                    n_test: Optional[int] = None, joint: Optional[bool] = None, use: str = "mean",
                    C: float = 1.0, max_iter: int = 1000, batch_size: int = 512, seed: int = 0) -> dict[str, float]:
    """Digit accuracy of a logistic-regression probe on latent features (paper Table 1).

    Fits scikit-learn's ``LogisticRegression`` (after standardising the features) on ``n_train``
    random training examples and reports accuracy on the test set, for each modality's posterior
    and, when ``joint`` (default: for PoE models), the joint posterior of all modalities (key
    ``"a,b"``). Works with a single-modality :class:`VAE` too, for the synergy comparison.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if joint is None:
        joint = isinstance(model, MultimodalVAE) and isinstance(model.joint_rule, ProductOfExperts)
    ftr, ytr = posterior_features(model, train, labels=train_labels, joint=joint, use=use, batch_size=batch_size,
                                  max_examples=n_train, seed=seed)
    fte, yte = posterior_features(model, test, labels=test_labels, joint=joint, use=use, batch_size=batch_size,
                                  max_examples=n_test, seed=seed + 1)
    if ytr is None or yte is None:
        raise ValueError("latent_accuracy needs labels for train and test data")
    out = {}
    for key in ftr:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        # one BLAS thread: these problems are small, and threads only contend on a busy machine
        with warnings.catch_warnings(), _one_thread():
            warnings.simplefilter("ignore")  # convergence chatter on tiny problems
            clf.fit(ftr[key], ytr)
        out[key] = float((clf.predict(fte[key]) == yte).mean())
    return out


# =============================================================================================
# 4. Log-likelihoods (Table 3)
# =============================================================================================
def _log_weight_terms(model: Model, batch: Mapping[str, torch.Tensor], k: int, scaled: bool
                      ) -> dict[str, torch.Tensor]:
    """Log importance weights of every likelihood term for k samples per proposal: term -> (S, B)."""
    if isinstance(model, VAE):
        lw, _ = model.log_weights(batch[model.name], k)
        return {model.name: lw}
    present, experts = model.experts(batch)
    prior = model.prior()
    uni = model.joint_rule.unimodal(experts, prior)                              # (M, B, L)
    post = model.joint_rule.joint(experts, prior)
    M = len(present)
    z_uni = uni.sample((k,))                                                     # (k, M, B, L)
    lq_uni = uni.log_prob(z_uni).sum(-1).transpose(0, 1)                         # (M, k, B)
    z_uni = z_uni.transpose(0, 1)                                                # (M, k, B, L)
    if isinstance(post, MixtureOfExpertsPosterior):
        # stratified: the k samples of every expert, scored by the mixture density (authors' m_iwae)
        z_all, lq_joint, rows = z_uni, post.log_prob(z_uni), slice(0, M)
    else:
        z_j = post.sample((k,))                                                  # (k, B, L)
        z_all = torch.cat([z_uni, z_j.unsqueeze(0)])
        lq_joint, rows = post.log_prob(z_j).unsqueeze(0), slice(M, M + 1)
    lpz = prior.log_prob(z_all).sum(-1)                                          # (R, k, B)
    lpx = {d: model.modalities[d].log_likelihood(model.modalities[d].decode(z_all), batch[d]) for d in present}
    all_ = ",".join(present)
    base_joint = lpz[rows] - lq_joint
    out = {all_: base_joint + sum((model.llik_scaling[d] if scaled else 1.0) * lpx[d][rows] for d in present)}
    for d in present:
        out[f"{d}|{all_}"] = base_joint + lpx[d][rows]
    for i, e in enumerate(present):
        base = lpz[i] - lq_uni[i]
        for d in present:
            out[f"{d}|{e}"] = base + lpx[d][i]
    return {key: v.reshape(-1, v.shape[-1]) for key, v in out.items()}


def log_likelihoods(model: Model, data: Any, K: int = 1000, *, batch_size: int = 64,
                    samples_per_chunk: Optional[int] = None, max_evals: int = 4096, scaled: bool = False,
                    max_examples: Optional[int] = None, seed: Optional[int] = 0, progress: bool = True
                    ) -> pd.DataFrame:
    r"""IWAE estimates of log-likelihoods, one row per example (paper Table 3).

    :math:`\log \frac{1}{S}\sum_s p(z_s)\,p(x_d|z_s)/q(z_s)` with the proposals of the authors'
    ``calculate_likelihoods.py`` (K samples *per proposal component*). Columns, for modalities
    ``a`` and ``b`` (a single-modality :class:`VAE` gives one column, its name: log p(x)):

    ``"a,b"``
        log p(x_a, x_b) with the joint posterior as proposal. For MoE (the authors' ``m_iwae``):
        K samples from each expert, all M*K scored with the mixture density, one log-mean-exp
        (eq. 5). For PoE: K samples of the product. With ``scaled=True`` the log-likelihoods are
        multiplied by the model's ``llik_scaling`` as in the authors' script (then it is not a
        normalised density); the default is the unscaled log p(x_a, x_b).
    ``"a|a,b"``
        log p(x_a) estimated with the *joint* posterior q(z | x_a, x_b) as proposal (the authors'
        ``individual_iwaes``, the paper's log p(x_m | x_m, x_n)). Always unscaled.
    ``"a|b"``
        log p(x_a) estimated with q(z | x_b) as proposal (the authors' ``cross_iwaes``, the
        paper's log p(x_m | x_n)); ``"a|a"`` is the usual unimodal estimate of log p(x_a). These
        are importance-sampling estimates of the *marginal* log p(x_a) under different proposals
        (lower bounds in expectation), not of the conditional log p(x_a | x_b).

    Sampling is chunked so that at most ``max_evals`` decoder evaluations per decoder are alive
    (or ``samples_per_chunk`` samples per proposal); log-sum-exps are accumulated exactly.
    """
    if K < 1:
        raise ValueError(f"K must be >= 1, got {K}")
    names = _names(model)
    dev = _device(model)
    rows_out: dict[str, list[torch.Tensor]] = {}
    bar = _Progress(progress, _total(data, max_examples), f"log-likelihoods (K={K})")
    with evaluation_mode(model), _seeded(seed, dev):
        for batch, _ in iterate_examples(data, batch_size, names=names, max_examples=max_examples, seed=seed or 0,
                                         device=dev):
            B = _batch_size_of(batch)
            R = 1 if isinstance(model, VAE) else len(batch) + int(not isinstance(model.joint_rule, MixtureOfExperts))
            step = samples_per_chunk or max(1, max_evals // (R * B))
            acc: dict[str, torch.Tensor] = {}
            count: dict[str, int] = {}
            done = 0
            while done < K:
                k = min(step, K - done)
                for key, lw in _log_weight_terms(model, batch, k, scaled).items():
                    lse = torch.logsumexp(lw.double(), 0)
                    acc[key] = torch.logaddexp(acc[key], lse) if key in acc else lse
                    count[key] = count.get(key, 0) + lw.shape[0]
                done += k
            for key in acc:
                rows_out.setdefault(key, []).append((acc[key] - math.log(count[key])).cpu())
            bar.update(B)
    bar.close()
    return pd.DataFrame({k: torch.cat(v).numpy() for k, v in rows_out.items()})


def likelihood_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of each column of :func:`log_likelihoods` (rows: terms)."""
    return pd.DataFrame({"mean": df.mean(), "sem": df.std(ddof=1) / math.sqrt(max(len(df), 1)), "n": len(df)})


# =============================================================================================
# 5. CUB: sentence embeddings, CCA, coherence (Table 4)
# =============================================================================================
def _i2w(vocab: Any) -> list[str]:
    if hasattr(vocab, "i2w"):
        v = vocab.i2w
        return list(v.values()) if isinstance(v, Mapping) else list(v)
    if isinstance(vocab, Mapping):
        return [vocab[i] for i in range(len(vocab))]
    return list(vocab)


@dataclass
class SentenceEmbedder:
    """Sentence -> vector, as the authors' ``analyse_cub.py``: SIF-like weighted mean of word
    vectors with the first principal component removed (Arora et al. 2017).

    ``embed(ids) = sum_t w[x_t] v[x_t] / T'`` over the tokens up to and including the first
    ``<eos>`` (T' of them), with ``w = a / (a + p(word))`` from training-text frequencies, then
    ``e - (e . u) u`` for the first principal direction ``u`` of the training embeddings.

    Attributes:
        vectors: (V, E) word vectors (row i for token id i).
        weights: (V,) word weights.
        pc: (E,) unit first principal direction, or None (no removal).
        eos_idx: the end-of-sentence token id.
    """

    vectors: np.ndarray
    weights: np.ndarray
    pc: Optional[np.ndarray] = None
    eos_idx: int = 2

    @classmethod
    def fit(cls, sentences: torch.Tensor, vocab: Any, *, texts: Optional[Sequence[Sequence[str]]] = None,
            dim: int = 300, window: int = 3, min_count: int = 3, epochs: int = 10, a: float = 1e-3,
            exc_idx: int = 0, pad_idx: int = 1, eos_idx: int = 2, seed: int = 0, workers: int = 1
            ) -> "SentenceEmbedder":
        """Train FastText word vectors (gensim) on the training text and set the weights and PC.

        Args:
            sentences: training token ids (N, T), used for the principal component.
            vocab: a :class:`mmvae_lite.data.Vocab` or a list of words (index = token id).
            texts: tokenised training captions for FastText and the word frequencies (default:
                the decoded ``sentences``, rare words as ``<exc>``). The authors used the raw
                training text (words outside the vocabulary count towards ``<exc>``).
            dim, window, min_count, epochs: FastText settings (authors: 300, 3, 3, 10).
            a: the weighting constant (authors: 1e-3).
            exc_idx, pad_idx, eos_idx: special tokens (the authors' and :class:`Vocab`'s 0, 1, 2);
                their vectors are -1, 0 and +1 everywhere, as in the authors' code.
        """
        from collections import Counter

        from gensim.models import FastText

        i2w = _i2w(vocab)
        w2i = {w: i for i, w in enumerate(i2w)}
        ids = torch.as_tensor(sentences).long().cpu().numpy()
        if texts is None:
            texts = []
            for row in ids:
                words = []
                for t in row:
                    if t == eos_idx:
                        break
                    if t != pad_idx:
                        words.append(i2w[t])
                texts.append(words)
        texts = [list(t) for t in texts if len(t)]
        ft = FastText(vector_size=dim, window=window, min_count=min_count, seed=seed, workers=workers)
        ft.build_vocab(corpus_iterable=texts)
        ft.train(corpus_iterable=texts, total_examples=len(texts), epochs=epochs)
        vectors = np.zeros((len(i2w), dim), dtype=np.float32)
        special = {exc_idx: -1.0, pad_idx: 0.0, eos_idx: 1.0}
        for i, w in enumerate(i2w):
            vectors[i] = special[i] if i in special else ft.wv[w]
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(t)
        total = sum(counts.values())
        weights = np.zeros(len(i2w), dtype=np.float32)
        exc = 0
        for w, c in counts.items():
            i = w2i.get(w)
            if i is None or i == exc_idx:
                exc += c
            elif i not in (pad_idx, eos_idx):
                weights[i] = a / (a + c / total)
        weights[exc_idx] = a / (a + exc / total) if total else 0.0
        emb = cls(vectors, weights, None, eos_idx)
        e = emb.embed(ids)
        _, _, vt = np.linalg.svd(e - e.mean(0), full_matrices=False)
        emb.pc = vt[0].astype(np.float32)
        return emb

    def embed(self, ids: "torch.Tensor | np.ndarray", chunk: int = 4096) -> np.ndarray:
        """Weighted mean word vectors (N, E) without the principal-component removal."""
        ids = torch.as_tensor(ids).long().cpu().numpy()
        T = ids.shape[1]
        is_eos = ids == self.eos_idx
        first = np.where(is_eos.any(1), is_eos.argmax(1), T - 1)        # index of first <eos> (or last token)
        mask = (np.arange(T)[None, :] <= first[:, None]).astype(np.float32)
        out = np.empty((len(ids), self.vectors.shape[1]), dtype=np.float32)
        for i in range(0, len(ids), chunk):
            x, m = ids[i:i + chunk], mask[i:i + chunk]
            w = self.weights[x] * m                                        # (n, T)
            out[i:i + chunk] = np.einsum("nt,nte->ne", w, self.vectors[x]) / m.sum(1, keepdims=True)
        return out

    def __call__(self, ids: "torch.Tensor | np.ndarray") -> np.ndarray:
        e = self.embed(ids)
        if self.pc is not None:
            e = e - np.outer(e @ self.pc, self.pc)
        return e


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v / np.sqrt(np.clip(w, 1e-12, None))) @ v.T


@dataclass
class CCA:
    """Two-view canonical correlation analysis (numpy), with a small relative ridge.

    ``fit`` whitens each view (covariance + ``reg * trace/d * I``), takes the SVD of the whitened
    cross-covariance and keeps ``k`` directions, so projections have unit variance per direction
    and ``correlations`` are the canonical correlations. (The authors solve the generalised
    eigenproblem with ``scipy.linalg.eig``, whose eigenvectors are scaled differently; with unit-
    variance canonical variates every direction weighs equally in the cosine similarity.)
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    proj_x: np.ndarray
    proj_y: np.ndarray
    correlations: np.ndarray

    @classmethod
    def fit(cls, x: Any, y: Any, k: int = 40, reg: float = 1e-4) -> "CCA":
        x = np.asarray(torch.as_tensor(x).double().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        y = np.asarray(torch.as_tensor(y).double().cpu()) if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"CCA needs the same number (>= 2) of rows in both views, got {len(x)} and {len(y)}")
        mx, my = x.mean(0), y.mean(0)
        xc, yc = x - mx, y - my
        n = len(x)

        def cov(a, b):
            return a.T @ b / (n - 1)

        cxx, cyy, cxy = cov(xc, xc), cov(yc, yc), cov(xc, yc)
        cxx += np.eye(len(cxx)) * reg * max(np.trace(cxx) / len(cxx), 1e-12)
        cyy += np.eye(len(cyy)) * reg * max(np.trace(cyy) / len(cyy), 1e-12)
        wx, wy = _inv_sqrt(cxx), _inv_sqrt(cyy)
        u, s, vt = np.linalg.svd(wx @ cxy @ wy, full_matrices=False)
        k = min(k, len(s))
        return cls(mx, my, wx @ u[:, :k], wy @ vt[:k].T, s[:k])

    def transform(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(torch.as_tensor(x).double().cpu()) if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
        y = np.asarray(torch.as_tensor(y).double().cpu()) if isinstance(y, torch.Tensor) else np.asarray(y, np.float64)
        return (x - self.mean_x) @ self.proj_x, (y - self.mean_y) @ self.proj_y

    def similarity(self, x: Any, y: Any) -> np.ndarray:
        """Per-pair cosine similarity of the projected views, (N,): the authors' "correlation"."""
        px, py = self.transform(x, y)
        num = (px * py).sum(1)
        den = np.linalg.norm(px, axis=1) * np.linalg.norm(py, axis=1)
        return num / np.maximum(den, 1e-12)

    def score(self, x: Any, y: Any) -> float:
        """Mean cosine similarity of projected pairs."""
        return float(self.similarity(x, y).mean())


def _default_image_features(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 2:
        return x
    from .standins import standin_features
    return standin_features(x.clamp(0, 1))


def fit_cub_cca(train: Any, embedder: SentenceEmbedder, *, image_features: Optional[Callable] = None, k: int = 40,
                reg: float = 1e-4, image: str = "image", sentence: str = "sentence",
                max_examples: Optional[int] = None, batch_size: int = 1024, seed: int = 0) -> CCA:
    """CCA between image features and sentence embeddings of the training pairs (authors: k = 40)."""
    feats = image_features or _default_image_features
    xs, ys = [], []
    for b, _ in iterate_examples(train, batch_size, names=[image, sentence], max_examples=max_examples, seed=seed):
        xs.append(feats(b[image]).float().cpu().numpy())
        ys.append(embedder(b[sentence]))
    return CCA.fit(np.concatenate(xs), np.concatenate(ys), k=k, reg=reg)


def cub_coherence(model: MultimodalVAE, test: Any, cca: CCA, embedder: SentenceEmbedder, *,
                  image_features: Optional[Callable] = None, n_joint: int = 1000, image: str = "image",
                  sentence: str = "sentence", batch_size: int = 256, max_examples: Optional[int] = None,
                  seed: Optional[int] = 0, progress: bool = False) -> dict[str, float]:
    """CCA coherence (paper Table 4): mean cosine similarity of CCA-projected (image, sentence) pairs.

    ``ground_truth``: test pairs; ``image->sentence``: test image with the sentence decoded from
    z ~ q(z | image) (most likely token at each position); ``sentence->image``: decoded image
    (features) from z ~ q(z | sentence) with the test sentence; ``joint``: both decoded from
    ``n_joint`` prior samples. Image tensors (B, 3, H, W) are mapped to features by
    ``image_features`` (default: identity for feature vectors, the fixed random-conv stand-in
    features of :func:`mmvae_lite.standins.standin_features` for pictures).
    """
    feats = image_features or _default_image_features
    dev = _device(model)
    sims: dict[str, list[np.ndarray]] = {"ground_truth": [], "image->sentence": [], "sentence->image": []}
    bar = _Progress(progress, _total(test, max_examples), "CCA coherence")
    with evaluation_mode(model), _seeded(seed, dev):
        for b, _ in iterate_examples(test, batch_size, names=[image, sentence], max_examples=max_examples,
                                     seed=seed or 0, device=dev):
            present, z = model.unimodal_samples(b, 1)
            zi, zs = z[present.index(image), 0], z[present.index(sentence), 0]
            img_f = feats(b[image]).float().cpu()
            sent_e = embedder(b[sentence])
            sims["ground_truth"].append(cca.similarity(img_f, sent_e))
            sims["image->sentence"].append(cca.similarity(img_f, embedder(_decoded_mean(model, sentence, zi))))
            sims["sentence->image"].append(cca.similarity(feats(_decoded_mean(model, image, zs)).float().cpu(), sent_e))
            bar.update(_batch_size_of(b))
        bar.close()
        joint = []
        prior = model.prior()
        for start in range(0, n_joint, batch_size):
            zp = prior.sample((min(batch_size, n_joint - start),))
            joint.append(cca.similarity(feats(_decoded_mean(model, image, zp)).float().cpu(),
                                        embedder(_decoded_mean(model, sentence, zp))))
    out = {"ground_truth": float(np.concatenate(sims["ground_truth"]).mean())}
    if joint:
        out["joint"] = float(np.concatenate(joint).mean())
    out["image->sentence"] = float(np.concatenate(sims["image->sentence"]).mean())
    out["sentence->image"] = float(np.concatenate(sims["sentence->image"]).mean())
    return out


def attribute_accuracy(pred: Mapping[str, Any], true: Mapping[str, Any]) -> dict[str, float]:
    """Per-attribute agreement of predicted and true attribute values, plus their ``"mean"``.

    ``pred`` and ``true`` map attribute names to arrays of equal length (any comparable values,
    e.g. class indices or strings); only names present in both are scored. Used with the CUB
    stand-in, whose captions and pictures are generated from known attributes.
    """
    out: dict[str, float] = {}
    for key in [k for k in true if k in pred]:
        p, t = np.asarray(pred[key]), np.asarray(true[key])
        if p.shape != t.shape:
            raise ValueError(f"attribute {key!r}: predictions {p.shape} and truth {t.shape} differ in shape")
        out[key] = float((p == t).mean()) if p.size else float("nan")
    if not out:
        raise ValueError("no attribute is present in both pred and true")
    out["mean"] = float(np.nanmean(list(out.values())))
    return out


# =============================================================================================
# 6. Latent structure (Figure 5)
# =============================================================================================
def _unimodal(model: Model, batch: Mapping[str, torch.Tensor]):
    """(present names, stacked unimodal posteriors (M, B, L)); for PoE each expert times the prior."""
    if isinstance(model, VAE):
        q = model.encode(batch[model.name])
        return [model.name], type(q)(q.loc.unsqueeze(0), q.scale.unsqueeze(0), validate_args=False)
    present, experts = model.experts(batch)
    return present, model.joint_rule.unimodal(experts, model.prior())


def kl_per_dimension(model: Model, data: Any, *, batch_size: int = 256, max_examples: Optional[int] = 1000,
                     seed: int = 0, wide: bool = False) -> pd.DataFrame:
    """Per-dimension KL(q(z|x_m) || p(z)) for each modality and symmetric KL between experts.

    Averages over the examples of closed-form per-dimension KLs (Figure 5, right). The symmetric
    term is the authors' J(q_i, q_j) = (KL(q_i||q_j) + KL(q_j||q_i)) / 2. Returns a long table
    with columns ``dim``, ``term``, ``kl`` (``L * (M + M(M-1)/2)`` rows), or with ``wide`` one
    column per term indexed by ``dim``.
    """
    names = _names(model)
    dev = _device(model)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    with evaluation_mode(model):
        prior = model.prior()
        for b, _ in iterate_examples(data, batch_size, names=names, max_examples=max_examples, seed=seed, device=dev):
            present, q = _unimodal(model, b)
            kl = kl_divergence(q, prior).sum(1)                                 # (M, L) summed over batch
            for i, m in enumerate(present):
                key = f"KL(q(z|{m}) || p(z))"
                sums[key] = sums.get(key, 0) + kl[i].double().cpu()
            for i, j in combinations(range(len(present)), 2):
                qi = type(q)(q.loc[i], q.scale[i], validate_args=False)
                qj = type(q)(q.loc[j], q.scale[j], validate_args=False)
                sym = 0.5 * (kl_divergence(qi, qj) + kl_divergence(qj, qi))
                key = f"J(q(z|{present[i]}), q(z|{present[j]}))"
                sums[key] = sums.get(key, 0) + sym.sum(0).double().cpu()
            n += _batch_size_of(b)
    table = pd.DataFrame({k: (v / max(n, 1)).numpy() for k, v in sums.items()})
    table.index.name = "dim"
    if wide:
        return table
    return table.reset_index().melt(id_vars="dim", var_name="term", value_name="kl")


def latent_traversals(model: Model, batch: Mapping[str, torch.Tensor], *, steps: int = 11, span: float = 5.0,
                      dims: Optional[Sequence[int]] = None, sources: Optional[Sequence[str]] = None,
                      targets: Optional[Sequence[str]] = None) -> dict[str, dict[str, torch.Tensor]]:
    """Per-dimension latent traversals (Figure 5, left).

    For each source modality s, the posterior mean mu_s of q(z | x_s) is moved along each
    dimension d in ``linspace(-span, span, steps)`` multiples of the prior's standard deviation
    sigma_d (``model.prior().stddev``; sqrt(2) * scale for a Laplace), and decoded in every target
    modality (likelihood means, on CPU). ``out[s][t]`` has shape ``(B, D, steps, *event)`` with D
    the number of traversed dimensions.
    """
    names = _names(model)
    batch = {k: v for k, v in batch.items() if k in names}
    dev = _device(model)
    with evaluation_mode(model):
        present, q = _unimodal(model, {k: v.to(dev) for k, v in batch.items()})
        L = q.loc.shape[-1]
        dims = list(range(L)) if dims is None else list(dims)
        std = model.prior().stddev                                              # (L,)
        deltas = torch.linspace(-span, span, steps, device=dev)
        eye = torch.eye(L, device=dev)[dims]                                    # (D, L)
        shift = deltas[None, :, None] * eye[:, None, :] * std                   # (D, steps, L)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for i, s in enumerate(present):
            if sources is not None and s not in sources:
                continue
            z = q.mean[i][:, None, None, :] + shift                             # (B, D, steps, L)
            out[s] = {t: _decoded_mean(model, t, z).cpu() for t in (targets or names)}
    return out


def latent_embedding(model: Model, batch: Mapping[str, torch.Tensor], *, K: int = 10, method: str = "pca",
                     include_prior: bool = True, seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """2-D embedding of samples from each unimodal posterior (and the prior), for a scatter plot.

    K samples per example from q(z | x_m) for every modality in ``batch`` and ``K * B`` samples
    from p(z), embedded together with PCA (``method="pca"``) or t-SNE (``"tsne"``, extra keyword
    arguments go to scikit-learn). Returns columns ``x``, ``y``, ``source`` (``"q(z|m)"`` or
    ``"p(z)"``) and ``example`` (the batch row, -1 for prior samples).
    """
    names = _names(model)
    dev = _device(model)
    with evaluation_mode(model), _seeded(seed, dev):
        present, q = _unimodal(model, {k: v.to(dev) for k, v in batch.items() if k in names})
        z = q.sample((K,))                                                       # (K, M, B, L)
        B, L = z.shape[-2], z.shape[-1]
        parts, src, ex = [], [], []
        for i, m in enumerate(present):
            parts.append(z[:, i].reshape(-1, L))
            src += [f"q(z|{m})"] * (K * B)
            ex.append(torch.arange(B).repeat(K))
        if include_prior:
            parts.append(model.prior().sample((K * B,)))
            src += ["p(z)"] * (K * B)
            ex.append(torch.full((K * B,), -1))
    zs = torch.cat(parts).float().cpu().numpy()
    if method == "pca":
        from sklearn.decomposition import PCA
        xy = PCA(2, random_state=seed).fit_transform(zs)
    elif method == "tsne":
        from sklearn.manifold import TSNE
        xy = TSNE(2, random_state=seed, init="pca", **kwargs).fit_transform(zs)
    else:
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "source": src, "example": torch.cat(ex).numpy()})


# =============================================================================================
# 7. Gradient signal-to-noise ratios (appendix C; Rainforth et al. 2018, Tucker et al. 2019)
# =============================================================================================
def _param_groups(model: Model) -> dict[str, list[nn.Parameter]]:
    """Encoder parameters (phi) and the rest (theta: decoders, prior), each parameter once."""
    mods = [model.modality] if isinstance(model, VAE) else list(model.modalities.values())
    enc = {id(p): p for m in mods for p in m.encoder.parameters() if p.requires_grad}
    dec = {id(p): p for p in model.parameters() if p.requires_grad and id(p) not in enc}
    return {"encoder": list(enc.values()), "decoder": list(dec.values())}


def _snr_objective(model: Model, estimator: str, mixture: bool) -> Callable:
    from . import objectives as obj
    if estimator not in ("iwae", "stl", "dreg"):
        raise ValueError(f"estimator must be 'iwae', 'stl' or 'dreg', got {estimator!r}")
    if isinstance(model, VAE):
        if estimator == "iwae":
            return obj.iwae
        return lambda m, x, K: obj.dreg(m, x, K, gradient=estimator)
    if not isinstance(model.joint_rule, MixtureOfExperts):
        raise TypeError("gradient_snr needs a VAE or an MoE MultimodalVAE (IWAE/DReG objectives)")
    if estimator == "iwae":
        return obj.m_iwae_mixture if mixture else obj.m_iwae_stratified
    f = obj.m_dreg_mixture if mixture else obj.m_dreg_stratified
    return lambda m, x, K: f(m, x, K, gradient=estimator)


def gradient_snr(model: Model, batch: "Mapping[str, torch.Tensor] | torch.Tensor", *,
                 Ks: Sequence[int] = (1, 4, 16, 64), estimators: Sequence[str] = ("iwae", "stl", "dreg"),
                 n_draws: int = 100, mixture: bool = False, seed: Optional[int] = 0,
                 progress: bool = False) -> pd.DataFrame:
    r"""Signal-to-noise ratio of encoder and decoder gradient estimators as K grows.

    For each estimator (``"iwae"``: the standard IWAE gradient; ``"stl"``: sticking-the-landing;
    ``"dreg"``: doubly reparameterised, eq. 8) and K, draws ``n_draws`` independent gradients of
    the objective on the fixed ``batch`` (objectives.iwae / objectives.dreg for a :class:`VAE`,
    the stratified ``m_*`` variants for an MoE model, the mixture ones with ``mixture``). Per
    parameter :math:`\mathrm{SNR} = |\bar g| / \mathrm{sd}(g)` over the draws (Rainforth et al.
    2018); the table reports the **mean over the parameters** of the group (``snr``) and the
    median (``snr_median``), skipping parameters whose gradient never varies. Groups:
    ``encoder`` (all encoder parameters, including embeddings tied to a decoder) and ``decoder``
    (decoders and the prior). Gradients come from :func:`torch.autograd.grad`, so the model's
    ``.grad`` fields are untouched. Columns: estimator, K, which, snr, snr_median, n_params.
    """
    names = _names(model)
    if isinstance(batch, torch.Tensor):
        batch = {names[0]: batch}
    dev = _device(model)
    batch = {k: v.to(dev) for k, v in batch.items() if k in names}
    x = batch[names[0]] if isinstance(model, VAE) else batch
    groups = _param_groups(model)
    params = groups["encoder"] + groups["decoder"]
    n_enc = len(groups["encoder"])
    rows = []
    jobs = [(e, K) for e in estimators for K in Ks]
    with evaluation_mode(model, grad=True), _seeded(seed, dev):
        for est, K in _bar(jobs, progress, len(jobs), "gradient SNR"):
            f = _snr_objective(model, est, mixture)
            s1 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
            s2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
            for _ in range(n_draws):
                value = f(model, x, K)
                grads = torch.autograd.grad(value, params, allow_unused=True)
                for i, g in enumerate(grads):
                    if g is not None:
                        g = g.double()
                        s1[i] += g
                        s2[i] += g * g
            for which, sl in (("encoder", slice(0, n_enc)), ("decoder", slice(n_enc, None))):
                a1 = torch.cat([t.flatten() for t in s1[sl]]) if s1[sl] else torch.zeros(0, dtype=torch.float64)
                a2 = torch.cat([t.flatten() for t in s2[sl]]) if s2[sl] else torch.zeros(0, dtype=torch.float64)
                mean = a1 / n_draws
                var = ((a2 - n_draws * mean ** 2) / max(n_draws - 1, 1)).clamp_min(0)
                sd = var.sqrt()
                # skip parameters whose gradient does not vary (up to rounding): their SNR is undefined
                ok = (sd > 0) & (sd > 1e-9 * mean.abs())
                snr = (mean.abs()[ok] / sd[ok]).cpu()
                rows.append(dict(estimator=est, K=int(K), which=which,
                                 snr=float(snr.mean()) if len(snr) else float("nan"),
                                 snr_median=float(snr.median()) if len(snr) else float("nan"),
                                 n_params=int(ok.sum())))
    return pd.DataFrame(rows)


# =============================================================================================
# 8. One-call evaluations
# =============================================================================================
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
    for name in ("mnist", "svhn"):
        if name in model.names and name not in clfs:
            clfs[name] = get_digit_classifier(name, root, source=_data_source(test_data, name), cache=classifier_cache,
                                              progress=progress, verbose=verbose)
    dev = _device(model)
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
    timings: dict[str, float] = {}
    n_train = n_train if n_train is not None else (5000 if quick else None)
    n_test = n_test if n_test is not None else (1000 if quick else None)
    t0 = time.perf_counter()
    if embedder is None:
        vocab = vocab if vocab is not None else getattr(train_data, "vocab", None)
        if vocab is None:
            raise ValueError("evaluate_cub needs a vocabulary (train_data.vocab or vocab=) to fit the embedder")
        x, _ = _materialise(train_data, ["sentence"])
        texts = None
        caps = getattr(train_data, "captions", None)
        if caps is not None and len(caps) == len(x["sentence"]):
            from .data import tokenize
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
