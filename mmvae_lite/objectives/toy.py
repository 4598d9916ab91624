r"""A two-expert 1-D toy whose bounds have exact gradients: to measure estimator bias.

Model: prior :math:`p(z) = \mathcal N(0, 1)`, two "modalities" with :math:`p(x_m|z) = \mathcal N(x_m; z, \sigma^2)`
(identity decoders), and experts :math:`q_m = \mathcal N(\mu_m, s_m^2)` that are free parameters
(no encoder network). The batch axis holds *independent replicates*: each replicate has its own
copy of the four parameters :math:`(\mu_1, \mu_2, \log s_1, \log s_2)`, so one backward pass of
the package objective on a batch of B replicates gives B independent gradient estimates.

The exact gradient of each bound (a K- or MK-dimensional integral) reduces to two nested
one-dimensional integrals (:func:`exact_bound`), computed in float64 without the objectives' code:
an independent reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn as nn

from ..distributions import ETA, Likelihood, Prior
from ..models import Modality, MultimodalVAE

Bound = Literal["eq3", "eq5", "ancestral"]
PARAMS = ("mu1", "mu2", "log s1", "log s2")


@dataclass(frozen=True)
class Toy:
    """Expert parameters, observations and likelihood noise of the toy (defaults: chapter 6's)."""

    mu: tuple[float, float] = (0.8, -0.6)
    log_scale: tuple[float, float] = (-0.5, 0.0)
    x: tuple[float, float] = (0.5, -0.5)
    noise: float = 1.0

    @property
    def theta(self) -> torch.Tensor:
        """The four parameters (mu1, mu2, log s1, log s2) in float64."""
        return torch.tensor([*self.mu, *self.log_scale], dtype=torch.float64)


class GaussianLikelihood(Likelihood):
    """N(x; mean, noise^2) over one event dimension (the toy's only use; the package's data are Laplace/categorical)."""

    def __init__(self, noise: float) -> None:
        self.noise, self.event_dims = float(noise), 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (-0.5 * ((x - params) / self.noise) ** 2 - math.log(self.noise * math.sqrt(2 * math.pi))).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return params + self.noise * torch.randn_like(params)


class _FreeExpert(nn.Module):
    """q_m with free parameters per replicate: returns (loc, raw) such that softplus(raw) + eta = exp(log_s)."""

    def __init__(self, n: int, mu: float, log_scale: float) -> None:
        super().__init__()
        self.event_shape = (1,)
        self.mu = nn.Parameter(torch.full((n, 1), mu, dtype=torch.float64))
        self.log_s = nn.Parameter(torch.full((n, 1), log_scale, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.log_s.exp() - ETA
        return self.mu, s + torch.log(-torch.expm1(-s))              # inverse softplus of s


def toy_model(toy: Toy, n: int) -> tuple[MultimodalVAE, dict[str, torch.Tensor]]:
    """The toy as a package model with ``n`` independent replicates, and its batch (float64)."""
    mods = [Modality(f"m{i + 1}", _FreeExpert(n, toy.mu[i], toy.log_scale[i]), nn.Identity(),
                     GaussianLikelihood(toy.noise), family="normal", scale_param="softplus",
                     event_shape=(1,), dtype=torch.float64) for i in range(2)]
    model = MultimodalVAE(mods, Prior(1, "normal", learn_scale=False), joint="moe", llik_scaling=None).double()
    batch = {f"m{i + 1}": torch.full((n, 1), toy.x[i], dtype=torch.float64) for i in range(2)}
    return model, batch


def gradient_samples(objective: Callable[..., torch.Tensor], toy: Toy, K: int, n: int, seed: int = 0
                     ) -> torch.Tensor:
    """``n`` independent estimates of the gradient w.r.t. (mu1, mu2, log s1, log s2): shape (n, 4)."""
    model, batch = toy_model(toy, n)
    torch.manual_seed(seed)
    objective(model, batch, K).backward()
    enc = [model.modalities[f"m{i + 1}"].encoder for i in range(2)]
    return torch.cat([enc[0].mu.grad, enc[1].mu.grad, enc[0].log_s.grad, enc[1].log_s.grad], dim=1) * n


def mean_and_se(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over replicates and its standard error."""
    return g.mean(0), g.std(0) / math.sqrt(g.shape[0])


# ---------------------------------------------------------------------------------------------
# Exact gradients (one-dimensional quadratures in float64, independent of the objectives)
# ---------------------------------------------------------------------------------------------
def _log_weight(z: torch.Tensor, theta: torch.Tensor, toy: Toy) -> torch.Tensor:
    """log p(z, x_1, x_2) - log q_mix(z) for the toy, elementwise in z."""
    mu, s = theta[:2], theta[2:].exp()
    c = 0.5 * math.log(2 * math.pi)
    lp = -0.5 * z ** 2 - c + sum(-0.5 * ((x - z) / toy.noise) ** 2 - math.log(toy.noise) - c for x in toy.x)
    lq = torch.logsumexp(torch.stack([-0.5 * ((z - mu[m]) / s[m]) ** 2 - torch.log(s[m]) - c for m in range(2)]), 0)
    return lp - (lq - math.log(2))


def exact_bound(bound: Bound, toy: Toy, K: int, theta: torch.Tensor, points: int = 801) -> torch.Tensor:
    r"""The bound's value at ``theta``, differentiable in theta, exact up to quadrature error (~1e-10).

    ``eq3``: (1/M) sum_m E_{z^{1:K} ~ q_m}[log mean_k w]; ``eq5``: K samples from each expert, one
    log-mean-exp over the 2K; ``ancestral``: 2K i.i.d. samples from the mixture.

    Why it is cheap: :math:`\log a = \int_0^\infty (e^{-t} - e^{-at})\,dt/t` for a > 0, and the samples
    are independent, so with :math:`a = \frac1N\sum_n w_n`,
    :math:`\mathbb{E}[\log a] = \int_0^\infty (e^{-t} - \prod_n \varphi_n(t))\,dt/t` where
    :math:`\varphi_n(t) = \mathbb{E}_{z \sim q_{c_n}}[e^{-t\,w(z)/N}]` is a one-dimensional integral.
    Both integrals use the trapezoid rule (t = e^u, and z = mu + s eps on a wide grid), which
    converges exponentially fast for these smooth, decaying integrands.
    """
    N = K if bound == "eq3" else 2 * K
    eps = torch.linspace(-14.0, 14.0, points, dtype=torch.float64)
    gauss = torch.exp(-0.5 * eps ** 2) * (eps[1] - eps[0]) / math.sqrt(2 * math.pi)     # (P,)
    u = torch.linspace(-45.0, 60.0, 2 * points, dtype=torch.float64)
    t = u.exp()                                                                            # (T,)
    mu, s = theta[:2], theta[2:].exp()
    lw = torch.stack([_log_weight(mu[m] + s[m] * eps, theta, toy) for m in range(2)])      # (2, P)
    # log phi_m(t) = log E_{q_m} exp(-t w / N), computed in log space
    log_phi = torch.logsumexp(torch.log(gauss) - (t[:, None, None] / N) * lw.exp()[None], dim=-1)  # (T, 2)
    if bound == "eq3":
        log_prod = K * log_phi                                                             # (T, 2) per stratum
    elif bound == "eq5":
        log_prod = (K * log_phi.sum(-1, keepdim=True))
    elif bound == "ancestral":
        log_prod = N * (torch.logsumexp(log_phi, -1, keepdim=True) - math.log(2))
    else:
        raise ValueError(f"bound must be 'eq3', 'eq5' or 'ancestral', got {bound!r}")
    integrand = torch.exp(-t)[:, None] - log_prod.exp()                                   # dt/t = du
    return torch.trapezoid(integrand, u, dim=0).mean()


def exact_gradient(bound: Bound, toy: Toy, K: int, points: int = 801) -> torch.Tensor:
    """d bound / d(mu1, mu2, log s1, log s2), exact up to quadrature error."""
    theta = toy.theta.clone().requires_grad_(True)
    g, = torch.autograd.grad(exact_bound(bound, toy, K, theta, points), theta)
    return g
