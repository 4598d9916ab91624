"""Coherence (paper Table 2 / Table 5): do generations show the digit they should?

*Cross*: encode x_s, sample z ~ q(z | x_s) (for PoE the expert times the prior), decode the
likelihood mean of x_t, classify it, compare with the label of the pair. *Joint*: z ~ p(z),
decode every modality, count the samples whose predicted digits all agree. Fractions in [0, 1].

Performance: every batch is one stacked encode (all sources), one decoder call and one classifier
call per target on the (sources x batch) stack, and the hits are counted where the classifier
runs, so an accelerator is never synchronised with the host inside the loop. ``progress=True``
shows a bar for each part.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from ..models import MultimodalVAE
from .checks import check_int, require_multimodal
from .classifiers import DigitClassifier, predictions
from .examples import iterate_examples, total_examples
from .latent import decoded_mean
from .runtime import Progress, device_of, evaluation_mode, seeded

__all__ = ["cross_coherence", "joint_coherence", "coherence", "plate_polarity"]

_WHY = "coherence compares generations across modalities"


def _targets(model: MultimodalVAE, classifiers: Any, fn: str) -> list[str]:
    if not isinstance(classifiers, Mapping):
        raise TypeError(f"{fn}: classifiers must be a dict modality name -> classifier, got "
                        f"{type(classifiers).__name__}")
    targets = [t for t in model.names if t in classifiers]
    if not targets:
        raise ValueError(f"{fn}: classifiers must name at least one of the model's modalities {model.names}, "
                         f"got {sorted(classifiers)}")
    for t in targets:
        shape = tuple(model.modalities[t].event_shape)
        if isinstance(classifiers[t], DigitClassifier) and classifiers[t].image_shape != shape:
            raise ValueError(f"{fn}: classifiers[{t!r}] reads {'x'.join(map(str, classifiers[t].image_shape))} "
                             f"images but modality {t!r} has events of shape {'x'.join(map(str, shape))}")
    return targets


def _chunk(batch_size: int) -> int:
    """Images per classifier call: a whole (sources x batch) stack at usual sizes."""
    return max(batch_size, 1024)


def cross_coherence(model: MultimodalVAE, data: Any, classifiers: Mapping[str, nn.Module], *,
                    labels: Optional[torch.Tensor] = None, batch_size: int = 256, mean_latent: bool = False,
                    max_examples: Optional[int] = None, seed: Optional[int] = 0, progress: bool = False
                    ) -> dict[str, float]:
    """Fraction of cross (and self) generations whose predicted digit equals the input's label.

    For each source modality s present in the data: z ~ q(z | x_s) (``model.unimodal_samples``: for
    PoE the expert times the prior expert; ``mean_latent`` uses the posterior mean instead of one
    sample, the authors sample), decode the likelihood mean of every target t that has a
    classifier, classify. Returns ``{"s->t": fraction}`` for all pairs, including s == t
    (reconstruction). ``progress`` shows a bar counted in test pairs.
    """
    model = require_multimodal(model, "cross_coherence", _WHY)
    targets = _targets(model, classifiers, "cross_coherence")
    batch_size = check_int(batch_size, "batch_size")
    max_examples = check_int(max_examples, "max_examples", none=True)
    dev = device_of(model)
    hits: dict[str, torch.Tensor] = {}
    seen: dict[str, int] = {}   # examples per source (a batch may lack a modality)
    with Progress(progress, total_examples(data, max_examples), "cross coherence") as bar, \
            evaluation_mode(model, *classifiers.values()), seeded(seed, dev):
        for batch, y in iterate_examples(data, batch_size, names=model.names, labels=labels,
                                         max_examples=max_examples, seed=seed or 0, device=dev):
            if y is None:
                raise ValueError("cross coherence needs labels (dataset.labels, a 'label' key or labels=)")
            present, z = model.unimodal_samples(batch, 1, mean=mean_latent)      # (M, 1, B, L)
            for t in targets:
                pred = predictions(classifiers[t], decoded_mean(model, t, z[:, 0]), _chunk(batch_size),
                                   len(model.modalities[t].event_shape))             # (M, B)
                per_source = (pred == y.to(pred.device)).sum(-1)                     # (M,), on the device
                for i, s in enumerate(present):
                    key = f"{s}->{t}"
                    hits[key] = hits[key] + per_source[i] if key in hits else per_source[i]
            for s in present:
                seen[s] = seen.get(s, 0) + len(y)
            bar.update(len(y))
    return {k: int(v) / seen[k.split("->")[0]] for k, v in hits.items()}


def joint_coherence(model: MultimodalVAE, classifiers: Mapping[str, nn.Module], n: int = 10000, *,
                    batch_size: int = 1000, seed: Optional[int] = 0, progress: bool = False,
                    latents: Optional[torch.Tensor] = None) -> float:
    """Fraction of prior samples z ~ p(z) for which the digits predicted from every decoded modality agree.

    ``n`` prior samples in batches of ``batch_size``; ``progress`` shows a bar counted in samples.
    ``latents`` (N, L) decodes these instead of prior samples (``n`` is then ignored): e.g. samples of
    the experts' posteriors on test data (the aggregate posterior), which separates how much joint
    coherence is lost to prior samples that fall where no posterior puts mass from how much is lost
    to decoders that disagree even on latents they were trained on.
    """
    model = require_multimodal(model, "joint_coherence", _WHY)
    names = _targets(model, classifiers, "joint_coherence")
    if len(names) < 2:
        raise ValueError(f"joint_coherence needs classifiers for at least 2 of the model's modalities "
                         f"{model.names}, got {sorted(classifiers)}")
    batch_size = check_int(batch_size, "batch_size")
    dev = device_of(model)
    if latents is not None:
        L = model.prior().mean.shape[-1]
        if not isinstance(latents, torch.Tensor) or latents.ndim != 2 or latents.shape[-1] != L or not len(latents):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape (N, {L}) with N >= 1, got {got}")
        n = len(latents)
    n = check_int(n, "n")
    agree = torch.zeros((), dtype=torch.long, device=dev)
    with Progress(progress, n, "joint coherence", unit="z") as bar, \
            evaluation_mode(model, *classifiers.values()), seeded(seed, dev):
        prior = model.prior()
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = prior.sample((m,)) if latents is None else latents[start:start + m].to(dev)
            preds = torch.stack([predictions(classifiers[t], decoded_mean(model, t, z), _chunk(batch_size),
                                             len(model.modalities[t].event_shape)).to(dev) for t in names])
            agree += (preds == preds[:1]).all(0).sum()
            bar.update(m)
    return int(agree) / n


def coherence(model: MultimodalVAE, data: Any, classifiers: Mapping[str, nn.Module], *,
              labels: Optional[torch.Tensor] = None, n_joint: int = 10000, batch_size: int = 256,
              mean_latent: bool = False, max_examples: Optional[int] = None, seed: Optional[int] = 0,
              progress: bool = False) -> dict[str, float]:
    """Joint and cross coherence (paper Table 2): ``{"joint": f, "s->t": f, ...}``, fractions in [0, 1].

    ``data`` is the *test* split with digit labels; ``classifiers`` maps modality names to
    digit classifiers (``(*, C, H, W) -> logits``), e.g. from :func:`get_digit_classifier`.
    ``n_joint`` prior samples for joint coherence (0 skips it, as do classifiers for fewer than two
    of the model's modalities). See :func:`cross_coherence` and
    :func:`joint_coherence`.
    """
    model = require_multimodal(model, "coherence", _WHY)
    _targets(model, classifiers, "coherence")
    n_joint = check_int(n_joint, "n_joint", minimum=0)
    out: dict[str, float] = {}
    if sum(t in classifiers for t in model.names) >= 2 and n_joint > 0:
        out["joint"] = joint_coherence(model, classifiers, n_joint, batch_size=max(batch_size, 1000), seed=seed,
                                       progress=progress)
    cross = cross_coherence(model, data, classifiers, labels=labels, batch_size=batch_size, mean_latent=mean_latent,
                            max_examples=max_examples, seed=seed, progress=progress)
    # cross-modal pairs first (the paper's columns, in model order), then reconstructions
    order = {n: i for i, n in enumerate(model.names)}
    keys = sorted(cross, key=lambda k: (k.split("->")[0] == k.split("->")[1],
                                        order[k.split("->")[0]], order[k.split("->")[1]]))
    out.update({k: cross[k] for k in keys})
    return out


def plate_polarity(images: torch.Tensor) -> torch.Tensor:
    """Centre minus border brightness of SVHN-style images ``(B, 3, H, W)`` (float in [0, 1] or uint8).

    Positive for a light digit on a darker plate, negative for a dark digit on a lighter one, near
    zero for a flat image: the choice an MNIST->SVHN generation has to make, because an MNIST digit
    says nothing about its partner's plate (chapter 7, "One coordinate chooses the plate"). The
    centre is the middle quarter of each side (rows and columns 12-19 of 32, on the digit), the
    border the three leftmost and three rightmost columns (plate, or the edge of a neighbouring
    digit). Returns ``(B,)`` in [-1, 1].
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"plate_polarity expects images of shape (B, 3, H, W), got {got}")
    h, w = images.shape[-2:]
    if h < 8 or w < 8:
        raise ValueError(f"plate_polarity expects images of at least 8 x 8 pixels, got {h} x {w}")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    grey = x.mean(1)
    border = torch.cat([grey[:, :, :3].flatten(1), grey[:, :, -3:].flatten(1)], 1)
    centre = grey[:, 3 * h // 8: 5 * h // 8, 3 * w // 8: 5 * w // 8]
    return centre.mean((1, 2)) - border.mean(1)
