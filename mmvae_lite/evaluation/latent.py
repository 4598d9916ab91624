"""The latent space: each modality's posterior, linear probes, per-dimension KLs, traversals, embeddings.

* :func:`latent_accuracy` (Table 1): logistic regression on posterior means (the authors train a
  linear layer on one posterior sample; ``use="sample"``).
* :func:`kl_per_dimension` (Figure 5, right): per-dimension KL(q(z|x_m) || p(z)) and the symmetric
  KL between the experts.
* :func:`latent_traversals` (Figure 5, left): mu_m +- 5 prior standard deviations, per dimension.
* :func:`latent_embedding`: 2-D PCA / t-SNE of posterior and prior samples (the authors: UMAP).

Every function takes a :class:`~mmvae_lite.models.MultimodalVAE` or a single-modality
:class:`~mmvae_lite.models.VAE` (whose one posterior is q(z | x)).
"""
from __future__ import annotations

import operator
import warnings
from itertools import combinations
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.distributions import kl_divergence

from ..models import MultimodalVAE, ProductOfExperts, VAE
from .checks import Model, check_choice, check_int, check_positive, modality_of, model_names
from .examples import batch_size_of, iterate_examples, one_batch
from .runtime import device_of, evaluation_mode, one_thread, seeded

__all__ = ["decoded_mean", "unimodal_posteriors", "posterior_features", "latent_accuracy", "kl_per_dimension",
           "latent_traversals", "latent_embedding"]


def decoded_mean(model: Model, name: str, z: torch.Tensor) -> torch.Tensor:
    """The likelihood mean of modality ``name`` decoded from latents ``(*lead, L)``."""
    mod = modality_of(model, name)
    return mod.likelihood.mean(mod.decode(z))


def unimodal_posteriors(model: Model, batch: Mapping[str, torch.Tensor]):
    """(present names, stacked unimodal posteriors (M, B, L)); for PoE each expert times the prior."""
    if isinstance(model, VAE):
        q = model.encode(batch[model.name])
        return [model.name], type(q)(q.loc.unsqueeze(0), q.scale.unsqueeze(0), validate_args=False)
    present, experts = model.experts(batch)
    return present, model.joint_rule.unimodal(experts, model.prior())


def posterior_features(model: Model, data: Any, *, labels: Optional[torch.Tensor] = None, joint: bool = False,
                       use: str = "mean", batch_size: int = 512, max_examples: Optional[int] = None,
                       seed: int = 0) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
    """Latent features per input set: ``{name: (N, L)}`` (+ ``"a,b"`` for the joint posterior) and labels.

    ``name`` uses q(z | x_name) alone (``model.posterior({name: x})``: for PoE the expert times the
    prior). ``use="mean"`` takes posterior means; ``"sample"`` one sample (the authors' choice).
    """
    check_choice(use, "use", ("mean", "sample"))
    names = model_names(model, "posterior_features")
    dev = device_of(model)
    feats: dict[str, list[np.ndarray]] = {}
    ys: list[np.ndarray] = []
    with evaluation_mode(model), seeded(seed, dev):
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

    model_names(model, "latent_accuracy")
    n_train = check_int(n_train, "n_train", none=True)
    n_test = check_int(n_test, "n_test", none=True)
    C = check_positive(C, "C")
    max_iter = check_int(max_iter, "max_iter")
    seed = check_int(seed, "seed", None)
    if joint is None:
        joint = isinstance(model, MultimodalVAE) and isinstance(model.joint_rule, ProductOfExperts)
    ftr, ytr = posterior_features(model, train, labels=train_labels, joint=joint, use=use, batch_size=batch_size,
                                  max_examples=n_train, seed=seed)
    fte, yte = posterior_features(model, test, labels=test_labels, joint=joint, use=use, batch_size=batch_size,
                                  max_examples=n_test, seed=seed + 1)
    if ytr is None or yte is None:
        raise ValueError("latent_accuracy needs labels for train and test data (dataset.labels or "
                         "train_labels= / test_labels=)")
    if len(np.unique(ytr)) < 2:
        raise ValueError(f"latent_accuracy: the training labels hold a single class ({int(ytr[0])}); "
                         "a probe needs at least 2")
    out = {}
    for key in ftr:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
        # one BLAS thread: these problems are small, and threads only contend on a busy machine
        with warnings.catch_warnings(), one_thread():
            warnings.simplefilter("ignore")  # convergence chatter on tiny problems
            clf.fit(ftr[key], ytr)
        out[key] = float((clf.predict(fte[key]) == yte).mean())
    return out


def kl_per_dimension(model: Model, data: Any, *, batch_size: int = 256, max_examples: Optional[int] = 1000,
                     seed: int = 0, wide: bool = False) -> pd.DataFrame:
    """Per-dimension KL(q(z|x_m) || p(z)) for each modality and symmetric KL between experts.

    Averages over the examples of closed-form per-dimension KLs (Figure 5, right;
    :func:`torch.distributions.kl_divergence`, closed form for Laplace and Normal pairs). The
    symmetric term is the authors' J(q_i, q_j) = (KL(q_i||q_j) + KL(q_j||q_i)) / 2. Returns a long
    table with columns ``dim``, ``term``, ``kl`` (``L * (M + M(M-1)/2)`` rows), or with ``wide``
    one column per term indexed by ``dim``.
    """
    names = model_names(model, "kl_per_dimension")
    dev = device_of(model)
    sums: dict[str, torch.Tensor] = {}
    n = 0
    with evaluation_mode(model):
        prior = model.prior()
        for b, _ in iterate_examples(data, batch_size, names=names, max_examples=max_examples, seed=seed, device=dev):
            present, q = unimodal_posteriors(model, b)
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
            n += batch_size_of(b)
    table = pd.DataFrame({k: (v / n).numpy() for k, v in sums.items()})
    table.index.name = "dim"
    if wide:
        return table
    return table.reset_index().melt(id_vars="dim", var_name="term", value_name="kl")


def _names_in(value: Optional[Sequence[str]], arg: str, names: Sequence[str]) -> Optional[list[str]]:
    if value is None:
        return None
    value = [value] if isinstance(value, str) else list(value)
    unknown = [v for v in value if v not in names]
    if unknown or not value:
        raise ValueError(f"{arg} must name some of the model's modalities {list(names)}, got {value}")
    return value


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
    names = model_names(model, "latent_traversals")
    batch = one_batch(model, batch, "latent_traversals")
    steps = check_int(steps, "steps")
    span = check_positive(span, "span")
    sources = _names_in(sources, "sources", names)
    targets = _names_in(targets, "targets", names)
    L = model.latent_dim
    if dims is not None:
        try:
            dims = [operator.index(d) for d in dims]           # ints, numpy ints, integer 0-d tensors
        except TypeError:
            raise ValueError(f"dims must be a sequence of latent dimensions in [0, {L - 1}], got {dims!r}") from None
        if not dims or not all(0 <= d < L for d in dims):
            raise ValueError(f"dims must be latent dimensions in [0, {L - 1}], got {dims}")
    dev = device_of(model)
    with evaluation_mode(model):
        present, q = unimodal_posteriors(model, {k: v.to(dev) for k, v in batch.items()})
        dims = list(range(L)) if dims is None else dims
        std = model.prior().stddev                                              # (L,)
        deltas = torch.linspace(-span, span, steps, device=dev)
        eye = torch.eye(L, device=dev)[dims]                                    # (D, L)
        shift = deltas[None, :, None] * eye[:, None, :] * std                   # (D, steps, L)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for i, s in enumerate(present):
            if sources is not None and s not in sources:
                continue
            z = q.mean[i][:, None, None, :] + shift                             # (B, D, steps, L)
            out[s] = {t: decoded_mean(model, t, z).cpu() for t in (targets or names)}
    return out


def latent_embedding(model: Model, batch: Mapping[str, torch.Tensor], *, K: int = 10, method: str = "pca",
                     include_prior: bool = True, seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """2-D embedding of samples from each unimodal posterior (and the prior), for a scatter plot.

    K samples per example from q(z | x_m) for every modality in ``batch`` and ``K * B`` samples
    from p(z), embedded together with PCA (``method="pca"``) or t-SNE (``"tsne"``, extra keyword
    arguments go to scikit-learn). Returns columns ``x``, ``y``, ``source`` (``"q(z|m)"`` or
    ``"p(z)"``) and ``example`` (the batch row, -1 for prior samples).
    """
    batch = one_batch(model, batch, "latent_embedding")
    K = check_int(K, "K")
    check_choice(method, "method", ("pca", "tsne"))
    dev = device_of(model)
    with evaluation_mode(model), seeded(seed, dev):
        present, q = unimodal_posteriors(model, {k: v.to(dev) for k, v in batch.items()})
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
    if len(zs) < 2 or zs.shape[1] < 2:
        raise ValueError(f"latent_embedding embeds in 2-D: it needs at least 2 points and 2 latent dimensions, got "
                         f"{len(zs)} points of {zs.shape[1]} dimensions (raise K or the batch)")
    if method == "pca":
        from sklearn.decomposition import PCA
        xy = PCA(2, random_state=seed).fit_transform(zs)
    else:
        from sklearn.manifold import TSNE
        xy = TSNE(2, random_state=seed, init="pca", **kwargs).fit_transform(zs)
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "source": src, "example": torch.cat(ex).numpy()})
