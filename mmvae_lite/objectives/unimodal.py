"""One modality: the ELBO (eq. 1), the IWAE bound (eq. 2) and its DReG gradient (eq. 8)."""
from __future__ import annotations

import torch

from ..distributions import kl_divergence
from ..models import Batch, VAE
from ._common import Gradient, check_K, check_x, log_mean_exp, reweighted


def elbo(model: VAE, x: "torch.Tensor | Batch", K: int = 1, analytic_kl: bool = True,
         beta: float = 1.0) -> torch.Tensor:
    r"""ELBO, eq. (1): :math:`\mathbb{E}_{q(z|x)}[\log p(x|z)] - \beta\,\mathrm{KL}(q(z|x)\,\|\,p(z))`, with β = 1.

    The expectation uses K samples; the KL is closed-form (``analytic_kl=False`` uses the K-sample
    Monte Carlo estimate :math:`\frac1K\sum_k \log w_k` instead). ``beta`` weights the KL (the
    β-VAE of Higgins et al., 2017; not a bound unless β = 1): a diagnosis of what the latent code
    would carry if information in it cost less, not the paper's objective.
    """
    check_K(K)
    check_x(x)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if not analytic_kl:
        if beta != 1.0:
            raise ValueError("beta != 1 needs the closed-form KL (analytic_kl=True)")
        lw, _ = model.log_weights(x, K)
        return lw.mean(0).mean()
    q = model.encode(x)
    z = q.rsample((K,))
    xx = model._x(x)
    lpx = model.modality.log_likelihood(model.decode(z), xx).mean(0)
    return (lpx - beta * kl_divergence(q, model.prior()).sum(-1)).mean()


def iwae(model: VAE, x: "torch.Tensor | Batch", K: int) -> torch.Tensor:
    r"""IWAE bound, eq. (2): :math:`\mathbb{E}_{z_{1:K}\sim q}[\log \frac1K \sum_k w_k]`, standard gradient."""
    check_K(K)
    check_x(x)
    lw, _ = model.log_weights(x, K)
    return log_mean_exp(lw, 0).mean()


def dreg(model: VAE, x: "torch.Tensor | Batch", K: int, gradient: Gradient = "dreg") -> torch.Tensor:
    """IWAE bound (eq. 2) with the DReG gradient (appendix C, eq. 8), or STL with ``gradient='stl'``.

    Both are unbiased here (one proposal q, every sample drawn from it); STL is unbiased only because
    the score term it drops has mean zero for K = 1, and is biased for K > 1.
    """
    check_K(K)
    check_x(x)
    lw, z = model.log_weights(x, K, stop_grad_q=True)
    return reweighted(lw, z, (0,), gradient).mean()
