"""Digit classifiers for coherence: a small CNN, its training, and a cache beside the data.

Coherence (paper Table 2) asks a digit classifier which digit a generated image shows. The
classifier for each image modality ('mnist', 'svhn') is trained once on the real (or stand-in)
training images and cached as a ``weights_only`` file under the data directory's derived-files
cache (:func:`classifier_path`); :func:`get_digit_classifier` loads it, or trains and saves it.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checks import PathLike, check_int, check_positive
from .examples import iterate_examples, materialise
from .runtime import device_of, evaluation_mode, progress_bar, seeded

__all__ = ["DigitClassifier", "classifier_path", "predict_digits", "classifier_accuracy", "train_digit_classifier",
           "load_digit_classifier", "get_digit_classifier", "CLASSIFIER_FORMAT"]

CLASSIFIER_FORMAT = "mmvae_lite/digit-classifier/1"
_IMAGE_SHAPES = {"mnist": (1, 28, 28), "svhn": (3, 32, 32)}


class DigitClassifier(nn.Module):
    """A small CNN digit classifier for 1x28x28 (MNIST) or 3x32x32 (SVHN) images in [0, 1].

    conv 3x3 (16) - BN - ReLU - maxpool - conv 3x3 (32) - BN - ReLU - maxpool - FC 128 - ReLU -
    dropout - FC 10 (logits). About 1.2 M multiply-adds per MNIST image: one epoch over MNIST
    reaches about 99% test accuracy.
    Inputs may have any leading dims: ``(*lead, C, H, W) -> (*lead, 10)``; 8-bit (uint8) images are
    read as 0..255, other float types are cast to the network's.

    Performance: the convolutions run in ``channels_last`` memory format (weights and input),
    which halves the CPU time of a forward pass (pooling and convolution over NHWC); the values
    are those of the default layout up to float rounding.
    """

    def __init__(self, in_channels: int = 1, size: int = 28, num_classes: int = 10) -> None:
        super().__init__()
        if size % 4:
            raise ValueError(f"image size must be divisible by 4, got {size}")
        self.in_channels, self.size, self.num_classes = in_channels, size, num_classes
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        ).to(memory_format=torch.channels_last)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 128), nn.ReLU(inplace=True),
                                  nn.Dropout(0.3), nn.Linear(128, num_classes))
        self.test_accuracy: Optional[float] = None
        self.source: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.size, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():              # 8-bit images: 0..255
            x = x.float() / 255.0
        x = x.to(self.head[-1].weight.dtype)       # e.g. float64 images for a float32 network
        if x.dim() < 3 or tuple(x.shape[-3:]) != self.image_shape:
            raise ValueError(f"this DigitClassifier reads {'x'.join(map(str, self.image_shape))} images "
                             f"(..., C, H, W), got shape {tuple(x.shape)}")
        lead = x.shape[:-3]
        h = ((x.reshape(-1, *x.shape[-3:]) - 0.5) * 2.0).contiguous(memory_format=torch.channels_last)
        return self.head(self.features(h)).reshape(*lead, self.num_classes)


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
    from ..data import cache_dir
    derived = cache_dir(root)
    base = (derived if derived is not None else Path.home() / ".cache" / "mmvae_lite") / "classifiers"
    return base / f"{name}_{source}.pt"


def _shown(path: Path, root: Optional[PathLike], cache: Optional[PathLike]) -> str:
    """``path`` as normal output shows it: from the data directory's name, ``~`` or the cache folder's
    name; never the machine's absolute path."""
    from ..data import data_root
    if cache is not None:
        return str(Path(Path(cache).expanduser().name) / path.name)
    anchors = []
    try:
        data = data_root(root)
        anchors.append((data, data.name))
    except Exception:  # an unusable data directory: show the path from home, or its last parts
        pass
    anchors.append((Path.home(), "~"))
    for anchor, label in anchors:
        try:
            return str(Path(label) / path.resolve().relative_to(anchor.resolve()))
        except (ValueError, OSError):
            continue
    return str(Path(*path.parts[-3:]))


def data_source(data: Any, name: str) -> Optional[str]:
    """'real' or 'standin' as ``data.source`` records it for modality ``name``; None when it does not say."""
    src = getattr(data, "source", None)
    if isinstance(src, Mapping) and name in src:
        return str(getattr(src[name], "kind", src[name]))
    if isinstance(src, str):
        return src
    return None


def predictions(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1024, event_dims: int = 3
                ) -> torch.Tensor:
    """Predicted classes ``(*lead,)`` on the classifier's device, without a host sync (coherence counts there)."""
    if images.dim() < event_dims:
        raise ValueError(f"images must have at least event_dims={event_dims} dimensions, got shape "
                         f"{tuple(images.shape)}")
    lead = images.shape[:images.dim() - event_dims]
    flat = images.reshape(-1, *images.shape[images.dim() - event_dims:])
    dev = device_of(classifier)
    with evaluation_mode(classifier):
        preds = [classifier(flat[i:i + batch_size].to(dev)).argmax(-1) for i in range(0, len(flat), batch_size)]
    out = torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=dev)
    return out.reshape(lead)


def predict_digits(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1024,
                   event_dims: int = 3) -> torch.Tensor:
    """Predicted classes for inputs ``(*lead, *event)`` -> LongTensor ``(*lead,)`` on the CPU (classifier in eval mode).

    ``event_dims`` trailing dimensions form one input (3 for images ``C, H, W``).
    """
    batch_size = check_int(batch_size, "batch_size")
    event_dims = check_int(event_dims, "event_dims")
    return predictions(classifier, images, batch_size, event_dims).cpu()


def classifier_accuracy(classifier: nn.Module, data: Any, name: Optional[str] = None, *,
                        labels: Optional[torch.Tensor] = None, batch_size: int = 1024,
                        max_examples: Optional[int] = None) -> float:
    """Accuracy of a digit classifier on ``data`` (a dataset with labels, or tensors + ``labels``)."""
    name = name or (getattr(data, "key", None) or "x")
    correct = total = 0
    for b, y in iterate_examples(data, batch_size, names=[name], labels=labels, max_examples=max_examples):
        if y is None:
            raise ValueError("classifier_accuracy needs labels (data.labels, a 'label' key or labels=)")
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
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    x, y = materialise(dataset, [name], labels=labels, max_examples=max_train, seed=seed, arg="dataset")
    if name not in x or y is None:
        raise ValueError(f"training data for {name!r} must contain {name!r} images and labels")
    x = x[name]
    if x.dim() != 4:
        raise ValueError(f"{name!r} training images must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.is_floating_point():  # store compactly; every image source here is 8-bit
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    c, h, w = x.shape[1:]
    if h != w:
        raise ValueError(f"square images expected, got {tuple(x.shape[1:])}")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    g = torch.Generator().manual_seed(seed)
    with seeded(seed, dev):
        clf = DigitClassifier(c, h).to(dev)
        opt = torch.optim.Adam(clf.parameters(), lr=lr)
        steps = epochs * math.ceil(len(x) / batch_size)
        sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3 * lr, total_steps=steps, pct_start=0.2)
                 if steps >= 20 else None)
        clf.train()
        bar = progress_bar(range(steps), progress, steps, f"training {name} classifier", "step")
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
    clf.source = data_source(dataset, name) or ""
    if test is not None:
        clf.test_accuracy = classifier_accuracy(clf, test, name, labels=test_labels)
    return clf


def _save_classifier(clf: DigitClassifier, path: Path, name: str, source: str, epochs: int,
                     max_train: Optional[int] = None) -> None:
    from ..training import atomic_save
    atomic_save({"format": CLASSIFIER_FORMAT, "name": name, "source": source, "in_channels": clf.in_channels,
                 "size": clf.size, "epochs": epochs, "max_train": -1 if max_train is None else int(max_train),
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
    mt = int(state.get("max_train", -1))
    clf.trained_with = (int(state["epochs"]) if "epochs" in state else None, None if mt < 0 else mt)
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
    Messages name the cache file from the data directory (or ``~``), never by its absolute path.
    """
    if name not in _IMAGE_SHAPES:
        raise ValueError(f"name must be one of {sorted(_IMAGE_SHAPES)} (digit classifiers exist for these), "
                         f"got {name!r}")
    epochs = check_int(epochs, "epochs", none=True)
    max_train = check_int(max_train, "max_train", none=True)
    if source is None:
        source = data_source(train, name) or data_source(test, name)
    if source is None:
        from ..data import resolve_source
        source = resolve_source(name, root, "auto").kind
    path = classifier_path(name, source, root, cache)
    shown = _shown(path, root, cache)
    epochs = epochs or (1 if name == "mnist" else 2)
    if path.is_file() and not retrain:
        try:
            clf = load_digit_classifier(path, device)
            stored = getattr(clf, "trained_with", (None, None))
            if stored[0] is not None and stored != (epochs, max_train):   # cached with other settings
                raise ValueError(f"it was trained with epochs={stored[0]}, max_train={stored[1]}, "
                                 f"not epochs={epochs}, max_train={max_train}")
            if verbose:
                acc = f"{100 * clf.test_accuracy:.2f}%" if clf.test_accuracy is not None else "unknown"
                print(f"[mmvae_lite] {name} classifier ({source}) from {shown}: test accuracy {acc}", flush=True)
            return clf
        except Exception as e:  # unreadable or stale: retrain
            warnings.warn(f"could not load {shown} ({str(e).replace(str(path), shown)}); retraining", stacklevel=2)
    if train is None or test is None:
        from .. import data as _data

        def loader(split: str):
            if name == "mnist":
                return _data.load_mnist(split, root=root, verbose=verbose)
            return _data.load_svhn(split, root=root, standin="always" if source == "standin" else "never",
                                   verbose=verbose)
        train = train if train is not None else loader("train")
        test = test if test is not None else loader("test")
    t0 = time.perf_counter()
    clf = train_digit_classifier(name, train, epochs, test=test, max_train=max_train, device=device,
                                 progress=progress)
    clf.requires_grad_(False)
    clf.source = source
    try:
        _save_classifier(clf, path, name, source, epochs, max_train)
        where = f"saved to {shown}"
    except OSError as e:
        where = f"not saved ({e.strerror or type(e).__name__})"  # no path: strerror alone
    if verbose:
        print(f"[mmvae_lite] trained {name} classifier ({source}) in {time.perf_counter() - t0:.0f} s: "
              f"test accuracy {100 * (clf.test_accuracy or 0):.2f}%; {where}", flush=True)
    return clf
