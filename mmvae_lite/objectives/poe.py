"""Product of experts (MVAE): the sub-sampled sum of ELBOs of Wu & Goodman (2018)."""
from __future__ import annotations

import torch

from ..distributions import kl_divergence
from ..models import Batch, MultimodalVAE, ProductOfExperts
from ._common import check_batch, check_K
from .moe import require


def mvae_elbo(model: MultimodalVAE, batch: Batch, K: int = 1, kl_weight: float = 1.0) -> torch.Tensor:
    r"""The MVAE objective (Wu & Goodman 2018) with sub-sampling: the joint ELBO plus each modality's own ELBO.

    .. math:: \mathrm{ELBO}(x_{1:M}) + \sum_m \mathrm{ELBO}(x_m),\qquad
              q(z|x_S) \propto p(z) \prod_{m\in S} q_m(z|x_m)

    Each ELBO is :math:`\mathbb{E}_{q(z|x_S)}[\sum_{d\in S}\lambda_d \log p(x_d|z)] - \beta\,\mathrm{KL}(q(z|x_S)\|p(z))`
    with closed-form KL. All M+1 products come from one batched computation; each decoder is called
    once, on the samples of the subsets that contain its modality. Note: a *sum* of M+1 ELBOs, not a
    bound on log p(x_1:M). The experts and the prior expert follow the model's scale rule (see
    :mod:`mmvae_lite.config`): with the paper's sum-to-D scales and a learnt prior this is not
    Wu & Goodman's exact MVAE.
    """
    require(model, ProductOfExperts, "mvae_elbo")
    check_K(K)
    check_batch(model, batch)
    present = model.check_batch(batch, require_all=True)
    _, experts = model.experts(batch)
    M = len(present)
    prior = model.prior()
    mask = torch.cat([torch.ones(1, M, device=experts.loc.device), torch.eye(M, device=experts.loc.device)])
    q = model.joint_rule.subsets(experts, prior, mask)                 # (S, B, L)
    z = q.rsample((K,)).transpose(0, 1)                                # (S, K, B, L)
    rec = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
    for j, n in enumerate(present):
        rows = mask[:, j].nonzero().squeeze(1)
        lp = model.llik_scaling[n] * model.modalities[n].log_likelihood(model.modalities[n].decode(z[rows]), batch[n])
        rec = rec.index_add(0, rows, lp)
    kl = kl_divergence(q, prior).sum(-1)                               # (S, B)
    return (rec.mean(1) - kl_weight * kl).sum(0).mean()
