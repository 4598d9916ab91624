"""Monte-Carlo bias of the multimodal gradient estimators against an exact gradient (1-D toy).

The toy (``mmvae_lite.objectives.toy``): two Gaussian experts, a Gaussian target, the exact
gradient of eq. (3), eq. (5) and the ancestral mixture bound by one-dimensional quadratures in
float64. Each estimator's mean over 40,000 independent replicates (one vectorised backward pass)
is compared with it in units of the standard error. Seeds are fixed, so the test is deterministic.
"""
from __future__ import annotations

from functools import lru_cache, partial

import pytest
import torch

from mmvae_lite import objectives as O
from mmvae_lite.objectives import toy as T

N = 40_000
TOY = T.Toy()


@lru_cache(maxsize=None)
def _exact(bound: str, K: int) -> torch.Tensor:
    return T.exact_gradient(bound, TOY, K)


def _z_scores(objective, bound: str, K: int, seed: int = 1) -> torch.Tensor:
    g = T.gradient_samples(objective, TOY, K, N, seed=seed)
    mean, se = T.mean_and_se(g)
    return (mean - _exact(bound, K)) / se


def test_exact_gradient_reduces_to_the_elbo_at_K1():
    """At K = 1, eq. (3) is the ELBO under the mixture: check the quadrature against a direct one."""
    theta = TOY.theta.clone().requires_grad_(True)
    eps = torch.linspace(-14, 14, 4001, dtype=torch.float64)
    gauss = torch.exp(-0.5 * eps ** 2) * (eps[1] - eps[0]) / (2 * torch.pi) ** 0.5
    mu, s = theta[:2], theta[2:].exp()
    elbo = sum((gauss * T._log_weight(mu[m] + s[m] * eps, theta, TOY)).sum() for m in range(2)) / 2
    direct, = torch.autograd.grad(elbo, theta)
    torch.testing.assert_close(T.exact_gradient("eq3", TOY, 1), direct, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name, objective, bound, K", [
    ("plain gradient of eq. (3)", O.m_iwae_stratified, "eq3", 4),
    ("unbiased DReG of eq. (3)", O.m_dreg_stratified_unbiased, "eq3", 4),
    ("plain gradient of eq. (5)", O.m_iwae_mixture, "eq5", 2),
    ("plain gradient, ancestral mixture IWAE", O.m_iwae_ancestral, "ancestral", 2),
    ("DReG, ancestral mixture IWAE", O.m_dreg_ancestral, "ancestral", 2),
    ("per-stratum DReG at K=1", O.m_dreg_stratified, "eq3", 1),
])
def test_unbiased_estimators(name, objective, bound, K):
    z = _z_scores(objective, bound, K)
    assert z.abs().max() < 4.0, f"{name}: mean - exact = {z.tolist()} standard errors"


@pytest.mark.parametrize("name, objective, bound, K", [
    ("per-stratum DReG of eq. (3)", O.m_dreg_stratified, "eq3", 4),
    ("STL of eq. (3) (the authors' effective gradient)", partial(O.m_dreg_stratified, gradient="stl"), "eq3", 4),
    ("DReG of eq. (5)", O.m_dreg_mixture, "eq5", 2),
    ("STL of eq. (5)", partial(O.m_dreg_mixture, gradient="stl"), "eq5", 2),
])
def test_biased_estimators(name, objective, bound, K):
    z = _z_scores(objective, bound, K)
    assert z.abs().max() > 8.0, f"{name}: expected a bias, got {z.tolist()} standard errors"


def test_unbiased_dreg_has_lower_variance_than_the_plain_gradient():
    plain = T.gradient_samples(O.m_iwae_stratified, TOY, 4, 20_000, seed=2).std(0)
    dreg = T.gradient_samples(O.m_dreg_stratified_unbiased, TOY, 4, 20_000, seed=2).std(0)
    assert (dreg < 0.6 * plain).all(), (dreg, plain)
