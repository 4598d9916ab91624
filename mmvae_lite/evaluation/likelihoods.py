r"""Log-likelihoods (paper Table 3): IWAE estimates per example, with the authors' proposals.

:math:`\log \frac{1}{S}\sum_s p(z_s)\,p(x_d|z_s)/q(z_s)` for every term the authors'
``calculate_likelihoods.py`` reports: the joint log p(x_a, x_b), and each log p(x_d) under the
joint posterior and under each unimodal posterior as proposal (see :func:`log_likelihoods`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import pandas as pd
import torch

from ..models import MixtureOfExperts, MixtureOfExpertsPosterior, VAE
from .checks import Model, check_int, model_names
from .examples import batch_size_of, iterate_examples, total_examples
from .runtime import Progress, device_of, evaluation_mode, seeded

__all__ = ["log_likelihoods", "likelihood_summary"]


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
    names = model_names(model, "log_likelihoods")
    K = check_int(K, "K")
    samples_per_chunk = check_int(samples_per_chunk, "samples_per_chunk", none=True)
    max_evals = check_int(max_evals, "max_evals")
    batch_size = check_int(batch_size, "batch_size")
    max_examples = check_int(max_examples, "max_examples", none=True)
    dev = device_of(model)
    rows_out: dict[str, list[torch.Tensor]] = {}
    with Progress(progress, total_examples(data, max_examples), f"log-likelihoods (K={K})") as bar, \
            evaluation_mode(model), seeded(seed, dev):
        for batch, _ in iterate_examples(data, batch_size, names=names, max_examples=max_examples, seed=seed or 0,
                                         device=dev):
            B = batch_size_of(batch)
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
    return pd.DataFrame({k: torch.cat(v).numpy() for k, v in rows_out.items()})


def likelihood_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of each column of :func:`log_likelihoods` (rows: terms)."""
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise ValueError("likelihood_summary needs the non-empty DataFrame that log_likelihoods returns, got "
                         + ("an empty one" if isinstance(df, pd.DataFrame) else type(df).__name__))
    return pd.DataFrame({"mean": df.mean(), "sem": df.sem(), "n": len(df)})
