"""Latent distributions, the learnable prior, and observation likelihoods.

The paper (section 4.1) uses Laplace priors and posteriors "constraining their scaling across the
D dimensions to sum to D": a network emits logits ``s`` and the scale is ``softmax(s) * D + eta``.
The prior has mean 0 and a learnable scale parametrised the same way (zero logits give scale 1).

The authors' CUB image-*feature* model departs from this (it uses Normal prior and posteriors with
``softplus(s) + eta`` scales); :class:`ScaleParam` names both rules so presets can follow the code
per experiment.

Every distribution here is a plain :mod:`torch.distributions` object built with
``validate_args=False``: argument validation costs a few percent of a training step and the
networks already guarantee positive scales.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Distribution, Independent, Laplace, Normal

ETA = 1e-6
"""Added to every scale, as in the authors' code (``Constants.eta``)."""

FUSED_LIKELIHOOD = True
"""Performance switch: compute :class:`LaplaceLikelihood` log densities with one fused autograd
function (:class:`_LaplaceLogProb`) instead of a chain of elementwise ops. Same value up to float
rounding; ``False`` gives the plain formula (``bench/numerics.py`` compares the two)."""

Family = Literal["laplace", "normal"]
ScaleParam = Literal["sum_to_d", "softplus"]

_FAMILIES: dict[str, type[Distribution]] = {"laplace": Laplace, "normal": Normal}


def family_class(family: str) -> type[Distribution]:
    """The :mod:`torch.distributions` class for a latent family name."""
    try:
        return _FAMILIES[family]
    except KeyError:
        raise ValueError(f"unknown latent family {family!r}; choose one of {sorted(_FAMILIES)}") from None


def positive_scale(raw: torch.Tensor, rule: ScaleParam = "sum_to_d", eta: float = ETA) -> torch.Tensor:
    """Map unconstrained network outputs to scales.

    ``sum_to_d``: ``softmax(raw) * D + eta`` over the last dimension, so the D scales sum to D
    (up to ``D * eta``), as in the paper.  ``softplus``: ``softplus(raw) + eta`` (authors' CUB code).
    """
    if rule == "sum_to_d":
        return F.softmax(raw, dim=-1) * raw.size(-1) + eta
    if rule == "softplus":
        return F.softplus(raw) + eta
    raise ValueError(f"unknown scale parametrisation {rule!r}; choose 'sum_to_d' or 'softplus'")


def make_latent(family: str, loc: torch.Tensor, scale: torch.Tensor) -> Distribution:
    """A factorised latent distribution (``log_prob`` is per dimension; sum the last axis)."""
    return family_class(family)(loc, scale, validate_args=False)


def kl_divergence(q: Distribution, p: Distribution) -> torch.Tensor:
    """Closed-form per-dimension KL(q || p): :func:`torch.distributions.kl_divergence`.

    torch registers the closed forms for Laplace-Laplace and Normal-Normal pairs (the pairs this
    package uses); the authors' ``utils.kl_divergence`` calls the same function whenever a pair is
    registered. This wrapper only unwraps :class:`~torch.distributions.Independent` so that the
    result stays per dimension (sum the last axis for the KL of the whole latent), and names the
    pair in the error when torch has no closed form.
    """
    if isinstance(q, Independent):   # per-dimension KL of the base distributions
        q = q.base_dist
    if isinstance(p, Independent):
        p = p.base_dist
    try:
        return torch.distributions.kl_divergence(q, p)
    except NotImplementedError:
        raise NotImplementedError(f"no closed-form KL for {type(q).__name__} || {type(p).__name__} in "
                                  "torch.distributions") from None


def detach_params(d: Distribution) -> Distribution:
    """The same distribution with its parameters cut from the graph (the DReG / STL 'stop-grad')."""
    return type(d)(d.loc.detach(), d.scale.detach(), validate_args=False)


class Prior(nn.Module):
    """p(z): zero mean, scale ``rule(logits)``, logits learnable when ``learn_scale``.

    With ``sum_to_d`` and zero logits the prior is the standard Laplace (or Normal) with unit
    scales, and learning redistributes a fixed total scale D across dimensions.
    """

    def __init__(self, latent_dim: int, family: Family = "laplace", learn_scale: bool = True,
                 scale_param: ScaleParam = "sum_to_d", eta: float = 0.0) -> None:
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        family_class(family)
        self.latent_dim, self.family, self.scale_param, self.eta = latent_dim, family, scale_param, eta
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.logits = nn.Parameter(torch.zeros(latent_dim), requires_grad=learn_scale)

    @property
    def scale(self) -> torch.Tensor:
        return positive_scale(self.logits, self.scale_param, self.eta)

    def forward(self) -> Distribution:
        return make_latent(self.family, self.loc, self.scale)

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, family={self.family!r}, "
                f"learn_scale={self.logits.requires_grad}, scale_param={self.scale_param!r}")


# ---------------------------------------------------------------------------------------------
# Observation models p(x | z).  A decoder emits parameters; a likelihood scores data under them.
# ---------------------------------------------------------------------------------------------
class Likelihood:
    """Scores data ``x`` (shape ``(B, *event)``) under decoder outputs (shape ``(..., B, *params)``).

    ``log_prob`` sums over the event dimensions and returns shape ``(..., B)``.
    """

    event_dims: int = 3

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def mean(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class LaplaceLikelihood(Likelihood):
    """Laplace(x; mean, b) with a fixed scale ``b`` (0.75 for images, as in the authors' code).

    ``log p = -|x - mean| / b - log(2 b)``, summed over pixels.
    """

    def __init__(self, scale: float = 0.75, event_dims: int = 3) -> None:
        if scale <= 0:
            raise ValueError(f"likelihood scale must be positive, got {scale}")
        self.scale, self.event_dims = float(scale), event_dims
        self._log_norm = math.log(2.0 * self.scale)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if FUSED_LIKELIHOOD and params.dtype == x.dtype and params.dim() >= x.dim() >= self.event_dims:
            return _LaplaceLogProb.apply(params, x, self.scale, self._log_norm, self.event_dims)
        lp = -(x - params).abs() / self.scale - self._log_norm
        return lp.flatten(start_dim=lp.dim() - self.event_dims).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return params

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return Laplace(params, torch.full_like(params, self.scale), validate_args=False).sample()

    def __repr__(self) -> str:
        return f"LaplaceLikelihood(scale={self.scale})"


class _LaplaceLogProb(torch.autograd.Function):
    """sum_event(-|x - mean| / b) - n log(2b), with gradient sign(x - mean) / b for the mean.

    Performance only (same math as the plain formula). The decoders' outputs are large (in the
    paper's MNIST-SVHN configuration 7680 x 3072 per step); the plain chain of sub, abs, div and
    sub allocates, saves and differentiates four tensors of that size. This computes
    ``|x - mean|`` in place, sums it, and in backward recomputes ``sign(x - mean)`` in place: two
    full-size passes forward and three backward instead of about ten, and nothing saved beyond
    the mean (already kept alive by the decoder's sigmoid) and the data.
    """

    @staticmethod
    def forward(ctx, params, x, scale: float, log_norm: float, event_dims: int):
        d = torch.sub(x, params).abs_()                                  # (*lead, B, *event)
        n = math.prod(d.shape[d.dim() - event_dims:])
        out = d.flatten(start_dim=d.dim() - event_dims).sum(-1)
        ctx.save_for_backward(params, x)
        ctx.scale, ctx.event_dims = scale, event_dims
        return out.div_(-scale).sub_(n * log_norm)

    @staticmethod
    def backward(ctx, grad):
        params, x = ctx.saved_tensors
        g = (grad / ctx.scale).reshape(*grad.shape, *([1] * ctx.event_dims))
        s = torch.sub(x, params).sign_()                                  # d(-|x - m|)/dm = sign(x - m)
        grad_params = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_x = -(s * g)
            grad_x = grad_x.sum_to_size(x.shape) if grad_x.shape != x.shape else grad_x
        if ctx.needs_input_grad[0]:
            grad_params = s.mul_(g)
            grad_params = grad_params.sum_to_size(params.shape) if grad_params.shape != params.shape else grad_params
        return grad_params, grad_x, None, None, None


class CategoricalLikelihood(Likelihood):
    """Categorical over a vocabulary for each of T token positions: params are logits (..., B, T, V).

    log p = sum_t log softmax(logits_t)[x_t]; data are token ids (B, T).
    """

    event_dims = 1

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(params, dim=-1)
        idx = x.long().expand(*params.shape[:-1]).unsqueeze(-1)
        return logp.gather(-1, idx).squeeze(-1).sum(-1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """The most likely token at each position (the mode; a categorical has no useful mean)."""
        return params.argmax(-1)

    def sample(self, params: torch.Tensor) -> torch.Tensor:
        return torch.distributions.Categorical(logits=params, validate_args=False).sample()

    def __repr__(self) -> str:
        return "CategoricalLikelihood()"
