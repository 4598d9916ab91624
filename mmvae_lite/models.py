"""Models that compose: modalities, a prior, and a rule that joins unimodal posteriors.

* :class:`Modality` bundles one encoder q(z | x_m), one decoder p(x_m | z), its likelihood and its
  likelihood scaling.
* :class:`VAE` is one modality plus a prior.
* :class:`MultimodalVAE` is a list of modalities, a prior and a :class:`JointPosterior` rule:
  :class:`MixtureOfExperts` (MMVAE, q(z | x_1:M) = 1/M sum_m q_m(z | x_m)) or
  :class:`ProductOfExperts` (MVAE, q(z | x_1:M) proportional to p(z) prod_m q_m(z | x_m)).

Batches are ``dict[str, Tensor]`` keyed by modality name, so any subset of modalities can be
given at inference time. Shapes: data ``(B, *event)``; latents ``(*lead, B, L)``; unimodal
experts are stacked into one distribution with batch shape ``(M, B, L)`` so that densities of all
samples under all experts are one broadcast operation.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence, Union

import torch
import torch.nn as nn
from torch.distributions import Distribution, Independent, Normal

from .distributions import Family, Likelihood, Prior, ScaleParam, detach_params, make_latent, positive_scale
from .networks import Decoder, Encoder, autocast_enabled

Batch = Mapping[str, torch.Tensor]


RESERVED_NAMES = ("label", "labels")
"""Batch keys that hold labels, never a modality (the data and evaluation modules rely on it)."""


class Modality(nn.Module):
    """One modality: an encoder, a decoder, a likelihood and a likelihood scaling.

    ``encode`` returns q(z | x) with scales from ``scale_param`` (the paper's sum-to-D rule by
    default); ``log_likelihood`` returns log p(x | z) summed over the data dimensions (unscaled).
    """

    def __init__(self, name: str, encoder: Encoder, decoder: Decoder, likelihood: Likelihood, *,
                 family: Family = "laplace", scale_param: ScaleParam = "sum_to_d",
                 event_shape: Sequence[int] | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not name.isidentifier():
            raise ValueError(f"modality name must be an identifier, got {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(f"modality name {name!r} is reserved: batches carry digit/class labels under "
                             f"{RESERVED_NAMES}; choose another name")
        self.name, self.encoder, self.decoder, self.likelihood = name, encoder, decoder, likelihood
        self.family, self.scale_param = family, scale_param
        shape = event_shape if event_shape is not None else getattr(encoder, "event_shape", None)
        if shape is None:
            raise ValueError(f"modality {name!r}: give event_shape (the encoder does not declare one)")
        self.event_shape = tuple(int(s) for s in shape)
        self.data_dtype = dtype

    @property
    def size(self) -> int:
        """Number of scalars in one observation (784 for MNIST, 3072 for SVHN, 32 for a sentence)."""
        return math.prod(self.event_shape)

    def check_dtype(self, x: torch.Tensor) -> None:
        """Raise a ``TypeError`` naming the modality when ``x`` has a dtype its encoder cannot take.

        Float modalities take the dtype of the encoder's parameters (float32 unless the model was
        converted); uint8 images are refused rather than guessed at (the package's images are floats
        in [0, 1]: ``x.float() / 255``), and float64 is refused rather than silently rounded.
        Token modalities (``dtype=torch.long``) take integer ids.
        """
        if not self.data_dtype.is_floating_point:
            if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
                raise TypeError(f"modality {self.name!r}: expected integer token ids ({self.data_dtype}), got {x.dtype}")
            return
        want = next((p.dtype for p in self.encoder.parameters() if p.is_floating_point()), self.data_dtype)
        if not x.is_floating_point():
            hint = "x.float() / 255 (images are floats in [0, 1])" if x.dtype == torch.uint8 else f"x.to({want})"
            raise TypeError(f"modality {self.name!r}: expected {want} data, got {x.dtype}; convert with {hint}")
        if x.dtype != want and not autocast_enabled(x.device.type):
            raise TypeError(f"modality {self.name!r}: expected {want} data (the dtype of its encoder's parameters), "
                            f"got {x.dtype}; convert with x.to({want}) (or the model with model.to({x.dtype}))")

    def encoder_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(x, torch.Tensor) and x.dtype != self.data_dtype:   # cheap: the full check only when off
            self.check_dtype(x)
        loc, raw = self.encoder(x)
        return loc, positive_scale(raw, self.scale_param)

    def encode(self, x: torch.Tensor) -> Distribution:
        """q(z | x): a factorised Laplace/Normal with batch shape ``(*lead, L)``."""
        return make_latent(self.family, *self.encoder_params(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Likelihood parameters for latents ``(*lead, L)``: shape ``(*lead, *params)``."""
        return self.decoder(z)

    def log_likelihood(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) summed over data dims: params ``(*lead, B, ...)``, x ``(B, ...)`` -> ``(*lead, B)``."""
        return self.likelihood.log_prob(params, x)

    def check(self, x: torch.Tensor) -> None:
        """Raise a clear error for data of the wrong type, dtype, shape or with non-finite values."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"modality {self.name!r}: expected a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.event_shape or x.dim() != len(self.event_shape) + 1:
            raise ValueError(f"modality {self.name!r}: expected shape (B, {', '.join(map(str, self.event_shape))}),"
                             f" got {tuple(x.shape)}")
        self.check_dtype(x)
        # performance: one reduction; a finite sum proves every element finite (NaN/inf propagate),
        # and only a non-finite sum (bad data, or overflow of huge values) pays for the exact check
        if x.is_floating_point() and not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
            raise ValueError(f"modality {self.name!r}: input contains NaN or infinite values")


def _default_scaling(modalities: Sequence[Modality]) -> dict[str, float]:
    """The authors' default: the largest modality's size over each modality's size (3.92 for MNIST)."""
    largest = max(m.size for m in modalities)
    return {m.name: largest / m.size for m in modalities}


# -------------------------------------------------------------------------------------------
# Joint-posterior rules
# -------------------------------------------------------------------------------------------
class MixtureOfExpertsPosterior:
    """q(z | x_1:M) = 1/M sum_m q_m(z | x_m), given the experts stacked with batch shape (M, B, L).

    ``log_prob(z)`` takes z of shape ``(*lead, B, L)`` and returns ``(*lead, B)``: the log-mean-exp
    over experts of each expert's (summed) log density.
    """

    def __init__(self, experts: Distribution) -> None:
        self.experts = experts
        self.num_experts = experts.batch_shape[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        per_expert = self.experts.log_prob(z.unsqueeze(-3)).sum(-1)  # (*lead, M, B)
        return torch.logsumexp(per_expert, dim=-2) - math.log(self.num_experts)

    def rsample_stratified(self, K: int) -> torch.Tensor:
        """K reparameterised samples from *each* expert: shape (M, K, B, L)."""
        return self.experts.rsample((K,)).transpose(0, 1)

    def rsample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        """Ancestral samples: pick an expert uniformly, then sample it (reparameterised given the pick)."""
        shape = torch.Size(sample_shape)
        z = self.experts.rsample(shape)  # (*S, M, B, L)
        pick = torch.randint(self.num_experts, (*shape, 1, z.size(-2), 1), device=z.device)
        return z.gather(-3, pick.expand(*shape, 1, *z.shape[-2:])).squeeze(-3)

    sample = rsample

    @property
    def mean(self) -> torch.Tensor:
        return self.experts.mean.mean(0)


class JointPosterior:
    """A rule that joins stacked unimodal experts (batch shape (M, B, L)) into q(z | x_S)."""

    name: str = "joint"

    def joint(self, experts: Distribution, prior: Distribution) -> "Distribution | MixtureOfExpertsPosterior":
        raise NotImplementedError

    def unimodal(self, experts: Distribution, prior: Distribution) -> Distribution:
        """q(z | x_m) for each m alone, stacked (M, B, L): what cross-generation samples from."""
        raise NotImplementedError


class MixtureOfExperts(JointPosterior):
    """MMVAE: the mixture 1/M sum_m q_m. A single modality's posterior is its own expert."""

    name = "moe"

    def joint(self, experts: Distribution, prior: Distribution) -> MixtureOfExpertsPosterior:
        return MixtureOfExpertsPosterior(experts)

    def unimodal(self, experts: Distribution, prior: Distribution) -> Distribution:
        return experts

    def __repr__(self) -> str:
        return "MixtureOfExperts()"


class ProductOfExperts(JointPosterior):
    """MVAE: a precision-weighted product of Gaussian experts and the prior expert.

    For Normal experts N(mu_m, s_m^2) and prior N(mu_0, s_0^2), with precisions T = 1/s^2,
    the product over a subset S is N(mu, 1/T) with T = T_0 + sum_{m in S} T_m and
    mu = (T_0 mu_0 + sum_{m in S} T_m mu_m) / T. Only Gaussians have this closed form.
    """

    name = "poe"

    def subsets(self, experts: Distribution, prior: Distribution, mask: torch.Tensor) -> Normal:
        """Products over several subsets at once: ``mask`` (S, M) of 0/1 -> batch shape (S, B, L)."""
        if not (isinstance(experts, Normal) and isinstance(prior, Normal)):
            raise TypeError("ProductOfExperts needs Normal experts and a Normal prior (latent family 'normal'); "
                            f"got {type(experts).__name__} experts and a {type(prior).__name__} prior")
        t_m = experts.scale.pow(-2)                       # (M, B, L)
        t_0 = prior.scale.pow(-2)                         # (L,)
        w = mask.to(t_m.dtype)[:, :, None, None]          # (S, M, 1, 1)
        t = t_0 + (w * t_m).sum(1)                        # (S, B, L)
        mu = (t_0 * prior.loc + (w * t_m * experts.loc).sum(1)) / t
        return Normal(mu, t.rsqrt(), validate_args=False)

    def joint(self, experts: Distribution, prior: Distribution) -> Independent:
        """The product over all experts given; ``log_prob`` sums over latent dimensions."""
        mask = torch.ones(1, experts.batch_shape[0], device=experts.loc.device)
        d = self.subsets(experts, prior, mask)
        return Independent(Normal(d.loc[0], d.scale[0], validate_args=False), 1)

    def unimodal(self, experts: Distribution, prior: Distribution) -> Normal:
        M = experts.batch_shape[0]
        return self.subsets(experts, prior, torch.eye(M, device=experts.loc.device))

    def __repr__(self) -> str:
        return "ProductOfExperts()"


_RULES = {"moe": MixtureOfExperts, "poe": ProductOfExperts}


def joint_rule(name: Union[str, JointPosterior]) -> JointPosterior:
    if isinstance(name, JointPosterior):
        return name
    try:
        return _RULES[name]()
    except KeyError:
        raise ValueError(f"unknown joint posterior {name!r}; choose one of {sorted(_RULES)}") from None


# -------------------------------------------------------------------------------------------
# Models
# -------------------------------------------------------------------------------------------
class VAE(nn.Module):
    """A single-modality VAE: p(z) p(x | z) with q(z | x)."""

    def __init__(self, modality: Modality, prior: Prior) -> None:
        super().__init__()
        self.modality, self.prior = modality, prior
        self.name = modality.name

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def _x(self, x: "torch.Tensor | Batch") -> torch.Tensor:
        if isinstance(x, Mapping):
            if self.name not in x:
                raise KeyError(f"batch has no modality {self.name!r}; it has {sorted(x)}")
            x = x[self.name]
        self.modality.check(x)
        return x

    def encode(self, x: "torch.Tensor | Batch") -> Distribution:
        return self.modality.encode(self._x(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.modality.decode(z)

    def log_weights(self, x: "torch.Tensor | Batch", K: int, stop_grad_q: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """log w_k = log p(z_k) + log p(x | z_k) - log q(z_k | x), z_k ~ q(z | x): ``lw`` (K, B), ``z`` (K, B, L).

        With ``stop_grad_q`` the density q in the denominator has its parameters detached (the
        samples keep their reparameterised path), as DReG and STL need.
        """
        x = self._x(x)
        q = self.modality.encode(x)
        z = q.rsample((K,))
        q_eval = detach_params(q) if stop_grad_q else q
        lpx = self.modality.log_likelihood(self.modality.decode(z), x)
        lw = self.prior().log_prob(z).sum(-1) + lpx - q_eval.log_prob(z).sum(-1)
        return lw, z

    @torch.no_grad()
    def generate(self, n: int) -> torch.Tensor:
        """Means of p(x | z) for n prior samples."""
        z = self.prior().sample((n,))
        return self.modality.likelihood.mean(self.decode(z))

    @torch.no_grad()
    def reconstruct(self, x: "torch.Tensor | Batch", sample: bool = False) -> torch.Tensor:
        q = self.encode(x)
        z = q.sample() if sample else q.mean
        return self.modality.likelihood.mean(self.decode(z))


class MultimodalVAE(nn.Module):
    """p(z) prod_m p(x_m | z) with a joint posterior built from unimodal experts by ``joint``.

    Args:
        modalities: the unimodal encoder/decoder pairs (a list, or a dict name -> Modality).
        prior: the shared prior p(z).
        joint: ``"moe"`` (MMVAE), ``"poe"`` (MVAE) or a :class:`JointPosterior` instance.
        llik_scaling: per-modality weights on log p(x_m | z). ``"auto"`` (default) is the authors'
            rule, the largest modality's size over each modality's size; a dict overrides some names
            (others keep 1.0); ``None`` means all 1.
    """

    def __init__(self, modalities: "Sequence[Modality] | Mapping[str, Modality]", prior: Prior,
                 joint: "str | JointPosterior" = "moe",
                 llik_scaling: "str | Mapping[str, float] | None" = "auto") -> None:
        super().__init__()
        mods = list(modalities.values()) if isinstance(modalities, Mapping) else list(modalities)
        if len(mods) < 2:
            raise ValueError(f"a multimodal VAE needs at least 2 modalities, got {len(mods)}")
        names = [m.name for m in mods]
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {names}")
        families = {m.family for m in mods} | {prior.family}
        if len(families) != 1:
            raise ValueError(f"all experts and the prior must share one latent family, got {sorted(families)}")
        self.modalities = nn.ModuleDict({m.name: m for m in mods})
        self.prior = prior
        self.joint_rule = joint_rule(joint)
        if llik_scaling == "auto":
            scaling = _default_scaling(mods)
        elif llik_scaling is None:
            scaling = {n: 1.0 for n in names}
        elif isinstance(llik_scaling, Mapping):
            unknown = set(llik_scaling) - set(names)
            if unknown:
                raise KeyError(f"llik_scaling names unknown modalities {sorted(unknown)}; modalities are {names}")
            scaling = {n: float(llik_scaling.get(n, 1.0)) for n in names}
        else:
            raise ValueError(f"llik_scaling must be 'auto', None or a dict, got {llik_scaling!r}")
        self.llik_scaling: dict[str, float] = scaling

    # -- bookkeeping ------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.modalities.keys())

    @property
    def latent_dim(self) -> int:
        return self.prior.latent_dim

    def extra_repr(self) -> str:
        return f"joint={self.joint_rule!r}, llik_scaling={ {k: round(v, 4) for k, v in self.llik_scaling.items()} }"

    def check_batch(self, batch: Batch, require_all: bool = False) -> list[str]:
        """Validate a batch and return the names of the modalities present, in model order."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"a batch is a dict of modality name -> tensor, got {type(batch).__name__}")
        unknown = [k for k in batch if k not in self.modalities]
        if unknown:
            raise KeyError(f"unknown modality {unknown[0]!r}; this model has {self.names}")
        present = [n for n in self.names if n in batch]
        if not present:
            raise ValueError(f"the batch has none of this model's modalities {self.names}")
        if require_all and len(present) != len(self.names):
            missing = sorted(set(self.names) - set(present))
            raise ValueError(f"this objective needs every modality; missing {missing}")
        sizes = {n: batch[n].shape[0] if isinstance(batch[n], torch.Tensor) and batch[n].dim() else None
                 for n in present}
        for n in present:
            self.modalities[n].check(batch[n])
        if len(set(sizes.values())) > 1:
            raise ValueError(f"modalities have different batch sizes: {sizes}")
        return present

    # -- inference --------------------------------------------------------------------------
    def experts(self, batch: Batch, stop_grad: bool = False) -> tuple[list[str], Distribution]:
        """The unimodal posteriors of the modalities present, stacked: batch shape (M', B, L)."""
        present = self.check_batch(batch)
        params = [self.modalities[n].encoder_params(batch[n]) for n in present]
        loc = torch.stack([p[0] for p in params])
        scale = torch.stack([p[1] for p in params])
        if stop_grad:
            loc, scale = loc.detach(), scale.detach()
        return present, make_latent(self.prior.family, loc, scale)

    def encode(self, batch: Batch) -> dict[str, Distribution]:
        """q(z | x_m) for each modality present, as a dict."""
        present, e = self.experts(batch)
        return {n: make_latent(self.prior.family, e.loc[i], e.scale[i]) for i, n in enumerate(present)}

    def posterior(self, batch: Batch) -> "Distribution | MixtureOfExpertsPosterior":
        """The joint posterior q(z | x_S) over the modalities S present in ``batch``.

        It has ``mean``, ``rsample(shape)`` and ``log_prob(z)``; ``log_prob`` takes z of shape
        ``(*lead, B, L)`` and returns ``(*lead, B)`` (summed over latent dimensions).
        """
        _, e = self.experts(batch)
        return self.joint_rule.joint(e, self.prior())

    # -- generation -------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, targets: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Likelihood parameters of each target modality for latents ``(*lead, L)``: one decoder call each."""
        targets = self.names if targets is None else list(targets)
        return {n: self.modalities[n].decode(z) for n in targets}

    def log_likelihood(self, batch: Batch, z: torch.Tensor, scaled: bool = True
                       ) -> dict[str, torch.Tensor]:
        """log p(x_d | z) for each modality d in ``batch``: z ``(*lead, B, L)`` -> ``(*lead, B)`` each."""
        out = {}
        for n in batch:
            m = self.modalities[n]
            lp = m.log_likelihood(m.decode(z), batch[n])
            out[n] = lp * self.llik_scaling[n] if scaled else lp
        return out

    @torch.no_grad()
    def generate(self, n: int, mean: bool = True) -> dict[str, torch.Tensor]:
        """Joint generation: z ~ p(z), then each modality's likelihood mean (or a sample)."""
        z = self.prior().sample((n,))
        params = self.decode(z)
        return {k: (self.modalities[k].likelihood.mean(p) if mean else self.modalities[k].likelihood.sample(p))
                for k, p in params.items()}

    def unimodal_samples(self, batch: Batch, K: int = 1, mean: bool = False) -> tuple[list[str], torch.Tensor]:
        """Samples (or means) of each present modality's own posterior q(z | x_m): (M', K, B, L).

        For MoE this is the expert itself; for PoE it is the product of that expert and the prior.
        """
        present, e = self.experts(batch)
        uni = self.joint_rule.unimodal(e, self.prior())
        z = uni.mean.unsqueeze(1).expand(-1, K, -1, -1) if mean else uni.rsample((K,)).transpose(0, 1)
        return present, z

    @torch.no_grad()
    def cross_reconstruct(self, batch: Batch, K: int = 1, mean_latent: bool = False
                          ) -> dict[str, dict[str, torch.Tensor]]:
        """The M x M matrix of reconstructions: ``out[src][tgt]`` decodes ``tgt`` from q(z | x_src).

        Samples from all sources are stacked to (M, K, B, L) and each target decoder is called once
        on the stack (M decoder calls, not M^2). Values are likelihood means, shape ``(K, B, *event)``.
        """
        present, z = self.unimodal_samples(batch, K, mean=mean_latent)
        out: dict[str, dict[str, torch.Tensor]] = {s: {} for s in present}
        for tgt, params in self.decode(z).items():
            mean = self.modalities[tgt].likelihood.mean(params)   # (M', K, B, ...)
            for i, src in enumerate(present):
                out[src][tgt] = mean[i]
        return out


__all__ = [
    "Batch", "Modality", "VAE", "MultimodalVAE", "JointPosterior", "MixtureOfExperts", "ProductOfExperts",
    "MixtureOfExpertsPosterior", "joint_rule",
]
